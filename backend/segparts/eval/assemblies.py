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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engines.base import CancelToken, SegmentParams, no_progress
from ..metrics import miou
from .borders import border_figures

TRACKS = {"geometry": "geometry_only", "materials": "file"}
REFERENCE_ROWS = {
    "one_part": "one part per model",
    "components": "welded connected components",
    "materials": "one part per material",
}


@dataclass
class Model:
    name: str
    mesh_path: Path
    labels_path: Path
    n_parts: int | None = None
    track: str = "geometry"

    @property
    def key(self) -> str:
        return f"{self.name}.{self.track}"


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
        models.append(Model(e["name"], root / e[key], root / f"{e['name']}.labels.npy", e.get("parts"), track))
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


HEIGHTS = np.arange(1, 300) / 300.0  # fixed cut heights of the held-out estimate (1/3: the geometric level)


def height_scores(hierarchy, gt: np.ndarray) -> list[float]:
    """mIoU of the tree cut at each of `HEIGHTS` (a cut that neighbouring heights share is
    scored once)."""
    scores: list[float] = []
    last_active, last_score = None, 0.0
    for h in HEIGHTS:
        active = hierarchy.active_at_scale(float(h))
        if last_active is None or not np.array_equal(active, last_active):
            last_active, last_score = active, float(miou(hierarchy.labels_for(active), gt))
        scores.append(last_score)
    return scores


def leave_one_out(table: dict[tuple[str, str], np.ndarray]) -> dict[str, dict]:
    """Leave-one-model-out choice of one setting among many: `table` holds, per (model, track),
    the score at each setting. Each model (all its tracks) is scored at the setting best on the
    other models (all tracks together); per track, the mean of those scores, and the setting best
    for all (in-sample) with its mean. Empty with fewer than two models."""
    names = list(dict.fromkeys(name for name, _ in table))
    if len(names) < 2:
        return {}
    best_all = int(np.argmax(np.mean(list(table.values()), axis=0)))
    left_out: dict[str, list[float]] = {}
    for name in names:
        best = int(np.argmax(np.mean([v for (n, _), v in table.items() if n != name], axis=0)))
        for (n, track), v in table.items():
            if n == name:
                left_out.setdefault(track, []).append(float(v[best]))
    return {
        track: {
            "held_out": float(np.mean(scores)),
            "best_index": best_all,
            "best_fixed": float(np.mean([v[best_all] for (_, t), v in table.items() if t == track])),
        }
        for track, scores in left_out.items()
    }


def held_out(results: list[ModelResult]) -> dict[str, dict]:
    """Leave-one-model-out estimate of what a fixed cut height gives on assets it was not chosen
    on (`leave_one_out` over the heights of `HEIGHTS`)."""
    table = {(r.name, r.track): np.asarray(r.extra["heights"]) for r in results if "heights" in r.extra}
    figures = leave_one_out(table)
    for entry in figures.values():
        entry["best_fixed_height"] = float(HEIGHTS[entry.pop("best_index")])
    return figures


def reference_labels(mesh) -> dict[str, np.ndarray]:
    from ..meshgraph import face_components, weld_vertices

    out = {
        "one_part": np.zeros(mesh.n_faces, np.int64),
        "components": face_components(mesh.faces, weld_vertices(mesh.vertices)),
    }
    material = mesh.material
    if material is not None:
        out["materials"] = np.asarray(material)
    return out


def evaluate_model(engine, model: Model, reference: bool = False, sheets: str | None = None) -> ModelResult:
    """Score one model of one track; with `sheets`, also write `<sheets>/<name>.<track>.png`
    (the artist's parts above, ours at the automatic level below)."""
    track = model.track
    mesh, gt = load_model(model)
    t0 = time.perf_counter()
    seg = engine.segment(mesh, SegmentParams(), no_progress, CancelToken())
    seconds = time.perf_counter() - t0
    auto = miou(seg.labels, gt)
    auto_parts = int(seg.labels.max()) + 1
    oracle, oracle_parts = auto, auto_parts
    extra = {k: v for k, v in seg.info.items() if k in ("n_leaves", "n_pieces", "repeats")}
    if seg.hierarchy is not None:
        # up to 4x the artist's count or 256 parts, whichever is larger (the tree decides the rest)
        for labels in oracle_levels(seg.hierarchy, max(4 * (int(gt.max()) + 1), 256)):
            score = miou(labels, gt)
            if score > oracle:
                oracle, oracle_parts = score, int(labels.max()) + 1
        extra["heights"] = height_scores(seg.hierarchy, gt)
    if "repeats" in extra:
        extra["repeats"] = len(extra["repeats"])
    extra["borders"] = border_figures(mesh, seg.labels, gt)
    if reference:
        extra["reference"] = {name: miou(labels, gt) for name, labels in reference_labels(mesh).items()}
    if sheets:
        write_sheet(mesh, gt, seg.labels, Path(sheets) / f"{model.key}.png")
    return ModelResult(
        model.name, track, mesh.n_faces, int(gt.max()) + 1, seconds, auto, auto_parts, oracle, oracle_parts, extra
    )


SHEET_VIEWS = 4  # azimuths 45 + 90k degrees, 25 degrees above the horizon
SHEET_SIZE = 320


