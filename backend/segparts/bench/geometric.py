"""`segparts bench geometric`: time and peak memory of the geometric engine from ~10k to ~1M faces.

Meshes are Princeton sample meshes subdivided (each triangle into 4, geometry unchanged) to the
nearest size to each target. Every size runs in a fresh subprocess so its peak RSS (ru_maxrss,
interpreter and libraries included) belongs to that size alone. Loading is excluded from the
time. Also timed: pick (a face click at the automatic granularity; median of 200 clicks) and a
re-cut of the tree at another granularity. Prints a table and saves a PNG plot of time vs faces.

Then a dense soup: N separate triangles overlapping in a unit cube (every triangle a piece that
touches hundreds of others), the worst case for grouping pieces; its time and the longest wait
between two cancel checks of the engine (how long a cancel can take to be answered).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

DEFAULT_TARGETS = (10_000, 30_000, 100_000, 300_000, 1_000_000)
DEFAULT_SOUPS = (500, 1_000, 2_000, 10_000)
DEFAULT_DIR = Path(__file__).resolve().parents[3].parent / "shared" / "benchmarks" / "princeton"


def register(sub):
    p = sub.add_parser("geometric", help="geometric engine: time and memory vs mesh size, pick latency")
    p.add_argument("--dir", default=str(DEFAULT_DIR), help="Princeton sample folder (meshes to subdivide)")
    p.add_argument("--targets", type=int, nargs="*", default=list(DEFAULT_TARGETS), metavar="FACES")
    p.add_argument("--repeats", type=int, default=3, help="runs per size (median reported)")
    p.add_argument("--plot", default="bench_out/geometric.png", help="PNG plot of time vs faces")
    p.add_argument(
        "--soups",
        type=int,
        nargs="*",
        default=list(DEFAULT_SOUPS),
        metavar="TRIANGLES",
        help="triangle soups to time (none: --soups with no value)",
    )
    p.add_argument("--json", default=None, metavar="OUT", help="also write the rows as JSON")
    p.set_defaults(func=run)


def triangle_soup(n: int, seed: int = 0):
    """n separate triangles (edges ~0.3) at random places and orientations in the unit cube."""
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.random((n, 1, 3))
    vertices = (centres + 0.15 * rng.standard_normal((n, 3, 3))).reshape(-1, 3)
    return vertices, np.arange(3 * n).reshape(n, 3)


def soup_worker(n: int) -> dict:
    """Runs in a subprocess: segment a soup of n triangles; time it and the cancel-check gaps."""
    import resource

    from ..engines.base import CancelToken, SegmentParams, no_progress
    from ..engines.geometric import GeometricEngine
    from ..mesh import validate_mesh

    class TimedCancel(CancelToken):
        """A cancel token that is never cancelled and records when the engine asks."""

        def __init__(self):
            super().__init__()
            self.asked = [time.perf_counter()]

        def check(self):
            self.asked.append(time.perf_counter())
            super().check()

    mesh = validate_mesh(*triangle_soup(n))
    token = TimedCancel()
    t0 = time.perf_counter()
    seg = GeometricEngine().segment(mesh, SegmentParams(), no_progress, token)
    seconds = time.perf_counter() - t0
    token.asked.append(time.perf_counter())
    gaps = [b - a for a, b in zip(token.asked, token.asked[1:])]
    return {
        "triangles": n,
        "seconds": seconds,
        "parts": int(seg.labels.max()) + 1,
        "max_cancel_gap_s": max(gaps),
        "stages": seg.info.get("times", {}),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def choose_base(root: Path, target: int) -> tuple[Path, int]:
    """The sample mesh and number of 1->4 subdivisions whose face count is closest to target."""
    import csv

    with open(root / "manifest.csv", newline="") as fh:
        rows = [(int(r["n_faces"]), r["model_id"]) for r in csv.DictReader(fh) if r["category"] != "Spring"]
    best = None
    for n_faces, mid in rows:
        for k in range(8):
            err = abs(n_faces * 4**k - target) / target
            if best is None or err < best[0]:
                best = (err, mid, k)
    return root / "off" / f"{best[1]}.off", best[2]


def worker(path: str, levels: int, repeats: int) -> dict:
    """Runs in a subprocess: build the subdivided mesh, time segment, pick and re-cut."""
    import resource

    import numpy as np
    import trimesh

    from ..engines.base import CancelToken, Click, PickRequest, SegmentParams, no_progress
    from ..engines.geometric import GeometricEngine
    from ..mesh import validate_mesh
    from ..meshio import load_mesh

    mesh = load_mesh(path)
    v, f = mesh.vertices, mesh.faces
    for _ in range(levels):
        v, f = trimesh.remesh.subdivide(v, f)
    mesh = validate_mesh(v, f)
    engine = GeometricEngine()
    times, seg = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        seg = engine.segment(mesh, SegmentParams(), no_progress, CancelToken())
        times.append(time.perf_counter() - t0)
    rng = np.random.default_rng(0)
    picks = []
    for face in rng.integers(0, mesh.n_faces, 200):
        t0 = time.perf_counter()
        engine.pick(mesh, seg, PickRequest([Click(face=int(face))]), CancelToken())
        picks.append(time.perf_counter() - t0)
    centroids = mesh.vertices[mesh.faces].mean(axis=1)
    point_picks = []
    for face in rng.integers(0, mesh.n_faces, 201):  # the first builds the engine's k-d tree
        t0 = time.perf_counter()
        engine.pick(mesh, seg, PickRequest([Click(point=tuple(centroids[face]))]), CancelToken())
        point_picks.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    seg.hierarchy.cut(parts=5)
    recut = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "faces": mesh.n_faces,
        "seconds": statistics.median(times),
        "runs": times,
        "stages": seg.info.get("times", {}),
        "parts": int(seg.info.get("n_parts", 0)),
        "pick_ms": 1e3 * statistics.median(picks),
        "pick_max_ms": 1e3 * max(picks),
        "pick_point_ms": 1e3 * statistics.median(point_picks[1:]),
        "first_point_pick_ms": 1e3 * point_picks[0],
        "recut_ms": 1e3 * recut,
        "peak_rss_mb": peak_kib / 1024,
    }


def run(args) -> int:
    from ..cli import CliError

    root = Path(args.dir)
    if not (root / "manifest.csv").is_file():
        raise CliError(f"{root}: Princeton sample not found (needs manifest.csv and off/)")
    rows = []
    print(
        f"{'faces':>9} {'base':>8} {'time s':>8} {'peak MB':>8} {'pick ms':>8} {'point ms':>9} {'recut ms':>9}  stages (s)"
    )
    for target in args.targets:
        path, levels = choose_base(root, target)
        code = (
            "import json,sys; from segparts.bench.geometric import worker; "
            f"print(json.dumps(worker({str(path)!r}, {levels}, {args.repeats})))"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if proc.returncode != 0:
            raise CliError(f"{target} faces: worker failed: {proc.stderr.strip().splitlines()[-1:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        row.update(base=path.stem, subdivisions=levels)
        rows.append(row)
        stages = " ".join(f"{k}={v:.2f}" for k, v in row["stages"].items())
        print(
            f"{row['faces']:>9} {path.stem + 'x' + str(4**levels):>8} {row['seconds']:>8.2f} "
            f"{row['peak_rss_mb']:>8.0f} {row['pick_ms']:>8.2f} {row['pick_point_ms']:>9.2f} {row['recut_ms']:>9.1f}  {stages}",
            flush=True,
        )
    print(
        f"time: median of {args.repeats} runs, loading excluded; peak MB: ru_maxrss of the worker process "
        "(Python, numpy, scipy, embree included); pick / point: median of 200 face / 3D-point clicks at automatic "
        "granularity (the first point click, which builds a k-d tree, is in the JSON); recut: cut(parts=5)"
    )
    soups = []
    if args.soups:
        print(f"{'soup':>9} {'time s':>8} {'peak MB':>8} {'parts':>6} {'cancel s':>9}  stages (s)")
    for n in args.soups:
        code = (
            f"import json; from segparts.bench.geometric import soup_worker; print(json.dumps(soup_worker({int(n)})))"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        if proc.returncode != 0:
            raise CliError(f"soup of {n}: worker failed: {proc.stderr.strip().splitlines()[-1:]}")
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        soups.append(row)
        stages = " ".join(f"{k}={v:.2f}" for k, v in row["stages"].items())
        print(
            f"{n:>9} {row['seconds']:>8.2f} {row['peak_rss_mb']:>8.0f} {row['parts']:>6} "
            f"{row['max_cancel_gap_s']:>9.3f}  {stages}",
            flush=True,
        )
    if soups:
        print(
            "soup: N separate overlapping triangles in a unit cube; cancel s: the longest wait between two "
            "cancel checks of the engine"
        )
    if args.json:
        Path(args.json).write_text(json.dumps({"meshes": rows, "soups": soups}, indent=1))
    if rows:
        plot(rows, Path(args.plot))
        print(f"plot: {args.plot}")
    return 0


def plot(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    faces = [r["faces"] for r in rows]
    secs = [r["seconds"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.loglog(faces, secs, "o-", label="geometric engine (segment)")
    ref = secs[0] / (faces[0] * __import__("math").log(faces[0]))
    ax.loglog(faces, [ref * n * __import__("math").log(n) for n in faces], "--", color="grey", label="n log n")
    ax.set_xlabel("faces")
    ax.set_ylabel("seconds")
    ax.set_title("segparts bench geometric")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
