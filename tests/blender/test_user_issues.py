"""What a Blender user meets (issue 16): stale colours, manual part fixes, toggles, vertex groups,
mirror, a second Blender, bad meshes. Real Blender (bpy), real backend, renders where colours count."""

from __future__ import annotations

import numpy as np
import pytest

import render_check
from blender_env import bpy, sub
from blender_meshes import boxes_object, part_labels as _labels, segment_object as _segment


def _set_granularity(runtime, obj, value):
    obj.segparts.granularity = value
    runtime.run_until_idle(timeout=30)


# ---- 1. colours must follow every change of a mesh that was drawn before ---------------------------
def test_render_shows_current_part_colours_after_each_change(runtime, backend):
    render_check.top_camera()
    obj = boxes_object()
    for name, rgba in (("Red", (1, 0, 0, 1)), ("Blue", (0, 0, 1, 1))):  # the user's own materials
        obj.data.materials.append(bpy.data.materials.new(name))
        obj.data.materials[-1].diffuse_color = rgba
    obj.data.polygons.foreach_set("material_index", (np.arange(len(obj.data.polygons)) % 2).astype(np.int32))
    seen = render_check.visible_polygons(obj)
    assert (seen >= 0).sum() > 150
    render_check.render()  # drawn before Segment, as in any viewport

    def check(when):
        image = render_check.render()
        assert render_check.wrong_pixels(obj, image, seen) == 0, f"stale colours {when}"
        return image

    _segment(runtime, obj)
    image = check("after Segment")
    by_part = render_check.colours_by_part(image, seen, _labels(obj))
    assert len(by_part) >= 3 and all(len(c) == 1 for c in by_part.values())
    assert len({next(iter(c)) for c in by_part.values()}) == len(by_part), "parts must differ in colour"
    _set_granularity(runtime, obj, 0.0)
    check("after a coarser cut")
    _set_granularity(runtime, obj, 1.0)
    image = check("after a finer cut")
    labels = _labels(obj)
    by_part = render_check.colours_by_part(image, seen, labels)
    assert len({next(iter(c)) for c in by_part.values()}) == len(by_part) >= 3
    sub(runtime, "partlist").set_selected_parts(obj, {int(labels[-1])})
    bpy.data.materials.new("Gold").diffuse_color = (1.0, 0.7, 0.0, 1.0)
    assert bpy.ops.segparts.assign_material(material="Gold") == {"FINISHED"}
    check("after Assign Material")
    assert bpy.ops.segparts.clear_preview() == {"FINISHED"}
    check("after Restore Materials")
    # the Preview Colours tick box itself: on shows the parts again, off gives the user's colours
    bpy.context.scene.segparts_preview = True
    image = check("after ticking Preview Colours")
    assert len(render_check.colours_by_part(image, seen, labels)) >= 3
    assert sub(runtime, "writeback").preview_active(obj)
    bpy.context.scene.segparts_preview = False
    check("after unticking Preview Colours")
    assert not sub(runtime, "writeback").preview_active(obj)
    assert [m.name for m in obj.data.materials] == ["Red", "Blue", "Gold"]


# ---- 3. the eye toggle in the parts list -------------------------------------------------------
def test_eye_toggle_hides_and_shows_the_part(runtime, backend):
    obj = boxes_object()
    _segment(runtime, obj)
    labels = _labels(obj)
    item = obj.segparts.parts[0]
    item.visible = False  # what a click on the eye does
    deps = bpy.context.evaluated_depsgraph_get()
    assert len(obj.evaluated_get(deps).data.polygons) == int((labels != item.part_id).sum())
    item.visible = True
    deps = bpy.context.evaluated_depsgraph_get()
    assert len(obj.evaluated_get(deps).data.polygons) == len(labels)


# ---- 8. meshes without faces: a clear message for that object, no traceback --------------------
def _mesh(name, verts, edges=(), faces=()):
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, list(edges), list(faces))
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    return obj


