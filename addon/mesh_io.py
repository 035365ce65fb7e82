"""numpy <-> Blender mesh, with foreach_get/foreach_set only (no Python loop per element)."""

from __future__ import annotations

import numpy as np

from . import appearance, orientation
from .jobs import MeshArrays
from .partdata import Topology, fan_triangles, marked_triangle_edges, uv_cut_edges

# the user's own per-face material indices while the part preview shows (see writeback.py)
SAVED_MATERIAL_ATTR = "segparts_material"
FACE_SET_ATTR = ".sculpt_face_set"  # sculpt-mode face sets, when the user made some
MARKED_EDGE_ATTRS = ("sharp_edge", "uv_seam")  # Edge > Mark Sharp, Mark Seam
MOSTLY_MARKED = 0.5  # marks on more than this share of the triangle edges say nothing (the engine's rule)


def _get(collection, attr: str, count: int, dtype, width: int = 1) -> np.ndarray:
    out = np.empty(count * width, dtype=dtype)
    collection.foreach_get(attr, out)
    return out.reshape(-1, width) if width > 1 else out


def _attr_get(mesh, name: str, count: int, dtype, prop: str = "value", width: int = 1) -> np.ndarray:
    """Read a (possibly internal, dot-named) attribute through its fast contiguous path."""
    return _get(mesh.attributes[name].data, prop, count, dtype, width)


def vertices(mesh) -> np.ndarray:
    # the `position` attribute is ~100x faster than vertices.foreach_get("co") on big meshes
    return _attr_get(mesh, "position", len(mesh.vertices), np.float32, "vector", 3).astype(np.float64)


def corner_verts(mesh) -> np.ndarray:
    return _attr_get(mesh, ".corner_vert", len(mesh.loops), np.int32)


def corner_edges(mesh) -> np.ndarray:
    return _attr_get(mesh, ".corner_edge", len(mesh.loops), np.int32)


def loop_totals(mesh) -> np.ndarray:
    """Corners per polygon (from the polygon offsets)."""
    starts = _get(mesh.polygons, "loop_start", len(mesh.polygons), np.int32)
    return np.diff(np.append(starts, len(mesh.loops))).astype(np.int32)


def loops(mesh) -> tuple[np.ndarray, np.ndarray]:
    """(corner vertex indices, corners per polygon): enough to go from polygons to vertices."""
    return corner_verts(mesh), loop_totals(mesh)


def topology(mesh) -> Topology:
    return Topology(corner_verts(mesh), loop_totals(mesh), len(mesh.vertices))


