"""`geosam2`: GeoSAM2 (SAM2.1 Hiera-B+ with a geometry encoder, LoRA and feature fusion).

- `pick`: 3D clicks (faces or surface points; positive and negative) -> the best of the 12 ring
  views and pixel -> SAM prompt there -> propagation around the ring -> lifted to faces. The 12
  views are encoded once per mesh and cached, so further clicks only re-run the light heads.
- `segment`: automatic mode as the release: an automatic mask generator on the start view, each
  kept mask's point becomes an object, propagate; then the same on the opposite view over the
  pixels not yet covered; lift everything to the faces and clean up.

Hierarchy: GeoSAM2 gives one flat partition, returned as `Hierarchy.flat(labels)`.
Torch, sam2 and the model are imported only when the engine runs (never for availability()).
"""
from __future__ import annotations

import importlib.util
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ...hierarchy import Hierarchy
from ...mesh import Mesh
from ..base import (Availability, CancelToken, EngineUnavailable, Option, PickRequest, PickResult, Progress,
                    Segmentation, SegmentParams)

# geosam2.pt holds every parameter of the model (SAM2.1 Hiera-B+ included), so the base SAM2.1
# checkpoint is not needed to run; only this file is required.
CHECKPOINTS = ["geosam2"]
PACKAGES = ["torch", "sam2", "hydra", "scipy", "embreex"]
N_VIEWS = 12
OPPOSITE = 6
PROMPTED_STABILITY = 0.0
AUTO_STABILITY = 0.7
AUTO_AREA_RATIO = 1.0  # release: automatic objects larger in another view than in their anchor view are dropped
PROMPTED_AREA_RATIO = 10000.0
IOU_DUPLICATE = 0.8
POSTPROCESS_PA = 0.02  # release default (0.01-0.035 suggested)
SESSIONS_KEPT = 2


def _checkpoint_status() -> Availability:
    try:
        from ... import models
    except ImportError as exc:  # pragma: no cover - models.py is part of the package
        return Availability(False, [f"segparts.models: {exc}"], "reinstall segparts")
    return models.availability(CHECKPOINTS)


@dataclass
class _Session:
    """Everything about one mesh that survives between clicks."""
    mesh: Mesh  # normalised copy (longest side 1, centred), same faces
    normalization: object
    rig: object
    views: object
    predictor: object
    samples: object = None
    adjacency: np.ndarray | None = None
    info: dict = field(default_factory=dict)