@pytest.mark.parametrize("kind", ["empty", "points", "wire"])
def test_mesh_without_faces_gets_a_message_for_that_object(runtime, backend, kind):
    verts = [] if kind == "empty" else [(0, 0, 0), (1, 0, 0), (0, 1, 0)]
    edges = [(0, 1), (1, 2)] if kind == "wire" else []
    bad = _mesh("Bad", verts, edges)
    good = boxes_object("Good")
    _segment(runtime, good)
    bpy.context.view_layer.objects.active = bad
    result = bpy.ops.segparts.segment()  # must not raise
    assert result in ({"CANCELLED"}, {"FINISHED"})
    runtime.run_until_idle(timeout=30)
    assert "no faces" in runtime.message(bad), runtime.message(bad)
    assert "no faces" not in runtime.message(good), "the message belongs to the object it is about"
    assert not bad.segparts.parts and "part_id" not in bad.data.attributes


# ---- 6. the user's own vertex groups named Part_* are never touched -----------------------------
def _members(obj, name):
    index = obj.vertex_groups[name].index
    return {(v.index, round(g.weight, 4)) for v in obj.data.vertices for g in v.groups if g.group == index}


def test_users_part_named_vertex_groups_survive_segment_and_recut(runtime, backend):
    obj = boxes_object()
    mine = {"Part_000": [0, 1], "Part_001": [5], "Part_rig": [2, 3]}
    for name, verts in mine.items():
        obj.vertex_groups.new(name=name).add(verts, 0.25, "REPLACE")
    before = {name: _members(obj, name) for name in mine}
    _segment(runtime, obj)
    writeback = sub(runtime, "writeback")

    def check_users_groups():
        for name in mine:
            assert name in obj.vertex_groups and _members(obj, name) == before[name], name

    check_users_groups()
    groups = writeback.part_groups(obj)
    labels = _labels(obj)
    assert sorted(groups) == sorted(np.unique(labels).tolist())
    assert not set(groups.values()) & set(mine), "name clashes get a suffix"
    for part, name in groups.items():
        expected = {v for poly in obj.data.polygons if labels[poly.index] == part for v in poly.vertices}
        assert {v for v, _w in _members(obj, name)} == expected
    _set_granularity(runtime, obj, 0.0)  # fewer parts: the add-on drops its own extra groups only
    check_users_groups()
    assert len(writeback.part_groups(obj)) == 1
    _set_granularity(runtime, obj, 1.0)
    check_users_groups()
    assert len(writeback.part_groups(obj)) == len(np.unique(_labels(obj)))


# ---- 4. Restart ends a frozen backend and starts a new one; Stop is there while a process is -------
def test_restart_replaces_a_frozen_backend(runtime, backend):
    import os
    import signal
    import time

    from test_addon import _Recorder

    proc = backend.process.proc
    os.kill(proc.pid, signal.SIGSTOP)  # frozen: alive, but answers nothing
    try:
        backend.request("status", timeout=0.5)
        deadline = time.monotonic() + 5
        while backend.state != "error" and time.monotonic() < deadline:
            runtime.drain()
            time.sleep(0.05)
        assert backend.state == "error", backend.message
        log = []
        bpy.types.SEGPARTS_PT_panel.draw(type("P", (), {"layout": _Recorder(log)})(), bpy.context)
        assert ("operator", "segparts.backend_stop") in log, "Stop must be offered while a process exists"
        assert bpy.ops.segparts.backend_start() == {"FINISHED"}  # the panel's Restart in the error state
        runtime.run_until_idle(timeout=60)
        s = runtime.current_session()
        assert s.ready, s.message
        assert s.process.proc.pid != proc.pid, "Restart reconnected to the frozen process"
        assert proc.poll() is not None, "the frozen process must be ended"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


