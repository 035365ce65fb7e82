"""`segparts bench hardening`: the figures of issue 12 on a real `segparts serve` process.

0. pre-authentication memory: token-less messages with big array frames, back to back; their
   answers and the server's peak RSS;
1. malformed messages: the structured fuzzer of segparts.bench.fuzzing (every field of every op
   made wrong, with the right token) plus raw garbage; messages tried per op and the answers;
   server RSS before and after;
2. memory: N rounds of upload + segment of distinct meshes with `--cache-mb` (default 300 rounds,
   64 MB); server RSS after, against the bound idle + cache + one job;
3. cancel latency per stage of the geometric engine: a job is cancelled as soon as it reports a
   stage; time from the cancel request to the job's `cancelled` answer (median over runs).
Needs hypothesis and psutil (the test/bench extras).
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

MB = 2**20


def register(sub):
    p = sub.add_parser(
        "hardening", help="malformed-message tally, RSS after abuse and after many rounds, cancel latency per stage"
    )
    p.add_argument("--messages", type=int, default=10_000, help="malformed messages to send (default 10,000)")
    p.add_argument("--garbage-share", type=float, default=0.2, help="share of raw garbage (default 0.2)")
    p.add_argument("--rounds", type=int, default=300, help="upload + segment rounds (default 300)")
    p.add_argument("--round-faces", type=int, default=20_000, help="faces of each round's mesh (default 20,000)")
    p.add_argument("--cache-mb", type=float, default=64)
    p.add_argument("--cancel-faces", type=int, default=400_000, help="mesh for the cancel latencies")
    p.add_argument("--cancel-runs", type=int, default=3)
    p.add_argument(
        "--preauth-messages",
        type=int,
        default=8,
        help="token-less messages of two 60 MB frames sent at once (default 8)",
    )
    p.add_argument(
        "--sections",
        default="preauth,malformed,rounds,cancel",
        help="comma-separated subset of preauth,malformed,rounds,cancel (default: all)",
    )
    p.add_argument("--json", default=None, metavar="OUT", help="also write the figures as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    sections = set(args.sections.split(","))
    figures: dict = {}
    if "preauth" in sections:
        with _server(args.cache_mb, ["--max-message-mb", "128"]) as (client, port, server):
            figures["preauth"] = token_less_arrays(port, server, args.preauth_messages)
    if "malformed" in sections:
        for name in ("SEGPARTS_VLM_URL", "SEGPARTS_VLM_MODEL", "SEGPARTS_VLM_API_KEY"):
            os.environ.pop(name, None)  # the fuzzed name_parts must stay refused: nothing goes out
        with _server(args.cache_mb) as (client, port, server):
            idle = _warm_rss(client, server)
            figures["malformed"] = malformed_messages(client, port, args.messages, args.garbage_share)
            figures["malformed"].update(
                idle_rss_mb=round(idle / MB, 1), rss_after_mb=round(server.memory_info().rss / MB, 1)
            )
    if "rounds" in sections:
        with _server(args.cache_mb) as (client, port, server):
            idle = _warm_rss(client, server)
            figures["rounds"] = rounds(client, server, args.rounds, args.round_faces)
            figures["rounds"].update(idle_rss_mb=round(idle / MB, 1), cache_budget_mb=args.cache_mb)
            figures["rounds"]["bound_mb"] = round(idle / MB + args.cache_mb + figures["rounds"]["one_job_mb"], 1)
    if "cancel" in sections:
        with _server(args.cache_mb) as (client, port, server):
            figures["cancel_latency_s"] = cancel_latencies(client, args.cancel_faces, args.cancel_runs)
    text = json.dumps(figures, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text)
    return 0


def token_less_arrays(port: int, server, n_messages: int, frame_mb: int = 60) -> dict:
    """Token-less messages carrying two big frames each, sent back to back on one connection:
    all must be answered `unauthorized`, and the server's peak RSS must stay near a couple of
    messages, not all of them."""
    import msgpack
    import zmq

    idle = server.memory_info().rss
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    frame = bytes(frame_mb << 20)
    spec = {"name": "a", "dtype": "|u1", "shape": [frame_mb << 20]}
    for i in range(n_messages):
        sock.send_multipart([msgpack.packb({"v": 1, "id": i, "op": "status", "arrays": [spec, spec]}), frame, frame])
    codes = []
    while len(codes) < n_messages and sock.poll(60_000):
        header = msgpack.unpackb(sock.recv_multipart()[0])
        codes.append((header.get("error") or {}).get("code"))
    sock.close(0)
    return {
        "messages": n_messages,
        "message_mb": 2 * frame_mb,
        "answers": dict(collections.Counter(codes)),
        "idle_rss_mb": round(idle / MB, 1),
        "peak_rss_mb": round(_peak_rss(server) / MB, 1),
    }


@contextlib.contextmanager
def _server(cache_mb: float, extra: tuple = ()):
    """A fresh `segparts serve` process for one section; yields (client, port, psutil.Process)."""
    import psutil

    from ..client import BackendClient
    from .transport import start_server

    with tempfile.TemporaryDirectory() as runtime:
        proc, port = start_server(runtime, ["--cache-mb", str(cache_mb), "--log-level", "ERROR", *extra])
        try:
            client = BackendClient(port=port, token_file=Path(runtime) / f"token-{port}", timeout=60)
            client.hello()
            yield client, port, psutil.Process(proc.pid)
            client.close()
        finally:
            proc.terminate()
            proc.wait(10)


def _warm_rss(client, server) -> int:
    """RSS of a server that has run one small job (the engine's libraries loaded): its idle size."""
    client.segment(client.upload_mesh(*_boxes()), options={"seed": 12345})
    return server.memory_info().rss


def malformed_messages(client, port: int, n_messages: int, garbage_share: float) -> dict:
    import zmq
    from hypothesis import HealthCheck, given, settings

    from ..client import mesh_id
    from . import fuzzing

    vertices, faces = _boxes()
    mid = client.upload_mesh(vertices, faces)
    first = client.segment(mid, parts=2)
    target = fuzzing.Target(client.token, mid, first.result["segmentation_id"], first.result["job_id"], vertices, faces)
    assert mid == mesh_id(vertices, faces)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{port}")
    wrong, frame_changes, garbage = fuzzing.strategies()
    tally = fuzzing.Tally()
    fields = fuzzing.all_fields(target)
    n_garbage = int(n_messages * garbage_share)
    per_field = max(1, (n_messages - n_garbage) // len(fields))
    counter = iter(range(10**9))
    started = time.perf_counter()

    def budget(n):
        return settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))

    for op, path in fields:

        @budget(per_field)
        @given(frame_changes if path[0] == "frame" else wrong)
        def one(value):
            fuzzing.fuzz_one(sock, target, tally, op, path, value, next(counter))  # noqa: B023 (called in this iteration)

        one()

    @budget(n_garbage)
    @given(garbage)
    def raw(frames):
        fuzzing.garbage_one(sock, tally, frames)

    raw()
    sock.close(0)
    labels_again = client.segment(client.upload_mesh(vertices, faces), parts=2, options={"seed": 0}).arrays["labels"]
    return {
        "sent": tally.sent,
        "fields": len(fields),
        "seconds": round(time.perf_counter() - started, 1),
        "violations": tally.violations[:20],
        "answers_by_op": tally.by_kind(),
        "same_labels_after": bool(np.array_equal(labels_again, first.arrays["labels"])),
    }


