"""The backend process: a ZeroMQ ROUTER serving the ops of docs/protocol.md.

Threads: the main loop owns the ROUTER socket and every piece of shared state (caches, job
table); one worker thread per device runs engine jobs from its queue. Workers never touch the
ROUTER: they put events on a queue and wake the main loop through an inproc PUSH/PULL pair, so a
long job never blocks `hello`, `status` or `cancel`. Heavy libraries (torch, sam2) are only
imported by engines when a job needs them.
"""
from __future__ import annotations

import hmac
import importlib.util
import itertools
import json
import logging
import math
import os
import queue
import secrets
import shutil
import sys
import threading
import time
import traceback
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import msgpack
import numpy as np
import zmq

from . import __version__, wire
from .appearance import from_wire as appearance_from_wire
from .cache import LRUCache, estimate_nbytes
from .engines import ENGINES, _MissingEngine, create_engine
from .engines.base import (CancelToken, Cancelled, Click, EngineUnavailable, PickRequest, Segmentation,
                           SegmentParams, recut)
from .hierarchy import Hierarchy
from .mesh import APPEARANCE_ARRAYS, DEFAULT_MAX_FACES, FACE_CUES, Mesh, MeshError, validate_mesh

log = logging.getLogger("segparts.server")

DEFAULT_CACHE_MB = 2048
MAX_CLICKS = 64
MAX_FRAME_BYTES = 1 << 30  # one array frame; a 5M-face mesh needs ~120 MB of int64 faces
PROGRESS_INTERVAL_S = 0.1
HEARTBEAT_S = 2.0  # queued/running jobs repeat their progress this often, so clients can tell a hung backend
KEEP_FINISHED_JOBS = 256
_ID_TYPES = (str, int)
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
    """Write the token readable by this user only (directory 0700, file 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if hasattr(os, "fchmod"):  # an older file may have had wider permissions (POSIX only)
            os.fchmod(fd, 0o600)
        os.write(fd, token.encode())
    finally:
        os.close(fd)


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

    def summary(self) -> dict:
        return {"job_id": self.id, "op": self.op, "engine": self.engine_name, "mesh_id": self.mesh_id,
                "state": self.state, "progress": self.progress, "stage": self.stage,
                "elapsed_s": round((self.finished or time.time()) - (self.started or self.created), 3)}


class ArgError(wire.ProtocolError):
    def __init__(self, message: str):
        super().__init__(wire.BAD_ARGS, message)


class Server:
    def __init__(self, host: str = "127.0.0.1", port: int = 5555, device: str = "auto",
                 token: str | None = None, token_file: str | Path | None = None,
                 max_faces: int = DEFAULT_MAX_FACES, cache_mb: float = DEFAULT_CACHE_MB,
                 parent_pid: int | None = None, context: zmq.Context | None = None):
        self.device = detect_device(device)
        self.max_faces = int(max_faces)
        self.parent_pid = parent_pid
        self.token = token or secrets.token_urlsafe(32)
        self._ctx = context or zmq.Context.instance()
        self._router = self._ctx.socket(zmq.ROUTER)
        self._router.setsockopt(zmq.LINGER, 0)
        self._router.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        if port == 0:
            self.port = self._router.bind_to_random_port(f"tcp://{host}")
        else:
            self._router.bind(f"tcp://{host}:{port}")
            self.port = int(port)
        self.host = host
        self.endpoint = f"tcp://{host}:{self.port}"
        from .client import default_token_path

        self.token_file = Path(token_file) if token_file else default_token_path(self.port)
        write_token_file(self.token_file, self.token)
        self._wake_endpoint = f"inproc://segparts-wake-{uuid.uuid4().hex}"
        self._wake = self._ctx.socket(zmq.PULL)
        self._wake.bind(self._wake_endpoint)
        self._events: queue.Queue = queue.Queue()
        self._cache = LRUCache(int(cache_mb * 1024 * 1024))
        self._latest_segmentation: dict[tuple, tuple] = {}  # (mesh_id, engine) -> cache key
        self._engines: dict[str, object] = {}
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._workers: dict[str, _Worker] = {}
        self._lock = threading.Lock()  # job state transitions (main loop vs workers)
        self._stop = threading.Event()
        self._started = time.time()
        self._ops = {"hello": self._op_hello, "upload_mesh": self._op_upload_mesh, "segment": self._op_segment,
                     "pick": self._op_pick, "cancel": self._op_cancel, "status": self._op_status,
                     "shutdown": self._op_shutdown, "name_parts": self._op_name_parts}
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
                            frames = self._router.recv_multipart(zmq.NOBLOCK, copy=False)
                        except zmq.Again:
                            break
                        self._handle(frames)
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
                self._reply(job.envelope, job.req_id, "progress",
                            {"job_id": job.id, "progress": job.progress, "stage": job.stage or job.state})

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

    def _send(self, envelope: list, frames: list) -> None:
        try:
            self._router.send_multipart(envelope + frames, copy=False)
        except zmq.ZMQError as exc:  # peer gone or socket closing: nothing to do
            log.debug("send failed: %s", exc)

    # ---- requests ------------------------------------------------------------------------
    def _handle(self, frames: list) -> None:
        # ROUTER prepends the peer identity; a REQ peer also adds an empty delimiter frame
        n_env = 2 if len(frames) > 2 and len(frames[1]) == 0 else 1
        envelope, body = frames[:n_env], frames[n_env:]
        req_id = None
        try:
            header, arrays = wire.decode(body)
            raw_id = header.get("id")
            if isinstance(raw_id, _ID_TYPES) and not isinstance(raw_id, bool):
                req_id = raw_id
            else:
                raise wire.ProtocolError(wire.BAD_MESSAGE, "header needs an 'id' (string or integer)")
            if header.get("v") != wire.PROTOCOL_VERSION:
                raise wire.ProtocolError(wire.BAD_VERSION, f"protocol version {header.get('v')!r} is not "
                                         f"supported; this backend speaks v{wire.PROTOCOL_VERSION}")
            op = header.get("op")
            if not isinstance(op, str):
                raise wire.ProtocolError(wire.BAD_MESSAGE, "header needs an 'op' string")
            handler = self._ops.get(op)
            if handler is None:
                raise wire.ProtocolError(wire.UNKNOWN_OP, f"unknown op {op[:40]!r}; ops: {', '.join(self._ops)}")
            if op != "hello":
                token = header.get("token")
                if not isinstance(token, str) or not hmac.compare_digest(token.encode(), self.token.encode()):
                    raise wire.ProtocolError(wire.UNAUTHORIZED, "missing or wrong token (read it from "
                                             f"{self.token_file})")
            args = header.get("args", {})
            if args is None:
                args = {}
            if not isinstance(args, dict):
                raise ArgError("'args' must be a map")
            handler(envelope, req_id, args, arrays)
        except wire.ProtocolError as exc:
            if req_id is None:
                req_id = _salvage_id(body)
            self._send(envelope, wire.error(req_id, exc.code, exc.message))
        except MeshError as exc:
            self._send(envelope, wire.error(req_id, exc.code, exc.message))
        except Exception as exc:  # a bug must not kill the server: report it and keep serving
            log.error("internal error: %s", traceback.format_exc())
            self._send(envelope, wire.error(req_id, wire.INTERNAL, f"{type(exc).__name__}: {exc}"[:500]))

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

    def _op_hello(self, envelope, req_id, args, arrays):
        engines = {}
        for name in ENGINES:
            try:
                engines[name] = self._engine(name).availability().to_dict()
            except Exception as exc:  # a broken engine must not break hello
                engines[name] = {"available": False, "missing": [f"{type(exc).__name__}: {exc}"],
                                 "fix": "", "message": f"engine failed to load: {exc}"}
        self._reply(envelope, req_id, "reply", {
            "name": "segparts", "version": __version__, "protocol": wire.PROTOCOL_VERSION,
            "device": self.device, "engines": engines, "max_faces": self.max_faces, "pid": os.getpid(),
            "ops": list(self._ops)})

    def _op_upload_mesh(self, envelope, req_id, args, arrays):
        claimed = args.get("mesh_id")
        if not arrays:
            if isinstance(claimed, str) and ("mesh", claimed) in self._cache:
                mesh = self._cache.get(("mesh", claimed))
                self._reply(envelope, req_id, "reply", self._mesh_info(claimed, mesh, cached=True))
                return
            raise wire.ProtocolError(wire.UNKNOWN_MESH, "this mesh is not on the backend; send its arrays")
        unknown = set(arrays) - {"vertices", "faces", "face_map", *FACE_CUES, *APPEARANCE_ARRAYS}
        if unknown:
            raise ArgError(f"unexpected arrays {sorted(unknown)}; send vertices, faces and optionally "
                           f"face_map, {', '.join(FACE_CUES + APPEARANCE_ARRAYS)}")
        if "vertices" not in arrays or "faces" not in arrays:
            raise ArgError("upload_mesh needs arrays 'vertices' (V,3) and 'faces' (F,3)")
        face_map = arrays.get("face_map")
        n_polygons = _opt_int(args, "n_polygons", 1)
        if face_map is not None and not np.issubdtype(face_map.dtype, np.integer):
            raise MeshError("bad_face_map", f"face_map must be integers, got dtype {face_map.dtype}")
        mesh = validate_mesh(arrays["vertices"], arrays["faces"], face_map, n_polygons, max_faces=self.max_faces,
                             **{name: arrays.get(name) for name in FACE_CUES})
        mesh.appearance = appearance_from_wire(arrays, mesh.n_vertices, mesh.n_faces)  # before the id
        if not mesh.vertices.flags.writeable:  # detach from the zmq frame, engines may need a writable copy
            mesh.vertices = mesh.vertices.copy()
        mid = mesh.content_hash
        cached = ("mesh", mid) in self._cache
        if cached:
            mesh = self._cache.get(("mesh", mid))
        else:
            self._cache.put(("mesh", mid), mesh,
                            estimate_nbytes([mesh.vertices, mesh.faces, mesh.face_map, *mesh.cues.values(),
                                             mesh.appearance]))
        self._reply(envelope, req_id, "reply", self._mesh_info(mid, mesh, cached=cached))

    @staticmethod
    def _mesh_info(mid: str, mesh: Mesh, cached: bool) -> dict:
        return {"mesh_id": mid, "n_faces": mesh.n_faces, "n_vertices": mesh.n_vertices,
                "n_polygons": int(mesh.n_polygons or mesh.n_faces), "cached": cached}

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
            raise wire.ProtocolError(wire.ENGINE_UNAVAILABLE, f"engine {name!r} is unavailable: {availability.message()}")
        return name, engine

    def _op_segment(self, envelope, req_id, args, arrays):
        mid, mesh = self._mesh(args)
        parts, scale = _granularity(args, mesh.n_faces)
        options = _options(args)
        name, engine = self._engine_arg(args)
        # granularity is not part of the key: a new granularity re-cuts the cached result
        key = ("seg", mid, name, json.dumps(options, sort_keys=True, default=str))
        job = Job(uuid.uuid4().hex[:16], "segment", envelope, req_id, name, engine, mid, mesh,
                  SegmentParams(parts=parts, scale=scale, options=options), result_key=key,
                  segmentation=self._cache.get(key))
        self._submit(job)

    def _op_pick(self, envelope, req_id, args, arrays):
        mid, mesh = self._mesh(args)
        parts, scale = _granularity(args, mesh.n_faces)
        clicks = _clicks(args, mesh.n_faces)
        options = _options(args)
        name, engine = self._engine_arg(args)
        key = self._latest_segmentation.get((mid, name))
        segmentation = self._cache.get(key) if key else None
        if segmentation is None:
            raise wire.ProtocolError(wire.NO_SEGMENTATION,
                                     f"no {name} segmentation of this mesh on the backend; run segment first")
        job = Job(uuid.uuid4().hex[:16], "pick", envelope, req_id, name, engine, mid, mesh,
                  PickRequest(clicks=clicks, parts=parts, scale=scale, options=options),
                  segmentation=segmentation)
        self._submit(job)

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
            self._send(job.envelope, wire.error(job.req_id, wire.CANCELLED, "cancelled before it started"))
        state = {"queued": "cancelled", "running": "cancelling"}.get(before, before)
        self._reply(envelope, req_id, "reply", {"job_id": job_id, "state": state})

    def _op_status(self, envelope, req_id, args, arrays):
        active = [j.summary() for j in self._jobs.values() if j.state in ("queued", "running")]
        recent = [j.summary() for j in list(self._jobs.values())[-20:] if j.state not in ("queued", "running")]
        workers = {d: {"running": w.current.id if w.current else None, "queued": w.jobs.qsize()}
                   for d, w in self._workers.items()}
        self._reply(envelope, req_id, "reply", {
            "version": __version__, "device": self.device, "uptime_s": round(time.time() - self._started, 3),
            "jobs": active, "recent_jobs": recent, "workers": workers,
            "cache": {"entries": len(self._cache), "bytes": self._cache.bytes, "limit_bytes": self._cache.max_bytes,
                      "meshes": sum(1 for k in self._cache.keys() if k[0] == "mesh")},
            "max_faces": self.max_faces, "pid": os.getpid(),
            "heavy_modules": [m for m in HEAVY_MODULES if m in sys.modules]})

    def _op_name_parts(self, envelope, req_id, args, arrays):
        """Name parts with the vision-language endpoint the client configured (docs/naming.md).
        Runs in its own thread: it waits on the network, not on a device."""
        from . import naming

        mid, mesh = self._mesh(args)
        endpoint, object_name, n_views, parallel = naming.server_args(args, arrays, mesh.n_faces)
        if self._name_cache is None:
            self._name_cache = naming.NameCache(naming.default_cache_path())
        job = Job(uuid.uuid4().hex[:16], "name_parts", envelope, req_id, endpoint.model, None, mid, mesh,
                  params=None)
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
                names = naming.name_parts(mesh, arrays["labels"], endpoint, object_name, self._name_cache,
                                          n_views=n_views, progress=progress, cancel=job.cancel,
                                          parallel=parallel)
                job.state, job.finished, job.progress = "done", time.time(), 1.0
                events.post(("reply", job, {"job_id": job.id, "model": endpoint.model,
                                            "endpoint": endpoint.describe(),
                                            "parts": [n.to_dict() for n in names]}))
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

    def _on_event(self, kind: str, job: Job, payload) -> None:
        if kind == "progress":
            fraction, stage = payload
            self._reply(job.envelope, job.req_id, "progress",
                        {"job_id": job.id, "progress": fraction, "stage": stage})
        elif kind == "error":
            code, message = payload
            self._send(job.envelope, wire.error(job.req_id, code, message))
        elif kind == "segmentation":
            payload.info["n_parts"] = _count_parts(payload.labels)
            recut = job.segmentation is not None  # a new granularity of a cached result
            if not recut:
                self._cache.put(job.result_key, payload)
            self._latest_segmentation[(job.mesh_id, job.engine_name)] = job.result_key
            self._send_segmentation(job, payload, cached=recut)
        elif kind == "reply":  # a finished job whose result is a plain map (name_parts)
            self._reply(job.envelope, job.req_id, "result", _plain(payload))
        elif kind == "pick":
            result = payload
            self._reply(job.envelope, job.req_id, "result",
                        {"job_id": job.id, "engine": job.engine_name, "node": int(result.node),
                         "parent": int(result.parent), "children": [int(c) for c in result.children],
                         "info": _plain(result.info)},
                        {"mask": np.asarray(result.mask, dtype=bool)})

    def _send_segmentation(self, job: Job, seg: Segmentation, cached: bool) -> None:
        hierarchy = seg.hierarchy if seg.hierarchy is not None else Hierarchy.flat(seg.labels)
        labels = np.asarray(seg.labels, dtype=np.int32)
        n_parts = int(seg.info.get("n_parts", _count_parts(labels)))
        self._reply(job.envelope, job.req_id, "result",
                    {"job_id": job.id, "engine": job.engine_name, "mesh_id": job.mesh_id, "n_parts": n_parts,
                     "cached": cached, "info": _plain(seg.info)},
                    {"labels": labels, "leaf_labels": hierarchy.leaf_labels, "parent": hierarchy.parent,
                     "height": hierarchy.height})


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
            self._finish(job, "failed", ("error", job, (wire.INTERNAL,
                                                        f"{job.engine_name} {job.op} failed: {type(exc).__name__}: {exc}"[:500])))

    def _finish(self, job: Job, state: str, event: tuple) -> None:
        job.state, job.finished = state, time.time()
        if state == "done":
            job.progress = 1.0
        self.post(event)


# ---- helpers -------------------------------------------------------------------------------
def _salvage_id(body: list):
    """The request id of a message that failed validation, when its header can still be read,
    so the sender can match the error to its request."""
    try:
        if len(body[0]) > wire.MAX_HEADER_BYTES:
            return None
        header = msgpack.unpackb(bytes(body[0]), raw=False, max_bin_len=0, max_ext_len=0)
    except Exception:
        return None
    rid = header.get("id") if isinstance(header, dict) else None
    return rid if isinstance(rid, _ID_TYPES) and not isinstance(rid, bool) else None


def _count_parts(labels) -> int:
    """Distinct non-negative labels, O(F) (np.unique would sort a million labels)."""
    labels = np.asarray(labels).ravel()
    labels = labels[labels >= 0]
    if not labels.size:
        return 0
    if labels.max() > 4 * labels.size:  # sparse label values: don't allocate a huge histogram
        return int(np.unique(labels).size)
    return int(np.count_nonzero(np.bincount(labels)))


def _process_alive(pid: int) -> bool:
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        import ctypes

        kernel32 = ctypes.windll.kernel32
        handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return kernel32.GetLastError() == 5  # access denied: it exists
        code = ctypes.c_ulong()
        ok = kernel32.GetExitCodeProcess(handle, ctypes.byref(code))
        kernel32.CloseHandle(handle)
        return bool(ok) and code.value == 259  # STILL_ACTIVE
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _is_int(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


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
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) \
                or not 0.0 <= scale <= 1.0:
            raise ArgError("'scale' must be a number in [0, 1]")
        scale = float(scale)
    if parts is not None and scale is not None:
        raise ArgError("give 'parts' or 'scale', not both")
    return parts, scale


def _options(args: dict) -> dict:
    options = args.get("options") or {}
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise ArgError("'options' must be a map with string keys")
    return options


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
            if (not isinstance(point, list) or len(point) != 3
                    or not all(isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
                               for x in point)):
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

