"""The add-on's logic that needs no Blender: arrays for the write-back, picking, palette, and the
backend session + jobs against a real `segparts serve` process over real ZeroMQ."""

from __future__ import annotations

import colorsys
import itertools
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from addon import engines, jobs, logs, palette, partdata, partedits, picking, session, setup, similar
from segparts.client import BackendClient, mesh_id
from segparts.hierarchy import Hierarchy


# ---- polygons, triangles, vertex groups ------------------------------------------------------
def random_polygons(rng, n_polys, n_verts):
    sizes = rng.integers(3, 7, n_polys)
    corners = rng.integers(0, n_verts, int(sizes.sum())).astype(np.int32)
    return corners, sizes.astype(np.int32)


def test_fan_triangles_cover_each_polygon():
    rng = np.random.default_rng(0)
    corners, sizes = random_polygons(rng, 200, 50)
    tris, tri_poly = partdata.fan_triangles(corners, sizes)
    assert len(tris) == int((sizes - 2).sum())
    assert np.array_equal(np.bincount(tri_poly, minlength=200), sizes - 2)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for p in (0, 17, 199):
        poly = corners[starts[p] : starts[p] + sizes[p]]
        got = tris[tri_poly == p]
        assert (got[:, 0] == poly[0]).all()
        assert set(got.ravel()) == set(poly)


def test_polygon_labels_first_triangle_and_mask():
    tri_poly = np.array([0, 0, 1, 2, 2, 2])
    labels = np.array([5, 6, 7, 8, 9, 9])
    assert partdata.polygon_labels(labels, tri_poly, 4).tolist() == [5, 7, 8, -1]
    mask = partdata.polygon_mask(np.array([0, 1, 0, 0, 0, 1], bool), tri_poly, 3)
    assert mask.tolist() == [True, False, True]
    with pytest.raises(ValueError):
        partdata.polygon_labels(labels[:3], tri_poly, 3)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(3, 30), st.integers(1, 6), st.integers(0, 10_000))
def test_vertex_groups_policy_matches_definition(n_polys, n_verts, n_parts, seed):
    """A vertex is in every part whose faces use it — checked against a plain-Python definition."""
    rng = np.random.default_rng(seed)
    corners, sizes = random_polygons(rng, n_polys, n_verts)
    labels = rng.integers(-1, n_parts, n_polys).astype(np.int32)
    groups = partdata.vertex_groups(labels, corners, sizes, n_verts)
    expected: dict[int, set] = {}
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    for p in range(n_polys):
        if labels[p] >= 0:
            expected.setdefault(int(labels[p]), set()).update(corners[starts[p] : starts[p] + sizes[p]].tolist())
    assert {k: set(v.tolist()) for k, v in groups.items()} == expected
    assert all(len(v) == len(set(v.tolist())) for v in groups.values()), "no duplicates in a group"


def test_group_update_turns_old_groups_into_new_ones():
    rng = np.random.default_rng(3)
    corners, sizes = random_polygons(rng, 300, 120)
    topo = partdata.Topology(corners, sizes, 120)
    old = rng.integers(0, 6, 300).astype(np.int32)
    new = old.copy()
    new[new == 5] = 4  # merge 5 into 4 (a coarser cut), and move some faces
    new[:20] = 1
    update = partdata.group_update(old, new, topo)
    before = partdata.vertex_groups(old, corners, sizes, 120)
    after = partdata.vertex_groups(new, corners, sizes, 120)
    assert update.drop == [5]
    for part, (remove, add, full) in update.changes.items():
        result = (set(before.get(part, np.empty(0)).tolist()) - set(remove.tolist())) | set(add.tolist())
        assert result == set(after[part].tolist()) == set(full.tolist())
    assert update.counts == {p: len(v) for p, v in after.items()}
    fresh = partdata.group_update(None, new, topo)
    assert all(len(r) == 0 for r, _a, _f in fresh.changes.values())


def test_compact_labels_and_centres():
    assert partdata.compact_labels(np.array([7, 7, 3, -1, 9, 3])).tolist() == [0, 0, 1, -1, 2, 1]
    centres = partdata.part_centres(
        np.array([0, 0, 1]), np.array([[0, 0, 0], [2, 0, 0], [5, 5, 5.0]]), np.array([1.0, 3.0, 0.0])
    )
    assert np.allclose(centres[0], [1.5, 0, 0]) and np.allclose(centres[1], [5, 5, 5])


def test_preview_material_indices_and_selection_modes():
    assert partdata.preview_material_indices(np.array([0, 2, 1]), 3).tolist() == [3, 5, 4]
    S = partdata.SelectionUpdate
    assert S.from_modifiers(False, False).apply({1, 2}, [3]) == {3}
    assert S.from_modifiers(True, False).apply({1, 2}, [3]) == {1, 2, 3}
    assert S.from_modifiers(False, True).apply({1, 2}, [2]) == {1}


