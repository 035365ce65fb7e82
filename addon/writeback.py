"""Write part labels into a Blender object.

What a segmentation leaves on the object:
- face attribute `part_id` (INT): the part of every polygon — the source of truth; everything else
  is derived from it and can be rebuilt (`rebuild_from_attribute`);
- face attribute `segparts_leaf` + object properties `segparts_parent`/`segparts_height`: the part
  hierarchy, so the granularity slider re-cuts without asking the backend;
- vertex groups `Part_###` (recorded in the object property `segparts_groups`; only those are
  ever changed, and a user's own group of the same name makes ours `Part_###.001`; policy for shared vertices: see partdata.py — a border vertex is in
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
from ._shared.hierarchy import Hierarchy
from .mesh_io import SAVED_MATERIAL_ATTR

LABEL_ATTR = "part_id"
LEAF_ATTR = "segparts_leaf"
HIDDEN_ATTR = "segparts_hidden"
PARENT_PROP, HEIGHT_PROP = "segparts_parent", "segparts_height"
USER_SLOTS_PROP = "segparts_user_slots"
ORIGIN_ATTR = ".segparts_face"  # each face's own index: modifiers carry it, so picks map back
LEVELS_PROP = "segparts_levels"  # the slider's cut scales, fixed at segmentation (edits add none)
AUTO_ATTR, AUTO_AT_PROP = "segparts_auto", "segparts_auto_at"  # the engine's own result and its slider spot
REPEATS_PROP = "segparts_repeats"  # groups of hierarchy nodes that are copies (the engine's info["repeats"])
NAMES_PROP = "segparts_names"  # hierarchy node -> the name the user gave that part
GROUPS_PROP = "segparts_groups"  # part id -> the vertex group the add-on made for it
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
    if arrays is None:
        return None
    try:
        return Hierarchy(*arrays)
    except ValueError:
        return None


def mark_original_faces(obj) -> None:
    """Give every face its own index in ORIGIN_ATTR (after Segment, after faces were separated)."""
    mesh = obj.data
    index = np.arange(len(mesh.polygons), dtype=np.int32)
    current = mesh_io.read_int_attribute(mesh, ORIGIN_ATTR)
    if current is None or not np.array_equal(current, index):
        mesh_io.write_face_attribute(mesh, ORIGIN_ATTR, index)


def slider_levels(obj):
    if LEVELS_PROP in obj:
        return np.asarray(obj[LEVELS_PROP], dtype=np.float64)
    if HEIGHT_PROP in obj:
        return partdata.slider_levels(np.asarray(obj[HEIGHT_PROP]))
    return np.array([0.0, 1.0])


def current_scale(obj, granularity: float | None = None) -> float:
    """The cut scale of the slider's position (or of `granularity`)."""
    g = obj.segparts.granularity if granularity is None else granularity
    return partdata.slider_scale(slider_levels(obj), g)


def store_automatic(obj, poly_labels, granularity: float) -> None:
    """Keep the engine's own result: the slider returns to it at its position."""
    mesh_io.write_face_attribute(obj.data, AUTO_ATTR, poly_labels)
    obj[AUTO_AT_PROP] = float(granularity)


def automatic_labels(obj, granularity: float):
    """The engine's result when `granularity` is its slider position, else None."""
    if AUTO_AT_PROP not in obj:
        return None
    levels = slider_levels(obj)
    if partdata.slider_scale(levels, granularity) != partdata.slider_scale(levels, obj[AUTO_AT_PROP]):
        return None
    return mesh_io.read_int_attribute(obj.data, AUTO_ATTR)


def forget_automatic(obj) -> None:
    """After a hand edit the engine's result is no longer what the tree gives there."""
    mesh_io.remove_attribute(obj.data, AUTO_ATTR)
    if AUTO_AT_PROP in obj:
        del obj[AUTO_AT_PROP]


def node_names(obj) -> dict[int, str]:
    return {int(k): str(v) for k, v in (obj.get(NAMES_PROP) or {}).items()}


def set_node_name(obj, node: int, name: str) -> None:
    names = node_names(obj)
    names[int(node)] = name
    obj[NAMES_PROP] = {str(k): v for k, v in names.items()}


def remap_node_names(obj, node_map) -> None:
    """Names follow their nodes through a hierarchy edit (node_map: old -> new, -1 gone)."""
    names = node_names(obj)
    if names:
        obj[NAMES_PROP] = {
            str(int(node_map[k])): v for k, v in names.items() if 0 <= k < len(node_map) and node_map[k] >= 0
        }


def load_hierarchy(obj):
    """The polygon-level hierarchy stored on the object, or None."""
    return make_hierarchy(hierarchy_arrays(obj))


