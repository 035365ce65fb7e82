"""Preferences and paths: the add-on's preferences, its user folder, the bundled backend, the
backend's Python, and the session configuration made from them."""

from __future__ import annotations

import tomllib
from pathlib import Path

import bpy

from . import session, setup
from ._shared.wire import PROTOCOL_VERSION


def prefs():
    addon = bpy.context.preferences.addons.get(__package__)
    return addon.preferences if addon else None


def state_dir() -> Path:
    """The extension's user folder (survives upgrades); a config folder for legacy installs."""
    try:
        return Path(bpy.utils.extension_path_user(__package__, create=True))
    except (ValueError, RuntimeError, AttributeError):
        return Path(bpy.utils.user_resource("CONFIG", path="segment_parts", create=True))


def bundled_backend() -> Path:
    return Path(__file__).with_name("bundled_backend")


def manifest() -> Path:
    """The model manifest shipped with the bundled backend."""
    return bundled_backend() / "models" / "manifest.json"


def addon_version() -> str:
    """This add-on's version (its manifest; the backend's `segparts.__version__` must equal it)."""
    try:
        return str(tomllib.loads(Path(__file__).with_name("blender_manifest.toml").read_text())["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return ""


def backend_python(p) -> str:
    if p is not None and p.python_path:
        return bpy.path.abspath(p.python_path)
    candidate = setup.venv_python(state_dir() / "venv")
    return str(candidate) if candidate.exists() else ""


def make_config() -> session.Config:
    p = prefs()
    auto_start = p.auto_start if p else True
    port = p.port if p else 0
    if port == 0:  # our own backend on a free port (two Blenders never share one), or serve's default
        port = session.free_port() if auto_start else session.SERVE_DEFAULT_PORT
    return session.Config(
        python=backend_python(p),
        host=p.host if p else "127.0.0.1",
        port=port,
        device=p.device if p else "auto",
        auto_start=auto_start,
        models_dir=bpy.path.abspath(p.models_dir) if p and p.models_dir else "",
        state_dir=str(state_dir()),
        manifest=str(manifest()),
        protocol=PROTOCOL_VERSION,
        version=addon_version(),
    )
