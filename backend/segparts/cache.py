"""Least-recently-used caches: `LRUCache`, bounded by (estimated) bytes, for the server's meshes and
segmentations; `SmallLRU`, the last few objects built per key (render scenes, features, sessions)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import fields, is_dataclass

import numpy as np


class LRUCache:
    """Not thread-safe on purpose: only the server's main loop touches it.

    Entries are evicted least recently used first until the total fits, except the ones in use:
    `pin(owner, mesh_id)` keeps ("mesh", mesh_id) while a job needs it, and `put(..., keep=[...])`
    never evicts the listed keys (a result does not push out its own mesh). So the total may pass
    the budget by what is in use, never by what is idle."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict = OrderedDict()  # key -> (value, nbytes)
        self._pins: dict = {}  # owner -> mesh id
        self.bytes = 0

    def __contains__(self, key) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def get(self, key, default=None):
        item = self._items.get(key)
        if item is None:
            return default
        self._items.move_to_end(key)
        return item[0]

    def put(self, key, value, nbytes: int | None = None, keep=()) -> None:
        """Insert (most recent), then evict down to the budget. An entry larger than the whole
        budget is still kept, so a big mesh can be worked on."""
        nbytes = estimate_nbytes(value) if nbytes is None else int(nbytes)
        self.pop(key)
        self._items[key] = (value, nbytes)
        self.bytes += nbytes
        self._evict(protected={key, *keep})

    def resize(self, key, nbytes: int) -> None:
        """Charge an entry anew (it grew, e.g. a mesh gained a pick index)."""
        item = self._items.get(key)
        if item is not None:
            self.bytes += int(nbytes) - item[1]
            self._items[key] = (item[0], int(nbytes))
            self._evict(protected={key})

    def pin(self, owner, mesh_id: str) -> None:
        self._pins[owner] = mesh_id

    def unpin(self, owner) -> None:
        self._pins.pop(owner, None)

    def _evict(self, protected: set) -> None:
        protected = protected | {("mesh", m) for m in self._pins.values()}
        for key in list(self._items):
            if self.bytes <= self.max_bytes:
                return
            if key not in protected:
                self.bytes -= self._items.pop(key)[1]

    def pop(self, key):
        item = self._items.pop(key, None)
        if item is None:
            return None
        self.bytes -= item[1]
        return item[0]

    def keys(self):
        return list(self._items)


class SmallLRU:
    """A thread-safe cache of the last few objects built per mesh key (scenes, face tables):
    re-rendering the same mesh reuses them; key None means "don't cache"."""

    def __init__(self, size: int):
        self.size = size
        self._items: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get_or_build(self, key, build):
        with self._lock:
            if key is not None and key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        value = build()  # outside the lock: building can take a while
        if key is not None:
            with self._lock:
                self._items[key] = value
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return value

    def values(self) -> list:
        with self._lock:
            return list(self._items.values())

    def clear(self):
        with self._lock:
            self._items.clear()


def estimate_nbytes(obj, depth: int = 4) -> int:
    """Bytes held by numpy arrays / tensors inside `obj` (dicts, lists, dataclasses, objects)."""
    if obj is None or depth < 0:
        return 0
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if hasattr(obj, "element_size") and hasattr(obj, "nelement"):  # torch.Tensor, without importing torch
        return int(obj.element_size() * obj.nelement())
    if isinstance(obj, dict):
        return sum(estimate_nbytes(v, depth - 1) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(estimate_nbytes(v, depth - 1) for v in obj)
    if is_dataclass(obj):
        return sum(estimate_nbytes(getattr(obj, f.name), depth - 1) for f in fields(obj))
    if hasattr(obj, "__dict__"):
        return sum(estimate_nbytes(v, depth - 1) for v in vars(obj).values())
    return 0
