"""The add-on's running state: one backend session, the jobs in flight, the write-back queue and
the timer that drives them. Operators and the panel call in here; nothing here blocks.

The timer (`drain`) polls the socket, then runs queued write-back steps (generators) until ~8 ms
have passed, so a large result is applied over several ticks instead of freezing the UI; array
work runs in a background thread meanwhile (background.py). `drain` is a plain function: tests call it directly (timers don't fire in the
bpy module).
"""
from __future__ import annotations

import atexit
import sys
import time
from collections import deque
from concurrent.futures import Future
from pathlib import Path

import bpy
import numpy as np

from . import partdata, palette, session as session_mod

TICK_BUDGET_S = 0.008  # start no new write-back step after this; one step takes a few ms
BUSY_INTERVAL_S, IDLE_INTERVAL_S = 0.05, 0.25

session: session_mod.Session | None = None
jobs: dict[str, object] = {}  # object name -> SegmentJob / PickJob in flight
work: deque = deque()  # (key, generator) write-back steps
tick_stats = {"ticks": 0, "worst_s": 0.0, "last_s": 0.0}
setup_task = None  # setup.Task while "Set up backend" / "Fetch models" runs
_suppress_recut = False
_engine_items: list = []
parts_revision = 0  # bumped whenever a part list is rebuilt (the pick tool re-reads labels then)


# ---- configuration ---------------------------------------------------------------------------
def prefs():
    addon = bpy.context.preferences.addons.get(__package__)
    return addon.preferences if addon else None


def state_dir() -> Path:
    """The extension's user folder (survives upgrades); a config folder for legacy installs."""
    try:
        return Path(bpy.utils.extension_path_user(__package__, create=True))
    except (ValueError, RuntimeError, AttributeError):
        return Path(bpy.utils.user_resource("CONFIG", path="segment_parts", create=True))


def bundled_backend() -> Path:
    return Path(__file__).with_name("bundled_backend")


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def backend_python(p) -> str:
    if p is not None and p.python_path:
        return bpy.path.abspath(p.python_path)
    candidate = venv_python(state_dir() / "venv")
    return str(candidate) if candidate.exists() else ""


def make_config() -> session_mod.Config:
    p = prefs()
    port = p.port if p else 5555
    if port == 0:
        port = session_mod.free_port()
    return session_mod.Config(
        python=backend_python(p), host=p.host if p else "127.0.0.1", port=port,
        device=p.device if p else "auto", auto_start=p.auto_start if p else True,
        models_dir=bpy.path.abspath(p.models_dir) if p and p.models_dir else "", state_dir=str(state_dir()),
        manifest=str(bundled_backend() / "models" / "manifest.json"))


def _client_factory(host, port, token_file):
    from ._shared.client import BackendClient

    return BackendClient(host=host, port=port, token_file=token_file)


def get_session() -> session_mod.Session:
    global session
    if session is None:
        session = session_mod.Session(make_config(), _client_factory)
    return session


def configure_from_prefs() -> None:
    """Preferences changed: the next start uses them (a running backend is restarted)."""
    s = get_session()
    was_on = s.state in ("starting", "ready")
    s.stop()
    s.config = make_config()
    if was_on:
        s.start()
    ensure_timer()


def ensure_started() -> session_mod.Session:
    s = get_session()
    if s.state in ("off", "error"):
        s.config = make_config()
        s.start()
    ensure_timer()
    return s


def stop_backend() -> None:
    """Cancel the jobs and stop the backend we started (the Stop / Restart buttons)."""
    global session
    _waiting.clear()
    for job in list(jobs.values()):
        job.cancel()
    jobs.clear()
    work.clear()
    if session is not None:
        session.stop()
        session = None


def shutdown() -> None:
    """Stop everything we started (unregister, Blender exit)."""
    stop_backend()
    if setup_task is not None:
        setup_task.stop()
    from . import background

    background.shutdown()


atexit.register(shutdown)


@bpy.app.handlers.persistent
def on_load_pre(*_args) -> None:
    """Another .blend is opening: results for the old file's objects must not land in the new one."""
    for job in list(jobs.values()):
        job.cancel()
    jobs.clear()
    work.clear()
    _waiting.clear()
    set_message("")


