"""`run_batch`: run one worker function over many tasks, in this process, in local worker
processes, or on a Ray cluster, with resumability and errors isolated per task.

- A *worker factory* is a picklable, argument-less callable that builds the worker (loads the
  engine and its models). It runs **once per worker process** (or Ray actor); the worker is then
  called once per task: `worker(payload) -> dict` (JSON-able). Each result carries the worker's
  pid, how many times that process built a worker (`loads`, 1 when models were loaded once) and
  its peak resident memory, so the summary proves both.
- An exception inside the worker becomes that task's error record (`code`, `message`) and the
  batch goes on. A worker process that dies (killed, out of memory, segfault) has its in-flight
  tasks retried up to `max_retries` times (Ray: Ray's own task/actor retries), then recorded as
  `worker_died`.
- With a `RecordStore`, a task whose record holds the same fingerprint (input content hash and
  parameters) and whose outputs still exist is not run again (`status: skipped`); a finished
  task's record is written atomically as soon as its result arrives, so a crash or Ctrl-C loses at
  most the tasks in flight.
"""

from __future__ import annotations

import json
import os
import pickle
import resource
import socket
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from typing import Any

from . import storage

OK, ERROR, SKIPPED = "ok", "error", "skipped"


@dataclass
class Task:
    key: str  # unique within the batch; names the task's record (and usually its outputs)
    payload: Any  # what the worker needs (picklable)
    fingerprint: str = ""  # input content hash + parameters; "" = always run


@dataclass
class BatchReport:
    results: list[dict]  # one per task, in task order
    wall_seconds: float
    mode: str  # "sequential", "processes:N", "ray:ADDRESS"
    workers: dict = field(default_factory=dict)  # "host:pid" -> {tasks, loads, peak_rss_mb}
    startup_seconds: float = 0.0  # connecting to / starting Ray
    interrupted: bool = False  # Ctrl-C: the results hold what finished before it

    @property
    def counts(self) -> dict[str, int]:
        out = {OK: 0, ERROR: 0, SKIPPED: 0}
        for r in self.results:
            out[r["status"]] += 1
        return out

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.results if r["status"] == ERROR]


class RecordStore:
    """One JSON record per finished task at `root/<key><suffix>`, written atomically."""

    def __init__(self, root: str, suffix: str = ".record.json"):
        self.root = str(root)
        self.suffix = suffix

    def path(self, key: str) -> str:
        return storage.join(self.root, key + self.suffix)

    def finished(self, task: Task) -> dict | None:
        """The stored record when `task` is done with the same fingerprint and its outputs exist."""
        if not task.fingerprint:
            return None
        path = self.path(task.key)
        try:
            record = json.loads(storage.read_bytes(path))
        except (OSError, ValueError):
            return None  # missing or torn record: run the task again
        if record.get("status") != OK or record.get("fingerprint") != task.fingerprint:
            return None
        outputs = (record.get("result") or {}).get("outputs") or []
        if not all(storage.exists(p) for p in outputs):
            return None
        return record

    def save(self, record: dict) -> None:
        storage.write_text(self.path(record["key"]), json.dumps(record, indent=1))


# ---- inside a worker process ---------------------------------------------------------------
_WORKERS: dict[bytes, Callable] = {}  # factory (pickled) -> built worker, per process
_LOADS: dict[bytes, int] = {}  # factory (pickled) -> times this process built its worker


def _worker_for(factory) -> Callable:
    key = pickle.dumps(factory)
    worker = _WORKERS.get(key)
    if worker is None:
        worker = factory()
        _WORKERS[key] = worker
        _LOADS[key] = _LOADS.get(key, 0) + 1
    return worker


def _process_facts(factory) -> dict:
    """This process and how many times it built `factory`'s worker (other jobs run earlier in the
    same process, e.g. sequential runs in one interpreter, build their own and don't count)."""
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    loads = _LOADS.get(pickle.dumps(factory), 0)
    return {"host": socket.gethostname(), "pid": os.getpid(), "loads": loads, "peak_rss_mb": round(peak_kb / 1024, 1)}


def error_record(exc: BaseException) -> dict:
    """`code`: the exception's own code (MeshError, backend errors) or its class name."""
    code = getattr(exc, "code", None)
    if not isinstance(code, str):
        code = type(exc).__name__
    text = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    return {"code": code, "message": " ".join(str(text).split())}


