"""The backend process: a ZeroMQ ROUTER serving the ops of docs/protocol.md.

Threads: the main loop owns the ROUTER socket and every piece of shared state (caches, job
table); one worker thread per device runs engine jobs from its queue. Workers never touch the
ROUTER: they put events on a queue and wake the main loop through an inproc PUSH/PULL pair, so a
long job never blocks `hello`, `status` or `cancel`. Heavy libraries (torch, sam2) are only
imported by engines when a job needs them.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import importlib.util
import itertools
import json
import logging
import math
import os
import queue
import re
import secrets
import shutil
import stat
import sys
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import zmq

from . import __version__, wire
from .appearance import from_wire as appearance_from_wire
from .cache import LRUCache, estimate_nbytes
from .engines import ENGINES, _MissingEngine, create_engine
from .engines.base import (
    Cancelled,
    CancelToken,
    Click,
    EngineUnavailable,
    OptionError,
    PickRequest,
    Segmentation,
    SegmentParams,
    check_options,
    describe,
    recut,
)
from .hierarchy import Hierarchy
from .mesh import APPEARANCE_ARRAYS, CUES, DEFAULT_MAX_FACES, Mesh, MeshError, validate_mesh

log = logging.getLogger("segparts.server")

DEFAULT_CACHE_MB = 2048
MIN_CACHE_MB = 1.0
MAX_CLICKS = 64
MAX_FRAMES = wire.MAX_ARRAYS + 3  # peer identity, a REQ delimiter, the header, the arrays
PROGRESS_INTERVAL_S = 0.1
HEARTBEAT_S = 2.0  # queued/running jobs repeat their progress this often, so clients can tell a hung backend
HANDSHAKE_MS = 5000  # a connection that has not finished the ZeroMQ handshake by then is closed
KEEP_FINISHED_JOBS = 256  # summaries only: a finished job drops its mesh, engine and result
MAX_REMEMBERED_PICKS = 1024  # (peer, mesh, engine) -> the segmentation a pick without an id refers to
BAD_MESSAGE_LOG_LINES = 20  # at most this many log lines about bad messages per ...
BAD_MESSAGE_LOG_WINDOW_S = 60.0  # ... window; the rest are counted and reported in one line
HEAVY_MODULES = ("torch", "sam2", "spconv")  # only engines running a job may load these


def detect_device(requested: str = "auto") -> str:
    """'cuda' when asked, or for 'auto' when an NVIDIA driver and a CUDA build of torch are both
    present; decided without importing torch (reads torch/version.py) so start-up stays fast."""
    if requested in ("cpu", "cuda"):
        return requested
    if not (Path("/proc/driver/nvidia/version").exists() or shutil.which("nvidia-smi")):
        return "cpu"
    spec = importlib.util.find_spec("torch")
    if spec is None or not spec.submodule_search_locations:
        return "cpu"
    version_py = Path(list(spec.submodule_search_locations)[0]) / "version.py"
    try:
        text = version_py.read_text()
    except OSError:
        return "cpu"
    for line in text.splitlines():
        if line.startswith("cuda") and "=" in line:
            return "cpu" if line.split("=", 1)[1].strip() in ("None", "") else "cuda"
    return "cpu"


def write_token_file(path: Path, token: str) -> None:
    """Write the token readable by this user only: into a folder only this user can enter (made
    0700, or an existing one of ours narrowed to it; one that another user owns or that is a
    symlink is refused), through a new temporary file (O_EXCL|O_NOFOLLOW, 0600) renamed over the
    name, so a symlink planted at the name is replaced, never followed."""
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    _secure_folder(folder)
    tmp = folder / f".{path.name}.{secrets.token_hex(8)}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, 0o600)
    try:
        try:
            os.write(fd, token.encode())
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _secure_folder(folder: Path) -> None:
    if os.name != "posix":  # Windows: the per-user profile folder is already private
        return
    st = os.lstat(folder)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise OSError(errno.EPERM, f"token folder {folder} is a symlink or not a folder; refusing to write there")
    if st.st_uid != os.getuid():
        raise OSError(errno.EPERM, f"token folder {folder} belongs to another user; refusing to write there")
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(folder, 0o700)  # our folder, but others could list or plant files in it


def raise_fd_limit() -> int:
    """Raise this process's open-file limit to its hard limit (many idle connections must not
    starve the owner's client of file descriptors). Returns the new soft limit."""
    try:
        import resource
    except ImportError:  # Windows
        return -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = max(soft, 1 << 20)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def check_settings(port=None, cache_mb=None, max_faces=None, max_message_mb=None) -> None:
    """Reject settings that would be silently wrong (a port ZeroMQ wraps around, a cache that can
    hold nothing, NaN); ValueError with the flag's name."""
    if port is not None and (not _is_int(port) or not 0 <= port <= 65535):
        raise ValueError(f"--port must be an integer in 0..65535 (0 = a free port), not {port!r}")
    if cache_mb is not None and (not _is_number(cache_mb) or not math.isfinite(cache_mb) or cache_mb < MIN_CACHE_MB):
        raise ValueError(f"--cache-mb must be a number of megabytes >= {MIN_CACHE_MB:g}, not {cache_mb!r}")
    if max_faces is not None and (not _is_int(max_faces) or max_faces < 1):
        raise ValueError(f"--max-faces must be an integer >= 1, not {max_faces!r}")
    if max_message_mb is not None and (
        not _is_number(max_message_mb) or not math.isfinite(max_message_mb) or not 1 <= max_message_mb <= 2047
    ):
        raise ValueError(f"--max-message-mb must be a number of megabytes in [1, 2047], not {max_message_mb!r}")


