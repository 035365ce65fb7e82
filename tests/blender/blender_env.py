"""Environment of the Blender tests: a temporary Blender user folder (set before bpy is imported,
Blender reads it then), the bpy module, and the installed extension's module name."""

from __future__ import annotations

import importlib
import os
import socket
import tempfile

_USER = tempfile.mkdtemp(prefix="segparts-blender-user-")
os.environ["BLENDER_USER_RESOURCES"] = _USER
os.environ["SEGPARTS_RUNTIME_DIR"] = os.path.join(_USER, "runtime")

import bpy  # noqa: F401  (the tests import it from here; ImportError when absent: conftest skips the folder)

MODULE = "bl_ext.user_default.segment_parts"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sub(runtime, name):
    """A submodule of the installed add-on."""
    return importlib.import_module(f"{MODULE}.{name}")
