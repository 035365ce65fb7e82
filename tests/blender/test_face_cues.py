"""The add-on sends the artist's part cues with the mesh: the user's own materials (never the
preview's) and sculpt face sets, as per-triangle arrays that belong to the mesh id."""

from __future__ import annotations

import numpy as np

from blender_env import bpy, sub
from blender_meshes import boxes_object


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
