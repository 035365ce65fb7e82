""""Set up backend" and "Fetch models": a few commands run one after another as child processes,
watched by the timer (no bpy, never waits). Output goes to a log file in the extension's folder.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


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

    @property
    def progress(self) -> float:
        return max(self.index, 0) / max(len(self.steps), 1) if not self.finished else 1.0

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
        self.changed = True
        with open(self.log_file, "ab") as log:
            log.write(f"$ {' '.join(cmd)}\n".encode())
            log.flush()
            env = dict(self.env or os.environ)
            env.pop("PYTHONPATH", None)
            env.pop("PYTHONHOME", None)
            flags = getattr(subprocess, "CREATE_NO_WINDOW", 0) if sys.platform == "win32" else 0
            try:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                             env=env, creationflags=flags)
            except OSError as exc:
                self._finish(False, f"{self.title} failed to run {cmd[0]}: {exc}")

    def tick(self) -> None:
        if self.finished or self.proc is None:
            return
        code = self.proc.poll()
        if code is None:
            return
        self.proc = None
        if code != 0:
            self._finish(False, f"{self.title} failed (exit {code}): {self.last_line()} — see {self.log_file}")
        else:
            self._next()

    def last_line(self) -> str:
        try:
            lines = [ln for ln in self.log_file.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return ""
        return lines[-1][:200] if lines else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
        self._finish(False, f"{self.title}: stopped")

    def _finish(self, ok: bool, status: str) -> None:
        self.finished, self.ok, self.status, self.changed = True, ok, status, True


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def setup_backend_task(python: str, venv: Path, bundle: Path, log_file: Path, learned: bool = False) -> Task:
    """Create `venv` with `python` and install the bundled backend (plus torch etc. if `learned`)."""
    if not python:
        raise ValueError("choose the Python (3.11 or newer) to create the backend's environment with")
    if not (bundle / "pyproject.toml").exists():
        raise ValueError(f"no bundled backend at {bundle} (build the add-on with build_addon.py)")
    vpy = str(venv_python(venv))
    target = str(bundle) + ("[ml]" if learned else "")
    steps = [
        ("creating the virtual environment", [python, "-m", "venv", str(venv)]),
        ("updating pip", [vpy, "-m", "pip", "install", "--upgrade", "pip", "setuptools", "wheel"]),
        ("installing the backend and its requirements", [vpy, "-m", "pip", "install", target]),
    ]
    if learned:  # what pip's extras cannot say (as scripts/setup_env.sh does on a CPU machine)
        steps += [
            ("installing spconv (SAMPart3D's backbone)", [vpy, "-m", "pip", "install", "spconv==2.3.8"]),
            # sam2 from its sdist without its torchvision pin (it would pull another torch build)
            ("installing sam2", [vpy, "-m", "pip", "install", "--no-build-isolation", "--no-deps", "sam2==1.1.0"]),
        ]
    steps.append(("checking the installation", [vpy, "-m", "segparts", "--version"]))
    env = dict(os.environ, SAM2_BUILD_CUDA="0")  # sam2's optional CUDA extension needs a compiler
    return Task("Set up backend", steps, log_file, env)


def models_for_engine(manifest: Path, engine: str) -> list[str]:
    """Checkpoint names the engine needs, from the model manifest shipped with the backend."""
    import json

    data = json.loads(Path(manifest).read_text())
    names = [m["name"] for m in data.get("models", []) if engine in m.get("engines", [])]
    if not names:
        raise ValueError(f"engine {engine!r} needs no checkpoints (or the manifest {manifest} names none)")
    return names


def fetch_models_task(python: str, names: list[str], engine: str, log_file: Path, models_dir: str = "",
                      manifest: Path | None = None) -> Task:
    if not python:
        raise ValueError("no backend Python: set it in the preferences or press 'Set up backend'")
    env = dict(os.environ)
    if models_dir:
        env["SEGPARTS_MODELS"] = models_dir
    if manifest is not None and Path(manifest).exists():
        env["SEGPARTS_MANIFEST"] = str(manifest)
    return Task(f"Fetch {engine} models", [
        (f"downloading {', '.join(names)}", [python, "-m", "segparts", "models", "fetch", *names]),
    ], log_file, env)
