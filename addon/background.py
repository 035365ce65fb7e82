"""numpy work off Blender's main thread (no bpy here: bpy may only be touched on the main thread).

A write-back generator submits its array preparation here and yields the Future until it is done,
so the timer keeps its ticks short; numpy releases the GIL in its heavy loops.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

_pool: ThreadPoolExecutor | None = None


def submit(fn, *args, **kwargs) -> Future:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segparts-prep")
    return _pool.submit(_then_trim, fn, *args, **kwargs)


def _then_trim(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    finally:
        _return_free_memory()


_LIBC = None


def _return_free_memory() -> None:
    """glibc keeps the freed temporaries of array work (hundreds of MB at 1M faces) in its arenas,
    and Blender's memory would stay that high; hand them back (as the backend does). Linux only;
    ctypes releases the GIL meanwhile."""
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util
        import sys

        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6") if sys.platform == "linux" else False
        except OSError:
            _LIBC = False
    trim = getattr(_LIBC, "malloc_trim", None) if _LIBC else None
    if trim is not None:
        trim(0)


def wait(future: Future):
    """Generator: yields the future until it is done (the timer comes back later)."""
    while not future.done():
        yield future
    return future.result()


def run(gen) -> None:
    """Run a write-back generator to the end right now (operators, tests, benches)."""
    for step in gen:
        if isinstance(step, Future):
            step.result()


def shutdown() -> None:
    global _pool
    if _pool is not None:
        _pool.shutdown(wait=True, cancel_futures=True)
        _pool = None
