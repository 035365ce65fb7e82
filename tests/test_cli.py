"""The command-line contract of DESIGN.md: segment (in-process and --port), ping, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import trimesh

from backend_fixtures import process_server, two_boxes
from segparts.cli import main
from segparts.meshio import load_mesh


@pytest.fixture
def quad_obj(tmp_path):
    """Two separate cubes made of quads: 12 polygons, 24 triangles."""
    lines = []
    for dx in (0.0, 3.0):
        base = len(lines)
        corners = [(x + dx, y, z) for x in (0, 1) for y in (0, 1) for z in (0, 1)]
        lines += [f"v {x} {y} {z}" for x, y, z in corners]
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = [f"f {' '.join(str(i + 1 + off) for i in q)}" for off in (8, 0) for q in quads]  # second cube first
    path = tmp_path / "cubes.obj"
    path.write_text("\n".join(lines + faces) + "\n")
    del base
    return path


def test_segment_npy_labels_one_per_polygon_in_file_order(quad_obj, tmp_path, capsys):
    from segparts.engines import create_engine
    from segparts.engines.base import CancelToken, SegmentParams, no_progress

    out = tmp_path / "labels.npy"
    assert main(["segment", str(quad_obj), "--engine", "geometric", "--out", str(out)]) == 0
    summary = json.loads(capsys.readouterr().out)
    labels = np.load(out)
    assert labels.dtype == np.int32 and labels.shape == (12,) and summary["faces"] == 12
    # what the engine gives per triangle, reported per quad of the file in file order
    mesh = load_mesh(quad_obj)
    expected = create_engine("geometric").segment(mesh, SegmentParams(), no_progress, CancelToken()).labels
    np.testing.assert_array_equal(labels, expected[::2])  # each quad is two consecutive triangles
    assert summary["parts"] == len(np.unique(expected))


def test_segment_coloured_outputs(quad_obj, tmp_path):
    for suffix in (".ply", ".glb"):
        out = tmp_path / f"coloured{suffix}"
        assert main(["segment", str(quad_obj), "--out", str(out), "--parts", "2", "--quiet"]) == 0
        loaded = trimesh.load(out, process=False)
        if isinstance(loaded, trimesh.Scene):
            loaded = loaded.to_geometry()
        assert len(loaded.faces) == 24  # triangulated, same order
        colours = loaded.visual.face_colors if suffix == ".ply" else loaded.visual.vertex_colors[loaded.faces[:, 0]]
        assert len(np.unique(colours, axis=0)) == 2


def test_segment_through_a_running_backend_matches_in_process(quad_obj, tmp_path):
    local, remote = tmp_path / "local.npy", tmp_path / "remote.npy"
    assert main(["segment", str(quad_obj), "--out", str(local), "--quiet"]) == 0
    with process_server(tmp_path) as (proc, port, token_file, _):
        env = dict(os.environ, SEGPARTS_RUNTIME_DIR=str(tmp_path))
        done = subprocess.run(
            [sys.executable, "-m", "segparts", "segment", str(quad_obj), "--port", str(port), "--out", str(remote)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        ping = subprocess.run(
            [sys.executable, "-m", "segparts", "ping", "--port", str(port)], capture_output=True, text=True, timeout=30
        )
        assert ping.returncode == 0, ping.stderr
        hello = json.loads(ping.stdout)
        assert hello["engines"]["geometric"]["available"] and hello["device"] in ("cpu", "cuda")
    np.testing.assert_array_equal(np.load(local), np.load(remote))


def test_ping_without_backend_fails_clearly(capsys):
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["ping", "--port", str(port), "--timeout", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "no backend answered" in err and str(port) in err


@pytest.mark.parametrize("content", [b"", b"OFF\n3 1 0\n0 0\n", b"definitely not a mesh"])
def test_unreadable_file_is_one_line_without_traceback(tmp_path, content):
    path = tmp_path / "broken.off"
    path.write_bytes(content)
    done = subprocess.run(
        [sys.executable, "-m", "segparts", "segment", str(path), "--out", str(tmp_path / "x.npy")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "broken.off" in lines[0]
    assert not (tmp_path / "x.npy").exists()


def test_segment_argument_errors(tmp_path, capsys):
    vertices, faces = two_boxes()
    path = tmp_path / "boxes.stl"
    trimesh.Trimesh(vertices, faces).export(path)
    assert load_mesh(path).n_faces == len(faces)
    assert main(["segment", str(path), "--out", str(tmp_path / "x.txt")]) == 2
    assert main(["segment", str(path), "--out", str(tmp_path / "x.npy"), "--engine", "nope"]) == 2
    assert main(["segment", str(path), "--out", str(tmp_path / "x.npy"), "--scale", "3"]) == 2
    err = capsys.readouterr().err
    assert "--out must end in" in err and "unknown engine" in err and "--scale" in err
    with pytest.raises(SystemExit):  # argparse: --parts and --scale are exclusive
        main(["segment", str(path), "--out", str(tmp_path / "x.npy"), "--parts", "2", "--scale", "0.5"])


def test_engine_failures_are_one_line_with_nonzero_exit(tmp_path, capsys, monkeypatch):
    vertices, faces = two_boxes()
    path = tmp_path / "boxes.ply"
    trimesh.Trimesh(vertices, faces).export(path)
    out = tmp_path / "x.npy"
    # a bad option value: refused against the engine's declaration before it runs
    assert main(["segment", str(path), "--out", str(out), "--option", "patches=many"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "bad --option" in err[0] and "patches" in err[0] and "many" in err[0]
    # an engine whose checkpoints are missing (empty models folder): EngineUnavailable
    monkeypatch.setenv("SEGPARTS_MODELS", str(tmp_path / "no-models"))
    assert main(["segment", str(path), "--out", str(out), "--engine", "sampart3d"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "sampart3d is unavailable" in err[0] and "missing" in err[0]
    assert not out.exists()


def test_engine_value_error_in_a_subprocess_has_no_traceback(tmp_path):
    vertices, faces = two_boxes()
    path = tmp_path / "boxes.ply"
    trimesh.Trimesh(vertices, faces).export(path)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "segparts",
            "segment",
            str(path),
            "--out",
            str(tmp_path / "x.npy"),
            "--option",
            'weld_tolerance="wide"',
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "wide" in done.stderr


@pytest.mark.parametrize(
    "flags",
    [
        ["--port", "70000"],
        ["--port", "-1"],
        ["--cache-mb", "0"],
        ["--cache-mb", "-10"],
        ["--cache-mb", "nan"],
        ["--max-faces", "0"],
        ["--max-faces", "-5"],
        ["--max-message-mb", "inf"],
        ["--port", "http"],
    ],
)
def test_serve_refuses_bad_flags_before_binding(tmp_path, flags):
    env = dict(os.environ, SEGPARTS_RUNTIME_DIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "segparts", "serve", *flags], capture_output=True, text=True, env=env, timeout=30
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert flags[0] in done.stderr and "listening" not in done.stdout
    assert not list(tmp_path.iterdir()), "a token file was written for a server that must not start"


def test_serve_on_ipv6_loopback_and_rotated_log_file(tmp_path):
    env = dict(os.environ, SEGPARTS_RUNTIME_DIR=str(tmp_path))
    log_file = tmp_path / "backend.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "segparts", "serve", "--host", "::1", "--port", "0", "--log-file", str(log_file)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert "listening on tcp://[::1]:" in line, line + (proc.stderr.read() if proc.poll() is not None else "")
        port = int(line.split("]:", 1)[1].split()[0])
        ping = subprocess.run(
            [sys.executable, "-m", "segparts", "ping", "--host", "::1", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert ping.returncode == 0, ping.stderr
        assert json.loads(ping.stdout)["endpoint"] == f"tcp://[::1]:{port}"
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    assert "listening on" in log_file.read_text()


def test_segment_port_timeout_when_nothing_listens(tmp_path, quad_obj):
    import socket
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.perf_counter()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "segparts",
            "segment",
            str(quad_obj),
            "--port",
            str(port),
            "--timeout",
            "0.5",
            "--out",
            str(tmp_path / "x.npy"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, SEGPARTS_RUNTIME_DIR=str(tmp_path)),
    )
    assert done.returncode == 2 and "no backend answered" in done.stderr and "0.5 s" in done.stderr
    assert time.perf_counter() - started < 15  # the interpreter's start-up, not a 30 s wait


def test_a_backend_that_dies_mid_job_is_reported_as_lost(tmp_path):
    from backend_fixtures import grid
    from segparts.client import BackendClient, BackendLost

    vertices, faces = grid(1_000_000)
    with (
        process_server(tmp_path) as (proc, port, token_file, _),
        BackendClient(port=port, token_file=token_file, timeout=1) as c,
    ):
        mid = c.upload_mesh(vertices, faces)
        started = []

        def kill_when_running(fraction, stage):
            if not started:
                started.append(stage)
                proc.kill()

        with pytest.raises(BackendLost, match="stopped answering"):
            c.segment(mid, on_progress=kill_when_running)
