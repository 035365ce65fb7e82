"""Multi-view GeoSAM2 predictor on in-memory tensors: encode the views once, prompt one view,
propagate around the ring of views like video frames.

Ring semantics of the release (sam2_video_predictor_geosam2.propagate_in_video_v2): with V views
and a prompt on view s, the views are visited in the order [s, s, s+1, ..., V-1, 0, ..., s-1]
(the prompted view twice: "duplicated first frame"; the second pass overwrites the first) and
the k-th visit uses memory-bank index (s + k) mod (V + 1), with num_frames = V + 1. Memory
look-back wraps around modulo num_frames (GeoSAM2Model), object pointers don't.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .model import GeoSAM2Model

MASK_MIN_AREA_PX = 64  # inference.py: mask-prompt segments smaller than this are skipped


def ring_order(start: int, n_views: int) -> list[tuple[int, int]]:
    """[(memory index, view index)] in processing order for a prompt on view `start`."""
    if not 0 <= start < n_views:
        raise ValueError(f"start view {start} not in 0..{n_views - 1}")
    views = [start] + list(range(start, n_views)) + list(range(start))
    return [((k + start) % (n_views + 1), v) for k, v in enumerate(views)]


def memory_frames(frame_idx: int, num_frames: int, num_maskmem: int = 7) -> list[int]:
    """Non-conditioning memory indices looked up for `frame_idx` (oldest first), wrapping around
    the ring; mirrors SAM2Base's selection (temporal stride 1) with GeoSAM2's modulo."""
    return [(frame_idx - t_rel) % num_frames for t_rel in range(num_maskmem - 1, 0, -1)]


def pointer_frames(frame_idx: int, num_frames: int, max_obj_ptrs: int = 16) -> list[int]:
    """Non-conditioning frames whose object pointers are used: they do not wrap."""
    n = min(num_frames, max_obj_ptrs)
    return [frame_idx - d for d in range(1, n) if frame_idx - d >= 0]


@dataclass
class Prompt:
    """Clicks (pixel x, y in the view's image; label 1 positive / 0 negative) and/or a box, or a
    binary mask of the view (the release's `add_new_mask`; points and box are then ignored)."""

    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))
    box: np.ndarray | None = None  # (x0, y0, x1, y1)
    mask: np.ndarray | None = None  # (H, W) bool

    def mask_inputs(self, size: int, device) -> torch.Tensor:
        """(1, 1, size, size) float mask; resized as `add_new_mask` does (bilinear, antialiased,
        >= 0.5) when the mask has another size."""
        mask = torch.from_numpy(np.asarray(self.mask, bool))[None, None].float()
        if mask.shape[-2:] != (size, size):
            mask = (
                F.interpolate(mask, size=(size, size), mode="bilinear", align_corners=False, antialias=True) >= 0.5
            ).float()
        return mask.to(device)

    def point_inputs(self, scale: float, device) -> dict:
        pts, lbl = np.asarray(self.points, np.float32).reshape(-1, 2), np.asarray(self.labels, np.int32).reshape(-1)
        if self.box is not None:  # SAM convention: box corners first, labels 2 and 3
            pts = np.concatenate([np.asarray(self.box, np.float32).reshape(2, 2), pts])
            lbl = np.concatenate([np.array([2, 3], np.int32), lbl])
        if len(pts) == 0:
            raise ValueError("a prompt needs at least one click or a box")
        return {
            "point_coords": torch.from_numpy(pts * scale)[None].to(device),
            "point_labels": torch.from_numpy(lbl)[None].to(device),
        }