def write_sheet(mesh, gt: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """Contact sheet: a row of views coloured by the artist's parts over the same views coloured
    by ours (colours are per labelling: the same colour in both rows means nothing)."""
    from ..appearance import Appearance
    from ..cli.render import contact_sheet
    from ..mesh import Mesh
    from ..palette import part_colours
    from ..render import normalize_for_rendering, render_views
    from ..render.cameras import orbit_rig, reference_distance

    vertices, norm = normalize_for_rendering(mesh.vertices)
    rig = orbit_rig(
        45.0 + 90.0 * np.arange(SHEET_VIEWS), np.full(SHEET_VIEWS, 25.0), SHEET_SIZE, reference_distance(norm.extents)
    )
    rows = [
        render_views(
            Mesh(vertices, mesh.faces, appearance=Appearance(face_colors=part_colours(lab)[:, :3])),
            rig,
            outputs=("color",),
        ).color
        for lab in (gt, labels)
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    contact_sheet(np.concatenate(rows), columns=SHEET_VIEWS).save(path, format="PNG")


def _median_defined(values: list[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.median(finite)) if finite else float("nan")


def summarise(results: list[ModelResult]) -> dict:
    """Means over models, per track."""
    out = {}
    for track in dict.fromkeys(r.track for r in results):
        rs = [r for r in results if r.track == track]
        entry = {
            "n_models": len(rs),
            "auto": float(np.mean([r.auto for r in rs])),
            "auto_parts": float(np.mean([r.auto_parts for r in rs])),
            "oracle": float(np.mean([r.oracle for r in rs])),
            "oracle_parts": float(np.mean([r.oracle_parts for r in rs])),
            "seconds_per_model": float(np.mean([r.seconds for r in rs])),
            "border_on_cue": float(np.mean([r.extra["borders"]["on_cue"] for r in rs])),
            "border_length_ratio": _median_defined([r.extra["borders"]["length_ratio"] for r in rs]),
            "border_ratio_models": int(np.isfinite([r.extra["borders"]["length_ratio"] for r in rs]).sum()),
        }
        refs = [r.extra["reference"] for r in rs if "reference" in r.extra]
        if refs:
            entry["reference"] = {
                name: float(np.mean([ref[name] for ref in refs]))
                for name in REFERENCE_ROWS
                if all(name in ref for ref in refs)
            }
        out[track] = entry
    for track, figures in held_out(results).items():
        out[track].update(figures)
    return out


def evaluate_item(engine, model: Model, reference: bool = False, sheets: str | None = None) -> dict:
    """One model of one track as a batch task (segparts.batch.evaluation): its result as a dict."""
    from dataclasses import asdict

    return asdict(evaluate_model(engine, model, reference, sheets))


def evaluate_batch(
    root: Path,
    engine: str,
    device: str = "cpu",
    tracks=("geometry",),
    *,
    only: list[str] | None = None,
    reference: bool = False,
    sheets: str | None = None,
    out: str | None = None,
    workers: int = 0,
    ray: str | None = None,
    on_model: Callable[[ModelResult], None] | None = None,
    max_retries: int = 2,
    progress: bool | None = None,
):
    """Score every model of `tracks` through the batch machinery (in this process, worker
    processes or Ray; per-model records in `out`, so a rerun skips what is scored). Returns
    (results, summary, report); models that failed are in `report.failed`, not in the results."""
    from ..batch.evaluation import run_evaluation, scored

    models = [m for track in tracks for m in list_models(root, track) if not only or m.name in only]

    report = run_evaluation(
        models,
        key=lambda m: m.key,
        files=lambda m: [m.mesh_path, m.labels_path],
        evaluate=evaluate_item,
        engine=engine,
        device=device,
        options={"reference": reference, "sheets": sheets},
        out=out,
        workers=workers,
        ray=ray,
        on_scored=(lambda result: on_model(ModelResult(**result))) if on_model else None,
        max_retries=max_retries,
        progress=progress,
        desc="assemblies",
    )
    results = [ModelResult(**r) for r in scored(report)]
    return results, (summarise(results) if results else {}), report


def format_table(results: list[ModelResult], summary: dict) -> str:
    lines = []
    for track, entry in summary.items():
        refs = [n for n in REFERENCE_ROWS if n in entry.get("reference", {})]
        head = f"{'model':<28}{'faces':>8}{'gt':>5} | {'auto':>6}{'parts':>6} | {'oracle':>6}{'parts':>6}" + "".join(
            f" | {n[:10]:>10}" for n in refs
        )
        lines += [f"track: {track}", head, "-" * len(head)]
        for r in (r for r in results if r.track == track):
            ref = r.extra.get("reference", {})
            lines.append(
                f"{r.name[:27]:<28}{r.n_faces:>8}{r.gt_parts:>5} | {r.auto:>6.3f}{r.auto_parts:>6} | "
                f"{r.oracle:>6.3f}{r.oracle_parts:>6}" + "".join(f" | {ref[n]:>10.3f}" for n in refs)
            )
        lines.append("-" * len(head))
        lines.append(
            f"{'mean (' + str(entry['n_models']) + ' models)':<41} | {entry['auto']:>6.3f}"
            f"{entry['auto_parts']:>6.1f} | {entry['oracle']:>6.3f}{entry['oracle_parts']:>6.1f}"
            + "".join(f" | {entry['reference'][n]:>10.3f}" for n in refs)
        )
        ratio = entry["border_length_ratio"]
        lines.append(
            f"borders at the automatic level: {entry['border_on_cue']:.3f} of their length on a crease, "
            f"valley or material/group change (mean); our / the artist's border length inside pieces "
            + (
                f"{ratio:.2f} (median of the {entry['border_ratio_models']} models whose artist cuts pieces)"
                if np.isfinite(ratio)
                else "n/a (the artist's parts are whole pieces)"
            )
        )
        if "held_out" in entry:
            lines.append(
                f"a fixed cut height chosen on the other models (leave one model out): {entry['held_out']:.3f}; "
                f"the best height for all, {entry['best_fixed_height']:.3f}: {entry['best_fixed']:.3f}"
            )
        lines.append("")
    return "\n".join(lines)
