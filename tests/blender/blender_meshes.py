"""Small meshes made here (not benchmark data): quads and triangles in one object; and the two
steps every Blender test repeats (Segment an object, read its part labels)."""

from __future__ import annotations

import bpy
import numpy as np

CUBE_V = np.array([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64)
CUBE_Q = np.array([[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]])


def boxes_object(name="Boxes", offsets=((0, 0, 0), (4, 0, 0), (0, 5, 0)), sizes=(1.0, 0.6, 0.8), with_tris=True):
    """Disconnected boxes (quads) plus, optionally, a triangle fan 'roof' on the first: a mesh
    whose parts are known to be separate pieces, with polygons of 3 and 4 corners."""
    verts, faces = [], []
    for off, size in zip(offsets, sizes):
        base = len(verts)
        verts.extend((CUBE_V * size + np.asarray(off)).tolist())
        faces.extend((CUBE_Q + base).tolist())
    if with_tris:
        base = len(verts)
        apex = len(verts) + 4
        ring = [[-1, -1, 1.6], [1, -1, 1.6], [1, 1, 1.6], [-1, 1, 1.6]]
        verts.extend(ring + [[0, 0, 2.6]])
        faces.extend([[base + i, base + (i + 1) % 4, apex] for i in range(4)])
        faces.append([base + 3, base + 2, base + 1, base])
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(verts, [], faces)
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)
    return obj


def components(obj) -> np.ndarray:
    """Connected component of every polygon (reference for checks, via scipy)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    me = obj.data
    n_loops = len(me.loops)
    lv = np.empty(n_loops, dtype=np.int64)
    me.loops.foreach_get("vertex_index", lv)
    lt = np.empty(len(me.polygons), dtype=np.int64)
    me.polygons.foreach_get("loop_total", lt)
    lp = np.repeat(np.arange(len(me.polygons)), lt)
    n_v, n_p = len(me.vertices), len(me.polygons)
    g = coo_matrix((np.ones(n_loops), (lp, lv + n_p)), shape=(n_p + n_v, n_p + n_v))
    _, comp = connected_components(g, directed=False)
    return comp[:n_p]


def part_labels(obj) -> np.ndarray:
    """The `part_id` face attribute the add-on wrote (one label per polygon)."""
    out = np.empty(len(obj.data.polygons), dtype=np.int32)
    obj.data.attributes["part_id"].data.foreach_get("value", out)
    return out


def segment_object(runtime, obj, engine="geometric"):
    """Press Segment on `obj` and drive the add-on's timer until the result is written."""
    bpy.context.view_layer.objects.active = obj
    bpy.context.scene.segparts_engine = engine
    assert bpy.ops.segparts.segment() == {"FINISHED"}
    runtime.run_until_idle(timeout=60)
    assert "part_id" in obj.data.attributes, runtime.message()
