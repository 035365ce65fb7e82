"""The granularity slider of an engine whose every scale is its own result (SAMPart3D re-clusters
its trained field): a new slider position asks the backend, through the add-on's real session, a
real `segparts serve` (oracle masks instead of SAM, see oracle_backend.py) and real ZeroMQ."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

from blender_env import bpy, sub
from blender_meshes import CUBE_Q, CUBE_V, part_labels
from conftest import ROOT, configure

ORACLE = Path(__file__).with_name("oracle_backend.py")


@pytest.fixture()
def oracle_backend(runtime, tmp_path, python):
    """The add-on's own backend, started through a Python whose SAMPart3D sees oracle masks."""
    wrapper = tmp_path / "python"
    wrapper.write_text(
        f'#!/bin/sh\nshift 2  # "-m segparts": oracle_backend.py is the backend\n'
        f'PYTHONPATH="{ROOT / "backend"}" exec "{sys.executable}" "{ORACLE}" "$@"\n'
    )
    wrapper.chmod(0o755)
    configure(wrapper)  # the preference's update restarts the backend with it
    s = runtime.ensure_started()
    runtime.run_until_idle(timeout=60)
    assert s.ready, s.message
    yield s
    runtime.stop_backend()
    configure(python)
    bpy.context.scene.segparts_engine = "geometric"  # the next tests segment with the default engine


def four_blocks(name="Blocks"):
    """Four boxes of different sizes in a row with small gaps, one material each: parts 0..3,
    coarse groups {0, 1} and {2, 3} (tests/test_sampart3d.py's object)."""
    sizes = [(0.24, 0.2, 0.2), (0.2, 0.16, 0.24), (0.26, 0.22, 0.18), (0.22, 0.18, 0.22)]
    verts, faces, x0 = [], [], -0.52
    for size in sizes:
        centre = np.array([x0 + size[0] / 2, 0, size[2] / 2])
        faces += (CUBE_Q + len(verts)).tolist()
        verts += (CUBE_V * np.asarray(size) / 2 + centre).tolist()
        x0 += size[0] + 0.04
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], faces)
    for i in range(4):
        mesh.materials.append(bpy.data.materials.new(f"{name}.{i}"))
    mesh.polygons.foreach_set("material_index", np.repeat(np.arange(4), 6).astype(np.int32))
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    return obj


def _ask(session, runtime, op, args):
    answers = []
    session.request(op, args, on_message=lambda msg, err: answers.append((msg, err)), timeout=600)
    deadline = time.monotonic() + 600
    while not answers or (answers[-1][0] is not None and not answers[-1][0].final):
        assert time.monotonic() < deadline, f"no answer to {op}"
        runtime.drain()
        time.sleep(0.02)
    msg, err = answers[-1]
    assert msg is not None and msg.ok, err
    return msg


def test_slider_reclusters_on_the_backend_at_the_chosen_scale(runtime, oracle_backend):
    s = oracle_backend
    writeback, partdata = sub(runtime, "writeback"), sub(runtime, "partdata")
    assert runtime.engine_status()["sampart3d"]["scales_on_backend"]
    obj = four_blocks()
    bpy.context.scene.segparts_engine = "sampart3d"
    assert bpy.ops.segparts.segment() == {"FINISHED"}
    runtime.run_until_idle(timeout=900)  # trains the grouping field (~1 min here)
    assert "part_id" in obj.data.attributes, runtime.message(obj)
    props = obj.segparts
    assert props.segmentation_id and props.engine == "sampart3d"
    tree = writeback.hierarchy_arrays(obj)
    first = part_labels(obj)
    jobs_before = len(_ask(s, runtime, "status", {}).result["recent_jobs"])

    levels = writeback.slider_levels(obj)
    position = partdata.slider_position(levels, 0.75)  # SAMPart3D scale 1.5
    props.granularity = position
    runtime.run_until_idle(timeout=300)
    coarse = part_labels(obj)
    recent = _ask(s, runtime, "status", {}).result["recent_jobs"]
    assert len(recent) == jobs_before + 1 and recent[-1]["op"] == "segment", "the slider asked the backend"
    answer = _ask(
        s,
        runtime,
        "segment",
        {"mesh_id": props.mesh_id, "engine": "sampart3d", "scale": 0.75, "segmentation_id": props.segmentation_id},
    )
    assert answer.result["info"]["sampart3d_scale"] == 1.5
    tris, tri_poly = sub(runtime, "mesh_io").triangles(obj.data)
    expected = partdata.compact_labels(
        partdata.polygon_labels(answer.arrays["labels"], tri_poly, len(obj.data.polygons))
    )
    assert np.array_equal(coarse, expected), "the backend's clustering at that scale is what the object shows"
    assert len(props.parts) == coarse.max() + 1
    for stored, now in zip(tree, writeback.hierarchy_arrays(obj)):
        assert np.array_equal(stored, now), "the part tree stays as it was"

    props.granularity = 1.0  # back at the engine's own result: no request
    runtime.run_until_idle(timeout=60)
    assert np.array_equal(part_labels(obj), first)
    assert len(_ask(s, runtime, "status", {}).result["recent_jobs"]) == jobs_before + 2  # + the test's own segment

    # a backend that lost the result (restarted): the slider cuts the stored tree and says so
    runtime.stop_backend()
    runtime.ensure_started()
    runtime.run_until_idle(timeout=60)
    props.granularity = position
    runtime.run_until_idle(timeout=60)
    assert np.array_equal(part_labels(obj), writeback.load_hierarchy(obj).cut(scale=0.75))
    assert "stored part tree" in runtime.message(obj)