def test_palette_distinct_and_stable():
    colours = palette.part_colours(64)
    assert len({tuple(round(c, 2) for c in col[:3]) for col in colours}) == 64
    assert colours[5] == palette.part_colour(5)  # the list and a single lookup agree
    hues = [colorsys.rgb_to_hsv(*c[:3])[0] for c in colours]
    steps = [min(abs(a - b), 1 - abs(a - b)) for a, b in itertools.pairwise(hues)]
    assert min(steps) > 0.2, "neighbouring part ids must get far-apart hues"
    assert palette.part_name(7) == "Part_007"


def test_addon_palette_is_the_backends():
    """The add-on keeps its own palette (its pure modules import without the built `_shared`
    package); files the backend writes must show the same colours as Blender's preview."""
    from segparts.palette import part_colours as backend_colours, part_rgb

    ids = np.arange(300)
    np.testing.assert_allclose([palette.part_colour(k)[:3] for k in ids], part_rgb(ids), rtol=0, atol=1e-12)
    rgba = backend_colours(np.array([-1, 0, 7]))
    assert rgba[0].tolist() == [128, 128, 128, 255]  # unlabelled: grey
    assert rgba[2, :3].tolist() == [round(255 * c) for c in palette.part_colour(7)[:3]]


def test_addon_polygon_helpers_are_the_backends():
    """partdata keeps its fan triangulation and label compaction for the same reason as the palette;
    they must stay the backend's (segparts.mesh.fan_triangles, segparts.hierarchy.first_use_ids)."""
    from segparts.hierarchy import first_use_ids
    from segparts.mesh import fan_triangles

    rng = np.random.default_rng(5)
    corners, sizes = random_polygons(rng, 300, 80)
    ours, ours_poly = partdata.fan_triangles(corners, sizes)
    theirs, theirs_poly = fan_triangles(corners, sizes)
    assert np.array_equal(ours, theirs) and np.array_equal(ours_poly, theirs_poly)
    labels = rng.integers(-1, 12, 500)
    compact = partdata.compact_labels(labels)
    assert (compact[labels < 0] == -1).all()
    assert np.array_equal(compact[labels >= 0], first_use_ids(labels[labels >= 0]))


def test_addon_sends_cues_in_the_clients_wire_form():
    """jobs.MeshArrays keeps its own copy of `cue_wire_array` (same reason): what the add-on uploads
    must be byte for byte what the Python client sends, or the two would hash to other mesh ids."""
    from segparts.client import cue_wire_array

    rng = np.random.default_rng(3)
    faces = rng.integers(0, 40, (60, 3))
    cues = {
        "material": rng.integers(0, 5, 60).astype(np.int64),
        "group": rng.integers(0, 3, 60).astype(np.uint16),
        "marked_edges": rng.random((60, 3)) < 0.2,
    }
    sent = jobs.MeshArrays(rng.random((40, 3)), faces, np.arange(60), 60, cues=cues).wire_arrays()
    for name, values in cues.items():
        expected = cue_wire_array(name, values)
        assert sent[name].dtype == expected.dtype and sent[name].tobytes() == expected.tobytes(), name


# ---- picking ---------------------------------------------------------------------------------
def test_first_hit_finds_nearest_triangle_and_misses():
    tri = np.array([[[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 0, 2], [1, 0, 2], [0, 1, 2]]], float)
    k, t = picking.first_hit([0.2, 0.2, 5], [0, 0, -1], tri)
    assert k == 1 and t == pytest.approx(3.0)
    k, t = picking.first_hit([0.2, 0.2, -5], [0, 0, 1], tri)
    assert k == 0 and t == pytest.approx(5.0)
    assert picking.first_hit([5, 5, 5], [0, 0, -1], tri)[0] == -1


def test_ray_to_object_inverts_the_world_matrix():
    m = np.eye(4)
    m[:3, :3] = [[0, -2, 0], [2, 0, 0], [0, 0, 2]]  # rotate 90 degrees about z, scale 2
    m[:3, 3] = [1, 2, 3]
    o, d = picking.ray_to_object(m[:3, :3] @ [1, 1, 1] + m[:3, 3], m[:3, :3] @ [0, 0, 1], np.linalg.inv(m))
    assert np.allclose(o, [1, 1, 1]) and np.allclose(d, [0, 0, 1])


def test_picker_moves_along_the_hierarchy():
    # leaves 0..3 (one polygon each, plus a second polygon on leaf 3), merges (0,1)->4, (2,3)->5, root 6
    leaf = np.array([0, 1, 2, 3, 3])
    h = Hierarchy(leaf, np.array([4, 4, 5, 5, 6, 6, -1]), np.array([0, 0, 0, 0, 0.3, 0.6, 1.0]))
    labels = h.cut(scale=0.4)  # parts {0,1} and {2}, {3}
    picker = picking.PartPicker(labels, h, scale=0.4)
    here = picker.target(4)
    assert here.parts == {int(labels[4])} and here.mask.tolist() == (labels == labels[4]).tolist()
    up = picker.target(2, level=1)  # node 5 covers leaves 2 and 3
    assert up.mask.tolist() == [False, False, True, True, True]
    assert up.parts == {int(labels[2]), int(labels[3])}
    assert picker.clamp_level(0, 5) == 1 and picker.clamp_level(0, -5) == -1
    down = picker.target(0, level=-1)  # finer than part {0,1}: just leaf 0
    assert down.mask.tolist() == [True, False, False, False, False]
    new_labels, new_id = picking.split_off(labels, down.mask)
    assert new_labels[0] == new_id and (new_labels[1:] == labels[1:]).all()