@dataclass(eq=False)
class Job:
    id: str
    op: str  # segment | pick
    envelope: list
    req_id: object
    engine_name: str
    engine: object
    mesh_id: str
    mesh: Mesh
    params: object  # SegmentParams or PickRequest
    result_key: tuple | None = None
    segmentation: Segmentation | None = None  # pick: the result to pick from; segment: cached result to re-cut
    cancel: CancelToken = field(default_factory=CancelToken)
    state: str = "queued"  # queued | running | done | failed | cancelled
    progress: float = 0.0
    stage: str = ""
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None

    def release(self) -> None:
        """A finished job keeps only what its summary needs; the mesh, the engine and the result
        stay in the cache, which bounds them."""
        self.engine = self.mesh = self.params = self.segmentation = None

    @property
    def peer(self) -> bytes:
        return bytes(self.envelope[0])

    def summary(self) -> dict:
        return {
            "job_id": self.id,
            "op": self.op,
            "engine": self.engine_name,
            "mesh_id": self.mesh_id,
            "state": self.state,
            "progress": self.progress,
            "stage": self.stage,
            "elapsed_s": round((self.finished or time.time()) - (self.started or self.created), 3),
        }


class ArgError(wire.ProtocolError):
    def __init__(self, message: str):
        super().__init__(wire.BAD_ARGS, message)


