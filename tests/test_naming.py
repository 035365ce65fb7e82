"""Naming parts with a vision-language endpoint: a real HTTP server on 127.0.0.1 (tests/fake_vlm.py)
that reads the highlighted part from the image it gets; failures, retries, the cache, the
backend op over real ZeroMQ and the CLI; and that nothing is sent when no endpoint is configured."""

from __future__ import annotations

import itertools
import json
import time

import numpy as np
import pytest

from backend_fixtures import thread_server
from fake_vlm import LAMP_NAMES, TRUNCATED, FakeVLM, completion, lamp_parts
from segparts import naming, wire
from segparts.cli import main as cli_main
from segparts.client import BackendError
from segparts.mesh import validate_mesh

TILE = 128  # small sheets keep the tests fast; the judge is scale-free


@pytest.fixture(autouse=True)
def no_user_endpoint(monkeypatch, tmp_path):
    """The tests never see the developer's own endpoint, key or cache."""
    for var in (naming.ENV_URL, naming.ENV_MODEL, naming.ENV_API_KEY):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv(naming.ENV_CACHE, str(tmp_path / "names.json"))


@pytest.fixture(scope="module")
def lamp():
    vertices, faces, labels = lamp_parts()
    return validate_mesh(vertices, faces), labels


def endpoint(vlm, **kw):
    kw.setdefault("backoff_s", 0.01)
    return naming.Endpoint(vlm.url, kw.pop("model", "fake-vision"), kw.pop("api_key", "sk-test"), **kw)


def names_of(results):
    return {r.part: r.name for r in results}


# ---- the happy path: the right image reaches the model --------------------------------------------
def test_each_part_named_from_its_own_image(lamp):
    mesh, labels = lamp
    with FakeVLM() as vlm:
        results = naming.name_parts(mesh, labels, endpoint(vlm), object_name="lamp", tile=TILE)
    assert names_of(results) == LAMP_NAMES  # duplicates numbered: two feet
    assert [r.base for r in results] == ["Foot", "Foot", "Body", "Cap"]
    assert all(r.error is None and not r.cached for r in results)
    assert len(vlm.requests) == 4
    for req in vlm.requests:
        assert req["path"] == "/v1/chat/completions"
        assert req["headers"]["Authorization"] == "Bearer sk-test"
        assert req["body"]["model"] == "fake-vision"
        text = req["body"]["messages"][-1]["content"][0]["text"]
        assert "lamp" in text and "singular" in text
        verdict = req["verdict"]
        assert all(p > 0 for p in verdict["highlight_pixels"][:-1]), verdict  # each view shows the part
        assert verdict["highlight_pixels"][-1] == 0 and verdict["whole_has_object"]  # then the whole object


def test_progress_reports_every_part(lamp):
    mesh, labels = lamp
    seen = []
    with FakeVLM() as vlm:
        naming.name_parts(mesh, labels, endpoint(vlm), tile=TILE, progress=lambda f, s: seen.append((f, s)))
    assert seen[-1] == (1.0, "named")
    assert [s for _, s in seen if s.startswith("naming part")] == [f"naming part {i}/4" for i in range(1, 5)]
    assert all(a <= b for (a, _), (b, _) in itertools.pairwise(seen))


def test_parallel_requests(lamp):
    mesh, labels = lamp
    seen = []
    slow = lambda n, body, verdict: (200, completion(json.dumps({"name": verdict["name"]})), 0.4)  # noqa: E731
    with FakeVLM(slow) as vlm:
        results = naming.name_parts(
            mesh, labels, endpoint(vlm), tile=TILE, parallel=4, progress=lambda f, s: seen.append(s)
        )
    assert names_of(results) == LAMP_NAMES
    assert vlm.most_in_flight >= 2  # at once, not one after another
    assert [s for s in seen if s.startswith("naming part")] == [f"naming part {i}/4" for i in range(1, 5)]


def test_save_dir_holds_exactly_what_was_sent(lamp, tmp_path):
    import base64

    mesh, labels = lamp
    with FakeVLM() as vlm:
        naming.name_parts(mesh, labels, endpoint(vlm), tile=TILE, save_dir=tmp_path / "sent")
    for part, req in enumerate(vlm.requests):
        url = req["body"]["messages"][-1]["content"][1]["image_url"]["url"]
        assert base64.b64decode(url.split(",", 1)[1]) == (tmp_path / "sent" / f"part_{part:03d}.png").read_bytes()


