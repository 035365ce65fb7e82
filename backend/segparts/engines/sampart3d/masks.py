"""2D masks of the rendered views: where the grouping field's supervision comes from.

`MaskSource.masks_for_views(views)` returns, per view, a list of (H, W) bool masks.
- `SamAutomaticMasks` (the `paper` preset, the release's masks): segment-anything's ViT-H with
  its automatic generator's steps and the release's thresholds, on the package's model code only
  (its automatic generator and transforms import torchvision, which this project does not ship).
- `Sam2AutomaticMasks`: the same generator on SAM 2.1 (sam2's model classes only, same reason).
- `ProvidedMasks`: masks the user (or a test) supplies - the paper's "segmentation controlled by
  2D masks".
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F

from ...installer import LEARNED_FIX
from ..nms import box_nms

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SAM2_CONFIGS = {  # checkpoint name -> sam2 package config
    "sam2.1-hiera-large": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2.1-hiera-base-plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1-hiera-small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1-hiera-tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
}


class NoMasksError(ValueError):
    """No view produced a mask: the field would have nothing to learn from."""


class MaskSource(Protocol):
    def masks_for_views(self, views) -> list[list[np.ndarray]]: ...


def check_masks(per_view: list[list[np.ndarray]], shape: tuple[int, int], what: str) -> list[list[np.ndarray]]:
    out = []
    for v, masks in enumerate(per_view):
        clean = []
        for m in masks:
            m = np.asarray(m)
            if m.shape != shape:
                raise ValueError(f"{what}: view {v} has a mask of shape {m.shape}, expected {shape}")
            clean.append(m.astype(bool))
        out.append(clean)
    if not any(m.any() for masks in out for m in masks):
        raise NoMasksError(
            f"{what} gave no non-empty mask on any of the {len(out)} views; the grouping field needs at least one"
        )
    return out


class ProvidedMasks:
    """Fixed masks: per view a list of (H, W) bool masks, or an (H, W) int label image (-1 = none)."""

    def __init__(self, per_view):
        self.per_view = per_view

    def masks_for_views(self, views) -> list[list[np.ndarray]]:
        n, h, w = views.face_id.shape
        if len(self.per_view) != n:
            raise ValueError(f"provided masks cover {len(self.per_view)} views, the renders have {n}")
        per_view = []
        for item in self.per_view:
            arr = np.asarray(item) if not isinstance(item, list) else None
            if arr is not None and arr.ndim == 2 and arr.dtype.kind in "iu":
                per_view.append([arr == k for k in np.unique(arr) if k >= 0])
            else:
                per_view.append(list(item))
        return check_masks(per_view, (h, w), "the provided masks")


class PointGridMasks:
    """Automatic masks from a grid of single-point prompts, as segment-anything's and sam2's
    automatic generators without crops: three masks per point, kept when the predicted IoU >
    `pred_iou_thresh` and the stability score >= `stability_score_thresh`, then box NMS.
    Subclasses give the model: `_embed(image)` and `_predict(feats, points_px, (h, w))`, and the
    `amg` module of its package (point grid, stability score, mask boxes: the release's own code)."""

    def __init__(
        self,
        device: str = "cpu",
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.9,
        stability_score_thresh: float = 0.9,
        stability_score_offset: float = 1.0,
        mask_threshold: float = 0.0,
        box_nms_thresh: float = 0.7,
        max_masks_per_view: int | None = None,
    ):
        self.device = device
        self.points_per_side, self.points_per_batch = points_per_side, points_per_batch
        self.pred_iou_thresh, self.stability_score_thresh = pred_iou_thresh, stability_score_thresh
        self.stability_score_offset, self.mask_threshold = stability_score_offset, mask_threshold
        self.box_nms_thresh, self.max_masks_per_view = box_nms_thresh, max_masks_per_view

    name = "automatic masks"

    def _embed(self, image: np.ndarray):
        raise NotImplementedError

    def amg(self):
        """The model package's `utils.amg` module."""
        raise NotImplementedError

    def _predict(self, feats, points_px: torch.Tensor, hw: tuple[int, int]):
        raise NotImplementedError

    @torch.no_grad()
    def masks_for_image(self, image: np.ndarray) -> list[np.ndarray]:
        if image.ndim != 3 or image.shape[2] < 3:
            raise ValueError(f"expected an (H, W, 3) image, got {image.shape}")
        h, w = image.shape[:2]
        amg = self.amg()
        feats = self._embed(image)
        grid = torch.from_numpy(amg.build_point_grid(self.points_per_side) * np.array([w, h])).float()
        kept_masks, kept_iou = [], []
        for start in range(0, len(grid), self.points_per_batch):
            logits, iou = self._predict(feats, grid[start : start + self.points_per_batch], (h, w))
            ok = iou > self.pred_iou_thresh
            logits, iou = logits[ok], iou[ok]
            stability = amg.calculate_stability_score(logits, self.mask_threshold, self.stability_score_offset)
            ok = stability >= self.stability_score_thresh
            kept_masks.append(logits[ok] > self.mask_threshold)
            kept_iou.append(iou[ok])
        masks = torch.cat(kept_masks) if kept_masks else torch.zeros(0, h, w, dtype=torch.bool)
        scores = torch.cat(kept_iou) if kept_iou else torch.zeros(0)
        keep = box_nms(amg.batched_mask_to_box(masks).float(), scores, self.box_nms_thresh)
        if self.max_masks_per_view is not None:
            keep = keep[: self.max_masks_per_view]
        return [m.numpy() for m in masks[keep]]

    def masks_for_views(self, views, progress=None, check=None) -> list[list[np.ndarray]]:
        """Masks of every view; `progress(fraction)` after each view, `check()` before each."""
        if views.color is None:
            raise ValueError("SAM needs the shaded colour renders (render with 'color')")
        per_view = []
        for k in range(views.n_views):
            if check is not None:
                check()
            per_view.append(self.masks_for_image(views.color[k]))
            if progress is not None:
                progress((k + 1) / views.n_views)
        h, w = views.face_id.shape[1:]
        return check_masks(per_view, (h, w), self.name)


class Sam2AutomaticMasks(PointGridMasks):
    """SAM 2 automatic masks with SAMPart3D's settings (32 x 32 points, IoU and stability 0.9)."""

    name = "SAM 2 automatic masks"

    def __init__(
        self,
        model=None,
        checkpoint: str | None = None,
        config: str = SAM2_CONFIGS["sam2.1-hiera-large"],
        device: str = "cpu",
        **settings,
    ):
        if model is None:
            from sam2.build_sam import build_sam2

            model = build_sam2(config, checkpoint, device=device)
        super().__init__(device=device, **settings)
        self.model = model.eval()

    def amg(self):
        from sam2.utils import amg

        return amg

    # -- image embedding (SAM2ImagePredictor.set_image without torchvision) --
    def _embed(self, image: np.ndarray) -> dict:
        size = self.model.image_size
        x = torch.from_numpy(np.ascontiguousarray(image[..., :3])).permute(2, 0, 1)[None].float() / 255.0
        x = F.interpolate(x, (size, size), mode="bilinear", align_corners=False, antialias=True)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        x = ((x - mean) / std).to(self.device)
        out = self.model.forward_image(x)
        _, vision_feats, _, feat_sizes = self.model._prepare_backbone_features(out)
        if self.model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
        feats = [f.permute(1, 2, 0).reshape(1, -1, *s) for f, s in zip(vision_feats, feat_sizes)]
        return {"image_embed": feats[-1], "high_res_feats": feats[:-1]}

    def _predict(self, feats: dict, points_px: torch.Tensor, hw: tuple[int, int]):
        """Three masks (logits at image size) and IoU predictions per single-point prompt."""
        size = self.model.image_size
        h, w = hw
        coords = points_px / torch.tensor([w, h], dtype=torch.float32) * size
        labels = torch.ones(len(coords), 1, dtype=torch.int, device=self.device)
        sparse, dense = self.model.sam_prompt_encoder(
            points=(coords[:, None].to(self.device), labels), boxes=None, masks=None
        )
        low_res, iou, _, _ = self.model.sam_mask_decoder(
            image_embeddings=feats["image_embed"],
            image_pe=self.model.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
            repeat_image=len(coords) > 1,
            high_res_features=feats["high_res_feats"],
        )
        logits = F.interpolate(low_res, (h, w), mode="bilinear", align_corners=False)
        return logits.flatten(0, 1).cpu(), iou.flatten(0, 1).cpu()


# ------------------------------------------------------------------------------ SAM ViT-H
SAM_VIT_H = "sam-vit-h"
_SAM_ALIAS = "_segparts_segment_anything"


def segment_anything_module(name: str):
    """A module of the segment-anything package (`build_sam`, `modeling`) without running the
    package's `__init__`, which imports its automatic mask generator and so torchvision (not
    shipped here). The package directory is mounted under a private name: the model code only
    uses relative imports, and the public name `segment_anything` is left untouched."""
    import importlib
    import importlib.machinery
    import importlib.util
    import sys

    if _SAM_ALIAS not in sys.modules:
        spec = importlib.util.find_spec("segment_anything")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError(f"the python package segment-anything is not installed; to fix: {LEARNED_FIX}")
        alias = importlib.machinery.ModuleSpec(_SAM_ALIAS, None, is_package=True)
        alias.submodule_search_locations = list(spec.submodule_search_locations)
        sys.modules[_SAM_ALIAS] = importlib.util.module_from_spec(alias)
    return importlib.import_module(f"{_SAM_ALIAS}.{name}")


class CheckpointError(RuntimeError):
    """A checkpoint file whose tensors do not fit the model (names or shapes)."""


SAM_PIXEL_MEAN = (123.675, 116.28, 103.53)  # segment-anything's build_sam (not stored in checkpoints)
SAM_PIXEL_STD = (58.395, 57.12, 57.375)


def build_sam_vit_h(checkpoint: str | None = None, device: str = "cpu"):
    """segment-anything's ViT-H SAM; `checkpoint` (sam_vit_h_4b8939.pth) loaded strictly: every
    tensor name and shape must match. With a checkpoint the model is laid out on the meta device
    and takes the file's tensors (no 2.5 GB random initialisation first)."""
    build = segment_anything_module("build_sam").build_sam_vit_h
    if checkpoint is None:
        return build(None).to(device).eval()
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    with torch.device("meta"):
        model = build(None)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    if missing or unexpected or wrong:
        raise CheckpointError(
            f"{checkpoint} is not a SAM ViT-H checkpoint: {len(missing)} missing ({', '.join(missing[:3])}), "
            f"{len(unexpected)} unexpected ({', '.join(unexpected[:3])}), {len(wrong)} of another shape "
            f"({', '.join(wrong[:3])}); fetch it again: segparts models fetch {SAM_VIT_H} --force"
        )
    model.load_state_dict(state, strict=True, assign=True)
    model.register_buffer("pixel_mean", torch.tensor(SAM_PIXEL_MEAN).view(-1, 1, 1), False)
    model.register_buffer("pixel_std", torch.tensor(SAM_PIXEL_STD).view(-1, 1, 1), False)
    return model.float().to(device).eval()


class SamAutomaticMasks(PointGridMasks):
    """segment-anything's `SamAutomaticMaskGenerator` as SAMPart3D's release runs it on ViT-H:
    32 x 32 points, predicted IoU > 0.9, stability >= 0.9 (offset 1), box NMS 0.7, one crop, no
    small-region clean-up. Preprocessing as its `SamPredictor`: longest side resized to 1024
    (PIL bilinear), pixel mean/std, zero padding; masks upsampled 256 -> 1024 -> crop -> image."""

    name = "SAM ViT-H automatic masks"

    def __init__(self, model=None, checkpoint: str | None = None, device: str = "cpu", **settings):
        super().__init__(device=device, **settings)
        self.model = (model if model is not None else build_sam_vit_h(checkpoint, device)).eval()

    def amg(self):
        return segment_anything_module("utils.amg")

    def _resized_shape(self, h: int, w: int) -> tuple[int, int]:
        size = self.model.image_encoder.img_size
        scale = size / max(h, w)
        return int(h * scale + 0.5), int(w * scale + 0.5)

    def _embed(self, image: np.ndarray) -> dict:
        from PIL import Image

        h, w = image.shape[:2]
        nh, nw = self._resized_shape(h, w)
        resized = np.array(Image.fromarray(np.ascontiguousarray(image[..., :3])).resize((nw, nh), Image.BILINEAR))
        x = torch.as_tensor(resized, device=self.device).permute(2, 0, 1).contiguous()[None]
        x = self.model.preprocess(x)  # normalise and pad to the encoder's square
        return {"embedding": self.model.image_encoder(x), "input_size": (nh, nw)}

    def _predict(self, feats: dict, points_px: torch.Tensor, hw: tuple[int, int]):
        h, w = hw
        nh, nw = feats["input_size"]
        coords = points_px * torch.tensor([nw / w, nh / h], dtype=torch.float32)
        labels = torch.ones(len(coords), 1, dtype=torch.int, device=self.device)
        sparse, dense = self.model.prompt_encoder(
            points=(coords[:, None].to(self.device), labels), boxes=None, masks=None
        )
        low_res, iou = self.model.mask_decoder(
            image_embeddings=feats["embedding"],
            image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=True,
        )
        logits = self.model.postprocess_masks(low_res, (nh, nw), (h, w))
        return logits.flatten(0, 1).cpu(), iou.flatten(0, 1).cpu()