class MultiViewPredictor:
    """Holds one mesh's encoded views (computed once) and answers prompts with per-view masks.

    normal_maps, point_maps: (V, 3, S, S) float tensors at the model's image size
    (ImageNet-normalised normal map; point map clipped to [-1, 1], background 0).
    """

    def __init__(self, model: GeoSAM2Model, normal_maps: torch.Tensor, point_maps: torch.Tensor, encode_batch: int = 1):
        size = model.image_size
        if normal_maps.shape != point_maps.shape or normal_maps.shape[1:] != (3, size, size):
            raise ValueError(
                f"views must be (V, 3, {size}, {size}) normal and point maps, got "
                f"{tuple(normal_maps.shape)} and {tuple(point_maps.shape)}"
            )
        self.model = model
        self.device = next(model.parameters()).device
        self.n_views = normal_maps.shape[0]
        self.num_frames = self.n_views + 1
        self._normal_maps, self._point_maps = normal_maps, point_maps
        self.encode_batch = encode_batch
        self._features: list | None = None  # per level (V, C, H, W); pos enc per level (1, C, H, W)
        self._pos: list | None = None

    @classmethod
    def from_features(cls, model: GeoSAM2Model, features: list[torch.Tensor], pos: list[torch.Tensor]):
        """A predictor on already encoded views (per level (V, C, H, W); pos enc per level (1, C, H, W))."""
        self = cls.__new__(cls)
        self.model, self.device = model, next(model.parameters()).device
        self.n_views = features[0].shape[0]
        self.num_frames = self.n_views + 1
        self._normal_maps = self._point_maps = None
        self.encode_batch = 1
        self._features, self._pos = features, pos
        return self

    # --- features -------------------------------------------------------------------------
    def _autocast(self):
        return torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda")

    @torch.inference_mode()
    def encode(self) -> None:
        """Encode all views once (no-op when already done)."""
        if self._features is not None:
            return
        levels, pos = None, None
        with self._autocast():
            for i in range(0, self.n_views, self.encode_batch):
                out = self.model.forward_image(
                    self._normal_maps[i : i + self.encode_batch].to(self.device).float(),
                    self._point_maps[i : i + self.encode_batch].to(self.device).float(),
                )
                feats = [f.float() for f in out["backbone_fpn"]]
                levels = [[f] for f in feats] if levels is None else [level + [f] for level, f in zip(levels, feats)]
                pos = pos or [p[:1].float() for p in out["vision_pos_enc"]]
        self._features = [torch.cat(level) for level in levels]
        self._pos = pos
        self._normal_maps = self._point_maps = None  # inputs no longer needed

    def _frame(self, view: int, batch: int):
        """SAM2Base's flattened (HW, B, C) features of one view, expanded to `batch` objects."""
        self.encode()
        feats = [f[view : view + 1].expand(batch, -1, -1, -1) for f in self._features]
        pos = [p.expand(batch, -1, -1, -1) for p in self._pos]
        sizes = [(f.shape[-2], f.shape[-1]) for f in feats]
        vision = [f.flatten(2).permute(2, 0, 1) for f in feats]
        vision_pos = [p.flatten(2).permute(2, 0, 1) for p in pos]
        return vision, vision_pos, sizes

    # --- prompting and propagation --------------------------------------------------------
    @torch.inference_mode()
    def prompt(self, view: int, prompt: Prompt, frame_idx: int | None = None) -> dict:
        """Conditioning output of one object on `view` (SAM on that view, then its memory)."""
        m = self.model
        frame_idx = view if frame_idx is None else frame_idx
        vision, vision_pos, sizes = self._frame(view, 1)
        if prompt.mask is not None:  # SAM2 turns a mask prompt straight into the output (+-10 logits)
            points, mask = None, prompt.mask_inputs(m.image_size, self.device)
        else:
            points, mask = prompt.point_inputs(m.image_size / self._image_width(), self.device), None
        with self._autocast():
            out = m.track_step(
                frame_idx=frame_idx,
                is_init_cond_frame=True,
                current_vision_feats=vision,
                current_vision_pos_embeds=vision_pos,
                feat_sizes=sizes,
                point_inputs=points,
                mask_inputs=mask,
                output_dict={"cond_frame_outputs": {}, "non_cond_frame_outputs": {}},
                num_frames=self.num_frames,
                run_mem_encoder=False,
            )
            # As the video predictor's preflight: memory from the (binarised) click mask.
            low = fill_small_holes(out["pred_masks"].float(), m.fill_hole_area)
            high = F.interpolate(low, size=(m.image_size, m.image_size), mode="bilinear", align_corners=False)
            feats, pos = m._encode_new_memory(vision, sizes, high, out["object_score_logits"], is_mask_from_pts=True)
        return {
            "maskmem_features": feats.float(),
            "maskmem_pos_enc": [p.float() for p in pos],
            "pred_masks": low,
            "obj_ptr": out["obj_ptr"].float(),
            "object_score_logits": out["object_score_logits"].float(),
        }

    def _image_width(self) -> int:
        return self.model.image_size  # prompts are given in model-image pixels

    def frame_index(self, start: int, view: int) -> int:
        """Memory-bank index at which `view` is visited (last visit) when the ring starts at `start`."""
        return [f for f, v in ring_order(start, self.n_views) if v == view][-1 if view != start else 0]

    @torch.inference_mode()
    def propagate(self, start: int, cond_frames: dict[int, list[dict]], cancel=None) -> torch.Tensor:
        """Track objects around the ring starting at view `start`.

        cond_frames: {memory index: [conditioning output per object]} (from `prompt`; the start
        view's index is `start`, another view's is `frame_index(start, view)`); every object has
        an output on every conditioning frame. Returns mask logits (V, n_objects, S/4, S/4)
        (low resolution, as SAM2 predicts them)."""
        m = self.model
        if start not in cond_frames:
            raise ValueError("the start view must carry the prompts")
        n_obj = len(cond_frames[start])
        if n_obj == 0 or any(len(o) != n_obj for o in cond_frames.values()):
            raise ValueError("every conditioning frame needs one output per object (and at least one object)")
        output_dict = {
            "cond_frame_outputs": {f: _batch(outs) for f, outs in cond_frames.items()},
            "non_cond_frame_outputs": {},
        }
        lo = m.image_size // 4
        logits = torch.full((self.n_views, n_obj, lo, lo), -1024.0)
        for frame_idx, view in ring_order(start, self.n_views):
            if cancel is not None:
                cancel.check()
            if frame_idx in output_dict["cond_frame_outputs"]:
                logits[view] = output_dict["cond_frame_outputs"][frame_idx]["pred_masks"][:, 0].cpu()
                continue
            vision, vision_pos, sizes = self._frame(view, n_obj)
            with self._autocast():
                out = m.track_step(
                    frame_idx=frame_idx,
                    is_init_cond_frame=False,
                    current_vision_feats=vision,
                    current_vision_pos_embeds=vision_pos,
                    feat_sizes=sizes,
                    point_inputs=None,
                    mask_inputs=None,
                    output_dict=output_dict,
                    num_frames=self.num_frames,
                    run_mem_encoder=True,
                )
            low = fill_small_holes(out["pred_masks"].float(), m.fill_hole_area)
            output_dict["non_cond_frame_outputs"][frame_idx] = {
                "maskmem_features": out["maskmem_features"],
                "maskmem_pos_enc": out["maskmem_pos_enc"],
                "pred_masks": low,
                "obj_ptr": out["obj_ptr"],
                "object_score_logits": out["object_score_logits"],
            }
            logits[view] = low[:, 0].cpu()  # the second visit of `start` overwrites the first
        return logits

    def refine_on_view(self, view: int, prompt: Prompt) -> torch.Tensor:
        """Stage 1 of the release's click pipeline (`single_view_point_prompt_infer.py`): the prompt
        on a one-view "video" of `view`, which the ring visits twice; returns the second visit's
        low-res logits (1, S/4, S/4), the mask the release then gives the 12-view ring as prompt."""
        self.encode()
        single = MultiViewPredictor.from_features(self.model, [f[view : view + 1] for f in self._features], self._pos)
        return single.propagate(0, {0: [single.prompt(0, prompt)]})[0]

    def refined_click_mask(self, view: int, prompt: Prompt) -> np.ndarray:
        """Stage 1's (S, S) bool mask at the model's image size (the release's video resolution)."""
        size = self.model.image_size
        low = self.refine_on_view(view, prompt)
        return (F.interpolate(low[None], size=(size, size), mode="bilinear", align_corners=False)[0, 0] > 0).numpy()

    def propagate_clicks(self, start: int, prompts: dict[int, Prompt], min_area: int = MASK_MIN_AREA_PX, cancel=None):
        """The release's two-stage click pipeline for one object: each view's clicks are refined on
        that view alone (stage 1), masks under `min_area` pixels are dropped (inference.py's
        MASK_MIN_AREA_PX), and the rest seed the ring as mask prompts (stage 2, `add_new_mask`).
        Returns (ring logits (V, 1, S/4, S/4) or None when no mask is left, {view: stage-1 mask}); the
        ring starts at `start`, or at the first kept view when `start`'s mask was dropped."""
        stage1 = {}
        for view, prompt in prompts.items():
            if cancel is not None:
                cancel.check()
            mask = self.refined_click_mask(view, prompt)
            if mask.sum() >= min_area:
                stage1[view] = mask
        if not stage1:
            return None, stage1
        start = start if start in stage1 else next(iter(stage1))
        cond = {}
        for view, mask in stage1.items():
            frame = self.frame_index(start, view)
            cond[frame] = [self.prompt(view, Prompt(mask=mask), frame_idx=frame)]
        return self.propagate(start, cond, cancel), stage1

    def view_features(self, view: int):
        """(image embedding (1,C,h,w), high-res features [s0, s1]) of one view, for single-image SAM."""
        self.encode()
        f = [x[view : view + 1] for x in self._features]
        return f[-1], f[:-1]