# ---- off by default ------------------------------------------------------------------------------
def test_nothing_is_sent_without_an_endpoint(lamp, tmp_path, capsys):
    mesh, labels = lamp
    assert naming.resolve_endpoint(env={}) is None
    with FakeVLM() as vlm:
        with pytest.raises(naming.NamingOff, match="nothing was sent"):
            naming.name_parts(mesh, labels, None)
        np.save(tmp_path / "labels.npy", labels)
        _write_obj(tmp_path / "lamp.obj", mesh)
        assert cli_main(["name", str(tmp_path / "lamp.obj"), "--labels", str(tmp_path / "labels.npy")]) == 2
        assert "naming is off" in capsys.readouterr().err
        # a model alone (no URL) is not a configuration either
        assert naming.resolve_endpoint(model="llava", env={}) is None
    assert vlm.requests == []


def test_endpoint_from_the_environment():
    env = {naming.ENV_URL: "http://localhost:11434/v1/", naming.ENV_MODEL: "qwen2.5vl", naming.ENV_API_KEY: "k"}
    ep = naming.resolve_endpoint(env=env)
    assert (ep.chat_url, ep.model, ep.api_key) == ("http://localhost:11434/v1/chat/completions", "qwen2.5vl", "k")
    assert ep.describe() == "qwen2.5vl at http://localhost:11434" and "k" not in ep.describe()
    # explicit values win over the environment; a full chat URL is kept as it is
    ep = naming.resolve_endpoint("https://api.example.com/v1/chat/completions", "m2", env=env)
    assert ep.chat_url == "https://api.example.com/v1/chat/completions" and ep.model == "m2"
    with pytest.raises(ValueError, match="no model"):
        naming.resolve_endpoint("http://localhost:1/v1", env={})
    with pytest.raises(ValueError, match="http"):
        naming.resolve_endpoint("localhost:11434", "m", env={})


# ---- failures ------------------------------------------------------------------------------------
def test_transient_errors_are_retried_with_backoff(lamp):
    mesh, labels = lamp
    stamps = []

    def flaky(n, body, verdict):
        stamps.append(time.monotonic())
        if n < 2:
            return 503, {"error": {"message": "model loading"}}, 0
        return 200, completion(json.dumps({"name": verdict["name"]})), 0

    with FakeVLM(flaky) as vlm:
        results = naming.name_parts(mesh, labels, endpoint(vlm, backoff_s=0.2), tile=TILE)
    assert names_of(results) == LAMP_NAMES
    assert len(vlm.requests) == 6  # part 0 needed three tries
    assert stamps[1] - stamps[0] >= 0.19 and stamps[2] - stamps[1] >= 0.39  # 0.2 s, then 0.4 s


def test_client_errors_fail_at_once_and_say_why(lamp):
    mesh, labels = lamp

    def refuse(n, body, verdict):
        return 401, {"error": {"message": "invalid api key"}}, 0

    with FakeVLM(refuse) as vlm:
        results = naming.name_parts(mesh, labels, endpoint(vlm), tile=TILE)
    assert len(vlm.requests) == 4  # one per part: no retries of a 401
    for r in results:
        assert r.name is None and "HTTP 401" in r.error and "invalid api key" in r.error


def test_timeouts_are_retried_then_reported(lamp):
    mesh, labels = lamp
    part = np.where(labels == 3, 0, -1)  # one part only: this test waits for timeouts

    with FakeVLM(lambda n, body, verdict: (200, completion('{"name": "cap"}'), 1.5)) as vlm:
        results = naming.name_parts(mesh, part, endpoint(vlm, timeout_s=0.3, retries=1), tile=TILE)
        done = time.monotonic()
    assert len(vlm.requests) == 2
    assert results[0].name is None and "within 0.3 s" in results[0].error and "2 tries" in results[0].error
    # from the first request on (the renders before it take what the machine gives them), both tries
    # gave up after their 0.3 s timeout, not after the 1.5 s answer
    assert done - vlm.requests[0]["arrived"] < 1.5


