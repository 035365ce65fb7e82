"""GeoSAM2's automatic mode pieces: the release's automatic mask generator on the fused GeoSAM2
features (no torchvision), and its per-view treatment of propagated masks.

Generator (`sam2/automatic_mask_generator_geosam2.py` with `inference.py`'s settings): up to 4096
random foreground pixels not yet covered, prompted at their integer pixel coordinates, 128 per
batch, three masks per point; with `use_m2m` every candidate is refined first (the same point plus
its own low-res logits, clamped to +-32, as a mask prompt; single-mask output, the image model
being built without the video predictor's dynamic multimask), then filtered: predicted IoU > 0.7
and stability (offset 0.7, on the logits at image size) >= 0.7; box NMS at 0.7 by predicted IoU.
Each candidate's low-res logits get SAM2Transforms' post-processing first: holes and islands of at
most 25 low-res pixels (8-connected) are flipped, as `max_hole_area` / `max_sprinkle_area` = 25 do.
The release's `postprocess_small_regions` is never called by its `generate`, so there is no
full-resolution clean-up.

Memory: candidates are first scored (IoU, stability, box) chunk by chunk without being kept; the
masks of the NMS survivors are then decoded again (same prompts, same network).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from sam2.utils.amg import batched_mask_to_box, calculate_stability_score
from scipy import ndimage

from ..nms import box_nms
from .model import GeoSAM2Model


@dataclass
class AutoMaskSettings:
    max_points: int = 4096
    points_per_batch: int = 128
    pred_iou_thresh: float = 0.7
    stability_thresh: float = 0.7
    stability_offset: float = 0.7
    nms_thresh: float = 0.7
    min_region: int = 25  # holes / islands flipped in the low-res (S/4) logits, as the release's predictor
    use_m2m: bool = True
    accept_iou: float = 0.85  # a mask overlapping an accepted one by more is skipped
    chunk: int = 32  # candidates upsampled to the image size at once (memory bound)


@dataclass
class AutoMask:
    point: tuple[float, float]  # (x, y) pixel in the view
    segmentation: np.ndarray  # (S, S) bool
    predicted_iou: float
    area: int


@torch.inference_mode()
def generate_masks(
    model: GeoSAM2Model,
    image_embedding: torch.Tensor,
    high_res: list[torch.Tensor],
    allowed: np.ndarray,
    settings: AutoMaskSettings | None = None,
    seed: int = 0,
    cancel=None,
) -> list[AutoMask]:
    """Masks from random point prompts inside `allowed` (S, S) bool, as the release's generator."""
    settings = settings or AutoMaskSettings()  # a fresh default: callers may change their settings
    ys, xs = np.nonzero(allowed)
    if len(xs) == 0:
        return []
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(xs), size=min(settings.max_points, len(xs)), replace=False)
    points = np.stack([xs[pick], ys[pick]], axis=1).astype(np.float32)  # integer pixels, as the release
    emb = image_embedding + model.no_mem_embed.view(1, -1, 1, 1).to(image_embedding.dtype)
    index, iou, boxes = [], [], []
    for start in range(0, len(points), settings.points_per_batch):
        if cancel is not None:
            cancel.check()
        kept, kept_iou, kept_boxes = _score_batch(
            model, emb, high_res, points[start : start + settings.points_per_batch], settings
        )
        index.append(kept + 3 * start), iou.append(kept_iou), boxes.append(kept_boxes)
    index = np.concatenate(index)
    if len(index) == 0:
        return []
    iou, boxes = torch.cat(iou), torch.cat(boxes)
    survivors = index[box_nms(boxes.double(), iou, settings.nms_thresh).numpy()]  # best predicted IoU first
    out = []
    for i in range(0, len(survivors), settings.chunk):
        ids = survivors[i : i + settings.chunk]
        logits, ious = _candidates(model, emb, high_res, points[ids // 3], settings, which=ids % 3)
        masks = (_at_image_size(logits.to(emb.device), model.image_size) > 0).cpu()
        for j, k in enumerate(ids):
            out.append(
                AutoMask(
                    (float(points[k // 3, 0]), float(points[k // 3, 1])),
                    masks[j].numpy(),
                    float(ious[j]),
                    int(masks[j].sum()),
                )
            )
    return [m for m in out if m.area]


def _score_batch(model, emb, high_res, points: np.ndarray, settings: AutoMaskSettings):
    """(kept candidate indices k = 3 * point + mask, their predicted IoU, their boxes) of one batch."""
    logits, iou = _candidates(model, emb, high_res, points, settings)
    keep = iou > settings.pred_iou_thresh
    boxes = torch.zeros((len(iou), 4))
    for i in range(0, len(iou), settings.chunk):
        part = torch.arange(i, min(i + settings.chunk, len(iou)))
        part = part[keep[part]]
        if len(part) == 0:
            continue
        up = _at_image_size(logits[part].to(emb.device), model.image_size)  # on the GPU when there is one
        stable = calculate_stability_score(up, 0.0, settings.stability_offset) >= settings.stability_thresh
        keep[part] = stable.cpu()
        boxes[part] = batched_mask_to_box(up > 0).float().cpu()
    kept = torch.nonzero(keep).flatten()
    return kept.numpy(), iou[kept], boxes[kept]


def _candidates(model, emb, high_res, points: np.ndarray, settings: AutoMaskSettings, which=None):
    """Low-res logits (3n or n, h, w) and predicted IoU of the candidates of `points` (n, 2): every
    multimask output, refined with itself as mask prompt when `use_m2m`; `which` (n,) keeps one
    output per point. Post-processed (small holes / islands) as the release's image predictor."""
    device = emb.device
    pts = torch.from_numpy(points).to(device)[:, None]
    ones = torch.ones(pts.shape[:2], dtype=torch.int32, device=device)
    logits, iou = _decode(model, emb, high_res, pts, ones, None, multimask=True)  # (n, 3, h, w), (n, 3)
    if which is not None:
        rows = torch.arange(len(points))
        logits, iou = logits[rows, torch.as_tensor(which)][:, None], iou[rows, torch.as_tensor(which)][:, None]
    per_point = logits.shape[1]
    logits, iou = logits.flatten(0, 1), iou.flatten(0, 1)
    if settings.use_m2m:
        pts = pts.repeat_interleave(per_point, dim=0)
        ones = torch.ones(pts.shape[:2], dtype=torch.int32, device=device)
        with single_mask_output(model):
            logits, iou = _decode(model, emb, high_res, pts, ones, logits.clamp(-32.0, 32.0)[:, None], multimask=False)
        logits, iou = logits[:, 0], iou[:, 0]
    return flip_small_regions(logits.float().cpu(), settings.min_region), iou.float().cpu()


def _at_image_size(logits: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(logits[:, None], size=(size, size), mode="bilinear", align_corners=False)[:, 0]


@contextmanager
def single_mask_output(model):
    """The release's generator runs on an image model built without the video predictor's dynamic
    multimask: single-mask output is the decoder's first mask token."""
    decoder = model.sam_mask_decoder
    saved = decoder.dynamic_multimask_via_stability
    decoder.dynamic_multimask_via_stability = False
    try:
        yield
    finally:
        decoder.dynamic_multimask_via_stability = saved


def _decode(model, emb, high_res, pts, lbl, mask_input, multimask: bool):
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=emb.device.type == "cuda"):
        sparse, dense = model.sam_prompt_encoder(points=(pts, lbl), boxes=None, masks=mask_input)
        logits, iou, _, _ = model.sam_mask_decoder(
            image_embeddings=emb,
            image_pe=model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask,
            repeat_image=True,
            high_res_features=high_res,
        )
    return logits.float(), iou.float()


EIGHT_CONNECTED = np.zeros((3, 3, 3), bool)
EIGHT_CONNECTED[1] = True  # 8-connected within a mask, never across the batch


def flip_small_regions(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """SAM2Transforms.postprocess_masks on (n, h, w) logits: background components of at most
    `max_area` pixels become +10, then foreground components (of the input) of at most `max_area`
    become -10 (8-connected, border-touching ones included)."""
    if max_area <= 0 or len(logits) == 0:
        return logits
    out = logits.clone()
    for target, value in ((False, 10.0), (True, -10.0)):
        lab, n = ndimage.label((logits > 0).numpy() == target, structure=EIGHT_CONNECTED)
        if n:
            small = np.bincount(lab.ravel()) <= max_area
            small[0] = False
            out[torch.from_numpy(small[lab])] = value
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
SHRINK_KERNEL = 5  # shrink_mask's cv2 5x5 rectangle, 3 erosions then 3 dilations
SHRINK_ITERATIONS = 3
SHRINK_LOGIT = 1024.0


def open_masks(masks, size: int = SHRINK_KERNEL, iterations: int = SHRINK_ITERATIONS):
    """Morphological opening of (..., H, W) bool masks (numpy or torch, on any device) as cv2's
    erode/dilate with a size x size rectangle `iterations` times: the image border counts as
    foreground for the erosion and as background for the dilation (cv2's defaults). Repeated
    square erosions are one erosion by the (iterations * (size - 1) + 1) square, i.e. one max
    pool, whose padding is ignored as both borders require."""
    as_numpy = isinstance(masks, np.ndarray)
    m = torch.from_numpy(masks) if as_numpy else masks
    shape = m.shape
    x = m.reshape(-1, 1, *shape[-2:]).float()
    reach = iterations * (size - 1) + 1
    eroded = 1.0 - square_max(1.0 - x, reach)
    opened = (square_max(eroded, reach) > 0.5).reshape(shape)
    return opened.numpy() if as_numpy else opened


def square_max(x: torch.Tensor, reach: int) -> torch.Tensor:
    """Max of (N, 1, H, W) over a reach x reach square around each pixel, the padding ignored: a
    column pass then a row pass, the same values as one 2-D max pool at 2 / reach of its cost."""
    x = F.max_pool2d(x, (reach, 1), stride=1, padding=(reach // 2, 0))
    return F.max_pool2d(x, (1, reach), stride=1, padding=(0, reach // 2))


def shrink_mask(logits: torch.Tensor) -> torch.Tensor:
    """The release's `shrink_mask` on (..., H, W) logits: the pixels an opening would remove are set
    to +1024 (the release first writes -1024 there, then +1024 into `opened ^ mask`, the same
    pixels), so the binary mask is unchanged and only the stability score sees a crisper edge."""
    mask = logits > 0
    removed = mask & ~open_masks(mask)
    return torch.where(removed, torch.full_like(logits, SHRINK_LOGIT), logits)


def view_masks(logits: torch.Tensor, size: int, offset: float = 0.7, chunk: int = 16, device=None):
    """Propagated (V, n, h, w) low-res logits -> ((V, n, size, size) bool masks, (V, n) stability),
    as the release treats them at video resolution: upsampled (bilinear), `shrink_mask`, stability
    score (threshold 0, `offset`), binarised at 0. One view and `chunk` objects at a time, on
    `device` (the model's: at 1024 px the opening is most of a click's work on a CPU)."""
    v_count, n = logits.shape[:2]
    masks = np.zeros((v_count, n, size, size), bool)
    stability = torch.zeros((v_count, n))
    for v in range(v_count):
        for i in range(0, n, chunk):
            low = logits[v, i : i + chunk, None].to(device).float()
            up = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)[:, 0]
            up = shrink_mask(up)
            stability[v, i : i + chunk] = calculate_stability_score(up, 0.0, offset).cpu()
            masks[v, i : i + chunk] = (up > 0).cpu().numpy()
    return masks, stability


def stable_objects(
    stability: torch.Tensor, shows: np.ndarray, anchor: int, thresh: float, other_margin: float = 0.07
) -> np.ndarray:
    """The release's `filter_mask_stability`: (V, n_obj) stability and (V, n_obj) "mask not empty"
    -> (n_obj,) bool: kept unless some view where the object shows has stability < thresh (anchor
    view) or < thresh - other_margin (other views)."""
    limit = torch.full((stability.shape[0], 1), thresh - other_margin)
    limit[anchor] = thresh
    bad = torch.from_numpy(np.asarray(shows)) & (stability < limit)
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
        keep[j] = all(mask_iou(mask, new[anchor, i]) <= thresh for i in np.flatnonzero(keep)) and all(
            mask_iou(mask, e[anchor]) <= thresh for e in existing
        )
    return keep
