"""The backend over real ZeroMQ sockets on loopback: round trips, concurrency, cancel, tokens, bad input."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import threading
import time

import msgpack
import numpy as np
import pytest
import zmq

from backend_fixtures import grid, process_server, thread_server, two_boxes
from segparts import wire
from segparts.client import BackendClient, BackendError, mesh_id
from segparts.engines import create_engine
from segparts.engines.base import CancelToken, SegmentParams, no_progress
from segparts.hierarchy import Hierarchy
from segparts.mesh import validate_mesh


def wait_for(client: BackendClient, req_id: str, timeout: float = 60.0, kinds=wire.FINAL_KINDS):
    """Messages of one request until one of `kinds` arrives (non-blocking API)."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for msg in client.poll(0.2):
            if msg.id == req_id:
                seen.append(msg)
                if msg.kind in kinds:
                    return msg, seen
            else:
                client._pending.append(msg)
    raise AssertionError(f"no {kinds} for {req_id} within {timeout} s; got {[m.kind for m in seen]}")


def test_round_trip_mesh_and_labels(tmp_path):
    vertices, faces = two_boxes()
    expected = create_engine("geometric").segment(
        validate_mesh(vertices, faces), SegmentParams(), no_progress, CancelToken()
    )
    with thread_server(tmp_path) as (server, client):
        hello = client.hello()
        assert hello["protocol"] == wire.PROTOCOL_VERSION and hello["engines"]["geometric"]["available"]
        mid = client.upload_mesh(vertices, faces)
        assert mid == mesh_id(vertices, faces) == validate_mesh(vertices, faces).content_hash
        stages = []
        msg = client.segment(mid, on_progress=lambda p, s: stages.append((p, s)))
        assert msg.kind == "result" and msg.result["engine"] == "geometric"
        labels = msg.arrays["labels"]
        assert labels.dtype == np.int32 and labels.shape == (len(faces),)
        np.testing.assert_array_equal(labels, expected.labels)
        assert msg.result["n_parts"] == len(np.unique(expected.labels))
        h = Hierarchy(msg.arrays["leaf_labels"], msg.arrays["parent"], msg.arrays["height"])
        assert h.leaf_labels.shape == (len(faces),)
        assert stages and stages[-1][0] == 1.0
        # re-upload is recognised, and the same request is answered from the cache
        assert client.upload_mesh(vertices, faces) == mid
        assert client.upload_mesh(vertices, faces, check_first=True) == mid
        again = client.segment(mid)
        assert again.result["cached"] is True
        np.testing.assert_array_equal(again.arrays["labels"], labels)
        # a new granularity re-cuts the cached hierarchy instead of segmenting again
        for parts in (1, 2):
            coarse = client.segment(mid, parts=parts)
            assert coarse.result["cached"] is True and coarse.result["info"].get("recut") is True
            np.testing.assert_array_equal(coarse.arrays["labels"], h.cut(parts=parts))
        client.segment(mid)  # back to the automatic granularity for the picks below
        # pick: the part under a face, by index and by point
        face = int(np.flatnonzero(labels == labels[-1])[0])
        pick = client.pick(mid, face=face)
        np.testing.assert_array_equal(pick.arrays["mask"], labels == labels[face])
        point = vertices[faces[face]].mean(axis=0)
        by_point = client.pick(mid, point=point)
        np.testing.assert_array_equal(by_point.arrays["mask"], pick.arrays["mask"])
        status = client.status()
        assert status["cache"]["meshes"] == 1  # (heavy_modules: see the process test; other tests load torch here)


def test_two_clients_at_once(tmp_path):
    meshes = [two_boxes(), grid(20_000)]
    expected = [
        create_engine("geometric")
        .segment(validate_mesh(*m), SegmentParams(parts=1 if i else None), no_progress, CancelToken())
        .labels
        for i, m in enumerate(meshes)
    ]
    results = {}
    with thread_server(tmp_path) as (server, _):

        def work(i):
            with BackendClient(port=server.port, token_file=tmp_path / "token", timeout=30) as c:
                for _ in range(3):
                    mid = c.upload_mesh(*meshes[i])
                    results[i] = c.segment(mid, parts=1 if i else None).arrays["labels"]

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(results) == 2
        for got, want in zip((results[0], results[1]), expected):
            np.testing.assert_array_equal(got, want)


