"""Paths for batch inputs and outputs: local paths, or URLs (`s3://`, `gs://`, `file://`, ...)
through fsspec so every node of a cluster can reach the same files.

Writes are atomic: local files are written to a temporary name in the same folder and renamed
(`os.replace`), so a crash never leaves a half-written output under its real name; on object
stores an object only appears when its upload completes, which gives the same guarantee.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from pathlib import Path

CHUNK = 1 << 20


def is_url(path: str | os.PathLike) -> bool:
    return "://" in str(path)


def join(base: str | os.PathLike, *names: str) -> str:
    if is_url(base):
        return "/".join([str(base).rstrip("/"), *names])
    return str(Path(base, *names))


def _fs(url: str):
    import fsspec

    return fsspec.core.url_to_fs(url)  # (filesystem, path inside it)


def exists(path: str) -> bool:
    if is_url(path):
        fs, inner = _fs(path)
        return fs.exists(inner)
    return os.path.exists(path)


def read_bytes(path: str) -> bytes:
    if is_url(path):
        fs, inner = _fs(path)
        return fs.cat_file(inner)
    return Path(path).read_bytes()


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    if is_url(path):
        fs, inner = _fs(path)
        with fs.open(inner, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    else:
        with open(path, "rb") as fh:
            while chunk := fh.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def makedirs(path: str) -> None:
    if is_url(path):
        fs, inner = _fs(path)
        fs.makedirs(inner, exist_ok=True)
    else:
        os.makedirs(path, exist_ok=True)


@contextlib.contextmanager
def local_copy(path: str):
    """A local file with the content of `path` (the path itself when it is local)."""
    if not is_url(path):
        yield path
        return
    fs, inner = _fs(path)
    suffix = Path(inner).suffix
    with tempfile.TemporaryDirectory(prefix="segparts-in-") as tmp:
        local = os.path.join(tmp, "input" + suffix)
        fs.get_file(inner, local)
        yield local


@contextlib.contextmanager
def atomic_output(path: str):
    """Yields a local temporary path with the same suffix as `path`; once the body returns,
    that file becomes `path` in one step. On an exception nothing appears under `path`."""
    suffix = Path(str(path)).suffix
    if is_url(path):
        with tempfile.TemporaryDirectory(prefix="segparts-out-") as tmp:
            local = os.path.join(tmp, "output" + suffix)
            yield local
            fs, inner = _fs(path)
            fs.makedirs(os.path.dirname(inner) or ".", exist_ok=True)
            fs.put_file(local, inner)
        return
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, local = tempfile.mkstemp(prefix=f".{Path(path).stem}.", suffix=".part" + suffix, dir=folder)
    os.close(fd)
    try:
        yield local
        os.replace(local, path)
    finally:
        if os.path.exists(local):
            os.unlink(local)


def write_bytes(path: str, data: bytes) -> None:
    with atomic_output(path) as local:
        Path(local).write_bytes(data)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode())


def append_line(path: str, line: str) -> None:
    """Append one line (local files: flushed at once, so a crash keeps every earlier line)."""
    if is_url(path):  # object stores cannot append: rewrite (errors are few)
        old = read_bytes(path) if exists(path) else b""
        write_bytes(path, old + line.encode() + b"\n")
        return
    with open(path, "a") as fh:
        fh.write(line + "\n")
        fh.flush()
