"""Installing the learned engines' stack into the running Python: the one set-up path used by
`make setup` (scripts/setup_env.sh) and by the add-on's "Set up Backend" button.

The order matters: torch first, in the build that fits the machine (CPU or CUDA), so nothing
installed after it can replace it; then spconv in the matching flavour; then the light
requirements; last `sam2` from its source distribution without its dependencies (its torchvision
pin would pull another, multi-GB torch) and without compiling its CUDA extension. Every step is a
plain `pip` command, printed before it runs, so a log shows exactly what was done.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

TORCH_VERSION = "2.13.0"
SPCONV = {"cpu": "spconv==2.3.8", "cuda": "spconv-cu120"}
# segment-anything: SAMPart3D's paper-preset masks (no dependencies; its torchvision modules unused)
LIGHT_REQUIREMENTS = ["segment-anything>=1.0", "hydra-core>=1.3", "iopath>=0.1.10"]
SAM2 = "sam2==1.1.0"
# what a user is told when a learned engine lacks packages (a zip user has no Makefile)
LEARNED_FIX = (
    "python -m segparts setup --learned with the backend's Python "
    "(in Blender: Preferences > Segment Parts > Set up Backend with 'Learned engines' ticked)"
)


@dataclass
class Step:
    label: str
    args: list[str]  # pip arguments
    env: dict[str, str] = field(default_factory=dict)
    skip_if_importable: str | None = None  # a module whose presence means the step is done


def detect_device() -> str:
    """cuda when a working NVIDIA driver answers `nvidia-smi -L`, else cpu."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return "cpu"
    try:
        return "cuda" if subprocess.run([smi, "-L"], capture_output=True, timeout=20).returncode == 0 else "cpu"
    except (OSError, subprocess.TimeoutExpired):
        return "cpu"


def learned_steps(device: str, torch_version: str = TORCH_VERSION, torch_index_url: str | None = None) -> list[Step]:
    if device not in SPCONV:
        raise ValueError(f"device must be cpu or cuda, got {device!r}")
    torch = ["install", f"torch=={torch_version}"] + (["--index-url", torch_index_url] if torch_index_url else [])
    steps = [
        Step(f"torch {torch_version} ({device} build)", torch),
        Step(f"spconv ({SPCONV[device]})", ["install", SPCONV[device]]),
        Step("segment-anything, hydra-core and iopath", ["install", *LIGHT_REQUIREMENTS]),
        Step(
            "sam2 (no torchvision, no CUDA extension)",
            ["install", "--no-build-isolation", "--no-deps", SAM2],
            {"SAM2_BUILD_CUDA": "0"},
            "sam2",
        ),
    ]
    if device == "cuda":  # optional: the renderer falls back to Embree without it
        steps.append(Step("nvdiffrast (optional)", ["install", "nvdiffrast"]))
    return steps


def run_steps(steps: list[Step], python: str = sys.executable, out=sys.stdout) -> None:
    """Run each pip step in `python`, printing `setup: [i/n] label` first; raises on failure
    (except for optional steps, which only warn)."""
    for i, step in enumerate(steps, 1):
        print(f"setup: [{i}/{len(steps)}] {step.label}", file=out, flush=True)
        if step.skip_if_importable and importlib.util.find_spec(step.skip_if_importable) is not None:
            print(f"setup: {step.skip_if_importable} is already installed", file=out, flush=True)
            continue
        cmd = [python, "-m", "pip", "--disable-pip-version-check", "install", "-q", *step.args[1:]]
        print("$ " + " ".join(cmd), file=out, flush=True)
        done = subprocess.run(cmd, env={**os.environ, **step.env})
        if done.returncode != 0:
            if "(optional)" in step.label:
                print(f"setup: {step.label} not installed; continuing", file=out, flush=True)
                continue
            raise RuntimeError(f"{step.label} failed (pip exit {done.returncode})")


def cuda_packages_on_cpu_machine() -> list[str]:
    """`nvidia-*` distributions present although the machine has no NVIDIA GPU (a wrong torch build)."""
    import importlib.metadata

    return sorted(
        {
            d.metadata["Name"]
            for d in importlib.metadata.distributions()
            if "nvidia" in (d.metadata["Name"] or "").lower()
        }
    )
