"""The built add-on in headless Blender against a real backend process over real ZeroMQ."""

from __future__ import annotations

import os
import signal
import time
import zipfile

import numpy as np
import pytest

from blender_env import MODULE, bpy, sub
from blender_meshes import boxes_object, components, part_labels as _labels, segment_object as _segment


# ---- packaging and registration --------------------------------------------------------------
def test_zip_carries_wheels_shared_client_and_backend(built_zip):
    with zipfile.ZipFile(built_zip) as zf:
        names = zf.namelist()
    for project in ("pyzmq", "msgpack"):
        wheels = [n.removeprefix("wheels/").split("-") for n in names if n.startswith(f"wheels/{project}-")]
        for minor in (11, 13):  # Blender 4.2-5.0 (Python 3.11) and 5.1+ (3.13)
            # a wheel for exactly that CPython, or a stable-ABI one built for an older CPython 3
            assert any(
                py == f"cp3{minor}" or (abi == "abi3" and int(py[3:]) <= minor)
                for _name, _version, py, abi, *_ in wheels
            ), (project, minor, wheels)
    assert "_shared/client.py" in names and "bundled_backend/pyproject.toml" in names
    assert not any("torch" in n for n in names)


def test_install_enables_and_registers(addon):
    # how long install + enable takes is measured by `segparts bench addon`, not asserted here
    for op in (
        "segment",
        "cancel",
        "pick",
        "assign_material",
        "separate",
        "select_faces",
        "visibility",
        "setup_backend",
        "fetch_models",
        "backend_restart",
        "clear_preview",
        "apply_materials",
    ):
        assert hasattr(bpy.ops.segparts, op), op
        assert bpy.ops.segparts.__getattr__(op).idname() == f"SEGPARTS_OT_{op}"
    assert hasattr(bpy.types, "SEGPARTS_PT_panel") and hasattr(bpy.types, "SEGPARTS_UL_parts")
    assert bpy.types.SEGPARTS_PT_panel.bl_category == "Segment Parts"
    prefs = bpy.context.preferences.addons[MODULE].preferences
    for name in ("python_path", "host", "port", "auto_start", "device", "models_dir"):
        assert hasattr(prefs, name)
    # the add-on never pulls torch or the backend package into Blender
    import sys

    assert "torch" not in sys.modules and "segparts" not in sys.modules


# ---- segmentation and write-back -----------------------------------------------------------------
def test_segment_writes_attribute_groups_and_materials(runtime, backend):
    obj = boxes_object()
    _segment(runtime, obj)
    labels = _labels(obj)
    n_parts = int(labels.max()) + 1
    assert set(np.unique(labels)) == set(range(n_parts)), "part ids must be 0..K-1"
    comp = components(obj)
    assert n_parts >= comp.max() + 1, "each disconnected box must be at least one part"
    for p in range(n_parts):  # a part never spans two disconnected pieces
        assert len(np.unique(comp[labels == p])) == 1
    # vertex groups: Part_### holds every vertex of that part's faces (shared vertices in all)
    me = obj.data
    groups = {vg.name: vg.index for vg in obj.vertex_groups}
    assert sorted(groups) == [f"Part_{p:03d}" for p in range(n_parts)]
    for p in range(n_parts):
        expected = {v for poly in me.polygons if labels[poly.index] == p for v in poly.vertices}
        got = {v.index for v in me.vertices if any(g.group == groups[f"Part_{p:03d}"] for g in v.groups)}
        assert got == expected, p
    # preview materials: one coloured slot per part, faces point at their part's slot
    assert len(me.materials) == n_parts
    idx = np.array([poly.material_index for poly in me.polygons])
    assert np.array_equal(idx, labels)
    colours = {tuple(round(c, 3) for c in m.diffuse_color[:3]) for m in me.materials}
    assert len(colours) == n_parts, "preview colours must differ"
    # the part list mirrors the attribute
    items = obj.segparts.parts
    assert [it.part_id for it in items] == list(range(n_parts))
    assert [it.face_count for it in items] == np.bincount(labels).tolist()
    assert all(
        it.vertex_count == len([v for v in me.vertices if any(g.group == groups[it.name] for g in v.groups)])
        for it in items
    )


