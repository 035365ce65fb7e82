"""The official releases' outputs (`../shared/reference/golden/`) as pytest fixtures.

`golden_weights` regenerates the seeded release-layout checkpoints once per test session (about
6 s, 1.1 GB) into a folder outside the repository and verifies every tensor's hash, so tests can
compare the learned engines with the releases' own outputs. Tests that need the shared folder skip
with a clear reason on a developer machine without it, and fail under CI (CI=true), where a skip
would hide that nothing was checked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
GOLDEN = SHARED / "reference" / "golden"


def require_shared(path: Path) -> Path:
    """`path` inside ../shared, or skip (developer machine) / fail (CI) with the reason."""
    if path.exists():
        return path
    message = f"{path} not found: the shared folder is expected beside the repository"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def golden(name: str):
    """One fixture file of the releases' outputs, as a loaded npz."""
    return np.load(require_shared(GOLDEN / name))


@pytest.fixture(scope="session")
def golden_weights() -> Path:
    """Folder with geosam2.pt, ptv3-object.pth and sampart3d_grouping_mlp.pt, verified bit for bit.
    SEGPARTS_GOLDEN_WEIGHTS names a folder to keep between sessions; else a temporary one."""
    make = require_shared(GOLDEN / "make_weights.py")
    folder = Path(os.environ.get("SEGPARTS_GOLDEN_WEIGHTS") or Path(tempfile.gettempdir()) / "segparts-golden-weights")
    done = folder / ".verified"
    if not done.exists():
        folder.mkdir(parents=True, exist_ok=True)
        run = subprocess.run([sys.executable, str(make), str(folder), "--check"], capture_output=True, text=True)
        if run.returncode != 0 or "all tensors identical" not in run.stdout:
            pytest.fail(
                f"make_weights.py did not reproduce the golden weights:\n{run.stdout[-2000:]}{run.stderr[-2000:]}"
            )
        done.touch()
    return folder