def labels(obj) -> np.ndarray | None:
    return mesh_io.read_int_attribute(obj.data, LABEL_ATTR)


# ---- the full write-back ------------------------------------------------------------------
GROUP_CHUNK = 10_000  # vertices per vertex-group edit (~5 ms): timer ticks stay short


def write_parts(
    obj,
    poly_labels: np.ndarray,
    topo,
    preview: bool = True,
    keep_parts: dict | None = None,
    vertex_counts: dict | None = None,
):
    """Generator: attribute, materials, vertex groups. Labels are per polygon; `topo` is the
    mesh's partdata.Topology. `vertex_counts` (optional dict) receives each part's vertex count.
    May yield a Future (array work in a thread): the caller comes back when it is done."""
    mesh = obj.data
    poly_labels = np.ascontiguousarray(poly_labels, dtype=np.int32)
    if poly_labels.shape != (len(mesh.polygons),) or topo.n_polygons != len(mesh.polygons):
        raise ValueError(f"{len(poly_labels)} labels for {len(mesh.polygons)} polygons of {obj.name!r}")
    old = labels(obj)
    ours = part_groups(obj)  # only groups the add-on made: the user's own `Part_*` groups stay
    # the groups are derived from the previous labels: only the difference needs writing
    known_old = old if (old is not None and ours) else None
    # main-thread work waits for the thread: both at once fight over the GIL and the ticks grow
    update = yield from background.wait(background.submit(partdata.group_update, known_old, poly_labels, topo))
    mesh_io.write_face_attribute(mesh, LABEL_ATTR, poly_labels)
    yield
    mark_original_faces(obj)
    yield
    if preview:
        write_preview_materials(obj, poly_labels, keep_parts)
        yield
    if known_old is None:
        for part in list(ours):  # our groups without the labels they came from: start again
            forget_group(obj, part)
            yield
    yield from _write_group_update(obj, update)
    if vertex_counts is not None:
        vertex_counts.update(update.counts)
        vertex_counts["faces"] = update.face_counts
    update_visibility(obj, poly_labels)
    mesh.update_tag()  # redraw; mesh.update() would recompute derived data (~80 ms at 1M faces)


def _write_group_update(obj, update):
    """Apply a partdata.GroupUpdate in small steps (one yield per chunk)."""
    for part in update.drop:
        forget_group(obj, part)  # ~10-20 ms at 1M vertices: Blender rescans every vertex
        yield
    for part in sorted(update.changes):
        remove, add, full = update.changes[part]
        name = part_groups(obj).get(part)
        vg = obj.vertex_groups.get(name) if name else None
        if vg is None:
            vg = new_part_group(obj, part)
            remove, add = full[:0], full
        for chunk in partdata.chunks(remove, GROUP_CHUNK):
            vg.remove(chunk.tolist())
            yield
        for chunk in partdata.chunks(add, GROUP_CHUNK):
            vg.add(chunk.tolist(), 1.0, "REPLACE")
            yield


# ---- vertex groups: only those the add-on made, recorded on the object ------------------------
def part_groups(obj) -> dict[int, str]:
    """part id -> name of the vertex group the add-on made for it (groups since deleted are left out)."""
    recorded = obj.get(GROUPS_PROP)
    if not recorded:
        return {}
    return {int(part): name for part, name in recorded.items() if obj.vertex_groups.get(name) is not None}


def record_group(obj, part: int, name: str) -> None:
    """One of our groups was renamed (Name Parts): keep the record pointing at it."""
    recorded = {int(k): v for k, v in (obj.get(GROUPS_PROP) or {}).items()}
    if int(part) in recorded:
        recorded[int(part)] = name
        _record_groups(obj, recorded)


def _record_groups(obj, groups: dict[int, str]) -> None:
    obj[GROUPS_PROP] = {str(part): name for part, name in groups.items()}


def new_part_group(obj, part: int):
    """A new group for `part`, named Part_### or, when the user has a group of that name, Part_###.001 ..."""
    base = name = palette.part_name(part)
    k = 0
    while obj.vertex_groups.get(name) is not None:
        k += 1
        name = f"{base}.{k:03d}"
    vg = obj.vertex_groups.new(name=name)
    groups = part_groups(obj)
    groups[int(part)] = vg.name
    _record_groups(obj, groups)
    return vg


def forget_group(obj, part: int) -> None:
    """Remove the add-on's group of `part` (never a group the user made)."""
    groups = part_groups(obj)
    name = groups.pop(int(part), None)
    if name is not None:
        obj.vertex_groups.remove(obj.vertex_groups[name])
    _record_groups(obj, groups)


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
