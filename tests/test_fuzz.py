"""Structured fuzzing of the server (segparts.bench.fuzzing): a valid request of every op with one
field made wrong, for every field, plus raw garbage. Each request must get exactly one final
answer, with its id, with an error code that fits the field (never `internal`); afterwards the
server must still give the same labels for a known mesh and its memory must not have grown.

Bounded by default (a few examples per field); SEGPARTS_FUZZ_EXAMPLES=N runs N per field.
"""

from __future__ import annotations

import os

import numpy as np
import psutil
import zmq
from hypothesis import HealthCheck, given, settings

from backend_fixtures import thread_server, two_boxes
from segparts.bench import fuzzing
from segparts.engines import create_engine
from segparts.engines.base import CancelToken, SegmentParams, no_progress
from segparts.mesh import validate_mesh

EXAMPLES_PER_FIELD = int(os.environ.get("SEGPARTS_FUZZ_EXAMPLES", "4"))
GARBAGE_EXAMPLES = int(os.environ.get("SEGPARTS_FUZZ_GARBAGE", "150"))
RSS_GROWTH_LIMIT = 150 * 2**20


def run_settings(n: int):
    return settings(
        max_examples=n, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck)
    )


def test_every_field_of_every_op_made_wrong_and_raw_garbage(tmp_path, monkeypatch):
    for name in ("SEGPARTS_VLM_URL", "SEGPARTS_VLM_MODEL", "SEGPARTS_VLM_API_KEY"):
        monkeypatch.delenv(name, raising=False)  # name_parts must stay refused: nothing goes out
    wrong, frame_changes, garbage = fuzzing.strategies()
    vertices, faces = two_boxes()
    expected = (
        create_engine("geometric")
        .segment(validate_mesh(vertices, faces), SegmentParams(parts=2), no_progress, CancelToken())
        .labels
    )
    with thread_server(tmp_path) as (server, client):
        mid = client.upload_mesh(vertices, faces)
        first = client.segment(mid, parts=2)
        target = fuzzing.Target(
            server.token, mid, first.result["segmentation_id"], first.result["job_id"], vertices, faces
        )
        sock = zmq.Context.instance().socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.connect(f"tcp://127.0.0.1:{server.port}")
        tally = fuzzing.Tally()
        process = psutil.Process()
        fields = fuzzing.all_fields(target)
        counter = iter(range(10**9))
        for op, path in fields:
            values = frame_changes if path[0] == "frame" else wrong

            @run_settings(EXAMPLES_PER_FIELD)
            @given(values)
            def one_field(value):
                fuzzing.fuzz_one(sock, target, tally, op, path, value, next(counter))  # noqa: B023 (called in this iteration)

            one_field()
        rss_after_fields = process.memory_info().rss

        @run_settings(GARBAGE_EXAMPLES)
        @given(garbage)
        def raw_garbage(frames):
            fuzzing.garbage_one(sock, tally, frames)

        raw_garbage()
        sock.close(0)
        assert not tally.violations, "\n".join(map(str, tally.violations[:20]))
        # every op and every field was reached with a token the server accepts
        reached = {cls for cls in tally.answers if cls != "garbage"}
        assert reached == {fuzzing.label(op, path) for op, path in fields}
        kinds = tally.by_kind()
        assert set(kinds) == set(fuzzing.OPS) | {"garbage"}
        for op in ("segment", "pick", "cancel", "upload_mesh"):  # the ops' own checks were reached
            assert set(kinds[op]) - {"unauthorized", "bad_message", "bad_version", "unknown_op"}, (op, kinds[op])
        assert tally.answers["garbage"].total() == GARBAGE_EXAMPLES
        # still serving, correctly, and memory did not grow with the garbage
        assert server_alive(client)
        again = client.segment(client.upload_mesh(vertices, faces), parts=2, options={"seed": 0})
        np.testing.assert_array_equal(again.arrays["labels"], expected)
        assert process.memory_info().rss - rss_after_fields < RSS_GROWTH_LIMIT


def server_alive(client) -> bool:
    return client.hello()["name"] == "segparts" and client.status()["jobs"] == []
