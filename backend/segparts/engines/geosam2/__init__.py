"""`geosam2`: GeoSAM2 (SAM2.1 Hiera-B+ with a geometry encoder, LoRA and feature fusion).

- `pick`: 3D clicks (faces or surface points; positive and negative) -> the best of the 12 ring
  views and pixel -> the release's two-stage click: SAM on that view alone refines the click into a
  mask, which seeds the propagation around the ring -> lifted to faces; the answer is the clicked
  object. The 12 views are encoded once per mesh and cached, so further clicks only re-run the
  light heads.
- `segment`: automatic mode as the release: an automatic mask generator on the start view, each
  kept mask's point becomes an object, propagate; then the same on the opposite view over the
  pixels not yet covered; lift everything to the faces and clean up. With `options["clicks"]`, the
  release's prompted run: the clicked object plus the generator on the opposite view, a full
  labelling (`info["clicked_part"]` names the clicked object's part).

Lifting and clean-up as the release: object pixels no mask covers vote "no object" (the release's
999), which becomes a part of its own; small components are removed (pa 0.02, in click mode too),
gaps filled; disconnected pieces are not split (the release's split step never fires, see
docs/geosam2.md). See docs/geosam2.md for every remaining difference from the release.

Hierarchy: GeoSAM2 gives one flat partition, returned as `Hierarchy.flat(labels)`.
Torch, sam2 and the model are imported only when the engine runs (never for availability()).
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field

import numpy as np

from ...cache import SmallLRU
from ...hierarchy import Hierarchy
from ...installer import LEARNED_FIX
from ...mesh import Mesh
from ..base import (
    Availability,
    CancelToken,
    Click,
    EngineUnavailable,
    Option,
    PickRequest,
    PickResult,
    Progress,
    Segmentation,
    SegmentParams,
)

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
    label = "GeoSAM2"
    click_prompts = True  # a click is a prompt on the views, answered by the model
    renders = True
    options = (
        Option("auto_points", int, 1, 1_000_000),
        Option("auto_pred_iou", float, 0.0, 1.0),
        Option("auto_stability", float, 0.0, 1.0),
        Option("start_view", int, 0, 11),
        Option("seed", int, 0, 2**32 - 1),
        Option("pa", float, 0.0, 1.0),
        Option("box", "numbers", length=4),  # [x0, y0, x1, y1] pixels of the start view (pick, clicks)
        Option("clicks", "clicks", length=64),
    )  # segment: the release's prompted run (docs/geosam2.md)

    def __init__(
        self, device: str = "cpu", image_size: int = 1024, weights: str | None = None, encode_batch: int | None = None
    ):
        """`image_size` below 1024 and `weights="random"` are test/benchmark-only settings (the
        released checkpoint works at 1024); `weights` may also be an explicit checkpoint path."""
        self.device = device
        self.image_size = int(image_size)
        self.weights = weights
        self.encode_batch = encode_batch
        self._model = None
        self._sessions = SmallLRU(SESSIONS_KEPT)  # mesh id -> _Session
        self.last_timings: dict[str, float] = {}

    # --- availability -------------------------------------------------------------------------
    def model_names(self) -> list[str]:
        """The checkpoints it loads (none with explicit or random weights)."""
        return list(CHECKPOINTS) if self.weights is None else []

    def availability(self) -> Availability:
        missing = [f"python package {p}" for p in PACKAGES if importlib.util.find_spec(p) is None]
        fix = LEARNED_FIX if missing else ""
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
        return self._sessions.get_or_build(mesh.content_hash, lambda: self._render_session(mesh))

    def _render_session(self, mesh: Mesh) -> _Session:
        from ...render import geosam2_rig, normalize_for_rendering, render_views

        t0 = time.perf_counter()
        vertices, norm = normalize_for_rendering(mesh.vertices)
        nmesh = Mesh(vertices, mesh.faces, appearance=mesh.appearance)  # the file's normals, if any, are rendered
        rig = geosam2_rig(size=self.image_size, extents=norm.extents)
        views = render_views(nmesh, rig, outputs=("face_id", "depth", "alpha", "normal", "point"))
        return _Session(nmesh, norm, rig, views, None, info={"render_s": round(time.perf_counter() - t0, 3)})

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
    def pick(
        self, mesh: Mesh, segmentation: Segmentation | None, request: PickRequest, cancel: CancelToken
    ) -> PickResult:
        """The release's click pipeline for one object (two stages, see `propagate_clicks`), lifted
        with the release's votes and clean-up; the answer is that object's faces. (The release
        also auto-segments the opposite view: `segment` with the `clicks` option does that.)"""
        if not request.clicks:
            raise ValueError("pick needs at least one click")
        t0 = time.perf_counter()
        s = self.render_session(mesh)
        start, prompts = self._prompts(s, request.clicks, request.options.get("box"))  # fails before encoding
        s = self.session(mesh)
        cancel.check()
        t1 = time.perf_counter()
        masks, info = self._clicked_object(s, start, prompts, cancel)
        if masks is None:
            mask = np.zeros(mesh.n_faces, bool)
        else:
            mask = self.object_faces(s, masks, float(request.options.get("pa", POSTPROCESS_PA)))
        t2 = time.perf_counter()
        self.last_timings = {"session_s": t1 - t0, "click_s": t2 - t1}
        return PickResult(mask=mask, info={**info, "click_s": round(t2 - t1, 3)})

    def _prompts(self, s: _Session, clicks, box=None):
        """(start view, {view: Prompt}): every click placed in the best view that shows it,
        preferring the first click's view; `box` ([x0, y0, x1, y1] pixels) goes to the start view."""
        from .predictor import Prompt

        placed = [self._place_click(s, c) for c in clicks]
        start = placed[0][0][0]
        by_view: dict[int, list] = {}
        for views_seen, click in zip(placed, clicks):
            in_start = [xy for v, xy in views_seen if v == start]
            view, xy = (start, in_start[0]) if in_start else views_seen[0]
            by_view.setdefault(view, []).append((xy, 1 if click.positive else 0))
        if box is not None:
            box = np.asarray(box, np.float32).reshape(4)
        prompts = {}
        for view, items in by_view.items():
            pts = np.array([xy for xy, _ in items], np.float32) + 0.5  # pixel centres
            prompts[view] = Prompt(pts, np.array([lab for _, lab in items], np.int32), box if view == start else None)
        return start, prompts

    def _clicked_object(self, s: _Session, start: int, prompts: dict, cancel) -> tuple[np.ndarray | None, dict]:
        """(V, S, S) view masks of the clicked object, or None, and facts for `info`."""
        logits, stage1 = s.predictor.propagate_clicks(start, prompts, cancel=cancel)
        anchor = int(start if start in stage1 or not stage1 else next(iter(stage1)))  # the ring's start
        info = {
            "start_view": anchor,
            "views": sorted(prompts),
            "stage1_px": {int(v): int(m.sum()) for v, m in stage1.items()},
        }
        if logits is None:
            info["empty"] = "the click's refined mask is under 64 px in every view (the release skips it)"
            return None, info
        kept = self._filter_objects(logits, s, anchor, PROMPTED_STABILITY, PROMPTED_AREA_RATIO, [])
        if not kept:
            info["empty"] = "the propagated object was filtered out"
            return None, info
        return kept[0], info

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
                raise ValueError(
                    f"click point {tuple(p)} is not on the mesh (nearest surface is "
                    f"{dist / s.normalization.scale:.4g} away)"
                )
            face = nearest if face is None else face
        seen = views_for_click(s.mesh, s.rig, s.views, face=face, point=point)
        if not seen:
            raise ValueError(
                f"face {face} is hidden in all {s.rig.n_views} views (inside the mesh or "
                "occluded): click a visible part"
            )
        return seen

    # --- segment (automatic) --------------------------------------------------------------------
    def segment(self, mesh: Mesh, params: SegmentParams, progress: Progress, cancel: CancelToken) -> Segmentation:
        """Automatic mode (no `clicks` option): the generator on the start view, then on the opposite
        view over what is not yet covered. With `options["clicks"]` ([{face | point, positive}]) the
        release's prompted run: the clicked object (two stages) plus the generator on the view
        opposite its start view; the full labelling is returned."""
        from .automatic import AutoMaskSettings, generate_masks, select_masks
        from .predictor import Prompt

        opts = params.options
        t0 = time.perf_counter()
        clicks = _clicks_option(opts.get("clicks"))
        progress(0.0, "rendering")
        s = self.render_session(mesh)
        if clicks:
            start, prompts = self._prompts(s, clicks, opts.get("box"))  # bad clicks fail before encoding
        s = self.session(mesh, progress)
        t1 = time.perf_counter()
        settings = AutoMaskSettings(max_points=int(opts.get("auto_points", 4096)))
        # benchmark-only: random weights predict low IoU, so timing runs may open these thresholds
        settings.pred_iou_thresh = float(opts.get("auto_pred_iou", settings.pred_iou_thresh))
        settings.stability_thresh = float(opts.get("auto_stability", settings.stability_thresh))
        objects: list[np.ndarray] = []  # (V, S, S) bool each
        prompted: tuple[int, ...] = ()
        info: dict = {}
        if clicks:
            progress(0.1, f"clicked object from view {start}")
            masks, info = self._clicked_object(s, start, prompts, cancel)
            if masks is not None:
                objects, prompted = [masks], (0,)
            seed_views = [(info["start_view"] + OPPOSITE) % N_VIEWS]
        else:
            start = int(opts.get("start_view", 0)) % N_VIEWS
            seed_views = [start, (start + OPPOSITE) % N_VIEWS]
        n_propagated = len(objects)
        foreground = s.views.face_id >= 0
        for step, seed_view in enumerate(seed_views):
            cancel.check()
            progress(0.1 + 0.4 * step, f"automatic masks on view {seed_view}")
            covered = np.zeros_like(foreground[seed_view])
            for o in objects:
                covered |= o[seed_view]
            emb, high_res = s.predictor.view_features(seed_view)
            auto = select_masks(
                generate_masks(
                    self.model(),
                    emb,
                    high_res,
                    foreground[seed_view] & ~covered,
                    settings,
                    seed=int(opts.get("seed", 0)),
                    cancel=cancel,
                ),
                settings.accept_iou,
            )
            if not auto:
                continue
            progress(0.25 + 0.4 * step, f"propagating {len(auto)} objects from view {seed_view}")
            cond = {
                seed_view: [
                    s.predictor.prompt(seed_view, Prompt(np.array([m.point], np.float32), np.array([1], np.int32)))
                    for m in auto
                ]
            }
            logits = s.predictor.propagate(seed_view, cond, cancel)
            n_propagated += len(auto)
            objects += self._filter_objects(logits, s, seed_view, AUTO_STABILITY, AUTO_AREA_RATIO, objects)
        progress(0.9, "lifting")
        if not objects:
            labels = np.zeros(mesh.n_faces, np.int32)  # nothing found: one part
        else:
            raw = self._lift(s, paint_objects(objects, prompted), float(opts.get("pa", POSTPROCESS_PA)))
            labels = _consecutive(raw)
            if prompted:
                info["clicked_part"] = int(labels[raw == 0][0]) if (raw == 0).any() else -1
        t2 = time.perf_counter()
        progress(1.0, "done")
        info = {
            **info,
            "n_objects": len(objects),
            "n_propagated": n_propagated,
            "render_s": s.info["render_s"],
            "encode_s": s.info.get("encode_s"),
            "segment_s": round(t2 - t1, 3),
            "total_s": round(t2 - t0, 3),
            "image_size": self.image_size,
            "hierarchy": "flat",
        }
        hierarchy = Hierarchy.flat(labels)
        if params.parts is not None or params.scale is not None:
            labels = hierarchy.cut(parts=params.parts, scale=params.scale).astype(np.int32)
        return Segmentation(labels.astype(np.int32), hierarchy, state=None, info=info)

    # --- helpers --------------------------------------------------------------------------------
    def _filter_objects(
        self, logits, s: _Session, anchor: int, stability: float, area_ratio: float, existing: list[np.ndarray]
    ) -> list[np.ndarray]:
        """The release's treatment of one propagation: shrink_mask, stability filter, area filter,
        binarise, IoU filter against each other and the objects found before."""
        from .automatic import area_consistent, novel_objects, stable_objects, view_masks

        masks, scores = view_masks(logits, s.views.face_id.shape[-1], device=s.predictor.device)
        keep = stable_objects(scores, masks.any(axis=(-2, -1)), anchor, stability)
        keep &= area_consistent(masks, anchor, area_ratio)
        masks = masks[:, keep]
        keep = novel_objects(masks, existing, anchor, IOU_DUPLICATE)
        return [masks[:, j] for j in np.flatnonzero(keep) if masks[:, j].any()]

    def labels_from_view_masks(
        self, s: _Session, objects: list[np.ndarray], prompted=(), pa: float = POSTPROCESS_PA
    ) -> np.ndarray:
        """Per-object (V, S, S) view masks -> per-face labels 0..k-1 (largest part first): painted
        largest first (prompted objects on top), object pixels no object covers voting "no object"
        (which becomes a part of its own), lifted, cleaned up with the release's settings."""
        return _consecutive(self._lift(s, paint_objects(objects, prompted), pa))

    def object_faces(self, s: _Session, masks: np.ndarray, pa: float = POSTPROCESS_PA) -> np.ndarray:
        """(F,) bool faces of one object's (V, S, S) view masks, lifted against "no object" and
        cleaned up as the release does for a click (small components removed there too)."""
        return self._lift(s, paint_objects([masks], prompted=(0,)), pa) == 0

    def _lift(self, s: _Session, label_images: np.ndarray, pa: float) -> np.ndarray:
        """Label images (painted, -1 nowhere on the object) -> per-face labels after the release's
        clean-up (`complete_labels`): small components removed (pa), gaps filled; no splitting."""
        from ...lifting import face_adjacency, face_visible_samples, lift_masks, postprocess_labels

        if s.samples is None:
            s.samples = face_visible_samples(s.mesh, s.rig, s.views, samples_per_face=5, seed=0)
            s.adjacency = face_adjacency(s.mesh)
        labels = lift_masks(s.mesh, s.rig, s.views, label_images, samples=s.samples)
        return postprocess_labels(
            s.mesh,
            labels,
            min_fraction=pa,
            fill_iterations=64,
            k_nearest=3,
            split_disconnected=False,
            adjacency=s.adjacency,
            nearest_ties="smallest",
        )


