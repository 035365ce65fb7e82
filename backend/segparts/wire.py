"""Message format between the add-on (DEALER) and the backend (ROUTER). See docs/protocol.md.

One source of truth for message shapes: the CLI, the tests and the add-on (which ships a copy of
this file, made by build_addon.py) all encode and decode through here. Needs numpy and msgpack only.

A message is a list of frames: frame 0 is a msgpack map (the header), the following frames are
raw little-endian C-contiguous arrays, described in order by header["arrays"] as
{name, dtype, shape}. Nothing is ever pickled.
"""

from __future__ import annotations

import math

import msgpack
import numpy as np

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 1 << 20
DEFAULT_MAX_MESSAGE_BYTES = 1 << 30  # a whole message (header + arrays); `segparts serve --max-message-mb`
MAX_ARRAYS = 32
MAX_NDIM = 4
# dtypes allowed on the wire (little-endian or byte-order-free)
ALLOWED_DTYPES = {"<f4", "<f8", "<i4", "<i8", "<u4", "<i2", "<u2", "|u1", "|i1", "|b1"}

# error codes (stable; the add-on switches on them)
BAD_MESSAGE = "bad_message"
BAD_VERSION = "bad_version"
UNAUTHORIZED = "unauthorized"
UNKNOWN_OP = "unknown_op"
BAD_ARGS = "bad_args"
UNKNOWN_MESH = "unknown_mesh"
UNKNOWN_JOB = "unknown_job"
ENGINE_UNAVAILABLE = "engine_unavailable"
NO_SEGMENTATION = "no_segmentation"
CANCELLED = "cancelled"
INTERNAL = "internal"


class ProtocolError(Exception):
    """A message that cannot be understood; becomes an error reply, never kills the server."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def _wire_dtype(arr: np.ndarray) -> np.dtype:
    dt = arr.dtype
    if dt == np.bool_:
        return np.dtype("|b1")
    return dt.newbyteorder("<") if dt.byteorder not in ("<", "|") else dt


def encode(header: dict, arrays: dict[str, np.ndarray] | None = None) -> list[bytes]:
    """Header + arrays -> frames. Arrays are converted to little-endian C order."""
    header = dict(header)
    header.setdefault("v", PROTOCOL_VERSION)
    frames_out: list = []
    specs = []
    for name, arr in (arrays or {}).items():
        arr = np.asarray(arr)
        arr = np.ascontiguousarray(arr, dtype=_wire_dtype(arr))
        if arr.dtype.str not in ALLOWED_DTYPES:
            raise ValueError(f"array {name!r} has dtype {arr.dtype.str}, not allowed on the wire")
        specs.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape)})
        frames_out.append(arr.data.cast("B") if arr.size else b"")
    header["arrays"] = specs
    return [msgpack.packb(header, use_bin_type=True), *frames_out]


def decode(frames: list) -> tuple[dict, dict[str, np.ndarray]]:
    """Frames -> (header, arrays), checking everything an untrusted peer could get wrong."""
    header = decode_header(frames)
    return header, decode_arrays(header, frames)


def decode_header(frames: list) -> dict:
    """The header alone: its size is checked before it is read (an oversized header is never
    copied), so a server can check the token before it looks at any array frame."""
    if not frames:
        raise ProtocolError(BAD_MESSAGE, "empty message")
    if len(frames[0]) > MAX_HEADER_BYTES:
        raise ProtocolError(BAD_MESSAGE, f"header frame of {len(frames[0])} bytes is over the {MAX_HEADER_BYTES} limit")
    try:  # msgpack reads the frame through the buffer protocol: no copy
        header = msgpack.unpackb(
            memoryview(frames[0]), raw=False, strict_map_key=True, max_bin_len=MAX_HEADER_BYTES, max_ext_len=0
        )
    except Exception as exc:  # msgpack raises many different types on garbage
        raise ProtocolError(BAD_MESSAGE, f"header is not valid msgpack: {type(exc).__name__}") from None
    if not isinstance(header, dict):
        raise ProtocolError(BAD_MESSAGE, "header must be a msgpack map")
    return header


def decode_arrays(header: dict, frames: list) -> dict[str, np.ndarray]:
    specs = header.get("arrays", [])
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise ProtocolError(BAD_MESSAGE, f"header 'arrays' must be a list of at most {MAX_ARRAYS} entries")
    if len(specs) != len(frames) - 1:
        raise ProtocolError(
            BAD_MESSAGE, f"header describes {len(specs)} arrays but {len(frames) - 1} array frames came"
        )
    arrays = {}
    for spec, frame in zip(specs, frames[1:]):
        name, arr = _decode_array(spec, frame)
        if name in arrays:
            raise ProtocolError(BAD_MESSAGE, f"array {name[:40]!r} sent twice")
        arrays[name] = arr
    return arrays


def _decode_array(spec, frame) -> tuple[str, np.ndarray]:
    if not isinstance(spec, dict):
        raise ProtocolError(BAD_MESSAGE, "each array spec must be a map {name, dtype, shape}")
    name, dtype, shape = spec.get("name"), spec.get("dtype"), spec.get("shape")
    if not isinstance(name, str) or not name or len(name) > 64:
        raise ProtocolError(BAD_MESSAGE, "array spec needs a string name of 1..64 characters")
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:  # a list or map is not hashable
        raise ProtocolError(
            BAD_MESSAGE,
            f"array {name!r}: dtype {repr(dtype)[:40]} not allowed; use one of {' '.join(sorted(ALLOWED_DTYPES))}",
        )
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_NDIM
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**40 for d in shape)
    ):
        raise ProtocolError(BAD_MESSAGE, f"array {name!r}: shape must be a list of up to 4 non-negative ints")
    dt = np.dtype(dtype)
    expected = math.prod(shape) * dt.itemsize
    buf = memoryview(frame).cast("B") if not isinstance(frame, (bytes, bytearray)) else frame
    if len(buf) != expected:
        raise ProtocolError(BAD_MESSAGE, f"array {name!r}: declared {dtype}{shape} = {expected} bytes, got {len(buf)}")
    arr = np.frombuffer(buf, dtype=dt).reshape(shape)
    return name, arr


def request(
    op: str, req_id, token: str | None = None, args: dict | None = None, arrays: dict[str, np.ndarray] | None = None
) -> list[bytes]:
    header = {"id": req_id, "op": op, "args": args or {}}
    if token is not None:
        header["token"] = token
    return encode(header, arrays)


def reply(req_id, kind: str, result: dict | None = None, arrays: dict[str, np.ndarray] | None = None) -> list[bytes]:
    """kind: "reply" (final answer to a quick op), "accepted" (a job started), "progress",
    "result" (a job's final answer)."""
    return encode({"id": req_id, "ok": True, "kind": kind, "result": result or {}}, arrays)


def error(req_id, code: str, message: str) -> list[bytes]:
    return encode({"id": req_id, "ok": False, "kind": "error", "error": {"code": code, "message": message}})


FINAL_KINDS = ("reply", "result", "error")
