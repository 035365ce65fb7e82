"""Headless Blender (the `bpy` module) with the BUILT add-on installed as an extension into a
temporary user folder, talking to a real `segparts serve` process that the add-on starts itself.

Run in its own pytest process: `pytest tests/blender`. bpy is imported once per process; timers
never fire in the bpy module, so tests drive the add-on's timer function (`runtime.drain`).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import time
from pathlib import Path

import pytest

try:  # sets up Blender's user folder, then imports bpy
    from blender_env import MODULE, bpy
except ImportError as exc:  # no bpy here (it needs Python 3.11): skip the folder with the reason
    collect_ignore_glob = ["test_*.py"]
    print(f"tests/blender skipped: bpy is not importable ({exc}); pip install bpy==5.0.1 on Python 3.11")

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def built_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    done = subprocess.run(
        [sys.executable, str(ROOT / "build_addon.py"), "--local", "--output-dir", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"build_addon.py failed:\n{done.stdout}\n{done.stderr}"
    zips = sorted(out.glob("segment_parts-*.zip"))
    assert len(zips) == 1, zips
    return zips[0]


@pytest.fixture(scope="session")
def install_result(built_zip):
    t0 = time.perf_counter()
    result = bpy.ops.extensions.package_install_files(
        filepath=str(built_zip), repo="user_default", enable_on_install=True
    )
    seconds = time.perf_counter() - t0
    return result, seconds


def backend_python(folder: Path) -> Path:
    """This venv's Python with THIS checkout's backend first on its path: the add-on starts the
    backend without PYTHONPATH, and the venv's editable install may point at another checkout."""
    wrapper = folder / "python"
    backend = ROOT / "backend"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{backend}" exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


def configure(python: Path) -> None:
    """The add-on's preferences for the tests (again after a test re-enabled the add-on, which
    resets them)."""
    prefs = bpy.context.preferences.addons[MODULE].preferences
    if prefs.python_path == str(python):
        return
    prefs.python_path = str(python)  # this venv has segparts
    prefs.port = 0  # the add-on's own backend on a free port each start
    prefs.auto_start = True
    prefs.device = "cpu"


@pytest.fixture(scope="session")
def python(tmp_path_factory) -> Path:
    return backend_python(tmp_path_factory.mktemp("python"))


@pytest.fixture(scope="session")
def addon(install_result, python):
    result, _ = install_result
    assert result == {"FINISHED"}, result
    assert MODULE in bpy.context.preferences.addons, "the extension was installed but not enabled"
    module = importlib.import_module(MODULE)
    configure(python)
    return module


@pytest.fixture(scope="session")
def runtime(addon):
    return importlib.import_module(MODULE + ".runtime")


@pytest.fixture()
def backend(runtime, python):
    """A ready backend session (started once, restarted if a test killed it)."""
    configure(python)
    s = runtime.ensure_started()
    runtime.run_until_idle(timeout=60)
    assert s.ready, s.message
    yield s
    runtime.object_jobs.clear()
    runtime.work.clear()


@pytest.fixture(autouse=True)
def clean_scene():
    """Empty scene per test (faster than read_factory_settings, and keeps the add-on's prefs)."""
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for collection in (bpy.data.meshes, bpy.data.materials):
        for item in list(collection):
            collection.remove(item)
    if bpy.context.scene is not None and hasattr(bpy.context.scene, "segparts_preview"):
        bpy.context.scene.segparts_preview = True
    yield
