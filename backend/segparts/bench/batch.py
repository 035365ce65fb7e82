"""`segparts bench batch`: `segparts batch` over the Princeton dev meshes, geometric engine:
wall time in this process vs `--workers N` vs `--ray --workers N` (a local Ray instance with N
CPUs), Ray's start-up and per-mesh overhead, peak memory and engine loads per worker, and a
resume check: a `--workers N` run is killed (SIGKILL, driver and workers) once half the meshes
are done, then rerun; the rerun must skip every mesh finished before the kill and rewrite none.

Every run is a fresh `segparts batch` process writing to its own folder; figures come from the
summary.json each run writes. One run per mode (these are long): run it on a quiet machine.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "benchmarks" / "princeton"


def register(sub):
    p = sub.add_parser("batch", help="segparts batch: sequential vs worker processes vs Ray; resume after a kill")
    p.add_argument("--dir", default=str(DEFAULT_DIR / "off"), help="folder of meshes (default: Princeton dev sample)")
    p.add_argument("--workers", type=int, default=2, help="worker processes / Ray CPUs (default 2)")
    p.add_argument(
        "--modes",
        nargs="+",
        default=["sequential", "workers", "ray", "resume"],
        choices=["sequential", "workers", "ray", "resume"],
    )
    p.add_argument("--json", default=None, metavar="OUT", help="also write the figures as JSON")
    p.set_defaults(func=run)


def _batch(src: str, out: Path, flags: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "segparts", "batch", src, "--out", str(out), "--no-progress", *flags]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _figures(out: Path, wall: float) -> dict:
    summary = json.loads((out / "summary.json").read_text())
    ran = [m for m in summary["meshes"] if m["status"] == "ok"]
    busy = sum(float(m["seconds_total"]) for m in ran)
    workers = summary["workers"]
    return {
        "wall_s": round(wall, 2),
        "batch_wall_s": summary["wall_seconds"],
        "startup_s": summary["startup_seconds"],
        "meshes": len(ran),
        "failed": summary["counts"]["error"],
        "task_seconds_sum": round(busy, 2),
        "n_workers": len(workers),
        "max_loads_per_worker": summary["max_loads_per_worker"],
        "peak_rss_mb_per_worker": sorted(w["peak_rss_mb"] for w in workers.values()),
        "mode": summary["mode"],
    }


def run(args) -> int:
    src = args.dir
    n_total = sum(1 for p in Path(src).rglob("*") if p.suffix.lower() in (".off", ".obj", ".ply", ".stl", ".glb"))
    rows: dict[str, dict] = {}
    flags = {
        "sequential": [],
        "workers": ["--workers", str(args.workers)],
        "ray": ["--ray", "--workers", str(args.workers)],
    }
    with tempfile.TemporaryDirectory(prefix="segparts-bench-batch-") as tmp:
        for mode in [m for m in args.modes if m != "resume"]:
            out = Path(tmp) / mode
            t0 = time.perf_counter()
            proc = _batch(src, out, flags[mode])
            _, err = proc.communicate()
            if proc.returncode not in (0, 1):
                print(f"{mode}: segparts batch failed ({proc.returncode}): {err[-2000:]}", file=sys.stderr)
                return 1
            rows[mode] = _figures(out, time.perf_counter() - t0)
            print(f"{mode:<10} {json.dumps(rows[mode])}", flush=True)
        if "resume" in args.modes:
            rows["resume"] = _resume(src, Path(tmp) / "resume", args.workers, n_total)
            print(f"{'resume':<10} {json.dumps(rows['resume'])}", flush=True)
    _print_table(rows, n_total, args.workers)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"dir": src, "workers": args.workers, "rows": rows}, indent=1))
    return 0


def _resume(src: str, out: Path, workers: int, n_total: int) -> dict:
    flags = ["--workers", str(workers)]
    proc = _batch(src, out, flags)
    while proc.poll() is None and len(list(out.glob("*.record.json"))) < n_total // 2:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and its worker processes, mid-batch
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.record.json")}
    t0 = time.perf_counter()
    again = _batch(src, out, flags)
    again.communicate()
    figures = _figures(out, time.perf_counter() - t0)
    summary = json.loads((out / "summary.json").read_text())
    skipped = {m["key"] + ".record.json" for m in summary["meshes"] if m["status"] == "skipped"}
    rewritten = [n for n, t in before.items() if (out / n).stat().st_mtime_ns != t]
    return {
        "finished_before_kill": len(before),
        "skipped_on_rerun": len(skipped & set(before)),
        "redone_on_rerun": summary["counts"]["ok"],
        "rewritten_records": len(rewritten),
        "all_done": summary["counts"]["ok"] + summary["counts"]["skipped"] == n_total,
        "rerun_wall_s": figures["wall_s"],
    }


def _print_table(rows: dict, n_total: int, workers: int) -> None:
    print(f"\nsegparts batch, geometric engine, {n_total} meshes, {workers} workers (one run each)")
    print(f"{'mode':<11}{'wall s':>8}{'start-up s':>11}{'mesh/s':>8}{'workers':>8}{'loads':>6}  peak RSS MB per worker")
    for mode in ("sequential", "workers", "ray"):
        if mode in rows:
            r = rows[mode]
            print(
                f"{mode:<11}{r['wall_s']:>8.1f}{r['startup_s']:>11.1f}{r['meshes'] / r['wall_s']:>8.2f}"
                f"{r['n_workers']:>8}{r['max_loads_per_worker']:>6}  {r['peak_rss_mb_per_worker']}"
            )
    if "ray" in rows and "workers" in rows:
        ray, local = rows["ray"], rows["workers"]
        extra = (ray["batch_wall_s"] - ray["startup_s"] - local["batch_wall_s"]) / max(ray["meshes"], 1)
        ideal = ray["batch_wall_s"] - ray["startup_s"] - ray["task_seconds_sum"] / max(ray["n_workers"], 1)
        print(
            f"Ray vs local processes, start-up excluded: {extra * 1000:+.0f} ms per mesh; Ray wall beyond "
            f"(task seconds / workers): {ideal / max(ray['meshes'], 1) * 1000:.0f} ms per mesh; "
            f"start-up {ray['startup_s']:.1f} s"
        )
    if "resume" in rows:
        r = rows["resume"]
        print(
            f"resume: killed after {r['finished_before_kill']} of {n_total}; rerun skipped {r['skipped_on_rerun']}, "
            f"redid {r['redone_on_rerun']}, rewrote {r['rewritten_records']} finished records; "
            f"all done: {r['all_done']}"
        )
