#!/usr/bin/env python3
"""What the cues a Blender user's object carries are worth: the artist assemblies through Blender.

    .venv/bin/python scripts/bench_blender_cues.py ../shared/benchmarks/assemblies [--json out.json]

Each model's `.glb` is imported with Blender's own glTF importer and its objects joined (Ctrl-J),
as a user does; the add-on's export (`mesh_io.mesh_arrays`, the arrays `upload_mesh` sends) gives
the triangles and the cues: `material` (the material index) and `marked_edges` (sharp edges, UV
seams and UV island borders). The geometric engine segments them with each subset of the cues and
the automatic level is scored (class-agnostic mIoU) against the artist's parts, carried from the
file's triangles to Blender's by their centroids. `eval assemblies` scores the files themselves;
this measures the Blender path and what the marks add to it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="segparts-bench-user-"))

import bpy  # noqa: E402  (after the environment above: Blender reads it at import)
import numpy as np  # noqa: E402
from scipy.spatial import cKDTree  # noqa: E402

sys.path.insert(0, str(ROOT / "scripts"))
import demo  # noqa: E402  (the built zip and its install, shared with `make demo`)

CUE_SETS = {  # column -> the cues the engine gets
    "geometry": (),
    "materials": ("material",),
    "marks": ("marked_edges",),
    "materials+marks": ("material", "marked_edges"),
}
# how the user prepared the object: as imported (glTF splits vertices at every normal and UV
# seam, so the object has no inner seams to mark), or welded with Merge by Distance and its
# "Sharp Edges" option (split normals become sharp edges, UV splits UV island borders)
PATHS = {"imported": False, "merged": True}
COLUMNS = [(path, cues) for path in PATHS for cues in CUE_SETS if PATHS[path] or "marks" not in cues]
MERGE_DISTANCE = 1e-7  # x the model's size: welds coincident vertices only, the shapes stay the file's


def import_joined(path: Path, merge: bool):
    """The .glb as one joined object, as a user has it after import and Ctrl-J (and, with
    `merge`, Merge by Distance keeping the split normals as sharp edges)."""
    bpy.ops.wm.read_homefile(use_empty=True)
    bpy.ops.import_scene.gltf(filepath=str(path))
    meshes = [o for o in bpy.context.scene.objects if o.type == "MESH"]
    bpy.ops.object.select_all(action="DESELECT")
    for obj in meshes:
        obj.select_set(True)
    bpy.context.view_layer.objects.active = meshes[0]
    if len(meshes) > 1:
        bpy.ops.object.join()
    if merge:
        bpy.ops.object.mode_set(mode="EDIT")
        bpy.ops.mesh.select_all(action="SELECT")
        size = max(max(obj.dimensions) for obj in bpy.context.selected_objects)
        bpy.ops.mesh.remove_doubles(threshold=MERGE_DISTANCE * size, use_sharp_edge_from_normals=True)
        bpy.ops.object.mode_set(mode="OBJECT")
    return bpy.context.view_layer.objects.active


def carried_labels(file_mesh, gt: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, float]:
    """The artist's part of each Blender triangle (the file triangle with the nearest centroid),
    and the share of triangles whose centroid matched one of the file's to 1e-5 of the model's size."""
    file_centroids = file_mesh.vertices[file_mesh.faces].mean(axis=1)
    distance, nearest = cKDTree(file_centroids).query(vertices[faces].mean(axis=1))
    scale = float(np.ptp(file_mesh.vertices, axis=0).max())
    return gt[nearest], float(np.mean(distance <= 1e-5 * scale))


def score_model(mesh_io, model, engine) -> dict:
    from segparts.engines.base import CancelToken, SegmentParams, no_progress
    from segparts.eval.assemblies import load_model
    from segparts.mesh import validate_mesh
    from segparts.metrics import miou

    file_mesh, gt = load_model(model)
    row: dict = {"name": model.name, "faces": file_mesh.n_faces}
    for path, merge in PATHS.items():
        arrays = mesh_io.mesh_arrays(import_joined(model.mesh_path, merge))
        labels, row[f"{path} matched"] = carried_labels(file_mesh, gt, arrays.vertices, arrays.faces)
        row[f"{path} cues"] = sorted(arrays.cues)
        scores: dict[tuple[str, ...], float] = {}  # by the cues given: columns whose cues are absent repeat one
        for column in [c for p, c in COLUMNS if p == path]:
            # a cue the object lacks (one material, no marks) is one the add-on does not send
            given = tuple(name for name in CUE_SETS[column] if name in arrays.cues)
            if given not in scores:
                mesh = validate_mesh(arrays.vertices, arrays.faces, **{name: arrays.cues[name] for name in given})
                seg = engine.segment(mesh, SegmentParams(), no_progress, CancelToken())
                scores[given] = float(miou(seg.labels, labels))
            row[f"{path} {column}"] = scores[given]
    return row


def format_rows(rows: list[dict]) -> str:
    """Per model, the mIoU of each column and the cues the merged object had (m: material, e: edge
    marks); `matched`: the share of triangles carried to the artist's part by an exact centroid
    match (the worse of both paths)."""
    names = [f"{path} {column}" for path, column in COLUMNS]
    head = f"{'model':28s} {'faces':>7s} {'matched':>7s} {'cues':>4s} | " + " | ".join(f"{c:>22s}" for c in names)
    lines = [head, "-" * len(head)]
    for r in rows:
        cells = " | ".join(f"{r[c]:22.3f}" for c in names)
        matched = min(r[f"{path} matched"] for path in PATHS)
        cues = "".join(short for name, short in (("material", "m"), ("marked_edges", "e")) if name in r["merged cues"])
        lines.append(f"{r['name']:28s} {r['faces']:7d} {matched:7.3f} {cues:>4s} | {cells}")
    means = " | ".join(f"{np.mean([r[c] for r in rows]):22.3f}" for c in names)
    lines += ["-" * len(head), f"{f'mean ({len(rows)} models)':49s} | {means}"]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir", type=Path, help="a folder in the layout of benchmarks/assemblies")
    ap.add_argument("--json", type=Path)
    ap.add_argument("--dist", type=Path, default=ROOT / "dist")
    args = ap.parse_args(argv)

    from segparts.engines.geometric import GeometricEngine
    from segparts.eval.assemblies import list_models

    bpy.ops.wm.read_factory_settings(use_empty=True)
    demo.install(demo.find_zip(args.dist))
    mesh_io = importlib.import_module(f"{demo.MODULE}.mesh_io")
    engine, rows = GeometricEngine(), []
    t0 = time.perf_counter()
    for model in list_models(args.dir, "materials"):
        rows.append(score_model(mesh_io, model, engine))
        print(model.name, {k: v for k, v in rows[-1].items() if k != "name"}, flush=True)
    print(format_rows(rows))
    print(f"total {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(json.dumps({"dir": str(args.dir), "models": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
