"""`segparts batch`: segment many meshes with `run_batch`, writing per mesh under OUT:

- `<key>.npy` int32 labels in the file's face order (as `segparts segment --out x.npy`),
- optional `<key>.ply` / `<key>.glb` (coloured by part), `<key>.hierarchy.json` (the part tree),
  `<key>.png` (a contact sheet of the coloured mesh from 8 views),
- `<key>.record.json`: the input's sha256, the parameters, the outputs and the figures; a mesh
  whose record matches is skipped on the next run,

and for the batch: `summary.csv`, `summary.json` (per mesh: faces, parts, seconds per stage,
engine, status, worker; per worker: tasks, loads, peak memory) and `errors.jsonl` (path, code,
message per failed mesh).
"""

from __future__ import annotations

import csv
import io
import json
import time
from dataclasses import dataclass, field

import numpy as np

from .. import __version__
from . import storage
from .inputs import MeshInput
from .runner import ERROR, BatchReport, RecordStore, Task, run_batch

FORMATS = ("npy", "ply", "glb", "json", "png")
SUMMARY_COLUMNS = (
    "key",
    "path",
    "status",
    "engine",
    "faces",
    "parts",
    "seconds_total",
    "seconds_load",
    "seconds_segment",
    "seconds_write",
    "worker",
    "worker_loads",
    "error_code",
    "error_message",
)


@dataclass(frozen=True)
class SegmentSettings:
    engine: str = "geometric"
    parts: int | None = None
    scale: float | None = None
    options: dict = field(default_factory=dict)

    def with_overrides(self, overrides: dict) -> SegmentSettings:
        merged = {**self.options, **overrides.get("options", {})}
        parts, scale = overrides.get("parts", self.parts), overrides.get("scale", self.scale)
        if "parts" in overrides and "scale" not in overrides:
            scale = None
        if "scale" in overrides and "parts" not in overrides:
            parts = None
        return SegmentSettings(overrides.get("engine", self.engine), parts, scale, merged)

    def as_dict(self) -> dict:
        return {"engine": self.engine, "parts": self.parts, "scale": self.scale, "options": self.options}


@dataclass(frozen=True)
class SegmentWorkerFactory:
    """Picklable recipe of a worker; each worker process builds it once."""

    device: str = "cpu"
    formats: tuple[str, ...] = ("npy",)

    def __call__(self) -> SegmentWorker:
        return SegmentWorker(self.device, self.formats)


class SegmentWorker:
    """Holds the engines (and so their loaded models) for the life of its process."""

    def __init__(self, device: str, formats: tuple[str, ...]):
        self.device = device
        self.formats = formats
        self.engines: dict = {}
        self.engine_loads = 0

    def engine(self, name: str):
        from ..engines import create_engine
        from ..engines.base import EngineUnavailable

        if name not in self.engines:
            engine = create_engine(name, self.device)  # KeyError for an unknown name
            availability = engine.availability()
            if not availability.available:
                raise EngineUnavailable(availability)
            self.engines[name] = engine
            self.engine_loads += 1
        return self.engines[name]

    def __call__(self, payload: dict) -> dict:
        from ..engines.base import CancelToken, SegmentParams
        from ..meshio import load_mesh

        settings = SegmentSettings(**payload["settings"])
        stages: dict[str, float] = {}
        t0 = time.perf_counter()
        with storage.local_copy(payload["path"]) as local:
            mesh = load_mesh(local)
        engine = self.engine(settings.engine)
        stages["load"] = time.perf_counter() - t0
        timer = _StageTimer()
        seg = engine.segment(
            mesh,
            SegmentParams(parts=settings.parts, scale=settings.scale, options=dict(settings.options)),
            timer,
            CancelToken(),
        )
        stages["segment"] = timer.total()
        t1 = time.perf_counter()
        labels = np.asarray(seg.labels, dtype=np.int32)
        outputs = self._write(payload["out"], mesh, labels, seg.hierarchy)
        stages["write"] = time.perf_counter() - t1
        return {
            "path": payload["path"],
            "engine": settings.engine,
            "faces": int(mesh.n_faces),
            "polygons": int(mesh.polygon_labels(labels).size),
            "parts": int(np.unique(labels[labels >= 0]).size),
            "outputs": outputs,
            "stages": {k: round(v, 4) for k, v in stages.items()},
            "engine_stages": {k: round(v, 4) for k, v in timer.stages.items()},
            "engine_loads": self.engine_loads,
        }

    def _write(self, base: str, mesh, labels: np.ndarray, hierarchy) -> list[str]:
        from ..meshio import save_labels

        outputs = []
        for fmt in self.formats:
            path = f"{base}.hierarchy.json" if fmt == "json" else f"{base}.{fmt}"
            with storage.atomic_output(path) as local:
                if fmt in ("npy", "ply", "glb"):
                    save_labels(local, mesh, labels)
                elif fmt == "json":
                    with open(local, "w") as fh:
                        json.dump(hierarchy_json(mesh, labels, hierarchy), fh)
                elif fmt == "png":
                    contact_sheet_png(mesh, labels, local)
            outputs.append(path)
        return outputs