# ---- 7. a second Blender gets its own backend -------------------------------------------------
def test_second_blender_gets_its_own_backend_with_default_preferences(runtime, backend):
    import time

    from blender_env import MODULE

    session_mod = sub(runtime, "session")
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.property_unset("port")  # what a user who never opened the preferences has
    runtime.stop_backend()
    first = runtime.ensure_started()
    runtime.run_until_idle(timeout=60)
    assert first.ready, first.message
    # a second Blender of the same user: same preferences, same extension folder
    second = session_mod.Session(sub(runtime, "config").make_config(), runtime._client_factory)
    second.start()
    try:
        deadline = time.monotonic() + 60
        while second.state == "starting" and time.monotonic() < deadline:
            second.tick()
            time.sleep(0.05)
        assert second.ready, second.message
        assert second.config.port != first.config.port
        assert second.process.proc.pid != first.process.proc.pid
        assert f"port {first.config.port}" in first.message, "the panel says which backend this is"
        answers = []
        second.request("status", on_message=lambda msg, err: answers.append((msg, err)))
        first.request("status", on_message=lambda msg, err: answers.append((msg, err)))
        deadline = time.monotonic() + 10
        while len(answers) < 2 and time.monotonic() < deadline:
            second.tick()
            runtime.drain()
            time.sleep(0.02)
        assert len(answers) == 2 and all(err is None for _m, err in answers), answers
    finally:
        second.stop()
        prefs.port = 0


# ---- 2. fixing a result by hand: merge, split, rename; kept when the slider moves --------------
def _parts_of(obj, faces):
    labels = _labels(obj)
    return {int(labels[f]) for f in faces}


def test_merge_split_rename_are_kept_in_the_hierarchy(runtime, backend):
    for op in ("merge_parts", "split_part", "rename_part"):
        assert "UNDO" in getattr(bpy.types, f"SEGPARTS_OT_{op}").bl_options, op
    obj = boxes_object()
    _segment(runtime, obj)
    _set_granularity(runtime, obj, 1.0)  # the finest pieces
    box2, box3 = list(range(6, 12)), list(range(12, 18))
    labels = _labels(obj)
    n_before = len(np.unique(labels))
    sub(runtime, "partlist").set_selected_parts(obj, _parts_of(obj, box2) | _parts_of(obj, box3))
    assert bpy.ops.segparts.merge_parts() == {"FINISHED"}
    assert len(_parts_of(obj, box2 + box3)) == 1 and len(np.unique(_labels(obj))) < n_before
    merged = _parts_of(obj, box2).pop()
    assert {it.part_id for it in obj.segparts.parts if it.selected} == {merged}
    # rename it; slider away (coarsest) and back: the merge and the name come back
    obj.segparts.active_part = [it.part_id for it in obj.segparts.parts].index(merged)
    assert bpy.ops.segparts.rename_part(name="Wheels") == {"FINISHED"}
    _set_granularity(runtime, obj, 0.0)
    assert len(np.unique(_labels(obj))) == 1
    _set_granularity(runtime, obj, 1.0)
    assert len(_parts_of(obj, box2 + box3)) == 1 and _parts_of(obj, box2) != _parts_of(obj, [0])
    merged = _parts_of(obj, box2).pop()
    assert {it.part_id: it.name for it in obj.segparts.parts}[merged] == "Wheels"
    # Split Part on the merged part: one level finer, the two boxes again
    sub(runtime, "partlist").set_selected_parts(obj, {merged})
    assert bpy.ops.segparts.split_part() == {"FINISHED"}
    assert _parts_of(obj, box2) != _parts_of(obj, box3)
    # Split Part in Edit Mode: the selected faces (half of the second box) become a new part
    import bmesh

    half = [6, 7, 8]
    bpy.ops.object.mode_set(mode="EDIT")
    bm = bmesh.from_edit_mesh(obj.data)
    for f in bm.faces:
        f.select = f.index in half
    bmesh.update_edit_mesh(obj.data)
    assert bpy.ops.segparts.split_part() == {"FINISHED"}
    assert obj.mode == "OBJECT"
    labels = _labels(obj)
    new = int(labels[6])
    assert np.flatnonzero(labels == new).tolist() == half
    _set_granularity(runtime, obj, 0.0)
    _set_granularity(runtime, obj, 1.0)
    labels = _labels(obj)
    assert np.flatnonzero(labels == labels[6]).tolist() == half, "the split survives the slider"
    # the vertex groups and the colours follow the edits
    groups = sub(runtime, "writeback").part_groups(obj)
    assert sorted(groups) == sorted(np.unique(labels).tolist())


