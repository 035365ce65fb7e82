"""The part list of an object (`obj.segparts.parts`) and what hangs off it: rebuilding it from the
`part_id` attribute, writing new labels (`write_all`), selection, visibility, quiet renames, and
Object Mode for writes. The list is derived: `part_id` is the source of truth (writeback.py)."""

from __future__ import annotations

import bpy
import numpy as np

from . import mesh_io, naming_ops, palette, partdata, partedits, writeback

revision = 0  # bumped whenever a part list is rebuilt (the pick tool re-reads labels then)
_quiet = {"rename": False, "visibility": False}  # a change made here, not by the user: no callback


def ensure_object_mode(obj) -> None:
    if obj.mode != "OBJECT":
        with bpy.context.temp_override(active_object=obj, object=obj):
            bpy.ops.object.mode_set(mode="OBJECT")


def write_all(obj, poly_labels, topo, keep: bool = False):
    """Generator: labels -> attribute, preview materials, vertex groups, part list."""
    naming_ops.restore_group_names(obj)  # the write-back finds groups by their canonical names
    preview = bpy.context.scene.segparts_preview if bpy.context.scene else True
    if not preview:
        writeback.clear_preview(obj)
    kept = {it.part_id: 0 for it in obj.segparts.parts if it.material} if keep else None
    counts = {}
    yield from writeback.write_parts(obj, poly_labels, topo, preview=preview, keep_parts=kept, vertex_counts=counts)
    yield
    refresh(obj, poly_labels, keep, counts, counts.pop("faces", None))


def refresh(
    obj, poly_labels=None, keep: bool = False, vertex_counts: dict | None = None, faces: np.ndarray | None = None
) -> None:
    """Rebuild the part list from the `part_id` attribute (the source of truth). keep=True keeps
    the names and materials of part ids that survive (editing); new labels start fresh."""
    global revision
    revision += 1
    if poly_labels is None:
        poly_labels = writeback.labels(obj)
    items = obj.segparts.parts
    old = {it.part_id: (it.name, it.material) for it in items} if keep else {}
    items.clear()
    if poly_labels is None:
        return
    if vertex_counts is None:
        topo = mesh_io.topology(obj.data)
        vertex_counts = partdata.part_vertex_counts(
            partdata.vertex_groups(poly_labels, topo.corner_verts, topo.loop_total, topo.n_vertices)
        )
    if faces is None:  # faces per part (the write-back counts them in the background thread)
        faces = np.bincount(poly_labels[poly_labels >= 0])
    given = _names_from_nodes(obj, poly_labels)
    _quiet["rename"] = True
    try:
        for part in np.flatnonzero(faces).tolist():
            it = items.add()
            name, material = old.get(part, (palette.part_name(part), None))
            it.part_id, it.name, it.material = part, given.get(part, name), material
            it.color = palette.part_colour(part)
            it.face_count = int(faces[part])
            it.vertex_count = int(vertex_counts.get(part, 0))
    finally:
        _quiet["rename"] = False
    obj.segparts.active_part = min(obj.segparts.active_part, max(len(items) - 1, 0))


def _names_from_nodes(obj, poly_labels) -> dict[int, str]:
    """part -> the name the user gave its hierarchy node (Rename Part), if any."""
    names = writeback.node_names(obj)
    hierarchy = writeback.load_hierarchy(obj) if names else None
    if hierarchy is None or len(hierarchy.leaf_labels) != len(poly_labels):
        return {}
    nodes = partedits.active_nodes(hierarchy, writeback.current_scale(obj))
    parts, first = np.unique(poly_labels, return_index=True)
    return {int(p): names[int(nodes[f])] for p, f in zip(parts, first) if p >= 0 and int(nodes[f]) in names}


# ---- selection -----------------------------------------------------------------------------------
def selected_parts(obj) -> list[int]:
    """Parts ticked in the list; the active list entry when none is ticked."""
    items = obj.segparts.parts
    chosen = [it.part_id for it in items if it.selected]
    if not chosen and 0 <= obj.segparts.active_part < len(items):
        chosen = [items[obj.segparts.active_part].part_id]
    return chosen


def set_selected_parts(obj, parts) -> None:
    parts = {int(p) for p in parts}
    for it in obj.segparts.parts:
        it.selected = it.part_id in parts


# ---- names and visibility set by the add-on (the list's update callbacks stay quiet) ---------------
def renaming_quietly() -> bool:
    return _quiet["rename"]


def rename_quietly(obj, part: int, name: str) -> None:
    _quiet["rename"] = True
    try:
        for it in obj.segparts.parts:
            if it.part_id == part:
                it.name = name
    finally:
        _quiet["rename"] = False


def set_visible_parts(obj, visible) -> None:
    """Show exactly `visible` (part ids); the rest are hidden in every mode and in renders."""
    visible = {int(p) for p in visible}
    _quiet["visibility"] = True
    try:
        for it in obj.segparts.parts:
            it.visible = it.part_id in visible
    finally:
        _quiet["visibility"] = False
    writeback.set_hidden_parts(obj, {it.part_id for it in obj.segparts.parts if it.part_id not in visible})


def on_visibility_changed(item) -> None:
    """An eye toggled in the list."""
    if _quiet["visibility"]:
        return
    obj = item.id_data
    writeback.set_hidden_parts(obj, {it.part_id for it in obj.segparts.parts if not it.visible})
