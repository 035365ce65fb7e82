"""The Princeton Mesh Segmentation Benchmark protocol (Chen et al. 2009) on a folder laid out as
../shared/benchmarks/princeton: `off/<id>.off`, `seg/<id>/<id>_<k>.seg`, `manifest.csv`.

Each prediction is split into connected components, scored against every human segmentation of
its model, and averaged; then per category and overall (Spring excluded). Two granularities are
reported: the engine's automatic one, and the oracle level of its tree (the cut among
`ORACLE_PARTS` with the best mean mIoU over that model's annotators, chosen per model).

With `reference=True` three yardsticks per model come too (`reference_scores`): people scored
against each other (every ordered pair), the best single person scored like a prediction against
everyone (what a perfect one-level answer that copies one annotator gets), and the best grouping
of the engine's own leaves into one person's parts (the most any cut of a tree over those leaves
could score: the oracle's ceiling).
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..engines.base import CancelToken, SegmentParams, no_progress
from ..meshgraph import face_adjacency
from ..metrics import METRIC_NAMES, compare, split_connected
from .borders import human_border_figures

EXCLUDED_CATEGORIES = ("Spring",)
ORACLE_PARTS = tuple(range(1, 31))
CATEGORY_STARTS = [
    (1, "Human"),
    (21, "Cup"),
    (41, "Glasses"),
    (61, "Airplane"),
    (81, "Ant"),
    (101, "Chair"),
    (121, "Octopus"),
    (141, "Table"),
    (161, "Teddy"),
    (181, "Hand"),
    (201, "Plier"),
    (221, "Fish"),
    (241, "Bird"),
    (261, "Spring"),
    (281, "Armadillo"),
    (301, "Bust"),
    (321, "Mech"),
    (341, "Bearing"),
    (361, "Vase"),
    (381, "Fourleg"),
]


@dataclass
class Model:
    model_id: str
    category: str
    mesh_path: Path
    seg_paths: list[Path]


@dataclass
class ModelResult:
    model_id: str
    category: str
    n_faces: int
    seconds: float
    auto: dict[str, float]
    auto_parts: int
    oracle: dict[str, float]
    oracle_parts: int
    extra: dict = field(default_factory=dict)


def category_of(model_id: int) -> str:
    name = CATEGORY_STARTS[0][1]
    for start, cat in CATEGORY_STARTS:
        if model_id >= start:
            name = cat
    return name


def list_models(root: Path) -> list[Model]:
    """Models with at least one human segmentation, in id order (Spring excluded)."""
    root = Path(root)
    if not (root / "off").is_dir() or not (root / "seg").is_dir():
        raise FileNotFoundError(f"{root}: not a Princeton benchmark folder (needs off/ and seg/)")
    categories = {}
    if (root / "manifest.csv").is_file():
        with open(root / "manifest.csv", newline="") as fh:
            categories = {row["model_id"]: row["category"] for row in csv.DictReader(fh)}
    models = []
    for mesh_path in sorted((root / "off").glob("*.off"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0):
        mid = mesh_path.stem
        segs = sorted((root / "seg" / mid).glob(f"{mid}_*.seg"))
        category = categories.get(mid) or (category_of(int(mid)) if mid.isdigit() else "Unknown")
        if segs and category not in EXCLUDED_CATEGORIES:
            models.append(Model(mid, category, mesh_path, segs))
    if not models:
        raise FileNotFoundError(f"{root}: no meshes with human segmentations found")
    return models


def read_seg(path: Path, n_faces: int) -> np.ndarray:
    labels = np.loadtxt(path, dtype=np.int64, ndmin=1)
    if labels.shape != (n_faces,):
        raise ValueError(f"{path}: {labels.size} labels for a mesh of {n_faces} faces")
    return labels


def score_against_humans(pred: np.ndarray, humans: list[np.ndarray], pairs: np.ndarray) -> dict[str, float]:
    """Mean of every metric over the human segmentations (prediction split into connected parts)."""
    parts = split_connected(pred, None, pairs)
    return _mean_scores([compare(parts, gt) for gt in humans])


def _mean_scores(rows: list[dict[str, float]]) -> dict[str, float]:
    return {m: float(np.mean([r[m] for r in rows])) for m in METRIC_NAMES}


def reference_scores(humans: list[np.ndarray], pairs: np.ndarray, leaf_labels: np.ndarray | None = None) -> dict:
    """Yardsticks for one model: "humans" (mean over ordered pairs of different annotators),
    "best_human" (the annotator whose segmentation, scored as a prediction against all of them,
    gets the best mean mIoU) and, given an engine's leaves, "best_leaf_grouping" (each leaf
    given its majority part in one annotator's segmentation, best annotator)."""
    out = {}
    if len(humans) > 1:
        out["humans"] = _mean_scores(
            [
                compare(split_connected(humans[i], None, pairs), humans[j])
                for i in range(len(humans))
                for j in range(len(humans))
                if i != j
            ]
        )
    as_prediction = [score_against_humans(h, humans, pairs) for h in humans]
    out["best_human"] = max(as_prediction, key=lambda r: r["miou"])
    if leaf_labels is not None:
        groupings = [_majority_part(leaf_labels, h) for h in humans]
        out["best_leaf_grouping"] = max(
            (score_against_humans(g, humans, pairs) for g in groupings), key=lambda r: r["miou"]
        )
    return out