def _batch(outputs: list[dict]) -> dict:
    """Per-object conditioning outputs stacked along the batch dimension."""
    out = {
        k: torch.cat([o[k] for o in outputs])
        for k in ("maskmem_features", "pred_masks", "obj_ptr", "object_score_logits")
    }
    out["maskmem_pos_enc"] = [p.expand(len(outputs), -1, -1, -1) for p in outputs[0]["maskmem_pos_enc"]]
    return out


def fill_small_holes(logits: torch.Tensor, max_area: int) -> torch.Tensor:
    """Fill background holes of at most `max_area` pixels in mask logits (B, 1, h, w) with 0.1,
    as SAM2's video predictor does (its CUDA extension replaced by scipy's labelling)."""
    if max_area <= 0:
        return logits
    from scipy import ndimage

    background = (logits <= 0).cpu().numpy()
    fill = np.zeros_like(background)
    for i in range(background.shape[0]):
        lab, n = ndimage.label(background[i, 0], structure=np.ones((3, 3)))  # 8-connected, as SAM2
        if n == 0:
            continue
        areas = np.bincount(lab.ravel())
        small = areas <= max_area
        small[0] = False
        fill[i, 0] = small[lab]
    if not fill.any():
        return logits
    return torch.where(torch.from_numpy(fill).to(logits.device), torch.full_like(logits, 0.1), logits)
