"""A non-editable install (a wheel: `pip install .`, the add-on's bundled backend) carries the model
manifest inside the package, built from models/manifest.json by setup.py, and finds it there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """A wheel built from a copy of the sources (the working tree's build/ stays untouched)."""
    if not _has_pip():
        pytest.skip("pip is not installed in this environment")
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy2(REPO / name, src / name)
    (src / "models").mkdir()
    shutil.copy2(REPO / "models" / "manifest.json", src / "models" / "manifest.json")
    shutil.copytree(
        REPO / "backend" / "segparts",
        src / "backend" / "segparts",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(src),
            "-w",
            str(tmp / "dist"),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    (built,) = (tmp / "dist").glob("segparts-*.whl")
    return built


def _has_pip() -> bool:
    return subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True).returncode == 0


def test_wheel_contains_the_repository_manifest(wheel):
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("segparts/manifest.json") == (REPO / "models" / "manifest.json").read_bytes()
    assert not (REPO / "backend" / "segparts" / "manifest.json").exists()  # one copy in git: models/


def test_installed_package_finds_its_manifest_without_a_checkout(wheel, tmp_path):
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(site)  # what pip puts in site-packages
    code = (
        "import json, segparts, segparts.models as m; "
        "print(json.dumps([segparts.__file__, str(m.manifest_path()), sorted(m.load_manifest())]))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("SEGPARTS_MANIFEST", "PYTHONPATH")}
    env["PYTHONPATH"] = str(site)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=True
    )
    module, manifest, names = json.loads(done.stdout)
    assert Path(module).is_relative_to(site)  # the installed copy, not the editable checkout
    assert Path(manifest) == site / "segparts" / "manifest.json"
    expected = sorted(m["name"] for m in json.loads((REPO / "models" / "manifest.json").read_text())["models"])
    assert names == expected
