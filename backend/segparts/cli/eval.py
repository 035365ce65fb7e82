"""`segparts eval princeton DIR [--engine E] [--json OUT]`: the Princeton segmentation benchmark
protocol (../shared/reference/metrics.md) on a folder of `off/`, `seg/` (and `manifest.csv`).
`segparts eval assemblies DIR [--track geometry|materials|both]`: artist assemblies (manifest.json
+ `<name>.labels.npy`), class-agnostic mIoU per model."""
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

    pa = esub.add_parser("assemblies", help="artist assemblies: class-agnostic mIoU against the artist's parts")
    pa.add_argument("dir", metavar="DIR", help="benchmark folder with manifest.json (e.g. ../shared/benchmarks/assemblies)")
    pa.add_argument("--engine", default="geometric", help="engine to score (default geometric)")
    pa.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    pa.add_argument("--track", choices=["geometry", "materials", "both"], default="both",
                    help="geometry: the .ply files (no materials); materials: the .glb files; both (default)")
    pa.add_argument("--json", metavar="OUT", default=None, help="also write per-model and summary figures as JSON")
    pa.add_argument("--models", nargs="*", default=None, metavar="NAME", help="only these models")
    pa.add_argument("--quiet", action="store_true", help="no per-model lines")
    pa.add_argument("--reference", action="store_true",
                    help="also score one part, welded connected components and one part per material")
    pa.set_defaults(func=run_assemblies)


def _engine(args):
    from ..engines import create_engine

    try:
        engine = create_engine(args.engine, args.device)
    except KeyError as exc:
        raise CliError(exc.args[0]) from None
    availability = engine.availability()
    if not availability.available:
        raise CliError(f"engine {args.engine} is unavailable: {availability.message()}")
    return engine


def _write_json(path, report: dict) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))


def run_princeton(args) -> int:
    from ..eval.princeton import evaluate, format_table, list_models

    root = Path(args.dir)
    try:
        list_models(root)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    engine = _engine(args)

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
        _write_json(args.json, {"engine": args.engine, "dir": str(root), "summary": summary,
                                "models": [asdict(r) for r in results]})
    return 0


def run_assemblies(args) -> int:
    from ..eval.assemblies import evaluate, format_table, list_models

    root = Path(args.dir)
    tracks = ("geometry", "materials") if args.track == "both" else (args.track,)
    try:
        for track in tracks:
            names = {m.name for m in list_models(root, track)}
            missing = set(args.models or ()) - names
            if missing:
                raise CliError(f"no model named {', '.join(sorted(missing))} in {root / 'manifest.json'}")
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None
    engine = _engine(args)

    def show(r):
        if not args.quiet:
            print(f"{r.track:<9} {r.name:<28} {r.n_faces:>7} faces {r.seconds:6.2f} s | auto mIoU {r.auto:.3f} "
                  f"({r.auto_parts} parts) | oracle {r.oracle:.3f} ({r.oracle_parts} parts) | artist {r.gt_parts}",
                  file=sys.stderr, flush=True)

    started = time.perf_counter()
    results, summary = evaluate(root, engine, tracks, show, only=args.models, reference=args.reference)
    print(f"Artist assemblies, engine {args.engine}: class-agnostic mIoU against the artist's parts "
          f"(automatic granularity, and the oracle level of the tree per model)")
    print(format_table(results, summary))
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        _write_json(args.json, {"engine": args.engine, "dir": str(root), "summary": summary,
                                "models": [asdict(r) for r in results]})
    return 0
