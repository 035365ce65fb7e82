"""Write part labels into a Blender object.

What a segmentation leaves on the object:
- face attribute `part_id` (INT): the part of every polygon — the source of truth; everything else
  is derived from it and can be rebuilt (`rebuild_from_attribute`);
- face attribute `segparts_leaf` + object properties `segparts_parent`/`segparts_height`: the part
  hierarchy, so the granularity slider re-cuts without asking the backend;
- vertex groups `Part_###` (policy for shared vertices: see partdata.py — a border vertex is in
  every part it touches, weight 1.0);
- material slots. PREVIEW mode: one coloured material per part is appended after the user's own
  slots and the user's per-face material indices are kept in the face attribute
  `segparts_material`, so `clear_preview` gives everything back. APPLY mode makes the part
  materials the object's real materials (nothing is kept to restore).
Writers are generators: each `yield` is a point where the timer may hand control back to Blender.
"""
from __future__ import annotations

import bpy
import numpy as np

from . import background, mesh_io, palette, partdata
from .mesh_io import SAVED_MATERIAL_ATTR

LABEL_ATTR = "part_id"
LEAF_ATTR = "segparts_leaf"
HIDDEN_ATTR = "segparts_hidden"
PARENT_PROP, HEIGHT_PROP = "segparts_parent", "segparts_height"
USER_SLOTS_PROP = "segparts_user_slots"
GROUP_PREFIX = "Part_"
MATERIAL_PREFIX = "SegParts "
VISIBILITY_MODIFIER = "SegParts Visibility"


# ---- hierarchy ------------------------------------------------------------------------------
def store_hierarchy(obj, leaf_per_polygon: np.ndarray, parent: np.ndarray, height: np.ndarray) -> None:
    mesh_io.write_face_attribute(obj.data, LEAF_ATTR, leaf_per_polygon)
    obj[PARENT_PROP] = np.asarray(parent, dtype=np.int32).tolist()
    obj[HEIGHT_PROP] = np.asarray(height, dtype=np.float32).tolist()


def hierarchy_arrays(obj):
    """(leaf per polygon, parent, height) stored on the object, or None."""
    leaf = mesh_io.read_int_attribute(obj.data, LEAF_ATTR)
    if leaf is None or PARENT_PROP not in obj or HEIGHT_PROP not in obj:
        return None
    return leaf, np.asarray(obj[PARENT_PROP], dtype=np.int32), np.asarray(obj[HEIGHT_PROP], dtype=np.float32)


def make_hierarchy(arrays):
    """Hierarchy from hierarchy_arrays(), or None if the mesh was edited in a way that broke it.
    Pure numpy: safe in the background thread."""
    from ._shared.hierarchy import Hierarchy

    if arrays is None:
        return None
    try:
        return Hierarchy(*arrays)
    except ValueError:
        return None


def load_hierarchy(obj):
    """The polygon-level hierarchy stored on the object, or None."""
    return make_hierarchy(hierarchy_arrays(obj))


def labels(obj) -> np.ndarray | None:
    return mesh_io.read_int_attribute(obj.data, LABEL_ATTR)


# ---- the full write-back ------------------------------------------------------------------
GROUP_CHUNK = 10_000  # vertices per vertex-group edit (~5 ms): timer ticks stay short


def write_parts(obj, poly_labels: np.ndarray, topo, preview: bool = True, keep_parts: dict | None = None,
                vertex_counts: dict | None = None):
    """Generator: attribute, materials, vertex groups. Labels are per polygon; `topo` is the
    mesh's partdata.Topology. `vertex_counts` (optional dict) receives each part's vertex count.
    May yield a Future (array work in a thread): the caller comes back when it is done."""
    mesh = obj.data
    poly_labels = np.ascontiguousarray(poly_labels, dtype=np.int32)
    if poly_labels.shape != (len(mesh.polygons),) or topo.n_polygons != len(mesh.polygons):
        raise ValueError(f"{len(poly_labels)} labels for {len(mesh.polygons)} polygons of {obj.name!r}")
    old = labels(obj)
    ours = [vg.name for vg in obj.vertex_groups if vg.name.startswith(GROUP_PREFIX)]
    # the groups are derived from the previous labels: only the difference needs writing
    known_old = old if (old is not None and ours) else None
    # main-thread work waits for the thread: both at once fight over the GIL and the ticks grow
    update = yield from background.wait(background.submit(partdata.group_update, known_old, poly_labels, topo))
    mesh_io.write_face_attribute(mesh, LABEL_ATTR, poly_labels)
    yield
    if preview:
        write_preview_materials(obj, poly_labels, keep_parts)
        yield
    if known_old is None:
        for name in ours:  # groups of unknown origin: start again
            obj.vertex_groups.remove(obj.vertex_groups[name])
            yield
    yield from _write_group_update(obj, update)
    if vertex_counts is not None:
        vertex_counts.update(update.counts)
    update_visibility(obj, poly_labels)
    mesh.update_tag()  # redraw; mesh.update() would recompute derived data (~80 ms at 1M faces)


