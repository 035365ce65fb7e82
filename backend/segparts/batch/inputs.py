"""Expanding `segparts batch INPUT...` into meshes: files, folders (searched recursively), glob
patterns, and manifests (`.csv` / `.jsonl`) with a `path` column and optional per-row options.

Every mesh gets a *key*: the name its outputs take inside `--out`. For a folder it is the path
below the folder without the suffix (`chairs/a.obj` -> `chairs/a`), so the output tree mirrors
the input tree; for a file or a glob match it is the file's stem; a manifest row may name it in
an `id` column. When two inputs would get the same key (`x.glb` and `x.ply`), both keep their
suffix (`x_glb`, `x_ply`).
"""

from __future__ import annotations

import csv
import glob
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ..meshio import MESH_SUFFIXES
from . import storage

MANIFEST_SUFFIXES = (".csv", ".jsonl")
ROW_OPTIONS = ("engine", "parts", "scale", "options")  # per-row overrides a manifest may carry


class InputError(ValueError):
    """An INPUT that names nothing usable (the message says which and why)."""


@dataclass
class MeshInput:
    path: str
    key: str
    overrides: dict = field(default_factory=dict)  # engine / parts / scale / options


def collect(inputs: list[str]) -> list[MeshInput]:
    found: list[MeshInput] = []
    for item in inputs:
        found.extend(_expand(item))
    if not found:
        raise InputError("no mesh files found in " + " ".join(inputs))
    return _unique_keys(_drop_repeats(found))


def _expand(item: str) -> list[MeshInput]:
    suffix = PurePosixPath(item).suffix.lower()
    if suffix in MANIFEST_SUFFIXES:
        return _read_manifest(item)
    if storage.is_url(item):
        return _expand_url(item)
    if any(ch in item for ch in "*?["):
        matches = sorted(p for p in glob.glob(item, recursive=True) if _is_mesh(p) and os.path.isfile(p))
        if not matches:
            raise InputError(f"{item}: the pattern matches no mesh files")
        return [MeshInput(p, _stem(p)) for p in matches]
    if os.path.isdir(item):
        matches = sorted(
            p for p in glob.glob(os.path.join(item, "**", "*"), recursive=True) if _is_mesh(p) and os.path.isfile(p)
        )
        return [MeshInput(p, _strip(os.path.relpath(p, item))) for p in matches]
    if os.path.isfile(item):
        return [MeshInput(item, _stem(item))]  # any file: an unsupported one is reported per mesh
    raise InputError(f"{item}: no such file, folder or pattern")


def _expand_url(url: str) -> list[MeshInput]:
    fs, inner = storage._fs(url)
    protocol = url.split("://", 1)[0]
    if any(ch in inner for ch in "*?["):
        paths = sorted(fs.glob(inner))
        base = None
    elif fs.isdir(inner):
        paths = sorted(fs.find(inner))
        base = inner.rstrip("/")
    else:
        return [MeshInput(url, _stem(inner))]
    out = []
    for p in paths:
        if _is_mesh(p):
            key = _strip(p[len(base) + 1 :]) if base else _stem(p)
            out.append(MeshInput(f"{protocol}://{p}", key))
    return out


def _read_manifest(path: str) -> list[MeshInput]:
    try:
        text = storage.read_bytes(path).decode()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the manifest ({exc.strerror or exc})") from None
    if path.lower().endswith(".jsonl"):
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise InputError(f"{path}:{n}: not a JSON object ({exc.msg})") from None
    else:
        rows = list(csv.DictReader(io.StringIO(text)))
    base = os.path.dirname(path) if not storage.is_url(path) else path.rsplit("/", 1)[0]
    out = []
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict) or not row.get("path"):
            raise InputError(f"{path}: row {n} has no 'path'")
        mesh = str(row["path"])
        if not storage.is_url(mesh) and not os.path.isabs(mesh):
            mesh = storage.join(base, mesh) if base else mesh
        key = str(row.get("id") or _stem(mesh))
        out.append(MeshInput(mesh, key, _row_overrides(row, path, n)))
    return out


def _row_overrides(row: dict, manifest: str, n: int) -> dict:
    out = {}
    for name in ROW_OPTIONS:
        value = row.get(name)
        if value in (None, ""):
            continue
        try:
            if name == "parts":
                value = int(value)
            elif name == "scale":
                value = float(value)
            elif name == "options" and isinstance(value, str):
                value = json.loads(value)
        except (ValueError, json.JSONDecodeError):
            raise InputError(f"{manifest}: row {n}: bad {name} {value!r}") from None
        out[name] = value
    return out


def _is_mesh(path: str) -> bool:
    return PurePosixPath(str(path)).suffix.lower() in MESH_SUFFIXES


def _stem(path: str) -> str:
    return PurePosixPath(str(path).replace(os.sep, "/")).stem


def _strip(rel: str) -> str:
    rel = rel.replace(os.sep, "/")
    p = PurePosixPath(rel)
    return str(p.with_suffix("")) if p.suffix else rel


def _drop_repeats(items: list[MeshInput]) -> list[MeshInput]:
    seen, out = set(), []
    for item in items:
        ident = item.path if storage.is_url(item.path) else os.path.realpath(item.path)
        if ident not in seen:
            seen.add(ident)
            out.append(item)
    return out


def _unique_keys(items: list[MeshInput]) -> list[MeshInput]:
    count: dict[str, int] = {}
    for item in items:
        count[item.key] = count.get(item.key, 0) + 1
    for item in items:
        if count[item.key] > 1:
            item.key = f"{item.key}_{PurePosixPath(item.path).suffix.lstrip('.').lower()}"
    keys = [i.key for i in items]
    clashes = sorted({k for k in keys if keys.count(k) > 1})
    if clashes:
        raise InputError(
            f"several inputs would write the same outputs ({', '.join(clashes[:5])}); "
            "give them distinct names (a manifest's 'id' column) or batch them separately"
        )
    return items
