"""Python client of the backend (DEALER socket). Used by the CLI, the tests and, as a copy, by the
Blender add-on — so it needs only numpy, msgpack, pyzmq and wire.py (see docs/protocol.md).

Two ways to use it:
- non-blocking (the add-on's timer): `send()` returns a request id, `poll()` returns whatever
  messages have arrived, each tagged with the id of the request it answers;
- blocking (CLI, tests): `call()` and the helpers `hello()`, `upload_mesh()`, `segment()`, ...
  wait for the final message of one request and raise `BackendError` on an error reply.
"""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

try:  # inside the segparts package, or the add-on's bundled `_shared` package
    from . import wire
except ImportError:  # a plain folder on sys.path
    import wire  # type: ignore[no-redef]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5555


class BackendLost(TimeoutError):
    """The backend answered (accepted a job, sent progress) and then went silent: it crashed,
    was killed or hangs. Distinct from a plain TimeoutError, where nothing ever answered."""


class BackendError(Exception):
    """An error reply from the backend; `code` is one of the wire error codes."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass
class Message:
    id: object
    kind: str  # reply | accepted | progress | result | error
    ok: bool
    result: dict = field(default_factory=dict)
    error: dict | None = None
    arrays: dict = field(default_factory=dict)

    @property
    def final(self) -> bool:
        return self.kind in wire.FINAL_KINDS


def tcp_endpoint(host: str, port: int | None) -> str:
    """tcp://HOST:PORT, with an IPv6 address in brackets (tcp://[::1]:5555); no port: tcp://HOST."""
    host = host.strip("[]")
    if ":" in host:
        host = f"[{host}]"
    return f"tcp://{host}" if port is None else f"tcp://{host}:{port}"


def runtime_dir() -> Path:
    return Path(os.environ.get("SEGPARTS_RUNTIME_DIR") or Path.home() / ".cache" / "segparts")


def default_token_path(port: int) -> Path:
    """Where `segparts serve --port PORT` writes its token (user-only file, mode 0600)."""
    return runtime_dir() / f"token-{port}"


def read_token(path: str | Path) -> str | None:
    try:
        return Path(path).read_text().strip() or None
    except OSError:
        return None


# optional authoring cues of upload_mesh, in hash order: per-face ids, then the (F, 3) 0/1 marks
# of the triangle edges the artist marked
CUES = ("material", "group", "marked_edges")
# optional appearance arrays of upload_mesh, in hash order (see docs/protocol.md)
APPEARANCE_ARRAYS = ("vertex_colors", "corner_colors", "face_colors", "uv", "texture", "normals")


def appearance_arrays(appearance: dict | None) -> dict:
    """The canonical wire form of appearance arrays, as the server stores and hashes them: float
    arrays (and uv) as little-endian float32, uint8 kept (the copy of segparts.appearance.canonical)."""
    out = {}
    for name in APPEARANCE_ARRAYS:
        values = (appearance or {}).get(name)
        if values is None:
            continue
        values = np.asarray(values)
        float32 = values.dtype.kind == "f" or name == "uv"
        out[name] = np.ascontiguousarray(values, dtype="<f4") if float32 else np.ascontiguousarray(values)
    return out


def cue_wire_array(name: str, values) -> np.ndarray:
    """A cue as upload_mesh sends it: ids as int32, edge marks as one byte each."""
    return np.ascontiguousarray(values, dtype="|u1" if name == "marked_edges" else "<i4")


def mesh_id(vertices, faces, cues: dict | None = None, appearance: dict | None = None) -> str:
    """The server's id for these arrays (the same digest as segparts.mesh.mesh_hash; this copy
    needs numpy only, for the add-on). `cues`: optional per-face `material`/`group` ids and
    `marked_edges` (F, 3) 0/1;
    `appearance`: optional appearance arrays by name (`APPEARANCE_ARRAYS`)."""
    h = hashlib.sha256()
    v = np.ascontiguousarray(vertices, dtype="<f8")
    f = np.ascontiguousarray(faces, dtype="<i8")
    for a in (v, f):
        h.update(np.asarray(a.shape, dtype="<i8").tobytes())
        h.update(a.data.cast("B"))
    for name in CUES:
        if cues and cues.get(name) is not None:
            h.update(name.encode())
            h.update(np.ascontiguousarray(cues[name], dtype="<i4").data.cast("B"))
    for name, values in appearance_arrays(appearance).items():  # name, dtype, shape, bytes
        h.update(name.encode())
        h.update(values.dtype.str.encode())
        h.update(np.asarray(values.shape, dtype="<i8").tobytes())
        h.update(memoryview(values).cast("B"))
    return h.hexdigest()[:32]


