"""The one interface every engine implements; the server and CLI know nothing else about engines."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ..hierarchy import Hierarchy
from ..mesh import Mesh
from ..proximity import nearest_face  # also re-exported for the engines


class Cancelled(Exception):
    """Raised inside an engine when its job was cancelled."""


class EngineUnavailable(RuntimeError):
    """The engine cannot run here; the message says exactly what is missing and how to get it."""

    def __init__(self, availability: Availability):
        super().__init__(availability.message())
        self.availability = availability


class CancelToken:
    """Set by the server's `cancel` op; engines call `check()` between steps."""

    def __init__(self):
        self._event = threading.Event()

    def cancel(self):
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self):
        if self._event.is_set():
            raise Cancelled("cancelled")


def run_cancellable(fn: Callable[[], Any], cancel_check: Callable[[], None], poll_s: float = 0.05):
    """`fn()` in a helper thread while this one keeps calling `cancel_check` every `poll_s`, so a
    long native call that cannot be split (an Embree scene build, a Dijkstra over a million faces)
    does not hold a cancel back. When cancel_check raises, `fn` finishes unseen and is dropped."""
    result: dict[str, Any] = {}

    def run():
        try:
            result["value"] = fn()
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc

    thread = threading.Thread(target=run, name="segparts-cancellable", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(poll_s)
        cancel_check()
    if "error" in result:
        raise result["error"]
    return result["value"]


Progress = Callable[[float, str], None]  # (fraction in [0, 1], stage name)


def no_progress(fraction: float, stage: str) -> None:
    pass


@dataclass
class Availability:
    available: bool
    missing: list[str] = field(default_factory=list)  # files or packages, one per entry
    fix: str = ""  # the command(s) that make it available

    def message(self) -> str:
        if self.available:
            return "available"
        return "missing: " + "; ".join(self.missing) + (f". To fix: {self.fix}" if self.fix else "")

    def to_dict(self) -> dict:
        return {"available": self.available, "missing": list(self.missing), "fix": self.fix, "message": self.message()}


class OptionError(ValueError):
    """An engine option with an undeclared name, a wrong type or a value out of range."""


@dataclass(frozen=True)
class Option:
    """One engine option as an engine declares it (`options = (Option(...), ...)` on the class), so
    the server and the CLI check options before a job starts instead of failing inside it.
    `kind`: int, float, str, bool, "numbers" (a list of `length` finite numbers), "clicks" (a list of
    1..`length` maps {face: int >= 0 | point: [x, y, z], positive: bool}) or object (a Python
    object, accepted in-process only, never from the wire). Ranges are inclusive."""

    name: str
    kind: object
    low: float | None = None
    high: float | None = None
    choices: tuple = ()
    length: int | None = None

    def check(self, value, from_wire: bool):
        if self.kind is object:
            if from_wire:
                raise OptionError(f"option {self.name!r} can only be given in-process")
            return value
        if self.kind == "clicks":
            return self._clicks(value)
        if self.kind == "numbers":
            if (
                not isinstance(value, (list, tuple))
                or len(value) != self.length
                or not all(_is_number(x) and math.isfinite(x) for x in value)
            ):
                raise OptionError(f"option {self.name!r} must be a list of {self.length} finite numbers")
            return [float(x) for x in value]
        if self.kind is bool:
            if not isinstance(value, bool):
                raise OptionError(f"option {self.name!r} must be true or false, not {_show(value)}")
            return value
        if self.kind is str:
            if not isinstance(value, str) or (self.choices and value not in self.choices):
                raise OptionError(
                    f"option {self.name!r} must be one of {', '.join(map(repr, self.choices))}, not {_show(value)}"
                )
            return value
        if self.kind is int and not (isinstance(value, int) and not isinstance(value, bool)):
            raise OptionError(f"option {self.name!r} must be an integer{self._range()}, not {_show(value)}")
        if self.kind is float and not (_is_number(value) and math.isfinite(value)):
            raise OptionError(f"option {self.name!r} must be a finite number{self._range()}, not {_show(value)}")
        if (
            (self.low is not None and value < self.low)
            or (self.high is not None and value > self.high)
            or (self.choices and value not in self.choices)
        ):
            allowed = f" one of {', '.join(map(str, self.choices))}" if self.choices else self._range()
            raise OptionError(f"option {self.name!r} must be{allowed}, not {_show(value)}")
        return self.kind(value)

    def _clicks(self, value) -> list[dict]:
        shape = f"option {self.name!r} must be a list of 1..{self.length} clicks {{face | point, positive}}"
        if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= (self.length or len(value)):
            raise OptionError(shape)
        for c in value:
            if not isinstance(c, dict) or not ({"face", "point"} & set(c)) or set(c) - {"face", "point", "positive"}:
                raise OptionError(shape)
            face, point = c.get("face"), c.get("point")
            if face is not None and not (isinstance(face, int) and not isinstance(face, bool) and face >= 0):
                raise OptionError(f"option {self.name!r}: a click's face must be an integer >= 0, not {_show(face)}")
            if point is not None and not (
                isinstance(point, (list, tuple))
                and len(point) == 3
                and all(_is_number(x) and math.isfinite(x) for x in point)
            ):
                raise OptionError(f"option {self.name!r}: a click's point must be 3 finite numbers")
            if not isinstance(c.get("positive", True), bool):
                raise OptionError(f"option {self.name!r}: a click's positive must be true or false")
        return [dict(c) for c in value]

    def _range(self) -> str:
        if self.low is None and self.high is None:
            return ""
        return f" in [{self.low if self.low is not None else '-inf'}, {self.high if self.high is not None else 'inf'}]"


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _show(value) -> str:
    return repr(value)[:40]


def check_options(engine, options, from_wire: bool = True) -> dict:
    """Options checked against the engine's declaration: unknown names, wrong types and values out
    of range raise OptionError. An engine without a declaration accepts only an empty map."""
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        raise OptionError("'options' must be a map with string keys")
    declared = {o.name: o for o in getattr(engine, "options", ())}
    unknown = sorted(set(options) - set(declared))
    if unknown:
        known = ", ".join(declared) or "none"
        raise OptionError(
            f"unknown option(s) {', '.join(repr(k[:40]) for k in unknown[:5])} for engine "
            f"{getattr(engine, 'name', '?')}; its options: {known}"
        )
    return {name: declared[name].check(value, from_wire) for name, value in options.items()}


@dataclass
class SegmentParams:
    parts: int | None = None  # cut the hierarchy into this many parts
    scale: float | None = None  # or at this scale in [0, 1] (0 = finest); neither = automatic
    options: dict[str, Any] = field(default_factory=dict)  # engine-specific (quality, seed, ...)


@dataclass
class Segmentation:
    labels: np.ndarray  # (F,) int32 per triangle at the requested granularity
    hierarchy: Hierarchy | None = None  # coarse -> fine, for re-cutting and picking
    state: Any = None  # engine-private cache for pick / re-cut (never sent on the wire)
    info: dict[str, Any] = field(default_factory=dict)  # small JSON-able facts (timings, auto scale)


@dataclass
class Click:
    face: int | None = None  # triangle index, or
    point: tuple[float, float, float] | None = None  # a point on the surface (object coordinates)
    positive: bool = True
    view: dict | None = None  # optional {"view_matrix": 4x4, "proj_matrix": 4x4, "size": [w, h]}


@dataclass
class PickRequest:
    clicks: list[Click]
    parts: int | None = None
    scale: float | None = None
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class PickResult:
    mask: np.ndarray  # (F,) bool: the picked part
    node: int = -1  # hierarchy node of the part, -1 when the engine has no hierarchy
    parent: int = -1  # for "grow selection"
    children: list[int] = field(default_factory=list)  # for "shrink selection"
    info: dict[str, Any] = field(default_factory=dict)


class Engine(Protocol):
    """What every engine has. Optional class attributes describe it to clients (`describe`, sent
    in `hello`): `label` (display name), `click_prompts` (clicks are prompts the engine answers
    itself, not cuts of its hierarchy), `renders` (it renders the mesh, so clients send the shading
    normals), `scales_on_backend` (each scale is its own result: a client asks `segment` again at a
    new scale instead of cutting the returned hierarchy) and `model_names()` (the checkpoints it
    loads with its default options). Optionally `recut(segmentation, params)` (see `recut`)."""

    name: str

    def availability(self) -> Availability: ...

    def segment(self, mesh: Mesh, params: SegmentParams, progress: Progress, cancel: CancelToken) -> Segmentation: ...

    def pick(
        self, mesh: Mesh, segmentation: Segmentation | None, request: PickRequest, cancel: CancelToken
    ) -> PickResult: ...


def describe(engine) -> dict:
    """An engine as clients see it (`hello`), from its optional class attributes (see Engine)."""
    model_names = getattr(engine, "model_names", None)
    return {
        "label": str(getattr(engine, "label", engine.name.capitalize())),
        "click_prompts": bool(getattr(engine, "click_prompts", False)),
        "renders": bool(getattr(engine, "renders", False)),
        "scales_on_backend": bool(getattr(engine, "scales_on_backend", False)),
        "models": [str(n) for n in model_names()] if model_names is not None else [],
    }


def recut(engine, segmentation: Segmentation, params: SegmentParams) -> Segmentation:
    """A new granularity from an existing result without recomputing it: the engine's own
    `recut` when it has one (e.g. clustering at a new scale), else a cut of the hierarchy."""
    custom = getattr(engine, "recut", None)
    if custom is not None:
        return custom(segmentation, params)
    if segmentation.hierarchy is None:
        raise ValueError("this result has no hierarchy to re-cut; segment again")
    scale = params.scale
    if params.parts is None and scale is None:
        scale = segmentation.info.get("auto_scale", 0.5)
    labels = segmentation.hierarchy.cut(parts=params.parts, scale=scale)
    return Segmentation(labels, segmentation.hierarchy, segmentation.state, {**segmentation.info, "recut": True})


def pick_from_hierarchy(mesh: Mesh, segmentation: Segmentation, request: PickRequest) -> PickResult:
    """Pick for engines whose answer is a cut of their hierarchy: the part under the first click."""
    if segmentation is None or segmentation.hierarchy is None:
        raise ValueError("pick needs a segmentation of this mesh first (run segment)")
    if not request.clicks:
        raise ValueError("pick needs at least one click")
    h = segmentation.hierarchy
    click = request.clicks[0]
    face = click.face if click.face is not None else nearest_face(mesh, np.asarray(click.point, float))
    if not 0 <= face < mesh.n_faces:
        raise ValueError(f"face {face} is not on the mesh (it has {mesh.n_faces} faces)")
    scale = request.scale
    if request.parts is None and scale is None:
        scale = segmentation.info.get("auto_scale", 0.5)
    node = h.node_at(face, scale=scale, parts=request.parts)
    parent = int(h.parent[node])
    return PickResult(
        mask=h.face_mask(node), node=node, parent=parent, children=h.children(node).tolist(), info={"face": int(face)}
    )
