""" "Set up backend" and "Fetch models": a few commands run one after another as child processes,
watched by the timer (no bpy, never waits). Output goes to a log file in the extension's folder.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

DETAIL_INTERVAL_S = 0.5  # how often a running step's log is read for its progress line
_SUBSTEP = re.compile(r"^setup: \[(\d+)/(\d+)\] (.+)$")  # printed by `segparts setup`


class Task:
    def __init__(self, title: str, steps: list[tuple[str, list[str]]], log_file: Path, env: dict | None = None):
        self.title, self.steps, self.log_file = title, steps, Path(log_file)
        self.env = env
        self.index = -1
        self.proc: subprocess.Popen | None = None
        self.finished = False
        self.ok = False
        self.status = f"{title}: waiting"
        self.changed = True
        self.substep = 0.0  # fraction of the running step done, from its `setup: [i/n]` lines
        self._detail_at = 0.0

    @property
    def progress(self) -> float:
        if self.finished:
            return 1.0
        return (max(self.index, 0) + self.substep) / max(len(self.steps), 1)

    def start(self) -> None:
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file.write_text("")
        self._next()

    def _next(self) -> None:
        self.index += 1
        if self.index >= len(self.steps):
            self._finish(True, f"{self.title}: done")
            return
        label, cmd = self.steps[self.index]
        self.status = f"{self.title}: {label} ({self.index + 1}/{len(self.steps)})"
        self.substep = 0.0
        self.changed = True
        with open(self.log_file, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            env = dict(self.env or os.environ)
            env.pop("PYTHONPATH", None)
            env.pop("PYTHONHOME", None)
            flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
            try:
                self.proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, creationflags=flags
                )
            except OSError as exc:
                self._finish(False, f"{self.title} failed to run {cmd[0]}: {exc}")

    def tick(self) -> None:
        if self.finished or self.proc is None:
            return
        code = self.proc.poll()
        if code is None:
            self._read_substep()
            return
        self.proc = None
        if code != 0:
            self._finish(False, f"{self.title} failed (exit {code}): {self.last_line()} — see {self.log_file}")
        else:
            self._next()

    def last_line(self, prefix: str = "") -> str:
        """The log's last non-empty line (starting with `prefix`), read from its tail only."""
        try:
            with open(self.log_file, "rb") as f:
                f.seek(max(f.seek(0, os.SEEK_END) - 16384, 0))
                text = f.read().decode(errors="replace")
        except OSError:
            return ""
        lines = [ln for ln in text.splitlines() if ln.strip() and ln.startswith(prefix)]
        return lines[-1][:200] if lines else ""

    def _read_substep(self) -> None:
        """A long step (the learned engines' install) reports `setup: [i/n] what`: show it."""
        now = time.monotonic()
        if now - self._detail_at < DETAIL_INTERVAL_S:
            return
        self._detail_at = now
        found = _SUBSTEP.match(self.last_line("setup: ["))
        if found:
            i, n, what = int(found[1]), int(found[2]), found[3]
            status = f"{self.title}: {self.steps[self.index][0]} ({self.index + 1}/{len(self.steps)}): {what}"
            if status != self.status:
                self.status, self.substep, self.changed = status, (i - 1) / max(n, 1), True

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
        self._finish(False, f"{self.title}: stopped")

    def _finish(self, ok: bool, status: str) -> None:
        self.finished, self.ok, self.status, self.changed = True, ok, status, True


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def setup_backend_task(
    python: str, venv: Path, bundle: Path, log_file: Path, learned: bool = False, device: str = "auto"
) -> Task:
    """Create `venv` with `python` and install the bundled backend; with `learned`, then the learned
    engines' stack through `segparts setup --learned` (the same path as `make setup`: torch for
    this machine's device, spconv, hydra-core, iopath, sam2 without torchvision)."""
    if not python:
        raise ValueError("choose the Python (3.11 or newer) to create the backend's environment with")
    if not (bundle / "pyproject.toml").exists():
        raise ValueError(f"no bundled backend at {bundle} (build the add-on with build_addon.py)")
    vpy = str(venv_python(venv))
    steps = [
        ("creating the virtual environment", [python, "-m", "venv", str(venv)]),
        ("updating pip", [vpy, "-m", "pip", "install", "--upgrade", "pip", "setuptools", "wheel"]),
        ("installing the backend and its requirements", [vpy, "-m", "pip", "install", str(bundle)]),
    ]
    if learned:
        steps.append(
            (
                "installing the learned engines (torch, spconv, sam2)",
                [vpy, "-m", "segparts", "setup", "--learned", "--device", device],
            )
        )
    steps.append(("checking the installation", [vpy, "-m", "segparts", "--version"]))
    return Task("Set up backend", steps, log_file)


def models_for_engine(manifest: Path, engine: str) -> list[str]:
    """Checkpoint names the engine needs, from the model manifest shipped with the backend."""
    import json

    data = json.loads(Path(manifest).read_text())
    names = [m["name"] for m in data.get("models", []) if engine in m.get("engines", [])]
    if not names:
        raise ValueError(f"engine {engine!r} needs no checkpoints (or the manifest {manifest} names none)")
    return names


def fetch_models_task(
    python: str, names: list[str], engine: str, log_file: Path, models_dir: str = "", manifest: Path | None = None
) -> Task:
    if not python:
        raise ValueError("no backend Python: set it in the preferences or press 'Set up backend'")
    env = dict(os.environ)
    if models_dir:
        env["SEGPARTS_MODELS"] = models_dir
    if manifest is not None and Path(manifest).exists():
        env["SEGPARTS_MANIFEST"] = str(manifest)
    return Task(
        f"Fetch {engine} models",
        [
            (f"downloading {', '.join(names)}", [python, "-m", "segparts", "models", "fetch", *names]),
        ],
        log_file,
        env,
    )