# ---- the timer -------------------------------------------------------------------------------
def drain() -> float:
    """One tick: socket, then write-back steps within the budget. Returns the next interval."""
    t0 = time.perf_counter()
    s = session
    try:
        if s is not None:
            try:
                s.tick()
                _start_waiting()
            except Exception as exc:  # an exception would unregister the timer: report it instead
                set_message(f"Backend connection error: {exc}")
        if setup_task is not None:
            _tick_setup()
        while work and time.perf_counter() - t0 < TICK_BUDGET_S:
            key, gen, on_done = work[0]
            try:
                step = next(gen)
                if isinstance(step, Future) and not step.done():
                    break  # array work in the background thread: come back next tick
            except StopIteration:
                work.popleft()
                if on_done is not None:
                    on_done()
            except Exception as exc:  # a failed write-back must not kill the timer
                work.popleft()
                set_message(f"Write-back failed: {exc}")
    finally:
        dt = time.perf_counter() - t0
        tick_stats["ticks"] += 1
        tick_stats["last_s"] = dt
        tick_stats["worst_s"] = max(tick_stats["worst_s"], dt)
    if s is not None and s.changed:
        s.changed = False
        redraw()
    return BUSY_INTERVAL_S if _busy() else IDLE_INTERVAL_S


def _busy() -> bool:
    starting = session is not None and session.state == "starting"
    return bool(work) or bool(jobs) or bool(_waiting) or starting or setup_task is not None


def ensure_timer() -> None:
    if not bpy.app.timers.is_registered(drain):
        bpy.app.timers.register(drain, first_interval=0.05, persistent=True)


