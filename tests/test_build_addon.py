"""build_addon.py: every platform's zip carries every wheel it needs, and gaps fail the build.

Downloads wheels from PyPI on the first run (cached under build/wheels)."""

from __future__ import annotations

import shutil
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.network  # pip downloads the bundled wheels for every platform (cached after the first build)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import build_addon

try:
    CLI = build_addon.find_extension_cli()
except build_addon.BuildError as exc:  # bpy (which ships the extension CLI) is not installed
    pytest.skip(str(exc), allow_module_level=True)


@pytest.fixture(scope="module")
def all_zips(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    return build_addon.build(list(build_addon.PLATFORMS), out)


def test_every_platform_zip_has_both_dependencies_for_both_pythons(all_zips):
    assert len(all_zips) == 4
    for zip_path in all_zips:
        platform = next(p for p in build_addon.PLATFORMS if zip_path.name.endswith(p.replace("-", "_") + ".zip"))
        with zipfile.ZipFile(zip_path) as zf:
            wheels = [n for n in zf.namelist() if n.startswith("wheels/")]
            manifest = build_addon.effective_manifest(tomllib.loads(zf.read("blender_manifest.toml").decode()))
        assert manifest["platforms"] == [platform]
        for project in ("pyzmq", "msgpack"):
            mine = [w for w in wheels if w.startswith(f"wheels/{project}-")]
            # Python 3.11 (Blender 4.2-5.0) and 3.13 (5.1+): a cp311 wheel and a cp313 or abi3 one
            assert any("-cp311-" in w for w in mine), (zip_path.name, project, mine)
            assert any("-cp313-" in w or "abi3" in w for w in mine), (zip_path.name, project, mine)
        tags = {
            "windows-x64": "win_amd64",
            "linux-x64": "x86_64",
            "macos-arm64": ("arm64", "universal2"),
            "macos-x64": ("x86_64", "universal2"),
        }[platform]
        assert all(any(t in w for t in ((tags,) if isinstance(tags, str) else tags)) for w in wheels), wheels
        assert set(manifest["wheels"]) == {f"./{w}" for w in wheels}


def test_zip_missing_a_wheel_is_rejected(all_zips, tmp_path):
    zip_path = next(z for z in all_zips if "linux" in z.name)
    broken = tmp_path / zip_path.name
    with zipfile.ZipFile(zip_path) as src, zipfile.ZipFile(broken, "w") as dst:
        dropped = next(n for n in src.namelist() if n.startswith("wheels/pyzmq-"))
        for item in src.infolist():
            if item.filename != dropped:
                dst.writestr(item, src.read(item.filename))
    wheels = {p: [w for py in build_addon.PYTHONS for w in build_addon.download_wheels(p, py)] for p in ["linux-x64"]}
    with pytest.raises(build_addon.BuildError, match="lacks wheels"):
        build_addon.check_zip(broken, "linux-x64", wheels, CLI)


def test_a_dependency_without_a_wheel_fails_the_build(monkeypatch, tmp_path):
    # a version of pyzmq that never had wheels: the download must fail loudly, not ship without it
    monkeypatch.setattr(build_addon, "REQUIREMENTS", ["pyzmq==2.0.10.1"])
    monkeypatch.setattr(build_addon, "BUILD", tmp_path)
    with pytest.raises(build_addon.BuildError, match="no windows-x64 wheel of pyzmq"):
        build_addon.download_wheels("windows-x64", "3.11")
    shutil.rmtree(tmp_path, ignore_errors=True)