def test_segment_starts_the_backend_on_demand(runtime, backend):
    runtime.stop_backend()
    assert runtime.current_session() is None
    obj = boxes_object()
    _segment(runtime, obj)  # the operator starts the backend, then segments once hello answers
    assert runtime.current_session().ready and len(obj.segparts.parts) >= 3


def test_preview_keeps_and_restores_user_materials(runtime, backend):
    obj = boxes_object()
    red, blue = bpy.data.materials.new("Red"), bpy.data.materials.new("Blue")
    obj.data.materials.append(red)
    obj.data.materials.append(blue)
    before = np.arange(len(obj.data.polygons)) % 2
    obj.data.polygons.foreach_set("material_index", before.astype(np.int32))
    _segment(runtime, obj)
    labels = _labels(obj)
    mats = obj.data.materials
    assert mats[0] == red and mats[1] == blue and len(mats) == 2 + labels.max() + 1
    assert np.array_equal([p.material_index for p in obj.data.polygons], labels + 2)
    assert bpy.ops.segparts.clear_preview() == {"FINISHED"}
    assert [m.name for m in obj.data.materials] == ["Red", "Blue"]
    assert np.array_equal([p.material_index for p in obj.data.polygons], before)
    assert "part_id" in obj.data.attributes, "the labels stay when the colours go"


def test_apply_makes_part_materials_permanent(runtime, backend):
    writeback = sub(runtime, "writeback")
    obj = boxes_object()
    obj.data.materials.append(bpy.data.materials.new("Mine"))
    _segment(runtime, obj)
    labels = _labels(obj)
    assert writeback.preview_active(obj)
    assert bpy.ops.segparts.apply_materials() == {"FINISHED"}
    assert not writeback.preview_active(obj) and "segparts_material" not in obj.data.attributes
    assert not bpy.ops.segparts.clear_preview.poll(), "nothing to restore after Apply"
    mats = obj.data.materials
    assert [mats[p.material_index].name for p in obj.data.polygons] == [f"SegParts Part_{p:03d}" for p in labels]


def test_granularity_recuts_stored_hierarchy_without_backend(runtime, backend):
    obj = boxes_object()
    _segment(runtime, obj)
    writeback = sub(runtime, "writeback")
    hierarchy = writeback.load_hierarchy(obj)
    assert hierarchy is not None and hierarchy.n_nodes >= 1
    runtime.shutdown()  # no backend from here on: re-cutting is local
    obj.segparts.granularity = 0.0  # coarsest: the root
    runtime.run_until_idle(timeout=30)
    coarse = _labels(obj)
    assert np.array_equal(coarse, hierarchy.cut(scale=1.0))
    obj.segparts.granularity = 1.0  # finest: the leaves
    runtime.run_until_idle(timeout=30)
    fine = _labels(obj)
    assert np.array_equal(fine, hierarchy.cut(scale=0.0))
    assert fine.max() >= coarse.max()
    assert len(obj.segparts.parts) == fine.max() + 1


# ---- picking -------------------------------------------------------------------------------------
def _ray_to_polygon_centre(obj, poly_index, distance=10.0):

    poly = obj.data.polygons[poly_index]
    target = obj.matrix_world @ poly.center
    normal = (obj.matrix_world.to_3x3() @ poly.normal).normalized()
    origin = target + normal * distance
    return origin, (target - origin).normalized(), target