def test_hello_and_status_answer_while_a_job_runs_and_cancel_stops_it(tmp_path):
    vertices, faces = grid(1_000_000)
    with thread_server(tmp_path) as (server, client):
        mid = client.upload_mesh(vertices, faces)
        job_req = client.send("segment", {"mesh_id": mid, "engine": "geometric", "options": {}})
        accepted, _ = wait_for(client, job_req, kinds=("accepted",) + wire.FINAL_KINDS)
        assert accepted.kind == "accepted", accepted.error
        job_id = accepted.result["job_id"]
        # queue a second job behind it, then cancel that one before it starts
        queued_req = client.send("segment", {"mesh_id": mid, "parts": 1})
        queued, _ = wait_for(client, queued_req, kinds=("accepted",))
        # the first progress event comes from inside the engine: the job is running now
        progress = None
        while progress is None or (progress.kind == "progress" and progress.result["stage"] == "queued"):
            progress, _ = wait_for(client, job_req, kinds=("progress",) + wire.FINAL_KINDS)
        assert progress.kind == "progress", "the job finished before it could be cancelled; use a bigger mesh"
        t = time.perf_counter()
        assert client.hello()["version"]
        assert time.perf_counter() - t < 2.0, "hello was blocked by the running job"
        running = [j for j in client.status()["jobs"] if j["job_id"] == job_id]
        assert running and running[0]["state"] == "running"
        assert client.cancel(queued.result["job_id"])["state"] == "cancelled"
        assert client.cancel(job_id)["state"] in ("cancelling", "done")
        final, seen = wait_for(client, job_req, timeout=120)
        assert final.kind == "error" and final.error["code"] == wire.CANCELLED, "cancel did not stop the job"
        assert not any(m.kind == "result" for m in seen)
        queued_final, _ = wait_for(client, queued_req)
        assert queued_final.error["code"] == wire.CANCELLED
        status = client.status()
        assert status["jobs"] == [] and status["workers"]["cpu"]["running"] is None
        states = {j["job_id"]: j["state"] for j in status["recent_jobs"]}
        assert states[job_id] == "cancelled"
        with pytest.raises(BackendError) as err:
            client.cancel("no-such-job")
        assert err.value.code == wire.UNKNOWN_JOB
        # the worker is free again: a small job completes
        small = client.upload_mesh(*two_boxes())
        assert client.segment(small).kind == "result"


def test_token_is_required_for_everything_but_hello(tmp_path):
    with thread_server(tmp_path) as (server, client):
        token_file = tmp_path / "token"
        assert stat.S_IMODE(os.stat(token_file).st_mode) == 0o600
        assert token_file.read_text() == server.token
        for token in (None, "wrong", server.token[:-1]):
            with BackendClient(port=server.port, token=token, token_file=tmp_path / "absent") as c:
                assert c.hello()["name"] == "segparts"
                for op, args in (("status", {}), ("upload_mesh", {"mesh_id": "x"}), ("shutdown", {})):
                    with pytest.raises(BackendError) as err:
                        c.call(op, args)
                    assert err.value.code == wire.UNAUTHORIZED
        # a token of the wrong type is rejected the same way
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.connect(f"tcp://127.0.0.1:{server.port}")
        sock.send(msgpack.packb({"v": 1, "id": 1, "op": "status", "token": 12345, "arrays": []}))
        assert sock.poll(5000)
        header, _ = wire.decode(sock.recv_multipart())
        assert header["error"]["code"] == wire.UNAUTHORIZED
        sock.close(0)
        assert client.status()["device"] == "cpu"  # the right token works
    assert not token_file.exists(), "token file left behind after shutdown"


def raw_request(sock, header: dict, frames: list[bytes] = ()) -> dict:
    sock.send_multipart([msgpack.packb(header), *frames])
    assert sock.poll(10_000), f"no reply to {header}"
    reply, _ = wire.decode(sock.recv_multipart())
    return reply


