"""Property-based fuzzing of the server: >= 1000 malformed messages, each answered with a
structured reply, then a valid request still succeeds."""
from __future__ import annotations

import msgpack
import numpy as np
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from backend_fixtures import thread_server, two_boxes
from segparts import wire

N_MESSAGES = 1200

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**63, 2**64 - 1), st.floats(allow_nan=True),
                    st.text(max_size=12), st.binary(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=4)),
                      max_leaves=12)
ops = st.sampled_from(["hello", "upload_mesh", "segment", "pick", "cancel", "status", "frobnicate", ""])
dtypes = st.sampled_from(sorted(wire.ALLOWED_DTYPES) + ["<f16", "O", "<U4", "int", "", "|V8"])
shapes = st.one_of(st.lists(st.integers(-2, 7), max_size=5), values)


@st.composite
def array_specs(draw):
    """(spec, frame) pairs: sometimes consistent, often not."""
    name = draw(st.sampled_from(["vertices", "faces", "face_map", "junk", ""]))
    spec = {"name": name, "dtype": draw(dtypes), "shape": draw(shapes)}
    if draw(st.booleans()):
        spec = draw(st.one_of(st.just(spec), values))
    frame = draw(st.binary(max_size=64))
    if draw(st.booleans()) and isinstance(spec, dict) and spec.get("dtype") in wire.ALLOWED_DTYPES \
            and isinstance(spec.get("shape"), list) and all(isinstance(d, int) and 0 <= d for d in spec["shape"]):
        n = int(np.prod(spec["shape"])) * np.dtype(spec["dtype"]).itemsize
        frame = bytes(draw(st.binary(min_size=min(n, 256), max_size=min(n, 256)))) if n <= 256 else frame
    return spec, frame


@st.composite
def bad_args(draw):
    """Arguments of the real ops with wrong types and values."""
    keys = st.sampled_from(["mesh_id", "engine", "parts", "scale", "options", "clicks", "face", "point",
                            "positive", "job_id", "n_polygons"])
    args = draw(st.dictionaries(keys, values, max_size=5))
    if draw(st.booleans()):
        args["mesh_id"] = draw(st.sampled_from(["MESH", "nope"]))
    if draw(st.booleans()):
        args["clicks"] = draw(st.lists(st.dictionaries(st.sampled_from(["face", "point", "positive", "view"]),
                                                       values, max_size=4), max_size=3))
    return args


@st.composite
def messages(draw, token: str):
    """A list of frames that is wrong in some way (or, rarely, right by accident)."""
    kind = draw(st.sampled_from(["bytes", "map", "header", "arrays", "mesh"]))
    if kind == "bytes":
        return draw(st.lists(st.binary(max_size=40), min_size=1, max_size=4))
    if kind == "map":
        return [msgpack.packb(draw(values), use_bin_type=True)]
    header = {"v": draw(st.one_of(st.just(1), scalars)), "id": draw(st.one_of(st.integers(0, 10**6), scalars)),
              "op": draw(st.one_of(ops, scalars)), "args": draw(st.one_of(bad_args(), values))}
    if draw(st.integers(0, 3)):  # mostly with the right token, so the ops' own checks are reached
        header["token"] = token
    elif draw(st.booleans()):
        header["token"] = draw(scalars)
    if kind == "header":
        return [msgpack.packb(header, use_bin_type=True)]
    pairs = draw(st.lists(array_specs(), max_size=3))
    if kind == "mesh":  # well-formed arrays with bad contents
        header["op"] = "upload_mesh"
        header["v"], header["token"] = 1, token
        v = np.asarray(draw(st.lists(st.floats(allow_nan=True, allow_infinity=True, width=64),
                                     min_size=0, max_size=12)))
        v = v[: len(v) // 3 * 3].reshape(-1, 3)
        f = np.asarray(draw(st.lists(st.integers(-3, 6), min_size=0, max_size=9)), dtype=np.int64)
        f = f[: len(f) // 3 * 3].reshape(-1, 3)
        frames = wire.encode(header, {"vertices": v, "faces": f})
        return [bytes(x) for x in frames]
    header["arrays"] = [p[0] for p in pairs]
    frames = [msgpack.packb(header, use_bin_type=True)] + [p[1] for p in pairs]
    if draw(st.booleans()) and frames[1:]:
        frames.pop()  # fewer frames than the header describes
    return frames


def test_fuzz_never_kills_the_server(tmp_path):
    with thread_server(tmp_path) as (server, client):
        vertices, faces = two_boxes()
        mesh_id = client.upload_mesh(vertices, faces)
        client.segment(mesh_id)  # so that pick can get past no_segmentation
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://127.0.0.1:{server.port}")
        counts = {"sent": 0, "errors": 0}

        @settings(max_examples=N_MESSAGES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(messages(server.token))
        def one_message(frames):
            frames = [f.replace(b"MESH", mesh_id.encode()) if isinstance(f, bytes) else f for f in frames]
            sock.send_multipart(frames)
            counts["sent"] += 1
            replies = []
            # every message gets exactly one final answer (jobs also send accepted/progress first)
            while True:
                assert sock.poll(20_000), f"no reply to {frames!r}"
                reply = sock.recv_multipart()
                if reply and reply[0] == b"":  # an empty first frame reads as a REQ envelope delimiter
                    reply = reply[1:]
                header, _ = wire.decode(reply)
                replies.append(header)
                if header["kind"] in wire.FINAL_KINDS:
                    break
            final = replies[-1]
            assert isinstance(final["ok"], bool)
            if not final["ok"]:
                counts["errors"] += 1
                assert isinstance(final["error"]["code"], str) and final["error"]["message"]
                assert final["error"]["code"] != wire.INTERNAL, final["error"]

        one_message()
        sock.close(0)
        assert counts["sent"] >= 1000 and counts["errors"] >= 900
        # still serving, correctly
        assert client.hello()["name"] == "segparts"
        again = client.upload_mesh(vertices, faces)
        labels = client.segment(again, parts=2).arrays["labels"]
        assert labels.shape == (len(faces),) and len(np.unique(labels)) == 2
