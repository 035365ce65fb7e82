"""Editing parts after segmentation: materials, separation, Edit Mode selection, visibility."""

from __future__ import annotations

import bpy
import numpy as np
from mathutils import Matrix, Vector

from . import background, mesh_io, palette, partdata, partedits, partlist, similar, writeback
from ._shared.hierarchy import Hierarchy


def _labels(obj) -> np.ndarray:
    labels = writeback.labels(obj)
    if labels is None:
        raise RuntimeError(f"{obj.name!r} has no parts yet: segment it first")
    return labels


def assign_material(obj, parts, material) -> None:
    """Give the faces of `parts` the material (a user slot is added if needed). With preview
    colours on, those parts show it and it stays when the preview is cleared."""
    partlist.ensure_object_mode(obj)
    labels = _labels(obj)
    preview = writeback.preview_active(obj)
    slot = writeback.user_slot_for(obj, material)
    real = writeback.real_material_indices(obj)
    mask = np.isin(labels, np.asarray(list(parts), dtype=np.int32))
    real[mask] = slot
    writeback.set_real_material_indices(obj, real)
    for it in obj.segparts.parts:
        if it.part_id in set(parts):
            it.material = material
    if preview:
        kept = {it.part_id: 0 for it in obj.segparts.parts if it.material}
        writeback.write_preview_materials(obj, labels, kept)
    obj.data.update()


def new_part_material(parts) -> bpy.types.Material:
    """A new real (user) material with the colour of the first part."""
    first = sorted(parts)[0]
    mat = bpy.data.materials.new(f"Part {palette.part_name(first)}")
    colour = palette.part_colour(first)
    mat.diffuse_color = colour
    bsdf = mat.node_tree.nodes.get("Principled BSDF") if mat.node_tree else None
    if bsdf is not None:
        bsdf.inputs["Base Color"].default_value = colour
    return mat


def _make_active(context, obj) -> None:
    for other in context.view_layer.objects:
        if other.select_get():
            other.select_set(False)
    context.view_layer.objects.active = obj
    obj.select_set(True)


def select_faces(context, obj, parts, edit_mode: bool = True) -> int:
    """Select exactly the faces of `parts` (Edit Mode, face select), ready to transform."""
    partlist.ensure_object_mode(obj)
    mask = np.isin(_labels(obj), np.asarray(list(parts), dtype=np.int32))
    mesh_io.set_selection(obj.data, mask)
    if edit_mode:
        _make_active(context, obj)
        bpy.ops.object.mode_set(mode="EDIT")
        context.tool_settings.mesh_select_mode = (False, False, True)
    return int(mask.sum())


def separate_parts(context, obj, parts) -> list:
    """Each part in `parts` becomes its own object: materials kept (preview colours removed),
    origin at the part's centre, named after the part. Returns the new objects."""
    partlist.ensure_object_mode(obj)
    names = {it.part_id: it.name for it in obj.segparts.parts}
    created = []
    for part in sorted({int(p) for p in parts}):
        labels = _labels(obj)
        mask = labels == part
        if not mask.any():
            continue
        mesh_io.set_selection(obj.data, mask)
        _make_active(context, obj)
        before = set(bpy.data.objects)
        bpy.ops.object.mode_set(mode="EDIT")
        bpy.ops.mesh.separate(type="SELECTED")
        bpy.ops.object.mode_set(mode="OBJECT")
        new = [o for o in bpy.data.objects if o not in before]
        if len(new) != 1:
            raise RuntimeError(f"separating part {part} made {len(new)} objects")
        created.append(_tidy_separated(new[0], obj, part, names.get(part, palette.part_name(part))))
    # the original keeps the remaining parts; groups of the parts that left are dropped
    for part in parts:
        writeback.forget_group(obj, part)
    writeback.mark_original_faces(obj)  # the remaining faces were renumbered
    partlist.refresh(obj, keep=True)
    _make_active(context, obj)
    return created


