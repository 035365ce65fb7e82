"""`geometric`: the weight-free engine. A merge tree over the whole mesh from separate pieces
(welded connected components, merged by contact and size) and, inside each piece, patches split
along concave creases and thickness changes (SDF). See segmenter.py for the pipeline."""

from __future__ import annotations

import time

import numpy as np

from ...mesh import Mesh
from ...meshgraph import DEFAULT_WELD_TOLERANCE
from ..base import (
    Availability,
    CancelToken,
    Option,
    PickRequest,
    PickResult,
    Progress,
    Segmentation,
    SegmentParams,
    pick_from_hierarchy,
)


class GeometricEngine:
    name = "geometric"
    options = (
        Option("patches", int, 1, 100_000),
        Option("seed", int, 0, 2**32 - 1),
        Option("weld_tolerance", float, 1e-12, 0.1),
    )  # checked by the server before a job starts

    def __init__(self, device: str = "cpu"):
        self.device = "cpu"  # numpy/scipy/embree only

    def availability(self) -> Availability:
        try:
            import embreex  # noqa: F401
        except ImportError:
            return Availability(False, ["python package embreex"], "pip install embreex")
        return Availability(True)

    def segment(self, mesh: Mesh, params: SegmentParams, progress: Progress, cancel: CancelToken) -> Segmentation:
        from .segmenter import DEFAULT_PATCHES, auto_scale, build_tree

        opts = params.options
        t0 = time.perf_counter()
        hierarchy, info = build_tree(
            mesh.vertices,
            mesh.faces,
            material=mesh.material,
            group=mesh.group,
            marked_edges=mesh.marked_edges,
            weld_tolerance=float(opts.get("weld_tolerance", DEFAULT_WELD_TOLERANCE)),
            n_patches=int(opts.get("patches", DEFAULT_PATCHES)),
            seed=int(opts.get("seed", 0)),
            progress=progress,
            cancel_check=cancel.check,
        )
        auto = auto_scale()
        if params.parts is not None:
            labels = hierarchy.cut(parts=params.parts)
        else:
            labels = hierarchy.cut(scale=auto if params.scale is None else params.scale)
        info.update(
            auto_scale=auto,
            seconds=round(time.perf_counter() - t0, 4),
            n_parts=int(labels.max()) + 1 if labels.size else 0,
        )
        return Segmentation(labels.astype(np.int32), hierarchy, info=info)

    def pick(
        self, mesh: Mesh, segmentation: Segmentation | None, request: PickRequest, cancel: CancelToken
    ) -> PickResult:
        # 3D-point clicks go through segparts.proximity (exact, its index cached per mesh)
        return pick_from_hierarchy(mesh, segmentation, request)
