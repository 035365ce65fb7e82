"""The add-on sends the artist's part cues with the mesh: the user's own materials (never the
preview's) and sculpt face sets, as per-triangle arrays that belong to the mesh id."""

from __future__ import annotations

import numpy as np

from blender_env import bpy, sub
from blender_meshes import boxes_object


def expected_marks(triangles, marked_edges: set) -> np.ndarray:
    """(T, 3) bool, by walking every triangle: whether its edge k (corners k, k+1) is one of
    `marked_edges` (sorted vertex pairs)."""
    return np.array(
        [[tuple(sorted((int(t[k]), int(t[(k + 1) % 3])))) in marked_edges for k in range(3)] for t in triangles],
        dtype=bool,
    ).reshape(-1, 3)


def test_user_materials_and_face_sets_reach_the_backend(runtime, backend):
    obj = boxes_object()
    obj.data.materials.append(bpy.data.materials.new("Red"))
    obj.data.materials.append(bpy.data.materials.new("Blue"))
    n = len(obj.data.polygons)
    user = (np.arange(n) % 3 == 0).astype(np.int32)
    obj.data.polygons.foreach_set("material_index", user)
    face_sets = obj.data.attributes.new(".sculpt_face_set", "INT", "FACE")
    sets = (np.arange(n) // 4 + 1).astype(np.int32)
    face_sets.data.foreach_set("value", sets)
    mesh_io, client = sub(runtime, "mesh_io"), sub(runtime, "_shared.client")

    arrays = mesh_io.mesh_arrays(obj)
    np.testing.assert_array_equal(arrays.cues["material"], user[arrays.tri_poly])
    np.testing.assert_array_equal(arrays.cues["group"], sets[arrays.tri_poly])
    wire = arrays.wire_arrays()
    assert wire["material"].dtype == np.dtype("<i4") and len(wire["material"]) == len(arrays.faces)

    bpy.context.view_layer.objects.active = obj
    assert bpy.ops.segparts.segment() == {"FINISHED"}
    runtime.run_until_idle(timeout=60)
    assert "part_id" in obj.data.attributes, runtime.message()
    # the backend computed the same id as the add-on, which covers the cues: they went over the wire
    assert obj.segparts.mesh_id == client.mesh_id(arrays.vertices, arrays.faces, arrays.cues)
    assert obj.segparts.mesh_id != client.mesh_id(arrays.vertices, arrays.faces)

    # with the part preview on, the faces point at preview slots; the cue stays the user's material
    assert len(obj.data.materials) > 2
    again = mesh_io.mesh_arrays(obj)
    np.testing.assert_array_equal(again.cues["material"], user[again.tri_poly])


def test_one_material_and_no_face_sets_send_geometry_only(runtime, backend):
    obj = boxes_object()
    obj.data.materials.append(bpy.data.materials.new("Only"))
    assert sub(runtime, "mesh_io").mesh_arrays(obj).cues == {}


def test_sharp_edges_and_seams_reach_the_backend_as_marked_triangle_edges(runtime, backend):
    obj = boxes_object()
    obj.scale = (-1.0, 1.0, 1.0)  # a mirror: the add-on flips the triangles' corners
    bpy.context.view_layer.update()  # matrix_world follows
    mesh = obj.data
    n_edges = len(mesh.edges)
    sharp = np.arange(n_edges) % 5 == 0
    seam = np.arange(n_edges) % 7 == 3
    mesh.attributes.new("sharp_edge", "BOOLEAN", "EDGE").data.foreach_set("value", sharp)
    mesh.attributes.new("uv_seam", "BOOLEAN", "EDGE").data.foreach_set("value", seam)
    mesh_io, client = sub(runtime, "mesh_io"), sub(runtime, "_shared.client")

    arrays = mesh_io.mesh_arrays(obj)
    marked = {tuple(sorted(e.vertices)) for e, m in zip(mesh.edges, sharp | seam) if m}
    expected = expected_marks(arrays.faces, marked)
    np.testing.assert_array_equal(arrays.cues["marked_edges"], expected)
    assert expected.sum() >= len(marked)  # every marked edge is on a triangle
    assert arrays.wire_arrays()["marked_edges"].dtype == np.uint8

    bpy.context.view_layer.objects.active = obj
    assert bpy.ops.segparts.segment() == {"FINISHED"}
    runtime.run_until_idle(timeout=60)
    assert "part_id" in mesh.attributes, runtime.message()
    # the backend's id covers the marks: they went over the wire
    assert obj.segparts.mesh_id == client.mesh_id(arrays.vertices, arrays.faces, arrays.cues)
    assert obj.segparts.mesh_id != client.mesh_id(arrays.vertices, arrays.faces)


def test_uv_island_borders_are_marked_as_blenders_seams_from_islands_finds_them(runtime):
    bpy.ops.mesh.primitive_monkey_add()  # UV-mapped, no seam marked
    obj = bpy.context.object
    mesh_io = sub(runtime, "mesh_io")
    marked = mesh_io.mesh_arrays(obj).cues["marked_edges"]

    bpy.ops.object.mode_set(mode="EDIT")
    bpy.ops.mesh.select_all(action="SELECT")
    assert bpy.ops.uv.seams_from_islands() == {"FINISHED"}
    bpy.ops.object.mode_set(mode="OBJECT")
    seams = {tuple(sorted(e.vertices)) for e in obj.data.edges if e.use_seam}
    arrays = mesh_io.mesh_arrays(obj)  # now with the seams marked too: the same edges
    np.testing.assert_array_equal(arrays.cues["marked_edges"], marked)
    np.testing.assert_array_equal(marked, expected_marks(arrays.faces, seams))
    assert len(seams) > 10


def test_marks_are_sent_exactly_when_the_engine_would_use_them(runtime):
    """The add-on leaves the marks out by the engine's own rule (share of triangle edges): 60% of
    a quad grid's edges marked is under half of its triangles' edges (diagonals are never
    marked), so they go; every edge marked is over half, so they don't."""
    from segparts.engines.geometric.segmenter import MOSTLY_MARKED

    bpy.ops.mesh.primitive_grid_add(x_subdivisions=12, y_subdivisions=12)
    obj = bpy.context.object
    mesh = obj.data
    mesh.uv_layers.remove(mesh.uv_layers.active)  # the grid's UV map: no island borders
    mesh_io = sub(runtime, "mesh_io")
    assert mesh_io.MOSTLY_MARKED == MOSTLY_MARKED, "the add-on keeps a copy of the engine's rule"
    n_edges = len(mesh.edges)
    sharp = mesh.attributes.new("sharp_edge", "BOOLEAN", "EDGE")
    for share in (0.6, 1.0):
        marks = np.random.default_rng(0).random(n_edges) < share
        sharp.data.foreach_set("value", marks)
        arrays = mesh_io.mesh_arrays(obj)
        marked = {tuple(sorted(e.vertices)) for e, m in zip(mesh.edges, marks) if m}
        expected = expected_marks(arrays.faces, marked)
        assert ("marked_edges" in arrays.cues) == (expected.mean() <= MOSTLY_MARKED), share
        if share < 1:
            np.testing.assert_array_equal(arrays.cues["marked_edges"], expected)
