"""`segparts ping`: ask a running backend who it is; exit 0 and print one JSON object."""

from __future__ import annotations

import json

from . import CliError
from .serve import port_number


def register(sub):
    p = sub.add_parser("ping", help="check that a backend answers; prints version, engines, device")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=port_number, default=5555)
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..client import BackendClient, BackendError

    client = BackendClient(args.host, args.port, timeout=args.timeout)
    try:
        hello = client.hello()
    except TimeoutError:
        raise CliError(
            f"no backend answered at {client.endpoint} within {args.timeout:g} s "
            f"(start one with `segparts serve --port {args.port}`)"
        ) from None
    except BackendError as exc:
        raise CliError(f"the backend at {client.endpoint} answered with an error: {exc}") from None
    finally:
        client.close()
    print(
        json.dumps(
            {
                "version": hello.get("version"),
                "protocol": hello.get("protocol"),
                "device": hello.get("device"),
                "engines": hello.get("engines", {}),
                "endpoint": client.endpoint,
            }
        )
    )
    return 0