@pytest.mark.parametrize(
    "payload",
    [
        b"<html>bad gateway</html>",  # not JSON
        {"object": "chat.completion"},  # no choices
        completion(""),  # no text
        completion("I think this might be some kind of decorative element on the object"),  # not a name
        completion('{"name": "42"}'),  # no letters
        completion('{"name": 5}'),  # not a string
        completion('{"part": "leg"}'),  # no name
        {"choices": [{"message": {"content": {"name": "leg"}}}]},  # content is not text
    ],
)
def test_malformed_answers_keep_the_old_name(lamp, payload):
    mesh, labels = lamp
    part = np.where(labels == 2, 0, -1)
    with FakeVLM(lambda n, body, verdict: (200, payload, 0)) as vlm:
        results = naming.name_parts(mesh, part, endpoint(vlm, retries=1), tile=TILE)
    assert len(vlm.requests) == 2  # an unusable answer is asked again once
    assert results[0].name is None and results[0].error


@pytest.mark.parametrize("status, delay, why", [(0, 0, "connection"), (200, TRUNCATED, "incomplete")])
def test_broken_connections_are_retried_then_reported(lamp, status, delay, why):
    mesh, labels = lamp
    part = np.where(labels == 2, 0, -1)
    with FakeVLM(lambda n, body, verdict: (status, completion('{"name": "body"}'), delay)) as vlm:
        results = naming.name_parts(mesh, part, endpoint(vlm, retries=1), tile=TILE)
    assert len(vlm.requests) == 2
    assert results[0].name is None and why in results[0].error.lower(), results[0].error


def test_one_failing_part_keeps_its_name_and_the_others_are_named(lamp):
    mesh, labels = lamp

    def no_caps(n, body, verdict):
        if verdict["name"] == "cap":
            return 500, "internal error", 0
        return 200, completion(json.dumps({"name": verdict["name"]})), 0

    with FakeVLM(no_caps) as vlm:
        results = naming.name_parts(mesh, labels, endpoint(vlm, retries=1), tile=TILE)
    by_part = {r.part: r for r in results}
    assert names_of(results) == {0: "Foot 1", 1: "Foot 2", 2: "Body", 3: None}
    assert "HTTP 500" in by_part[3].error
    assert len(vlm.requests) == 5


def test_unreachable_endpoint_is_reported(lamp):
    import socket

    mesh, labels = lamp
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ep = naming.Endpoint(f"http://127.0.0.1:{port}/v1", "m", retries=1, backoff_s=0.01)
    results = naming.name_parts(validate_mesh(*lamp_parts()[:2]), np.where(labels == 2, 0, -1), ep, tile=TILE)
    assert results[0].name is None and "cannot reach" in results[0].error


# ---- answers and names -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "answer, name",
    [
        ('{"name": "seat"}', "Seat"),
        ('```json\n{"name": "chair leg"}\n```', "Chair leg"),
        ("Backrest.", "Backrest"),
        ('"handle"', "Handle"),
        ("The highlighted part is a wheel.", "Wheel"),
        ("armrest\nIt supports the arm.", "Armrest"),
    ],
)
def test_clean_name(answer, name):
    assert naming.clean_name(answer) == name


def test_duplicates_are_numbered_in_part_order():
    got = naming.number_duplicates({0: "Leg", 3: "Seat", 1: "leg", 7: "Leg", 2: None})
    assert got == {0: "Leg 1", 1: "leg 2", 7: "Leg 3", 3: "Seat", 2: None}


# ---- the cache -----------------------------------------------------------------------------------
def test_cache_answers_again_without_a_request(lamp, tmp_path):
    mesh, labels = lamp
    path = tmp_path / "cache.json"
    with FakeVLM() as vlm:
        first = naming.name_parts(mesh, labels, endpoint(vlm), "lamp", naming.NameCache(path), tile=TILE)
        again = naming.name_parts(mesh, labels, endpoint(vlm), "lamp", naming.NameCache(path), tile=TILE)
        assert len(vlm.requests) == 4  # the second run (a new cache object: read from the file) sent nothing
        assert names_of(again) == names_of(first) == LAMP_NAMES and all(r.cached for r in again)
        naming.name_parts(mesh, labels, endpoint(vlm, model="other"), "lamp", naming.NameCache(path), tile=TILE)
        assert len(vlm.requests) == 8  # another model is asked
        merged = np.where(labels == 1, 0, labels)  # other labels: asked again
        naming.name_parts(mesh, merged, endpoint(vlm), "lamp", naming.NameCache(path), tile=TILE)
        assert len(vlm.requests) == 11


