"""`segparts bench transport`: loopback cost of the wire, on a real server process.

Measures, with a 1M-face mesh:
- upload: `client.upload_mesh` of a mesh the server has not seen (client-side id, one tiny
  "do you have it" round trip, the arrays, server-side validation and content hash);
- labels: `client.segment` answered from the server's result cache (accepted + result carrying
  1M int32 labels, 1M leaf labels and the hierarchy), i.e. transport without engine work;
- round trip = upload + labels (median over the runs; target <= 150 ms);
- re-upload of a mesh the server holds, sent as is and with `check_first` (id hashed locally);
- RSS of the idle server process after start-up and `hello` (target <= 200 MB).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def register(sub):
    p = sub.add_parser("transport", help="loopback round trip of a 1M-face mesh and its labels; idle RSS")
    p.add_argument("--faces", type=int, default=1_000_000)
    p.add_argument("--runs", type=int, default=15)
    p.add_argument("--json", default=None, metavar="OUT", help="also write the figures as JSON")
    p.set_defaults(func=run)


def grid_mesh(n_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """A wavy grid with exactly n_faces triangles (n_faces even), built without Python loops."""
    cells = n_faces // 2
    rows = max(1, int(np.sqrt(cells / 2)))
    while cells % rows:
        rows -= 1
    cols = cells // rows
    y, x = np.mgrid[0 : rows + 1, 0 : cols + 1]
    vertices = np.column_stack([x.ravel(), y.ravel(), np.sin(x.ravel() * 0.1) * np.cos(y.ravel() * 0.1)]).astype(float)
    idx = np.arange((rows + 1) * (cols + 1)).reshape(rows + 1, cols + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()
    faces = np.stack([np.column_stack([a, b, c]), np.column_stack([a, c, d])], axis=1).reshape(-1, 3)
    return vertices, faces


def start_server(runtime_dir: str, extra: list[str] = ()) -> tuple[subprocess.Popen, int]:
    """`segparts serve --port 0` in a child process; returns it and its port (from the ready line)."""
    env = dict(os.environ, SEGPARTS_RUNTIME_DIR=runtime_dir)
    proc = subprocess.Popen(
        [sys.executable, "-m", "segparts", "serve", "--port", "0", "--log-level", "WARNING", *extra],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    line = proc.stdout.readline()
    if "listening on" not in line:
        proc.kill()
        raise RuntimeError(f"server did not start: {line!r}")
    port = int(line.split("listening on ", 1)[1].split()[0].rsplit(":", 1)[1])
    return proc, port


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def run(args) -> int:
    from ..client import BackendClient

    vertices, faces = grid_mesh(args.faces)
    with tempfile.TemporaryDirectory() as runtime:
        t0 = time.perf_counter()
        proc, port = start_server(runtime)
        client = BackendClient(port=port, timeout=60, token_file=Path(runtime) / f"token-{port}")
        client.hello()
        ready_s = time.perf_counter() - t0
        time.sleep(0.5)
        idle_rss = rss_mb(proc.pid)
        try:
            warm_id = client.upload_mesh(vertices, faces)
            first = client.segment(warm_id)  # engine work happens once, outside the timings
            n_labels = len(first.arrays["labels"])
            uploads, labels, reuploads, checks = [], [], [], []
            for i in range(args.runs):
                t = time.perf_counter()
                client.upload_mesh(vertices, faces)  # one the server holds: sent, validated, hashed
                reuploads.append(time.perf_counter() - t)
                t = time.perf_counter()
                client.upload_mesh(vertices, faces, check_first=True)  # hashed here, not sent
                checks.append(time.perf_counter() - t)
                fresh = vertices.copy()
                fresh[0, 2] += 1e-3 * (i + 1)  # a mesh the server has not seen: full upload
                t = time.perf_counter()
                client.upload_mesh(fresh, faces)
                uploads.append(time.perf_counter() - t)
                t = time.perf_counter()
                msg = client.segment(warm_id)
                labels.append(time.perf_counter() - t)
                assert msg.result["cached"] and len(msg.arrays["labels"]) == n_labels
            busy_rss = rss_mb(proc.pid)
            client.shutdown()
        finally:
            client.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
    totals = [u + lab for u, lab in zip(uploads, labels)]
    figures = {
        "faces": int(len(faces)),
        "vertices": int(len(vertices)),
        "runs": args.runs,
        "upload_ms_median": 1e3 * statistics.median(uploads),
        "labels_ms_median": 1e3 * statistics.median(labels),
        "round_trip_ms_median": 1e3 * statistics.median(totals),
        "round_trip_ms_min": 1e3 * min(totals),
        "reupload_ms_median": 1e3 * statistics.median(reuploads),
        "reupload_check_first_ms_median": 1e3 * statistics.median(checks),
        "idle_rss_mb": idle_rss,
        "rss_after_runs_mb": busy_rss,
        "start_to_hello_s": ready_s,
        "targets": {"round_trip_ms": 150, "idle_rss_mb": 200},
    }
    print(
        f"transport over loopback, {figures['faces']:,} faces / {figures['vertices']:,} vertices, "
        f"median of {args.runs} runs"
    )
    print(f"  upload (new mesh)          {figures['upload_ms_median']:8.1f} ms")
    print(f"  labels (cached result)     {figures['labels_ms_median']:8.1f} ms")
    print(
        f"  round trip                 {figures['round_trip_ms_median']:8.1f} ms   (target <= 150 ms; "
        f"best {figures['round_trip_ms_min']:.1f} ms)"
    )
    print(
        f"  re-upload, cached mesh     {figures['reupload_ms_median']:8.1f} ms   "
        f"(check_first: {figures['reupload_check_first_ms_median']:.1f} ms)"
    )
    print(
        f"  idle server RSS            {idle_rss:8.1f} MB   (target <= 200 MB; "
        f"{busy_rss:.0f} MB after the runs, meshes cached)"
    )
    print(f"  start-up to first hello    {ready_s:8.2f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
    return 0
