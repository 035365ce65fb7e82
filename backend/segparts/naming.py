"""Naming parts with a vision-language model the user chooses (SAMPart3D's labelling stage).

For each part we render a few views with the part highlighted in colour and the rest grey, plus
one view of the whole object, put them in one PNG sheet, and ask an OpenAI-compatible
chat-completions endpoint (a hosted service, or a local server such as Ollama, LM Studio or vLLM
serving a vision model) for a short, singular, generic part name. Parts given the same name are
numbered ("Leg 1", "Leg 2").

Off by default: nothing leaves the machine unless an endpoint is configured (`resolve_endpoint`
returns None and `name_parts` refuses to run). Only the standard library talks HTTP.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import json
import logging
import os
import re
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import paths
from .engines.base import CancelToken, Progress, no_progress
from .mesh import Mesh

log = logging.getLogger("segparts.naming")

ENV_URL, ENV_MODEL, ENV_API_KEY = "SEGPARTS_VLM_URL", "SEGPARTS_VLM_MODEL", "SEGPARTS_VLM_API_KEY"
ENV_CACHE = "SEGPARTS_NAME_CACHE"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_RETRIES = 2  # retries after the first try: 3 requests at most per part
DEFAULT_BACKOFF_S = 1.0  # waits 1 s, 2 s, 4 s ... between tries
MAX_RETRY_AFTER_S = 30.0
DEFAULT_VIEWS = 3  # highlighted views per part (plus one view of the whole object)
DEFAULT_TILE = 256  # pixels per view in the sheet
MIN_PART_PIXELS = 12  # a part seen by fewer pixels than this in every view is not sent
MAX_NAME_WORDS = 4
MAX_NAME_CHARS = 40
HIGHLIGHT_RGB = np.array([255.0, 120.0, 20.0])  # orange, said in the prompt
REST_GREY = 0.82  # grey level of the other parts (lit), lighter than the highlight
PROMPT_VERSION = 1  # part of the cache key: a new prompt gives new answers


class NamingError(Exception):
    """One part could not be named; the message says why (shown to the user)."""


class NamingOff(ValueError):
    """No endpoint configured: naming is off and nothing is sent."""


@dataclass
class Endpoint:
    """An OpenAI-compatible chat-completions endpoint. `url` is the base URL (".../v1") or the
    full ".../chat/completions" URL."""

    url: str
    model: str
    api_key: str = ""
    timeout_s: float = DEFAULT_TIMEOUT_S
    retries: int = DEFAULT_RETRIES
    backoff_s: float = DEFAULT_BACKOFF_S

    def __post_init__(self):
        self.url = self.url.strip()
        self.model = self.model.strip()
        parsed = urllib.parse.urlparse(self.url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(f"endpoint URL {self.url!r} must start with http:// or https:// and name a host")
        if not self.model:
            raise ValueError(f"no model given for the endpoint {self.url}: set {ENV_MODEL} or --model")
        if not self.timeout_s > 0 or self.retries < 0 or self.backoff_s < 0:
            raise ValueError("timeout must be > 0, retries and backoff >= 0")

    @property
    def chat_url(self) -> str:
        base = self.url.rstrip("/")
        return base if base.endswith("/chat/completions") else base + "/chat/completions"

    def describe(self) -> str:
        """What the user is told: which model at which address sees the renders (no key)."""
        parsed = urllib.parse.urlparse(self.chat_url)
        return f"{self.model} at {parsed.scheme}://{parsed.netloc}"


def resolve_endpoint(
    url: str | None = None, model: str | None = None, api_key: str | None = None, env=None, **options
) -> Endpoint | None:
    """The endpoint from explicit values, falling back to SEGPARTS_VLM_URL / _MODEL / _API_KEY.
    None when no URL is set anywhere: naming is off."""
    env = os.environ if env is None else env
    url = (url or env.get(ENV_URL) or "").strip()
    if not url:
        return None
    return Endpoint(
        url, (model or env.get(ENV_MODEL) or "").strip(), api_key if api_key else env.get(ENV_API_KEY, ""), **options
    )


# ---- renders -------------------------------------------------------------------------------
@dataclass
class PartSheet:
    part: int
    png: bytes | None  # None when the part is not visible enough to be shown
    views: list[int] = field(default_factory=list)  # rig views used for the highlight tiles
    pixels: int = 0  # highlighted pixels over the tiles


def naming_rig(size: int, extents=None):
    """Candidate cameras: two rings (above and below) and the two poles, all at the reference
    distance of the normalised mesh."""
    from .render.cameras import orbit_rig, reference_distance

    az = np.r_[np.arange(8) * 45.0, np.arange(4) * 90.0 + 45.0, 0.0, 0.0]
    el = np.r_[np.full(8, 25.0), np.full(4, -30.0), 89.0, -89.0]
    return orbit_rig(az, el, size, reference_distance(extents))


def render_part_sheets(
    mesh: Mesh, labels: np.ndarray, parts=None, n_views: int = DEFAULT_VIEWS, tile: int = DEFAULT_TILE
) -> list[PartSheet]:
    """One PNG per part: `n_views` views where the part is most visible (highlighted, cropped
    around it) and one view of the whole object. Rendered once for all parts. The mesh is Z-up
    (Blender's convention; `segparts.meshio.load_mesh` turns Y-up files Z-up), so views are upright."""
    from .render import GREY_ALBEDO, normalize_for_rendering, render_views

    labels = np.asarray(labels, dtype=np.int64)
    if labels.shape != (mesh.n_faces,):
        raise ValueError(f"{labels.shape[0] if labels.ndim else 0} labels for {mesh.n_faces} faces")
    vertices, norm = normalize_for_rendering(mesh.vertices)
    rig = naming_rig(2 * tile, norm.extents)  # rendered larger than a tile: crops around small parts stay sharp
    # Embree even on CUDA machines: 14 small views are cheap, and checking for nvdiffrast would
    # import torch into the backend for a job that needs none of it
    views = render_views(Mesh(vertices, mesh.faces), rig, outputs=("face_id", "color"), backend="embree")
    face_id = views.face_id
    fg = face_id >= 0
    pixel_label = np.where(fg, labels[np.maximum(face_id, 0)], -1)
    top = int(labels.max()) + 1 if labels.size and labels.max() >= 0 else 0
    # (V, P) pixels of each part in each view
    counts = np.stack(
        [np.bincount(pixel_label[v][pixel_label[v] >= 0], minlength=top)[:top] for v in range(rig.n_views)]
    )
    # the shaded grey image holds the lighting: repaint it through lookup tables (256 levels)
    level = views.color[..., 0]
    grey_table = _paint_table(np.full(3, REST_GREY * 255.0), 0.0, GREY_ALBEDO)
    orange_table = _paint_table(HIGHLIGHT_RGB, 0.35, GREY_ALBEDO)
    upper = int(np.argmax(fg[:8].reshape(8, -1).sum(axis=1)))  # the fullest view from above
    box = _box_around(fg[upper], grow=1.1, min_fraction=0.0)
    whole = _resize(grey_table[level[upper][box]], tile)
    forward = rig.forward
    wanted = range(top) if parts is None else parts
    sheets = []
    for part in wanted:
        part = int(part)
        if part < 0 or part >= top or counts[:, part].max() < MIN_PART_PIXELS:
            sheets.append(PartSheet(part, None))
            continue
        chosen = _pick_views(counts[:, part], forward, n_views)
        tiles, pixels = [], 0
        for v in chosen:
            mask = pixel_label[v] == part
            box = _box_around(mask, grow=2.0, min_fraction=0.5)
            inside, crop = mask[box], level[v][box]
            tiles.append(_resize(np.where(inside[..., None], orange_table[crop], grey_table[crop]), tile))
            pixels += int(inside.sum())
        sheets.append(PartSheet(part, _png(_sheet(tiles + [whole])), chosen, pixels))
    return sheets


def _paint_table(rgb, ambient: float, albedo: float) -> np.ndarray:
    """(256, 3) uint8: grey level of the renderer's shaded image -> the same lighting in `rgb`.
    Level 255 is the white background (lit objects stay below 255 * albedo)."""
    light = np.clip(np.arange(256) / (255.0 * albedo), 0.0, 1.0)
    table = (ambient + (1.0 - ambient) * light)[:, None] * np.asarray(rgb, dtype=np.float64)
    table[255] = 255.0
    return np.clip(np.rint(table), 0, 255).astype(np.uint8)


def _pick_views(pixels: np.ndarray, forward: np.ndarray, k: int) -> list[int]:
    """Greedy: the view showing most of the part, then views that show it well from other
    directions (score scaled down by closeness to the views already chosen)."""
    score = pixels.astype(np.float64)
    chosen: list[int] = []
    for _ in range(min(k, int(np.count_nonzero(score)))):
        if chosen:
            closeness = np.clip(forward @ forward[chosen].T, 0.0, 1.0).max(axis=1)
            adjusted = score * (1.0 - 0.7 * closeness)
        else:
            adjusted = score.copy()
        adjusted[chosen] = -1.0
        best = int(np.argmax(adjusted))
        if adjusted[best] < MIN_PART_PIXELS * 0.3:
            break
        chosen.append(best)
    return chosen


def _box_around(mask: np.ndarray, grow: float, min_fraction: float) -> tuple[slice, slice]:
    """A square crop centred on the mask's pixels, `grow` times their extent but at least
    `min_fraction` of the image (for a part: its surroundings stay in view)."""
    h, w = mask.shape
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return slice(0, h), slice(0, w)
    side = int(min(max(grow * max(np.ptp(ys) + 1, np.ptp(xs) + 1), min_fraction * h, 8), h, w))
    cy, cx = (ys.min() + ys.max()) // 2, (xs.min() + xs.max()) // 2
    y0 = int(np.clip(cy - side // 2, 0, h - side))
    x0 = int(np.clip(cx - side // 2, 0, w - side))
    return slice(y0, y0 + side), slice(x0, x0 + side)


def _resize(image: np.ndarray, tile: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(image).resize((tile, tile), Image.Resampling.LANCZOS))


def _sheet(tiles: list[np.ndarray], gap: int = 4) -> np.ndarray:
    """Tiles in a grid, row by row (2 x 2 for three views and the whole object)."""
    n = len(tiles)
    cols = int(np.ceil(np.sqrt(n)))
    rows = -(-n // cols)
    t = tiles[0].shape[0]
    out = np.full((rows * t + (rows - 1) * gap, cols * t + (cols - 1) * gap, 3), 160, dtype=np.uint8)
    for i, im in enumerate(tiles):
        r, c = divmod(i, cols)
        out[r * (t + gap) : r * (t + gap) + t, c * (t + gap) : c * (t + gap) + t] = im
    return out


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


# ---- the request -----------------------------------------------------------------------------
def prompt_text(object_name: str | None, n_views: int) -> str:
    what = f"a 3D model of a {object_name.strip()}" if object_name and object_name.strip() else "a 3D model"
    return (
        f"The image shows {what}. The first {n_views} tile(s) show it from different angles with ONE "
        f"part highlighted in orange and everything else grey; the last tile shows the whole object. "
        f"What is the highlighted part? Answer with a short, generic, singular name for it "
        f'(one to three words, for example "leg", "seat", "handle", "wheel"), '
        f'as JSON: {{"name": "..."}}. No other text.'
    )


def request_body(endpoint: Endpoint, png: bytes, object_name: str | None, n_views: int) -> dict:
    image = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    return {
        "model": endpoint.model,
        "temperature": 0,
        "max_tokens": 40,
        "messages": [
            {"role": "system", "content": "You name the parts of 3D objects. You answer with JSON only."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": prompt_text(object_name, n_views)},
                    {"type": "image_url", "image_url": {"url": image}},
                ],
            },
        ],
    }


class _Retryable(NamingError):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def ask(
    endpoint: Endpoint, body: dict, cancel: CancelToken | None = None, sleep: Callable[[float], None] | None = None
) -> str:
    """POST one chat-completions request and return the cleaned part name. Retries timeouts,
    connection errors, HTTP 429/5xx and unusable answers with exponential backoff; other HTTP
    errors (401, 404 ...) fail at once. Raises NamingError with the reason."""
    cancel = cancel or CancelToken()
    wait = sleep or (lambda seconds: _sleep(seconds, cancel))
    data = json.dumps(body).encode("utf-8")
    last: NamingError | None = None
    for attempt in range(endpoint.retries + 1):
        cancel.check()
        if attempt:
            delay = endpoint.backoff_s * 2 ** (attempt - 1)
            if isinstance(last, _Retryable) and last.retry_after is not None:
                delay = max(delay, min(last.retry_after, MAX_RETRY_AFTER_S))
            wait(delay)
            cancel.check()
        try:
            return clean_name(_answer_text(_post(endpoint, data)))
        except _Retryable as exc:
            last = exc
            log.info("naming request to %s failed (try %d): %s", endpoint.describe(), attempt + 1, exc)
    tries = endpoint.retries + 1
    raise NamingError(f"{last} (after {tries} {'try' if tries == 1 else 'tries'})")


def _sleep(seconds: float, cancel: CancelToken) -> None:
    """Back off, waking early when the job is cancelled."""
    end = time.monotonic() + seconds
    while not cancel.cancelled and time.monotonic() < end:
        time.sleep(min(0.05, max(end - time.monotonic(), 0.0)))


def _post(endpoint: Endpoint, data: bytes) -> dict:
    headers = {"Content-Type": "application/json", "Accept": "application/json", "User-Agent": "segparts-naming"}
    if endpoint.api_key:
        headers["Authorization"] = f"Bearer {endpoint.api_key}"
    req = urllib.request.Request(endpoint.chat_url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=endpoint.timeout_s) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        detail = _error_detail(exc)
        if exc.code == 429 or exc.code >= 500:
            raise _Retryable(f"HTTP {exc.code} from {endpoint.describe()}{detail}", _retry_after(exc)) from None
        raise NamingError(f"HTTP {exc.code} from {endpoint.describe()}{detail}") from None
    except TimeoutError:
        raise _Retryable(f"no answer from {endpoint.describe()} within {endpoint.timeout_s:g} s") from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, (socket.timeout, TimeoutError)):
            raise _Retryable(f"no answer from {endpoint.describe()} within {endpoint.timeout_s:g} s") from None
        raise _Retryable(f"cannot reach {endpoint.describe()}: {reason}") from None
    except (ConnectionError, OSError) as exc:
        raise _Retryable(f"connection to {endpoint.describe()} failed: {exc}") from None
    except http.client.HTTPException as exc:  # e.g. the answer was cut short
        raise _Retryable(f"broken answer from {endpoint.describe()}: {type(exc).__name__} {exc}"[:200]) from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise _Retryable(f"the answer of {endpoint.describe()} is not JSON: {raw[:80]!r}") from None


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read(2000).decode("utf-8", "replace")
    except Exception:  # noqa: BLE001 - the status code alone is still worth reporting
        return ""
    try:
        err = json.loads(body).get("error")
        message = err.get("message") if isinstance(err, dict) else err
    except (ValueError, AttributeError):
        message = body
    message = " ".join(str(message or "").split())[:200]
    return f": {message}" if message else ""


def _retry_after(exc: urllib.error.HTTPError) -> float | None:
    try:
        return float(exc.headers.get("Retry-After"))
    except (TypeError, ValueError):
        return None


def _answer_text(payload) -> str:
    """The assistant's text from a chat-completions answer (string or list-of-parts content)."""
    try:
        content = payload["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise _Retryable(f"malformed answer (no choices[0].message.content): {str(payload)[:120]}") from None
    if isinstance(content, list):
        content = " ".join(p.get("text", "") for p in content if isinstance(p, dict))
    if not isinstance(content, str) or not content.strip():
        raise _Retryable("the model answered with no text")
    return content


_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")
_LEAD = re.compile(r"^(the\s+)?(highlighted\s+)?(part\s+)?(is\s+)?(called\s+)?(an?\s+|the\s+)?", re.I)


def clean_name(text: str) -> str:
    """A display name ("Seat", "Chair leg") from the model's answer: JSON {"name": ...} or plain
    text; fences, quotes, lead-ins ("The highlighted part is a ...") and end punctuation removed.
    Raises _Retryable when nothing usable is left or the answer is a sentence, not a name."""
    text = _FENCE.sub("", text.strip()).strip()
    name = None
    match = re.search(r"\{.*\}", text, re.S)
    if match:
        try:
            value = json.loads(match.group(0))
        except json.JSONDecodeError:
            value = None
        if isinstance(value, dict):
            if not isinstance(value.get("name"), str):
                raise _Retryable(f'no "name" in the answer {text[:60]!r}')
            name = value["name"]
    if name is None:
        name = text.splitlines()[0] if text else ""
    name = name.strip().strip("\"'`*").strip()
    name = _LEAD.sub("", name).strip()
    name = re.sub(r"[\s_]+", " ", re.sub(r"[.!?:;,]+$", "", name)).strip().strip("\"'`*").strip()
    if not name or not re.search(r"[^\W\d_]", name):
        raise _Retryable(f"unusable answer {text[:60]!r}")
    if len(name.split()) > MAX_NAME_WORDS or len(name) > MAX_NAME_CHARS:
        raise _Retryable(f"the answer is not a short name: {text[:60]!r}")
    return name[0].upper() + name[1:]


def number_duplicates(names: dict[int, str | None]) -> dict[int, str | None]:
    """Parts with the same name (ignoring case) get numbered in part order: "Leg 1", "Leg 2"."""
    groups: dict[str, list[int]] = {}
    for part in sorted(names):
        if names[part]:
            groups.setdefault(names[part].casefold(), []).append(part)
    out = dict(names)
    for members in groups.values():
        if len(members) > 1:
            for i, part in enumerate(members, 1):
                out[part] = f"{names[part]} {i}"
    return out


# ---- cache -------------------------------------------------------------------------------------
def labels_hash(labels: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(labels, dtype="<i4").tobytes()).hexdigest()[:16]


def default_cache_path() -> Path:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    return paths.cache_dir() / "part_names.json"


class NameCache:
    """Names already given, by (mesh id, labels hash, part, model): asking again costs nothing.
    Kept in a small JSON file (None: in memory only). Thread-safe; failures are not cached."""

    def __init__(self, path: str | Path | None = None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._names: dict[str, str] = {}
        if self.path is not None:
            try:
                data = json.loads(self.path.read_text())
                self._names = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
            except (OSError, ValueError):
                self._names = {}

    @staticmethod
    def key(mesh_id: str, labels_digest: str, part: int, model: str, object_name: str | None) -> str:
        return json.dumps([mesh_id, labels_digest, int(part), model, object_name or "", PROMPT_VERSION])

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._names.get(key)

    def put(self, key: str, name: str) -> None:
        with self._lock:
            self._names[key] = name
            if self.path is None:
                return
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text(json.dumps(self._names))
                os.replace(tmp, self.path)
            except OSError as exc:  # a read-only cache folder must not fail the naming
                log.warning("cannot write the name cache %s: %s", self.path, exc)


# ---- the backend op ---------------------------------------------------------------------------
MAX_OBJECT_NAME = 80
MAX_PARALLEL = 16


def server_args(args: dict, arrays: dict, n_faces: int) -> tuple[Endpoint, str | None, int, int]:
    """Check the arguments of the `name_parts` op: (endpoint, object name, views per part,
    requests at a time).
    The endpoint comes from `args.endpoint` {url, model, api_key, timeout_s, retries}, else from
    the backend's environment; with neither, naming is off and the op is refused."""
    from . import wire

    def bad(message):
        return wire.ProtocolError(wire.BAD_ARGS, message)

    labels = arrays.get("labels")
    if labels is None or labels.shape != (n_faces,) or not np.issubdtype(labels.dtype, np.integer):
        got = "none" if labels is None else f"{labels.dtype} {list(labels.shape)}"
        raise bad(f"name_parts needs an integer array 'labels' with one label per triangle ({n_faces}); got {got}")
    raw = args.get("endpoint") or {}
    if not isinstance(raw, dict):
        raise bad("'endpoint' must be a map {url, model, api_key, timeout_s, retries}")
    options = {}
    for key, kind in (("timeout_s", (int, float)), ("retries", int)):
        value = raw.get(key)
        if value is not None:
            if isinstance(value, bool) or not isinstance(value, kind):
                raise bad(f"endpoint '{key}' must be a number")
            options[key] = value
    for key in ("url", "model", "api_key"):
        if raw.get(key) is not None and not isinstance(raw.get(key), str):
            raise bad(f"endpoint '{key}' must be a string")
    try:
        endpoint = resolve_endpoint(raw.get("url"), raw.get("model"), raw.get("api_key"), **options)
    except ValueError as exc:
        raise bad(str(exc)) from None
    if endpoint is None:
        raise bad(
            f"naming is off: no vision-language endpoint configured (the add-on's preferences, or "
            f"{ENV_URL} in the backend's environment); nothing was sent"
        )
    object_name = args.get("object_name")
    if object_name is not None and not isinstance(object_name, str):
        raise bad("'object_name' must be a string")
    n_views = args.get("views", DEFAULT_VIEWS)
    if isinstance(n_views, bool) or not isinstance(n_views, int) or not 1 <= n_views <= 8:
        raise bad("'views' must be an integer in [1, 8]")
    parallel = args.get("parallel", 1)
    if isinstance(parallel, bool) or not isinstance(parallel, int) or not 1 <= parallel <= MAX_PARALLEL:
        raise bad(f"'parallel' must be an integer in [1, {MAX_PARALLEL}]")
    return endpoint, (object_name or "").strip()[:MAX_OBJECT_NAME] or None, n_views, parallel


# ---- the whole job -----------------------------------------------------------------------------
@dataclass
class PartName:
    part: int
    name: str | None  # the final (numbered) name; None: keep the old name
    base: str | None = None  # the model's name before numbering
    cached: bool = False
    error: str | None = None

    def to_dict(self) -> dict:
        return {"part": self.part, "name": self.name, "base": self.base, "cached": self.cached, "error": self.error}


def name_parts(
    mesh: Mesh,
    labels: np.ndarray,
    endpoint: Endpoint | None,
    object_name: str | None = None,
    cache: NameCache | None = None,
    n_views: int = DEFAULT_VIEWS,
    tile: int = DEFAULT_TILE,
    progress: Progress = no_progress,
    cancel: CancelToken | None = None,
    save_dir: str | Path | None = None,
    parallel: int = 1,
) -> list[PartName]:
    """Name every part of `labels` (one label per triangle of `mesh`; negative: unlabelled).
    A part that fails keeps name None with the reason in `error`; the others still get named.
    `parallel` requests at a time (a local server usually answers one at a time anyway).
    `save_dir` also writes each sheet as part_NNN.png (what was sent)."""
    from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait

    if endpoint is None:
        raise NamingOff(
            f"naming is off: no vision-language endpoint configured (set {ENV_URL} and "
            f"{ENV_MODEL}, or the add-on's preferences); nothing was sent"
        )
    cancel = cancel or CancelToken()
    cache = cache if cache is not None else NameCache(None)
    labels = np.asarray(labels, dtype=np.int64)
    parts = np.unique(labels[labels >= 0]).tolist()
    digest = labels_hash(labels)
    keys = {p: cache.key(mesh.content_hash, digest, p, endpoint.model, object_name) for p in parts}
    results: dict[int, PartName] = {}
    for p in parts:
        hit = cache.get(keys[p])
        if hit is not None:
            results[p] = PartName(p, None, hit, cached=True)
    todo = [p for p in parts if p not in results]
    if todo:
        progress(0.02, "rendering parts")
        sheets = {s.part: s for s in render_part_sheets(mesh, labels, todo, n_views, tile)}
        if save_dir is not None:
            Path(save_dir).mkdir(parents=True, exist_ok=True)

        def name_one(p: int) -> PartName:
            sheet = sheets[p]
            if sheet.png is None:
                return PartName(p, None, error="too small to be seen in any view; not sent")
            if save_dir is not None:
                (Path(save_dir) / f"part_{p:03d}.png").write_bytes(sheet.png)
            try:
                base = ask(endpoint, request_body(endpoint, sheet.png, object_name, len(sheet.views)), cancel)
            except NamingError as exc:
                return PartName(p, None, error=str(exc))
            cache.put(keys[p], base)
            return PartName(p, None, base)

        progress(0.1, f"asking {endpoint.model}")
        pool = ThreadPoolExecutor(max_workers=max(1, int(parallel)), thread_name_prefix="segparts-name")
        try:
            pending, answered = {pool.submit(name_one, p) for p in todo}, 0
            while pending:  # wake up now and then: a cancel must not wait for a slow answer
                finished, pending = wait(pending, timeout=0.1, return_when=FIRST_COMPLETED)
                cancel.check()
                for future in finished:
                    result = future.result()
                    results[result.part] = result
                    answered += 1
                    progress(0.1 + 0.9 * answered / len(todo), f"naming part {answered}/{len(todo)}")
        except BaseException:  # cancelled: answer now; requests in flight end on their own
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
    bases = {p: r.base for p, r in results.items()}
    final = number_duplicates(bases)
    for p, r in results.items():
        r.name = final.get(p) if r.error is None else None
    progress(1.0, "named")
    return [results[p] for p in parts]
