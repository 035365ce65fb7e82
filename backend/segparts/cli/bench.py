"""`segparts bench NAME`: benchmark commands. Each benchmark is a module with `register(subparsers)`."""

from __future__ import annotations

import importlib

# benchmark name -> module providing register(subparsers)
BENCHES = {
    "transport": "segparts.bench.transport",
    "geometric": "segparts.bench.geometric",
    "render": "segparts.bench.render",
    "sampart3d": "segparts.bench.sampart3d",
    "geosam2": "segparts.bench.geosam2",
    "addon": "segparts.bench.addon",
    "batch": "segparts.bench.batch",
    "hardening": "segparts.bench.hardening",
}


def register(sub):
    p = sub.add_parser("bench", help="benchmarks (figures for the issues' closing notes)")
    bsub = p.add_subparsers(dest="bench", required=True, metavar="NAME")
    for module_name in BENCHES.values():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name or module_name.startswith(exc.name + "."):
                continue  # benchmark not written yet
            raise
        module.register(bsub)
