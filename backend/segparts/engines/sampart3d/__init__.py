"""SAMPart3D engine: per-object grouping field on SAM 2 masks over PTv3-object features.

Pipeline (see shared/reference/sampart3d.md): normalise and render 16 views -> 2D masks (SAM 2
automatic masks, or masks the caller provides) -> 15,000 surface points, grid-sampled -> frozen
PTv3-object features (cached per mesh) -> scale-conditioned grouping MLPs trained with the
release's contrastive loss -> HDBSCAN per scale -> per-face labels by voting. Scales: the engine's
`scale` in [0, 1] is SAMPart3D's scale 2 * scale (0 = finest groups, 2 = largest); the default is 0
(the paper's best), and `recut` re-clusters the trained field at any other scale.

Options (SegmentParams.options): quality "paper" (the release: SAM ViT-H masks, 5000 iterations) |
"fast" (SAM 2.1 Hiera-L masks, 800 iterations); mask_model "sam-vit-h" | a SAM 2.1 checkpoint name
(overrides the preset's; `sam2_model` is its older name); iterations, views_per_batch,
pixels_per_view, lr, n_points (override the release's values); n_views 16 | 36; render_size (512);
mask_source: a MaskSource object (e.g. ProvidedMasks) instead of SAM; backbone "ptv3" | "none"
("none" = zero backbone features, for tests only: it is never chosen automatically);
up_axis "z" (Blender) | "y"; seed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ...cache import SmallLRU
from ...installer import LEARNED_FIX
from ...mesh import Mesh, MeshError
from ..base import (
    Availability,
    CancelToken,
    EngineUnavailable,
    Option,
    PickRequest,
    PickResult,
    Progress,
    Segmentation,
    SegmentParams,
    nearest_face,
    no_progress,
)

BACKBONE_MODEL = "ptv3-object"
DEFAULT_SAM2 = "sam2.1-hiera-large"
SAM_VIT_H = "sam-vit-h"  # the release's mask model (segment-anything's sam_vit_h_4b8939.pth)
MASK_MODEL_OF_QUALITY = {"paper": SAM_VIT_H, "fast": DEFAULT_SAM2}
MASK_MODELS = (SAM_VIT_H, "sam2.1-hiera-large", "sam2.1-hiera-base-plus", "sam2.1-hiera-small", "sam2.1-hiera-tiny")
PACKAGES = ("torch", "hdbscan", "sklearn")  # and one of SPCONV_PACKAGES
# spconv 2.x (CPU and CUDA builds) or spconv-triton, its drop-in rewrite in Triton (CUDA and ROCm
# GPUs only, a 70 KB pure-Python wheel): same modules, same weight layout, same checkpoint
SPCONV_PACKAGES = ("spconv", "spconv_triton")
SPCONV_ENV = "SEGPARTS_SPCONV"  # force one of SPCONV_PACKAGES; default: the first installed


def mask_model_name(options: dict) -> str:
    """The mask model an options dict asks for: explicit `mask_model` / `sam2_model`, else the
    quality preset's (paper: the release's SAM ViT-H; fast: SAM 2.1 Hiera-L)."""
    name = options.get("mask_model") or options.get("sam2_model")
    if name is None:
        quality = options.get("quality", "paper")
        if quality not in MASK_MODEL_OF_QUALITY:
            raise ValueError(f"quality must be one of {', '.join(MASK_MODEL_OF_QUALITY)}, not {quality!r}")
        name = MASK_MODEL_OF_QUALITY[quality]
    return name


MIN_FACES = 4
# the first result: engine scale 0 = SAMPart3D scale 0.0, the paper's best single scale on
# PartObjaverse-Tiny (class-agnostic mIoU 49.1 at 0.0 vs 39.6 at 1.0)
DEFAULT_SCALE = 0.0
_FEATURE_CACHE = SmallLRU(4)  # (mesh hash, seed, ...) -> features


def spconv_package() -> str | None:
    """The sparse-convolution package the backbone is built with (None when there is none)."""
    wanted = os.environ.get(SPCONV_ENV)
    if wanted:
        if wanted not in SPCONV_PACKAGES:
            raise ValueError(f"{SPCONV_ENV} must be one of {', '.join(SPCONV_PACKAGES)}, not {wanted!r}")
        return wanted if importlib.util.find_spec(wanted) is not None else None
    return next((name for name in SPCONV_PACKAGES if importlib.util.find_spec(name) is not None), None)


def _missing_packages(names) -> list[str]:
    missing = [f"python package {n}" for n in names if importlib.util.find_spec(n) is None]
    if spconv_package() is None:
        missing.append(f"python package {os.environ.get(SPCONV_ENV) or 'spconv (or spconv_triton on a GPU)'}")
    return missing


def _missing_models(names) -> tuple[list[str], str]:
    from ... import models

    absent = models.missing(list(names))
    fetch = models.fetch_command([n for n in names if any(line.startswith(f"checkpoint {n} ") for line in absent)])
    return absent, fetch


@dataclass
class SAMPart3DState:
    """Everything pick and re-cut need, so a new scale or a click never retrains."""

    mesh_hash: str
    points: Any  # grouping.ObjectPoints
    backbone_feat: np.ndarray
    trained: Any  # grouping.TrainedField
    centroids: np.ndarray  # (F, 3) face centroids (render frame)
    face_labels_at: dict = field(default_factory=dict)  # SAMPart3D scale -> (F,) int32
    timings: dict = field(default_factory=dict)


class SAMPart3DEngine:
    name = "sampart3d"
    label = "SAMPart3D"
    renders = True
    scales_on_backend = True  # every scale is its own clustering of the trained field (`recut`)
    options = (
        Option("quality", str, choices=("paper", "fast")),
        Option("iterations", int, 1, 100_000),
        Option("views_per_batch", int, 1, 10_000),
        Option("pixels_per_view", int, 2, 1 << 20),
        Option("lr", float, 1e-9, 1.0),
        Option("n_points", int, 100, 1_000_000),
        Option("n_views", int, choices=(16, 36)),
        Option("render_size", int, 64, 4096),
        Option("mask_source", object),
        Option("mask_model", str, choices=MASK_MODELS),
        Option("sam2_model", str, choices=MASK_MODELS),
        Option("backbone", str, choices=("ptv3", "none")),
        Option("up_axis", str, choices=("z", "y")),
        Option("seed", int, 0, 2**32 - 1),
    )  # see the docstring

    def __init__(self, device: str = "cpu"):
        self.device = "cuda" if device == "cuda" else "cpu"
        self._mask_generators = {}

    # ------------------------------------------------------------------ availability
    def model_names(self, options: dict | None = None) -> list[str]:
        """The checkpoints a run with these options loads."""
        options = options or {}
        models = []
        if options.get("backbone", "ptv3") != "none":
            models.append(BACKBONE_MODEL)
        if options.get("mask_source") is None:
            models.append(mask_model_name(options))
        return models

    def availability(self, options: dict | None = None) -> Availability:
        """Checks files and packages without importing torch."""
        options = options or {}
        packages = list(PACKAGES)
        models = self.model_names(options)
        if options.get("mask_source") is None:
            packages.append("segment_anything" if models[-1] == SAM_VIT_H else "sam2")
        missing = _missing_packages(packages)
        fix = []
        if models:
            absent, fetch = _missing_models(models)
            missing += absent
            if fetch:
                fix.append(fetch)
        if any(m.startswith("python package") for m in missing):
            fix.append(LEARNED_FIX)
        return Availability(not missing, missing, " && ".join(fix))

    def _require(self, options: dict):
        availability = self.availability(options)
        if not availability.available:
            raise EngineUnavailable(availability)

    # ------------------------------------------------------------------ segment
    def segment(
        self, mesh: Mesh, params: SegmentParams, progress: Progress = no_progress, cancel: CancelToken | None = None
    ) -> Segmentation:
        from . import cluster, grouping

        cancel = cancel or CancelToken()
        options = dict(params.options or {})
        self._require(options)
        _check_mesh(mesh)
        timings: dict[str, float] = {}
        t = time.perf_counter()

        from ...render import normalize_for_rendering, render_views, sampart3d_rig

        vertices, norm = normalize_for_rendering(mesh.vertices)
        if options.get("up_axis", "z") == "y":  # render frame is Z up
            vertices = vertices[:, [0, 2, 1]] * np.array([1.0, -1.0, 1.0])
        render_mesh = Mesh(
            np.ascontiguousarray(vertices), np.asarray(mesh.faces, dtype=np.int64), appearance=mesh.appearance
        )  # the file's colours, in SAM's images and the points
        rig = sampart3d_rig(int(options.get("n_views", 16)), int(options.get("render_size", 512)), extents=norm.extents)
        progress(0.01, "rendering")
        views = render_views(render_mesh, rig, outputs=("face_id", "depth", "point", "color", "alpha"))
        timings["render_s"] = time.perf_counter() - t
        cancel.check()

        t = time.perf_counter()
        progress(0.05, "masks")
        source = options.get("mask_source")
        if source is None:
            masks = self._mask_generator(options).masks_for_views(
                views, progress=lambda f: progress(0.05 + 0.15 * f, "masks"), check=cancel.check
            )
        else:
            masks = source.masks_for_views(views)
        timings["masks_s"] = time.perf_counter() - t
        cancel.check()

        t = time.perf_counter()
        seed = int(options.get("seed", 0))
        points = grouping.prepare_points(
            render_mesh.vertices,
            render_mesh.faces,
            appearance=mesh.appearance,
            seed=seed,
            n_points=int(options.get("n_points", grouping.N_POINTS)),
        )
        progress(0.25, "backbone features")
        backbone_feat = self._features(mesh, points, options, seed)
        timings["backbone_s"] = time.perf_counter() - t
        cancel.check()

        t = time.perf_counter()
        groups = grouping.build_view_groups(points, list(views.point), list(views.mask), masks)
        if groups.n_masks_kept == 0:
            raise grouping.GroupingError(
                f"none of the masks is usable: {groups.n_masks_raw} given, {groups.n_masks_in} left after dropping "
                f"those touching no foreground or covering > 10% of the background, 0 with a 3D scale below "
                f"{grouping.MAX_SCALE} (the release's limit); nothing to learn parts from"
            )
        cfg = _train_config(options)
        trained = grouping.train_field(
            backbone_feat,
            points.feat,
            groups,
            cfg,
            progress=lambda f, s: progress(0.3 + 0.5 * f, s),
            check=cancel.check,
            device=self.device,
        )
        timings["training_s"] = time.perf_counter() - t

        centroids = render_mesh.vertices[render_mesh.faces].mean(axis=1)
        state = SAMPart3DState(mesh.content_hash, points, backbone_feat, trained, centroids, timings=timings)
        progress(0.8, "clustering")
        levels = []
        for i, s in enumerate(cluster.SCALES):
            cancel.check()
            levels.append(self._labels_at(state, s))
            progress(0.8 + 0.19 * (i + 1) / len(cluster.SCALES), "clustering")
        hierarchy = cluster.hierarchy_from_levels(levels)
        labels, s3d_scale = self._labels_for(state, hierarchy, params)
        info = {
            "engine": self.name,
            "auto_scale": DEFAULT_SCALE,
            "sampart3d_scale": s3d_scale,
            "iterations": trained.iterations,
            "final_loss": trained.losses[-1][1] if trained.losses else None,
            "n_points": points.n_grid,
            "n_masks": groups.n_masks_kept,
            "n_masks_before_scale_filter": groups.n_masks_in,
            "backbone": options.get("backbone", "ptv3"),
            "scale_transform": trained.scale_transform.to_dict(),
            "parts_per_scale": {str(s): int(state.face_labels_at[s].max()) + 1 for s in cluster.SCALES},
            "timings": {k: round(v, 3) for k, v in timings.items()},
        }
        progress(1.0, "done")
        return Segmentation(labels=np.asarray(labels, dtype=np.int32), hierarchy=hierarchy, state=state, info=info)

    def recut(self, segmentation: Segmentation, params: SegmentParams) -> Segmentation:
        """A new granularity of a trained field: HDBSCAN at the chosen scale (cached per scale in
        the state, so each scale is clustered once); `parts` cuts the hierarchy. Never retrains."""
        state = segmentation.state
        if not isinstance(state, SAMPart3DState):
            raise ValueError("this result has no SAMPart3D state to re-cluster; segment again")
        labels, s3d_scale = self._labels_for(state, segmentation.hierarchy, params)
        info = {
            **segmentation.info,
            "recut": True,
            "sampart3d_scale": s3d_scale,
            "timings": {k: round(v, 3) for k, v in state.timings.items()},
        }
        return Segmentation(np.asarray(labels, dtype=np.int32), segmentation.hierarchy, state, info)

    def _labels_for(self, state: SAMPart3DState, hierarchy, params: SegmentParams):
        """(labels, SAMPart3D scale or None): a cut into `parts`, else the clustering at the scale."""
        if params.parts is not None:
            return hierarchy.cut(parts=params.parts), None
        s3d_scale = sampart3d_scale(DEFAULT_SCALE if params.scale is None else params.scale)
        return self._labels_at(state, s3d_scale), s3d_scale

    def _labels_at(self, state: SAMPart3DState, s3d_scale: float) -> np.ndarray:
        """Per-face labels at a SAMPart3D scale in [0, 2] (clustered once, then cached)."""
        from . import cluster

        key = round(float(s3d_scale), 6)
        if key not in state.face_labels_at:
            t = time.perf_counter()
            feats = state.trained.features(state.backbone_feat, state.points.feat, key)
            point_labels = cluster.cluster_points(feats, state.points.grid_xyz)
            state.timings[f"cluster_{key}_s"] = time.perf_counter() - t
            t = time.perf_counter()
            state.face_labels_at[key] = cluster.face_labels(
                point_labels[state.points.inverse], state.points.sample_face, state.centroids
            )
            state.timings[f"voting_{key}_s"] = time.perf_counter() - t
        return state.face_labels_at[key]

    def _features(self, mesh: Mesh, points, options: dict, seed: int) -> np.ndarray:
        from . import grouping

        if options.get("backbone", "ptv3") == "none":
            return np.zeros((points.n_grid, grouping.FEATURE_DIM), dtype=np.float32)
        from ... import models
        from .backbone import backbone_features, load_backbone

        # the mesh id is geometry only; point colours are backbone input, so they join the key
        colour_key = hashlib.sha256(points.feat[:, 6:9].tobytes()).hexdigest()[:16]
        key = (
            mesh.content_hash,
            colour_key,
            seed,
            points.n_grid,
            options.get("up_axis", "z"),
            str(models.model_path(BACKBONE_MODEL)),
        )

        def build():
            model = load_backbone(models.model_path(BACKBONE_MODEL), self.device)
            feats = backbone_features(model, points.grid_coord, points.feat, self.device)
            if not np.isfinite(feats).all():
                raise RuntimeError(
                    f"the backbone ({models.model_path(BACKBONE_MODEL)}) produced non-finite features; "
                    "the checkpoint is probably damaged: fetch it again (segparts models fetch ptv3-object --force)"
                )
            return feats

        return _FEATURE_CACHE.get_or_build(key, build)

    def _mask_generator(self, options: dict):
        """The automatic mask generator of the requested model, built once per engine."""
        from ... import models
        from .masks import SAM2_CONFIGS, Sam2AutomaticMasks, SamAutomaticMasks

        name = mask_model_name(options)
        if name != SAM_VIT_H and name not in SAM2_CONFIGS:
            raise ValueError(f"unknown mask model {name!r}; choose {SAM_VIT_H} or one of {', '.join(SAM2_CONFIGS)}")
        if name not in self._mask_generators:
            path = str(models.model_path(name))
            self._mask_generators[name] = (
                SamAutomaticMasks(checkpoint=path, device=self.device)
                if name == SAM_VIT_H
                else Sam2AutomaticMasks(checkpoint=path, config=SAM2_CONFIGS[name], device=self.device)
            )
        return self._mask_generators[name]

    # ------------------------------------------------------------------ pick
    def pick(
        self, mesh: Mesh, segmentation: Segmentation | None, request: PickRequest, cancel: CancelToken | None = None
    ) -> PickResult:
        """The part under the first click at a scale (re-clusters the cached field, never retrains)."""
        if segmentation is None or not isinstance(segmentation.state, SAMPart3DState):
            raise ValueError("pick needs a SAMPart3D segmentation of this mesh first (run segment)")
        state = segmentation.state
        if state.mesh_hash != mesh.content_hash:
            raise ValueError("the segmentation belongs to a different mesh")
        if not request.clicks:
            raise ValueError("pick needs at least one click")
        click = request.clicks[0]
        face = click.face if click.face is not None else nearest_face(mesh, np.asarray(click.point, float))
        if not 0 <= face < mesh.n_faces:
            raise ValueError(f"face {face} is not on the mesh (it has {mesh.n_faces} faces)")
        h = segmentation.hierarchy
        if request.parts is not None:
            node = h.node_at(face, parts=request.parts)
            return PickResult(
                mask=h.face_mask(node),
                node=node,
                parent=int(h.parent[node]),
                children=h.children(node).tolist(),
                info={"face": int(face)},
            )
        scale = segmentation.info.get("auto_scale", DEFAULT_SCALE) if request.scale is None else float(request.scale)
        s3d_scale = sampart3d_scale(scale)
        labels = self._labels_at(state, s3d_scale)
        node = h.node_at(face, scale=scale)
        return PickResult(
            mask=labels == labels[face],
            node=node,
            parent=int(h.parent[node]),
            children=h.children(node).tolist(),
            info={"face": int(face), "sampart3d_scale": s3d_scale},
        )


def sampart3d_scale(scale: float) -> float:
    """The engine's scale in [0, 1] as SAMPart3D's scale in [0, 2]. A scale within a hair of one of
    the release's standard scales is that scale: the hierarchy puts its coarsest level at 0.999 (just
    under the root), and a slider there must reuse the clustering at 2.0, not run HDBSCAN at 1.998."""
    s3d = 2.0 * float(np.clip(scale, 0.0, 1.0))
    from .cluster import SCALES

    nearest = min(SCALES, key=lambda s: abs(s - s3d))
    return float(nearest) if abs(nearest - s3d) <= 0.0025 else s3d


def _train_config(options: dict):
    from .grouping import ITERATIONS, TrainConfig

    quality = options.get("quality", "paper")
    if quality not in ITERATIONS:
        raise ValueError(f"quality must be one of {', '.join(ITERATIONS)}, not {quality!r}")
    cfg = TrainConfig(iterations=int(options.get("iterations", ITERATIONS[quality])), seed=int(options.get("seed", 0)))
    for name in ("views_per_batch", "pixels_per_view"):
        if name in options:
            setattr(cfg, name, int(options[name]))
    if "lr" in options:
        cfg.lr = float(options["lr"])
    if cfg.iterations < 1 or cfg.views_per_batch < 1 or cfg.pixels_per_view < 2:
        raise ValueError("iterations, views_per_batch must be >= 1 and pixels_per_view >= 2")
    return cfg


def _check_mesh(mesh: Mesh):
    if mesh.n_faces < MIN_FACES:
        raise MeshError("too_small", f"SAMPart3D needs at least {MIN_FACES} faces, the mesh has {mesh.n_faces}")
    v = np.asarray(mesh.vertices, dtype=np.float64)
    if not np.isfinite(v).all():
        raise MeshError("non_finite", "the mesh has non-finite vertex coordinates")
    extent = v.max(axis=0) - v.min(axis=0)
    if (extent > 0).sum() < 2:
        raise MeshError("degenerate", "the mesh is degenerate (all vertices on a line or a point)")
    tri = v[mesh.faces]
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    if not area.sum() > 0:
        raise MeshError("degenerate", "the mesh has no surface area (all faces degenerate)")
