"""The add-on's pure modules never import Blender, so their logic stays testable (and type-checked)
without it; no add-on module imports torch or the backend package (it runs in Blender's Python).

Imports are read with `ast` from the source, at any depth (a lazy `import bpy` inside a function
counts) and through the add-on's own relative imports, so a pure module that imports a Blender-facing
one is caught too. The pure modules are also imported for real in a Python where bpy cannot be
imported."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ADDON = ROOT / "addon"
SHARED = ROOT / "backend" / "segparts"  # `addon._shared` is a copy of wire.py, client.py, hierarchy.py

# the add-on's modules that must never import Blender (listed in pyproject.toml's [tool.mypy] too)
PURE = (
    "atlas",
    "background",
    "jobs",
    "naming",
    "orientation",
    "palette",
    "partdata",
    "partedits",
    "picking",
    "session",
    "setup",
    "similar",
)
BLENDER = {
    "bpy",
    "bmesh",
    "mathutils",
    "gpu",
    "gpu_extras",
    "bpy_extras",
    "blf",
    "bl_math",
    "bl_ui",
    "bl_operators",
    "idprop",
    "aud",
    "imbuf",
    "freestyle",
    "addon_utils",
}
NEVER_IN_ADDON = {"torch", "segparts"}


@functools.cache
def imported_names(path: Path) -> list[tuple[str, int]]:
    """(name, level) of every import in the file, at any depth: `import a.b` -> ("a.b", 0),
    `from .x import y` -> ("x.y", 1) and ("x", 1), `importlib.import_module("a")` -> ("a", 0)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if base:
                found.append((base, node.level))
            found += [(f"{base}.{alias.name}".lstrip("."), node.level) for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
        ):
            found.append((node.args[0].value, 0))
    return found


def module_file(folder: Path, dotted: str) -> Path | None:
    """The source file of a module imported relatively from `folder` (None for a name in a module)."""
    parts = dotted.split(".")
    if parts[0] == "_shared" and folder != SHARED:
        folder, parts = SHARED, parts[1:]
    candidate = folder.joinpath(*parts)
    for path in (candidate.with_suffix(".py"), candidate / "__init__.py"):
        if parts and path.is_file():
            return path
    return None


def outside_imports(module: str, package: Path = ADDON) -> dict[str, str]:
    """Top-level names of everything `module` imports outside the add-on, itself or through the
    add-on's modules it imports (relative imports followed): {name: the add-on module importing it}."""
    seen, todo, outside = set(), [(package, module)], {}
    while todo:
        folder, name = todo.pop()
        path = module_file(folder, name)
        if path is None or path in seen:
            continue
        seen.add(path)
        for imported, level in imported_names(path):
            if level:  # relative: a module of the add-on (or of the _shared copy), or a name in one
                todo.append((path.parent, imported))
            else:
                outside.setdefault(imported.split(".")[0], path.stem)
    return outside


def addon_modules(package: Path = ADDON) -> list[str]:
    return sorted(p.stem for p in package.glob("*.py") if p.stem != "__init__")


@pytest.mark.parametrize("module", PURE)
def test_pure_module_never_imports_blender(module):
    blender = {name: via for name, via in outside_imports(module).items() if name in BLENDER}
    assert not blender, f"addon/{module}.py must stay free of Blender, but imports {blender} (name: via module)"


def test_no_addon_module_imports_torch_or_the_backend():
    for module in addon_modules():
        bad = {name: via for name, via in outside_imports(module).items() if name in NEVER_IN_ADDON}
        assert not bad, f"addon/{module}.py imports {bad}: the add-on runs in Blender's Python without them"


def test_every_blender_free_module_is_declared_pure():
    """A new module without Blender joins PURE (and mypy's list), so it stays that way."""
    free = {m for m in addon_modules() if not set(outside_imports(m)) & BLENDER}
    assert free == set(PURE), (
        f"Blender-free but not in PURE: {sorted(free - set(PURE))}; in PURE but not free: {sorted(set(PURE) - free)}"
    )


def test_mypy_checks_the_pure_modules():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    checked = {Path(f).stem for f in config["files"] if f.startswith("addon/")}
    assert checked == set(PURE)


def test_the_check_finds_a_lazy_and_an_indirect_bpy_import(tmp_path):
    """The check itself can fail: a function-level `import bpy`, a pure module importing a Blender-facing
    one, `from bpy.types import ...` and importlib are all found."""
    (tmp_path / "ui.py").write_text("import numpy as np\nfrom bpy.types import Panel\n")
    (tmp_path / "logic.py").write_text("def f():\n    from . import ui\n    return ui\n")
    (tmp_path / "lazy.py").write_text("def g():\n    import bpy\n    return bpy\n")
    (tmp_path / "dynamic.py").write_text("import importlib\nmathutils = importlib.import_module('mathutils')\n")
    (tmp_path / "clean.py").write_text("import os\nimport numpy\n")
    assert outside_imports("logic", tmp_path).get("bpy") == "ui"
    assert "bpy" in outside_imports("lazy", tmp_path)
    assert "mathutils" in outside_imports("dynamic", tmp_path)
    assert not set(outside_imports("clean", tmp_path)) & BLENDER


BLOCK_BLENDER = """
import importlib, sys
for name in {blender!r}:
    sys.modules[name] = None  # `import bpy` now raises ImportError
sys.path.insert(0, {root!r})
for module in {modules!r}:
    importlib.import_module("addon." + module)
print("imported", len({modules!r}))
"""


def test_pure_modules_import_where_bpy_cannot_be_imported():
    code = BLOCK_BLENDER.format(blender=sorted(BLENDER), root=str(ROOT), modules=list(PURE))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"imported {len(PURE)}" in done.stdout
