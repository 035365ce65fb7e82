"""`segparts batch INPUT... --out DIR`: segment many meshes, resumable, errors isolated, with a
summary; in worker processes (`--workers N`) or on a Ray cluster (`--ray [ADDRESS|auto]`).

Exit status: 0 when every mesh was segmented (or skipped as already done), 1 when any failed
(see DIR/errors.jsonl), 2 for a usage error. `add_parallel_flags` / `parallel_kwargs` give other
commands (the benchmark evaluations) the same `--workers` / `--ray` flags.
"""

from __future__ import annotations

import argparse
import sys

from . import CliError


def add_parallel_flags(p) -> None:
    p.add_argument(
        "--workers",
        type=int,
        default=0,
        metavar="N",
        help="worker processes on this machine (each loads the engine once; default: this process); "
        "with --ray and no running cluster: the CPUs of the local Ray instance",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="local",
        default=None,
        metavar="ADDRESS",
        help="run on Ray: no value = the cluster `ray start` runs on this machine or a new local one; "
        "'auto' = the running cluster (RAY_ADDRESS); or a cluster address such as ray://head:10001",
    )
    p.add_argument(
        "--retries",
        type=int,
        default=2,
        metavar="N",
        help="re-run a task whose worker process died up to N times (default 2)",
    )


def parallel_kwargs(args) -> dict:
    if args.workers < 0:
        raise CliError("--workers must be 0 or more")
    if args.ray is not None and args.ray not in ("local", "auto") and ":" not in args.ray:
        # `--ray meshes/ --out x`: argparse took the first INPUT for the address
        raise CliError(
            f"--ray ADDRESS must be auto, HOST:PORT or ray://HOST:PORT (got {args.ray!r}); "
            "put the INPUTs before a bare --ray"
        )
    if args.ray is not None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise CliError("--ray needs the ray package: pip install 'segparts[batch]' (or pip install ray)") from None
    return {"workers": args.workers, "ray": args.ray, "max_retries": max(0, args.retries)}


def register(sub):
    p = sub.add_parser("batch", help="segment many meshes (resumable; worker processes or a Ray cluster)")
    p.add_argument(
        "inputs",
        nargs="*",
        metavar="INPUT",  # "*": a missing INPUT gets the error below
        help="mesh files, folders (searched recursively), glob patterns, or a manifest "
        "(.csv/.jsonl with a 'path' column; optional id, engine, parts, scale, options)",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (a local path or an fsspec URL)")
    p.add_argument("--engine", default="geometric", help="geometric (default), sampart3d or geosam2")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--parts", type=int, default=None, help="number of parts")
    g.add_argument("--scale", type=float, default=None, help="granularity in [0, 1] (0 = finest)")
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="engine option (value parsed as JSON when possible); repeatable",
    )
    p.add_argument(
        "--format",
        default="npy",
        metavar="LIST",
        help="comma-separated outputs per mesh: npy (labels, always), ply, glb (coloured mesh), "
        "json (hierarchy), png (contact sheet); default npy",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--force", action="store_true", help="redo meshes that are already done")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar with rate and ETA (default: when stderr is a terminal)",
    )
    add_parallel_flags(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from ..batch.inputs import InputError, collect
    from ..batch.segment import FORMATS, SegmentSettings, segment_batch
    from ..engines import ENGINES
    from ..server import detect_device
    from .segment import _parse_options

    formats = tuple(dict.fromkeys(["npy", *[f.strip().lower() for f in args.format.split(",") if f.strip()]]))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise CliError(f"unknown --format {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    if args.engine not in ENGINES:
        raise CliError(f"unknown engine {args.engine!r}; choose one of {', '.join(ENGINES)}")
    if args.parts is not None and args.parts < 1:
        raise CliError("--parts must be at least 1")
    if args.scale is not None and not 0.0 <= args.scale <= 1.0:
        raise CliError("--scale must be in [0, 1]")
    parallel = parallel_kwargs(args)
    if not args.inputs:
        raise CliError("no INPUT given")
    try:
        meshes = collect(args.inputs)
    except InputError as exc:
        raise CliError(str(exc)) from None
    settings = SegmentSettings(args.engine, args.parts, args.scale, _parse_options(args.option))
    device = "cpu" if args.engine == "geometric" else detect_device(args.device)
    if device == "cuda" and parallel["workers"] > 1 and parallel["ray"] is None:
        # every local worker process would hold its own copy of the models on the same GPU
        print(
            "segparts batch: a learned engine on this machine's GPU runs in one long-lived worker "
            "(models loaded once); --workers ignored. Several GPUs: use --ray (one actor per GPU).",
            file=sys.stderr,
        )
        parallel["workers"] = 0
    report = segment_batch(
        meshes,
        settings,
        args.out,
        formats=formats,
        device=device,
        resume=not args.force,
        progress=args.progress,
        **parallel,
    )
    counts = report.counts
    if report.interrupted:
        print(
            f"segparts batch: interrupted after {counts['ok']} mesh(es); rerun the same command to finish "
            f"(finished meshes are skipped)",
            file=sys.stderr,
        )
        return 130
    print(
        json.dumps(
            {
                "out": args.out,
                "meshes": len(report.results),
                **counts,
                "mode": report.mode,
                "seconds": round(report.wall_seconds, 2),
                "max_loads_per_worker": max((w["loads"] for w in report.workers.values()), default=0),
            }
        )
    )
    if counts["error"]:
        print(f"segparts batch: {counts['error']} mesh(es) failed; see {args.out}/errors.jsonl", file=sys.stderr)
        return 1
    return 0
