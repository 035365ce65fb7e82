"""`segparts segment MESH --out OUT`: segment one mesh file, in-process or through a running backend.

OUT `.npy`: int32 label per face in the file's face order (per original polygon when the file
has quads/n-gons; see segparts.meshio). OUT `.ply` / `.glb`: the mesh coloured by part.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from . import CliError
from .serve import port_number


def register(sub):
    p = sub.add_parser("segment", help="segment a mesh file into parts")
    p.add_argument("mesh", metavar="MESH", help="mesh file (.obj .ply .off .stl .glb .gltf)")
    p.add_argument("--engine", default="geometric", help="geometric (default), sampart3d or geosam2")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--parts", type=int, default=None, help="number of parts")
    g.add_argument("--scale", type=float, default=None, help="granularity in [0, 1] (0 = finest)")
    p.add_argument("--out", required=True, metavar="OUT", help=".npy (labels), .ply or .glb (coloured mesh)")
    p.add_argument(
        "--up-axis",
        choices=["y", "z"],
        default=None,
        help="the file's up axis (default: Y for .glb/.gltf, Z otherwise); Y-up is turned Z-up",
    )
    p.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="engine option (value parsed as JSON when possible); repeatable",
    )
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help="in-process device")
    p.add_argument("--port", type=port_number, default=None, help="use the backend running on this port instead")
    p.add_argument(
        "--timeout",
        type=float,
        default=10.0,
        help="with --port: seconds to wait for the backend to answer (default 10; a running job "
        "may take longer, it reports progress every 2 s)",
    )
    p.add_argument("--host", default="127.0.0.1", help="backend host (with --port)")
    p.add_argument(
        "--token-file",
        default=None,
        help="backend token file (with --port; default: the one `segparts serve --port PORT` writes)",
    )
    p.add_argument("--quiet", action="store_true", help="no summary line")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..mesh import MeshError
    from ..meshio import COLOURED_SUFFIXES, load_mesh, save_labels

    out = Path(args.out)
    if out.suffix.lower() not in (".npy", *COLOURED_SUFFIXES):
        raise CliError(f"--out must end in .npy, .ply or .glb (got {out.name})")
    if args.parts is not None and args.parts < 1:
        raise CliError("--parts must be at least 1")
    if args.scale is not None and not 0.0 <= args.scale <= 1.0:
        raise CliError("--scale must be in [0, 1]")
    if not args.timeout > 0:
        raise CliError("--timeout must be a positive number of seconds")
    options = _parse_options(args.option)
    try:
        mesh = load_mesh(args.mesh, up_axis=args.up_axis)
    except MeshError as exc:
        raise CliError(exc.message) from None
    started = time.perf_counter()
    with _progress_bar() as progress:
        if args.port is None:
            labels, n_parts = _segment_here(mesh, args, options, progress)
        else:
            labels, n_parts = _segment_remote(mesh, args, options, progress)
    elapsed = time.perf_counter() - started
    out.parent.mkdir(parents=True, exist_ok=True)
    written = save_labels(out, mesh, labels)
    if not args.quiet:
        print(
            json.dumps(
                {
                    "mesh": str(args.mesh),
                    "engine": args.engine,
                    "faces": int(len(written)),
                    "parts": n_parts,
                    "out": str(out),
                    "seconds": round(elapsed, 3),
                }
            )
        )
    return 0


def _parse_options(pairs: list[str]) -> dict:
    options = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CliError(f"--option needs KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


def _segment_here(mesh, args, options, progress):
    import numpy as np

    from ..engines import ENGINES, create_engine
    from ..engines.base import CancelToken, EngineUnavailable, OptionError, SegmentParams, check_options
    from ..server import detect_device

    if args.engine not in ENGINES:
        raise CliError(f"unknown engine {args.engine!r}; choose one of {', '.join(ENGINES)}")
    engine = create_engine(args.engine, detect_device(args.device))
    try:
        options = check_options(engine, options)
    except OptionError as exc:
        raise CliError(f"bad --option for engine {args.engine}: {exc}") from None
    availability = engine.availability()
    if not availability.available:
        raise CliError(f"engine {args.engine} is unavailable: {availability.message()}")
    try:
        seg = engine.segment(
            mesh, SegmentParams(parts=args.parts, scale=args.scale, options=options), progress, CancelToken()
        )
    except EngineUnavailable as exc:
        raise CliError(f"engine {args.engine} is unavailable: {exc}") from None
    except ValueError as exc:
        # engines report bad input (MeshError, bad option values, no usable masks, a checkpoint
        # that does not fit) as ValueError subclasses: one line, no traceback
        raise CliError(f"engine {args.engine} failed: {_one_line(exc)}") from None
    labels = np.asarray(seg.labels, dtype=np.int32)
    return labels, int(np.unique(labels[labels >= 0]).size)


def _one_line(exc: Exception) -> str:
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return " ".join(text.split())


def _segment_remote(mesh, args, options, progress):
    from ..appearance import wire_arrays
    from ..client import BackendClient, BackendError, BackendLost

    client = BackendClient(args.host, args.port, token_file=args.token_file, timeout=args.timeout)
    try:
        mid = client.upload_mesh(
            mesh.vertices, mesh.faces, cues=mesh.cues, appearance=wire_arrays(mesh.appearance, mesh.faces)
        )
        msg = client.segment(
            mid, engine=args.engine, parts=args.parts, scale=args.scale, options=options, on_progress=progress
        )
    except BackendLost as exc:
        raise CliError(str(exc)) from None
    except TimeoutError:
        raise CliError(
            f"no backend answered at {client.endpoint} within {args.timeout:g} s "
            f"(start one with `segparts serve --port {args.port}`)"
        ) from None
    except BackendError as exc:
        raise CliError(f"backend error {exc.code}: {exc.message}") from None
    finally:
        client.close()
    return msg.arrays["labels"], int(msg.result.get("n_parts", 0))


class _progress_bar:
    """A tqdm bar on stderr when it is a terminal; a silent callback otherwise."""

    def __enter__(self):
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(
                total=100, unit="%", file=sys.stderr, leave=False, bar_format="{desc} {bar} {n:.0f}% {elapsed}"
            )
        return self

    def __call__(self, fraction: float, stage: str) -> None:
        if self._bar is not None:
            self._bar.set_description_str(stage[:24])
            self._bar.n = round(100 * min(max(fraction, 0.0), 1.0))
            self._bar.refresh()

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.close()