def _majority_part(leaf_labels: np.ndarray, human: np.ndarray) -> np.ndarray:
    """Per face, the part of `human` that covers most faces of the face's leaf."""
    _, leaf = np.unique(leaf_labels, return_inverse=True)
    _, part = np.unique(human, return_inverse=True)
    counts = np.zeros((leaf.max() + 1, part.max() + 1), dtype=np.int64)
    np.add.at(counts, (leaf, part), 1)
    return counts.argmax(axis=1)[leaf]


def evaluate_model(engine, model: Model, reference: bool = False) -> ModelResult:
    from ..meshio import load_mesh

    mesh = load_mesh(model.mesh_path)
    humans = [read_seg(p, mesh.n_faces) for p in model.seg_paths]
    pairs, _ = face_adjacency(mesh.faces)
    t0 = time.perf_counter()
    seg = engine.segment(mesh, SegmentParams(), no_progress, CancelToken())
    seconds = time.perf_counter() - t0
    auto = score_against_humans(seg.labels, humans, pairs)
    best, best_parts = None, 0
    if seg.hierarchy is not None:
        seen = set()
        for n in ORACLE_PARTS:
            labels = seg.hierarchy.cut(parts=n)
            k = int(labels.max()) + 1
            if k in seen:
                continue
            seen.add(k)
            score = score_against_humans(labels, humans, pairs)
            if best is None or score["miou"] > best["miou"]:
                best, best_parts = score, k
    if best is None or auto["miou"] > best["miou"]:  # the automatic cut is one of the tree's levels
        best, best_parts = auto, int(seg.labels.max()) + 1
    extra = {k: v for k, v in seg.info.items() if k in ("auto_scale", "n_leaves")}
    extra["borders"] = human_border_figures(mesh, seg.labels, humans)
    if reference:
        leaves = None if seg.hierarchy is None else seg.hierarchy.leaf_labels
        extra["reference"] = reference_scores(humans, pairs, leaves)
    return ModelResult(
        model.model_id, model.category, mesh.n_faces, seconds, auto, int(seg.labels.max()) + 1, best, best_parts, extra
    )


def summarise(results: list[ModelResult]) -> dict:
    """Per-category means and overall means (over models, and over category means)."""
    cats: dict[str, list[ModelResult]] = {}
    for r in results:
        cats.setdefault(r.category, []).append(r)
    out = {"categories": {}, "overall": {}, "overall_category_mean": {}}
    for which in ("auto", "oracle"):
        for cat, rs in cats.items():
            entry = out["categories"].setdefault(cat, {"n_models": len(rs)})
            entry[which] = {m: float(np.mean([getattr(r, which)[m] for r in rs])) for m in METRIC_NAMES}
            entry[which]["parts"] = float(np.mean([getattr(r, which + "_parts") for r in rs]))
        out["overall"][which] = {m: float(np.mean([getattr(r, which)[m] for r in results])) for m in METRIC_NAMES}
        out["overall"][which]["parts"] = float(np.mean([getattr(r, which + "_parts") for r in results]))
        out["overall_category_mean"][which] = {
            m: float(np.mean([out["categories"][c][which][m] for c in cats])) for m in METRIC_NAMES
        }
    out["overall"]["seconds_per_model"] = float(np.mean([r.seconds for r in results]))
    borders = [r.extra["borders"] for r in results if "borders" in r.extra]
    if borders:
        ratios = [b["length_ratio"] for b in borders if np.isfinite(b["length_ratio"])]
        out["borders"] = {
            "on_cue": float(np.mean([b["on_cue"] for b in borders])),
            "people_on_cue": float(np.mean([b["people_on_cue"] for b in borders])),
            "length_ratio_mean": float(np.mean(ratios)) if ratios else float("nan"),
            "length_ratio_median": float(np.median(ratios)) if ratios else float("nan"),
        }
    with_reference = [r.extra["reference"] for r in results if "reference" in r.extra]
    if with_reference:
        out["reference"] = {
            name: {"n_models": len(rows), **_mean_scores(rows)}
            for name in REFERENCE_ROWS
            if (rows := [ref[name] for ref in with_reference if name in ref])
        }
    return out


