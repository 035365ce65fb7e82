"""Artist assemblies (the layout of ../shared/benchmarks/assemblies): `manifest.json` lists each
model's `file` (.glb: materials kept) and `geometry_only` (.ply: the same triangles without them);
`<name>.labels.npy` gives the artist's part (scene node) of every triangle in file face order.

Score: class-agnostic mIoU (../shared/reference/metrics.md), no connected-component split, at the
engine's automatic granularity and at the oracle level of its tree (the cut with the best mIoU
per model). Two tracks: `geometry` (the .ply files) and `materials` (the .glb files, whose
per-face materials and nodes reach the engine through `Mesh.material` / `Mesh.group`). `reference=True` adds yardsticks
scored the same way: one part, welded connected components and (materials track) one part per
material.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from ..engines.base import CancelToken, SegmentParams, no_progress
from ..metrics import miou

TRACKS = {"geometry": "geometry_only", "materials": "file"}
REFERENCE_ROWS = {"one_part": "one part per model", "components": "welded connected components",
                  "materials": "one part per material"}


@dataclass
class Model:
    name: str
    mesh_path: Path
    labels_path: Path
    n_parts: int | None = None


@dataclass
class ModelResult:
    name: str
    track: str
    n_faces: int
    gt_parts: int
    seconds: float
    auto: float
    auto_parts: int
    oracle: float
    oracle_parts: int
    extra: dict = field(default_factory=dict)


def list_models(root: Path, track: str) -> list[Model]:
    """The manifest's models for one track, in manifest order."""
    root = Path(root)
    manifest = root / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(f"{root}: not an assemblies benchmark folder (needs manifest.json)")
    entries = json.loads(manifest.read_text())
    if isinstance(entries, dict):
        entries = entries.get("models", [])
    key = TRACKS[track]
    models = []
    for e in entries:
        if key not in e:
            continue
        models.append(Model(e["name"], root / e[key], root / f"{e['name']}.labels.npy", e.get("parts")))
    if not models:
        raise FileNotFoundError(f"{manifest}: no models with a {key!r} file")
    return models


def load_model(model: Model):
    """(mesh, ground-truth labels); the labels must match the mesh's triangles."""
    from ..meshio import load_mesh

    mesh = load_mesh(model.mesh_path)
    gt = np.load(model.labels_path).astype(np.int64).ravel()
    if gt.shape != (mesh.n_faces,):
        raise ValueError(f"{model.labels_path}: {gt.size} labels for a mesh of {mesh.n_faces} triangles")
    return mesh, gt


def oracle_levels(hierarchy, max_parts: int) -> list[np.ndarray]:
    """Cuts of the tree at part counts spread evenly in log space from 1 to `max_parts`."""
    counts = np.unique(np.round(np.geomspace(1, max(max_parts, 1), 48)).astype(int))
    cuts, seen = [], set()
    for n in counts:
        labels = hierarchy.cut(parts=int(n))
        k = int(labels.max()) + 1
        if k not in seen:
            seen.add(k)
            cuts.append(labels)
    return cuts


def reference_labels(mesh) -> dict[str, np.ndarray]:
    from ..engines.geometric.components import face_components, weld_vertices

    out = {"one_part": np.zeros(mesh.n_faces, np.int64),
           "components": face_components(mesh.faces, weld_vertices(mesh.vertices))}
    material = mesh.material
    if material is not None:
        out["materials"] = np.asarray(material)
    return out


CREASE = np.deg2rad(30.0)  # a border edge on a crease at least this sharp is "on a cue"
VALLEY = np.deg2rad(10.0)  # or in a concave valley at least this deep