def run_until_idle(timeout: float = 60.0, poll_s: float = 0.02) -> None:
    """Drive `drain` until no job, write-back or start-up is pending (tests, the demo, benches)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        drain()
        if not _busy():
            return
        time.sleep(poll_s)
    raise TimeoutError("the add-on did not become idle in time")


def redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    for window in (wm.windows if wm else []):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


_message = ""


def set_message(text: str) -> None:
    global _message
    _message = text
    if session is not None:
        session.changed = True
    redraw()


def message() -> str:
    return _message


def undo_push(text: str) -> None:
    """Results applied from the timer are not inside an operator: push the undo step ourselves."""
    try:
        bpy.ops.ed.undo_push(message=text)
    except RuntimeError:
        pass  # no undo stack (background mode / the bpy module)


# ---- engines ---------------------------------------------------------------------------------
def engine_status() -> dict[str, dict]:
    s = session
    return s.engines() if s is not None and s.ready else {}


def engine_enum_items():
    status = engine_status()
    items = []
    for i, name in enumerate(status or ("geometric", "sampart3d", "geosam2")):
        info = status.get(name)
        if info is None:
            desc = "backend not connected"
        elif info.get("available"):
            desc = "available"
        else:
            desc = "unavailable: " + str(info.get("message", ""))
        icon = "CHECKMARK" if info and info.get("available") else "ERROR" if info else "DOT"
        label = {"geometric": "Geometric", "sampart3d": "SAMPart3D", "geosam2": "GeoSAM2"}.get(name, name)
        items.append((name, label, desc, icon, i))
    _engine_items[:] = items  # Blender needs the strings kept alive
    return _engine_items


# ---- segmentation ------------------------------------------------------------------------------
def start_segment(obj, engine: str) -> None:
    from . import jobs as jobs_mod, mesh_io
    from ._shared.client import mesh_id

    s = get_session()
    if not s.ready:
        raise RuntimeError(s.message)
    if obj.name in jobs and jobs[obj.name].active:
        raise RuntimeError(f"{obj.name!r} is already being segmented")
    arrays = mesh_io.mesh_arrays(obj)
    mid = mesh_id(arrays.vertices, arrays.faces, arrays.cues, arrays.appearance)
    name = obj.name

    def done(job, msg):
        jobs.pop(name, None)
        queue_work(("segment", name), _apply_segmentation(name, arrays, mid, engine, msg),
                   on_done=lambda: undo_push("Segment Parts"))

    def failed(job, text):
        jobs.pop(name, None)
        set_message(f"{name}: {text}")

    job = jobs_mod.SegmentJob(s, arrays, mid, engine, done, failed)
    jobs[name] = job
    set_message(f"Segmenting {name} with {engine}…")
    job.start()


_waiting: list[tuple[str, str]] = []  # (object name, engine) to segment once the backend is up


def segment_when_ready(obj_name: str, engine: str) -> None:
    _waiting.append((obj_name, engine))
    ensure_timer()


def _start_waiting() -> None:
    s = session
    if not _waiting or s is None or s.state == "starting":
        return
    waiting = list(_waiting)
    _waiting.clear()
    for name, engine in waiting:
        obj = bpy.data.objects.get(name)
        if s.state != "ready":
            set_message(f"{name}: {s.message}")
        elif obj is not None:
            try:
                start_segment(obj, engine)
            except (RuntimeError, ValueError) as exc:
                set_message(f"{name}: {exc}")


def start_pick(obj, engine: str, clicks: list[dict]) -> None:
    """Prompt clicks for an engine that answers them itself: the mask it returns becomes a new part."""
    from . import jobs as jobs_mod, mesh_io, picking
    from ._shared.client import mesh_id

    s = get_session()
    if not s.ready:
        raise RuntimeError(s.message)
    arrays = mesh_io.mesh_arrays(obj)
    mid = mesh_id(arrays.vertices, arrays.faces, arrays.cues, arrays.appearance)
    name = obj.name

    def done(job, msg):
        jobs.pop(name, None)
        queue_work(("pick", name), _apply_pick(name, arrays, msg), on_done=lambda: undo_push("Pick Part"))

    def failed(job, text):
        jobs.pop(name, None)
        set_message(f"{name}: {text}")

    job = jobs_mod.PickJob(s, arrays, mid, engine, clicks, done, failed,
                           scale=1.0 - obj.segparts.granularity)
    jobs[name] = job
    job.start()


def _apply_pick(name, arrays, msg):
    from . import editing, picking, writeback

    obj = bpy.data.objects.get(name)
    if obj is None or len(obj.data.polygons) != arrays.n_polygons:
        set_message(f"{name} changed; pick dropped")
        return
    mask = partdata.polygon_mask(msg.arrays["mask"], arrays.tri_poly, arrays.n_polygons)
    labels = writeback.labels(obj)
    if labels is None:
        labels = np.zeros(arrays.n_polygons, dtype=np.int32)
    labels, new_id = picking.split_off(labels, mask)
    yield
    yield from write_all(obj, labels, arrays.topology, keep=True)
    editing.set_selected_parts(obj, {new_id})
    set_message(f"{name}: picked {int(mask.sum())} faces as {palette.part_name(new_id)}")


def cancel(obj_name: str) -> None:
    job = jobs.get(obj_name)
    if job is not None:
        job.cancel()


def queue_work(key, gen, on_done=None) -> None:
    """Queue write-back steps; a newer entry with the same key replaces a queued older one."""
    for i, (k, _g, _d) in enumerate(work):
        if k == key and i > 0:  # the first may be half-run: let it finish
            del work[i]
            break
    work.append((key, gen, on_done))
    ensure_timer()


def _prepare_segmentation(result_arrays: dict, tri_poly, n_poly: int):
    """Triangle result -> polygon labels, polygon-level hierarchy and the matching slider scale.
    Pure numpy: runs in the background thread."""
    from ._shared.hierarchy import Hierarchy

    poly_labels = partdata.compact_labels(partdata.polygon_labels(result_arrays["labels"], tri_poly, n_poly))
    poly_leaf = partdata.polygon_labels(result_arrays["leaf_labels"], tri_poly, n_poly)
    parent, height = np.array(result_arrays["parent"]), np.array(result_arrays["height"])
    hierarchy = Hierarchy(poly_leaf, parent, height)
    scale = matching_scale(hierarchy, int(poly_labels.max()) + 1)
    return poly_labels, poly_leaf, parent, height, scale


def _live_object(name, n_polygons):
    obj = bpy.data.objects.get(name)
    if obj is None or obj.type != "MESH":
        set_message(f"{name} is gone; result dropped")
        return None
    if len(obj.data.polygons) != n_polygons:
        set_message(f"{name} changed while it was segmented; segment it again")
        return None
    return obj


def _apply_segmentation(name, arrays, mid, engine, msg):
    from . import background, writeback

    future = background.submit(_prepare_segmentation, msg.arrays, arrays.tri_poly, arrays.n_polygons)
    poly_labels, poly_leaf, parent, height, scale = yield from background.wait(future)
    obj = _live_object(name, arrays.n_polygons)
    if obj is None:
        return
    ensure_object_mode(obj)
    writeback.store_hierarchy(obj, poly_leaf, parent, height)
    yield
    yield from write_all(obj, poly_labels, arrays.topology)
    obj.segparts.engine, obj.segparts.mesh_id = engine, mid
    set_granularity_quietly(obj, 1.0 - scale)
    set_message(f"{name}: {len(obj.segparts.parts)} parts ({engine})")


def matching_scale(hierarchy, n_parts: int) -> float:
    """The cut scale whose number of parts is closest to n_parts (binary search on node heights)."""
    heights = np.unique(hierarchy.height)
    lo, hi = 0, len(heights) - 1
    while lo < hi:  # parts decrease as the scale grows
        mid = (lo + hi) // 2
        if int(hierarchy.active_at_scale(heights[mid]).sum()) > n_parts:
            lo = mid + 1
        else:
            hi = mid
    return float(heights[lo])


def write_all(obj, poly_labels, topo, keep: bool = False):
    """Generator: labels -> attribute, preview materials, vertex groups, part list."""
    from . import naming_ops, writeback

    naming_ops.restore_group_names(obj)  # the write-back finds groups by their canonical names
    preview = bpy.context.scene.segparts_preview if bpy.context.scene else True
    if not preview:
        writeback.clear_preview(obj)
    kept = {it.part_id: 0 for it in obj.segparts.parts if it.material} if keep else None
    counts = {}
    yield from writeback.write_parts(obj, poly_labels, topo, preview=preview, keep_parts=kept, vertex_counts=counts)
    refresh_parts(obj, poly_labels, keep, counts)


def refresh_parts(obj, poly_labels=None, keep: bool = False, vertex_counts: dict | None = None) -> None:
    """Rebuild the part list from the `part_id` attribute (the source of truth). keep=True keeps
    the names and materials of part ids that survive (editing); new labels start fresh."""
    from . import mesh_io, writeback

    global parts_revision
    parts_revision += 1
    if poly_labels is None:
        poly_labels = writeback.labels(obj)
    items = obj.segparts.parts
    old = {it.part_id: (it.name, it.material) for it in items} if keep else {}
    items.clear()
    if poly_labels is None:
        return
    if vertex_counts is None:
        topo = mesh_io.topology(obj.data)
        vertex_counts = partdata.part_vertex_counts(
            partdata.vertex_groups(poly_labels, topo.corner_verts, topo.loop_total, topo.n_vertices))
    faces = np.bincount(poly_labels[poly_labels >= 0])
    for part in np.flatnonzero(faces).tolist():
        it = items.add()
        name, material = old.get(part, (palette.part_name(part), None))
        it.part_id, it.name, it.material = part, name, material
        it.color = palette.part_colour(part)
        it.face_count = int(faces[part])
        it.vertex_count = int(vertex_counts.get(part, 0))
    obj.segparts.active_part = min(obj.segparts.active_part, max(len(items) - 1, 0))


def set_granularity_quietly(obj, value: float) -> None:
    global _suppress_recut
    _suppress_recut = True
    try:
        obj.segparts.granularity = value
    finally:
        _suppress_recut = False


def on_granularity_changed(obj, granularity: float) -> None:
    from . import mesh_io

    if _suppress_recut:
        return
    topo = mesh_io.topology(obj.data)  # read now, in the user's action, not in a timer tick
    queue_work(("recut", obj.name), _recut(obj.name, granularity, topo), on_done=lambda: undo_push("Granularity"))


def _recut(name, granularity, topo):
    from . import background, writeback

    obj = bpy.data.objects.get(name)
    if obj is None:
        return
    arrays = writeback.hierarchy_arrays(obj)
    scale = 1.0 - float(granularity)

    def cut():  # in the background thread: building the tree walks every node
        hierarchy = writeback.make_hierarchy(arrays)
        return None if hierarchy is None else hierarchy.cut(scale=scale)

    poly_labels = yield from background.wait(background.submit(cut))
    if poly_labels is None:
        set_message(f"{name} has no usable part hierarchy; segment it again")
        return
    obj = _live_object(name, topo.n_polygons)
    if obj is None:
        return
    yield from write_all(obj, poly_labels, topo)
    set_message(f"{name}: {len(obj.segparts.parts)} parts")


_suppress_visibility = False


def set_visibility_quietly(obj, visible: set[int]) -> None:
    global _suppress_visibility
    _suppress_visibility = True
    try:
        for it in obj.segparts.parts:
            it.visible = it.part_id in visible
    finally:
        _suppress_visibility = False


def on_visibility_changed(item, context) -> None:
    from . import writeback

    if _suppress_visibility:
        return
    obj = item.id_data
    hidden = {it.part_id for it in obj.segparts.parts if not it.visible}
    writeback.set_hidden_parts(obj, hidden)


def ensure_object_mode(obj) -> None:
    if obj.mode != "OBJECT":
        with bpy.context.temp_override(active_object=obj, object=obj):
            bpy.ops.object.mode_set(mode="OBJECT")


# ---- set-up tasks ----------------------------------------------------------------------------
def start_setup_task(task) -> None:
    global setup_task
    if setup_task is not None:
        raise RuntimeError("another set-up task is running")
    setup_task = task
    task.start()
    ensure_timer()


def _tick_setup() -> None:
    global setup_task
    task = setup_task
    task.tick()
    if task.finished:
        setup_task = None
        set_message(task.status)
        redraw()
    elif task.changed:
        task.changed = False
        redraw()