def rounds(client, server, n_rounds: int, n_faces: int) -> dict:
    from .transport import grid_mesh

    vertices, faces = grid_mesh(n_faces)
    rng = np.random.default_rng(0)
    before = server.memory_info().rss
    one_job = 0
    trace = {}  # rounds done -> (RSS MB, cache MB): RSS must level off once the cache is full
    started = time.perf_counter()
    for i in range(n_rounds):
        moved = vertices + rng.normal(scale=1e-3, size=vertices.shape)  # a new mesh id every round
        mid = client.upload_mesh(moved, faces)
        client.segment(mid, parts=4)
        if i == 0:  # the job's peak above idle: what the allocator may keep after it
            one_job = max(0, _peak_rss(server) - before)
        if (i + 1) % 50 == 0:
            trace[i + 1] = (round(server.memory_info().rss / MB, 1), round(client.status()["cache"]["bytes"] / MB, 1))
    status = client.status()
    return {
        "rounds": n_rounds,
        "faces": n_faces,
        "seconds": round(time.perf_counter() - started, 1),
        "rss_mb": round(server.memory_info().rss / MB, 1),
        "one_job_mb": round(one_job / MB, 1),
        "cache_mb": round(status["cache"]["bytes"] / MB, 1),
        "cache_limit_mb": round(status["cache"]["limit_bytes"] / MB, 1),
        "recent_jobs": len(status["recent_jobs"]),
        "rss_and_cache_mb_by_round": trace,
    }


def cancel_latencies(client, n_faces: int, runs: int) -> dict:
    """Per stage: seconds from the cancel request to the job's `cancelled` answer (median)."""
    from .. import wire
    from .transport import grid_mesh

    mid = client.upload_mesh(*grid_mesh(n_faces))
    stages: list[str] = []
    client.segment(mid, options={"seed": 99}, on_progress=lambda p, s: stages.append(s) if s not in stages else None)
    out = {}
    for stage in stages:
        times, endings = [], []
        for run_i in range(runs):
            req = client.send("segment", {"mesh_id": mid, "options": {"seed": 100 + run_i}})  # never cached
            job_id, cancelled_at = None, None
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline:
                msgs = [m for m in client.poll(0.05) if m.id == req]
                for m in msgs:
                    if m.kind == "accepted":
                        job_id = m.result["job_id"]
                    elif m.kind == "progress" and m.result.get("stage") == stage and cancelled_at is None:
                        cancelled_at = time.perf_counter()
                        client.send("cancel", {"job_id": job_id})
                    elif m.final:
                        if cancelled_at is not None and not m.ok and m.error.get("code") == wire.CANCELLED:
                            times.append(time.perf_counter() - cancelled_at)
                        else:  # finished before the stage was reported, or failed
                            endings.append(m.kind if m.ok else m.error.get("code"))
                        deadline = 0
                if deadline == 0:
                    break
        out[stage] = round(statistics.median(times), 3) if times else f"not cancelled: {endings}"
    return out


def _peak_rss(process) -> int:
    """The process's peak RSS (VmHWM, Linux); its current RSS elsewhere."""
    try:
        for line in Path(f"/proc/{process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return process.memory_info().rss


def _boxes():
    import trimesh

    a, b = trimesh.creation.box(), trimesh.creation.box()
    b.apply_translation([3.0, 0, 0])
    both = trimesh.util.concatenate([a, b])
    return np.asarray(both.vertices), np.asarray(both.faces)