def _tidy_separated(new, source, part: int, name: str):
    new.name = f"{source.name}.{name}"
    new.data.name = new.name
    writeback.clear_preview(new)  # the user's materials, not the preview colours
    modifier = new.modifiers.get(writeback.VISIBILITY_MODIFIER)
    if modifier is not None:
        new.modifiers.remove(modifier)
    mesh_io.remove_attribute(new.data, writeback.HIDDEN_ATTR)
    for other in [p for p in writeback.part_groups(new) if p != part]:  # the copy's groups of other parts
        writeback.forget_group(new, other)
    for key in (writeback.PARENT_PROP, writeback.HEIGHT_PROP):
        if key in new:
            del new[key]
    mesh_io.remove_attribute(new.data, writeback.LEAF_ATTR)
    writeback.mark_original_faces(new)
    # origin at the part's centre, so it rotates and animates about itself
    centres, areas = mesh_io.polygon_centres_areas(new.data)
    centre = partdata.part_centres(np.zeros(len(areas), dtype=np.int32), centres, areas).get(0)
    if centre is not None:
        c = Vector(centre)
        new.data.transform(Matrix.Translation(-c))
        new.matrix_world = new.matrix_world @ Matrix.Translation(c)
    partlist.refresh(new, keep=False)
    if new.segparts.parts:
        new.segparts.parts[0].name = name
    return new


# ---- fixing a result by hand: merge, split, rename (kept in the hierarchy) ----------------------
def _scale(obj) -> float:
    return writeback.current_scale(obj)


def _hierarchy(obj):
    hierarchy = writeback.load_hierarchy(obj)
    if hierarchy is None:
        raise RuntimeError(f"{obj.name} has no usable part hierarchy; segment it again")
    return hierarchy


def part_nodes(obj, hierarchy, parts) -> set[int]:
    """Hierarchy nodes (at the slider's scale) under the faces of `parts`."""
    mask = np.isin(_labels(obj), np.asarray(list(parts), dtype=np.int32))
    return set(np.unique(partedits.active_nodes(hierarchy, _scale(obj))[mask]).tolist())


def _apply_edit(obj, edit) -> int:
    """Store the edited tree, re-cut it at the slider's scale, write everything; returns the part
    id of the edited node."""
    partlist.ensure_object_mode(obj)
    writeback.forget_automatic(obj)
    writeback.remap_node_names(obj, edit.node_map)
    if obj.get(writeback.REPEATS_PROP):
        obj[writeback.REPEATS_PROP] = similar.remap_groups(repeat_groups(obj), edit.node_map)
    writeback.store_hierarchy(obj, edit.leaf_labels, edit.parent, edit.height)
    hierarchy = Hierarchy(edit.leaf_labels, edit.parent, edit.height)
    labels = hierarchy.cut(scale=_scale(obj))
    background.run(partlist.write_all(obj, labels, mesh_io.topology(obj.data), keep=True))
    part = int(labels[np.argmax(hierarchy.face_mask(edit.new_node))])
    partlist.set_selected_parts(obj, {part})
    return part


def merge_parts(obj, parts) -> int:
    """The parts become one (at this slider position and coarser)."""
    hierarchy = _hierarchy(obj)
    nodes = part_nodes(obj, hierarchy, parts)
    return _apply_edit(obj, partedits.merge(hierarchy, nodes, _scale(obj)))


def split_part(obj, part: int) -> int:
    """The part shows its next finer pieces (at this slider position and finer)."""
    hierarchy = _hierarchy(obj)
    nodes = part_nodes(obj, hierarchy, [part])
    if len(nodes) != 1:
        raise RuntimeError("this part is made of several pieces of the hierarchy: merge it first")
    return _apply_edit(obj, partedits.split_finer(hierarchy, nodes.pop(), _scale(obj)))


def split_faces(obj, face_mask) -> int:
    """The faces become a new part (selected in Edit Mode)."""
    hierarchy = _hierarchy(obj)
    return _apply_edit(obj, partedits.split_faces(hierarchy, face_mask, _scale(obj)))


def rename_part(obj, part: int, name: str) -> None:
    """A part's name sticks to its node of the hierarchy: it comes back with the part on the slider."""
    hierarchy = writeback.load_hierarchy(obj)
    if hierarchy is not None:
        for node in part_nodes(obj, hierarchy, [part]):
            writeback.set_node_name(obj, node, name)
    partlist.rename_quietly(obj, part, name)


def repeat_groups(obj) -> list[list[int]]:
    return [[int(n) for n in g] for g in (obj.get(writeback.REPEATS_PROP) or [])]


def similar_parts(obj, parts) -> set[int]:
    """`parts` and every part in a copy of one of them (from the engine's repetition groups)."""
    groups = repeat_groups(obj)
    hierarchy = writeback.load_hierarchy(obj)
    if not groups or hierarchy is None:
        return {int(p) for p in parts}
    nodes = partedits.active_nodes(hierarchy, _scale(obj))
    return similar.similar_parts(hierarchy, _labels(obj), nodes, parts, groups)
