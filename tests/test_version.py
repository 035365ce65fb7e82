"""One version: segparts.__version__; the package metadata and the add-on manifest follow it."""

from __future__ import annotations

import importlib.util
import re
import tomllib
from pathlib import Path

import pytest

import segparts

ROOT = Path(__file__).resolve().parents[1]


def test_package_metadata_takes_the_version_from_segparts():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "segparts.__version__"}
    assert re.fullmatch(r"\d+\.\d+\.\d+", segparts.__version__)


def test_addon_manifest_agrees_and_the_build_refuses_a_mismatch(tmp_path):
    manifest = (ROOT / "addon" / "blender_manifest.toml").read_text()
    assert tomllib.loads(manifest)["version"] == segparts.__version__
    spec = importlib.util.spec_from_file_location("build_addon", ROOT / "build_addon.py")
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)
    assert build.backend_version() == segparts.__version__
    staged = tmp_path / "blender_manifest.toml"
    staged.write_text(manifest.replace(f'version = "{segparts.__version__}"', 'version = "9.9.9"'))
    with pytest.raises(build.BuildError, match="bump both together"):
        build.write_manifest(staged, ["linux-x64"], [])


def test_license_file_is_the_declared_licence():
    text = (ROOT / "LICENSE").read_text()
    assert "GNU GENERAL PUBLIC LICENSE" in text and "Version 3, 29 June 2007" in text
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == "GPL-3.0-or-later"
