"""`segparts setup --learned`: one set-up path for `make setup` and the add-on's button.

The end-to-end test runs the add-on's "Set up Backend" task (learned engines ticked) into a fresh
virtual environment. So that it does not download torch again, the fresh environment sees this
environment's packages through a .pth file: pip then finds every requirement satisfied, and the
test proves the commands, their order and the result (the learned engines lack only checkpoints).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import time
from pathlib import Path

import pytest

from addon import setup as addon_setup
from segparts import installer

ROOT = Path(__file__).resolve().parents[1]


def test_learned_steps_put_torch_first_and_keep_sam2_off_torchvision():
    cpu = installer.learned_steps("cpu")
    assert cpu[0].args[:2] == ["install", f"torch=={installer.TORCH_VERSION}"]
    assert [s.args[-1] for s in cpu[1:3]] == ["spconv==2.3.8", "iopath>=0.1.10"]
    sam2 = cpu[3]
    assert "--no-deps" in sam2.args and sam2.env == {"SAM2_BUILD_CUDA": "0"} and len(cpu) == 4
    cuda = installer.learned_steps("cuda", torch_index_url="https://example.invalid/whl/cu126")
    assert cuda[0].args[-2:] == ["--index-url", "https://example.invalid/whl/cu126"]
    assert cuda[1].args[-1] == "spconv-cu120" and cuda[-1].label.startswith("nvdiffrast")


def test_dry_run_prints_the_plan():
    done = subprocess.run(
        [sys.executable, "-m", "segparts", "setup", "--learned", "--device", "cpu", "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
    )
    steps = [json.loads(line) for line in done.stdout.splitlines()]
    assert [s["pip"][1] for s in steps] == [
        f"torch=={installer.TORCH_VERSION}",
        "spconv==2.3.8",
        "segment-anything>=1.0",
        "--no-build-isolation",
    ]


def _bundle(tmp_path: Path) -> Path:
    """The backend as build_addon.py bundles it into the extension."""
    bundle = tmp_path / "bundle"
    shutil.copytree(
        ROOT / "backend" / "segparts",
        bundle / "backend" / "segparts",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    for name in ("pyproject.toml", "setup.py", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, bundle / name)
    (bundle / "models").mkdir()
    shutil.copy2(ROOT / "models" / "manifest.json", bundle / "models" / "manifest.json")
    return bundle


@pytest.mark.network  # pip in a fresh environment: what this one lacks comes from the index
def test_addon_setup_button_installs_the_learned_engines(tmp_path):
    venv, log = tmp_path / "venv", tmp_path / "setup.log"
    base_python = getattr(sys, "_base_executable", sys.executable)
    task = addon_setup.setup_backend_task(base_python, venv, _bundle(tmp_path), log, learned=True, device="cpu")
    task.start()
    seen, deadline = set(), time.monotonic() + 600
    while not task.finished and time.monotonic() < deadline:
        if task.index >= 1:  # the venv exists: let it see this environment's packages (no downloads)
            site = next(venv.glob("lib/python*/site-packages"), None)
            if site is not None and not (site / "_this_env.pth").exists():
                (site / "_this_env.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
        task.tick()
        seen.add(task.status)
        time.sleep(0.05)
    assert task.finished and task.ok, f"{task.status}\n{log.read_text()[-3000:]}"
    text = log.read_text()
    assert "segparts setup --learned --device cpu" in text and "setup: [4/4] sam2" in text
    # the progress bar showed the learned engines' own steps while they ran
    assert any("installing the learned engines" in s and ": torch" in s for s in seen), seen
    vpy = str(addon_setup.venv_python(venv))
    report = subprocess.run(
        [
            vpy,
            "-c",
            "import json; from segparts.engines import create_engine as c; "
            "print(json.dumps({n: c(n).availability().missing for n in ('sampart3d', 'geosam2')}))",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    missing = json.loads(report.stdout)
    for engine, items in missing.items():  # packages all there: only checkpoints are missing
        assert items and all(item.startswith("checkpoint ") for item in items), (engine, items)