def test_failures_are_not_cached(lamp, tmp_path):
    mesh, labels = lamp
    part = np.where(labels == 3, 0, -1)
    cache = naming.NameCache(tmp_path / "c.json")
    with FakeVLM(
        lambda n, body, verdict: (503, "busy", 0) if n == 0 else (200, completion('{"name": "cap"}'), 0)
    ) as vlm:
        failed = naming.name_parts(mesh, part, endpoint(vlm, retries=0), cache=cache, tile=TILE)
        named = naming.name_parts(mesh, part, endpoint(vlm, retries=0), cache=cache, tile=TILE)
    assert failed[0].name is None and named[0].name == "Cap" and not named[0].cached


# ---- the backend op (real ZeroMQ) ------------------------------------------------------------------
def test_name_parts_op_runs_as_a_job(tmp_path, lamp):
    mesh, labels = lamp
    with FakeVLM() as vlm, thread_server(tmp_path) as (server, client):
        assert "name_parts" in client.hello()["ops"]
        mid = client.upload_mesh(mesh.vertices, mesh.faces)
        stages = []
        msg = client.call(
            "name_parts",
            {
                "mesh_id": mid,
                "object_name": "lamp",
                "views": 3,
                "endpoint": {"url": vlm.url, "model": "fake-vision", "api_key": "sk-op"},
            },
            {"labels": labels},
            on_progress=lambda p, s: stages.append(s),
            job_timeout=120,
        )
        assert msg.kind == "result"
        assert {p["part"]: p["name"] for p in msg.result["parts"]} == LAMP_NAMES
        assert msg.result["model"] == "fake-vision" and msg.result["endpoint"].startswith(
            "fake-vision at http://127.0.0.1"
        )
        assert "naming part 4/4" in stages
        assert vlm.requests[0]["headers"]["Authorization"] == "Bearer sk-op"
        # asked again: answered from the backend's cache, no request
        again = client.call(
            "name_parts",
            {"mesh_id": mid, "endpoint": {"url": vlm.url, "model": "fake-vision"}, "object_name": "lamp"},
            {"labels": labels},
            job_timeout=120,
        )
        assert all(p["cached"] for p in again.result["parts"]) and len(vlm.requests) == 4
        assert client.status()["recent_jobs"][-1]["op"] == "name_parts"


def test_name_parts_op_refuses_without_endpoint_and_bad_input(tmp_path, lamp):
    mesh, labels = lamp
    with FakeVLM() as vlm, thread_server(tmp_path) as (server, client):
        mid = client.upload_mesh(mesh.vertices, mesh.faces)
        with pytest.raises(BackendError, match="naming is off") as exc:
            client.call("name_parts", {"mesh_id": mid}, {"labels": labels})
        assert exc.value.code == wire.BAD_ARGS
        good = {"url": vlm.url, "model": "m"}
        for args, arrays, match in [
            ({"mesh_id": mid, "endpoint": good}, {"labels": labels[:-1]}, "one label per triangle"),
            ({"mesh_id": mid, "endpoint": good}, {}, "labels"),
            ({"mesh_id": mid, "endpoint": {"url": vlm.url}}, {"labels": labels}, "no model"),
            ({"mesh_id": mid, "endpoint": {"url": "ftp://x", "model": "m"}}, {"labels": labels}, "http"),
            ({"mesh_id": mid, "endpoint": good, "views": 0}, {"labels": labels}, "views"),
            ({"mesh_id": mid, "endpoint": "http://x"}, {"labels": labels}, "map"),
        ]:
            with pytest.raises(BackendError, match=match):
                client.call("name_parts", args, arrays)
        assert client.hello()["name"] == "segparts"  # still serving
    assert vlm.requests == []


def test_name_parts_op_can_be_cancelled(tmp_path, lamp):
    mesh, labels = lamp
    with (
        FakeVLM(lambda n, body, verdict: (200, completion('{"name": "x"}'), 10.0)) as vlm,
        thread_server(tmp_path) as (server, client),
    ):
        mid = client.upload_mesh(mesh.vertices, mesh.faces)
        req = client.send(
            "name_parts", {"mesh_id": mid, "endpoint": {"url": vlm.url, "model": "m"}}, {"labels": labels}
        )
        job_id = None
        deadline = time.monotonic() + 30
        while job_id is None and time.monotonic() < deadline:
            for msg in client.poll(0.2):
                if msg.id == req and msg.kind == "accepted":
                    job_id = msg.result["job_id"]
        while not vlm.requests and time.monotonic() < deadline:
            time.sleep(0.05)
        cancelled_at = time.monotonic()
        assert client.cancel(job_id)["state"] == "cancelling"
        final = None
        while final is None and time.monotonic() < deadline:
            final = next((m for m in client.poll(0.2) if m.id == req and m.final), None)
        assert final is not None and not final.ok and final.error["code"] == wire.CANCELLED
        assert time.monotonic() - cancelled_at < 8.0  # not after the slow answer (10 s)
        assert len(vlm.requests) == 1


