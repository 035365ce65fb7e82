"""`segparts serve`: run the backend the Blender add-on talks to."""

from __future__ import annotations

import argparse
import logging
import logging.handlers
import math
import signal
import sys

from . import CliError

LOG_FILE_BYTES = 5 * 2**20  # --log-file rotates at this size ...
LOG_FILE_BACKUPS = 3  # ... keeping this many old files
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0..65535 (ZeroMQ would wrap 70000 around to 4464)."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be in 0..65535, not {port}")
    return port


def _number_at_least(minimum: float, kind=float):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not math.isfinite(value) or value < minimum:
            raise argparse.ArgumentTypeError(f"must be a finite number >= {minimum:g}, not {text}")
        return value

    return parse


def register(sub):
    p = sub.add_parser("serve", help="run the backend server (ZeroMQ, loopback by default)")
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only; ::1 for IPv6)"
    )
    p.add_argument("--port", type=port_number, default=5555, help="TCP port (0 = pick a free one; default 5555)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument(
        "--token-file",
        default=None,
        help="where to write the access token (default $SEGPARTS_RUNTIME_DIR or ~/.cache/segparts/token-PORT)",
    )
    p.add_argument(
        "--parent-pid",
        type=_number_at_least(1, int),
        default=None,
        help="exit when this process exits (the add-on passes Blender's)",
    )
    p.add_argument(
        "--max-faces",
        type=_number_at_least(1, int),
        default=5_000_000,
        help="largest mesh accepted (default 5,000,000 faces)",
    )
    p.add_argument(
        "--cache-mb",
        type=_number_at_least(1),
        default=2048,
        help="memory for everything kept per mesh: meshes, results, pick indexes (default 2048 MB)",
    )
    p.add_argument(
        "--max-message-mb",
        type=_number_at_least(1),
        default=1024,
        help="largest message accepted, header and arrays together (default 1024 MB, at most 2047)",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument(
        "--log-file",
        default=None,
        help=f"log here, rotated at {LOG_FILE_BYTES >> 20} MB with {LOG_FILE_BACKUPS} old files kept "
        "(default: standard error)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    import zmq

    from ..server import Server, check_settings, raise_fd_limit

    try:
        check_settings(
            port=args.port, cache_mb=args.cache_mb, max_faces=args.max_faces, max_message_mb=args.max_message_mb
        )
    except ValueError as exc:
        raise CliError(str(exc)) from None
    _configure_logging(args)
    if args.host not in LOOPBACK:
        logging.getLogger("segparts.server").warning(
            "binding to %s exposes the backend beyond this machine; only the token protects it", args.host
        )
    raise_fd_limit()
    try:
        server = Server(
            host=args.host,
            port=args.port,
            device=args.device,
            token_file=args.token_file,
            max_faces=args.max_faces,
            cache_mb=args.cache_mb,
            max_message_mb=args.max_message_mb,
            parent_pid=args.parent_pid,
        )
    except zmq.ZMQError as exc:
        raise CliError(
            f"cannot listen on {args.host}:{args.port}: {exc} (is a backend already running? "
            f"try `segparts ping --port {args.port}`)"
        ) from None
    except OSError as exc:
        raise CliError(f"cannot write the token file: {exc}") from None
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.stop())
    # one machine-readable line so launchers (the add-on, tests) learn the port and token file
    print(
        f"segparts serve: listening on {server.endpoint} device={server.device} token_file={server.token_file}",
        flush=True,
    )
    server.serve_forever()
    return 0


def _configure_logging(args) -> None:
    if args.log_file:
        try:
            handler = logging.handlers.RotatingFileHandler(
                args.log_file, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS
            )
        except OSError as exc:
            raise CliError(f"cannot open the log file: {exc}") from None
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=args.log_level, handlers=[handler])
