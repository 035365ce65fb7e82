"""GeoSAM2's automatic mode pieces: a minimal automatic mask generator on the fused GeoSAM2
features (no torchvision), and the release's per-view filtering of propagated masks.

Generator settings are the release's (inference.py): up to 4096 random foreground points over
not-yet-covered pixels, 128 per batch, predicted IoU >= 0.7, stability >= 0.7 with offset 0.7,
box NMS 0.7, regions under 25 px removed, mask-to-mask refinement. Deviation: IoU/stability
filtering runs on the decoder's low-resolution logits (S/4), not on logits upsampled to S, which
keeps CPU memory bounded (128 x 3 masks at 1024² would be 1.6 GB).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from sam2.utils.amg import calculate_stability_score

from .model import GeoSAM2Model


@dataclass
class AutoMaskSettings:
    max_points: int = 4096
    points_per_batch: int = 128
    pred_iou_thresh: float = 0.7
    stability_thresh: float = 0.7
    stability_offset: float = 0.7
    nms_thresh: float = 0.7
    min_region: int = 25
    use_m2m: bool = True
    accept_iou: float = 0.85  # a mask overlapping an accepted one by more is skipped


@dataclass
class AutoMask:
    point: tuple[float, float]  # (x, y) pixel in the view
    segmentation: np.ndarray  # (S, S) bool
    predicted_iou: float
    area: int


@torch.inference_mode()
def generate_masks(model: GeoSAM2Model, image_embedding: torch.Tensor, high_res: list[torch.Tensor],
                   allowed: np.ndarray, settings: AutoMaskSettings = AutoMaskSettings(), seed: int = 0,
                   cancel=None) -> list[AutoMask]:
    """Masks from random point prompts inside `allowed` (S, S) bool, filtered as SAM's AMG."""
    size = model.image_size
    ys, xs = np.nonzero(allowed)
    if len(xs) == 0:
        return []
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(xs), size=min(settings.max_points, len(xs)), replace=False)
    points = np.stack([xs[pick] + 0.5, ys[pick] + 0.5], axis=1).astype(np.float32)
    # Single-image SAM on the view: features with the no-memory embedding, as SAM2's image mode.
    emb = image_embedding + model.no_mem_embed.view(1, -1, 1, 1).to(image_embedding.dtype)
    device = emb.device
    kept_logits, kept_iou, kept_pts = [], [], []
    for i in range(0, len(points), settings.points_per_batch):
        if cancel is not None:
            cancel.check()
        pts = torch.from_numpy(points[i:i + settings.points_per_batch]).to(device)[:, None]
        lbl = torch.ones(pts.shape[:2], dtype=torch.int32, device=device)
        logits, iou = _decode(model, emb, high_res, pts, lbl, None, multimask=True)  # (B,3,h,w), (B,3)
        logits, iou = logits.flatten(0, 1), iou.flatten(0, 1)
        pts_rep = pts.repeat_interleave(3, dim=0)
        keep = iou > settings.pred_iou_thresh
        keep &= calculate_stability_score(logits, 0.0, settings.stability_offset) >= settings.stability_thresh
        logits, iou, pts_rep = logits[keep], iou[keep], pts_rep[keep]
        if settings.use_m2m and len(logits):
            # refine: the same point again with the mask's own logits as the mask prompt
            logits, iou = _decode(model, emb, high_res, pts_rep, torch.ones(pts_rep.shape[:2], dtype=torch.int32,
                                  device=device), logits[:, None], multimask=False)
            logits, iou = logits[:, 0], iou[:, 0]
            keep = iou > settings.pred_iou_thresh
            keep &= calculate_stability_score(logits, 0.0, settings.stability_offset) >= settings.stability_thresh
            logits, iou, pts_rep = logits[keep], iou[keep], pts_rep[keep]
        kept_logits.append(logits.float().cpu()), kept_iou.append(iou.float().cpu()), kept_pts.append(pts_rep[:, 0].cpu())
    logits, iou, pts = torch.cat(kept_logits), torch.cat(kept_iou), torch.cat(kept_pts)
    if len(logits) == 0:
        return []
    masks = torch.cat([F.interpolate(chunk[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0] > 0
                       for chunk in logits.split(64)])  # chunks: n x S² floats at once would be GBs at 1024
    order = box_nms(masks, iou, settings.nms_thresh)
    out = []
    for j in order:
        m = remove_small_regions(masks[j].numpy(), settings.min_region)
        area = int(m.sum())
        if area:
            out.append(AutoMask((float(pts[j, 0]), float(pts[j, 1])), m, float(iou[j]), area))
    return out


def _decode(model, emb, high_res, pts, lbl, mask_input, multimask: bool):
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=emb.device.type == "cuda"):
        sparse, dense = model.sam_prompt_encoder(points=(pts, lbl), boxes=None, masks=mask_input)
        logits, iou, _, _ = model.sam_mask_decoder(
            image_embeddings=emb, image_pe=model.sam_prompt_encoder.get_dense_pe(), sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, multimask_output=multimask, repeat_image=True, high_res_features=high_res)
    return logits.float(), iou.float()


