"""A least-recently-used cache bounded by (estimated) bytes, for meshes and segmentations."""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import fields, is_dataclass

import numpy as np


class LRUCache:
    """Not thread-safe on purpose: only the server's main loop touches it."""

    def __init__(self, max_bytes: int):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict = OrderedDict()  # key -> (value, nbytes)
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

    def put(self, key, value, nbytes: int | None = None) -> None:
        """Insert (most recent). Older entries are evicted until the total fits; an entry larger
        than the whole budget is still kept, alone, so a big mesh can be worked on."""
        nbytes = estimate_nbytes(value) if nbytes is None else int(nbytes)
        self.pop(key)
        self._items[key] = (value, nbytes)
        self.bytes += nbytes
        while self.bytes > self.max_bytes and len(self._items) > 1:
            _, (_, old) = self._items.popitem(last=False)
            self.bytes -= old

    def pop(self, key):
        item = self._items.pop(key, None)
        if item is None:
            return None
        self.bytes -= item[1]
        return item[0]

    def keys(self):
        return list(self._items)


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