@pytest.mark.parametrize(
    "case",
    [
        "nan",
        "inf",
        "face_range",
        "negative_face",
        "empty",
        "quads",
        "too_large",
        "shape_mismatch",
        "float_faces",
        "bad_face_map",
    ],
)
def test_bad_meshes_get_structured_errors(tmp_path, case):
    vertices, faces = two_boxes()
    arrays = {"vertices": vertices.copy(), "faces": faces.copy()}
    expected = {
        "nan": "non_finite_vertices",
        "inf": "non_finite_vertices",
        "face_range": "face_index_out_of_range",
        "negative_face": "face_index_out_of_range",
        "empty": "empty_mesh",
        "quads": "bad_faces",
        "too_large": "mesh_too_large",
        "shape_mismatch": wire.BAD_MESSAGE,
        "float_faces": "bad_faces",
        "bad_face_map": "bad_face_map",
    }[case]
    if case == "nan":
        arrays["vertices"][3, 1] = np.nan
    elif case == "inf":
        arrays["vertices"][0, 0] = np.inf
    elif case == "face_range":
        arrays["faces"][5, 2] = len(vertices)
    elif case == "negative_face":
        arrays["faces"][0, 0] = -1
    elif case == "empty":
        arrays["faces"] = np.zeros((0, 3), np.int64)
    elif case == "quads":
        arrays["faces"] = np.zeros((4, 4), np.int64)
    elif case == "float_faces":
        arrays["faces"] = arrays["faces"].astype(np.float64)
    elif case == "bad_face_map":
        arrays["face_map"] = np.full(len(faces), -3, np.int64)
    with thread_server(tmp_path, max_faces=len(faces) - 1 if case == "too_large" else 5_000_000) as (server, client):
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.connect(f"tcp://127.0.0.1:{server.port}")
        frames = wire.request("upload_mesh", "r1", token=server.token, arrays=arrays)
        if case == "shape_mismatch":  # header says (V,3) f8 but the frame is short by 8 bytes
            frames[1] = bytes(frames[1])[:-8]
        sock.send_multipart(frames)
        assert sock.poll(10_000)
        header, _ = wire.decode(sock.recv_multipart())
        sock.close(0)
        assert header["ok"] is False and header["id"] == "r1"
        assert header["error"]["code"] == expected, header["error"]
        assert header["error"]["message"]
        assert client.upload_mesh(vertices[:3], faces[:1] * 0 + [0, 1, 2])  # still serving


def test_degenerate_faces_are_accepted_and_segmented(tmp_path):
    vertices, faces = two_boxes()
    faces = np.vstack([faces, [[0, 0, 0], [1, 1, 2], [0, 1, 1]]])  # repeated indices, zero area
    with thread_server(tmp_path) as (server, client):
        mid = client.upload_mesh(vertices, faces)
        labels = client.segment(mid).arrays["labels"]
        assert labels.shape == (len(faces),) and (labels[:-3] >= 0).all()


def test_protocol_errors_and_the_server_keeps_serving(tmp_path):
    with thread_server(tmp_path) as (server, client):
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.connect(f"tcp://127.0.0.1:{server.port}")
        tok = server.token
        sock.send(b"\xc1 not msgpack")
        assert sock.poll(5000)
        assert wire.decode(sock.recv_multipart())[0]["error"]["code"] == wire.BAD_MESSAGE
        cases = [
            ({"v": 1, "id": 2, "op": "frobnicate", "token": tok}, wire.UNKNOWN_OP),
            ({"v": 99, "id": 3, "op": "hello"}, wire.BAD_VERSION),
            ({"v": True, "id": 3, "op": "status", "token": tok}, wire.BAD_VERSION),
            ({"v": 1.0, "id": 3, "op": "status", "token": tok}, wire.BAD_VERSION),
            ({"v": 1, "op": "hello"}, wire.BAD_MESSAGE),  # no id
            ({"v": 1, "id": 4, "op": 7}, wire.BAD_MESSAGE),
            ({"v": 1, "id": 5, "op": "segment", "token": tok, "args": [1, 2]}, wire.BAD_ARGS),
            ({"v": 1, "id": 6, "op": "segment", "token": tok, "args": {"mesh_id": 5}}, wire.BAD_ARGS),
            ({"v": 1, "id": 7, "op": "segment", "token": tok, "args": {"mesh_id": "nope"}}, wire.UNKNOWN_MESH),
            ({"v": 1, "id": 8, "op": "pick", "token": tok, "args": {"mesh_id": "nope", "face": 0}}, wire.UNKNOWN_MESH),
            ({"v": 1, "id": 9, "op": "cancel", "token": tok, "args": {}}, wire.BAD_ARGS),
            ({"v": 1, "id": 10, "op": "upload_mesh", "token": tok, "args": {}}, wire.UNKNOWN_MESH),
        ]
        for header, code in cases:
            reply = raw_request(sock, header)
            assert reply["ok"] is False and reply["error"]["code"] == code, (header, reply)
        # an array frame that the header does not describe
        reply = raw_request(sock, {"v": 1, "id": 11, "op": "hello", "arrays": []}, [b"extra"])
        assert reply["error"]["code"] == wire.BAD_MESSAGE
        sock.close(0)
        vertices, faces = two_boxes()
        mid = client.upload_mesh(vertices, faces)
        for args, code in [
            ({"mesh_id": mid, "engine": "nope"}, wire.BAD_ARGS),
            ({"mesh_id": mid, "parts": 0}, wire.BAD_ARGS),
            ({"mesh_id": mid, "scale": 1.5}, wire.BAD_ARGS),
            ({"mesh_id": mid, "parts": 2, "scale": 0.5}, wire.BAD_ARGS),
            ({"mesh_id": mid, "options": [1]}, wire.BAD_ARGS),
        ]:
            with pytest.raises(BackendError) as err:
                client.call("segment", args)
            assert err.value.code == code, args
        with pytest.raises(BackendError) as err:
            client.pick(mid, face=0)
        assert err.value.code == wire.NO_SEGMENTATION
        client.segment(mid)
        for kwargs in ({"face": len(faces)}, {"point": [np.nan, 0, 0]}, {"clicks": []}):
            with pytest.raises(BackendError) as err:
                client.pick(mid, **kwargs)
            assert err.value.code == wire.BAD_ARGS, kwargs
        hello = client.hello()
        for name, availability in hello["engines"].items():
            if not availability["available"]:
                with pytest.raises(BackendError) as err:
                    client.segment(mid, engine=name)
                assert err.value.code == wire.ENGINE_UNAVAILABLE and availability["message"] in err.value.message
        assert client.segment(mid).kind == "result"