class _StageTimer:
    """The engine's progress callback: seconds spent in each stage the engine names."""

    def __init__(self):
        self.stages: dict[str, float] = {}
        self._start = self._last = time.perf_counter()
        self._stage = None

    def __call__(self, fraction: float, stage: str) -> None:
        now = time.perf_counter()
        if self._stage is not None:
            self.stages[self._stage] = self.stages.get(self._stage, 0.0) + now - self._last
        self._stage, self._last = stage, now

    def total(self) -> float:
        self(1.0, self._stage or "segment")
        return self._last - self._start


def hierarchy_json(mesh, labels: np.ndarray, hierarchy) -> dict:
    """The part tree in the file's face order: each face's leaf, each node's parent and height
    (leaves first, root last, heights in [0, 1]), and the labels written to the `.npy`."""
    out = {"n_faces": int(mesh.polygon_labels(labels).size), "labels": mesh.polygon_labels(labels).tolist()}
    if hierarchy is not None:
        out.update(
            n_leaves=int(hierarchy.n_leaves),
            leaf=mesh.polygon_labels(hierarchy.leaf_labels).tolist(),
            parent=hierarchy.parent.tolist(),
            height=[round(float(h), 6) for h in hierarchy.height],
        )
    return out


def contact_sheet_png(mesh, labels: np.ndarray, path: str, size: int = 256) -> None:
    from ..appearance import Appearance
    from ..cli.render import contact_sheet
    from ..mesh import Mesh
    from ..palette import part_colours
    from ..render import normalize_for_rendering, render_views
    from ..render.cameras import orbit_rig, reference_distance

    vertices, norm = normalize_for_rendering(mesh.vertices)
    coloured = Mesh(vertices, mesh.faces, appearance=Appearance(face_colors=part_colours(labels)[:, :3]))
    rig = orbit_rig(
        np.tile(np.arange(0.0, 360.0, 90.0), 2), np.repeat([20.0, -20.0], 4), size, reference_distance(norm.extents)
    )
    views = render_views(coloured, rig, outputs=("color",))
    contact_sheet(views.color, columns=4).save(path, format="PNG")


def fingerprint(path: str, settings: SegmentSettings, formats: tuple[str, ...]) -> str:
    """What a finished mesh must match to be skipped: its content, the parameters, the formats."""
    params = json.dumps({**settings.as_dict(), "formats": sorted(formats), "segparts": __version__}, sort_keys=True)
    return f"sha256:{storage.sha256_file(path)}|{params}"


