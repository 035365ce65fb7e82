"""The add-on's running state: one backend session, the jobs in flight per object, the write-back
queue, messages, set-up tasks and the timer that drives them. Nothing here blocks, and nothing here
knows what a job does (results.py asks for results and applies them; parts.py keeps the part list;
config.py the preferences and paths).

The timer (`drain`) polls the socket, then runs queued write-back steps (generators) until ~8 ms
have passed, so a large result is applied over several ticks instead of freezing the UI; array
work runs in a background thread meanwhile (background.py). `drain` is a plain function: tests
call it directly (timers don't fire in the bpy module).
"""

from __future__ import annotations

import atexit
import time
from collections import deque
from concurrent.futures import Future

import bpy

from . import background, config, engines, logs, session
from ._shared.client import BackendClient

log = logs.get_logger(__name__)

TICK_BUDGET_S = 0.008  # start no new write-back step after this; one step takes a few ms
BUSY_INTERVAL_S, IDLE_INTERVAL_S = 0.05, 0.25

_session: session.Session | None = None
object_jobs: dict[str, object] = {}  # object name -> the job in flight for it (jobs.SegmentJob, ...)
work: deque = deque()  # (key, generator, on_done) write-back steps
tick_stats = {"ticks": 0, "worst_s": 0.0, "last_s": 0.0}
setup_task = None  # setup.Task while "Set up backend" / "Fetch models" runs
_when_ready: list = []  # callbacks(session) to run once a starting backend is up (or failed)
_message = ""
_object_messages: dict[str, str] = {}  # object name -> the last message about it (the panel shows the active one's)
_engine_items: list = []


# ---- the backend session ---------------------------------------------------------------------
def _client_factory(host, port, token_file):
    return BackendClient(host=host, port=port, token_file=token_file)


def current_session() -> session.Session | None:
    """The session, if one was made (None before the first start and after Stop)."""
    return _session


def get_session() -> session.Session:
    global _session
    if _session is None:
        _session = session.Session(config.make_config(), _client_factory)
    return _session


def configure_from_prefs() -> None:
    """Preferences changed: the next start uses them (a running backend is restarted)."""
    s = get_session()
    was_on = s.state in ("starting", "ready")
    s.stop()
    s.config = config.make_config()
    if was_on:
        s.start()
    ensure_timer()


def ensure_started() -> session.Session:
    s = get_session()
    if s.state == "error":
        # a backend in the error state died, froze or stopped answering: the process we started is
        # ended (never reconnect to a hung one) and a new one is started
        stop_backend()
        s = get_session()
    if s.state == "off":
        s.config = config.make_config()
        s.start()
    ensure_timer()
    return s


def when_ready(callback) -> None:
    """Call `callback(session)` from the timer once the backend has started (or failed to)."""
    _when_ready.append(callback)
    ensure_timer()


def _run_when_ready() -> None:
    s = _session
    if not _when_ready or s is None or s.state == "starting":
        return
    waiting = list(_when_ready)
    _when_ready.clear()
    for callback in waiting:
        callback(s)


def cancel_all() -> None:
    """Cancel every job and drop queued write-backs."""
    _when_ready.clear()
    for job in list(object_jobs.values()):
        job.cancel()
    object_jobs.clear()
    work.clear()


def stop_backend() -> None:
    """Cancel the jobs and stop the backend we started (the Stop / Restart buttons)."""
    global _session
    cancel_all()
    if _session is not None:
        _session.stop()
        _session = None


def shutdown() -> None:
    """Stop everything we started (unregister, Blender exit)."""
    stop_backend()
    if setup_task is not None:
        setup_task.stop()
    background.shutdown()


atexit.register(shutdown)


@bpy.app.handlers.persistent
def on_load_pre(*_args) -> None:
    """Another .blend is opening: results for the old file's objects must not land in the new one."""
    cancel_all()
    _object_messages.clear()
    set_message("")


def cancel(obj_name: str) -> None:
    job = object_jobs.get(obj_name)
    if job is not None:
        job.cancel()


# ---- the timer -------------------------------------------------------------------------------
def drain() -> float:
    """One tick: socket, then write-back steps within the budget. Returns the next interval."""
    t0 = time.perf_counter()
    s = _session
    try:
        if s is not None:
            try:
                s.tick()
                _run_when_ready()
            except Exception as exc:  # an exception would unregister the timer: report it instead
                log.exception("backend connection error")
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
                if on_done is not None:  # an undo push (Blender saves its undo state): a tick of its own
                    work.appendleft((key, _call(on_done), None))
                    break
            except Exception as exc:  # a failed write-back must not kill the timer
                work.popleft()
                log.exception("write-back %s failed", key)
                set_message(f"Write-back failed: {exc}", key[1] if isinstance(key, tuple) else None)
    finally:
        dt = time.perf_counter() - t0
        tick_stats["ticks"] += 1
        tick_stats["last_s"] = dt
        tick_stats["worst_s"] = max(tick_stats["worst_s"], dt)
    if s is not None and s.changed:
        s.changed = False
        redraw()
    return BUSY_INTERVAL_S if _busy() else IDLE_INTERVAL_S


def _call(fn):
    """A one-step generator that calls fn."""
    fn()
    return
    yield  # unreachable: makes this function a generator


def _busy() -> bool:
    starting = _session is not None and _session.state == "starting"
    return bool(work) or bool(object_jobs) or bool(_when_ready) or starting or setup_task is not None


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


def queue_work(key, gen, on_done=None) -> None:
    """Queue write-back steps; a newer entry with the same key replaces a queued older one."""
    for i, (k, _g, _d) in enumerate(work):
        if k == key and i > 0:  # the first may be half-run: let it finish
            del work[i]
            break
    work.append((key, gen, on_done))
    ensure_timer()


def redraw() -> None:
    wm = getattr(bpy.context, "window_manager", None)
    for window in wm.windows if wm else []:
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "PREFERENCES"):
                area.tag_redraw()


def undo_push(text: str) -> None:
    """Results applied from the timer are not inside an operator: push the undo step ourselves."""
    try:
        bpy.ops.ed.undo_push(message=text)
    except RuntimeError:
        pass  # no undo stack (background mode / the bpy module)


# ---- messages --------------------------------------------------------------------------------
def set_message(text: str, obj_name: str | None = None) -> None:
    """The latest message; with obj_name it is also that object's own (shown only while it is active)."""
    global _message
    _message = text
    if text:
        log.info("%s", text)
    if obj_name is not None:
        _object_messages[obj_name] = text
    if _session is not None:
        _session.changed = True
    redraw()


def message(obj=None) -> str:
    """The message about `obj` (an object or its name), or the latest message of any kind."""
    if obj is None:
        return _message
    return _object_messages.get(obj if isinstance(obj, str) else obj.name, "")


# ---- engines ---------------------------------------------------------------------------------
def engine_status() -> dict[str, dict]:
    """The engines as the backend's hello describes them ({} until it is up)."""
    s = _session
    return s.engines() if s is not None and s.ready else {}


def engine_enum_items():
    _engine_items[:] = engines.enum_items(engine_status())  # Blender needs the strings kept alive
    return _engine_items


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
