"""Real backend servers for the tests: in a thread (fast) or as a `segparts serve` process."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import trimesh

from segparts.client import BackendClient
from segparts.server import Server


@contextlib.contextmanager
def thread_server(tmp_path: Path, **kwargs):
    """A Server on a free loopback port, run by a thread of this process. Yields (server, client)."""
    server = Server(port=0, token_file=tmp_path / "token", **kwargs)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    client = BackendClient(port=server.port, token_file=tmp_path / "token", timeout=20)
    try:
        yield server, client
    finally:
        client.close()
        server.stop()
        thread.join(timeout=10)
        assert not thread.is_alive(), "server thread did not stop"


@contextlib.contextmanager
def process_server(tmp_path: Path, *extra: str):
    """`python -m segparts serve --port 0` as a child process. Yields (proc, port, token_file, ready_s)."""
    env = dict(os.environ, SEGPARTS_RUNTIME_DIR=str(tmp_path))
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "segparts", "serve", "--port", "0", "--log-level", "WARNING", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        ready_s = time.perf_counter() - started
        assert "listening on" in line, (
            f"serve did not start: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
        )
        port = int(line.split("listening on ", 1)[1].split()[0].rsplit(":", 1)[1])
        yield proc, port, tmp_path / f"token-{port}", ready_s
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def two_boxes() -> tuple[np.ndarray, np.ndarray]:
    """Two separate boxes: two parts for any sane engine."""
    a = trimesh.creation.box()
    b = trimesh.creation.box()
    b.apply_translation([3.0, 0, 0])
    both = trimesh.util.concatenate([a, b])
    return np.asarray(both.vertices), np.asarray(both.faces)


def grid(n_faces: int) -> tuple[np.ndarray, np.ndarray]:
    from segparts.bench.transport import grid_mesh

    return grid_mesh(n_faces)
