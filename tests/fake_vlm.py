"""A real HTTP server on 127.0.0.1 speaking the OpenAI chat-completions protocol, for the naming
tests. It answers from the image it receives: it finds the orange (highlighted) pixels in each
view tile and names the part by where they sit relative to the rest of the object, so a right
name proves the right image reached it. Every request is recorded."""

from __future__ import annotations

import base64
import io
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import trimesh


def lamp_parts():
    """Two feet at the bottom, a body in the middle, a cap on top: (vertices, faces, labels)."""
    boxes = [
        ((-0.35, 0, 0.15), (0.2, 0.2, 0.3)),
        ((0.35, 0, 0.15), (0.2, 0.2, 0.3)),
        ((0, 0, 0.7), (1.0, 0.6, 0.7)),
        ((0, 0, 1.25), (0.5, 0.5, 0.3)),
    ]
    vertices, faces, labels, offset = [], [], [], 0
    for part, (centre, extents) in enumerate(boxes):
        box = trimesh.creation.box(extents=extents)
        box.apply_translation(centre)
        vertices.append(box.vertices)
        faces.append(box.faces + offset)
        labels += [part] * len(box.faces)
        offset += len(box.vertices)
    return np.concatenate(vertices), np.concatenate(faces), np.asarray(labels, dtype=np.int32)


LAMP_NAMES = {0: "Foot 1", 1: "Foot 2", 2: "Body", 3: "Cap"}  # what the judge below answers


def decode_request(body: dict):
    """(prompt text, RGB image) of a chat-completions request with one image."""
    content = body["messages"][-1]["content"]
    text = " ".join(p["text"] for p in content if p.get("type") == "text")
    url = next(p["image_url"]["url"] for p in content if p.get("type") == "image_url")
    assert url.startswith("data:image/png;base64,"), url[:40]
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB")).astype(int)
    return text, image


def tiles(image: np.ndarray, n_tiles: int, gap: int = 4) -> list[np.ndarray]:
    cols = int(np.ceil(np.sqrt(n_tiles)))
    t = (image.shape[1] - (cols - 1) * gap) // cols
    return [
        image[
            (i // cols) * (t + gap) : (i // cols) * (t + gap) + t, (i % cols) * (t + gap) : (i % cols) * (t + gap) + t
        ]
        for i in range(n_tiles)
    ]


def judge(text: str, image: np.ndarray) -> dict:
    """Where the highlight sits in the views: above the rest (cap), below (foot) or amid (body)."""
    n_views = int(re.search(r"first (\d+) tile", text).group(1))
    views = tiles(image, n_views + 1)
    offsets, pixels = [], []
    for tile in views:
        r, g, b = tile[..., 0], tile[..., 1], tile[..., 2]
        highlight = (r - b > 80) & (r > g + 40)
        grey = (np.abs(r - b) < 8) & (r < 250)
        pixels.append(int(highlight.sum()))
        if highlight.any():
            ys = np.nonzero(highlight)[0]
            offsets.append((ys.mean() - np.nonzero(highlight | grey)[0].mean()) / tile.shape[0])
    offset = float(np.mean(offsets)) if offsets else 0.0
    name = "cap" if offset < -0.08 else "foot" if offset > 0.08 else "body"
    return {
        "name": name,
        "offset": offset,
        "highlight_pixels": pixels,
        "whole_has_object": bool(((views[-1] < 250).any(axis=-1)).any()),
    }


def completion(content) -> dict:
    return {
        "id": "x",
        "object": "chat.completion",
        "model": "fake",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
    }


TRUNCATED = -1  # a `delay` that means: cut the answer short


class FakeVLM:
    """`respond(n, body, verdict)` -> (status, payload bytes | dict | str, delay_s); default: the judge.
    Status 0 hangs up without answering; delay TRUNCATED sends a cut-off body.
    `n` counts requests from 0. Use as a context manager; `url` is the base URL (.../v1)."""

    def __init__(self, respond=None):
        self.requests: list[dict] = []  # {path, headers, body, verdict, arrived (monotonic s)}
        self.in_flight = self.most_in_flight = 0
        self.respond = respond or (lambda n, body, verdict: (200, completion(json.dumps({"name": verdict["name"]})), 0))
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = json.loads(raw)
                verdict = judge(*decode_request(body))
                with fake._lock:
                    n = len(fake.requests)
                    fake.requests.append(
                        {
                            "path": self.path,
                            "headers": dict(self.headers),
                            "body": body,
                            "verdict": verdict,
                            "arrived": time.monotonic(),
                        }
                    )
                    fake.in_flight += 1
                    fake.most_in_flight = max(fake.most_in_flight, fake.in_flight)
                status, payload, delay = fake.respond(n, body, verdict)
                if delay and delay != TRUNCATED:
                    time.sleep(delay)
                with fake._lock:
                    fake.in_flight -= 1
                data = (
                    payload
                    if isinstance(payload, bytes)
                    else (payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
                )
                if status == 0:  # hang up without an answer
                    self.close_connection = True
                    return
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    # TRUNCATED: promise more bytes than are sent, then hang up
                    self.send_header("Content-Length", str(len(data) + (1000 if delay == TRUNCATED else 0)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout test)
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=5)
