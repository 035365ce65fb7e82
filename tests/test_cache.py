"""segparts.cache.SmallLRU: the one small LRU of the render scenes, SAMPart3D's backbone features
and GeoSAM2's render sessions."""

from __future__ import annotations

import threading

import pytest

from segparts.cache import SmallLRU


def test_builds_once_per_key_and_evicts_the_least_recently_used():
    cache, built = SmallLRU(2), []

    def build(key):
        built.append(key)
        return object()

    a = cache.get_or_build("a", lambda: build("a"))
    cache.get_or_build("b", lambda: build("b"))
    assert cache.get_or_build("a", lambda: build("a")) is a  # a is now the most recent
    cache.get_or_build("c", lambda: build("c"))  # evicts b
    assert built == ["a", "b", "c"]
    cache.get_or_build("b", lambda: build("b"))
    assert built == ["a", "b", "c", "b"] and len(cache.values()) == 2
    assert cache.get_or_build("a", lambda: build("a")) is not a  # a went when b came back


def test_key_none_and_failed_builds_are_not_cached():
    cache = SmallLRU(2)
    assert cache.get_or_build(None, lambda: 1) == 1 and cache.values() == []
    with pytest.raises(RuntimeError):
        cache.get_or_build("k", lambda: (_ for _ in ()).throw(RuntimeError("broken checkpoint")))
    assert cache.get_or_build("k", lambda: 2) == 2
    cache.clear()
    assert cache.values() == []


def test_threads_get_a_value_for_their_key():
    cache, out = SmallLRU(4), {}

    def worker(i):
        out[i] = cache.get_or_build(i % 3, lambda: i % 3)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(v == i % 3 for i, v in out.items())
