"""numpy <-> Blender mesh, with foreach_get/foreach_set only (no Python loop per element)."""
from __future__ import annotations

import numpy as np

from .jobs import MeshArrays


def _get(collection, attr: str, count: int, dtype, width: int = 1) -> np.ndarray:
    out = np.empty(count * width, dtype=dtype)
    collection.foreach_get(attr, out)
    return out.reshape(-1, width) if width > 1 else out


def vertices(mesh) -> np.ndarray:
    return _get(mesh.vertices, "co", len(mesh.vertices), np.float32, 3).astype(np.float64)


def triangles(mesh) -> tuple[np.ndarray, np.ndarray]:
    """(T,3) vertex indices and (T,) polygon index of the mesh's loop triangles."""
    mesh.calc_loop_triangles()
    n = len(mesh.loop_triangles)
    tris = _get(mesh.loop_triangles, "vertices", n, np.int32, 3)
    tri_poly = _get(mesh.loop_triangles, "polygon_index", n, np.int32)
    return tris, tri_poly


def mesh_arrays(obj) -> MeshArrays:
    """The ORIGINAL mesh of `obj` (modifiers not applied), triangulated, in object space.

    Labels come back per triangle and are mapped to these polygons; with modifiers the evaluated
    mesh has other faces, which is why we never send it."""
    mesh = obj.data
    if obj.mode == "EDIT":
        obj.update_from_editmode()
    tris, tri_poly = triangles(mesh)
    if len(tris) == 0:
        raise ValueError(f"{obj.name!r} has no faces to segment")
    return MeshArrays(vertices(mesh), tris, tri_poly, len(mesh.polygons))


def loops(mesh) -> tuple[np.ndarray, np.ndarray]:
    """(loop vertex indices, loop_total per polygon) — enough to go from polygons to vertices."""
    loop_vertex = _get(mesh.loops, "vertex_index", len(mesh.loops), np.int32)
    loop_total = _get(mesh.polygons, "loop_total", len(mesh.polygons), np.int32)
    return loop_vertex, loop_total


def loop_edges(mesh) -> np.ndarray:
    return _get(mesh.loops, "edge_index", len(mesh.loops), np.int32)


def polygon_centres_areas(mesh) -> tuple[np.ndarray, np.ndarray]:
    n = len(mesh.polygons)
    return _get(mesh.polygons, "center", n, np.float32, 3).astype(np.float64), _get(mesh.polygons, "area", n, np.float32)


def material_indices(mesh) -> np.ndarray:
    return _get(mesh.polygons, "material_index", len(mesh.polygons), np.int32)


def set_material_indices(mesh, indices: np.ndarray) -> None:
    mesh.polygons.foreach_set("material_index", np.ascontiguousarray(indices, dtype=np.int32))


def read_int_attribute(mesh, name: str) -> np.ndarray | None:
    attr = mesh.attributes.get(name)
    if attr is None or attr.domain != "FACE" or attr.data_type != "INT":
        return None
    return _get(attr.data, "value", len(mesh.polygons), np.int32)


def write_face_attribute(mesh, name: str, values: np.ndarray, data_type: str = "INT") -> None:
    """Create or overwrite a face attribute (replacing one of another type or domain)."""
    attr = mesh.attributes.get(name)
    if attr is not None and (attr.domain != "FACE" or attr.data_type != data_type):
        mesh.attributes.remove(attr)
        attr = None
    if attr is None:
        attr = mesh.attributes.new(name, data_type, "FACE")
    dtype = np.int32 if data_type == "INT" else bool
    attr.data.foreach_set("value", np.ascontiguousarray(values, dtype=dtype))


def remove_attribute(mesh, name: str) -> None:
    attr = mesh.attributes.get(name)
    if attr is not None:
        mesh.attributes.remove(attr)


_SELECT_ATTRS = {".select_vert": "POINT", ".select_edge": "EDGE", ".select_poly": "FACE"}


def _repair_select_attributes(mesh) -> None:
    """Blender 5.0.1's `from_pydata` leaves `.select_edge` as an INT32_2D attribute, and writing
    edge selection then crashes Blender: replace such attributes with proper booleans."""
    for name, domain in _SELECT_ATTRS.items():
        attr = mesh.attributes.get(name)
        if attr is not None and (attr.data_type != "BOOLEAN" or attr.domain != domain):
            mesh.attributes.remove(attr)
            mesh.attributes.new(name, "BOOLEAN", domain)


def set_selection(mesh, poly_mask: np.ndarray) -> None:
    """Select exactly the given polygons (and their edges and vertices), in Object Mode."""
    _repair_select_attributes(mesh)
    poly_mask = np.asarray(poly_mask, dtype=bool)
    loop_vertex, loop_total = loops(mesh)
    loop_sel = np.repeat(poly_mask, loop_total)
    vert_sel = np.zeros(len(mesh.vertices), dtype=bool)
    vert_sel[loop_vertex[loop_sel]] = True
    edge_sel = np.zeros(len(mesh.edges), dtype=bool)
    edge_sel[loop_edges(mesh)[loop_sel]] = True
    mesh.vertices.foreach_set("select", vert_sel)
    mesh.edges.foreach_set("select", edge_sel)
    mesh.polygons.foreach_set("select", poly_mask)