REFERENCE_ROWS = {
    "humans": "people vs each other",
    "best_human": "best single person",
    "best_leaf_grouping": "best grouping of leaves",
}


def evaluate(
    root: Path,
    engine,
    on_model: Callable[[ModelResult], None] | None = None,
    only: list[str] | None = None,
    reference: bool = False,
) -> tuple[list[ModelResult], dict]:
    models = list_models(root)
    if only:
        models = [m for m in models if m.model_id in set(only)]
    results = []
    for model in models:
        result = evaluate_model(engine, model, reference)
        results.append(result)
        if on_model:
            on_model(result)
    return results, summarise(results)


def evaluate_item(engine, model: Model, reference: bool = False) -> dict:
    """One model as a batch task (segparts.batch.evaluation): its ModelResult as a dict."""
    from dataclasses import asdict

    return asdict(evaluate_model(engine, model, reference))


def evaluate_batch(
    root: Path,
    engine: str,
    device: str = "cpu",
    *,
    only: list[str] | None = None,
    reference: bool = False,
    out: str | None = None,
    workers: int = 0,
    ray: str | None = None,
    on_model: Callable[[ModelResult], None] | None = None,
    max_retries: int = 2,
    progress: bool | None = None,
):
    """`evaluate` through the batch machinery: worker processes or Ray, per-model records in
    `out` (a rerun skips the models already scored). Returns (results, summary, report);
    models that failed are in `report.failed`, not in the results."""
    from ..batch.evaluation import run_evaluation, scored

    models = list_models(root)
    if only:
        models = [m for m in models if m.model_id in set(only)]

    report = run_evaluation(
        models,
        key=lambda m: m.model_id,
        files=lambda m: [m.mesh_path, *m.seg_paths],
        evaluate=evaluate_item,
        engine=engine,
        device=device,
        options={"reference": reference},
        out=out,
        workers=workers,
        ray=ray,
        on_scored=(lambda result: on_model(ModelResult(**result))) if on_model else None,
        max_retries=max_retries,
        progress=progress,
        desc="princeton",
    )
    results = [ModelResult(**r) for r in scored(report)]
    return results, (summarise(results) if results else {}), report


def format_table(summary: dict) -> str:
    head = (
        f"{'category':<11}{'n':>3} | {'1-RI':>6}{'GCE':>7}{'LCE':>7}{'mIoU':>7}{'parts':>7} | "
        f"{'1-RI':>6}{'GCE':>7}{'LCE':>7}{'mIoU':>7}{'parts':>7}"
    )
    lines = [
        f"{'':<14} | {'automatic granularity':^34} | {'oracle level (best mIoU per model)':^34}",
        head,
        "-" * len(head),
    ]

    def row(name, n, auto, oracle):
        cells = [name.ljust(11) + f"{n:>3}"]
        for d in (auto, oracle):
            cells.append(
                f"{d['rand_index_error']:>6.3f}{d['gce']:>7.3f}{d['lce']:>7.3f}{d['miou']:>7.3f}"
                + (f"{d['parts']:>7.1f}" if "parts" in d else " " * 7)
            )
        return " | ".join(cells)

    for cat, e in summary["categories"].items():
        lines.append(row(cat, e["n_models"], e["auto"], e["oracle"]))
    lines.append("-" * len(head))
    n = sum(e["n_models"] for e in summary["categories"].values())
    lines.append(row("ALL models", n, summary["overall"]["auto"], summary["overall"]["oracle"]))
    lines.append(
        row(
            "ALL cat.avg",
            len(summary["categories"]),
            summary["overall_category_mean"]["auto"],
            summary["overall_category_mean"]["oracle"],
        )
    )
    if summary.get("borders"):
        b = summary["borders"]
        lines.append(
            f"borders at the automatic level: {b['on_cue']:.3f} of our border length on a crease or "
            f"valley (people {b['people_on_cue']:.3f}); our / the people's border length "
            f"{b['length_ratio_median']:.2f} (median), {b['length_ratio_mean']:.2f} (mean)"
        )
    if summary.get("reference"):
        lines.append("reference, scored like a prediction (mean over models):")
        for name, figures in summary["reference"].items():
            lines.append(
                f"  {REFERENCE_ROWS[name]:<26}{figures['n_models']:>3} | 1-RI {figures['rand_index_error']:.3f}"
                f"  GCE {figures['gce']:.3f}  LCE {figures['lce']:.3f}  mIoU {figures['miou']:.3f}"
            )
    return "\n".join(lines)
