"""`segparts serve` whose SAMPart3D engine takes its 2D masks from the mesh's material cue (an
oracle) instead of SAM, with the small training settings of tests/test_sampart3d.py.

The add-on's Blender tests run it as the backend to drive the SAMPart3D engine end to end without
SAM's weights (they are not in the test environment): rendering, the grouping field, HDBSCAN per
scale, `recut` and the server are the real ones. Run as the add-on runs a backend:
`python oracle_backend.py serve --port P ...` (the arguments of `segparts serve`)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from segparts import engines
from segparts.cli import main
from segparts.engines.base import SegmentParams, no_progress
from segparts.engines.sampart3d import SAMPart3DEngine
from segparts.engines.sampart3d.masks import ProvidedMasks

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the SAMPart3D test's oracle
from test_sampart3d import ORACLE_OPTIONS as SMALL, oracle_masks


class OracleSAMPart3D(SAMPart3DEngine):
    """SAMPart3D with the material cue's parts (fine) and their pairs (coarse) as its masks."""

    def availability(self, options=None):
        return super().availability({"backbone": "none", "mask_source": True})

    def segment(self, mesh, params, progress=no_progress, cancel=None):
        parts = np.asarray(mesh.cues["material"])
        masks = ProvidedMasks(oracle_masks(mesh, [parts, parts // 2], size=SMALL["render_size"]))
        options = {**SMALL, **params.options, "mask_source": masks}
        return super().segment(mesh, SegmentParams(params.parts, params.scale, options), progress, cancel)


if __name__ == "__main__":
    import torch

    torch.set_num_threads(1)  # small matmuls: one thread is faster on a shared 2-core machine
    engines.ENGINES["sampart3d"] = "__main__:OracleSAMPart3D"
    sys.exit(main(sys.argv[1:]))
