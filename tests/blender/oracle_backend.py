"""`segparts serve` whose SAMPart3D engine takes its 2D masks from the mesh's material cue (an
oracle) instead of SAM, with the small training settings of tests/test_sampart3d.py.

The add-on's Blender tests run it as the backend to drive the SAMPart3D engine end to end without
SAM's weights (they are not in the test environment): rendering, the grouping field, HDBSCAN per
scale, `recut` and the server are the real ones. Run as the add-on runs a backend:
`python oracle_backend.py serve --port P ...` (the arguments of `segparts serve`)."""

from __future__ import annotations

import sys

import numpy as np

from segparts import engines
from segparts.cli import main
from segparts.engines.base import SegmentParams, no_progress
from segparts.engines.sampart3d import SAMPart3DEngine
from segparts.engines.sampart3d.masks import ProvidedMasks
from segparts.mesh import Mesh
from segparts.render import normalize_for_rendering, render_views, sampart3d_rig

SMALL = dict(
    backbone="none",
    quality="fast",
    iterations=300,
    views_per_batch=8,
    pixels_per_view=64,
    lr=1e-3,
    n_points=3000,
    render_size=256,
)


def oracle_masks(mesh: Mesh, labelings, size: int, n_views: int = 16):
    """Per view, one mask per label of each labeling, from the renderer's face ids."""
    vertices, norm = normalize_for_rendering(mesh.vertices)
    views = render_views(
        Mesh(vertices, mesh.faces), sampart3d_rig(n_views, size, extents=norm.extents), outputs=("face_id",)
    )
    per_view = []
    for fid in views.face_id:
        masks = []
        for labels in labelings:
            image = np.where(fid >= 0, labels[np.maximum(fid, 0)], -1)
            masks += [image == k for k in np.unique(image) if k >= 0]
        per_view.append(masks)
    return per_view


class OracleSAMPart3D(SAMPart3DEngine):
    """SAMPart3D with the material cue's parts (fine) and their pairs (coarse) as its masks."""

    def availability(self, options=None):
        return super().availability({"backbone": "none", "mask_source": True})

    def segment(self, mesh, params, progress=no_progress, cancel=None):
        parts = np.asarray(mesh.cues["material"])
        masks = ProvidedMasks(oracle_masks(mesh, [parts, parts // 2], SMALL["render_size"]))
        options = {**SMALL, **params.options, "mask_source": masks}
        return super().segment(mesh, SegmentParams(params.parts, params.scale, options), progress, cancel)


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)  # small matmuls: one thread is faster on a shared 2-core machine
    engines.ENGINES["sampart3d"] = "__main__:OracleSAMPart3D"
    sys.exit(main(sys.argv[1:]))