class BackendClient:
    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        token: str | None = None,
        token_file: str | Path | None = None,
        timeout: float = 30.0,
        context: zmq.Context | None = None,
    ):
        self.host, self.port, self.timeout = host, int(port), float(timeout)
        self.endpoint = tcp_endpoint(host, self.port)
        self._token = token
        self._token_given = token is not None  # else read from the file, and re-read on `unauthorized`
        self.max_message_bytes = wire.DEFAULT_MAX_MESSAGE_BYTES  # the backend's, once hello said it
        self._token_file = Path(token_file) if token_file else default_token_path(self.port)
        self._ctx = context or zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.DEALER)
        self._sock.setsockopt(zmq.LINGER, 0)
        if ":" in host.strip("[]"):
            self._sock.setsockopt(zmq.IPV6, 1)
        self._sock.connect(self.endpoint)
        self._pending: list[Message] = []  # messages received while call() waited for another id

    # ---- token ---------------------------------------------------------------------------
    @property
    def token(self) -> str | None:
        if self._token is None:  # read lazily: the server may write it after we connect
            self._token = read_token(self._token_file)
        return self._token

    # ---- non-blocking API ----------------------------------------------------------------
    def send(self, op: str, args: dict | None = None, arrays: dict | None = None) -> str:
        """Queue one request; returns its id. The token goes with every op (with `hello` too when
        known: the backend then also names missing files). Raises ValueError, before sending, for
        a message over the backend's size limit (the backend would close the connection)."""
        req_id = uuid.uuid4().hex[:16]
        frames = wire.request(op, req_id, token=self.token, args=args, arrays=arrays)
        size = sum(len(f) if isinstance(f, bytes) else f.nbytes for f in frames)
        if size > self.max_message_bytes:
            raise ValueError(
                f"{op} message of {size} bytes is over the backend's limit of "
                f"{self.max_message_bytes} bytes (segparts serve --max-message-mb)"
            )
        self._sock.send_multipart(frames, copy=False)  # zero-copy (pyzmq still copies frames < 64 kB)
        return req_id

    def reload_token(self) -> bool:
        """Read the token file again (the backend restarted with a new token). True if it changed."""
        if self._token_given:
            return False
        old, self._token = self._token, read_token(self._token_file)
        return self._token is not None and self._token != old

    def poll(self, timeout: float = 0.0) -> list[Message]:
        """All messages available now (waiting up to `timeout` seconds for the first one)."""
        out, self._pending = self._pending, []
        if not out and not self._sock.poll(int(timeout * 1000)):
            return out
        while self._sock.poll(0):
            out.append(self._receive())
        return out

    def _receive(self) -> Message:
        frames = self._sock.recv_multipart(copy=False)
        header, arrays = wire.decode(frames)
        return Message(
            id=header.get("id"),
            kind=header.get("kind", "reply"),
            ok=bool(header.get("ok")),
            result=header.get("result") or {},
            error=header.get("error"),
            arrays=arrays,
        )

    # ---- blocking API --------------------------------------------------------------------
    def call(
        self,
        op: str,
        args: dict | None = None,
        arrays: dict | None = None,
        timeout: float | None = None,
        on_progress: Callable[[float, str], None] | None = None,
        job_timeout: float | None = None,
    ) -> Message:
        """Send one request and wait for its final message (reply, result or error).

        `timeout` bounds the wait for the first answer (default: the client's timeout). Once a
        job is accepted, the backend repeats its progress every 2 s, so `timeout` then bounds the
        silence between two messages rather than the job; `job_timeout` bounds the whole job.
        Raises BackendError on an error reply, TimeoutError when the backend does not answer and
        BackendLost when it goes silent after answering. On `unauthorized` the token file is read
        again and the request sent once more (a restarted backend has a new token)."""
        try:
            return self._call_once(op, args, arrays, timeout, on_progress, job_timeout)
        except BackendError as exc:
            if exc.code != wire.UNAUTHORIZED or not self.reload_token():
                raise
        return self._call_once(op, args, arrays, timeout, on_progress, job_timeout)

    def _call_once(self, op, args, arrays, timeout, on_progress, job_timeout) -> Message:
        req_id = self.send(op, args, arrays)
        silence = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + silence
        job_deadline = float("inf")
        answered = False
        others: list[Message] = []
        try:
            while True:
                remaining = min(deadline, job_deadline) - time.monotonic()
                if remaining <= 0:
                    if time.monotonic() >= job_deadline:
                        raise TimeoutError(
                            f"the backend at {self.endpoint} has not finished {op!r} within {job_timeout:g} s"
                        )
                    if answered:
                        raise BackendLost(
                            f"the backend at {self.endpoint} stopped answering during {op!r} "
                            f"(no message for {max(silence, 10.0):g} s, though it sends one every "
                            "2 s): it crashed, was killed or hangs; see its log"
                        )
                    raise TimeoutError(f"no backend answered {op!r} at {self.endpoint} within {silence:g} s")
                if not self._sock.poll(int(min(remaining, 1.0) * 1000) + 1):
                    continue
                msg = self._receive()
                if msg.id != req_id:
                    others.append(msg)
                    continue
                deadline = time.monotonic() + max(silence, 10.0)  # heartbeats come every 2 s
                answered = True
                if msg.kind == "accepted":
                    if job_timeout:
                        job_deadline = time.monotonic() + job_timeout
                    continue
                if msg.kind == "progress":
                    if on_progress is not None:
                        on_progress(float(msg.result.get("progress", 0.0)), str(msg.result.get("stage", "")))
                    continue
                if not msg.ok:
                    err = msg.error or {}
                    raise BackendError(str(err.get("code", wire.INTERNAL)), str(err.get("message", "")))
                return msg
        finally:
            self._pending.extend(others)

    def hello(self) -> dict:
        result = self.call("hello").result
        limit = result.get("max_message_bytes")
        if isinstance(limit, int) and limit > 0:
            self.max_message_bytes = limit
        return result

    def upload_mesh(
        self,
        vertices,
        faces,
        face_map=None,
        n_polygons: int | None = None,
        check_first: bool = False,
        cues: dict | None = None,
        appearance: dict | None = None,
    ) -> str:
        """Upload a triangle mesh; returns its id (the content hash, see `mesh_id`).

        The server keeps meshes by content, so re-uploading one it holds re-validates and hashes
        the arrays but recomputes nothing else (its segmentations stay cached). Over loopback
        that is as fast as hashing here first; `check_first=True` hashes locally and asks before
        sending, which saves the transfer to a remote backend. `cues`: optional per-triangle
        integer arrays `material` and `group` and the (F, 3) 0/1 `marked_edges` (authoring cues; they
        belong to the mesh id).
        `appearance`: optional colour / UV / texture arrays by name (`APPEARANCE_ARRAYS`, shapes in
        docs/protocol.md; they belong to the mesh id too)."""
        cues = {k: cue_wire_array(k, v) for k, v in (cues or {}).items() if v is not None}
        looks = appearance_arrays(appearance)  # sent as they are hashed
        vertices = np.ascontiguousarray(vertices, dtype="<f8")
        faces = np.asarray(faces)
        if check_first:
            try:
                return self.call("upload_mesh", {"mesh_id": mesh_id(vertices, faces, cues, looks)}).result["mesh_id"]
            except BackendError as exc:
                if exc.code != wire.UNKNOWN_MESH:
                    raise
        if faces.size and faces.max() < 2**31 and faces.min() >= 0:
            faces = faces.astype("<i4", copy=False)  # half the bytes; the id is over int64 values
        arrays = {"vertices": vertices, "faces": faces, **cues, **looks}
        args = {}
        if face_map is not None:
            arrays["face_map"] = np.ascontiguousarray(face_map, dtype="<i8")
            if n_polygons is not None:
                args["n_polygons"] = int(n_polygons)
        return self.call("upload_mesh", args, arrays).result["mesh_id"]

    def segment(
        self,
        mesh_id: str,
        engine: str = "geometric",
        parts: int | None = None,
        scale: float | None = None,
        options: dict | None = None,
        on_progress: Callable[[float, str], None] | None = None,
        segmentation_id: str | None = None,
    ) -> Message:
        """Arrays of the result: labels, leaf_labels (F,) int32, parent (N,) int32, height (N,) float32.
        With `segmentation_id` (from an earlier result) only a new granularity of that result:
        error `no_segmentation` when the backend no longer holds it, never a new segmentation."""
        args: dict[str, object] = {"mesh_id": mesh_id, "engine": engine, "options": options or {}}
        if segmentation_id is not None:
            args["segmentation_id"] = segmentation_id
        if parts is not None:
            args["parts"] = int(parts)
        if scale is not None:
            args["scale"] = float(scale)
        return self.call("segment", args, on_progress=on_progress)

    def pick(
        self,
        mesh_id: str,
        engine: str = "geometric",
        face: int | None = None,
        point=None,
        positive: bool = True,
        clicks: list[dict] | None = None,
        parts: int | None = None,
        scale: float | None = None,
        options: dict | None = None,
        segmentation_id: str | None = None,
    ) -> Message:
        """Arrays of the result: mask (F,) bool; result: node, parent, children. `segmentation_id`
        (from segment's result) names the segmentation to pick from; without it, the latest this
        client asked for of that mesh and engine."""
        if clicks is None:
            click: dict[str, object] = {"positive": bool(positive)}
            if face is not None:
                click["face"] = int(face)
            if point is not None:
                click["point"] = [float(x) for x in point]
            clicks = [click]
        args: dict[str, object] = {"mesh_id": mesh_id, "engine": engine, "clicks": clicks, "options": options or {}}
        if segmentation_id is not None:
            args["segmentation_id"] = segmentation_id
        if parts is not None:
            args["parts"] = int(parts)
        if scale is not None:
            args["scale"] = float(scale)
        return self.call("pick", args)

    def cancel(self, job_id: str) -> dict:
        return self.call("cancel", {"job_id": job_id}).result

    def status(self) -> dict:
        return self.call("status").result

    def shutdown(self) -> dict:
        return self.call("shutdown").result

    def close(self):
        self._sock.close(0)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
