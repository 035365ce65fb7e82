#!/usr/bin/env python3
"""How much of the assemblies' automatic figure comes from choosing the geometric engine's level
on these very models: the engine itself re-run at other values of its automatic level.

    .venv/bin/python scripts/sweep_auto_cost.py ../shared/benchmarks/assemblies [--costs 0.3 0.5 ...] [--json out.json]

`eval assemblies` gives a held-out estimate by cutting each finished tree at other heights. That
moves only the cut: the units' inner trees were scaled to just under the engine's level and the
copies' nodes placed just over it, so the tree's heights are steep on both sides of the level by
construction. Here `segmenter.AUTO_COST` itself changes (the unit merges it admits, the scaling,
where the copies go), every model of both tracks is segmented again at each value, and each model
is scored at the value best on the other models (leave one model out; about 60 s per value).
The mean of each model's own best value is printed too: what a rule choosing the level per model
could reach at most.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from segparts.engines import create_engine
from segparts.engines.base import CancelToken, SegmentParams, no_progress
from segparts.engines.geometric import segmenter
from segparts.eval.assemblies import leave_one_out, list_models, load_model
from segparts.metrics import miou

COSTS = (0.1, 0.2, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.7, 0.85, 1.2, 2.0, 4.0)
TRACKS = ("geometry", "materials")


def sweep(root: Path, costs: tuple[float, ...]) -> dict[tuple[str, str], np.ndarray]:
    """Per (model, track), the automatic mIoU at each cost (each file read once)."""
    engine = create_engine("geometric")
    models = {(m.name, m.track): load_model(m) for track in TRACKS for m in list_models(root, track)}
    scores: dict[tuple[str, str], list[float]] = {key: [] for key in models}
    default = segmenter.AUTO_COST
    try:
        for cost in costs:
            segmenter.AUTO_COST = cost
            for key, (mesh, gt) in models.items():
                seg = engine.segment(mesh, SegmentParams(), no_progress, CancelToken())
                scores[key].append(float(miou(seg.labels, gt)))
            print(f"AUTO_COST {cost:g} done", file=sys.stderr, flush=True)
    finally:
        segmenter.AUTO_COST = default
    return {key: np.asarray(v) for key, v in scores.items()}


def per_model_best(rows: dict[str, np.ndarray]) -> float:
    """The mean of each model's best score over the levels: what no rule that picks one of these
    levels per model could beat."""
    return float(np.mean([v.max() for v in rows.values()]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, help="folder with manifest.json (../shared/benchmarks/assemblies)")
    parser.add_argument("--costs", type=float, nargs="+", default=COSTS)
    parser.add_argument("--json", type=Path, help="also write the scores and the estimate here")
    args = parser.parse_args()
    costs = tuple(args.costs)
    table = sweep(args.dir, costs)
    figures = leave_one_out(table)
    by_track = {track: {name: v for (name, t), v in table.items() if t == track} for track in TRACKS}
    oracle = {track: per_model_best(rows) for track, rows in by_track.items()}
    print("AUTO_COST      " + " ".join(f"{c:6g}" for c in costs))
    for track, rows in by_track.items():
        print(f"track: {track}")
        for name, v in rows.items():
            print(f"  {name[:12]:12s} " + " ".join(f"{x:6.3f}" for x in v) + f"   best at {costs[int(v.argmax())]:g}")
        print("  mean         " + " ".join(f"{x:6.3f}" for x in np.mean(list(rows.values()), axis=0)))
        entry = figures[track]
        print(
            f"  leave one model out: {entry['held_out']:.3f}; "
            f"best for all, AUTO_COST {costs[entry['best_index']]:g}: {entry['best_fixed']:.3f}; "
            f"best per model (an oracle over these levels): {oracle[track]:.3f}"
        )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "costs": list(costs),
                    "scores": {f"{name}.{track}": v.tolist() for (name, track), v in table.items()},
                    "summary": figures,
                    "per_model_best": oracle,
                },
                indent=1,
            )
        )


if __name__ == "__main__":
    main()
