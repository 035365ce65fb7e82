"""`segparts eval princeton DIR [--engine E] [--json OUT]`: the Princeton segmentation benchmark
protocol (../shared/reference/metrics.md) on a folder of `off/`, `seg/` (and `manifest.csv`).
`segparts eval assemblies DIR [--track geometry|materials|both]`: artist assemblies (manifest.json
+ `<name>.labels.npy`), class-agnostic mIoU per model at the automatic and oracle level."""

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
    pp.add_argument(
        "dir", metavar="DIR", help="benchmark folder with off/ and seg/ (e.g. ../shared/benchmarks/princeton)"
    )
    pp.add_argument("--engine", default="geometric", help="engine to score (default geometric)")
    pp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    pp.add_argument("--json", metavar="OUT", default=None, help="also write per-model and summary figures as JSON")
    pp.add_argument("--models", nargs="*", default=None, metavar="ID", help="only these model ids")
    pp.add_argument("--quiet", action="store_true", help="no per-model lines")
    pp.add_argument(
        "--reference",
        action="store_true",
        help="also score people against each other, the best single person, and the best "
        "grouping of the engine's leaves (the oracle's ceiling); slower",
    )
    _add_batch_flags(pp)
    pp.set_defaults(func=run_princeton)
    _register_partobjaverse(esub)
    _register_assemblies(esub)


def run_princeton(args) -> int:
    from ..eval.princeton import evaluate_batch, format_table, list_models

    root = Path(args.dir)
    try:
        list_models(root)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    _available_engine(args)  # fail fast here, before any worker starts

    def show(r):
        if not args.quiet:
            print(
                f"{r.model_id:>4} {r.category:<10} {r.n_faces:>6} faces {r.seconds:6.2f} s | auto "
                f"1-RI {r.auto['rand_index_error']:.3f} mIoU {r.auto['miou']:.3f} ({r.auto_parts} parts) | "
                f"oracle mIoU {r.oracle['miou']:.3f} ({r.oracle_parts} parts)",
                file=sys.stderr,
                flush=True,
            )

    started = time.perf_counter()
    results, summary, report = evaluate_batch(
        root, args.engine, args.device, only=args.models, reference=args.reference, on_model=show, **_batch_kwargs(args)
    )
    elapsed = time.perf_counter() - started
    _require_scored(results, report, "model")
    print(
        f"Princeton benchmark, engine {args.engine}, {len(results)} models (Spring excluded); "
        f"each prediction split into connected parts and scored against every human segmentation"
    )
    print(format_table(summary))
    print(f"engine time per model: {summary['overall']['seconds_per_model']:.2f} s (mean); total {elapsed:.0f} s")
    _write_json(args, root, summary, "models", [asdict(r) for r in results], report)
    return _report_failures(report)


# ---- the batch machinery (segparts.batch): --workers, --ray, --out records, failures ----------
def _available_engine(args):
    """The engine named by --engine on --device, or a one-line error saying why it can't run."""
    from ..engines import create_engine

    try:
        engine = create_engine(args.engine, args.device)
    except KeyError as exc:
        raise CliError(exc.args[0]) from None
    availability = engine.availability()
    if not availability.available:
        raise CliError(f"engine {args.engine} is unavailable: {availability.message()}")
    return engine


def _add_batch_flags(p) -> None:
    from .batch import add_parallel_flags

    p.add_argument(
        "--out",
        metavar="DIR",
        default=None,
        help="keep one record per item here; a rerun skips the items already scored",
    )
    add_parallel_flags(p)


def _batch_kwargs(args) -> dict:
    from .batch import parallel_kwargs

    return {"out": args.out, **parallel_kwargs(args)}


def _batch_facts(report) -> dict:
    return {
        "batch": {
            "mode": report.mode,
            "wall_seconds": round(report.wall_seconds, 3),
            "counts": report.counts,
            "workers": report.workers,
            "failed": [{"key": r["key"], **r["error"]} for r in report.failed],
        }
    }


def _require_scored(results: list, report, what: str) -> None:
    if not results:
        raise CliError(f"no {what} could be scored; first error: {report.failed[0]['error']['message']}")


def _write_json(args, root: Path, summary: dict, items_key: str, items: list, report) -> None:
    """--json OUT: the engine, the folder, the summary, every item and the batch's facts."""
    if not args.json:
        return
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    report_json = {"engine": args.engine, "dir": str(root), "summary": summary, items_key: items}
    out.write_text(json.dumps({**report_json, **_batch_facts(report)}, indent=1))


def _report_failures(report) -> int:
    for r in report.failed:
        print(f"failed: {r['key']}: {r['error']['code']}: {r['error']['message']}", file=sys.stderr)
    if report.interrupted:
        print(
            f"interrupted: the figures cover the {len(report.results)} item(s) finished before it "
            "(with --out DIR a rerun resumes)",
            file=sys.stderr,
        )
        return 130
    return 1 if report.failed else 0


def _register_partobjaverse(esub) -> None:
    pp = esub.add_parser("partobjaverse", help="PartObjaverse-Tiny in its published layout (class-agnostic mIoU)")
    pp.add_argument(
        "dir",
        metavar="DIR",
        help="folder with PartObjaverse-Tiny_mesh/, PartObjaverse-Tiny_instance_gt/ "
        "and PartObjaverse-Tiny_semantic.json",
    )
    pp.add_argument("--engine", default="geometric", help="engine to score (default geometric)")
    pp.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    pp.add_argument("--json", metavar="OUT", default=None, help="also write per-shape and summary figures as JSON")
    pp.add_argument("--uids", nargs="*", default=None, metavar="UID", help="only these shapes")
    pp.add_argument("--quiet", action="store_true", help="no per-shape lines")
    _add_batch_flags(pp)
    pp.set_defaults(func=run_partobjaverse)


