"""Benchmark evaluations on the batch machinery: one engine per worker process (built once),
one task per benchmark item, per-item records in an optional folder so a rerun resumes.

To put a benchmark on it (as `eval princeton` and `eval partobjaverse` do):
1. a module-level function `evaluate_item(engine, item, **options) -> dict` (JSON-able) that
   loads the item's mesh and ground truth, runs `engine.segment` and scores it;
2. `run_evaluation(items, key=..., files=..., evaluate=evaluate_item, engine=NAME, ...)`, where
   `key(item)` names the item's record and `files(item)` lists the files whose content decides
   whether a stored record is still valid; `scored(report)` gives the results back in item order.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .. import __version__
from . import storage
from .runner import OK, SKIPPED, BatchReport, RecordStore, Task, run_batch


@dataclass(frozen=True)
class EvalWorkerFactory:
    engine: str
    device: str
    evaluate: Callable  # module-level function (engine, item, **options) -> dict
    options: tuple = ()  # (name, value) pairs passed to `evaluate`

    def __call__(self) -> EvalWorker:
        return EvalWorker(self)


class EvalWorker:
    def __init__(self, spec: EvalWorkerFactory):
        from ..engines import create_engine
        from ..engines.base import EngineUnavailable

        self.spec = spec
        self.engine = create_engine(spec.engine, spec.device)
        availability = self.engine.availability()
        if not availability.available:
            raise EngineUnavailable(availability)

    def __call__(self, item) -> dict:
        return self.spec.evaluate(self.engine, item, **dict(self.spec.options))


def run_evaluation(
    items: Iterable[Any],
    *,
    key: Callable[[Any], str],
    files: Callable[[Any], list],
    evaluate: Callable,
    engine: str,
    device: str = "cpu",
    options: dict | None = None,
    out: str | None = None,
    workers: int = 0,
    ray: str | None = None,
    on_scored: Callable[[dict], None] | None = None,
    max_retries: int = 2,
    progress: bool | None = None,
    desc: str = "eval",
) -> BatchReport:
    """`out`: folder of per-item records (`<key>.record.json`); an item whose record matches its
    files' content, the engine and the options is not evaluated again. `on_scored` receives the
    result of each item scored now (not of the ones skipped), as it arrives."""
    options = dict(sorted((options or {}).items()))
    params = json.dumps({"engine": engine, "options": options, "segparts": __version__}, sort_keys=True)
    tasks = []
    for item in items:
        content = ",".join(storage.sha256_file(str(p)) for p in files(item)) if out else ""
        tasks.append(Task(key(item), item, f"{content}|{params}" if out else ""))
    if out:
        storage.makedirs(out)
    factory = EvalWorkerFactory(engine, device, evaluate, tuple(options.items()))

    def on_result(record: dict) -> None:
        if on_scored and record["status"] == OK:
            on_scored(record["result"])

    gpus = 1 if (engine != "geometric" and device != "cpu" and ray) else 0
    return run_batch(
        tasks,
        factory,
        workers=workers,
        ray=ray,
        records=RecordStore(out) if out else None,
        on_result=on_result,
        gpus_per_worker=gpus,
        max_retries=max_retries,
        progress=progress,
        desc=desc,
    )


def scored(report: BatchReport) -> list[dict]:
    """The results of the items scored now or by an earlier run (skipped), in item order."""
    return [r["result"] for r in report.results if r["status"] in (OK, SKIPPED)]