class Server:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 5555,
        device: str = "auto",
        token: str | None = None,
        token_file: str | Path | None = None,
        max_faces: int = DEFAULT_MAX_FACES,
        cache_mb: float = DEFAULT_CACHE_MB,
        max_message_mb: float = wire.DEFAULT_MAX_MESSAGE_BYTES / 2**20,
        parent_pid: int | None = None,
        context: zmq.Context | None = None,
    ):
        from .client import default_token_path, tcp_endpoint

        check_settings(port=port, cache_mb=cache_mb, max_faces=max_faces, max_message_mb=max_message_mb)
        self.device = detect_device(device)
        self.max_faces = int(max_faces)
        self.max_message_bytes = int(max_message_mb * 2**20)
        self.parent_pid = parent_pid
        self.token = token or secrets.token_urlsafe(32)
        self._ctx = context or zmq.Context.instance()
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        # the transport refuses (closes the connection on) any frame bigger than a whole message
        # may be, before allocating it; smaller frames are summed per message in _recv_message
        self._router.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)
        self._router.setsockopt(zmq.HANDSHAKE_IVL, HANDSHAKE_MS)
        self._router.setsockopt(zmq.ROUTER_MANDATORY, 1)  # a send to a gone peer raises: cancel its jobs
        self._router.setsockopt(zmq.TCP_KEEPALIVE, 1)
        if ":" in host:
            self._router.setsockopt(zmq.IPV6, 1)
        if port == 0:
            self.port = self._router.bind_to_random_port(tcp_endpoint(host, None))
        else:
            self._router.bind(tcp_endpoint(host, port))
            self.port = int(port)
        self.host = host
        self.endpoint = tcp_endpoint(host, self.port)

        self.token_file = Path(token_file) if token_file else default_token_path(self.port)
        write_token_file(self.token_file, self.token)
        self._wake_endpoint = f"inproc://segparts-wake-{uuid.uuid4().hex}"
        self._wake = self._ctx.socket(zmq.PULL)
        self._wake.bind(self._wake_endpoint)
        self._events: queue.Queue = queue.Queue()
        self._cache = LRUCache(int(cache_mb * 1024 * 1024))
        self._latest_segmentation: OrderedDict[tuple, str] = OrderedDict()  # (peer, mesh_id, engine) -> segmentation id
        self._bad_log = _RateLimitedLog(log, BAD_MESSAGE_LOG_LINES, BAD_MESSAGE_LOG_WINDOW_S)
        self._engines: dict[str, object] = {}
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()  # job state transitions (main loop vs workers)
        self._stop = threading.Event()
        self._started = time.time()
        self._ops = {
            "hello": self._op_hello,
            "upload_mesh": self._op_upload_mesh,
            "segment": self._op_segment,
            "pick": self._op_pick,
            "cancel": self._op_cancel,
            "status": self._op_status,
            "shutdown": self._op_shutdown,
            "name_parts": self._op_name_parts,
        }
        self._name_cache = None  # naming.NameCache, made on the first name_parts

    # ---- main loop -----------------------------------------------------------------------
    def serve_forever(self) -> None:
        poller = zmq.Poller()
        poller.register(self._router, zmq.POLLIN)
        poller.register(self._wake, zmq.POLLIN)
        next_parent_check = 0.0
        next_heartbeat = time.monotonic() + HEARTBEAT_S
        log.info("listening on %s (device %s, token file %s)", self.endpoint, self.device, self.token_file)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(100))
                if self._router in ready:
                    for _ in range(64):  # bounded burst, then look at worker events again
                        try:
                            frames, too_big = self._recv_message()
                        except zmq.Again:
                            break
                        self._handle(frames, too_big)
                if self._wake in ready:
                    while True:
                        try:
                            self._wake.recv(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                self._drain_events()
                if time.monotonic() >= next_heartbeat:
                    next_heartbeat = time.monotonic() + HEARTBEAT_S
                    self._heartbeat()
                if self.parent_pid and time.monotonic() >= next_parent_check:
                    next_parent_check = time.monotonic() + 0.5
                    if not _process_alive(self.parent_pid):
                        log.info("parent process %d is gone; exiting", self.parent_pid)
                        self._stop.set()
        finally:
            self._close()

    def _heartbeat(self) -> None:
        for job in list(self._jobs.values()):
            if job.state in ("queued", "running"):
                self._reply(
                    job.envelope,
                    job.req_id,
                    "progress",
                    {"job_id": job.id, "progress": job.progress, "stage": job.stage or job.state},
                )

    def stop(self) -> None:
        """Thread-safe request to stop the loop (signal handlers, tests)."""
        self._stop.set()

    def _close(self) -> None:
        for job in list(self._jobs.values()):
            job.cancel.cancel()
        for worker in self._workers.values():
            worker.stop()
        for worker in self._workers.values():
            worker.join(timeout=5)
        self._drain_events()
        self._router.close(0)
        self._wake.close(0)
        try:
            if self.token_file.read_text() == self.token:
                self.token_file.unlink()
        except OSError:
            pass

    def _recv_message(self) -> tuple[list, str | None]:
        """One multipart message, read frame by frame: past the frame count or the byte limit the
        rest is read and dropped at once (never kept or joined), and the reason is returned so the
        sender gets a `bad_message` answer. Raises zmq.Again when nothing is waiting."""
        frames, total, too_big = [], 0, None
        frame = self._router.recv(zmq.NOBLOCK, copy=False)
        while True:
            total += len(frame)
            if too_big is None:
                if len(frames) >= MAX_FRAMES:
                    too_big = f"message has more than {MAX_FRAMES - 3} array frames"
                elif total > self.max_message_bytes:
                    too_big = (
                        f"message is over the backend's limit of {self.max_message_bytes} bytes "
                        "(segparts serve --max-message-mb)"
                    )
            if too_big is None or len(frames) < 3:  # keep identity and header to answer the sender
                frames.append(frame)
            if not frame.more:
                return frames, too_big
            frame = self._router.recv(copy=False)  # the rest of a message is already here

    def _send(self, envelope: list, frames: list) -> None:
        try:
            self._router.send_multipart(envelope + frames, copy=False, flags=zmq.NOBLOCK)
        except zmq.Again:  # the peer does not read its answers: drop this one rather than block
            log.debug("peer's queue is full; answer dropped")
        except zmq.ZMQError as exc:
            if exc.errno == errno.EHOSTUNREACH:
                self._peer_gone(bytes(envelope[0]))
            else:  # socket closing: nothing to do
                log.debug("send failed: %s", exc)

    def _peer_gone(self, peer: bytes) -> None:
        """A client disconnected (closed, crashed, killed): nobody will read its jobs' answers, so
        stop them instead of running them to the end. Answers nothing (it is gone)."""
        for job in list(self._jobs.values()):
            if job.peer != peer:
                continue
            with self._lock:
                job.cancel.cancel()
                if job.state == "queued":
                    job.state, job.finished = "cancelled", time.time()
            if job.state == "cancelled":
                self._job_over(job)
        for key in [k for k in self._latest_segmentation if k[0] == peer]:
            del self._latest_segmentation[key]

    # ---- requests ------------------------------------------------------------------------
    def _handle(self, frames: list, too_big: str | None = None) -> None:
        # ROUTER prepends the peer identity; a REQ peer also adds an empty delimiter frame
        n_env = 2 if len(frames) > 2 and len(frames[1]) == 0 else 1
        envelope, body = frames[:n_env], frames[n_env:]
        req_id = None
        try:
            if too_big:
                raise wire.ProtocolError(wire.BAD_MESSAGE, too_big)
            header = wire.decode_header(body)
            req_id = _request_id(header)
            if not _is_int(header.get("v")) or header["v"] != wire.PROTOCOL_VERSION:  # true == 1 in Python
                raise wire.ProtocolError(
                    wire.BAD_VERSION,
                    f"protocol version {repr(header.get('v'))[:20]} is not "
                    f"supported; this backend speaks v{wire.PROTOCOL_VERSION}",
                )
            op = header.get("op")
            if not isinstance(op, str):
                raise wire.ProtocolError(wire.BAD_MESSAGE, "header needs an 'op' string")
            handler = self._ops.get(op)
            if handler is None:
                raise wire.ProtocolError(wire.UNKNOWN_OP, f"unknown op {op[:40]!r}; ops: {', '.join(self._ops)}")
            authorized = self._authorized(header.get("token"))
            if len(body) > 1 and not authorized:  # arrays are only decoded for a peer that holds the token
                raise wire.ProtocolError(
                    wire.UNAUTHORIZED if op != "hello" else wire.BAD_MESSAGE,
                    "arrays need the token" if op != "hello" else "hello takes no arrays",
                )
            if op != "hello" and not authorized:
                raise wire.ProtocolError(
                    wire.UNAUTHORIZED,
                    "missing or wrong token (read it from the token file this backend wrote when it started)",
                )
            arrays = wire.decode_arrays(header, body)
            args = header.get("args", {})
            if args is None:
                args = {}
            if not isinstance(args, dict):
                raise ArgError("'args' must be a map")
            if op == "hello":
                handler(envelope, req_id, args, authorized)
            else:
                handler(envelope, req_id, args, arrays)
        except (wire.ProtocolError, MeshError) as exc:
            if req_id is None:
                req_id = _salvage_id(body)
            self._bad_log.line("%s from peer %s: %s", exc.code, bytes(envelope[0]).hex()[:10], exc.message[:200])
            self._send(envelope, wire.error(req_id, exc.code, exc.message))
        except Exception as exc:  # a bug must not kill the server: report it and keep serving
            self._bad_log.line("internal error: %s", traceback.format_exc())
            self._send(envelope, wire.error(req_id, wire.INTERNAL, f"{type(exc).__name__}: {exc}"[:500]))

    def _authorized(self, token) -> bool:
        return isinstance(token, str) and hmac.compare_digest(token.encode(), self.token.encode())

    def _reply(self, envelope, req_id, kind: str, result: dict | None = None, arrays: dict | None = None):
        self._send(envelope, wire.reply(req_id, kind, result, arrays))

    def _engine(self, name: str):
        if name not in ENGINES:
            raise ArgError(f"unknown engine {name!r}; engines: {', '.join(ENGINES)}")
        if name not in self._engines:
            try:
                self._engines[name] = create_engine(name, self.device)
            except Exception as exc:  # broken engine code: report it as unavailable, keep serving
                log.error("engine %s failed to load: %s", name, traceback.format_exc())
                self._engines[name] = _MissingEngine(name, f"{type(exc).__name__}: {exc}")
        return self._engines[name]

    def _op_hello(self, envelope, req_id, args, authorized: bool):
        """Before the token, only what a client needs to connect: no pid, no paths. With the token
        (the Python client sends it when it has it), the engines' full availability too."""
        engines = {}
        for name in ENGINES:
            engine = self._engine(name)
            try:
                availability = engine.availability().to_dict()
            except Exception as exc:  # a broken engine must not break hello
                availability = {
                    "available": False,
                    "missing": [f"{type(exc).__name__}: {exc}"],
                    "fix": "",
                    "message": f"engine failed to load: {exc}",
                }
            try:
                description = describe(engine)
            except Exception as exc:
                log.error("engine %s cannot describe itself: %s", name, exc)
                description = describe(_MissingEngine(name, str(exc)))
            engines[name] = {**description, **(availability if authorized else _without_paths(availability))}
        result = {
            "name": "segparts",
            "version": __version__,
            "protocol": wire.PROTOCOL_VERSION,
            "device": self.device,
            "engines": engines,
            "max_faces": self.max_faces,
            "max_message_bytes": self.max_message_bytes,
            "ops": list(self._ops),
            "authorized": authorized,
        }
        if authorized:
            result["pid"] = os.getpid()
        self._reply(envelope, req_id, "reply", result)

    def _op_upload_mesh(self, envelope, req_id, args, arrays):
        claimed = args.get("mesh_id")
        if not arrays:
            if isinstance(claimed, str) and ("mesh", claimed) in self._cache:
                mesh = self._cache.get(("mesh", claimed))
                self._reply(envelope, req_id, "reply", self._mesh_info(claimed, mesh, cached=True))
                return
            raise wire.ProtocolError(wire.UNKNOWN_MESH, "this mesh is not on the backend; send its arrays")
        unknown = set(arrays) - {"vertices", "faces", "face_map", *CUES, *APPEARANCE_ARRAYS}
        if unknown:
            raise ArgError(
                f"unexpected arrays {sorted(unknown)}; send vertices, faces and optionally "
                f"face_map, {', '.join(CUES + APPEARANCE_ARRAYS)}"
            )
        if "vertices" not in arrays or "faces" not in arrays:
            raise ArgError("upload_mesh needs arrays 'vertices' (V,3) and 'faces' (F,3)")
        face_map = arrays.get("face_map")
        n_polygons = _opt_int(args, "n_polygons", 1)
        if face_map is not None and not np.issubdtype(face_map.dtype, np.integer):
            raise MeshError("bad_face_map", f"face_map must be integers, got dtype {face_map.dtype}")
        mesh = validate_mesh(
            arrays["vertices"],
            arrays["faces"],
            face_map,
            n_polygons,
            max_faces=self.max_faces,
            **{name: arrays.get(name) for name in CUES},
        )
        mesh.appearance = appearance_from_wire(arrays, mesh.n_vertices, mesh.n_faces)  # before the id
        if not mesh.vertices.flags.writeable:  # detach from the zmq frame, engines may need a writable copy
            mesh.vertices = mesh.vertices.copy()
        mid = mesh.content_hash
        cached = ("mesh", mid) in self._cache
        if cached:
            mesh = self._cache.get(("mesh", mid))
        else:
            self._cache.put(("mesh", mid), mesh, _mesh_nbytes(mesh))
        self._reply(envelope, req_id, "reply", self._mesh_info(mid, mesh, cached=cached))

    @staticmethod
    def _mesh_info(mid: str, mesh: Mesh, cached: bool) -> dict:
        return {
            "mesh_id": mid,
            "n_faces": mesh.n_faces,
            "n_vertices": mesh.n_vertices,
            "n_polygons": int(mesh.n_polygons or mesh.n_faces),
            "cached": cached,
        }

    def _mesh(self, args) -> tuple[str, Mesh]:
        mid = args.get("mesh_id")
        if not isinstance(mid, str):
            raise ArgError("'mesh_id' (string) is required; upload the mesh first")
        mesh = self._cache.get(("mesh", mid))
        if mesh is None:
            raise wire.ProtocolError(wire.UNKNOWN_MESH, f"mesh {mid[:40]!r} is not on the backend (upload it again)")
        return mid, mesh

    def _engine_arg(self, args):
        name = args.get("engine", "geometric")
        if not isinstance(name, str):
            raise ArgError("'engine' must be a string")
        engine = self._engine(name)
        availability = engine.availability()
        if not availability.available:
            raise wire.ProtocolError(
                wire.ENGINE_UNAVAILABLE, f"engine {name!r} is unavailable: {availability.message()}"
            )
        return name, engine

    def _op_segment(self, envelope, req_id, args, arrays):
        mid, mesh = self._mesh(args)
        parts, scale = _granularity(args, mesh.n_faces)
        name, engine = self._engine_arg(args)
        options = _options(engine, args)
        # granularity is not part of the id: a new granularity re-cuts the cached result
        seg_id = args.get("segmentation_id")
        if seg_id is None:
            seg_id = _segmentation_id(mid, name, options)
            cached = self._cache.get(("seg", seg_id))
        else:  # only a new granularity of that result: never a new (possibly long) segmentation
            cached = self._cached_segmentation(seg_id, mid, name)
        job = Job(
            uuid.uuid4().hex[:16],
            "segment",
            envelope,
            req_id,
            name,
            engine,
            mid,
            mesh,
            SegmentParams(parts=parts, scale=scale, options=options),
            result_key=("seg", seg_id),
            segmentation=cached.segmentation if cached is not None else None,
        )
        self._submit(job)

    def _op_pick(self, envelope, req_id, args, arrays):
        mid, mesh = self._mesh(args)
        parts, scale = _granularity(args, mesh.n_faces)
        clicks = _clicks(args, mesh.n_faces)
        name, engine = self._engine_arg(args)
        options = _options(engine, args)
        seg_id = args.get("segmentation_id")
        if seg_id is None:  # the latest segmentation this client asked for (never another client's)
            seg_id = self._latest_segmentation.get((bytes(envelope[0]), mid, name))
            if seg_id is None:
                raise wire.ProtocolError(
                    wire.NO_SEGMENTATION, f"no {name} segmentation of this mesh on the backend; run segment first"
                )
        cached = self._cached_segmentation(seg_id, mid, name)
        job = Job(
            uuid.uuid4().hex[:16],
            "pick",
            envelope,
            req_id,
            name,
            engine,
            mid,
            mesh,
            PickRequest(clicks=clicks, parts=parts, scale=scale, options=options),
            result_key=("seg", seg_id),
            segmentation=cached.segmentation,
        )
        self._submit(job)

    def _cached_segmentation(self, seg_id, mid: str, name: str) -> _CachedResult:
        """The cached result `seg_id` of this mesh and engine (`segmentation_id` of pick, segment)."""
        if not isinstance(seg_id, str):
            raise ArgError("'segmentation_id' must be a string (the one `segment` answered)")
        cached = self._cache.get(("seg", seg_id))
        if cached is None:
            raise wire.ProtocolError(
                wire.NO_SEGMENTATION,
                f"no {name} segmentation of this mesh on the backend with id {seg_id[:40]!r}; run segment first",
            )
        if (cached.mesh_id, cached.engine) != (mid, name):
            raise ArgError(f"segmentation {seg_id[:40]!r} is of another mesh or engine")
        return cached

    def _submit(self, job: Job) -> None:
        device = getattr(job.engine, "device", self.device) or "cpu"
        worker = self._workers.get(device)
        if worker is None:
            worker = self._workers[device] = _Worker(device, self)
            worker.start()
        self._remember(job)
        self._reply(job.envelope, job.req_id, "accepted", {"job_id": job.id, "device": device})
        worker.jobs.put(job)

    def _remember(self, job: Job) -> None:
        self._jobs[job.id] = job
        self._cache.pin(job.id, job.mesh_id)  # the mesh of a queued or running job is not evicted
        while len(self._jobs) > KEEP_FINISHED_JOBS:
            oldest = next((j for j in self._jobs.values() if j.state not in ("queued", "running")), None)
            if oldest is None:
                break
            del self._jobs[oldest.id]

    def _op_cancel(self, envelope, req_id, args, arrays):
        job_id = args.get("job_id")
        if not isinstance(job_id, str):
            raise ArgError("'job_id' (string) is required")
        job = self._jobs.get(job_id)
        if job is None:
            raise wire.ProtocolError(wire.UNKNOWN_JOB, f"no job {job_id[:40]!r}")
        with self._lock:
            before = job.state
            job.cancel.cancel()
            if before == "queued":  # never started: finish it now, the worker will skip it
                job.state, job.finished = "cancelled", time.time()
        if before == "queued":
            self._job_over(job)
            self._send(job.envelope, wire.error(job.req_id, wire.CANCELLED, "cancelled before it started"))
        state = {"queued": "cancelled", "running": "cancelling"}.get(before, before)
        self._reply(envelope, req_id, "reply", {"job_id": job_id, "state": state})

    def _op_status(self, envelope, req_id, args, arrays):
        active = [j.summary() for j in self._jobs.values() if j.state in ("queued", "running")]
        recent = [j.summary() for j in list(self._jobs.values())[-20:] if j.state not in ("queued", "running")]
        with self._lock:
            workers = {
                d: {"running": w.current.id if w.current else None, "queued": w.jobs.qsize()}
                for d, w in self._workers.items()
            }
        meshes = sum(1 for k in self._cache.keys() if k[0] == "mesh")  # noqa: SIM118 (LRUCache: keys(), no __iter__)
        self._reply(
            envelope,
            req_id,
            "reply",
            {
                "version": __version__,
                "device": self.device,
                "uptime_s": round(time.time() - self._started, 3),
                "jobs": active,
                "recent_jobs": recent,
                "workers": workers,
                "cache": {
                    "entries": len(self._cache),
                    "bytes": self._cache.bytes,
                    "limit_bytes": self._cache.max_bytes,
                    "meshes": meshes,
                },
                "max_faces": self.max_faces,
                "max_message_bytes": self.max_message_bytes,
                "pid": os.getpid(),
                "heavy_modules": [m for m in HEAVY_MODULES if m in sys.modules],
            },
        )

    def _op_name_parts(self, envelope, req_id, args, arrays):
        """Name parts with the vision-language endpoint the client configured (docs/naming.md).
        Runs in its own thread: it waits on the network, not on a device."""
        from . import naming

        mid, mesh = self._mesh(args)
        endpoint, object_name, n_views, parallel = naming.server_args(args, arrays, mesh.n_faces)
        if self._name_cache is None:
            self._name_cache = naming.NameCache(naming.default_cache_path())
        job = Job(uuid.uuid4().hex[:16], "name_parts", envelope, req_id, endpoint.model, None, mid, mesh, params=None)
        self._remember(job)
        self._reply(envelope, req_id, "accepted", {"job_id": job.id, "device": "network"})
        events = _EventPoster(self)
        job.state, job.started, job.stage = "running", time.time(), "naming"

        def run():
            def progress(fraction, stage):
                job.cancel.check()
                job.progress, job.stage = float(fraction), str(stage)
                events.post(("progress", job, (job.progress, job.stage)))

            try:
                names = naming.name_parts(
                    mesh,
                    arrays["labels"],
                    endpoint,
                    object_name,
                    self._name_cache,
                    n_views=n_views,
                    progress=progress,
                    cancel=job.cancel,
                    parallel=parallel,
                )
                job.state, job.finished, job.progress = "done", time.time(), 1.0
                events.post(
                    (
                        "reply",
                        job,
                        {
                            "job_id": job.id,
                            "model": endpoint.model,
                            "endpoint": endpoint.describe(),
                            "parts": [n.to_dict() for n in names],
                        },
                    )
                )
            except Cancelled:
                job.state, job.finished = "cancelled", time.time()
                events.post(("error", job, (wire.CANCELLED, "cancelled")))
            except Exception as exc:  # a bug must not kill the server: report it to the client
                log.error("name_parts job %s failed: %s", job.id, traceback.format_exc())
                job.state, job.finished = "failed", time.time()
                events.post(("error", job, (wire.INTERNAL, f"name_parts failed: {type(exc).__name__}: {exc}"[:500])))
            finally:
                events.close()

        threading.Thread(target=run, name=f"segparts-naming-{job.id}", daemon=True).start()

    def _op_shutdown(self, envelope, req_id, args, arrays):
        self._reply(envelope, req_id, "reply", {"stopping": True})
        self._stop.set()

    # ---- worker events (main loop only) --------------------------------------------------
    def _drain_events(self) -> None:
        while True:
            try:
                kind, job, payload = self._events.get_nowait()
            except queue.Empty:
                return
            try:
                self._on_event(kind, job, payload)
            except Exception as exc:
                log.error("failed to deliver %s of job %s: %s", kind, job.id, traceback.format_exc())
                self._send(job.envelope, wire.error(job.req_id, wire.INTERNAL, f"{type(exc).__name__}: {exc}"[:500]))
            if kind != "progress":  # the job's final answer is out
                self._job_over(job)

    def _job_over(self, job: Job) -> None:
        self._cache.unpin(job.id)
        job.release()
        # after every job, its answer already sent: RSS then follows what the cache holds
        # (every 2 s let 300 quick rounds end ~3 MB over the --cache-mb bound)
        _return_free_memory()

    def _on_event(self, kind: str, job: Job, payload) -> None:
        if kind == "progress":
            fraction, stage = payload
            self._reply(job.envelope, job.req_id, "progress", {"job_id": job.id, "progress": fraction, "stage": stage})
        elif kind == "error":
            code, message = payload
            self._send(job.envelope, wire.error(job.req_id, code, message))
        elif kind == "segmentation":
            payload.info["n_parts"] = _count_parts(payload.labels)
            recut = job.segmentation is not None  # a new granularity of a cached result
            if not recut:  # kept with the mesh: a result never evicts the mesh it belongs to
                self._cache.put(
                    job.result_key, _CachedResult(job.mesh_id, job.engine_name, payload), keep=[("mesh", job.mesh_id)]
                )
            self._remember_segmentation(job)
            self._send_segmentation(job, payload, cached=recut)
        elif kind == "reply":  # a finished job whose result is a plain map (name_parts)
            self._reply(job.envelope, job.req_id, "result", _plain(payload))
        elif kind == "pick":
            self._charge_pick_index(job)
            result = payload
            self._reply(
                job.envelope,
                job.req_id,
                "result",
                {
                    "job_id": job.id,
                    "engine": job.engine_name,
                    "node": int(result.node),
                    "parent": int(result.parent),
                    "children": [int(c) for c in result.children],
                    "info": _plain(result.info),
                },
                {"mask": np.asarray(result.mask, dtype=bool)},
            )

    def _remember_segmentation(self, job: Job) -> None:
        key = (job.peer, job.mesh_id, job.engine_name)
        self._latest_segmentation.pop(key, None)
        self._latest_segmentation[key] = job.result_key[1]
        while len(self._latest_segmentation) > MAX_REMEMBERED_PICKS:
            self._latest_segmentation.popitem(last=False)

    def _charge_pick_index(self, job: Job) -> None:
        """3D-point picks build a closest-point index that lives as long as the mesh: count it
        in the mesh's cache entry."""
        from .proximity import _INDEXES

        index = _INDEXES.get(job.mesh)
        if index is not None and ("mesh", job.mesh_id) in self._cache:
            self._cache.resize(("mesh", job.mesh_id), _mesh_nbytes(job.mesh) + _index_nbytes(index, job.mesh))

    def _send_segmentation(self, job: Job, seg: Segmentation, cached: bool) -> None:
        hierarchy = seg.hierarchy if seg.hierarchy is not None else Hierarchy.flat(seg.labels)
        labels = np.asarray(seg.labels, dtype=np.int32)
        n_parts = int(seg.info.get("n_parts", _count_parts(labels)))
        self._reply(
            job.envelope,
            job.req_id,
            "result",
            {
                "job_id": job.id,
                "engine": job.engine_name,
                "mesh_id": job.mesh_id,
                "n_parts": n_parts,
                "cached": cached,
                "segmentation_id": job.result_key[1],
                "info": _plain(seg.info),
            },
            {
                "labels": labels,
                "leaf_labels": hierarchy.leaf_labels,
                "parent": hierarchy.parent,
                "height": hierarchy.height,
            },
        )


class _EventPoster:
    """Posts events to the main loop from a thread of its own, waking it through a PUSH socket
    created in that thread (ZeroMQ sockets are not shared between threads)."""

    def __init__(self, server: Server):
        self.server = server
        self._wake: zmq.Socket | None = None

    def post(self, event: tuple) -> None:
        self.server._events.put(event)
        try:
            if self._wake is None:
                self._wake = self.server._ctx.socket(zmq.PUSH)
                self._wake.setsockopt(zmq.LINGER, 0)
                self._wake.connect(self.server._wake_endpoint)
            self._wake.send(b"", zmq.NOBLOCK)
        except zmq.ZMQError:  # wake-ups already queued, or the server is closing: it polls anyway
            pass

    def close(self) -> None:
        if self._wake is not None:
            self._wake.close(0)
            self._wake = None


class _Worker(threading.Thread):
    """Runs one device's jobs, one at a time, in arrival order."""

    def __init__(self, device: str, server: Server):
        super().__init__(name=f"segparts-worker-{device}", daemon=True)
        self.device = device
        self.server = server
        self.jobs: queue.Queue = queue.Queue()
        self.current: Job | None = None
        self._wake: zmq.Socket | None = None

    def stop(self):
        self.jobs.put(None)

    def post(self, event: tuple) -> None:
        """Hand an event to the main loop and wake it (from this thread; from any other thread
        the main loop still finds the event within its 100 ms poll)."""
        self.server._events.put(event)
        if threading.get_ident() == self.ident and self._wake is not None:
            try:
                self._wake.send(b"", zmq.NOBLOCK)
            except zmq.Again:  # the main loop has wake-ups queued already
                pass

    def run(self):
        self._wake = self.server._ctx.socket(zmq.PUSH)
        self._wake.setsockopt(zmq.LINGER, 0)
        self._wake.connect(self.server._wake_endpoint)
        try:
            self._loop()
        finally:
            self._wake.close(0)
            self._wake = None

    def _loop(self):
        while True:
            job = self.jobs.get()
            if job is None:
                return
            with self.server._lock:
                if job.state != "queued":  # cancelled while waiting; already answered
                    continue
                job.state, job.started = "running", time.time()
            self.current = job
            try:
                self._run(job)
            finally:
                with self.server._lock:
                    if self.current is job:
                        self.current = None

    def _run(self, job: Job) -> None:
        post = self.post
        last = [0.0]

        def progress(fraction: float, stage: str) -> None:
            job.cancel.check()  # every progress report is also a cancellation point
            job.progress, job.stage = float(min(max(fraction, 0.0), 1.0)), str(stage)
            now = time.monotonic()
            if now - last[0] >= PROGRESS_INTERVAL_S or job.progress >= 1.0:
                last[0] = now
                post(("progress", job, (job.progress, job.stage)))

        try:
            job.cancel.check()
            if job.op == "segment":
                if job.segmentation is not None:  # a new granularity of a cached result
                    seg = recut(job.engine, job.segmentation, job.params)
                else:
                    seg = job.engine.segment(job.mesh, job.params, progress, job.cancel)
                job.cancel.check()
                labels = np.asarray(seg.labels)
                if labels.shape != (job.mesh.n_faces,):
                    raise RuntimeError(f"engine returned {labels.shape} labels for {job.mesh.n_faces} faces")
                self._finish(job, "done", ("segmentation", job, seg))
            else:
                result = job.engine.pick(job.mesh, job.segmentation, job.params, job.cancel)
                if np.asarray(result.mask).shape != (job.mesh.n_faces,):
                    raise RuntimeError(f"engine returned a mask of shape {np.shape(result.mask)}")
                self._finish(job, "done", ("pick", job, result))
        except Cancelled:
            self._finish(job, "cancelled", ("error", job, (wire.CANCELLED, "cancelled")))
        except EngineUnavailable as exc:
            self._finish(job, "failed", ("error", job, (wire.ENGINE_UNAVAILABLE, str(exc))))
        except MeshError as exc:
            self._finish(job, "failed", ("error", job, (exc.code, exc.message)))
        except ValueError as exc:
            code = wire.BAD_ARGS if job.op == "pick" else wire.INTERNAL
            log.warning("job %s (%s %s) failed: %s", job.id, job.op, job.engine_name, traceback.format_exc())
            self._finish(job, "failed", ("error", job, (code, f"{job.engine_name} {job.op}: {exc}"[:500])))
        except Exception as exc:
            log.error("job %s (%s %s) failed: %s", job.id, job.op, job.engine_name, traceback.format_exc())
            self._finish(
                job,
                "failed",
                (
                    "error",
                    job,
                    (wire.INTERNAL, f"{job.engine_name} {job.op} failed: {type(exc).__name__}: {exc}"[:500]),
                ),
            )

    def _finish(self, job: Job, state: str, event: tuple) -> None:
        # the job's state and this worker's are final before its answer is posted, so a `status`
        # asked after the answer never sees the job still running
        with self.server._lock:
            job.state, job.finished = state, time.time()
            if state == "done":
                job.progress = 1.0
            self.current = None
        self.post(event)


# ---- helpers -------------------------------------------------------------------------------
def _salvage_id(body: list):
    """The request id of a message that failed validation, when its header can still be read,
    so the sender can match the error to its request."""
    try:
        return _request_id(wire.decode_header(body))
    except wire.ProtocolError:
        return None


def _count_parts(labels) -> int:
    """Distinct non-negative labels, O(F) (np.unique would sort a million labels)."""
    labels = np.asarray(labels).ravel()
    labels = labels[labels >= 0]
    if not labels.size:
        return 0
    if labels.max() > 4 * labels.size:  # sparse label values: don't allocate a huge histogram
        return int(np.unique(labels).size)
    return int(np.count_nonzero(np.bincount(labels)))


def _return_free_memory() -> None:
    """glibc keeps freed heap memory (a job's working set) in its arenas; give it back so the
    process's RSS follows what the cache holds. No-op elsewhere."""
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6") if sys.platform == "linux" else False
        except OSError:
            _LIBC = False
    if _LIBC and hasattr(_LIBC, "malloc_trim"):
        _LIBC.malloc_trim(0)


_LIBC = None


def _process_alive(pid: int) -> bool:
    import psutil  # (not os.kill(pid, 0): on Windows that would terminate the process)

    return psutil.pid_exists(pid)


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _opt_int(args: dict, name: str, minimum: int) -> int | None:
    value = args.get(name)
    if value is None:
        return None
    if not _is_int(value) or value < minimum or value > 2**40:
        raise ArgError(f"'{name}' must be an integer >= {minimum}")
    return int(value)


def _granularity(args: dict, n_faces: int) -> tuple[int | None, float | None]:
    parts = _opt_int(args, "parts", 1)
    scale = args.get("scale")
    if scale is not None:
        if (
            isinstance(scale, bool)
            or not isinstance(scale, (int, float))
            or not math.isfinite(scale)
            or not 0.0 <= scale <= 1.0
        ):
            raise ArgError("'scale' must be a number in [0, 1]")
        scale = float(scale)
    if parts is not None and scale is not None:
        raise ArgError("give 'parts' or 'scale', not both")
    return parts, scale


def _options(engine, args: dict) -> dict:
    """The engine's options, checked against its declaration before any job is accepted."""
    try:
        return check_options(engine, args.get("options") or {}, from_wire=True)
    except OptionError as exc:
        raise ArgError(str(exc)) from None


def _segmentation_id(mesh_id: str, engine: str, options: dict) -> str:
    text = json.dumps([mesh_id, engine, options], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


@dataclass
class _CachedResult:
    mesh_id: str
    engine: str
    segmentation: Segmentation


def _mesh_nbytes(mesh: Mesh) -> int:
    return estimate_nbytes([mesh.vertices, mesh.faces, mesh.face_map, *mesh.cues.values(), mesh.appearance])


def _index_nbytes(index, mesh: Mesh) -> int:
    """Arrays of a proximity.SurfaceIndex that the mesh does not already hold."""
    total = sum(g.faces.nbytes + g.tree.data.nbytes + g.tree.indices.nbytes for g in index.groups)
    for own, shared in ((index.vertices, mesh.vertices), (index.faces, mesh.faces)):
        if own is not shared:
            total += own.nbytes
    return int(total)


def _request_id(header: dict):
    raw_id = header.get("id")
    if (isinstance(raw_id, str) and len(raw_id) <= 128) or (_is_int(raw_id) and -(2**63) <= raw_id < 2**64):
        return raw_id
    raise wire.ProtocolError(wire.BAD_MESSAGE, "header needs an 'id' (string of at most 128 characters or integer)")


_PATH = re.compile(r"\s*\([^)]*\)|(?<![\w.])(?:[A-Za-z]:\\|/|~)\S*")


def _strip_paths(text) -> str:
    return _PATH.sub("", str(text)).strip()


def _without_paths(availability: dict) -> dict:
    """An engine's availability for a peer without the token: what is missing and the command
    that fetches it, with file system paths left out."""
    missing = [_strip_paths(m) for m in availability.get("missing", [])]
    out = {
        "available": bool(availability.get("available")),
        "missing": missing,
        "fix": _strip_paths(availability.get("fix", "")),
    }
    out["message"] = (
        "available"
        if out["available"]
        else ("missing: " + "; ".join(missing) + (f". To fix: {out['fix']}" if out["fix"] else ""))
    )
    return out


class _RateLimitedLog:
    """At most `lines` log lines per `window_s` (bad messages from a flood must not fill the disk);
    the number left out is reported with the next line that gets through."""

    def __init__(self, logger: logging.Logger, lines: int, window_s: float):
        self.logger, self.lines, self.window_s = logger, lines, window_s
        self._window_start, self._count, self._dropped = 0.0, 0, 0

    def line(self, fmt: str, *args) -> None:
        now = time.monotonic()
        if now - self._window_start >= self.window_s:
            self._window_start, self._count = now, 0
        if self._count >= self.lines:
            self._dropped += 1
            return
        self._count += 1
        if self._dropped:
            self.logger.warning("(%d similar messages not logged)", self._dropped)
            self._dropped = 0
        self.logger.warning(fmt, *args)


def _clicks(args: dict, n_faces: int) -> list[Click]:
    raw = args.get("clicks")
    if raw is None and ("face" in args or "point" in args):  # a single click given inline
        raw = [{k: args[k] for k in ("face", "point", "positive", "view") if k in args}]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_CLICKS:
        raise ArgError(f"'clicks' must be a list of 1..{MAX_CLICKS} clicks")
    clicks = []
    for c in raw:
        if not isinstance(c, dict):
            raise ArgError("each click must be a map {face | point, positive, view}")
        face, point, positive, view = c.get("face"), c.get("point"), c.get("positive", True), c.get("view")
        if face is not None and (not _is_int(face) or not 0 <= face < n_faces):
            raise ArgError(f"click face must be an integer in [0, {n_faces})")
        if point is not None:
            if (
                not isinstance(point, list)
                or len(point) != 3
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in point)
            ):
                raise ArgError("click point must be a list of 3 finite numbers")
            point = tuple(float(x) for x in point)
        if face is None and point is None:
            raise ArgError("a click needs 'face' or 'point'")
        if not isinstance(positive, bool):
            raise ArgError("click 'positive' must be true or false")
        if view is not None and not isinstance(view, dict):
            raise ArgError("click 'view' must be a map")
        clicks.append(Click(face=face, point=point, positive=positive, view=view))
    return clicks


def _plain(obj, depth: int = 6):
    """Make engine info msgpack-safe: numpy scalars -> Python, small arrays -> lists, rest -> str."""
    if depth < 0:
        return None
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist() if obj.size <= 1024 else f"<array {obj.dtype} {list(obj.shape)}>"
    if isinstance(obj, dict):
        return {str(k): _plain(v, depth - 1) for k, v in itertools.islice(obj.items(), 256)}
    if isinstance(obj, (list, tuple)):
        return [_plain(v, depth - 1) for v in obj[:1024]]
    return str(obj)[:200]
