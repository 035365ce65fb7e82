"""`segparts serve`: run the backend the Blender add-on talks to."""
from __future__ import annotations

import logging
import signal
import sys

from . import CliError


def register(sub):
    p = sub.add_parser("serve", help="run the backend server (ZeroMQ, loopback by default)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=5555, help="TCP port (0 = pick a free one; default 5555)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--token-file", default=None,
                   help="where to write the access token (default $SEGPARTS_RUNTIME_DIR or ~/.cache/segparts/token-PORT)")
    p.add_argument("--parent-pid", type=int, default=None, help="exit when this process exits (the add-on passes Blender's)")
    p.add_argument("--max-faces", type=int, default=5_000_000, help="largest mesh accepted (default 5,000,000 faces)")
    p.add_argument("--cache-mb", type=float, default=2048, help="memory for cached meshes and results (default 2048 MB)")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.set_defaults(func=run)


def run(args) -> int:
    import zmq

    from ..server import Server

    logging.basicConfig(level=args.log_level, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        logging.getLogger("segparts.server").warning(
            "binding to %s exposes the backend beyond this machine; only the token protects it", args.host)
    try:
        server = Server(host=args.host, port=args.port, device=args.device, token_file=args.token_file,
                        max_faces=args.max_faces, cache_mb=args.cache_mb, parent_pid=args.parent_pid)
    except zmq.ZMQError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc} (is a backend already running? "
                       f"try `segparts ping --port {args.port}`)") from None
    except OSError as exc:
        raise CliError(f"cannot write the token file: {exc}") from None
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: server.stop())
    # one machine-readable line so launchers (the add-on, tests) learn the port and token file
    print(f"segparts serve: listening on {server.endpoint} device={server.device} token_file={server.token_file}",
          flush=True)
    server.serve_forever()
    return 0