def execute(factory, key: str, payload) -> dict:
    """Run one task in this process; never raises for an error of the task itself."""
    started = time.perf_counter()
    try:
        worker = _worker_for(factory)
        result, status, error = worker(payload), OK, None
    except Exception as exc:  # noqa: BLE001 - isolate every failure of one task
        result, status, error = None, ERROR, error_record(exc)
        if os.environ.get("SEGPARTS_BATCH_TRACEBACKS"):
            traceback.print_exc(file=sys.stderr)
    record = {
        "key": key,
        "status": status,
        "seconds": round(time.perf_counter() - started, 4),
        "worker": _process_facts(factory),
    }
    if result is not None:
        record["result"] = result
    if error is not None:
        record["error"] = error
    return record


class _Actor:
    """A long-lived Ray actor: builds the worker on its first task and keeps it (models loaded
    once per GPU); a worker that cannot be built is each task's error, not a dead actor."""

    def __init__(self, factory):
        self._factory = factory

    def run(self, key, payload):
        return execute(self._factory, key, payload)

    def pid(self):
        return os.getpid()


# ---- driver --------------------------------------------------------------------------------
def run_batch(
    tasks: Iterable[Task],
    factory: Callable[[], Callable[[Any], dict]],
    *,
    workers: int = 0,
    ray: str | None = None,
    records: RecordStore | None = None,
    on_result: Callable[[dict], None] | None = None,
    gpus_per_worker: float = 0,
    actors: bool | None = None,
    max_retries: int = 2,
    progress: bool | None = None,
    desc: str = "batch",
) -> BatchReport:
    """Run `factory()`'s worker over `tasks`; see the module docstring.

    workers: local worker processes (0 or 1 = in this process). ray: None, or "local" (start a
    Ray instance on this machine with `workers` CPUs, or join the one `ray start` runs here),
    "auto" (the running cluster) or a cluster address. actors: Ray actors instead of Ray tasks
    (default: actors when `gpus_per_worker` > 0, i.e. for learned engines).
    """
    tasks = list(tasks)
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise ValueError(f"task keys must be unique; repeated: {', '.join(dup[:5])}")
    started = time.perf_counter()
    results: dict[str, dict] = {}
    todo = []
    for task in tasks:
        done = records.finished(task) if records else None
        if done is not None:
            results[task.key] = {**done, "status": SKIPPED}
        else:
            todo.append(task)
    bar = _Progress(len(tasks), len(tasks) - len(todo), desc, progress)
    startup = [0.0]

    def finish(task: Task, record: dict) -> None:
        record["fingerprint"] = task.fingerprint
        if records is not None and record["status"] == OK:
            records.save(record)
        results[task.key] = record
        bar.update(record)
        if on_result is not None:
            on_result(record)

    interrupted = False
    try:
        if ray is not None:
            use_actors = gpus_per_worker > 0 if actors is None else actors
            mode = _run_ray(todo, factory, finish, ray, workers, gpus_per_worker, use_actors, max_retries, startup)
        elif workers > 1:
            mode = _run_processes(todo, factory, finish, workers, max_retries)
        else:
            mode = "sequential"
            for task in todo:
                finish(task, execute(factory, task.key, task.payload))
    except KeyboardInterrupt:
        interrupted, mode = True, "interrupted"
    finally:
        bar.close()
    ordered = [results[k] for k in keys if k in results]
    return BatchReport(ordered, time.perf_counter() - started, mode, _worker_table(ordered), startup[0], interrupted)


def _worker_table(results: list[dict]) -> dict:
    table: dict[str, dict] = {}
    for r in results:
        if r["status"] == SKIPPED or "worker" not in r:
            continue
        w = r["worker"]
        entry = table.setdefault(f"{w['host']}:{w['pid']}", {"tasks": 0, "loads": 0, "peak_rss_mb": 0.0})
        entry["tasks"] += 1
        entry["loads"] = max(entry["loads"], w["loads"])
        entry["peak_rss_mb"] = max(entry["peak_rss_mb"], w["peak_rss_mb"])
    return table


def _died(task: Task, attempts: int, why: str) -> dict:
    return {
        "key": task.key,
        "status": ERROR,
        "seconds": 0.0,
        "error": {
            "code": "worker_died",
            "message": f"the worker process died {attempts} time(s) running this task ({why})",
        },
    }