# ---- the command line -----------------------------------------------------------------------------
def _write_obj(path, mesh):
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in mesh.vertices]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in mesh.faces]
    path.write_text("\n".join(lines) + "\n")


def test_cli_names_parts(tmp_path, lamp, capsys):
    mesh, labels = lamp
    _write_obj(tmp_path / "lamp.obj", mesh)
    np.save(tmp_path / "labels.npy", labels)
    with FakeVLM() as vlm:
        code = cli_main(
            [
                "name",
                str(tmp_path / "lamp.obj"),
                "--labels",
                str(tmp_path / "labels.npy"),
                "--url",
                vlm.url,
                "--model",
                "fake-vision",
                "--json",
                str(tmp_path / "names.json"),
                "--save-images",
                str(tmp_path / "sent"),
            ]
        )
    assert code == 0
    out = capsys.readouterr()
    assert "Foot 1" in out.out and "Cap" in out.out and "fake-vision at http://127.0.0.1" in out.err
    saved = json.loads((tmp_path / "names.json").read_text())
    assert {p["part"]: p["name"] for p in saved["parts"]} == LAMP_NAMES and saved["object_name"] == "lamp"
    assert "lamp" in vlm.requests[0]["body"]["messages"][-1]["content"][0]["text"]  # the file's stem
    assert sorted(p.name for p in (tmp_path / "sent").iterdir()) == [f"part_{i:03d}.png" for i in range(4)]


def test_cli_dry_run_sends_nothing(tmp_path, lamp, capsys):
    mesh, labels = lamp
    _write_obj(tmp_path / "lamp.obj", mesh)
    np.save(tmp_path / "labels.npy", labels)
    with FakeVLM() as vlm:
        assert (
            cli_main(
                [
                    "name",
                    str(tmp_path / "lamp.obj"),
                    "--labels",
                    str(tmp_path / "labels.npy"),
                    "--url",
                    vlm.url,
                    "--model",
                    "m",
                    "--dry-run",
                    "--save-images",
                    str(tmp_path / "d"),
                ]
            )
            == 0
        )
    assert vlm.requests == [] and len(list((tmp_path / "d").glob("part_*.png"))) == 4


# ---- the add-on's side, without Blender -------------------------------------------------------------
def _addon():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from addon import jobs, naming as addon_naming, session

    return jobs, addon_naming, session


def test_addon_endpoint_settings_and_hints():
    _, an, _ = _addon()
    assert an.endpoint_settings("", "", "", env={}) is None  # off: the add-on sends nothing
    s = an.endpoint_settings(" http://localhost:11434/v1 ", "qwen2.5vl:7b", "", env={an.ENV_API_KEY: "from-env"})
    assert (s.url, s.model, s.api_key, s.source) == (
        "http://localhost:11434/v1",
        "qwen2.5vl:7b",
        "from-env",
        "preferences",
    )
    assert s.describe() == "qwen2.5vl:7b at http://localhost:11434" and s.problem() is None
    assert s.wire_args() == {"url": "http://localhost:11434/v1", "model": "qwen2.5vl:7b", "api_key": "from-env"}
    env = {an.ENV_URL: "https://api.example.com/v1", an.ENV_MODEL: "gpt-x"}
    s = an.endpoint_settings("", "", "", env=env)
    assert (
        s.source == "environment"
        and s.describe() == "gpt-x at https://api.example.com"
        and "api_key" not in s.wire_args()
    )
    assert "model" in an.endpoint_settings("http://h:1/v1", "", "", env={}).problem()
    assert "http" in an.endpoint_settings("localhost:1", "m", "", env={}).problem()
    assert [an.object_hint(n) for n in ("Chair.001", "office_chair", "TableLamp", "Cube", "Cube.003", "")] == [
        "chair",
        "office chair",
        "table lamp",
        None,
        None,
        None,
    ]


