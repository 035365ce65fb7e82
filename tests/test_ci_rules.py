"""Under CI a test that skips for want of ../shared fails instead (tests/conftest.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_pytest(folder: Path, ci: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
        capture_output=True,
        text=True,
        env=env,
        cwd=folder,
    )


def test_missing_shared_data_skips_locally_and_fails_under_ci(tmp_path):
    shutil.copy2(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_needs_shared.py").write_text(
        "import pytest\n"
        "def test_sample():\n    pytest.skip('sample not found at /nowhere/shared/benchmarks')\n"
        "@pytest.mark.skipif(True, reason='needs ../shared/benchmarks/princeton')\n"
        "def test_marked():\n    pass\n"
        "def test_other_skip():\n    pytest.skip('no GPU here')\n"
    )
    local = run_pytest(tmp_path, ci=False)
    assert local.returncode == 0 and "3 skipped" in local.stdout, local.stdout
    ci = run_pytest(tmp_path, ci=True)
    assert ci.returncode == 1, ci.stdout
    assert "1 skipped" in ci.stdout and "CI=true and the shared data is missing" in ci.stdout, ci.stdout