def make_tasks(meshes: list[MeshInput], settings: SegmentSettings, formats: tuple[str, ...], out: str) -> list[Task]:
    tasks = []
    for m in meshes:
        mesh_settings = settings.with_overrides(m.overrides)
        try:
            fp = fingerprint(m.path, mesh_settings, formats)
        except OSError:
            fp = ""  # unreadable now: the worker reports it
        tasks.append(
            Task(m.key, {"path": m.path, "out": storage.join(out, m.key), "settings": mesh_settings.as_dict()}, fp)
        )
    return tasks


def segment_batch(
    meshes: list[MeshInput],
    settings: SegmentSettings,
    out: str,
    *,
    formats=("npy",),
    device: str = "cpu",
    workers: int = 0,
    ray: str | None = None,
    resume: bool = True,
    progress: bool | None = None,
    max_retries: int = 2,
) -> BatchReport:
    storage.makedirs(out)
    errors_path = storage.join(out, "errors.jsonl")
    storage.write_text(errors_path, "")  # this run's errors only; failed meshes are retried

    def on_result(record: dict) -> None:
        if record["status"] == ERROR:
            storage.append_line(
                errors_path, json.dumps({"key": record["key"], "path": paths[record["key"]], **record["error"]})
            )

    tasks = make_tasks(meshes, settings, tuple(formats), out)
    paths = {t.key: t.payload["path"] for t in tasks}
    learned = {t.payload["settings"]["engine"] for t in tasks} - {"geometric"}
    started = time.perf_counter()
    report = None
    try:
        report = run_batch(
            tasks,
            SegmentWorkerFactory(device, tuple(formats)),
            workers=workers,
            ray=ray,
            records=RecordStore(out) if resume else None,
            on_result=on_result,
            gpus_per_worker=1 if (learned and device != "cpu" and ray) else 0,
            max_retries=max_retries,
            progress=progress,
            desc="segment",
        )
    finally:
        if report is not None:
            write_summary(out, report, paths, time.perf_counter() - started)
    return report


def summary_rows(report: BatchReport, paths: dict) -> list[dict]:
    rows = []
    for r in report.results:
        result = r.get("result") or {}
        stages = result.get("stages", {})
        worker = r.get("worker") or {}
        rows.append(
            {
                "key": r["key"],
                "path": paths.get(r["key"], result.get("path", "")),
                "status": r["status"],
                "engine": result.get("engine", ""),
                "faces": result.get("faces", ""),
                "parts": result.get("parts", ""),
                "seconds_total": r.get("seconds", ""),
                "seconds_load": stages.get("load", ""),
                "seconds_segment": stages.get("segment", ""),
                "seconds_write": stages.get("write", ""),
                "worker": f"{worker.get('host', '')}:{worker.get('pid', '')}" if worker else "",
                "worker_loads": worker.get("loads", ""),
                "error_code": (r.get("error") or {}).get("code", ""),
                "error_message": (r.get("error") or {}).get("message", ""),
            }
        )
    return rows


def write_summary(out: str, report: BatchReport, paths: dict, wall_seconds: float) -> None:
    rows = summary_rows(report, paths)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    storage.write_text(storage.join(out, "summary.csv"), buf.getvalue())
    ran = [r for r in report.results if r["status"] == "ok"]
    summary = {
        "mode": report.mode,
        "wall_seconds": round(wall_seconds, 3),
        "counts": report.counts,
        "startup_seconds": round(report.startup_seconds, 3),
        "meshes_per_second": round(len(ran) / wall_seconds, 4) if wall_seconds > 0 else None,
        "workers": report.workers,
        "max_loads_per_worker": max((w["loads"] for w in report.workers.values()), default=0),
        "meshes": [
            {
                **row,
                "stages": (r.get("result") or {}).get("stages", {}),
                "engine_stages": (r.get("result") or {}).get("engine_stages", {}),
            }
            for row, r in zip(rows, report.results)
        ],
    }
    storage.write_text(storage.join(out, "summary.json"), json.dumps(summary, indent=1))
