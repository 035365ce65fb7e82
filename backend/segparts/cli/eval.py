"""`segparts eval princeton DIR [--engine E] [--json OUT]`: the Princeton segmentation benchmark
protocol (../shared/reference/metrics.md) on a folder of `off/`, `seg/` (and `manifest.csv`)."""
from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from . import CliError


def register(sub):
    p = sub.add_parser("eval", help="score an engine on a benchmark")
    esub = p.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    pp = esub.add_parser("princeton", help="Princeton Mesh Segmentation Benchmark (1-RI, GCE, LCE, mIoU)")
    pp.add_argument("dir", metavar="DIR", help="benchmark folder with off/ and seg/ (e.g. ../shared/benchmarks/princeton)")
    pp.add_argument("--engine", default="geometric", help="engine to score (default geometric)")
    pp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    pp.add_argument("--json", metavar="OUT", default=None, help="also write per-model and summary figures as JSON")
    pp.add_argument("--models", nargs="*", default=None, metavar="ID", help="only these model ids")
    pp.add_argument("--quiet", action="store_true", help="no per-model lines")
    pp.add_argument("--reference", action="store_true",
                    help="also score people against each other, the best single person, and the best "
                         "grouping of the engine's leaves (the oracle's ceiling); slower")
    pp.set_defaults(func=run_princeton)


def run_princeton(args) -> int:
    from ..engines import create_engine
    from ..eval.princeton import evaluate, format_table, list_models

    root = Path(args.dir)
    try:
        list_models(root)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    try:
        engine = create_engine(args.engine, args.device)
    except KeyError as exc:
        raise CliError(exc.args[0]) from None
    availability = engine.availability()
    if not availability.available:
        raise CliError(f"engine {args.engine} is unavailable: {availability.message()}")

    def show(r):
        if not args.quiet:
            print(f"{r.model_id:>4} {r.category:<10} {r.n_faces:>6} faces {r.seconds:6.2f} s | auto "
                  f"1-RI {r.auto['rand_index_error']:.3f} mIoU {r.auto['miou']:.3f} ({r.auto_parts} parts) | "
                  f"oracle mIoU {r.oracle['miou']:.3f} ({r.oracle_parts} parts)", file=sys.stderr, flush=True)

    started = time.perf_counter()
    results, summary = evaluate(root, engine, show, only=args.models, reference=args.reference)
    elapsed = time.perf_counter() - started
    print(f"Princeton benchmark, engine {args.engine}, {len(results)} models (Spring excluded); "
          f"each prediction split into connected parts and scored against every human segmentation")
    print(format_table(summary))
    print(f"engine time per model: {summary['overall']['seconds_per_model']:.2f} s (mean); total {elapsed:.0f} s")
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"engine": args.engine, "dir": str(root), "summary": summary,
                                   "models": [asdict(r) for r in results]}, indent=1))
    return 0