def _same_partition(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    pairs = set(zip(a.tolist(), b.tolist()))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def _tree():
    """8 faces on leaves 0..5; (0,1)->6 at 0.2, (2,3)->7 at 0.3, (6,7)->8 at 0.5, (4,5)->9 at 0.6, root 10."""
    leaf = np.array([0, 1, 2, 3, 4, 5, 5, 0])
    parent = np.array([6, 6, 7, 7, 9, 9, 8, 8, 10, 10, -1])
    height = np.array([0, 0, 0, 0, 0, 0, 0.2, 0.3, 0.5, 0.6, 1.0])
    return Hierarchy(leaf, parent, height)


def test_merge_parts_holds_at_its_scale_and_coarser_only():
    h = _tree()
    s = 0.35  # parts: {0,1}, {2,3}, {4}, {5}
    nodes = partedits.active_nodes(h, s)
    before = h.cut(scale=s)
    edit = partedits.merge(h, {nodes[0], nodes[4]}, s)  # merge part {0,1} with leaf 4
    e = Hierarchy(edit.leaf_labels, edit.parent, edit.height)
    after = e.cut(scale=s)
    assert after[0] == after[4] == after[1] == after[7] and after[2] != after[0] and after[5] != after[4]
    assert len(set(after.tolist())) == len(set(before.tolist())) - 1
    assert _same_partition(e.cut(scale=0.25), h.cut(scale=0.25)), "finer than the edit: as before"
    assert _same_partition(e.cut(scale=1.0), h.cut(scale=1.0))
    assert e.face_mask(edit.new_node).tolist() == (after == after[0]).tolist()
    with pytest.raises(ValueError):
        partedits.merge(h, {nodes[0]}, s)


def test_split_finer_and_split_faces_keep_a_valid_tree():
    h = _tree()
    s = 0.55  # parts: {0,1,2,3}, {4}, {5}
    node = int(partedits.active_nodes(h, s)[0])
    edit = partedits.split_finer(h, node, s)
    e = Hierarchy(edit.leaf_labels, edit.parent, edit.height)
    assert _same_partition(e.cut(scale=s), h.cut(scale=0.45)), "one level finer for that part only"
    assert _same_partition(e.cut(scale=0.9), h.cut(scale=0.9))
    with pytest.raises(ValueError):
        partedits.split_finer(h, 4, s)  # a leaf has nothing finer
    # faces 1 (leaf 1) and 6 (half of leaf 5) become one new part at s; the rest stays as it was
    mask = np.zeros(8, dtype=bool)
    mask[[1, 6]] = True
    edit = partedits.split_faces(h, mask, s)
    e = Hierarchy(edit.leaf_labels, edit.parent, edit.height)
    cut = e.cut(scale=s)
    assert cut[1] == cut[6] and len(set(cut[mask].tolist()) & set(cut[~mask].tolist())) == 0
    assert _same_partition(cut[~mask], h.cut(scale=s)[~mask])
    assert e.face_mask(edit.new_node).tolist() == mask.tolist()
    whole = partedits.split_faces(h, mask, 1.0)  # at the coarsest setting too (a new root above)
    w = Hierarchy(whole.leaf_labels, whole.parent, whole.height)
    assert len(set(w.cut(scale=1.0).tolist())) == 2


def test_region_under_mouse_skips_the_sidebar():
    from types import SimpleNamespace as NS

    window = NS(type="WINDOW", x=0, y=0, width=800, height=600)
    sidebar = NS(type="UI", x=600, y=0, width=200, height=600)
    area = NS(type="VIEW_3D", x=0, y=0, width=800, height=600, regions=[window, sidebar])
    other = NS(type="PROPERTIES", x=800, y=0, width=300, height=600, regions=[])
    assert picking.region_under([other, area], 100, 100) == (area, window)
    assert picking.region_under([other, area], 700, 100) == (area, None)
    assert picking.region_under([other, area], 900, 100) == (None, None)


# ---- session and jobs against a real backend process ---------------------------------------------
def _grid(n=30):
    y, x = np.mgrid[0 : n + 1, 0 : n + 1]
    v = np.column_stack([x.ravel(), y.ravel(), np.zeros(x.size)]).astype(float)
    idx = np.arange((n + 1) ** 2).reshape(n + 1, n + 1)
    quads = np.column_stack([idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()])
    # two separate sheets: the second shifted away
    v2 = v + [0, 0, 5]
    corners = np.concatenate([quads.ravel(), quads.ravel() + len(v)]).astype(np.int32)
    sizes = np.full(2 * len(quads), 4, dtype=np.int32)
    return np.concatenate([v, v2]), corners, sizes


def _drive(s, until, timeout=60):
    deadline = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < deadline, s.message
        s.tick()
        time.sleep(0.005)


def backend_python(folder: Path) -> str:
    """This venv's Python with THIS checkout's backend first on its path (the session starts the
    backend without PYTHONPATH, and the venv's editable install may point at another checkout)."""
    wrapper = folder / "backend-python"
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH="{ROOT / "backend"}" exec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    return str(wrapper)


def _start(tmp_path, **config):
    cfg = session.Config(
        python=backend_python(tmp_path), port=session.free_port(), device="cpu", state_dir=str(tmp_path), **config
    )
    s = session.Session(cfg, lambda host, port, token_file: BackendClient(host, port, token_file=token_file))
    s.start()
    _drive(s, lambda: s.state != "starting")
    return s


@pytest.fixture()
def live_session(tmp_path):
    s = _start(tmp_path)
    assert s.ready, s.message
    yield s
    s.stop()


def test_hello_is_checked_for_protocol_and_version(tmp_path):
    """Another protocol cannot work (the session fails and says why); another version of the same
    protocol works and the panel warns."""
    import segparts

    other = _start(tmp_path, protocol=2, version=segparts.__version__)
    try:
        assert other.state == "error" and "protocol 1" in other.message and "speaks 2" in other.message
    finally:
        other.stop()
    older = _start(tmp_path, version="0.0.1")
    try:
        assert older.ready and segparts.__version__ in older.warning and "0.0.1" in older.warning
    finally:
        older.stop()
    same = _start(tmp_path, version=segparts.__version__)
    try:
        assert same.ready and same.warning == ""
    finally:
        same.stop()


def test_the_engine_menu_and_flags_come_from_hello(live_session):
    """Nothing in the add-on names an engine: labels, prompts, rendering and backend scales are the
    backend's words."""
    status = live_session.engines()
    items = engines.enum_items(status)
    assert [i[0] for i in items] == list(status) and [i[4] for i in items] == list(range(len(status)))
    by_label = {i[1]: i[0] for i in items}
    assert by_label["SAMPart3D"] == "sampart3d" and by_label["GeoSAM2"] == "geosam2"
    assert engines.click_prompts(status, "geosam2") and not engines.click_prompts(status, "geometric")
    assert engines.renders(status, "sampart3d") and not engines.renders(status, "geometric")
    assert engines.scales_on_backend(status, "sampart3d") and not engines.scales_on_backend(status, "geometric")
    assert "ptv3-object" in engines.models(status, "sampart3d") and engines.models(status, "geometric") == []
    # the backend stopped: the menu keeps its engines (a stored choice stays valid)
    assert [i[0] for i in engines.enum_items({})] == list(status)


def test_scale_job_recuts_the_named_result_and_never_segments_again(live_session):
    """A new slider position of a result the backend holds: `segment` with its id and the scale,
    nothing uploaded; a result the backend lost is an error, not a new segmentation."""
    s = live_session
    arrays = _mesh_arrays()
    mid = mesh_id(arrays.vertices, arrays.faces)
    done, errors = [], []
    jobs.SegmentJob(s, arrays, mid, "geometric", lambda j, m: done.append(m), lambda j, e: errors.append(e)).start()
    _drive(s, lambda: done or errors)
    first = done[0]
    h = Hierarchy(first.arrays["leaf_labels"], first.arrays["parent"], first.arrays["height"])
    sent = []
    real_send = s.client.send
    s.client.send = lambda op, args=None, arrays=None: (sent.append((op, args, arrays)), real_send(op, args, arrays))[1]
    jobs.ScaleJob(
        s,
        mid,
        "geometric",
        first.result["segmentation_id"],
        1.0,
        lambda j, m: done.append(m),
        lambda j, e: errors.append(e),
    ).start()
    _drive(s, lambda: len(done) == 2 or errors)
    assert not errors, errors
    assert [(op, a["scale"], a["segmentation_id"], arr) for op, a, arr in sent] == [
        ("segment", 1.0, first.result["segmentation_id"], None)
    ]
    assert np.array_equal(done[1].arrays["labels"], h.cut(scale=1.0))
    jobs.ScaleJob(s, mid, "geometric", "gone", 0.5, lambda j, m: done.append(m), lambda j, e: errors.append(e)).start()
    _drive(s, lambda: errors)
    assert "no geometric segmentation" in errors[0] and len(done) == 2


def test_granularity_and_scale_run_opposite_ways():
    assert partdata.granularity_to_scale(0.0) == 1.0 and partdata.granularity_to_scale(1.0) == 0.0
    assert partdata.granularity_to_scale(1.5) == 0.0 and partdata.granularity_to_scale(-1) == 1.0
    for g in np.linspace(0, 1, 11):
        assert partdata.granularity_to_scale(partdata.granularity_to_scale(g)) == pytest.approx(g)


def _mesh_arrays():
    verts, corners, sizes = _grid()
    tris, tri_poly = partdata.fan_triangles(corners, sizes)
    return jobs.MeshArrays(verts, tris, tri_poly, len(sizes), partdata.Topology(corners, sizes, len(verts)))


def test_session_segments_through_real_backend(live_session):
    s = live_session
    assert "geometric" in s.engines() and s.engines()["geometric"]["available"]
    arrays = _mesh_arrays()
    results, errors = [], []
    job = jobs.SegmentJob(
        s,
        arrays,
        mesh_id(arrays.vertices, arrays.faces),
        "geometric",
        lambda j, m: results.append(m),
        lambda j, e: errors.append(e),
    )
    job.start()
    _drive(s, lambda: results or errors)
    assert not errors, errors
    assert "face_map" not in arrays.wire_arrays(), "labels come back per triangle; the add-on maps them itself"
    labels = partdata.polygon_labels(results[0].arrays["labels"], arrays.tri_poly, arrays.n_polygons)
    half = arrays.n_polygons // 2
    assert labels.min() >= 0
    assert not set(labels[:half]) & set(labels[half:]), "the two separate sheets share no part"
    # the second time the backend already holds the mesh: only the id goes over the wire
    again = jobs.SegmentJob(
        s,
        arrays,
        mesh_id(arrays.vertices, arrays.faces),
        "geometric",
        lambda j, m: results.append(m),
        lambda j, e: errors.append(e),
    )
    sent = []
    real_send = s.client.send
    s.client.send = lambda op, args=None, arrays=None: (sent.append((op, arrays)), real_send(op, args, arrays))[1]
    again.start()
    _drive(s, lambda: len(results) == 2 or errors)
    assert [op for op, _ in sent][:2] == ["upload_mesh", "segment"] and sent[0][1] is None


def test_pick_job_sends_clicks_in_wire_format(live_session):
    """A click (triangle of the uploaded mesh + object-space point) comes back as a part mask."""
    s = live_session
    arrays = _mesh_arrays()
    mid = mesh_id(arrays.vertices, arrays.faces)
    done, errors = [], []
    seg = jobs.SegmentJob(s, arrays, mid, "geometric", lambda j, m: done.append(m), lambda j, e: errors.append(e))
    seg.start()
    _drive(s, lambda: done or errors)
    tri = int(np.flatnonzero(arrays.tri_poly == arrays.n_polygons - 1)[0])  # a face of the second sheet
    point = arrays.vertices[arrays.faces[tri]].mean(axis=0)
    pick = jobs.PickJob(
        s,
        arrays,
        mid,
        "geometric",
        [picking.click_prompt(tri, point, True)],
        lambda j, m: done.append(m),
        lambda j, e: errors.append(e),
        scale=0.5,
    )
    pick.start()
    _drive(s, lambda: len(done) == 2 or errors)
    assert not errors, errors
    mask = partdata.polygon_mask(done[1].arrays["mask"], arrays.tri_poly, arrays.n_polygons)
    half = arrays.n_polygons // 2
    assert mask[arrays.n_polygons - 1] and not mask[:half].any(), "the pick stays on the clicked sheet"


def test_backend_death_fails_the_job_quickly(live_session):
    s = live_session
    arrays = _mesh_arrays()
    errors = []
    job = jobs.SegmentJob(
        s, arrays, mesh_id(arrays.vertices, arrays.faces), "geometric", lambda j, m: None, lambda j, e: errors.append(e)
    )
    job.start()
    os.kill(s.process.proc.pid, signal.SIGKILL)
    t0 = time.monotonic()
    _drive(s, lambda: errors, timeout=10)
    assert time.monotonic() - t0 < 5
    assert s.state == "error" and "Restart" in s.message
    assert job.state == "error"


def test_unreachable_backend_is_reported(tmp_path):
    cfg = session.Config(python=sys.executable, port=session.free_port(), auto_start=False, state_dir=str(tmp_path))
    s = session.Session(cfg, lambda host, port, token_file: BackendClient(host, port, token_file=token_file))
    old = session.CONNECT_TIMEOUT_S
    session.CONNECT_TIMEOUT_S = 0.5
    try:
        s.start()
        _drive(s, lambda: s.state != "starting", timeout=5)
        state, message = s.state, s.message  # before stop(), which always ends in "off"
    finally:
        session.CONNECT_TIMEOUT_S = old
        s.stop()
    assert state == "error", (state, message)
    assert f"No backend answers at 127.0.0.1:{cfg.port}" in message and "segparts serve" in message


def test_missing_python_is_a_clear_error(tmp_path):
    cfg = session.Config(python=str(tmp_path / "nope" / "python"), port=session.free_port(), state_dir=str(tmp_path))
    s = session.Session(cfg, lambda *a: None)
    s.start()
    assert s.state == "error" and "does not exist" in s.message


# ---- set-up tasks ------------------------------------------------------------------------------
def test_setup_task_runs_steps_and_reports_failure(tmp_path):
    ok = setup.Task(
        "T",
        [("one", [sys.executable, "-c", "print('hello')"]), ("two", [sys.executable, "-c", "print('world')"])],
        tmp_path / "log.txt",
    )
    ok.start()
    deadline = time.monotonic() + 30
    while not ok.finished and time.monotonic() < deadline:
        ok.tick()
        time.sleep(0.01)
    assert ok.ok and "hello" in (tmp_path / "log.txt").read_text() and ok.last_line() == "world"
    bad = setup.Task(
        "T", [("fail", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"])], tmp_path / "bad.txt"
    )
    bad.start()
    while not bad.finished:
        bad.tick()
        time.sleep(0.01)
    assert not bad.ok and "exit 3" in bad.status and "boom" in bad.status


def test_setup_backend_task_commands(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "pyproject.toml").write_text("[project]\nname='x'\n")
    task = setup.setup_backend_task("/usr/bin/python3", tmp_path / "venv", bundle, tmp_path / "log", learned=True)
    cmds = [c for _, c in task.steps]
    assert cmds[0] == ["/usr/bin/python3", "-m", "venv", str(tmp_path / "venv")]
    assert cmds[2][-1] == str(bundle)
    assert cmds[3][-5:] == ["segparts", "setup", "--learned", "--device", "auto"]  # the same path as make setup
    plain = setup.setup_backend_task("/usr/bin/python3", tmp_path / "venv", bundle, tmp_path / "log")
    assert not any("setup" in c for _, c in plain.steps)
    with pytest.raises(ValueError):
        setup.setup_backend_task("", tmp_path / "venv", bundle, tmp_path / "log")
    names = setup.models_for_engine(ROOT / "models" / "manifest.json", "geosam2")
    assert names and all(isinstance(n, str) for n in names)
    with pytest.raises(ValueError):
        setup.models_for_engine(ROOT / "models" / "manifest.json", "geometric")


def test_error_message_leaves_out_token_file_log_lines(live_session):
    """The panel's error box shows the log's last lines; lines about the token file say nothing
    to a user and once filled it."""
    s = live_session
    assert "token file" in s.config.log_file.read_text(), "the backend logs its token file"
    os.kill(s.process.proc.pid, signal.SIGKILL)
    _drive(s, lambda: s.state == "error", timeout=10)
    assert "Restart" in s.message and "token" not in s.message.lower(), s.message


def test_slider_spreads_the_cuts_evenly():
    # heights bunched as engines give them: most merges between 0.5 and 0.85
    height = np.array([0, 0, 0, 0, 0, 0.5, 0.6, 0.7, 0.85, 1.0])
    levels = partdata.slider_levels(height)
    assert levels.tolist() == [0.0, 0.5, 0.6, 0.7, 0.85, 1.0]
    positions = np.linspace(0, 1, 101)
    scales = [partdata.slider_scale(levels, g) for g in positions]
    share = {lv: scales.count(lv) for lv in levels.tolist()}
    assert min(share.values()) >= 101 // len(levels) - 11, share  # no cut squeezed into a sliver
    assert scales[0] == 1.0 and scales[-1] == 0.0
    for lv in levels:  # every cut has a slider position that gives it back
        assert partdata.slider_scale(levels, partdata.slider_position(levels, lv)) == lv


def test_plain_build_needs_no_blender_and_matches_blenders_zip(tmp_path):
    """`python build_addon.py --builder plain` (what a fresh clone without bpy gets) makes the zip
    that Blender's own extension CLI makes: same files, and the CLI validates it."""
    import subprocess
    import zipfile

    import build_addon

    try:
        cli = build_addon.find_extension_cli()
    except build_addon.BuildError:
        pytest.skip("Blender's extension CLI (bpy) is not installed here: nothing to compare with")
    zips = {}
    for builder in ("plain", "blender"):
        done = subprocess.run(
            [
                sys.executable,
                str(ROOT / "build_addon.py"),
                "--local",
                "--builder",
                builder,
                "--output-dir",
                str(tmp_path / builder),
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        zips[builder] = next((tmp_path / builder).glob("*.zip"))
    build_addon.run_cli(cli, "validate", str(zips["plain"]))
    names = {b: sorted(zipfile.ZipFile(z).namelist()) for b, z in zips.items()}
    assert names["plain"] == names["blender"]


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000))
def test_triangle_grid_finds_the_same_hit_as_brute_force(seed):
    rng = np.random.default_rng(seed)
    # a soup of small and a few large triangles, some flat in z (a degenerate grid axis)
    centres = rng.uniform(-5, 5, (300, 3)) * np.array([1, 1, rng.choice([0.0, 1.0])])
    size = np.where(rng.random(300) < 0.05, 4.0, 0.4)[:, None, None]
    tri = centres[:, None, :] + rng.normal(size=(300, 3, 3)) * size
    tri = tri.astype(np.float32).astype(np.float64)  # the grid keeps float32 positions, as Blender does
    verts, tris = tri.reshape(-1, 3), np.arange(900).reshape(-1, 3)
    small_blocks = type("SmallBlocks", (picking.TriangleGrid,), {"BLOCK": 64})  # the blockwise build too
    grid = (picking.TriangleGrid if seed % 2 else small_blocks)(verts, tris, per_cell=2.0)
    for _ in range(40):
        o = rng.uniform(-12, 12, 3)
        target = tri[rng.integers(300)].mean(axis=0) if rng.random() < 0.8 else rng.uniform(-6, 6, 3)
        d = target - o
        if rng.random() < 0.25:  # straight down an axis: zero direction components
            o, d = np.append(target[:2], 20.0), np.array([0.0, 0.0, -1.0])
        want_k, want_t = picking.first_hit(o, d, tri)
        got_k, got_t = grid.cast(o, d)
        assert (got_k < 0) == (want_k < 0)
        if want_k >= 0:
            assert abs(got_t - want_t) <= 1e-9 * max(1.0, want_t), (got_k, want_k)


def _car():
    """A body (leaf 0) and four wheels, each a hub (leaves 1..4) and a tyre (leaves 5..8):
    wheel k = node 9+k (hub k+1, tyre k+5), the wheels under node 13, the root 14."""
    leaf = np.array([0, 0, 1, 5, 2, 6, 3, 7, 4, 8])  # 10 faces: two body faces, then hub, tyre per wheel
    parent = np.array([14, 9, 10, 11, 12, 9, 10, 11, 12, 13, 13, 13, 13, 14, -1])
    height = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0.2, 0.2, 0.2, 0.2, 0.6, 1.0])
    return Hierarchy(leaf, parent, height)


def test_select_similar_takes_every_copy_of_the_part():
    h = _car()
    groups = similar.clean_groups([[9, 10, 11, 12], [3], "junk", [99, 100]], h.n_nodes)
    assert groups == [[9, 10, 11, 12]], "groups of one, junk and unknown nodes are dropped"
    for scale, wheel_faces in ((0.3, [2, 3]), (0.1, [2])):  # whole wheels; then hubs (a piece of a copy)
        labels = h.cut(scale=scale)
        nodes = partedits.active_nodes(h, scale)
        part = int(labels[wheel_faces[0]])
        got = similar.similar_parts(h, labels, nodes, {part}, groups)
        wheels = set(labels[2:].tolist())  # every face of the four wheels
        assert got == wheels, (scale, got)
        assert int(labels[0]) not in got
    body = int(h.cut(scale=0.3)[0])
    assert similar.similar_parts(h, h.cut(scale=0.3), partedits.active_nodes(h, 0.3), {body}, groups) == {body}
    # groups follow a hand edit that renumbers the tree
    edit = partedits.merge(h, {int(partedits.active_nodes(h, 0.3)[0]), 9}, 0.3)
    moved = similar.remap_groups(groups, edit.node_map)
    assert len(moved) == 1 and len(moved[0]) == 4


def test_cancel_frees_the_job_at_once_and_reports_once(live_session):
    """Cancel ends the job for the user immediately (the backend stops at its next check); the
    backend's late 'cancelled' answer is not reported a second time."""
    s = live_session
    verts, corners, sizes = _grid(200)  # 80k quads: the backend is still busy when Cancel comes
    verts = verts + np.column_stack([np.zeros((len(verts), 2)), np.sin(verts[:, 0] / 7) * 3])
    tris, tri_poly = partdata.fan_triangles(corners, sizes)
    arrays = jobs.MeshArrays(verts, tris, tri_poly, len(sizes), partdata.Topology(corners, sizes, len(verts)))
    errors, done = [], []
    job = jobs.SegmentJob(
        s,
        arrays,
        mesh_id(arrays.vertices, arrays.faces),
        "geometric",
        lambda j, m: done.append(m),
        lambda j, e: errors.append(e),
    )
    job.start()
    _drive(s, lambda: job.job_id is not None or not job.active)
    assert job.active, f"the job ended before Cancel: {job.state}"
    job.cancel()  # ends the job for the user at once: no session tick in between
    assert not job.active and job.state == "cancelled" and errors == ["Cancelled"]
    _drive(s, lambda: not s.pending, timeout=60)  # the backend's own answer arrives later
    assert errors == ["Cancelled"] and not done


def test_backend_log_is_rotated_by_the_backend_and_console_output_kept_per_run(tmp_path):
    """The add-on's backend logs through `serve --log-file` (rotated); what the process prints
    goes to a console file emptied at each start, so neither grows without bound."""
    cfg = session.Config(python=sys.executable, port=session.free_port(), device="cpu", state_dir=str(tmp_path))
    process = session.BackendProcess(cfg)
    assert process.command()[-2:] == ["--log-file", str(cfg.log_file)]
    cfg.console_file.write_text("a previous run's output\n" * 1000)
    process.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and "listening on" not in cfg.console_file.read_text(errors="replace"):
            time.sleep(0.1)
        console = cfg.console_file.read_text(errors="replace")
        assert "listening on" in console and "previous run" not in console
        assert cfg.log_file.exists()  # the rotating handler's file
    finally:
        process.stop()


def test_a_request_refused_after_a_token_change_is_resent_with_the_new_token(tmp_path, monkeypatch):
    """Connected to a running `segparts serve` that restarted with a new token: the add-on reads
    the token file again and the refused request goes through, once."""
    from segparts.server import Server, write_token_file

    monkeypatch.setenv("SEGPARTS_RUNTIME_DIR", str(tmp_path / "runtime"))  # where serve writes its token
    port = session.free_port()
    server = Server(port=port)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    cfg = session.Config(python=sys.executable, port=port, auto_start=False, state_dir=str(tmp_path))
    s = session.Session(cfg, lambda host, port, token_file: BackendClient(host, port, token_file=token_file))
    try:
        s.start()
        _drive(s, lambda: s.state != "starting")
        assert s.ready, s.message
        server.token = "a-new-token-after-a-restart"
        write_token_file(server.token_file, server.token)
        answers = []
        s.request("status", {}, None, lambda msg, error: answers.append((msg, error)))
        _drive(s, lambda: answers)
        msg, error = answers[0]
        assert error is None and msg.ok, error
        # a wrong token that the file does not fix is reported, not retried for ever
        server.token = "yet-another-token"
        s.request("status", {}, None, lambda msg, error: answers.append((msg, error)))
        _drive(s, lambda: len(answers) > 1)
        assert (
            answers[1][0] is not None
            and not answers[1][0].ok
            and "unauthorized" in answers[1][1].lower() + str(answers[1][0].error)
        )
    finally:
        s.stop()
        server.stop()
        thread.join(timeout=10)


def test_add_on_logs_never_show_the_backend_token(live_session, caplog):
    """The token of the backend the session started is masked in every record the add-on logs:
    in the message, its arguments and a traceback."""
    token = live_session.config.token_file.read_text().strip()
    log = logs.get_logger("addon.test")
    with caplog.at_level(logging.INFO):
        log.warning("request %s", {"op": "status", "token": token})
        try:
            raise RuntimeError(f"garbled frame {token}")
        except RuntimeError:
            log.exception("tick failed")
        live_session._fail(f"no answer (sent {token[:3]}…)")
    assert "garbled frame ***" in caplog.text and "'token': '***'" in caplog.text
    assert token not in caplog.text
    assert any(r.name == "addon.session" and r.levelno == logging.WARNING for r in caplog.records)


def test_marked_triangle_edges_are_the_marked_mesh_edges_and_never_a_diagonal():
    # two quads 0-1-2-3 and 1-4-5-2 sharing edge 1-2, fan-split: diagonals 0-2 and 1-5
    tris, _ = partdata.fan_triangles(np.array([0, 1, 2, 3, 1, 4, 5, 2]), np.array([4, 4]))
    marks = partdata.marked_triangle_edges(tris, np.array([[2, 1], [4, 5]]))
    ends = {tuple(sorted((int(t[k]), int(t[(k + 1) % 3])))) for t, row in zip(tris, marks) for k in range(3) if row[k]}
    assert ends == {(1, 2), (4, 5)}
    assert marks.sum() == 3  # edge 1-2 on both of its triangles, 4-5 on one


def test_uv_cut_edges_are_the_edges_whose_sides_disagree_on_their_uvs():
    # two quads 0-1-2-3 and 1-4-5-2 sharing edge 1-2; edges 0:0-1 1:1-2 2:2-3 3:3-0 4:1-4 5:4-5 6:5-2
    topology = partdata.Topology(np.array([0, 1, 2, 3, 1, 4, 5, 2]), np.array([4, 4]), 6)
    corner_edge = np.array([0, 1, 2, 3, 4, 5, 6, 1])

    def cut(uv):
        return np.flatnonzero(partdata.uv_cut_edges(topology, corner_edge, uv, 7)).tolist()

    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], np.float32)
    joined = np.concatenate([square, square + [1, 0]])  # the second quad continues the first
    assert cut(joined) == []
    assert cut(np.concatenate([square, square + [2, 0]])) == [1]  # an island of its own
    nudged = joined.copy()
    nudged[7] += 1e-7  # corner 2 of the second quad, within the tolerance: still one island
    assert cut(nudged) == []
    flipped = joined.copy()
    flipped[[4, 7]] = flipped[[7, 4]]  # the second quad's UVs of vertices 1 and 2 swapped: a cut
    assert cut(flipped) == [1]
