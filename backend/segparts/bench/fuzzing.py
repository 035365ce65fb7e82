"""Structured malformed messages for the backend, for tests/test_fuzz.py and `segparts bench hardening`.

A fuzzer that sends random bytes mostly tests the msgpack decoder. This one starts from a *valid*
request of every op (right envelope, right token, arguments and arrays that the server accepts)
and makes exactly one field wrong: every field of the envelope, every argument down to the
fields of a click and every engine option, every array spec and every array frame. Each field
knows which error codes a wrong value may earn (a `segment` with a wrong `mesh_id` is `bad_args`
or `unknown_mesh`, never `internal`), so the answers are checked, not just counted. Raw garbage
(random frames, random msgpack) is one more class. Needs `hypothesis` (a test/bench dependency).
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

import msgpack
import numpy as np

from .. import wire

OK = "ok"  # the request succeeded: a value that happened to be valid
OPS = ("hello", "upload_mesh", "segment", "pick", "cancel", "status", "shutdown", "name_parts")
MESH_CODES = {
    "empty_mesh",
    "bad_vertices",
    "bad_faces",
    "bad_face_map",
    "non_finite_vertices",
    "face_index_out_of_range",
    "mesh_too_large",
    "coordinates_too_large",
    "bad_material",
    "bad_group",
}
DELETE = object()  # a mutation that removes the field


@dataclass
class Target:
    """What the server under test holds, so that valid requests can be built."""

    token: str
    mesh_id: str
    segmentation_id: str
    job_id: str
    vertices: np.ndarray
    faces: np.ndarray


def valid_request(op: str, t: Target) -> tuple[dict, dict]:
    """(header, arrays) of a request the server accepts."""
    n_faces = len(t.faces)
    args, arrays = {}, {}
    if op == "upload_mesh":
        arrays = {
            "vertices": t.vertices,
            "faces": t.faces,
            "face_map": np.arange(n_faces) // 2,
            "material": np.zeros(n_faces, np.int32),
            "group": (np.arange(n_faces) % 3).astype(np.int32),
        }
        args = {"n_polygons": (n_faces + 1) // 2}
    elif op == "segment":
        args = {
            "mesh_id": t.mesh_id,
            "engine": "geometric",
            "parts": 2,
            "options": {"patches": 20, "seed": 0, "weld_tolerance": 1e-6},
        }
    elif op == "pick":
        centre = t.vertices[t.faces[1]].mean(axis=0)
        args = {
            "mesh_id": t.mesh_id,
            "engine": "geometric",
            "parts": 2,
            "segmentation_id": t.segmentation_id,
            "clicks": [
                {"face": 0, "positive": True, "view": {}},
                {"point": [float(x) for x in centre], "positive": False},
            ],
            "options": {},
        }
    elif op == "cancel":
        args = {"job_id": t.job_id}
    elif op == "name_parts":  # no endpoint url: refused as "naming is off", so nothing ever goes out
        args = {
            "mesh_id": t.mesh_id,
            "endpoint": {"timeout_s": 5, "retries": 0},
            "object_name": "boxes",
            "views": 2,
            "parallel": 1,
        }
        arrays = {"labels": np.zeros(n_faces, np.int32)}
    header = {"v": wire.PROTOCOL_VERSION, "id": "fuzz", "op": op, "token": t.token, "args": args}
    return header, arrays


def field_paths(op: str, header: dict, arrays: dict) -> list[tuple]:
    """Every field of a valid request that the fuzzer may make wrong."""
    paths = [("v",), ("id",), ("op",), ("token",)]
    if op == "shutdown":  # only changes that can never leave it valid (it would stop the server)
        return paths
    paths.append(("args",))

    def walk(value, path):
        if isinstance(value, dict):
            for k, v in value.items():
                paths.append(path + (k,))
                walk(v, path + (k,))
        elif isinstance(value, list):
            for i, v in enumerate(value):
                paths.append(path + (i,))
                walk(v, path + (i,))

    walk(header["args"], ("args",))
    if arrays:
        paths.append(("arrays",))
        for i in range(len(arrays)):
            paths += [
                ("arrays", i),
                ("arrays", i, "name"),
                ("arrays", i, "dtype"),
                ("arrays", i, "shape"),
                ("frame", i),
            ]
    return paths


def expected_codes(op: str, path: tuple) -> set[str]:
    """The answers a wrong value at `path` may earn (OK when the value happens to be valid)."""
    head = path[0]
    if head == "v":
        return {wire.BAD_VERSION, OK} | _natural(op)
    if head == "id":
        return {wire.BAD_MESSAGE, OK} | _natural(op)
    if head == "op":
        return {wire.UNKNOWN_OP, wire.BAD_MESSAGE}
    if head == "token":
        return {OK, wire.BAD_MESSAGE} if op == "hello" else {wire.UNAUTHORIZED}
    if head in ("arrays", "frame"):
        return {wire.BAD_MESSAGE, wire.BAD_ARGS, OK} | MESH_CODES
    if len(path) == 1:
        return {wire.BAD_ARGS, OK} | _natural(op)
    name = path[1]
    codes = {wire.BAD_ARGS, OK} | _natural(op)
    if name == "mesh_id":
        codes.add(wire.UNKNOWN_MESH)
    elif name == "engine":
        codes.add(wire.ENGINE_UNAVAILABLE)
    elif name == "segmentation_id":
        codes.add(wire.NO_SEGMENTATION)
    elif name == "job_id":
        codes.add(wire.UNKNOWN_JOB)
    elif name == "n_polygons":
        codes |= MESH_CODES
    return codes


def _natural(op: str) -> set[str]:
    """What the valid request itself may get: the known finished job leaves the server's table of
    the last 256 jobs once enough other jobs ran, after which cancelling it is `unknown_job`;
    `name_parts` without an endpoint url is `bad_args` (naming is off)."""
    return {"cancel": {wire.UNKNOWN_JOB}, "name_parts": {wire.BAD_ARGS}}.get(op, set())


def label(op: str, path: tuple) -> str:
    text = ".".join(f"[{p}]" if isinstance(p, int) else str(p) for p in path).replace(".[", "[")
    return f"{op}:{text}"


def mutated_frames(op: str, t: Target, path: tuple, value, req_id) -> list[bytes]:
    """The valid request of `op` with the field at `path` replaced by `value` (or removed)."""
    header, arrays = valid_request(op, t)
    header["id"] = req_id
    frames = [bytes(f) for f in wire.encode(header, arrays)]
    header = msgpack.unpackb(frames[0], raw=False)
    if path[0] == "frame":
        frames[1 + path[1]] = _mutate_bytes(frames[1 + path[1]], value)
    else:
        _set(header, path, value)
    frames[0] = msgpack.packb(header, use_bin_type=True)
    return frames


def _set(container, path: tuple, value) -> None:
    for key in path[:-1]:
        container = container[key]
    if value is DELETE:
        del container[path[-1]]
    else:
        container[path[-1]] = value


def _mutate_bytes(frame: bytes, how) -> bytes:
    """`how`: ("cut", n) drops n bytes, ("add", n) appends n, ("noise", seed) same length, random."""
    kind, n = how
    if kind == "cut":
        return frame[: max(0, len(frame) - 1 - n % max(len(frame), 1))]
    if kind == "add":
        return frame + bytes(1 + n % 64)
    return np.random.default_rng(n).integers(0, 256, len(frame), dtype=np.uint8).tobytes()


# ---- hypothesis strategies --------------------------------------------------------------------
def strategies():
    """(wrong values for a field, frame mutations, garbage messages) as hypothesis strategies."""
    from hypothesis import strategies as st

    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**63), 2**64 - 1),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=16),
        st.binary(max_size=16),
        st.sampled_from(["", "x" * 5000, "geosam2", "sampart3d", "<f8", "\0"]),
    )
    nested = st.recursive(
        scalars,
        lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
        max_leaves=10,
    )
    deep = st.integers(20, 400).map(_deeply_nested)
    wrong = st.one_of(scalars, nested, deep, st.just(DELETE))
    frame_changes = st.tuples(st.sampled_from(["cut", "add", "noise"]), st.integers(0, 2**31))
    garbage = st.one_of(
        st.lists(st.binary(max_size=64), min_size=1, max_size=5),  # anything at all
        nested.map(lambda v: [msgpack.packb(v, use_bin_type=True)]),  # msgpack, but not a header
        st.tuples(
            st.dictionaries(st.sampled_from(["v", "id", "op", "token", "args", "arrays"]), nested, max_size=6),
            st.lists(st.binary(max_size=32), max_size=3),
        ).map(lambda hf: [msgpack.packb(hf[0], use_bin_type=True), *hf[1]]),
    )
    return wrong, frame_changes, garbage


def _deeply_nested(depth: int):
    value: object = 1
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


# ---- running them against a server ------------------------------------------------------------
@dataclass
class Tally:
    """Messages tried per class and the answers they got."""

    answers: dict = field(default_factory=lambda: defaultdict(Counter))  # class -> code -> count
    violations: list = field(default_factory=list)
    sent: int = 0

    def add(self, cls: str, code: str) -> None:
        self.answers[cls][code] += 1
        self.sent += 1

    def by_kind(self) -> dict:
        """Totals per op (garbage apart) and code."""
        out: dict = defaultdict(Counter)
        for cls, codes in self.answers.items():
            out[cls.split(":")[0]].update(codes)
        return {k: dict(v) for k, v in sorted(out.items())}


def exchange(sock, frames: list, timeout_s: float = 20.0) -> list[dict]:
    """Send one message on a DEALER socket and read its answers up to the final one."""
    sock.send_multipart(frames)
    answers = []
    deadline = time.monotonic() + timeout_s
    while True:
        if not sock.poll(max(1, int((deadline - time.monotonic()) * 1000))):
            raise AssertionError(f"no final answer within {timeout_s} s (got {[a.get('kind') for a in answers]})")
        reply = sock.recv_multipart()
        if reply and reply[0] == b"":  # an empty first frame reads as a REQ envelope delimiter: echoed back
            reply = reply[1:]
        header, _ = wire.decode(reply)
        answers.append(header)
        if header.get("kind") in wire.FINAL_KINDS:
            return answers


def outcome(answers: list[dict]) -> str:
    final = answers[-1]
    return OK if final.get("ok") else str((final.get("error") or {}).get("code"))


def check_answers(answers: list[dict], req_id, allowed: set[str] | None) -> str | None:
    """A problem with the answers to one request, or None: exactly one final answer, last; the
    request's id on every answer (when it had a readable one); a code among `allowed`; never
    `internal`."""
    finals = [a for a in answers if a.get("kind") in wire.FINAL_KINDS]
    if len(finals) != 1 or answers[-1] is not finals[0]:
        return f"{len(finals)} final answers"
    if req_id is not None and any(a.get("id") != req_id for a in answers):
        return f"answer ids {[a.get('id') for a in answers]} for request {req_id!r}"
    code = outcome(answers)
    if code == wire.INTERNAL:
        return f"internal: {answers[-1]['error'].get('message')}"
    if allowed is not None and code not in allowed:
        return f"code {code!r} not in {sorted(allowed)}: {(answers[-1].get('error') or {}).get('message')}"
    return None


def all_fields(t: Target) -> list[tuple[str, tuple]]:
    """Every (op, field path) the structured fuzzer covers."""
    return [(op, path) for op in OPS for path in field_paths(op, *valid_request(op, t))]


def valid_id(value) -> bool:
    return (isinstance(value, str) and len(value) <= 128) or (
        isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**64
    )


def fuzz_one(sock, t: Target, tally: Tally, op: str, path: tuple, value, n: int) -> None:
    """Send the valid `op` request with `path` set to `value`, check and count the answers."""
    if op == "shutdown" and not _never_valid(path, value, t):
        return
    req_id = f"fz{n}"
    if path[0] == "frame" and not isinstance(value, tuple):
        return
    if path[0] != "frame" and isinstance(value, tuple):
        return
    try:
        frames = mutated_frames(op, t, path, value, req_id)
    except (ValueError, TypeError, OverflowError):  # not packable (msgpack's own nesting limit): nothing sent
        return
    answers = exchange(sock, frames)
    expect_id = value if path == ("id",) else req_id
    if path == ("id",) and not valid_id(value):
        expect_id = None
    problem = check_answers(answers, expect_id, expected_codes(op, path))
    tally.add(label(op, path), outcome(answers))
    if problem:
        tally.violations.append((label(op, path), repr(value)[:80], problem))


def _never_valid(path: tuple, value, t: Target) -> bool:
    """A changed shutdown must not be a valid shutdown."""
    if value is DELETE:  # no version, id, op or token: never runs
        return True
    if path == ("v",):
        return value != wire.PROTOCOL_VERSION
    if path == ("op",):
        return value != "shutdown"
    if path == ("token",):
        return value != t.token
    if path == ("id",):
        return not valid_id(value)
    return False


def garbage_one(sock, tally: Tally, frames: list[bytes]) -> None:
    answers = exchange(sock, frames)
    problem = check_answers(answers, None, None)
    tally.add("garbage", outcome(answers))
    if problem:
        tally.violations.append(("garbage", repr(frames)[:80], problem))