def _run_processes(todo: list[Task], factory, finish, n_workers: int, max_retries: int) -> str:
    """A pool of spawned processes, one task in flight per process, so that when one dies the
    tasks it may have held are known: they are retried on a fresh pool."""
    import multiprocessing

    queue = list(reversed(todo))
    attempts: dict[str, int] = {}
    context = multiprocessing.get_context("spawn")  # no fork: safe with torch/CUDA in the driver
    while queue:
        pool = ProcessPoolExecutor(max_workers=n_workers, mp_context=context)
        in_flight = {}
        broken = False
        try:
            while queue or in_flight:
                while queue and len(in_flight) < n_workers and not broken:
                    task = queue.pop()
                    in_flight[pool.submit(execute, factory, task.key, task.payload)] = task
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for future in done:
                    task = in_flight.pop(future)
                    try:
                        finish(task, future.result())
                    except BrokenProcessPool:
                        broken = True
                        attempts[task.key] = attempts.get(task.key, 0) + 1
                        if attempts[task.key] > max_retries:
                            finish(task, _died(task, attempts[task.key], "local worker process"))
                        else:
                            queue.append(task)
                if broken and not in_flight:
                    break
        finally:
            pool.shutdown(wait=not broken, cancel_futures=True)
    return f"processes:{n_workers}"


def _run_ray(
    todo: list[Task],
    factory,
    finish,
    address: str,
    n_workers: int,
    gpus: float,
    use_actors: bool,
    max_retries: int,
    startup: list,
) -> str:
    import ray

    t0 = time.perf_counter()
    if not ray.is_initialized():
        if address == "local":
            try:  # a new local instance with n_workers CPUs ...
                ray.init(num_cpus=n_workers or None, include_dashboard=False, log_to_driver=False)
            except ValueError as exc:  # ... unless `ray start` runs one here: join it as it is
                if "existing cluster" not in str(exc):
                    raise
                ray.init(log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
    factory_ref = ray.put(factory)
    resources = ray.cluster_resources()
    if use_actors:
        per = "GPU" if gpus > 0 else "CPU"
        n_actors = max(1, int(resources.get(per, 1) / (gpus or 1)))
        if n_workers:
            n_actors = min(n_actors, n_workers)
        actor_cls = ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=-1, max_task_retries=max_retries)(_Actor)
        idle = [actor_cls.remote(factory_ref) for _ in range(n_actors)]
        window = n_actors
    else:
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=max_retries)(execute)
        window = max(2, 2 * int(resources.get("CPU", 1)))
        idle = []
    startup[0] = time.perf_counter() - t0
    queue = list(reversed(todo))
    in_flight: dict = {}  # object ref -> (task, actor or None)
    while queue or in_flight:
        while queue and len(in_flight) < window and (idle or not use_actors):
            task = queue.pop()
            if use_actors:
                actor = idle.pop()
                in_flight[actor.run.remote(task.key, task.payload)] = (task, actor)
            else:
                in_flight[remote.remote(factory_ref, task.key, task.payload)] = (task, None)
        ready, _ = ray.wait(list(in_flight), num_returns=1)
        task, actor = in_flight.pop(ready[0])
        if actor is not None:
            idle.append(actor)
        try:
            record = ray.get(ready[0])
        except ray.exceptions.RayError as exc:  # retries exhausted: worker or node lost
            record = _died(task, max_retries + 1, type(exc).__name__)
        finish(task, record)
    return f"ray:{address}" + (":actors" if use_actors else ":tasks")


class _Progress:
    """A tqdm bar on stderr (rate, ETA) when it is a terminal or when asked for."""

    def __init__(self, total: int, skipped: int, desc: str, enabled: bool | None):
        self._bar = None
        if enabled is None:
            enabled = sys.stderr.isatty()
        if enabled and total:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=skipped, desc=desc, unit="mesh", file=sys.stderr, dynamic_ncols=True, smoothing=0.1
            )
        self._failed = 0

    def update(self, record: dict) -> None:
        if self._bar is None:
            return
        self._failed += record["status"] == ERROR
        if self._failed:
            self._bar.set_postfix_str(f"{self._failed} failed", refresh=False)
        self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