@pytest.mark.parametrize("subdivided", [False, True])
def test_pick_ray_face_part_follows_original_faces(runtime, backend, subdivided):
    picking, pickview = sub(runtime, "picking"), sub(runtime, "pickview")
    obj = boxes_object()
    obj.location = (1.0, 2.0, 0.5)
    obj.rotation_euler = (0.3, 0.1, 0.7)
    if subdivided:
        obj.modifiers.new("Subdivision", "SUBSURF").levels = 2
    bpy.context.view_layer.update()
    _segment(runtime, obj)
    labels = _labels(obj)
    assert len(labels) == len(obj.data.polygons), "labels belong to the original polygons"
    mw = np.array(obj.matrix_world)
    inv = np.linalg.inv(mw)
    verts = np.array([v.co for v in obj.data.vertices])
    obj.data.calc_loop_triangles()
    tris = np.array([t.vertices for t in obj.data.loop_triangles])
    tri_poly = np.array([t.polygon_index for t in obj.data.loop_triangles])
    for poly_index in (0, 7, len(obj.data.polygons) - 2):  # outer faces (the roof base faces the box)
        origin, direction, _ = _ray_to_polygon_centre(obj, poly_index)
        target = pickview.pick_at_ray(obj, origin, direction)
        assert target is not None and target.polygon == poly_index
        assert target.parts == {int(labels[poly_index])}
        assert np.array_equal(target.mask, labels == labels[poly_index])
        # the pure numpy route (no BVH) finds the same face
        o, d = picking.ray_to_object(np.array(origin), np.array(direction), inv)
        tri, _t = picking.first_hit(o, d, verts[tris])
        assert tri_poly[tri] == poly_index
    # coarser than the current parts: the target covers whole parts
    origin, direction, _ = _ray_to_polygon_centre(obj, 0)
    fine = pickview.pick_at_ray(obj, origin, direction)
    one_up = pickview.pick_at_ray(obj, origin, direction, level=1)
    assert (one_up.mask >= fine.mask).all() and one_up.mask.sum() > fine.mask.sum(), "a level up is strictly coarser"
    assert set(np.unique(labels[one_up.mask])) == one_up.parts  # made of whole parts
    coarse = pickview.pick_at_ray(obj, origin, direction, level=100)  # clamped to the top of the path
    assert coarse.mask.all() and coarse.parts == set(np.unique(labels).tolist())


def _view3d(context):
    for area in context.window.screen.areas:
        if area.type == "VIEW_3D":
            region = next(r for r in area.regions if r.type == "WINDOW")
            return area, region, area.spaces.active.region_3d
    raise AssertionError("no 3D viewport in the factory layout")


