"""`geometric`: the weight-free engine (connected components for now; see issue 3)."""
from __future__ import annotations

import numpy as np

from ...hierarchy import Hierarchy
from ...mesh import Mesh
from ..base import (Availability, CancelToken, PickRequest, PickResult, Progress, Segmentation,
                    SegmentParams, pick_from_hierarchy)
from .components import face_components, weld_vertices


class GeometricEngine:
    name = "geometric"

    def __init__(self, device: str = "cpu"):
        self.device = "cpu"  # pure numpy/scipy/embree

    def availability(self) -> Availability:
        return Availability(True)

    def segment(self, mesh: Mesh, params: SegmentParams, progress: Progress, cancel: CancelToken) -> Segmentation:
        tol = float(params.options.get("weld_tolerance", 1e-6))
        progress(0.0, "components")
        labels = face_components(mesh.faces, weld_vertices(mesh.vertices, tol))
        cancel.check()
        hierarchy = Hierarchy.flat(labels)
        auto_scale = 0.0
        if params.parts is not None or params.scale is not None:
            labels = hierarchy.cut(parts=params.parts, scale=params.scale)
        else:
            labels = hierarchy.cut(scale=auto_scale)
        progress(1.0, "done")
        return Segmentation(labels.astype(np.int32), hierarchy, info={"auto_scale": auto_scale})

    def pick(self, mesh: Mesh, segmentation: Segmentation | None, request: PickRequest,
             cancel: CancelToken) -> PickResult:
        return pick_from_hierarchy(mesh, segmentation, request)