def test_addon_outcome_keeps_failed_and_vanished_parts():
    _, an, _ = _addon()
    result = {
        "parts": [
            {"part": 0, "name": "Leg 1"},
            {"part": 1, "name": None, "error": "HTTP 500"},
            {"part": 2, "name": "Seat"},
            {"part": 9, "name": "Gone"},
        ]
    }
    got = an.outcome(result, [0, 1, 2])
    assert got.names == {0: "Leg 1", 2: "Seat"} and got.failures == {1: "HTTP 500"}
    assert (
        got.message("Chair", "m at http://h")
        == "Chair: 2 parts named by m at http://h; 1 kept their names (part 1: HTTP 500)"
    )


def test_addon_name_job_through_a_session(tmp_path, lamp):
    """The add-on's job (upload when needed, then name_parts) against a real backend over ZeroMQ."""
    jobs, an, session = _addon()
    mesh, labels = lamp
    with FakeVLM() as vlm, thread_server(tmp_path) as (server, _client):
        from segparts.client import BackendClient

        cfg = session.Config(port=server.port, auto_start=False, state_dir=str(tmp_path))
        s = session.Session(cfg, lambda host, port, _tf: BackendClient(host, port, token_file=tmp_path / "token"))
        s.start()
        deadline = time.monotonic() + 20
        while s.state == "starting" and time.monotonic() < deadline:
            s.tick()
            time.sleep(0.01)
        assert s.ready, s.message
        tri_poly = np.arange(len(labels))
        arrays = jobs.MeshArrays(mesh.vertices, mesh.faces.astype(np.int32), tri_poly, len(labels))
        done, errors = [], []
        job = an.NameJob(
            s,
            arrays,
            mesh.content_hash,
            labels,
            an.endpoint_settings(vlm.url, "fake-vision", "", env={}),
            "lamp",
            lambda j, m: done.append(m),
            lambda j, e: errors.append(e),
        )
        job.start()
        deadline = time.monotonic() + 120
        while not (done or errors) and time.monotonic() < deadline:
            s.tick()
            time.sleep(0.02)
        s.stop()
    assert not errors, errors
    assert an.outcome(done[0].result, range(4)).names == LAMP_NAMES
    assert "lamp" in vlm.requests[0]["body"]["messages"][-1]["content"][0]["text"]


def test_cli_y_up_files_are_shown_upright(tmp_path, lamp):
    mesh, labels = lamp
    v = mesh.vertices
    _write_obj(tmp_path / "lamp.obj", validate_mesh(np.stack([v[:, 0], v[:, 2], -v[:, 1]], axis=1), mesh.faces))
    np.save(tmp_path / "labels.npy", labels)
    with FakeVLM() as vlm:
        args = [
            "name",
            str(tmp_path / "lamp.obj"),
            "--labels",
            str(tmp_path / "labels.npy"),
            "--url",
            vlm.url,
            "--model",
            "m",
            "--no-cache",
            "--json",
            str(tmp_path / "n.json"),
        ]
        assert cli_main(args + ["--up-axis", "y"]) == 0
        upright = json.loads((tmp_path / "n.json").read_text())["parts"]
        assert cli_main(args) == 0
        lying = json.loads((tmp_path / "n.json").read_text())["parts"]
    assert {p["part"]: p["name"] for p in upright} == LAMP_NAMES
    assert {p["part"]: p["name"] for p in lying} != LAMP_NAMES  # on its side the judge cannot tell feet from cap


def test_rendering_for_names_never_imports_torch(tmp_path):
    """The naming job runs inside the backend: checking for nvdiffrast would import torch there."""
    import subprocess
    import sys

    code = (
        "import sys, numpy as np\n"
        "sys.path.insert(0, 'tests')\n"
        "from fake_vlm import lamp_parts\n"
        "from segparts import naming\n"
        "from segparts.mesh import validate_mesh\n"
        "v, f, labels = lamp_parts()\n"
        "sheets = naming.render_part_sheets(validate_mesh(v, f), labels, tile=64)\n"
        "assert all(s.png for s in sheets)\n"
        "print(sorted(m for m in ('torch', 'sam2', 'spconv') if m in sys.modules))\n"
    )
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
        env={**__import__("os").environ, "PYTHONPATH": str(root / "backend")},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