class GeoSAM2Engine:
    name = "geosam2"
    options = (Option("auto_points", int, 1, 1_000_000), Option("auto_pred_iou", float, 0.0, 1.0),
               Option("auto_stability", float, 0.0, 1.0), Option("start_view", int, 0, 11),
               Option("seed", int, 0, 2**32 - 1), Option("pa", float, 0.0, 1.0),
               Option("box", "numbers", length=4))  # box: pick only, [x0, y0, x1, y1] pixels of the start view

    def __init__(self, device: str = "cpu", image_size: int = 1024, weights: str | None = None,
                 encode_batch: int | None = None):
        """`image_size` below 1024 and `weights="random"` are test/benchmark-only settings (the
        released checkpoint works at 1024); `weights` may also be an explicit checkpoint path."""
        self.device = device
        self.image_size = int(image_size)
        self.weights = weights
        self.encode_batch = encode_batch
        self._model = None
        self._sessions: OrderedDict[str, _Session] = OrderedDict()
        self._lock = threading.Lock()
        self.last_timings: dict[str, float] = {}

    # --- availability -------------------------------------------------------------------------
    def availability(self) -> Availability:
        missing = [f"python package {p}" for p in PACKAGES if importlib.util.find_spec(p) is None]
        fix = "make setup (installs torch, sam2 without torchvision, hydra-core, scipy, embreex)" if missing else ""
        if self.weights == "random":
            return Availability(not missing, missing, fix)
        if self.weights is not None:
            from pathlib import Path
            if not Path(self.weights).is_file():
                missing.append(f"checkpoint file {self.weights}")
            return Availability(not missing, missing, fix)
        ckpt = _checkpoint_status()
        missing += ckpt.missing
        fix = "; ".join(f for f in (fix, ckpt.fix) if f)
        return Availability(not missing, missing, fix)

    # --- model and per-mesh cache -------------------------------------------------------------
    def _torch_device(self) -> str:
        import torch

        if self.device in ("auto", None):
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    def model(self):
        if self._model is None:
            avail = self.availability()
            if not avail.available:
                raise EngineUnavailable(avail)
            from .model import build_model, load_checkpoint

            model = build_model(self.image_size, device="cpu")
            if self.weights != "random":
                path = self.weights
                if path is None:
                    from ... import models
                    path = models.model_path(CHECKPOINTS[0])
                load_checkpoint(model, path)
            self._model = model.to(self._torch_device()).eval()
        return self._model

    def render_session(self, mesh: Mesh) -> _Session:
        """The rendered ring of `mesh` (cached); its views are encoded by `session`."""
        key = mesh.content_hash
        with self._lock:
            if key in self._sessions:
                self._sessions.move_to_end(key)
                return self._sessions[key]
        from ...render import geosam2_rig, normalize_for_rendering, render_views

        t0 = time.perf_counter()
        vertices, norm = normalize_for_rendering(mesh.vertices)
        nmesh = Mesh(vertices, mesh.faces)
        rig = geosam2_rig(size=self.image_size, extents=norm.extents)
        views = render_views(nmesh, rig, outputs=("face_id", "depth", "alpha", "normal", "point"))
        s = _Session(nmesh, norm, rig, views, None, info={"render_s": round(time.perf_counter() - t0, 3)})
        with self._lock:
            self._sessions[key] = s
            while len(self._sessions) > SESSIONS_KEPT:
                self._sessions.popitem(last=False)
        return s

    def session(self, mesh: Mesh, progress: Progress | None = None) -> _Session:
        """The rendered and encoded views of `mesh` (encoded on first use, then cached)."""
        s = self.render_session(mesh)
        if s.predictor is not None:
            return s
        from ...render import geosam2_inputs
        from .predictor import MultiViewPredictor

        t0 = time.perf_counter()
        normal_maps, point_maps = geosam2_inputs(s.views, as_torch=True)
        model = self.model()
        batch = self.encode_batch or (4 if str(next(model.parameters()).device).startswith("cuda") else 1)
        predictor = MultiViewPredictor(model, normal_maps, point_maps, encode_batch=batch)
        if progress:
            progress(0.05, "encoding views")
        predictor.encode()
        s.info["encode_s"] = round(time.perf_counter() - t0, 3)
        s.predictor = predictor
        return s

    # --- pick -----------------------------------------------------------------------------------
    def pick(self, mesh: Mesh, segmentation: Segmentation | None, request: PickRequest,
             cancel: CancelToken) -> PickResult:
        if not request.clicks:
            raise ValueError("pick needs at least one click")
        t0 = time.perf_counter()
        s = self.render_session(mesh)
        placed = [self._place_click(s, c) for c in request.clicks]  # bad clicks fail before encoding
        s = self.session(mesh)
        cancel.check()
        t1 = time.perf_counter()
        from .predictor import Prompt

        start = placed[0][0][0]
        by_view: dict[int, list] = {}
        for views_seen, click in zip(placed, request.clicks):
            in_start = [xy for v, xy in views_seen if v == start]
            view, xy = (start, in_start[0]) if in_start else views_seen[0]
            by_view.setdefault(view, []).append((xy, 1 if click.positive else 0))
        box = request.options.get("box")
        if box is not None:  # [x0, y0, x1, y1] in pixels of the start view
            box = np.asarray(box, np.float32).reshape(4)
        cond = {}
        for view, items in by_view.items():
            pts = np.array([xy for xy, _ in items], np.float32) + 0.5  # pixel centres
            prompt = Prompt(pts, np.array([lab for _, lab in items], np.int32), box if view == start else None)
            frame = s.predictor.frame_index(start, view)
            cond[frame] = [s.predictor.prompt(view, prompt, frame_idx=frame)]
        logits = s.predictor.propagate(start, cond, cancel)
        masks = self._binarize(logits, s)[:, 0]  # (V, S, S)
        other = s.views.face_id >= 0
        label_images = np.where(masks, 0, np.where(other, 1, -1)).astype(np.int32)
        labels = self._lift(s, label_images, min_fraction=0.0, split=False)
        t2 = time.perf_counter()
        self.last_timings = {"session_s": t1 - t0, "click_s": t2 - t1}
        return PickResult(mask=labels == 0, info={"start_view": int(start), "views": sorted(by_view),
                                                   "click_s": round(t2 - t1, 3)})

    def _place_click(self, s: _Session, click) -> list[tuple[int, tuple[int, int]]]:
        """Views (best first) and pixel where a click shows; clear errors for bad clicks."""
        from ...lifting import views_for_click
        from ...proximity import closest_point

        if click.face is None and click.point is None:
            raise ValueError("a click needs a face index or a surface point")
        face, point = click.face, None
        if face is not None:
            face = int(face)
            if not 0 <= face < s.mesh.n_faces:
                raise ValueError(f"face {face} is not on the mesh (it has {s.mesh.n_faces} faces)")
        if click.point is not None:
            p = np.asarray(click.point, np.float64)
            if p.shape != (3,) or not np.isfinite(p).all():
                raise ValueError("a click point must be 3 finite numbers")
            point = s.normalization.apply(p)
            nearest, dist, _ = closest_point(s.mesh, point[None])
            nearest, dist = int(nearest[0]), float(dist[0])
            if dist > 2e-3:  # normalised units: 0.2 % of the object's size
                raise ValueError(f"click point {tuple(p)} is not on the mesh (nearest surface is "
                                 f"{dist / s.normalization.scale:.4g} away)")
            face = nearest if face is None else face
        seen = views_for_click(s.mesh, s.rig, s.views, face=face, point=point)
        if not seen:
            raise ValueError(f"face {face} is hidden in all {s.rig.n_views} views (inside the mesh or "
                             "occluded): click a visible part")
        return seen

    # --- segment (automatic) --------------------------------------------------------------------
    def segment(self, mesh: Mesh, params: SegmentParams, progress: Progress, cancel: CancelToken) -> Segmentation:
        from .automatic import AutoMaskSettings, generate_masks, select_masks
        from .predictor import Prompt

        opts = params.options
        t0 = time.perf_counter()
        progress(0.0, "rendering")
        s = self.session(mesh, progress)
        t1 = time.perf_counter()
        settings = AutoMaskSettings(max_points=int(opts.get("auto_points", 4096)))
        # benchmark-only: random weights predict low IoU, so timing runs may open these thresholds
        settings.pred_iou_thresh = float(opts.get("auto_pred_iou", settings.pred_iou_thresh))
        settings.stability_thresh = float(opts.get("auto_stability", settings.stability_thresh))
        start = int(opts.get("start_view", 0)) % N_VIEWS
        objects: list[np.ndarray] = []  # (V, S, S) bool each
        n_propagated = 0
        foreground = s.views.face_id >= 0
        for step, seed_view in enumerate((start, (start + OPPOSITE) % N_VIEWS)):
            cancel.check()
            progress(0.1 + 0.4 * step, f"automatic masks on view {seed_view}")
            covered = np.zeros_like(foreground[seed_view])
            for o in objects:
                covered |= o[seed_view]
            emb, high_res = s.predictor.view_features(seed_view)
            auto = select_masks(generate_masks(self.model(), emb, high_res, foreground[seed_view] & ~covered,
                                               settings, seed=int(opts.get("seed", 0)), cancel=cancel),
                                settings.accept_iou)
            if not auto:
                continue
            progress(0.25 + 0.4 * step, f"propagating {len(auto)} objects from view {seed_view}")
            cond = {seed_view: [s.predictor.prompt(seed_view, Prompt(np.array([m.point], np.float32),
                                                                     np.array([1], np.int32))) for m in auto]}
            logits = s.predictor.propagate(seed_view, cond, cancel)
            n_propagated += len(auto)
            objects += self._filter_objects(logits, s, seed_view, AUTO_STABILITY, AUTO_AREA_RATIO, objects)
        progress(0.9, "lifting")
        if not objects:
            labels = np.zeros(mesh.n_faces, np.int32)  # nothing found: one part
        else:
            labels = self.labels_from_view_masks(s, objects, pa=float(opts.get("pa", POSTPROCESS_PA)))
        t2 = time.perf_counter()
        progress(1.0, "done")
        info = {"n_objects": len(objects), "n_propagated": n_propagated, "render_s": s.info["render_s"],
                "encode_s": s.info.get("encode_s"),
                "segment_s": round(t2 - t1, 3), "total_s": round(t2 - t0, 3), "image_size": self.image_size,
                "hierarchy": "flat"}
        hierarchy = Hierarchy.flat(labels)
        if params.parts is not None or params.scale is not None:
            labels = hierarchy.cut(parts=params.parts, scale=params.scale).astype(np.int32)
        return Segmentation(labels.astype(np.int32), hierarchy, state=None, info=info)

    # --- helpers --------------------------------------------------------------------------------
    def _binarize(self, logits, s: _Session) -> np.ndarray:
        """(V, n, h, w) low-res logits -> (V, n, S, S) bool masks at the views' size, opened (5x5, 3+3)."""
        import torch.nn.functional as F

        from .automatic import open_masks

        h, w = s.views.face_id.shape[1:]
        out = np.zeros((logits.shape[0], logits.shape[1], h, w), bool)
        for v in range(logits.shape[0]):  # one view at a time keeps memory at n x S²
            up = F.interpolate(logits[v][:, None], size=(h, w), mode="bilinear", align_corners=False)[:, 0] > 0
            out[v] = open_masks(up.numpy()) & (s.views.face_id[v] >= 0)
        return out

    def _filter_objects(self, logits, s: _Session, anchor: int, stability: float, area_ratio: float,
                        existing: list[np.ndarray]) -> list[np.ndarray]:
        from .automatic import area_consistent, novel_objects, stable_objects

        keep = stable_objects(logits, anchor, stability)
        if not keep.any():
            return []
        masks = self._binarize(logits[:, keep], s)
        keep2 = area_consistent(masks, anchor, area_ratio)
        masks = masks[:, keep2]
        keep3 = novel_objects(masks, existing, anchor, IOU_DUPLICATE)
        return [masks[:, j] for j in np.flatnonzero(keep3) if masks[:, j].any()]

    def labels_from_view_masks(self, s: _Session, objects: list[np.ndarray], prompted=(),
                               pa: float = POSTPROCESS_PA) -> np.ndarray:
        """Per-object (V, S, S) view masks -> per-face labels 0..k-1: painted largest first
        (prompted objects on top), lifted, cleaned up with the release's settings."""
        from ...lifting import paint_masks

        painted = paint_masks({i: o for i, o in enumerate(objects)}, first=prompted)
        return _consecutive(self._lift(s, painted, min_fraction=pa, split=True))

    def _lift(self, s: _Session, label_images: np.ndarray, min_fraction: float, split: bool) -> np.ndarray:
        from ...lifting import face_adjacency, face_visible_samples, lift_masks, postprocess_labels

        if s.samples is None:
            s.samples = face_visible_samples(s.mesh, s.rig, s.views, samples_per_face=5, seed=0)
            s.adjacency = face_adjacency(s.mesh)
        labels = lift_masks(s.mesh, s.rig, s.views, label_images, samples=s.samples)
        return postprocess_labels(s.mesh, labels, min_fraction=min_fraction, fill_iterations=64, k_nearest=3,
                                  split_disconnected=split, adjacency=s.adjacency)


def _consecutive(labels: np.ndarray) -> np.ndarray:
    """Labels renumbered 0..k-1 (largest part first); -1 stays -1."""
    out = np.full_like(labels, -1)
    valid = labels >= 0
    if valid.any():
        uniq, inv, counts = np.unique(labels[valid], return_inverse=True, return_counts=True)
        rank = np.empty(len(uniq), np.int64)
        rank[np.argsort(-counts, kind="stable")] = np.arange(len(uniq))
        out[valid] = rank[inv]
    return out.astype(np.int32)