def border_figures(mesh, labels: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Issue 18's border measures over shared (welded) edges: the fraction of our border length
    that lies on a cue (a crease >= 30 deg, a valley >= 10 deg, or a material/group change;
    borders between separate pieces share no edge and are cues by nature), and our border
    length over the artist's."""
    from ..engines.geometric.components import weld_vertices
    from ..engines.geometric.graph import build_dual_graph

    g = build_dual_graph(mesh.vertices, mesh.faces, weld_vertices(mesh.vertices))
    a, b = g.pairs[:, 0], g.pairs[:, 1]
    cue = (g.dihedral >= CREASE) | (g.concavity >= VALLEY)
    for values in (mesh.material, mesh.group):
        if values is not None:
            cue |= np.asarray(values)[a] != np.asarray(values)[b]
    ours = labels[a] != labels[b]
    theirs = gt[a] != gt[b]
    length = float(g.edge_length[ours].sum())
    return {"on_cue": float(g.edge_length[ours & cue].sum() / length) if length > 0 else 1.0,
            "length_ratio": length / max(float(g.edge_length[theirs].sum()), 1e-300)}


def evaluate_model(engine, model: Model, track: str, reference: bool = False) -> ModelResult:
    mesh, gt = load_model(model)
    t0 = time.perf_counter()
    seg = engine.segment(mesh, SegmentParams(), no_progress, CancelToken())
    seconds = time.perf_counter() - t0
    auto = miou(seg.labels, gt)
    auto_parts = int(seg.labels.max()) + 1
    oracle, oracle_parts = auto, auto_parts
    if seg.hierarchy is not None:
        # up to 4x the artist's count or 256 parts, whichever is larger (the tree decides the rest)
        for labels in oracle_levels(seg.hierarchy, max(4 * (int(gt.max()) + 1), 256)):
            score = miou(labels, gt)
            if score > oracle:
                oracle, oracle_parts = score, int(labels.max()) + 1
    extra = {k: v for k, v in seg.info.items() if k in ("n_leaves", "n_pieces", "repeats")}
    if "repeats" in extra:
        extra["repeats"] = len(extra["repeats"])
    extra["borders"] = border_figures(mesh, seg.labels, gt)
    if reference:
        extra["reference"] = {name: miou(labels, gt) for name, labels in reference_labels(mesh).items()}
    return ModelResult(model.name, track, mesh.n_faces, int(gt.max()) + 1, seconds, auto, auto_parts,
                       oracle, oracle_parts, extra)


def summarise(results: list[ModelResult]) -> dict:
    """Means over models, per track."""
    out = {}
    for track in dict.fromkeys(r.track for r in results):
        rs = [r for r in results if r.track == track]
        entry = {"n_models": len(rs), "auto": float(np.mean([r.auto for r in rs])),
                 "auto_parts": float(np.mean([r.auto_parts for r in rs])),
                 "oracle": float(np.mean([r.oracle for r in rs])),
                 "oracle_parts": float(np.mean([r.oracle_parts for r in rs])),
                 "seconds_per_model": float(np.mean([r.seconds for r in rs])),
                 "border_on_cue": float(np.mean([r.extra["borders"]["on_cue"] for r in rs])),
                 "border_length_ratio": float(np.median([r.extra["borders"]["length_ratio"] for r in rs]))}
        refs = [r.extra["reference"] for r in rs if "reference" in r.extra]
        if refs:
            entry["reference"] = {name: float(np.mean([ref[name] for ref in refs]))
                                  for name in REFERENCE_ROWS if all(name in ref for ref in refs)}
        out[track] = entry
    return out


def evaluate(root: Path, engine, tracks=("geometry",), on_model: Callable[[ModelResult], None] | None = None,
             only: list[str] | None = None, reference: bool = False) -> tuple[list[ModelResult], dict]:
    results = []
    for track in tracks:
        for model in list_models(root, track):
            if only and model.name not in only:
                continue
            result = evaluate_model(engine, model, track, reference)
            results.append(result)
            if on_model:
                on_model(result)
    return results, summarise(results)


def format_table(results: list[ModelResult], summary: dict) -> str:
    lines = []
    for track, entry in summary.items():
        refs = [n for n in REFERENCE_ROWS if n in entry.get("reference", {})]
        head = (f"{'model':<28}{'faces':>8}{'gt':>5} | {'auto':>6}{'parts':>6} | {'oracle':>6}{'parts':>6}"
                + "".join(f" | {n[:10]:>10}" for n in refs))
        lines += [f"track: {track}", head, "-" * len(head)]
        for r in (r for r in results if r.track == track):
            ref = r.extra.get("reference", {})
            lines.append(f"{r.name[:27]:<28}{r.n_faces:>8}{r.gt_parts:>5} | {r.auto:>6.3f}{r.auto_parts:>6} | "
                         f"{r.oracle:>6.3f}{r.oracle_parts:>6}" + "".join(f" | {ref[n]:>10.3f}" for n in refs))
        lines.append("-" * len(head))
        lines.append(f"{'mean (' + str(entry['n_models']) + ' models)':<41} | {entry['auto']:>6.3f}"
                     f"{entry['auto_parts']:>6.1f} | {entry['oracle']:>6.3f}{entry['oracle_parts']:>6.1f}"
                     + "".join(f" | {entry['reference'][n]:>10.3f}" for n in refs))
        lines.append(f"borders at the automatic level: {entry['border_on_cue']:.3f} of their length on a crease, "
                     f"valley or material/group change (mean); our / the artist's border length "
                     f"{entry['border_length_ratio']:.2f} (median)")
        lines.append("")
    return "\n".join(lines)