def paint_objects(objects: list[np.ndarray], prompted=()) -> np.ndarray:
    """(V, S, S) label images of objects 0..k-1 as the release's `mask_aggregation`: largest object
    first, prompted ones on top, and k ("no object", the release's 999) everywhere else, so that
    object pixels most views leave unlabelled vote for a part of their own instead of abstaining."""
    from ...lifting import paint_masks

    painted = paint_masks(dict(enumerate(objects)), first=prompted)
    painted[painted < 0] = len(objects)
    return painted


def _clicks_option(raw) -> list[Click]:
    """`options["clicks"]` ([{face | point, positive}] or Click objects) -> clicks; clear errors."""
    if raw is None:
        return []
    if not isinstance(raw, (list, tuple)) or not raw:
        raise ValueError("option 'clicks' must be a non-empty list of {face | point, positive}")
    clicks = []
    for c in raw:
        if isinstance(c, Click):
            clicks.append(c)
            continue
        if not isinstance(c, dict) or ("face" not in c and "point" not in c):
            raise ValueError("each click in option 'clicks' needs 'face' or 'point'")
        positive = c.get("positive", True)
        if not isinstance(positive, bool):
            raise ValueError("click 'positive' must be true or false")
        clicks.append(
            Click(face=c.get("face"), point=None if c.get("point") is None else tuple(c["point"]), positive=positive)
        )
    return clicks


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