def _write_group_update(obj, update):
    """Apply a partdata.GroupUpdate in small steps (one yield per chunk)."""
    for part in update.drop:
        vg = obj.vertex_groups.get(palette.part_name(part))
        if vg is not None:
            obj.vertex_groups.remove(vg)  # ~10-20 ms at 1M vertices: Blender rescans every vertex
            yield
    for part in sorted(update.changes):
        remove, add, full = update.changes[part]
        name = palette.part_name(part)
        vg = obj.vertex_groups.get(name)
        if vg is None:
            vg = obj.vertex_groups.new(name=name)
            remove, add = full[:0], full
        for chunk in partdata.chunks(remove, GROUP_CHUNK):
            vg.remove(chunk.tolist())
            yield
        for chunk in partdata.chunks(add, GROUP_CHUNK):
            vg.add(chunk.tolist(), 1.0, "REPLACE")
            yield


# ---- materials ------------------------------------------------------------------------------
def part_material(part_id: int):
    """The shared preview material of a part id (same colour in every object)."""
    name = MATERIAL_PREFIX + palette.part_name(part_id)
    mat = bpy.data.materials.get(name)
    colour = palette.part_colour(part_id)
    if mat is None:
        mat = bpy.data.materials.new(name)
        bsdf = mat.node_tree.nodes.get("Principled BSDF") if mat.node_tree else None
        if bsdf is not None:
            bsdf.inputs["Base Color"].default_value = colour
    mat.diffuse_color = colour  # Workbench / solid view colour
    return mat


def preview_active(obj) -> bool:
    return obj.data.attributes.get(SAVED_MATERIAL_ATTR) is not None and USER_SLOTS_PROP in obj


def _user_slots(obj) -> int:
    return int(obj.get(USER_SLOTS_PROP, len(obj.data.materials)))


def write_preview_materials(obj, poly_labels: np.ndarray, keep_parts: dict[int, int] | None = None) -> None:
    """Preview colours per part, keeping the user's materials to restore later.

    keep_parts: part id -> the user's slot index; those parts show their assigned material."""
    mesh = obj.data
    if not preview_active(obj):
        mesh_io.write_face_attribute(mesh, SAVED_MATERIAL_ATTR, mesh_io.material_indices(mesh))
        obj[USER_SLOTS_PROP] = len(mesh.materials)
    user_slots = _user_slots(obj)
    real = mesh_io.read_int_attribute(mesh, SAVED_MATERIAL_ATTR)
    n_parts = int(poly_labels.max()) + 1 if poly_labels.size else 0
    # reuse the preview slots: assigning a slot is free, removing one rewrites every face's index
    _drop_preview_slots(obj, user_slots + n_parts)
    for part in range(n_parts):
        mat = part_material(part)
        if user_slots + part < len(mesh.materials):
            if mesh.materials[user_slots + part] != mat:
                mesh.materials[user_slots + part] = mat
        else:
            mesh.materials.append(mat)
    indices = partdata.preview_material_indices(poly_labels, user_slots)
    if keep_parts:
        keep = np.full(n_parts, -1, dtype=np.int32)
        for part, slot in keep_parts.items():
            if 0 <= part < n_parts:
                keep[part] = slot
        kept = keep[poly_labels.clip(0)]
        # a kept part shows the material the user assigned (its real per-face index)
        indices = np.where((kept >= 0) & (poly_labels >= 0), real, indices)
    mesh_io.set_material_indices(mesh, indices)


def _drop_preview_slots(obj, user_slots: int) -> None:
    mesh = obj.data
    while len(mesh.materials) > user_slots:
        mesh.materials.pop(index=len(mesh.materials) - 1)


