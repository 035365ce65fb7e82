"""`segparts setup [--learned] [--device auto|cpu|cuda]`: install what the engines need into this
Python. The geometric engine needs nothing more than the package; `--learned` adds torch (the
build for the device), spconv, hydra-core, iopath and sam2. Used by `make setup` and by the
add-on's "Set up Backend" button, so both install the same stack."""

from __future__ import annotations

import json
import os
import sys

from . import CliError


def register(sub):
    p = sub.add_parser("setup", help="install the learned engines' stack (torch, spconv, sam2) into this Python")
    p.add_argument("--learned", action="store_true", help="install the learned engines' packages")
    p.add_argument(
        "--device",
        choices=["auto", "cpu", "cuda"],
        default="auto",
        help="which torch and spconv build (auto: cuda when nvidia-smi finds a GPU)",
    )
    p.add_argument("--torch-version", default=None, help="torch version (default: the tested one)")
    p.add_argument(
        "--torch-index-url",
        default=os.environ.get("TORCH_INDEX_URL") or None,
        help="wheel index for torch (e.g. PyTorch's CPU or cuXXX index); env TORCH_INDEX_URL",
    )
    p.add_argument("--dry-run", action="store_true", help="print the steps, install nothing")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import installer

    device = installer.detect_device() if args.device == "auto" else args.device
    steps = (
        installer.learned_steps(device, args.torch_version or installer.TORCH_VERSION, args.torch_index_url)
        if args.learned
        else []
    )
    if args.dry_run:
        for step in steps:
            print(json.dumps({"step": step.label, "pip": step.args, "env": step.env}))
        return 0
    try:
        installer.run_steps(steps)
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    if device == "cpu" and (extra := installer.cuda_packages_on_cpu_machine()):
        print(
            f"setup: warning: CUDA packages on a machine without an NVIDIA GPU: {', '.join(extra)}; "
            "re-run with --torch-index-url set to PyTorch's CPU wheel index",
            file=sys.stderr,
        )
    print(json.dumps({"device": device, "engines": _engine_report()}))
    return 0


def _engine_report() -> dict:
    """Each engine's availability as a fresh process sees it (the packages just installed)."""
    import subprocess

    code = (
        "import json; from segparts.engines import create_engine, engine_names; "
        "print(json.dumps({n: create_engine(n).availability().message() for n in engine_names()}))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:] or ["unknown"]}
    return json.loads(done.stdout.strip().splitlines()[-1])