def triangles(mesh, topo: Topology | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(T,3) vertex indices and (T,) polygon of each triangle of the polygons.

    Triangles and quads are fan-split with numpy from the corner arrays (reading Blender's
    loop_triangles goes through a per-item path: ~1 s per million triangles). A mesh with larger
    n-gons, which may be concave, uses Blender's own loop triangles, which are always inside
    their polygon. Labels are reported per polygon either way."""
    topo = topo or topology(mesh)
    if topo.loop_total.size == 0 or topo.loop_total.max() <= 4:
        return fan_triangles(topo.corner_verts, topo.loop_total)
    mesh.calc_loop_triangles()
    n = len(mesh.loop_triangles)
    tris = _get(mesh.loop_triangles, "vertices", n, np.int32, 3)
    # loop_triangle_polygons has a fast path (loop_triangles' polygon_index does not)
    tri_poly = _get(mesh.loop_triangle_polygons, "value", n, np.int32)
    return tris, tri_poly


def mesh_arrays(obj, normals: bool = False) -> MeshArrays:
    """The ORIGINAL mesh of `obj` (modifiers not applied), triangulated, in world orientation
    (the object's rotation and scale applied, see orientation.py), with its authoring cues and
    what the user sees (appearance.py); with `normals`, its shading normals per triangle corner
    too (flat/smooth faces, sharp edges and custom normals as the viewport shows them), for the
    engines that render the mesh. The edges the artist marked sharp or as a UV seam, and the
    borders of the active UV map's islands, go as the `marked_edges` cue (per triangle edge).

    Labels come back per triangle and are mapped to these polygons; with modifiers the evaluated
    mesh has other faces, which is why we never send it."""
    mesh = obj.data
    if obj.mode == "EDIT":
        obj.update_from_editmode()
    if len(mesh.polygons) == 0:  # no corner arrays exist then either
        raise ValueError(f"{obj.name}: no faces to segment")
    topo = topology(mesh)
    tris, tri_poly = triangles(mesh, topo)
    if len(tris) == 0:
        raise ValueError(f"{obj.name!r} has no faces to segment")
    cues = {name: values[tri_poly] for name, values in authoring_cues(mesh).items()}
    looks = appearance.surface_arrays(obj, topo, tri_poly)
    if normals:
        looks["normals"] = appearance.corner_normals(mesh, appearance.triangle_loops(mesh, topo))
    world, tris, looks = orientation.to_world(vertices(mesh), tris, looks, orientation.linear_part(obj.matrix_world))
    marked = marked_edge_verts(mesh, topo)
    if marked is not None:  # from the final triangles: a mirroring transform reorders their corners
        per_triangle = marked_triangle_edges(tris, marked)
        if per_triangle.mean() <= MOSTLY_MARKED:  # else e.g. a UV map cut at every edge: no cue
            cues["marked_edges"] = per_triangle
    return MeshArrays(world, tris, tri_poly, len(mesh.polygons), topo, cues, looks)


def authoring_cues(mesh) -> dict[str, np.ndarray]:
    """Per-polygon part cues the artist already made: the user's material of each face (not the
    add-on's preview materials) and the sculpt face sets. A cue with one value says nothing and
    is left out, so single-material meshes keep their geometry-only mesh id."""
    material = read_int_attribute(mesh, SAVED_MATERIAL_ATTR)
    if material is None:
        material = material_indices(mesh)
    cues = {"material": material, "group": read_int_attribute(mesh, FACE_SET_ATTR)}
    return {
        name: np.maximum(values, 0)
        for name, values in cues.items()  # Blender allows negative face sets
        if values is not None and values.size and values.min() != values.max()
    }


def marked_edge_verts(mesh, topo: Topology) -> np.ndarray | None:
    """(M, 2) vertex pairs of the edges the artist marked sharp or as a UV seam, and of the borders
    of the active UV map's islands; None when there is none."""
    n = len(mesh.edges)
    marked = np.zeros(n, dtype=bool)
    for name in MARKED_EDGE_ATTRS:
        attr = mesh.attributes.get(name)
        if attr is not None and attr.domain == "EDGE" and attr.data_type == "BOOLEAN":
            marked |= _attr_get(mesh, name, n, bool)
    layer = mesh.uv_layers.active
    if layer is not None:
        uv = _attr_get(mesh, layer.name, len(mesh.loops), np.float32, "vector", 2)
        marked |= uv_cut_edges(topo, corner_edges(mesh), uv, n)
    if not marked.any():
        return None
    return _attr_get(mesh, ".edge_verts", n, np.int32, width=2)[marked]


def polygon_centres_areas(mesh) -> tuple[np.ndarray, np.ndarray]:
    n = len(mesh.polygons)
    return _get(mesh.polygons, "center", n, np.float32, 3).astype(np.float64), _get(
        mesh.polygons, "area", n, np.float32
    )


def material_indices(mesh) -> np.ndarray:
    """Per-face material index (the `material_index` attribute; absent means all 0)."""
    values = read_int_attribute(mesh, "material_index")
    return values if values is not None else np.zeros(len(mesh.polygons), dtype=np.int32)


def set_material_indices(mesh, indices: np.ndarray) -> None:
    # through the attribute: polygons.foreach_set("material_index") is ~500x slower at 1M faces
    write_face_attribute(mesh, "material_index", indices)
    if len(indices):
        # A raw attribute write does not clear the mesh's cached highest material index, which
        # the original and evaluated meshes share: a mesh drawn before would keep drawing every
        # face past the old maximum in one colour (mesh.update() does not clear it, Edit Mode
        # does). One write through the polygon API runs Blender's material-index change tag.
        mesh.polygons[0].material_index = int(indices[0])
    mesh.update_tag()


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


def selected_faces(mesh) -> np.ndarray:
    """Per-polygon selection flags (Object Mode data; call obj.update_from_editmode() first)."""
    attr = mesh.attributes.get(".select_poly")
    if attr is None or attr.domain != "FACE" or attr.data_type != "BOOLEAN":
        return np.zeros(len(mesh.polygons), dtype=bool)
    return _get(attr.data, "value", len(mesh.polygons), bool)


def set_selection(mesh, poly_mask: np.ndarray) -> None:
    """Select exactly the given polygons (and their edges and vertices), in Object Mode."""
    _repair_select_attributes(mesh)
    poly_mask = np.asarray(poly_mask, dtype=bool)
    loop_vertex, loop_total = loops(mesh)
    loop_sel = np.repeat(poly_mask, loop_total)
    vert_sel = np.zeros(len(mesh.vertices), dtype=bool)
    vert_sel[loop_vertex[loop_sel]] = True
    edge_sel = np.zeros(len(mesh.edges), dtype=bool)
    edge_sel[corner_edges(mesh)[loop_sel]] = True
    for name, values in ((".select_vert", vert_sel), (".select_edge", edge_sel), (".select_poly", poly_mask)):
        attr = mesh.attributes.get(name) or mesh.attributes.new(name, "BOOLEAN", _SELECT_ATTRS[name])
        attr.data.foreach_set("value", values)
