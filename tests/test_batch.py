"""`segparts batch` and the run_batch machinery on real meshes: in this process, in worker
processes and on a real local Ray cluster (ray.init with 2 CPUs)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from segparts.batch import RecordStore, Task, run_batch, storage
from segparts.batch.inputs import InputError, collect
from segparts.batch.segment import SegmentSettings, SegmentWorkerFactory, make_tasks
from segparts.cli import main

PRINCETON = Path(__file__).resolve().parents[1] / ".." / "shared" / "benchmarks" / "princeton" / "off"
SMALL = ["125", "398", "353", "200", "52", "341"]  # the smallest dev meshes (about 3000 faces)

pytestmark = pytest.mark.skipif(not PRINCETON.is_dir(), reason="needs ../shared/benchmarks/princeton")


@pytest.fixture(scope="module")
def meshes(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("meshes")
    for mid in SMALL:
        shutil.copy(PRINCETON / f"{mid}.off", folder / f"{mid}.off")
    return folder


@pytest.fixture(scope="module")
def expected(meshes) -> dict[str, np.ndarray]:
    """What the engine gives for each mesh, called directly, one at a time."""
    from segparts.engines import create_engine
    from segparts.engines.base import CancelToken, SegmentParams, no_progress
    from segparts.meshio import load_mesh

    engine = create_engine("geometric")
    return {
        mid: engine.segment(load_mesh(meshes / f"{mid}.off"), SegmentParams(), no_progress, CancelToken()).labels
        for mid in SMALL
    }


def _bad_mesh(folder: Path) -> Path:
    bad = folder / "broken.off"
    bad.write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n")  # promises 3 vertices and a face, has 2 and none
    return bad


def _tasks(paths, out, settings=SegmentSettings()):
    return make_tasks(collect([str(p) for p in paths]), settings, ("npy",), str(out))


def _labels_equal(out: Path, expected: dict, mids) -> None:
    for mid in mids:
        np.testing.assert_array_equal(np.load(out / f"{mid}.npy"), expected[mid], err_msg=mid)


# ---- the command, in this process -------------------------------------------------------------
def test_batch_outputs_errors_summary_and_exit_code(meshes, expected, tmp_path, capsys):
    bad = _bad_mesh(tmp_path)
    out = tmp_path / "out"
    code = main(
        [
            "batch",
            str(meshes / "125.off"),
            str(meshes / "398.off"),
            str(bad),
            "--out",
            str(out),
            "--format",
            "npy,ply,json",
        ]
    )
    assert code == 1  # one mesh failed
    line = json.loads(capsys.readouterr().out)
    assert (line["ok"], line["error"], line["skipped"]) == (2, 1, 0)
    _labels_equal(out, expected, ["125", "398"])
    errors = [json.loads(x) for x in (out / "errors.jsonl").read_text().splitlines()]
    assert [(e["key"], e["path"], e["code"]) for e in errors] == [("broken", str(bad), "unreadable")]
    assert "truncated" in errors[0]["message"]
    with open(out / "summary.csv", newline="") as summary_csv:
        rows = {r["key"]: r for r in csv.DictReader(summary_csv)}
    assert rows["125"]["status"] == "ok" and int(rows["125"]["faces"]) == len(expected["125"])
    assert int(rows["125"]["parts"]) == len(np.unique(expected["125"]))
    assert float(rows["125"]["seconds_segment"]) > 0 and rows["broken"]["status"] == "error"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["max_loads_per_worker"] == 1 and summary["counts"]["error"] == 1
    hierarchy = json.loads((out / "125.hierarchy.json").read_text())
    assert hierarchy["labels"] == expected["125"].tolist() and len(hierarchy["leaf"]) == len(expected["125"])
    assert (out / "398.ply").stat().st_size > 0


def test_resume_skips_finished_meshes_and_redoes_changed_ones(meshes, expected, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    for mid in ("125", "398"):
        shutil.copy(meshes / f"{mid}.off", src / f"{mid}.off")
    out = tmp_path / "out"
    assert main(["batch", str(src), "--out", str(out)]) == 0
    first = {mid: (out / f"{mid}.npy").stat().st_mtime_ns for mid in ("125", "398")}
    capsys.readouterr()

    assert main(["batch", str(src), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 2
    assert {mid: (out / f"{mid}.npy").stat().st_mtime_ns for mid in first} == first  # nothing rewritten

    shutil.copy(meshes / "353.off", src / "398.off")  # new content under the same name
    assert main(["batch", str(src), "--out", str(out)]) == 0
    line = json.loads(capsys.readouterr().out)
    assert (line["ok"], line["skipped"]) == (1, 1)
    np.testing.assert_array_equal(np.load(out / "398.npy"), expected["353"])

    assert main(["batch", str(src), "--out", str(out), "--parts", "3"]) == 0  # new parameters
    assert json.loads(capsys.readouterr().out)["ok"] == 2
    (out / "125.npy").unlink()  # an output lost since: redone
    assert main(["batch", str(src), "--out", str(out), "--parts", "3"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] == 1


def test_a_torn_record_is_redone_not_trusted(meshes, tmp_path):
    out = tmp_path / "out"
    tasks = _tasks([meshes / "125.off"], out)
    store = RecordStore(str(out))
    report = run_batch(tasks, SegmentWorkerFactory(), records=store)
    assert report.counts["ok"] == 1
    path = Path(store.path("125"))
    path.write_text(path.read_text()[:40])  # a crash in the middle of writing it
    assert run_batch(tasks, SegmentWorkerFactory(), records=store).counts["ok"] == 1


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "labels.npy"
    with pytest.raises(RuntimeError), storage.atomic_output(str(target)) as local:
        np.save(local, np.arange(3))
        raise RuntimeError("crash while writing")
    assert list(tmp_path.iterdir()) == []
    with storage.atomic_output(str(target)) as local:
        np.save(local, np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["labels.npy"]


def test_file_urls_go_through_fsspec(meshes, expected, tmp_path, capsys):
    out = f"file://{tmp_path}/out"
    assert main(["batch", f"file://{meshes}/125.off", "--out", out]) == 0
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "125.npy"), expected["125"])
    capsys.readouterr()
    assert main(["batch", f"file://{meshes}/125.off", "--out", out]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 1


# ---- inputs -------------------------------------------------------------------------------------
def test_inputs_folders_globs_and_manifests(meshes, tmp_path):
    tree = tmp_path / "tree"
    (tree / "a").mkdir(parents=True)
    shutil.copy(meshes / "125.off", tree / "a" / "x.off")
    shutil.copy(meshes / "398.off", tree / "x.off")
    (tree / "notes.txt").write_text("not a mesh")
    assert sorted(m.key for m in collect([str(tree)])) == ["a/x", "x"]
    assert [m.key for m in collect([str(meshes / "12*.off")])] == ["125"]
    # the same stem twice: both keep their suffix
    ply = tmp_path / "125.ply"
    ply.write_text("")
    assert sorted(m.key for m in collect([str(meshes / "125.off"), str(ply)])) == ["125_off", "125_ply"]

    manifest = tmp_path / "list.csv"
    manifest.write_text(f"path,id,parts\n{meshes / '125.off'},first,3\ntree/x.off,,\n")
    rows = collect([str(manifest)])
    assert [(m.key, m.overrides) for m in rows] == [("first", {"parts": 3}), ("x", {})]
    assert rows[1].path == str(tmp_path / "tree" / "x.off")
    jsonl = tmp_path / "list.jsonl"
    jsonl.write_text(json.dumps({"path": str(meshes / "398.off"), "scale": 0.2, "options": {"seed": 1}}) + "\n")
    assert collect([str(jsonl)])[0].overrides == {"scale": 0.2, "options": {"seed": 1}}
    with pytest.raises(InputError, match="no such file"):
        collect([str(tmp_path / "missing.off")])
    with pytest.raises(InputError, match="no 'path'"):
        (tmp_path / "bad.csv").write_text("file\nx.off\n")
        collect([str(tmp_path / "bad.csv")])


def test_manifest_rows_override_the_parameters(meshes, expected, tmp_path):
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(
        json.dumps({"path": str(meshes / "125.off"), "parts": 2})
        + "\n"
        + json.dumps({"path": str(meshes / "398.off")})
        + "\n"
    )
    out = tmp_path / "out"
    assert main(["batch", str(manifest), "--out", str(out)]) == 0
    assert len(np.unique(np.load(out / "125.npy"))) == 2
    np.testing.assert_array_equal(np.load(out / "398.npy"), expected["398"])


# ---- worker processes -----------------------------------------------------------------------
def _spawned_workers() -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == os.getpid() and b"spawn_main" in cmdline:
                pids.append(int(entry))
    return pids


def test_worker_processes_match_sequential_and_survive_a_killed_worker(meshes, expected, tmp_path):
    bad = _bad_mesh(tmp_path)
    out = tmp_path / "out"
    tasks = _tasks([meshes / f"{m}.off" for m in SMALL] + [bad], out)
    killed = []

    def kill_the_other_worker(record):
        if killed or "worker" not in record:
            return
        busy = [p for p in _spawned_workers() if p != record["worker"]["pid"]]
        if busy:
            os.kill(busy[0], signal.SIGKILL)
            killed.append(busy[0])

    report = run_batch(tasks, SegmentWorkerFactory(), workers=2, on_result=kill_the_other_worker)
    assert killed, "no worker process to kill was found"
    assert report.mode == "processes:2"
    assert {r["key"]: r["status"] for r in report.results} == {**dict.fromkeys(SMALL, "ok"), "broken": "error"}
    _labels_equal(out, expected, SMALL)
    assert len(report.workers) > 2  # a fresh pool replaced the broken one
    assert all(w["loads"] == 1 for w in report.workers.values())  # the engine built once per process


# ---- a real local Ray cluster ---------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def _running_ray_tasks(name: bytes = b"ray::execute") -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            except OSError:
                continue
            if cmdline.startswith(name):
                pids.append(int(entry))
    return pids


def test_ray_labels_equal_sequential_and_errors_are_recorded(ray_cluster, meshes, expected, tmp_path):
    bad = _bad_mesh(tmp_path)
    out = tmp_path / "out"
    tasks = _tasks([meshes / f"{m}.off" for m in SMALL[:4]] + [bad], out)
    report = run_batch(tasks, SegmentWorkerFactory(), ray="local", records=RecordStore(str(out)))
    assert report.mode == "ray:local:tasks"
    statuses = {r["key"]: r["status"] for r in report.results}
    assert statuses == {**dict.fromkeys(SMALL[:4], "ok"), "broken": "error"}
    assert report.results[-1]["error"]["code"] and "broken" in report.results[-1]["error"]["message"]
    _labels_equal(out, expected, SMALL[:4])
    assert all(w["loads"] == 1 for w in report.workers.values())  # models loaded once per worker
    again = run_batch(tasks, SegmentWorkerFactory(), ray="local", records=RecordStore(str(out)))
    assert again.counts == {"ok": 0, "error": 1, "skipped": 4}  # resumable on Ray too


def test_ray_batch_completes_when_a_worker_process_is_killed(ray_cluster, meshes, expected, tmp_path):
    out = tmp_path / "out"
    tasks = _tasks([meshes / f"{m}.off" for m in SMALL], out)
    killed = []

    def kill_a_running_task(record):
        if not killed:
            running = _running_ray_tasks()
            if running:
                os.kill(running[0], signal.SIGKILL)
                killed.append(running[0])

    report = run_batch(tasks, SegmentWorkerFactory(), ray="local", on_result=kill_a_running_task)
    assert killed, "no running Ray task to kill was found"
    assert [r["status"] for r in report.results] == ["ok"] * len(SMALL)  # Ray retried the lost task
    _labels_equal(out, expected, SMALL)
    # the killed worker is gone (it may have finished earlier tasks, so it can be among the workers
    # that reported); every mesh still came back ok above, so Ray retried the task it was running
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)


def test_ray_actors_load_the_engine_once_each(ray_cluster, meshes, expected, tmp_path):
    out = tmp_path / "out"
    tasks = _tasks([meshes / f"{m}.off" for m in SMALL[:4]], out)
    report = run_batch(tasks, SegmentWorkerFactory(), ray="local", actors=True)
    assert report.mode == "ray:local:actors"
    assert report.counts["ok"] == 4 and len(report.workers) <= 2
    assert all(w["loads"] == 1 for w in report.workers.values())
    _labels_equal(out, expected, SMALL[:4])


def test_eval_princeton_on_ray_and_worker_processes_equals_sequential(ray_cluster, tmp_path):
    root = PRINCETON.parent
    figures = {}
    for name, flags in {"sequential": [], "workers": ["--workers", "2"], "ray": ["--ray"]}.items():
        out = tmp_path / f"{name}.json"
        assert (
            main(["eval", "princeton", str(root), "--models", "125", "398", "--quiet", "--json", str(out), *flags]) == 0
        )
        figures[name] = json.loads(out.read_text())
    assert figures["workers"]["batch"]["mode"] == "processes:2"
    assert figures["ray"]["batch"]["mode"] == "ray:local:tasks"
    for name in ("workers", "ray"):
        for which in ("auto", "oracle"):
            assert figures[name]["summary"]["overall"][which] == figures["sequential"]["summary"]["overall"][which]


def test_ctrl_c_stops_the_batch_and_keeps_what_finished(meshes, tmp_path):
    import subprocess
    import sys
    import time

    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "segparts", "batch", str(meshes), "--out", str(out), "--workers", "2"]
    # a terminal's Ctrl-C: SIGINT to the whole process group (with SIGINT not inherited as ignored)
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.monotonic() + 120
    while not list(out.glob("*.record.json")) and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    finished = json.loads((out / "summary.json").read_text())["counts"]["ok"]
    assert 1 <= finished < len(SMALL) and "interrupted" in err
    assert not [p for p in out.iterdir() if ".part" in p.name]  # no half-written output left
    assert main(["batch", str(meshes), "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["counts"]["skipped"] == finished


def test_a_worker_that_cannot_be_built_fails_its_tasks_not_the_batch(ray_cluster, tmp_path):
    """An engine missing its checkpoints on the workers: every task says why, the batch ends."""
    from segparts.batch.evaluation import EvalWorkerFactory
    from segparts.engines import create_engine
    from segparts.eval.princeton import evaluate_item, list_models

    if create_engine("sampart3d").availability().available:
        pytest.skip("sampart3d checkpoints are installed here")
    models = [m for m in list_models(PRINCETON.parent) if m.model_id in SMALL[:2]]
    tasks = [Task(m.model_id, m) for m in models]
    for mode in ({"ray": "local", "actors": True}, {}):
        report = run_batch(tasks, EvalWorkerFactory("sampart3d", "cpu", evaluate_item), **mode)
        assert [r["status"] for r in report.results] == ["error", "error"]
        assert all(
            r["error"]["code"] == "EngineUnavailable" and "missing" in r["error"]["message"] for r in report.results
        )


def test_an_input_taken_for_the_ray_address_is_a_clear_usage_error(meshes, tmp_path, capsys):
    assert main(["batch", "--ray", str(meshes), "--out", str(tmp_path / "out")]) == 2
    assert "put the INPUTs before a bare --ray" in capsys.readouterr().err