def test_lru_cache_evicts_old_meshes(tmp_path):
    meshes = [grid(20_000 + 2 * i) for i in range(4)]
    one_mb = 1.0  # each grid mesh is ~0.7 MB: the cache holds one
    with thread_server(tmp_path, cache_mb=one_mb) as (server, client):
        ids = [client.upload_mesh(*m) for m in meshes]
        status = client.status()
        assert status["cache"]["bytes"] <= status["cache"]["limit_bytes"] and status["cache"]["meshes"] == 1
        with pytest.raises(BackendError) as err:
            client.segment(ids[0])
        assert err.value.code == wire.UNKNOWN_MESH
        assert client.segment(ids[-1]).kind == "result"


def test_serve_process_starts_without_torch_and_follows_its_parent(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        with process_server(tmp_path, "--parent-pid", str(parent.pid)) as (proc, port, token_file, ready_s):
            # how fast it listens is `segparts bench transport`'s start_to_hello_s, not asserted here
            with BackendClient(port=port, token_file=token_file) as c:
                assert c.hello()["engines"]["geometric"]["available"]
                assert c.status()["heavy_modules"] == [], "hello imported torch/sam2"
            parent.kill()
            parent.wait()
            proc.wait(timeout=10)
            assert proc.returncode == 0
            assert not token_file.exists()
    finally:
        parent.kill()
        parent.wait()


def test_shutdown_op_stops_the_process(tmp_path):
    with process_server(tmp_path) as (proc, port, token_file, _):
        with BackendClient(port=port, token_file=token_file) as c:
            assert c.shutdown() == {"stopping": True}
        assert proc.wait(timeout=10) == 0


def test_client_works_as_a_copied_package_and_as_plain_modules(tmp_path):
    """The add-on ships wire.py + client.py (+ hierarchy.py) as its `_shared` package."""
    import shutil

    import segparts

    src = os.path.dirname(segparts.__file__)
    pkg = tmp_path / "_shared"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in ("wire.py", "client.py", "hierarchy.py"):
        shutil.copy(os.path.join(src, name), pkg / name)
        shutil.copy(os.path.join(src, name), plain / name)
    code = (
        f"import sys, numpy as np; sys.path[:0] = [{str(tmp_path)!r}, {str(plain)!r}]; "
        "from _shared.client import BackendClient, mesh_id as a; import client; "
        "assert 'segparts' not in sys.modules; "
        "v = np.arange(9.0).reshape(3, 3); f = np.array([[0, 1, 2]]); "
        "assert a(v, f) == client.mesh_id(v, f); print(a(v, f))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    v = np.arange(9.0).reshape(3, 3)
    assert done.stdout.strip() == mesh_id(v, np.array([[0, 1, 2]])) == validate_mesh(v, [[0, 1, 2]]).content_hash


# ---- hardening (issue 12) ---------------------------------------------------------------------
def raw_socket(server) -> zmq.Socket:
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(f"tcp://127.0.0.1:{server.port}")
    return sock


def test_arrays_are_not_decoded_before_the_token_and_messages_have_a_total_cap(tmp_path):
    vertices, faces = two_boxes()
    with thread_server(tmp_path, max_message_mb=2) as (server, client):
        sock = raw_socket(server)
        big = np.zeros(600_000 // 8, np.float64)  # 0.6 MB: under the 2 MB cap alone, over it four together
        # a token-less hello carrying arrays is refused, not answered as a hello
        frames = wire.request("hello", "h1", arrays={"a": big})
        sock.send_multipart(frames)
        assert sock.poll(5000)
        header, _ = wire.decode(sock.recv_multipart())
        assert header["id"] == "h1" and header["error"]["code"] == wire.BAD_MESSAGE
        # token-less arrays are refused before their specs are even read
        frames = wire.request("upload_mesh", "u1", arrays={"vertices": vertices, "faces": faces})
        frames[0] = msgpack.packb({**msgpack.unpackb(frames[0]), "arrays": [{"name": "x", "dtype": ["bad"]}] * 2})
        sock.send_multipart(frames)
        assert sock.poll(5000)
        assert wire.decode(sock.recv_multipart())[0]["error"]["code"] == wire.UNAUTHORIZED
        # with the token, frames under the cap one by one but over it together: an answer, not a crash
        frames = wire.request(
            "upload_mesh",
            "u2",
            token=server.token,
            arrays={"vertices": vertices, "faces": faces, "a": big, "b": big, "c": big, "d": big},
        )
        sock.send_multipart(frames)
        assert sock.poll(5000)
        header, _ = wire.decode(sock.recv_multipart())
        assert header["id"] == "u2" and header["error"]["code"] == wire.BAD_MESSAGE
        assert "limit" in header["error"]["message"]
        # a header over its own limit is answered without being read
        sock.send_multipart([b"\x80" + b" " * (wire.MAX_HEADER_BYTES + 1)])
        assert sock.poll(5000)
        assert wire.decode(sock.recv_multipart())[0]["error"]["code"] == wire.BAD_MESSAGE
        # one frame over the whole cap: the transport closes that connection; the client refuses to send it
        sock.send_multipart([msgpack.packb({"v": 1, "id": 9, "op": "hello"}), b"\0" * (3 << 20)])
        assert not sock.poll(1000)
        sock.close(0)
        client.hello()
        with pytest.raises(ValueError, match="limit"):
            client.upload_mesh(np.zeros((100_000, 3)), np.zeros((1, 3), np.int64))  # 2.4 MB
        assert client.segment(client.upload_mesh(vertices, faces)).kind == "result"


def test_finished_jobs_keep_no_mesh_and_the_cache_bounds_memory(tmp_path):
    import gc

    from segparts.mesh import Mesh

    with thread_server(tmp_path, cache_mb=1) as (server, client):
        for i in range(12):  # each grid mesh is ~0.5 MB with its result: the cache holds about one
            vertices, faces = grid(16_000 + 2 * i)
            mid = client.upload_mesh(vertices, faces)
            assert client.segment(mid, parts=2).kind == "result"
        status = client.status()
        assert len(status["recent_jobs"]) == 12
        assert status["cache"]["bytes"] <= status["cache"]["limit_bytes"]
        gc.collect()
        live = [o for o in gc.get_objects() if isinstance(o, Mesh)]
        assert len(live) <= 2, f"{len(live)} meshes still alive: finished jobs keep them"


def test_results_never_evict_their_own_mesh(tmp_path):
    vertices, faces = grid(40_000)  # ~1.7 MB of mesh: more than the whole 1 MB budget
    with thread_server(tmp_path, cache_mb=1) as (server, client):
        mid = client.upload_mesh(vertices, faces)
        labels = client.segment(mid).arrays["labels"]
        pick = client.pick(mid, face=0)  # the mesh is still there
        np.testing.assert_array_equal(pick.arrays["mask"], labels == labels[0])
        before = client.status()["cache"]["bytes"]
        point = vertices[faces[7]].mean(axis=0)
        by_point = client.pick(mid, point=point)  # builds the mesh's closest-point index: it is charged too
        np.testing.assert_array_equal(by_point.arrays["mask"], labels == labels[7])
        assert client.status()["cache"]["bytes"] >= before + len(faces) * 8


def test_token_file_replaces_a_planted_symlink_and_narrows_an_open_folder(tmp_path):
    from segparts.server import Server

    folder = tmp_path / "runtime"
    folder.mkdir()
    os.chmod(folder, 0o777)
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    os.chmod(victim, 0o644)
    token_file = folder / "token"
    token_file.symlink_to(victim)
    server = Server(port=0, token_file=token_file)
    try:
        assert victim.read_text() == "precious" and stat.S_IMODE(os.stat(victim).st_mode) == 0o644
        assert not token_file.is_symlink() and token_file.read_text() == server.token
        assert stat.S_IMODE(os.lstat(token_file).st_mode) == 0o600
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert [p.name for p in folder.iterdir()] == ["token"]  # no temporary file left
    finally:
        server._close()
    linked = tmp_path / "linked"
    linked.symlink_to(folder)
    with pytest.raises(OSError, match="symlink"):
        Server(port=0, token_file=linked / "token")


def test_bad_field_types_answer_bad_message_with_the_id_and_logging_is_rate_limited(tmp_path, caplog):
    import logging

    with thread_server(tmp_path) as (server, client):
        sock = raw_socket(server)
        with caplog.at_level(logging.WARNING, logger="segparts.server"):
            for i, dtype in enumerate([["<f8"], {"a": 1}, 7, None] * 50):
                header = {"v": 1, "id": i, "op": "hello", "arrays": [{"name": "a", "dtype": dtype, "shape": [1]}]}
                reply = raw_request(sock, {**header, "token": server.token}, [b"\0" * 8])
                assert reply["id"] == i and reply["error"]["code"] == wire.BAD_MESSAGE, reply
        sock.close(0)
        lines = [r for r in caplog.records if r.name == "segparts.server"]
        assert 1 <= len(lines) <= 25, f"{len(lines)} log lines for 200 bad messages"
        assert not any("Traceback" in r.getMessage() for r in lines)


def _serve_with_few_files(tmp_path, soft_limit: int):
    import resource

    def lower_limit():
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft_limit, hard))

    env = dict(os.environ, SEGPARTS_RUNTIME_DIR=str(tmp_path))
    proc = subprocess.Popen(
        [sys.executable, "-m", "segparts", "serve", "--port", "0", "--log-level", "ERROR"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        preexec_fn=lower_limit,
    )
    line = proc.stdout.readline()
    assert "listening on" in line, line
    return proc, int(line.split("listening on ", 1)[1].split()[0].rsplit(":", 1)[1])


def test_idle_connections_do_not_lock_the_owner_out(tmp_path):
    import socket

    proc, port = _serve_with_few_files(tmp_path, soft_limit=128)
    idle = []
    try:
        for _ in range(200):  # more connections than the server's file limit, none says anything
            s = socket.create_connection(("127.0.0.1", port))
            idle.append(s)
        with BackendClient(port=port, token_file=tmp_path / f"token-{port}", timeout=3) as c:
            assert c.hello()["name"] == "segparts"
            assert c.status()["device"]
    finally:
        for s in idle:
            s.close()
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()


@pytest.mark.parametrize(
    "options",
    [
        {"patches": 0},
        {"patches": -1},
        {"patches": float("nan")},
        {"patches": "8"},
        {"seed": -1},
        {"weld_tolerance": "x"},
        {"weld_tolerance": float("nan")},
        {"weld_tolerance": float("inf")},
        {"weld_tolerance": 1e-300},
        {"weld_tolerance": 0.5},
        {"patches": [[[[1]]]]},
        {"nested": {"a": {"b": {"c": {}}}}},
        {"patches": True},
    ],
)
def test_engine_options_are_checked_before_the_job_is_accepted(tmp_path, options):
    vertices, faces = two_boxes()
    with thread_server(tmp_path) as (server, client):
        mid = client.upload_mesh(vertices, faces)
        req = client.send("segment", {"mesh_id": mid, "engine": "geometric", "options": options})
        first, _ = wait_for(client, req, timeout=20, kinds=("accepted",) + wire.FINAL_KINDS)
        assert first.kind == "error" and first.error["code"] == wire.BAD_ARGS, (first.kind, first.error)
        assert list(options)[0] in first.error["message"]
        ok = client.segment(mid, options={"patches": 50, "seed": 3, "weld_tolerance": 1e-5})
        assert ok.kind == "result"


def test_status_after_a_result_never_shows_the_job_running(tmp_path):
    vertices, faces = two_boxes()
    with thread_server(tmp_path) as (server, client):
        mid = client.upload_mesh(vertices, faces)
        for i in range(150):
            msg = client.segment(mid, parts=1 + i % 2)
            status = client.status()
            assert status["jobs"] == [] and status["workers"]["cpu"]["running"] is None, (i, status)
            assert status["recent_jobs"][-1]["job_id"] == msg.result["job_id"]
            assert status["recent_jobs"][-1]["state"] == "done"


def test_server_settings_are_checked(tmp_path):
    from segparts.server import Server

    for kwargs in (
        {"port": 70000},
        {"port": -1},
        {"cache_mb": 0},
        {"cache_mb": -10},
        {"cache_mb": float("nan")},
        {"max_faces": 0},
        {"max_faces": -5},
        {"max_message_mb": 0},
        {"max_message_mb": 4096},
    ):
        with pytest.raises(ValueError, match=list(kwargs)[0].replace("_", "-")):
            Server(token_file=tmp_path / "token", **{"port": 0, **kwargs})
    assert not (tmp_path / "token").exists()
    with thread_server(tmp_path, host="::1") as (server, _):  # IPv6 loopback
        assert server.endpoint == f"tcp://[::1]:{server.port}"
        with BackendClient("::1", server.port, token_file=tmp_path / "token", timeout=5) as c:
            assert c.hello()["name"] == "segparts" and c.status()["device"] == "cpu"


def _bind_again(make_server, seconds: float = 10.0):
    """A new server on the port the previous one just closed: ZeroMQ releases a closed socket's
    port in its I/O thread, so binding right away may briefly find it still in use."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return make_server()
        except zmq.error.ZMQError as exc:
            if exc.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_client_reads_a_new_token_after_the_backend_restarts(tmp_path):
    from segparts.server import Server

    with thread_server(tmp_path) as (server, client):
        port = server.port
        assert client.status()
    old_token = client.token
    server = _bind_again(lambda: Server(port=port, token_file=tmp_path / "token"))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with BackendClient(port=port, token=None, token_file=tmp_path / "token", timeout=5) as c:
            c._token = old_token  # as if it had read the previous backend's file
            assert c.status()["device"] == "cpu"
            assert c.token == server.token != old_token
    finally:
        server.stop()
        thread.join(10)


def test_a_job_whose_client_is_gone_is_cancelled(tmp_path):
    vertices, faces = grid(1_000_000)
    with thread_server(tmp_path) as (server, client):
        mid = client.upload_mesh(vertices, faces)
        leaver = BackendClient(port=server.port, token_file=tmp_path / "token", timeout=20)
        req = leaver.send("segment", {"mesh_id": mid, "options": {}})
        accepted, _ = wait_for(leaver, req, kinds=("accepted",))
        job_id = accepted.result["job_id"]
        leaver.close()
        deadline = time.monotonic() + 30
        state = None
        while time.monotonic() < deadline:
            recent = {j["job_id"]: j["state"] for j in client.status()["recent_jobs"]}
            state = recent.get(job_id)
            if state is not None:
                break
            time.sleep(0.2)
        assert state == "cancelled", f"the job of a gone client ended {state!r}"


def test_picks_use_the_segmentation_they_name_never_another_clients(tmp_path):
    vertices, faces = grid(4_000)
    with thread_server(tmp_path) as (server, alice):
        mid = alice.upload_mesh(vertices, faces)
        mine = alice.segment(mid, parts=4, options={"patches": 8})
        with BackendClient(port=server.port, token_file=tmp_path / "token", timeout=20) as bob:
            theirs = bob.segment(mid, parts=4, options={"patches": 40, "seed": 1})
            assert mine.result["segmentation_id"] != theirs.result["segmentation_id"]
            # bob segmented last, but alice's pick answers from alice's segmentation
            h_mine = Hierarchy(mine.arrays["leaf_labels"], mine.arrays["parent"], mine.arrays["height"])
            h_theirs = Hierarchy(theirs.arrays["leaf_labels"], theirs.arrays["parent"], theirs.arrays["height"])
            face = next(
                f
                for f in range(len(faces))
                if not np.array_equal(
                    h_mine.face_mask(h_mine.node_at(f, parts=4)), h_theirs.face_mask(h_theirs.node_at(f, parts=4))
                )
            )
            pick = alice.pick(mid, face=face, parts=4)
            np.testing.assert_array_equal(pick.arrays["mask"], h_mine.face_mask(h_mine.node_at(face, parts=4)))
            named = alice.pick(mid, face=face, parts=4, segmentation_id=theirs.result["segmentation_id"])
            np.testing.assert_array_equal(named.arrays["mask"], h_theirs.face_mask(h_theirs.node_at(face, parts=4)))
            with pytest.raises(BackendError) as err:
                alice.pick(mid, face=face, segmentation_id="no-such-segmentation")
            assert err.value.code == wire.NO_SEGMENTATION


def test_segment_with_a_segmentation_id_only_recuts_that_result(tmp_path):
    """A new granularity of a named result (the add-on's slider): answered from that result, and
    `no_segmentation` once it is gone instead of a new, possibly long, segmentation."""
    vertices, faces = grid(4_000)
    with thread_server(tmp_path) as (server, client):
        mid = client.upload_mesh(vertices, faces)
        first = client.segment(mid, parts=4, options={"patches": 8})
        client.segment(mid, parts=4, options={"patches": 40, "seed": 1})  # another result, segmented last
        h = Hierarchy(first.arrays["leaf_labels"], first.arrays["parent"], first.arrays["height"])
        again = client.segment(mid, parts=2, segmentation_id=first.result["segmentation_id"])
        assert again.result["cached"] is True and again.result["info"].get("recut") is True
        assert again.result["segmentation_id"] == first.result["segmentation_id"]
        np.testing.assert_array_equal(again.arrays["labels"], h.cut(parts=2))
        jobs_before = len(client.status()["recent_jobs"])
        with pytest.raises(BackendError) as err:
            client.segment(mid, scale=0.5, segmentation_id="no-such-segmentation")
        assert err.value.code == wire.NO_SEGMENTATION
        assert len(client.status()["recent_jobs"]) == jobs_before, "nothing was segmented"
        other = client.upload_mesh(*two_boxes())
        with pytest.raises(BackendError) as err:
            client.segment(other, scale=0.5, segmentation_id=first.result["segmentation_id"])
        assert err.value.code == wire.BAD_ARGS


def test_hello_describes_every_engine_without_loading_torch(tmp_path):
    """What the add-on needs to know about an engine comes from the engine, not from a list of names.
    A process of its own: in the test process another test may have imported torch already."""
    with (
        process_server(tmp_path) as (_, port, token_file, _),
        BackendClient(port=port, token_file=token_file) as client,
    ):
        engines = client.hello()["engines"]
        assert engines["geometric"] == {
            **engines["geometric"],
            "label": "Geometric",
            "click_prompts": False,
            "renders": False,
            "scales_on_backend": False,
            "models": [],
        }
        assert engines["sampart3d"] == {
            **engines["sampart3d"],
            "label": "SAMPart3D",
            "click_prompts": False,
            "renders": True,
            "scales_on_backend": True,
            "models": ["ptv3-object", "sam-vit-h"],
        }
        assert engines["geosam2"] == {
            **engines["geosam2"],
            "label": "GeoSAM2",
            "click_prompts": True,
            "renders": True,
            "scales_on_backend": False,
            "models": ["geosam2"],
        }
        assert not client.status()["heavy_modules"]


def test_hello_before_the_token_reveals_no_pid_or_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGPARTS_MODELS", str(tmp_path / "secret-models-folder"))
    with thread_server(tmp_path) as (server, client):
        with BackendClient(port=server.port, token_file=tmp_path / "absent", timeout=10) as stranger:
            hello = stranger.hello()
            assert "pid" not in hello and hello["authorized"] is False
            assert str(tmp_path) not in repr(hello) and "secret-models-folder" not in repr(hello)
            assert set(hello["engines"]) == {"geometric", "sampart3d", "geosam2"}
            with pytest.raises(BackendError) as err:
                stranger.status()
            assert err.value.code == wire.UNAUTHORIZED and str(tmp_path) not in err.value.message
        full = client.hello()  # with the token: the details, paths included
        assert full["pid"] == os.getpid() and full["authorized"] is True
        unavailable = [e for e in full["engines"].values() if not e["available"]]
        assert not unavailable or any("secret-models-folder" in m for e in unavailable for m in e["missing"])


def test_every_engine_declares_its_options():
    from segparts.engines import ENGINES
    from segparts.engines.base import OptionError, check_options

    good = {
        "geometric": {"patches": 12, "seed": 1, "weld_tolerance": 1e-5},
        "sampart3d": {"quality": "fast", "iterations": 300, "n_views": 36, "lr": 1e-3, "backbone": "none"},
        "geosam2": {"auto_points": 64, "start_view": 11, "pa": 0.02, "box": [0, 0, 10, 10]},
    }
    bad = {
        "geometric": [{"patches": 0}, {"weld_tolerance": float("nan")}, {"iterations": 5}],
        "sampart3d": [{"quality": "best"}, {"n_views": 20}, {"lr": "fast"}, {"mask_source": "masks.npz"}],
        "geosam2": [{"start_view": 12}, {"box": [0, 0, 10]}, {"pa": True}, {"patches": 3}],
    }
    for name in ENGINES:
        engine = create_engine(name)
        assert {o.name for o in engine.options} >= set(good[name])
        assert check_options(engine, good[name]) == good[name]
        for options in bad[name]:
            with pytest.raises(OptionError, match=list(options)[0]):
                check_options(engine, options)