def run_partobjaverse(args) -> int:
    from ..engines import ENGINES, create_engine
    from ..eval.partobjaverse import evaluate_batch, format_table, list_shapes
    from ..server import detect_device

    root = Path(args.dir)
    try:
        list_shapes(root)
    except FileNotFoundError as exc:
        raise CliError(str(exc)) from None
    if args.engine not in ENGINES:
        raise CliError(f"unknown engine {args.engine!r}; choose one of {', '.join(ENGINES)}")
    device = "cpu" if args.engine == "geometric" else detect_device(args.device)
    availability = create_engine(args.engine, device).availability()
    if not availability.available:
        raise CliError(f"engine {args.engine} is unavailable: {availability.message()}")

    def show(r):
        if not args.quiet:
            print(
                f"{r['uid'][:12]:<12} {r['category']:<18} {r['n_faces']:>7} faces {r['seconds']:7.2f} s | "
                f"auto mIoU {r['auto']['miou']:5.1f} ({r['auto']['parts']} parts) | oracle mIoU "
                f"{r['oracle']['miou']:5.1f} ({r['oracle']['parts']} parts)",
                file=sys.stderr,
                flush=True,
            )

    results, summary, report = evaluate_batch(
        root, args.engine, device, only=args.uids, on_shape=show, **_batch_kwargs(args)
    )
    _require_scored(results, report, "shape")
    print(
        f"PartObjaverse-Tiny, engine {args.engine}, {len(results)} shapes: class-agnostic part mIoU (%) against "
        f"the instance labels; oracle = best cut into 2..19 parts per shape"
    )
    print(format_table(summary))
    print(
        f"engine time per shape: {summary['overall']['seconds_per_shape']:.2f} s (mean); "
        f"total {report.wall_seconds:.0f} s ({report.mode})"
    )
    _write_json(args, root, summary, "shapes", results, report)
    return _report_failures(report)


def _register_assemblies(esub) -> None:
    pa = esub.add_parser("assemblies", help="artist assemblies: class-agnostic mIoU against the artist's parts")
    pa.add_argument("dir", metavar="DIR", help="folder with manifest.json (e.g. ../shared/benchmarks/assemblies)")
    pa.add_argument("--engine", default="geometric", help="engine to score (default geometric)")
    pa.add_argument("--device", choices=["auto", "cpu", "cuda"], default="cpu")
    pa.add_argument(
        "--track",
        choices=["geometry", "materials", "both"],
        default="both",
        help="geometry: the .ply files (no materials); materials: the .glb files; both (default)",
    )
    pa.add_argument("--json", metavar="OUT", default=None, help="also write per-model and summary figures as JSON")
    pa.add_argument("--models", nargs="*", default=None, metavar="NAME", help="only these models")
    pa.add_argument("--quiet", action="store_true", help="no per-model lines")
    pa.add_argument(
        "--reference",
        action="store_true",
        help="also score one part, welded connected components and one part per material",
    )
    pa.add_argument(
        "--sheets",
        metavar="DIR",
        default=None,
        help="write a contact sheet per model and track: the artist's parts above, ours below",
    )
    _add_batch_flags(pa)
    pa.set_defaults(func=run_assemblies)


def run_assemblies(args) -> int:
    from ..eval.assemblies import evaluate_batch, format_table, list_models

    root = Path(args.dir)
    tracks = ("geometry", "materials") if args.track == "both" else (args.track,)
    try:
        for track in tracks:
            missing = set(args.models or ()) - {m.name for m in list_models(root, track)}
            if missing:
                raise CliError(f"no model named {', '.join(sorted(missing))} in {root / 'manifest.json'}")
    except (FileNotFoundError, ValueError) as exc:
        raise CliError(str(exc)) from None
    _available_engine(args)  # fail fast here, before any worker starts

    def show(r):
        if not args.quiet:
            print(
                f"{r.track:<9} {r.name:<28} {r.n_faces:>7} faces {r.seconds:6.2f} s | auto mIoU {r.auto:.3f} "
                f"({r.auto_parts} parts) | oracle {r.oracle:.3f} ({r.oracle_parts} parts) | artist {r.gt_parts}",
                file=sys.stderr,
                flush=True,
            )

    started = time.perf_counter()
    sheets = str(Path(args.sheets).resolve()) if args.sheets else None
    results, summary, report = evaluate_batch(
        root,
        args.engine,
        args.device,
        tracks,
        only=args.models,
        reference=args.reference,
        sheets=sheets,
        on_model=show,
        **_batch_kwargs(args),
    )
    _require_scored(results, report, "model")
    print(
        f"Artist assemblies, engine {args.engine}: class-agnostic mIoU against the artist's parts "
        f"(automatic granularity, and the oracle level of the tree per model)"
    )
    print(format_table(results, summary))
    print(f"total {time.perf_counter() - started:.0f} s")
    _write_json(args, root, summary, "models", [asdict(r) for r in results], report)
    return _report_failures(report)
