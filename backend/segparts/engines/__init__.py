"""Engine registry. Engines are imported lazily so the server starts without torch."""

from __future__ import annotations

import importlib

from .base import Availability, Engine, EngineUnavailable

ENGINES = {
    "geometric": "segparts.engines.geometric:GeometricEngine",
    "sampart3d": "segparts.engines.sampart3d:SAMPart3DEngine",
    "geosam2": "segparts.engines.geosam2:GeoSAM2Engine",
}


def engine_names() -> list[str]:
    return list(ENGINES)


def create_engine(name: str, device: str = "cpu") -> Engine:
    if name not in ENGINES:
        raise KeyError(f"unknown engine {name!r}; choose one of {', '.join(ENGINES)}")
    module_name, cls_name = ENGINES[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # the engine's module itself is missing or broken
        return _MissingEngine(name, str(exc))
    return getattr(module, cls_name)(device=device)


class _MissingEngine:
    """Stands in for an engine whose code cannot be imported; says why instead of crashing."""

    def __init__(self, name: str, error: str):
        self.name = name
        self._availability = Availability(
            False,
            [f"engine module: {error}"],
            "reinstall segparts (pip install segparts, or the add-on's Set up Backend)",
        )

    def availability(self) -> Availability:
        return self._availability

    def segment(self, *a, **k):
        raise EngineUnavailable(self._availability)

    def pick(self, *a, **k):
        raise EngineUnavailable(self._availability)