def box_nms(masks: torch.Tensor, scores: torch.Tensor, thresh: float) -> list[int]:
    """Greedy non-maximum suppression on the masks' bounding boxes; indices kept, best first."""
    any_y, any_x = masks.any(dim=2), masks.any(dim=1)
    n = len(masks)
    ar = torch.arange(masks.shape[-1])
    x0 = torch.where(any_x, ar, 10**9).min(1).values
    x1 = torch.where(any_x, ar, -1).max(1).values
    y0 = torch.where(any_y, ar[: masks.shape[1]], 10**9).min(1).values
    y1 = torch.where(any_y, ar[: masks.shape[1]], -1).max(1).values
    boxes = torch.stack([x0, y0, x1, y1], 1).float()
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    lt = torch.maximum(boxes[:, None, :2], boxes[None, :, :2])
    rb = torch.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    iou = inter / (area[:, None] + area[None] - inter).clamp(min=1e-9)
    order = torch.argsort(scores, descending=True).tolist()
    suppressed = np.zeros(n, bool)
    keep = []
    for i in order:
        if suppressed[i]:
            continue
        keep.append(i)
        suppressed |= (iou[i] > thresh).numpy()
    return keep


def remove_small_regions(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop islands and fill holes smaller than `min_area` pixels (SAM's AMG post-processing)."""
    if min_area <= 0:
        return mask
    out = mask.copy()
    for target in (False, True):  # holes, then islands
        region = out == target
        lab, n = ndimage.label(region)
        if n:
            small = np.bincount(lab.ravel()) < min_area
            small[0] = False
            out[small[lab]] = not target
    return out


def select_masks(masks: list[AutoMask], accept_iou: float = 0.85) -> list[AutoMask]:
    """The release's `show_anns`: best predicted IoU first, skip masks with IoU > accept_iou against
    an accepted one, then largest first."""
    accepted: list[AutoMask] = []
    for m in sorted(masks, key=lambda a: -a.predicted_iou):
        if all(mask_iou(m.segmentation, a.segmentation) <= accept_iou for a in accepted):
            accepted.append(m)
    return sorted(accepted, key=lambda a: -a.area)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 0.0


# ----------------------------------------------------------------------------- per-view filtering
def open_masks(masks: np.ndarray, size: int = 5, iterations: int = 3) -> np.ndarray:
    """Morphological opening of (..., H, W) bool masks: `iterations` erosions then dilations with a
    size x size square (the release's cv2 erode/dilate, border treated as foreground for erosion
    as cv2's default border does)."""
    structure = np.ones((size, size), bool)
    flat = masks.reshape(-1, *masks.shape[-2:])
    out = np.empty_like(flat)
    for i, m in enumerate(flat):
        e = ndimage.binary_erosion(m, structure, iterations=iterations, border_value=1)
        out[i] = ndimage.binary_dilation(e, structure, iterations=iterations)
    return out.reshape(masks.shape)


def stable_objects(logits: torch.Tensor, anchor: int, thresh: float, offset: float = 0.7,
                   other_margin: float = 0.07) -> np.ndarray:
    """(V, n_obj, h, w) logits -> (n_obj,) bool: kept unless some view where the object shows has
    stability < thresh (anchor view) or < thresh - other_margin (other views)."""
    stability = calculate_stability_score(logits.float(), 0.0, offset)  # (V, n_obj)
    shows = (logits > 0).flatten(2).any(-1)
    limit = torch.full((logits.shape[0], 1), thresh - other_margin)
    limit[anchor] = thresh
    bad = shows & (stability < limit)
    return (~bad.any(0)).numpy()


def area_consistent(masks: np.ndarray, anchor: int, alpha: float) -> np.ndarray:
    """(V, n_obj, H, W) bool -> (n_obj,) bool: drop objects whose area in some other view exceeds
    alpha x their area in the anchor view (release: alpha 1 for automatic objects)."""
    area = masks.sum(axis=(-2, -1)).astype(np.float64)  # (V, n_obj)
    ratio = area / np.maximum(area[anchor], 1e-6)
    ratio[anchor] = 0
    return (ratio <= alpha).all(0)


def novel_objects(new: np.ndarray, existing: list[np.ndarray], anchor: int, thresh: float = 0.8) -> np.ndarray:
    """The release's `filter_iou` on the anchor view: (V, n, H, W) new masks -> (n,) bool; a new
    object is dropped when its IoU with an earlier accepted new object, or with any existing
    object's (V, H, W) mask, exceeds `thresh`."""
    keep = np.zeros(new.shape[1], bool)
    for j in range(new.shape[1]):
        mask = new[anchor, j]
        keep[j] = (all(mask_iou(mask, new[anchor, i]) <= thresh for i in np.flatnonzero(keep))
                   and all(mask_iou(mask, e[anchor]) <= thresh for e in existing))
    return keep