def clear_preview(obj) -> None:
    """Give the user's materials back exactly as they were (indices and slots)."""
    if not preview_active(obj):
        return
    mesh = obj.data
    real = mesh_io.read_int_attribute(mesh, SAVED_MATERIAL_ATTR)
    _drop_preview_slots(obj, _user_slots(obj))
    mesh_io.set_material_indices(mesh, real)
    mesh_io.remove_attribute(mesh, SAVED_MATERIAL_ATTR)
    del obj[USER_SLOTS_PROP]
    mesh.update()


def apply_materials(obj) -> None:
    """Make the preview materials the object's own (the saved indices are dropped)."""
    if not preview_active(obj):
        return
    mesh_io.remove_attribute(obj.data, SAVED_MATERIAL_ATTR)
    del obj[USER_SLOTS_PROP]


def real_material_indices(obj) -> np.ndarray:
    """The user's own per-face material indices (under the preview when it is on)."""
    saved = mesh_io.read_int_attribute(obj.data, SAVED_MATERIAL_ATTR) if preview_active(obj) else None
    return saved if saved is not None else mesh_io.material_indices(obj.data)


def set_real_material_indices(obj, indices: np.ndarray) -> None:
    if preview_active(obj):
        mesh_io.write_face_attribute(obj.data, SAVED_MATERIAL_ATTR, indices)
    else:
        mesh_io.set_material_indices(obj.data, indices)


def user_slot_for(obj, material) -> int:
    """Slot index of `material` among the user's slots, adding a slot (before the preview ones)."""
    mats = obj.data.materials
    n_user = _user_slots(obj)
    for i in range(n_user):
        if mats[i] == material:
            return i
    if not preview_active(obj):
        mats.append(material)
        return len(mats) - 1
    # insert before the preview slots: drop them, append, and let the caller re-write the preview
    _drop_preview_slots(obj, n_user)
    mats.append(material)
    obj[USER_SLOTS_PROP] = n_user + 1
    return n_user


# ---- visibility (works in Object Mode and renders, unlike face hiding) ----------------------
def _visibility_group():
    name = VISIBILITY_MODIFIER
    group = bpy.data.node_groups.get(name)
    if group is not None:
        return group
    group = bpy.data.node_groups.new(name, "GeometryNodeTree")
    group.interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    group.interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")
    nodes, links = group.nodes, group.links
    gin, gout = nodes.new("NodeGroupInput"), nodes.new("NodeGroupOutput")
    delete = nodes.new("GeometryNodeDeleteGeometry")
    delete.domain = "FACE"
    hidden = nodes.new("GeometryNodeInputNamedAttribute")
    hidden.data_type = "BOOLEAN"
    hidden.inputs["Name"].default_value = HIDDEN_ATTR
    links.new(gin.outputs[0], delete.inputs["Geometry"])
    links.new(hidden.outputs["Attribute"], delete.inputs["Selection"])
    links.new(delete.outputs[0], gout.inputs[0])
    return group


def set_hidden_parts(obj, hidden_parts: set[int]) -> None:
    poly_labels = labels(obj)
    if poly_labels is None:
        return
    hidden = np.isin(poly_labels, np.fromiter(hidden_parts, dtype=np.int32, count=len(hidden_parts)))
    mod = obj.modifiers.get(VISIBILITY_MODIFIER)
    if not hidden.any():
        mesh_io.remove_attribute(obj.data, HIDDEN_ATTR)
        if mod is not None:
            obj.modifiers.remove(mod)
    else:
        mesh_io.write_face_attribute(obj.data, HIDDEN_ATTR, hidden, "BOOLEAN")
        if mod is None:
            mod = obj.modifiers.new(VISIBILITY_MODIFIER, "NODES")
            mod.node_group = _visibility_group()
            obj.modifiers.move(len(obj.modifiers) - 1, 0)  # before subdivision etc.
    obj.data.update()


def update_visibility(obj, poly_labels: np.ndarray) -> None:
    """After new labels, nothing is hidden (old hidden ids would name other parts)."""
    if obj.modifiers.get(VISIBILITY_MODIFIER) is not None or obj.data.attributes.get(HIDDEN_ATTR) is not None:
        set_hidden_parts(obj, set())
