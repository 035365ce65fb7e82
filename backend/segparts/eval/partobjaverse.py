"""PartObjaverse-Tiny (SAMPart3D, Yang et al. 2024) in its published layout:

    DIR/PartObjaverse-Tiny_mesh/<uid>.glb
    DIR/PartObjaverse-Tiny_instance_gt/<uid>.npy   one part id per face, -1 = unlabelled
    DIR/PartObjaverse-Tiny_semantic_gt/<uid>.npy   one semantic label per face
    DIR/PartObjaverse-Tiny_semantic.json           {category: {uid: [part names]}}

Face order: the triangles of `trimesh.load(glb)` with the scene concatenated (segparts.meshio's
`.glb` order). The metric is the class-agnostic part mIoU of PartField's released evaluation of
this dataset, which the SAMPart3D and GeoSAM2 tables use: for each ground-truth part of the
**instance** labels (-1 skipped), the best IoU over the predicted parts, counted in faces
(not area-weighted); averaged over the parts of a shape, then over shapes (the overall figure)
and over the shapes of each of the 8 categories of the JSON (the per-category figures; their mean
is reported too). Two granularities:
- automatic: the engine's own cut;
- oracle: the best, per shape, of the engine's hierarchy cut into k = 2..19 parts (PartField's
  range of cluster counts; the automatic cut is not a candidate), the "oracle granularity" of the
  published tables. An engine without a hierarchy has oracle = automatic.
Ambiguities resolved: instance (not semantic) ground truth, face counts (not areas), IoU in
percent like the tables, predictions not split into connected parts (unlike Princeton). The same
mIoU against the semantic labels is reported alongside (`semantic`), as a secondary figure.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..engines.base import CancelToken, SegmentParams, no_progress
from ..metrics import miou

MESH_DIR = "PartObjaverse-Tiny_mesh"
INSTANCE_DIR = "PartObjaverse-Tiny_instance_gt"
SEMANTIC_DIR = "PartObjaverse-Tiny_semantic_gt"
SEMANTIC_JSON = "PartObjaverse-Tiny_semantic.json"
CATEGORIES = (
    "Human-Shape",
    "Animals",
    "Daily-Used",
    "Buildings&&Outdoor",
    "Transportations",
    "Plants",
    "Food",
    "Electronics",
)  # the dataset's 8 categories (GObjaverse's), in the papers' order
ORACLE_PARTS = tuple(range(2, 20))


@dataclass
class Shape:
    uid: str
    category: str
    mesh_path: Path
    instance_path: Path
    semantic_path: Path | None
    part_names: list[str]


def list_shapes(root: Path) -> list[Shape]:
    """Every shape of the JSON, in its order; raises FileNotFoundError when the layout is wrong.
    A shape whose mesh or instance labels are missing is kept: evaluating it reports that."""
    root = Path(root)
    meta_path = root / SEMANTIC_JSON
    if not meta_path.is_file() or not (root / MESH_DIR).is_dir() or not (root / INSTANCE_DIR).is_dir():
        raise FileNotFoundError(
            f"{root}: not a PartObjaverse-Tiny folder (needs {SEMANTIC_JSON}, {MESH_DIR}/ and {INSTANCE_DIR}/)"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise FileNotFoundError(f"{meta_path}: not valid JSON ({exc})") from None
    shapes = []
    for category, members in meta.items():
        for uid, names in members.items():
            semantic = root / SEMANTIC_DIR / f"{uid}.npy"
            shapes.append(
                Shape(
                    uid,
                    category,
                    root / MESH_DIR / f"{uid}.glb",
                    root / INSTANCE_DIR / f"{uid}.npy",
                    semantic if semantic.is_file() else None,
                    list(names),
                )
            )
    if not shapes:
        raise FileNotFoundError(f"{meta_path}: lists no shapes")
    return shapes


def shape_files(shape: Shape) -> list[Path]:
    return [p for p in (shape.mesh_path, shape.instance_path, shape.semantic_path) if p is not None]


def _load_gt(path: Path, n_faces: int) -> np.ndarray:
    gt = np.load(path, allow_pickle=False).ravel()
    if gt.shape != (n_faces,):
        raise ValueError(
            f"{path.name}: {gt.size} labels for a mesh of {n_faces} faces "
            "(expected trimesh's concatenated-scene face order)"
        )
    return gt.astype(np.int64)


def evaluate_shape(engine, shape: Shape) -> dict:
    """Scores (in %) of one shape; a batch task (segparts.batch.evaluation)."""
    from ..meshio import load_mesh

    mesh = load_mesh(shape.mesh_path)
    instance = _load_gt(shape.instance_path, mesh.n_faces)
    semantic = _load_gt(shape.semantic_path, mesh.n_faces) if shape.semantic_path else None
    t0 = time.perf_counter()
    seg = engine.segment(mesh, SegmentParams(), no_progress, CancelToken())
    seconds = time.perf_counter() - t0
    auto = np.asarray(seg.labels)
    out = {
        "uid": shape.uid,
        "category": shape.category,
        "n_faces": int(mesh.n_faces),
        "gt_parts": int(np.unique(instance[instance >= 0]).size),
        "seconds": round(seconds, 4),
        "auto": {"miou": 100 * miou(auto, instance), "parts": int(np.unique(auto).size)},
    }
    best, best_k = out["auto"]["miou"], int(np.unique(auto).size)
    if seg.hierarchy is not None:
        best, seen = -1.0, set()
        for k in ORACLE_PARTS:
            cut = seg.hierarchy.cut(parts=k)
            n = int(cut.max()) + 1
            if n in seen:
                continue
            seen.add(n)
            score = 100 * miou(cut, instance)
            if score > best:
                best, best_k = score, n
    out["oracle"] = {"miou": best, "parts": best_k}
    if semantic is not None:
        out["semantic"] = {"auto_miou": 100 * miou(auto, semantic)}
    return out


def summarise(results: list[dict]) -> dict:
    """Per category (in CATEGORIES order, then any other) and overall means of the shape scores."""
    order = [c for c in CATEGORIES if any(r["category"] == c for r in results)]
    order += sorted({r["category"] for r in results} - set(order))
    out = {"categories": {}, "overall": {}, "overall_category_mean": {}}
    for which in ("auto", "oracle"):
        for cat in order:
            rows = [r for r in results if r["category"] == cat]
            entry = out["categories"].setdefault(cat, {"n_shapes": len(rows)})
            entry[which] = {
                "miou": float(np.mean([r[which]["miou"] for r in rows])),
                "parts": float(np.mean([r[which]["parts"] for r in rows])),
            }
        out["overall"][which] = {
            "miou": float(np.mean([r[which]["miou"] for r in results])),
            "parts": float(np.mean([r[which]["parts"] for r in results])),
        }
        out["overall_category_mean"][which] = {
            "miou": float(np.mean([out["categories"][c][which]["miou"] for c in order]))
        }
    out["overall"]["n_shapes"] = len(results)
    out["overall"]["seconds_per_shape"] = float(np.mean([r["seconds"] for r in results]))
    semantic = [r["semantic"]["auto_miou"] for r in results if "semantic" in r]
    if semantic:
        out["overall"]["semantic_auto_miou"] = float(np.mean(semantic))
    return out


def format_table(summary: dict) -> str:
    head = f"{'category':<20}{'n':>4} | {'auto mIoU':>9}{'parts':>7} | {'oracle mIoU':>11}{'parts':>7}"
    lines = [head, "-" * len(head)]

    def row(name, n, auto, oracle):
        parts = lambda d: f"{d['parts']:>7.1f}" if "parts" in d else " " * 7  # noqa: E731
        return f"{name:<20}{n:>4} | {auto['miou']:>9.1f}{parts(auto)} | {oracle['miou']:>11.1f}{parts(oracle)}"

    for cat, e in summary["categories"].items():
        lines.append(row(cat, e["n_shapes"], e["auto"], e["oracle"]))
    lines.append("-" * len(head))
    lines.append(
        row("ALL shapes", summary["overall"]["n_shapes"], summary["overall"]["auto"], summary["overall"]["oracle"])
    )
    lines.append(
        row(
            "ALL category mean",
            len(summary["categories"]),
            summary["overall_category_mean"]["auto"],
            summary["overall_category_mean"]["oracle"],
        )
    )
    return "\n".join(lines)


def evaluate_batch(
    root: Path,
    engine: str,
    device: str = "cpu",
    *,
    only: list[str] | None = None,
    out: str | None = None,
    workers: int = 0,
    ray: str | None = None,
    on_shape=None,
    max_retries: int = 2,
    progress: bool | None = None,
):
    """All shapes through the batch machinery. Returns (results, summary, report); shapes that
    failed (missing files, wrong label counts, engine errors) are in `report.failed`."""
    from ..batch.evaluation import run_evaluation, scored

    shapes = list_shapes(root)
    if only:
        shapes = [s for s in shapes if s.uid in set(only)]

    report = run_evaluation(
        shapes,
        key=lambda s: s.uid,
        files=lambda s: [p for p in shape_files(s) if p.is_file()],
        evaluate=evaluate_shape,
        engine=engine,
        device=device,
        out=out,
        workers=workers,
        ray=ray,
        on_scored=on_shape,
        max_retries=max_retries,
        progress=progress,
        desc="partobjaverse",
    )
    results = scored(report)
    return results, (summarise(results) if results else {}), report