def test_pick_tool_hover_click_and_levels_in_the_viewport(runtime, backend):
    """The modal tool's work, minus the modal loop (not invokable in the bpy module): the WINDOW
    region under the mouse, the view ray, the BVH of the drawn mesh mapped to the original faces,
    Shift/Ctrl clicks."""
    from bpy_extras import view3d_utils
    from mathutils import Vector

    pickview = sub(runtime, "pickview")
    obj = boxes_object()
    obj.modifiers.new("Subdivision", "SUBSURF").levels = 1
    _segment(runtime, obj)
    labels = _labels(obj)
    # the factory layout's viewport as it is (rv3d.update() needs a GPU context in background mode)
    area, region, rv3d = _view3d(bpy.context)

    def mouse_at(world):
        x, y = view3d_utils.location_3d_to_region_2d(region, rv3d, Vector(world))
        return int(round(x)) + region.x, int(round(y)) + region.y

    tool = pickview.PickTool(obj, "geometric")
    tool.ray.wait()  # the index is built in the background
    top_of_box2, top_of_box3 = 6 + 5, 12 + 5  # the +Z quads of the 2nd and 3rd boxes
    # the rays go to the drawn (subdivided, slightly shrunk) surface: aim just under the top centres
    target = tool.hover(bpy.context, *mouse_at((4.0, 0.0, 0.45)))
    assert target is not None and target.polygon == top_of_box2
    assert target.parts == {int(labels[top_of_box2])}
    tool.click(shift=False, ctrl=False)
    selected = lambda: {it.part_id for it in obj.segparts.parts if it.selected}  # noqa: E731
    assert selected() == {int(labels[top_of_box2])}
    tool.hover(bpy.context, *mouse_at((0.0, 5.0, 0.6)))
    tool.click(shift=True, ctrl=False)
    assert selected() == {int(labels[top_of_box2]), int(labels[top_of_box3])}
    tool.click(shift=False, ctrl=True)
    assert selected() == {int(labels[top_of_box2])}
    tool.change_level(+10)  # up to the root: every part
    assert tool.target.mask.all() and tool.target.parts == set(np.unique(labels).tolist())
    # over empty space nothing is targeted; over the sidebar/toolbar neither
    assert tool.hover(bpy.context, *mouse_at((2.0, -4.0, -2.0))) is None
    tools = next(r for r in area.regions if r.type == "TOOLS")
    assert tool.hover(bpy.context, tools.x + 5, tools.y + tools.height // 2) is None
    # coarsest cut (one part), then one level finer under the mouse: a click splits that piece off
    obj.segparts.granularity = 0.0
    runtime.run_until_idle(timeout=30)
    assert len(obj.segparts.parts) == 1
    target = tool.hover(bpy.context, *mouse_at((4.0, 0.0, 0.45)))
    assert target.parts == {0} and target.mask.all()
    tool.change_level(-1)
    finer = tool.target
    assert finer.level == -1 and finer.mask[top_of_box2] and not finer.mask.all()
    tool.click(shift=False, ctrl=False)
    labels = _labels(obj)
    new = int(labels[top_of_box2])
    assert set(np.unique(labels)) == {0, 1} and np.array_equal(labels == new, finer.mask)
    assert selected() == {new}
    overlay = tool._world_tris(obj, labels == new)
    # drawn on the subdivided surface: 4 quads (8 triangles) per original quad of the part
    original_tris = int(sum(len(p.vertices) - 2 for p in obj.data.polygons if labels[p.index] == new))
    assert overlay.shape == (3 * int((labels[tool.ray.tri_poly] == new).sum()), 3)
    assert overlay.shape[0] >= 3 * 4 * original_tris
    obj.segparts.granularity = 0.5  # the split is in the hierarchy: it comes back with the slider
    runtime.run_until_idle(timeout=30)
    obj.segparts.granularity = 0.0
    runtime.run_until_idle(timeout=30)
    assert np.array_equal(_labels(obj) == _labels(obj)[top_of_box2], finer.mask)


def test_prompt_clicks_round_trip_and_unavailable_engine(runtime, backend):
    """GeoSAM2-style prompts: a click goes to the backend as (triangle, point, positive); the mask
    that comes back becomes a new, selected part. Without GeoSAM2's weights the panel says why."""
    pickview = sub(runtime, "pickview")
    obj = boxes_object()
    _segment(runtime, obj)
    before = _labels(obj)
    area, region, rv3d = _view3d(bpy.context)
    from bpy_extras import view3d_utils
    from mathutils import Vector

    x, y = view3d_utils.location_3d_to_region_2d(region, rv3d, Vector((4.0, 0.0, 0.6)))
    tool = pickview.PickTool(obj, "geosam2", sub(runtime, "results").start_pick)
    tool.ray.wait()  # the index is built in the background
    assert tool.hover(bpy.context, int(x) + region.x, int(y) + region.y) is not None
    text = tool.click(shift=False, ctrl=False)
    assert "click sent" in text
    runtime.run_until_idle(timeout=30)
    status = runtime.engine_status()["geosam2"]
    if not status["available"]:
        assert "unavailable" in runtime.message() or "missing" in runtime.message(), runtime.message()
        assert np.array_equal(_labels(obj), before)
    # the same prompt path answered by an engine that is always there
    tool.engine = "geometric"
    assert tool.prompt_mode
    assert "click sent" in tool.click(shift=False, ctrl=False)
    runtime.run_until_idle(timeout=30)
    after = _labels(obj)
    new_id = int(after.max())
    assert new_id == int(before.max()) + 1 and after[6 + 5] == new_id
    assert {it.part_id for it in obj.segparts.parts if it.selected} == {new_id}


class _Recorder:
    """Stands in for bpy's UILayout (not creatable outside a drawn region) and checks that every
    property and operator the panel names exists."""

    def __init__(self, log):
        self.log = log

    def __getattr__(self, name):
        if name in ("row", "column", "box", "split"):
            return lambda *a, **k: _Recorder(self.log)
        return lambda *a, **k: self.log.append((name, a, k))

    def __setattr__(self, name, value):
        if name == "log":
            object.__setattr__(self, name, value)

    def prop(self, data, name, **kw):
        assert name in data.bl_rna.properties, f"{type(data).__name__} has no property {name!r}"
        self.log.append(("prop", name))

    def operator(self, idname, **kw):
        group, name = idname.split(".")
        op = getattr(getattr(bpy.ops, group), name)
        props = op.get_rna_type().properties
        log = self.log
        log.append(("operator", idname))

        class Props:
            def __setattr__(self, key, value):
                assert key in props, f"{idname} has no property {key!r}"

        return Props()

    def template_list(self, listtype, list_id, data, prop, active_data, active_prop, **kw):
        assert hasattr(bpy.types, listtype)
        assert prop in data.bl_rna.properties and active_prop in active_data.bl_rna.properties
        self.log.append(("template_list", prop))


def test_panel_and_list_draw_without_errors(runtime, backend):
    obj = boxes_object()
    panel_cls, list_cls = bpy.types.SEGPARTS_PT_panel, bpy.types.SEGPARTS_UL_parts

    def draw_panel():
        log = []
        fake = type("P", (), {"layout": _Recorder(log)})()
        panel_cls.draw(fake, bpy.context)
        return log

    before = draw_panel()
    assert ("operator", "segparts.segment") in before
    s = runtime.current_session()
    s.warning = "Backend 9.9.9 differs from the add-on"  # what hello's version check leaves
    try:
        warned = draw_panel()
    finally:
        s.warning = ""
    shown = " ".join(str(entry[2].get("text", "")) for entry in warned if entry[0] == "label")
    assert "9.9.9" in shown and "9.9.9" not in " ".join(str(entry) for entry in before)
    _segment(runtime, obj)
    after = draw_panel()
    for needed in [
        ("template_list", "parts"),
        ("prop", "granularity"),
        ("operator", "segparts.pick"),
        ("operator", "segparts.separate"),
        ("operator", "segparts.assign_material"),
    ]:
        assert needed in after, needed
    log = []
    item = obj.segparts.parts[0]
    list_cls.draw_item(None, bpy.context, _Recorder(log), obj.segparts, item, 0, obj.segparts, "active_part", 0)
    assert ("prop", "color") in log and ("operator", "segparts.part_select") in log
    prefs = bpy.context.preferences.addons[MODULE].preferences
    log = []

    class PrefsWithLayout:  # the real preferences, plus a layout to draw into
        layout = _Recorder(log)

        def __getattr__(self, name):
            return getattr(prefs, name)

    type(prefs).draw(PrefsWithLayout(), bpy.context)
    assert ("operator", "segparts.setup_backend") in log and ("prop", "python_path") in log
    assert ("operator", "segparts.fetch_models") in log  # per engine that needs models (from hello)


def test_concave_ngon_triangles_stay_inside_and_map_to_it(runtime, backend):
    """An L-shaped hexagon: a fan from its first corner would leave the polygon, Blender's own
    triangulation does not; labels still come back per polygon."""
    mesh_io = sub(runtime, "mesh_io")
    verts = [(0, 0, 0), (2, 0, 0), (2, 1, 0), (1, 1, 0), (1, 2, 0), (0, 2, 0)]
    order = [2, 3, 4, 5, 0, 1]  # start at the corner a fan would get wrong
    mesh = bpy.data.meshes.new("L")
    mesh.from_pydata(verts, [], [order, [0, 1, 2]])  # plus a triangle on top: mixed sizes
    tris, tri_poly = mesh_io.triangles(mesh)
    assert len(tris) == 4 + 1 and np.bincount(tri_poly).tolist() == [4, 1]
    v = np.array(verts, dtype=float)
    centroids = v[tris[tri_poly == 0]].mean(axis=1)
    assert not ((centroids[:, 0] > 1) & (centroids[:, 1] > 1)).any(), "a triangle left the L shape"


# ---- editing -------------------------------------------------------------------------------------
def test_assign_material_and_separate(runtime, backend):
    obj = boxes_object()
    _segment(runtime, obj)
    labels = _labels(obj)
    n_parts = int(labels.max()) + 1
    assert n_parts >= 2
    part = int(labels[-1])
    sub(runtime, "partlist").set_selected_parts(obj, {part})
    gold = bpy.data.materials.new("Gold")
    assert bpy.ops.segparts.assign_material(material="Gold") == {"FINISHED"}
    mats = obj.data.materials
    idx = np.array([p.material_index for p in obj.data.polygons])
    assert all(mats[i] == gold for i in idx[labels == part])
    assert not any(mats[i] == gold for i in idx[labels != part])
    # the assignment survives clearing the preview
    bpy.ops.segparts.clear_preview()
    idx = np.array([p.material_index for p in obj.data.polygons])
    assert all(obj.data.materials[i] == gold for i in idx[labels == part])
    # separate the part: a new object at the part's centre, with its material
    part_verts = {v for poly in obj.data.polygons if labels[poly.index] == part for v in poly.vertices}
    centre_world = np.mean([np.array(obj.matrix_world @ obj.data.vertices[v].co) for v in part_verts], axis=0)
    n_faces = int((labels == part).sum())
    sub(runtime, "partlist").set_selected_parts(obj, {part})
    assert bpy.ops.segparts.separate() == {"FINISHED"}
    new = [o for o in bpy.data.objects if o != obj]
    assert len(new) == 1
    new = new[0]
    assert len(new.data.polygons) == n_faces
    assert len(obj.data.polygons) == len(labels) - n_faces
    assert gold in list(new.data.materials)
    assert not any(m.name.startswith("SegParts ") for m in new.data.materials if m)
    origin = np.array(new.matrix_world.translation)
    assert np.linalg.norm(origin - centre_world) < 0.5, (origin, centre_world)
    world = np.array([new.matrix_world @ v.co for v in new.data.vertices])
    assert abs(world.mean(axis=0) - centre_world).max() < 1e-4, "separating must not move the geometry"
    assert part not in {it.part_id for it in obj.segparts.parts}


def test_select_faces_hide_and_isolate(runtime, backend):
    editing, writeback = sub(runtime, "editing"), sub(runtime, "writeback")
    obj = boxes_object()
    _segment(runtime, obj)
    labels = _labels(obj)
    part = int(labels[0])
    sub(runtime, "partlist").set_selected_parts(obj, {part})
    assert bpy.ops.segparts.visibility(action="ISOLATE") == {"FINISHED"}
    deps = bpy.context.evaluated_depsgraph_get()
    shown = len(obj.evaluated_get(deps).data.polygons)
    assert shown == int((labels == part).sum())
    assert bpy.ops.segparts.visibility(action="REVEAL") == {"FINISHED"}
    deps = bpy.context.evaluated_depsgraph_get()
    assert len(obj.evaluated_get(deps).data.polygons) == len(labels)
    assert writeback.VISIBILITY_MODIFIER not in obj.modifiers
    n = editing.select_faces(bpy.context, obj, [part], edit_mode=False)
    assert n == int((labels == part).sum())
    sel = np.array([p.select for p in obj.data.polygons])
    assert np.array_equal(sel, labels == part)
    # the operator: Edit Mode, face select, exactly the part's faces selected
    import bmesh

    sub(runtime, "partlist").set_selected_parts(obj, {part})
    assert bpy.ops.segparts.select_faces() == {"FINISHED"}
    assert obj.mode == "EDIT"
    bm = bmesh.from_edit_mesh(obj.data)
    assert np.array_equal([f.select for f in bm.faces], labels == part)
    bpy.ops.object.mode_set(mode="OBJECT")


# ---- failures ------------------------------------------------------------------------------------
def test_backend_killed_mid_job_gives_clear_error_without_hanging(runtime, backend):
    bpy.ops.mesh.primitive_uv_sphere_add(segments=256, ring_count=128)
    obj = bpy.context.active_object
    bpy.context.scene.segparts_engine = "geometric"
    assert bpy.ops.segparts.segment() == {"FINISHED"}
    job = runtime.object_jobs[obj.name]
    pid = backend.process.proc.pid
    deadline = time.monotonic() + 30
    while job.job_id is None and job.active and time.monotonic() < deadline:
        runtime.drain()
        time.sleep(0.001)
    assert job.active, f"the job ended before the kill: {job.state}"
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    runtime.run_until_idle(timeout=15)  # raises if anything hangs
    assert time.monotonic() - t0 < 10
    assert job.state == "error"
    assert backend.state == "error" and "Restart" in backend.message, backend.message
    assert "part_id" not in obj.data.attributes
    assert obj.name in runtime.message()
    # the panel offers a restart, and a restart works
    assert bpy.ops.segparts.backend_start() == {"FINISHED"}
    runtime.run_until_idle(timeout=60)
    assert runtime.current_session().ready, runtime.current_session().message


# ---- lifecycle (keep last: it disables and re-enables the add-on) ---------------------------------
def test_disabling_the_addon_stops_its_backend(runtime, backend):
    proc = backend.process.proc
    assert proc.poll() is None
    bpy.ops.preferences.addon_disable(module=MODULE)
    deadline = time.monotonic() + 10
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is not None, "unregister must stop the backend process it started"
    assert not bpy.app.timers.is_registered(runtime.drain)
    assert runtime.on_load_pre not in bpy.app.handlers.load_pre
    bpy.ops.preferences.addon_enable(module=MODULE)
    assert MODULE in bpy.context.preferences.addons
