"""Model checkpoints: the manifest (models/manifest.json; setup.py builds a copy into wheels as
segparts/manifest.json), where weights live, download and checks.

Folder: $SEGPARTS_MODELS if set; else `models/weights/` of the source checkout this package runs
from (the usual editable install); else models/ in the user's cache folder (`segparts.paths.cache_dir`:
~/.cache/segparts/models on Linux). Weights are never in git.

Engines use `model_path(name)` to find a file and `availability(names)` / `missing(names)` to say
exactly what is absent and which command fetches it; none of this imports torch.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

CHUNK = 1 << 20
REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGED_MANIFEST = Path(__file__).with_name("manifest.json")  # only in built wheels (setup.py)


class ModelError(Exception):
    """A user-facing problem with a checkpoint (unknown name, download failed, bad checksum)."""


@dataclass
class ModelSpec:
    name: str
    file: str
    url: str
    size: int | None = None
    sha256: str | None = None
    engines: list[str] = field(default_factory=list)
    description: str = ""
    license: str = ""
    source: str = ""
    size_approx: str | None = None

    @property
    def path(self) -> Path:
        return models_dir() / self.file

    def size_text(self) -> str:
        if self.size:
            return f"{self.size / 1e6:.0f} MB"
        return f"~{self.size_approx}" if self.size_approx else "?"


def manifest_path() -> Path:
    """$SEGPARTS_MANIFEST; else models/manifest.json of the source checkout this package runs from;
    else the copy inside the installed package (setup.py puts it there when building a wheel)."""
    env = os.environ.get("SEGPARTS_MANIFEST")
    if env:
        return Path(env)
    source = REPO_ROOT / "models" / "manifest.json"
    return source if source.is_file() or not PACKAGED_MANIFEST.is_file() else PACKAGED_MANIFEST


def models_dir() -> Path:
    env = os.environ.get("SEGPARTS_MODELS")
    if env:
        return Path(env).expanduser()
    if (REPO_ROOT / "models" / "manifest.json").is_file():  # running from a source checkout
        return REPO_ROOT / "models" / "weights"
    # platformdirs is imported only here: `segparts setup` may run before it is installed
    from .paths import cache_dir

    return cache_dir() / "models"


def load_manifest(path: str | Path | None = None) -> dict[str, ModelSpec]:
    path = Path(path) if path else manifest_path()
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelError(f"model manifest not found at {path} (set SEGPARTS_MANIFEST)") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"model manifest {path} is not valid JSON: {exc}") from None
    known = set(ModelSpec.__dataclass_fields__)
    return {m["name"]: ModelSpec(**{k: v for k, v in m.items() if k in known}) for m in data["models"]}


def spec(name: str) -> ModelSpec:
    models = load_manifest()
    if name not in models:
        raise ModelError(f"unknown model {name!r}; known: {', '.join(models)}")
    return models[name]


def model_path(name: str) -> Path:
    """Where checkpoint `name` is (or will be once fetched)."""
    return spec(name).path


def missing(names: list[str]) -> list[str]:
    """One line per checkpoint of `names` that is not on disk (or has the wrong size)."""
    out = []
    for name in names:
        s = spec(name)
        path = s.path
        if not path.is_file():
            out.append(f"checkpoint {name} ({path})")
        elif s.size and path.stat().st_size != s.size:
            out.append(f"checkpoint {name} ({path} has {path.stat().st_size} bytes, expected {s.size})")
    return out


def fetch_command(names: list[str]) -> str:
    return " && ".join(f"segparts models fetch {n}" for n in names)


def availability(names: list[str]):
    """An engines.base.Availability for a set of checkpoints (cheap: stats files only)."""
    from .engines.base import Availability

    lines = missing(names)
    absent = [n for n in names if any(line.startswith(f"checkpoint {n} ") for line in lines)]
    return Availability(not lines, lines, fetch_command(absent) if absent else "")


def sha256_file(path: Path, progress: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
            if progress:
                progress(len(chunk))
    return h.hexdigest()


def verify(s: ModelSpec) -> str:
    """'ok', 'missing', 'unverified' (no published hash; present), or 'mismatch'."""
    path = s.path
    if not path.is_file():
        return "missing"
    if s.size and path.stat().st_size != s.size:
        return "mismatch"
    if not s.sha256:
        return "unverified"
    return "ok" if sha256_file(path) == s.sha256.lower() else "mismatch"


def fetch(
    s: ModelSpec, force: bool = False, retries: int = 3, timeout: float = 60.0, show_progress: bool | None = None
) -> Path:
    """Download `s` into the models folder, resuming a partial `.part` file with an HTTP Range
    request, then check size and sha256. A file that fails the check is moved aside to
    `<file>.rejected` and ModelError is raised."""
    path = s.path
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_file() and not force:
        if verify(s) in ("ok", "unverified"):
            return path
        path.unlink()  # wrong size or hash: download again
    part = path.with_name(path.name + ".part")
    if force and part.exists():
        part.unlink()
    if show_progress is None:
        show_progress = sys.stderr.isatty()
    attempt = 0
    while True:
        try:
            _download(s.url, part, s.size, timeout, show_progress, s.name)
            break
        except (urllib.error.URLError, OSError, _Interrupted) as exc:
            attempt += 1
            if attempt > retries:
                have = part.stat().st_size if part.exists() else 0
                raise ModelError(
                    f"download of {s.name} from {s.url} failed ({_reason(exc)}); {have} bytes kept "
                    f"in {part}, run the same command again to resume"
                ) from None
    _check(s, part)
    os.replace(part, path)
    return path


class _Interrupted(Exception):
    pass


def _reason(exc: Exception) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return str(exc.reason)
    return str(exc) or type(exc).__name__


def _download(url: str, part: Path, expected_size: int | None, timeout: float, show_progress: bool, name: str):
    have = part.stat().st_size if part.exists() else 0
    if expected_size and have >= expected_size:
        return
    request = urllib.request.Request(url, headers={"User-Agent": "segparts"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part file is complete
            return
        raise
    with response:
        if have and response.status != 206:  # server ignored the range: start over
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else expected_size
        bar = _bar(total, have, name) if show_progress else None
        received = 0
        with open(part, "ab" if have else "wb") as f:
            try:
                while chunk := response.read(CHUNK):
                    f.write(chunk)
                    received += len(chunk)
                    if bar:
                        bar.update(len(chunk))
            except (OSError, ValueError) as exc:  # connection dropped mid-body (IncompleteRead etc.)
                raise _Interrupted(f"connection lost after {have + received} bytes: {exc}") from None
            finally:
                if bar:
                    bar.close()
        if length is not None and received < int(length):
            raise _Interrupted(f"connection closed after {have + received} of {total} bytes")


def _bar(total, initial, name):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr)


def _check(s: ModelSpec, part: Path) -> None:
    size = part.stat().st_size
    problem = None
    if s.size and size != s.size:
        problem = f"size {size} bytes, expected {s.size}"
    elif s.sha256:
        digest = sha256_file(part)
        if digest != s.sha256.lower():
            problem = f"sha256 {digest}, expected {s.sha256}"
    if problem:
        rejected = part.with_name(s.file + ".rejected")
        os.replace(part, rejected)
        raise ModelError(f"{s.name}: downloaded file rejected ({problem}); moved to {rejected}")
