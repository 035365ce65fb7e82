"""`segparts models`: download with resume and sha256 check, against a real HTTP server on loopback."""

from __future__ import annotations

import hashlib
import http.server
import json
import threading

import numpy as np
import pytest

from segparts import models
from segparts.cli import main

PAYLOAD = np.random.default_rng(3).integers(0, 256, size=3 * 1024 * 1024 + 123, dtype=np.uint8).tobytes()


class RangeServer(http.server.ThreadingHTTPServer):
    """Serves PAYLOAD at /weights.pt with Range support; can drop the connection mid-body."""

    def __init__(self):
        super().__init__(("127.0.0.1", 0), RangeHandler)
        self.cut_next = 0  # number of upcoming responses to cut after half their body
        self.ranges: list[str | None] = []


class RangeHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path != "/weights.pt":
            self.send_error(404)
            return
        header = self.headers.get("Range")
        self.server.ranges.append(header)
        start = int(header.split("=")[1].split("-")[0]) if header else 0
        body = PAYLOAD[start:]
        self.send_response(206 if header else 200)
        if header:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.server.cut_next:
            self.server.cut_next -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture
def http_server():
    server = RangeServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def manifest(tmp_path, monkeypatch, http_server):
    payload_sha256, payload_size = hashlib.sha256(PAYLOAD).hexdigest(), len(PAYLOAD)

    def write(sha256=payload_sha256, size=payload_size):
        data = {
            "version": 1,
            "models": [
                {
                    "name": "test-weights",
                    "file": "weights.pt",
                    "url": f"http://127.0.0.1:{http_server.server_port}/weights.pt",
                    "size": size,
                    "sha256": sha256,
                    "engines": ["geometric"],
                },
                {
                    "name": "never-fetched",
                    "file": "absent.pt",
                    "url": "http://127.0.0.1:9/absent.pt",
                    "size": None,
                    "sha256": None,
                    "engines": [],
                },
            ],
        }
        path = tmp_path / "manifest.json"
        path.write_text(json.dumps(data))
        return models.load_manifest(path)["test-weights"]

    monkeypatch.setenv("SEGPARTS_MANIFEST", str(tmp_path / "manifest.json"))
    monkeypatch.setenv("SEGPARTS_MODELS", str(tmp_path / "weights"))
    return write


def test_fetch_resumes_after_an_interrupted_download(manifest, http_server, tmp_path):
    spec = manifest()
    http_server.cut_next = 1
    with pytest.raises(models.ModelError, match="resume"):
        models.fetch(spec, retries=0)
    part = tmp_path / "weights" / "weights.pt.part"
    have = part.stat().st_size
    assert 0 < have < len(PAYLOAD) and not spec.path.exists()
    assert main(["models", "fetch", "test-weights"]) == 0  # the CLI resumes from the part file
    assert http_server.ranges == [None, f"bytes={have}-"]
    assert spec.path.read_bytes() == PAYLOAD and not part.exists()
    assert models.verify(spec) == "ok"


def test_fetch_resumes_by_itself_within_its_retries(manifest, http_server):
    spec = manifest()
    http_server.cut_next = 2
    path = models.fetch(spec, retries=3)
    assert path.read_bytes() == PAYLOAD
    assert http_server.ranges[0] is None and all(r.startswith("bytes=") for r in http_server.ranges[1:])
    assert len(http_server.ranges) == 3
    # already present and verified: no new request
    models.fetch(spec)
    assert len(http_server.ranges) == 3


def test_checksum_mismatch_is_rejected(manifest, http_server, tmp_path, capsys):
    spec = manifest(sha256="0" * 64)
    with pytest.raises(models.ModelError, match="rejected"):
        models.fetch(spec)
    assert not spec.path.exists()
    assert (tmp_path / "weights" / "weights.pt.rejected").read_bytes() == PAYLOAD
    assert main(["models", "fetch", "test-weights"]) == 2
    assert "rejected" in capsys.readouterr().err


def test_verify_reports_ok_missing_unverified_and_mismatch(manifest, http_server, capsys):
    spec = manifest()
    assert models.verify(spec) == "missing"
    assert models.missing(["test-weights"]) == [f"checkpoint test-weights ({spec.path})"]
    availability = models.availability(["test-weights"])
    assert not availability.available and availability.fix == "segparts models fetch test-weights"
    models.fetch(spec)
    assert models.verify(spec) == "ok" and models.missing(["test-weights"]) == []
    assert models.availability(["test-weights"]).available
    unverified = manifest(sha256=None)
    assert models.verify(unverified) == "unverified"
    spec = manifest()
    spec.path.write_bytes(PAYLOAD[:-1] + b"x")  # same size, different content
    assert models.verify(spec) == "mismatch"
    assert main(["models", "verify", "test-weights"]) == 2
    assert main(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "test-weights" in out and "never-fetched" in out


def test_repository_manifest_is_complete():
    """The shipped manifest names the four checkpoints the engines need, with https URLs."""
    entries = models.load_manifest(models.REPO_ROOT / "models" / "manifest.json")
    assert {"sam2.1-hiera-base-plus", "sam2.1-hiera-large", "ptv3-object", "geosam2"} <= set(entries)
    for spec in entries.values():
        assert spec.url.startswith("https://") and spec.file
        assert spec.sha256 is None or len(spec.sha256) == 64
        assert spec.size or spec.size_approx