# ---- 10. the slider: away and back returns the automatic result; cuts spread evenly ---------------
def test_slider_away_and_back_returns_the_automatic_result(runtime, backend):
    bpy.ops.mesh.primitive_torus_add(major_segments=24, minor_segments=8)
    torus = bpy.context.active_object
    obj = boxes_object()
    bpy.ops.object.select_all(action="SELECT")
    bpy.context.view_layer.objects.active = obj
    bpy.ops.object.join()  # boxes and a torus: parts of several sizes
    _segment(runtime, obj)
    automatic, position = _labels(obj), obj.segparts.granularity
    writeback = sub(runtime, "writeback")
    levels = writeback.slider_levels(obj)
    assert len(levels) >= 3
    for away in (0.0, 1.0):
        _set_granularity(runtime, obj, away)
        _set_granularity(runtime, obj, position)
        assert np.array_equal(_labels(obj), automatic), f"via {away}"
    # every distinct cut of the tree has an equal share of the slider
    seen = {writeback.current_scale(obj, g) for g in np.linspace(0, 1, 4 * len(levels) + 1)}
    assert seen == set(levels.tolist())
    del torus


# ---- 5. mirror modifier: the mirrored half can be picked and maps to the faces it mirrors ---------
def test_pick_on_the_mirrored_half_maps_to_the_original_faces(runtime, backend):
    from mathutils import Vector

    pickview = sub(runtime, "pickview")
    obj = boxes_object(offsets=((3, 0, 0), (6, 0, 0), (3, 4, 0)), with_tris=False)
    obj.modifiers.new("Mirror", "MIRROR")  # mirrored across x = 0: copies at x = -3, -6
    bpy.context.view_layer.update()
    _segment(runtime, obj)
    labels = _labels(obj)
    box2_top = next(p.index for p in obj.data.polygons if p.index // 6 == 1 and p.normal.z > 0.9)
    centre = obj.data.polygons[box2_top].center
    for x in (centre.x, -centre.x):  # the original box and its mirror image
        origin = Vector((x, centre.y, 10.0))
        target = pickview.pick_at_ray(obj, origin, Vector((0, 0, -1)))
        assert target is not None, f"nothing picked at x={x}"
        assert target.polygon == box2_top and target.parts == {int(labels[box2_top])}
    # the hover overlay draws the part on both halves
    tool = pickview.PickTool(obj, "geometric")
    tool.ray.wait()  # the index is built in the background
    tris = tool._world_tris(obj, labels == labels[box2_top])
    assert tris[:, 0].min() < -5 and tris[:, 0].max() > 5
    # a prompt click on the mirrored half goes to the backend as a triangle of the ORIGINAL mesh
    tri, point = tool.ray.original_click(*tool.ray.cast_world(obj, (-centre.x, centre.y, 10.0), (0, 0, -1)))
    _tris, tri_poly = sub(runtime, "mesh_io").triangles(obj.data)
    assert point[0] > 0 and tri_poly[tri] == box2_top


# ---- 9. big meshes: the pick index is built ahead, off the main thread ---------------------------
def test_pick_index_is_built_ahead_and_reused_by_the_tool(runtime, backend):
    pickview = sub(runtime, "pickview")
    obj = boxes_object()
    _segment(runtime, obj)
    built = pickview._rays.get(obj.name)
    assert built is not None, "Segment must start building the pick index"
    tool = pickview.PickTool(obj, "geometric")
    assert tool.ray is built, "the tool must reuse the index built after Segment"
    obj.data.vertices[0].co.x += 0.5  # the geometry changed: a new index
    assert pickview.PickTool(obj, "geometric").ray is not built


# ---- issue 18 item 5: Select Similar (the engine's repetition groups) ---------------------------
def test_select_similar_takes_the_wheels_of_both_cars_from_the_engines_groups(runtime, backend):
    """Two identical cars (a body with four wheels pushed into it, three bolts on each): the engine
    gathers each car's wheels inside its car, and Select Similar on one wheel still selects all
    eight."""
    from test_assemblies import two_cars

    vertices, faces, kind, _ = two_cars()
    wheel_face = kind == 1
    obj = _mesh("TwoCars", vertices.tolist(), faces=faces.tolist())
    _segment(runtime, obj)
    labels = _labels(obj)
    wheels = set(np.unique(labels[wheel_face]).tolist())
    assert len(wheels) == 8 and not wheels & set(labels[~wheel_face].tolist())  # each wheel a part
    first = int(labels[np.flatnonzero(wheel_face)[0]])
    sub(runtime, "partlist").set_selected_parts(obj, {first})
    assert bpy.ops.segparts.select_similar() == {"FINISHED"}
    assert {it.part_id for it in obj.segparts.parts if it.selected} == wheels


def test_select_similar_button_and_pick_key(runtime, backend):
    partedits, writeback = sub(runtime, "partedits"), sub(runtime, "writeback")
    pickview = sub(runtime, "pickview")
    obj = boxes_object()
    _segment(runtime, obj)
    _set_granularity(runtime, obj, 1.0)
    assert bpy.ops.segparts.select_similar() == {"CANCELLED"}, "no groups: nothing to do, said so"
    hierarchy = writeback.load_hierarchy(obj)
    nodes = partedits.active_nodes(hierarchy, writeback.current_scale(obj))
    box2, box3 = int(nodes[6]), int(nodes[12])  # the second and third boxes are "copies"
    obj[writeback.REPEATS_PROP] = [[box2, box3]]
    labels = _labels(obj)
    sub(runtime, "partlist").set_selected_parts(obj, {int(labels[6])})
    assert bpy.ops.segparts.select_similar() == {"FINISHED"}
    assert {it.part_id for it in obj.segparts.parts if it.selected} == {int(labels[6]), int(labels[12])}
    # the pick tool's S key: the part under the mouse and its copies, added to the selection
    sub(runtime, "partlist").set_selected_parts(obj, {int(labels[0])})
    tool = pickview.PickTool(obj, "geometric")
    tool.ray.wait()
    tool.target = tool.picker.target(12)
    assert "2 copies" in tool.select_similar()
    assert {it.part_id for it in obj.segparts.parts if it.selected} == {int(labels[0]), int(labels[6]), int(labels[12])}


def test_pick_index_of_ngons_and_quads_finds_the_polygon(runtime):
    """The index triangulates in the background (numpy fans) or, with larger n-gons, from Blender's
    own triangles read on the main thread; either way a hit names the right polygon."""
    pickview = sub(runtime, "pickview")
    verts = [(0, 0, 0), (2, 0, 0), (2, 1, 0), (1, 1, 0), (1, 2, 0), (0, 2, 0), (3, 0, 0), (3, 1, 0)]
    for faces, probes in (
        ([[2, 3, 4, 5, 0, 1], [1, 6, 7, 2]], {(0.5, 1.5): 0, (2.5, 0.5): 1, (1.5, 1.5): -1}),
        ([[0, 1, 2, 3], [1, 6, 7, 2]], {(1.5, 0.5): 0, (2.5, 0.5): 1}),
    ):
        obj = _mesh("Flat", verts, faces=faces)
        ray = pickview.MeshRay(obj)
        ray.wait()
        for (x, y), poly in probes.items():
            _tri, got, _loc = ray.cast_world(obj, (x, y, 5.0), (0, 0, -1))
            assert got == poly, (faces, x, y, got)
        bpy.data.objects.remove(obj)
