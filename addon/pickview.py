"""The viewport side of the pick tool: ray casting the ORIGINAL mesh, the hover overlay, clicks.

Rays are cast against a BVHTree of the original mesh's triangles in object space, so with
modifiers (subdivision, mirror...) the hit is still a face the labels belong to.
"""
from __future__ import annotations

import bpy
import numpy as np
from mathutils import Vector
from mathutils.bvhtree import BVHTree

from . import background, editing, mesh_io, orientation, partdata, picking, runtime, writeback

PROMPT_ENGINES = {"geosam2"}  # engines whose clicks are prompts answered by the backend
HOVER_RGBA = (1.0, 0.85, 0.1, 0.45)
SELECTED_RGBA = (0.1, 0.8, 1.0, 0.3)


def build_picker(obj) -> picking.PartPicker | None:
    labels = writeback.labels(obj)
    if labels is None:
        return None
    return picking.PartPicker(labels, writeback.load_hierarchy(obj), scale=1.0 - obj.segparts.granularity)


class MeshRay:
    """BVH over the original mesh's loop triangles (object space); hit -> (triangle, polygon, point)."""

    def __init__(self, obj):
        mesh = obj.data
        self.vertices = mesh_io.vertices(mesh)
        self.tris, self.tri_poly = mesh_io.triangles(mesh)
        self.bvh = BVHTree.FromPolygons(self.vertices.tolist(), self.tris.tolist(), all_triangles=True)

    def cast_world(self, obj, origin, direction):
        inv = obj.matrix_world.inverted()
        o = inv @ Vector(origin)
        d = inv.to_3x3() @ Vector(direction)
        loc, _normal, tri, _dist = self.bvh.ray_cast(o, d.normalized())
        if tri is None:
            return -1, -1, None
        return int(tri), int(self.tri_poly[tri]), np.array(loc)


def pick_at_ray(obj, origin, direction, level: int = 0):
    """World-space ray -> PickTarget on `obj` (what a click would pick), or None."""
    ray = MeshRay(obj)
    _tri, poly, _loc = ray.cast_world(obj, origin, direction)
    picker = build_picker(obj)
    if poly < 0 or picker is None:
        return None
    return picker.target(poly, picker.clamp_level(poly, level))


class PickTool:
    def __init__(self, obj, engine: str):
        self.obj_name, self.engine = obj.name, engine
        self.prompt_mode = engine in PROMPT_ENGINES
        self.ray = MeshRay(obj)
        self.picker = build_picker(obj)
        self.level = 0
        self.target = None
        self.hit = None  # (triangle, polygon, point)
        self.clicks: list[dict] = []
        self._batch = None
        self._selected_batch = None
        self._selected_key = None
        self._revision = runtime.parts_revision

    @property
    def obj(self):
        return bpy.data.objects.get(self.obj_name)

    def hover(self, context, mouse_x: int, mouse_y: int):
        from bpy_extras import view3d_utils

        area, region = picking.region_under(context.window.screen.areas, mouse_x, mouse_y)
        obj = self.obj
        if obj is not None and self._revision != runtime.parts_revision:  # new labels arrived
            self._revision = runtime.parts_revision
            self.picker = build_picker(obj)
            self._batch = self._selected_key = None
        if region is None or obj is None:
            return self._set_target(None)
        # region.data is the region's own view in quad view; it can be unset (e.g. background mode)
        rv3d = region.data or area.spaces.active.region_3d
        coord = (mouse_x - region.x, mouse_y - region.y)
        origin = view3d_utils.region_2d_to_origin_3d(region, rv3d, coord)
        direction = view3d_utils.region_2d_to_vector_3d(region, rv3d, coord)
        tri, poly, loc = self.ray.cast_world(obj, origin, direction)
        self.hit = (tri, poly, loc) if tri >= 0 else None
        if tri < 0:
            return self._set_target(None)
        if self.picker is None:  # prompt engine before any segmentation: the face is the target
            mask = np.zeros(len(obj.data.polygons), dtype=bool)
            mask[poly] = True
            return self._set_target(picking.PickTarget(poly, -1, mask, set(), 0), area)
        self.level = self.picker.clamp_level(poly, self.level)
        return self._set_target(self.picker.target(poly, self.level), area)

    def change_level(self, step: int) -> None:
        self.level += step
        if self.hit is not None and self.picker is not None:
            poly = self.hit[1]
            self.level = self.picker.clamp_level(poly, self.level)
            self._set_target(self.picker.target(poly, self.level))

    def _set_target(self, target, area=None):
        changed = (target is None) != (self.target is None) or (
            target is not None and (target.node, target.polygon if target.node < 0 else 0, target.level) !=
            (self.target.node, self.target.polygon if self.target.node < 0 else 0, self.target.level))
        self.target = target
        if changed:
            self._batch = None
            runtime.redraw()
        return target

    def click(self, shift: bool, ctrl: bool) -> str:
        obj, target = self.obj, self.target
        if obj is None or target is None:
            return ""
        if self.prompt_mode:
            return self._prompt(obj, positive=not ctrl, extend=shift or ctrl)
        if target.level < 0:  # finer than the current parts: that piece becomes a part
            labels, new_id = picking.split_off(self.picker.poly_labels, target.mask)
            background.run(runtime.write_all(obj, labels, mesh_io.topology(obj.data), keep=True))
            self.picker = build_picker(obj)
            self._revision, self._selected_key = runtime.parts_revision, None
            editing.set_selected_parts(obj, {new_id})
            self.level = 0
            return f"Split off a new part ({int(target.mask.sum())} faces)"
        current = {it.part_id for it in obj.segparts.parts if it.selected}
        chosen = partdata.SelectionUpdate.from_modifiers(shift, ctrl).apply(current, target.parts)
        editing.set_selected_parts(obj, chosen)
        return f"{len(chosen)} parts selected"

    def _prompt(self, obj, positive: bool, extend: bool) -> str:
        tri, _poly, loc = self.hit
        click = picking.click_prompt(tri, loc, positive, orientation.linear_part(obj.matrix_world))
        self.clicks = (self.clicks + [click]) if extend else [click]
        try:
            runtime.ensure_started()
            runtime.start_pick(obj, self.engine, list(self.clicks))
        except (RuntimeError, ValueError) as exc:  # backend not up (yet): say so, keep the tool running
            return f"Prompt not sent: {exc}"
        return f"{'positive' if positive else 'negative'} click sent ({len(self.clicks)} in this prompt)"

    def _world_tris(self, obj, poly_mask):
        tri_mask = poly_mask[self.ray.tri_poly]
        m = np.array(obj.matrix_world, dtype=np.float64)
        v = self.ray.vertices @ m[:3, :3].T + m[:3, 3]
        return v[self.ray.tris[tri_mask]].reshape(-1, 3).astype(np.float32)

    def draw(self):
        """POST_VIEW overlay: selected parts (cyan) and the part under the mouse (yellow)."""
        import gpu
        from gpu_extras.batch import batch_for_shader

        obj = self.obj
        if obj is None:
            return
        shader = gpu.shader.from_builtin("UNIFORM_COLOR")
        selected = tuple(sorted(it.part_id for it in obj.segparts.parts if it.selected))
        if self.picker is not None and selected != self._selected_key:
            self._selected_key = selected
            mask = np.isin(self.picker.poly_labels, np.asarray(selected, dtype=np.int32))
            self._selected_batch = batch_for_shader(shader, "TRIS", {"pos": self._world_tris(obj, mask)})
        if self.target is not None and self._batch is None:
            self._batch = batch_for_shader(shader, "TRIS", {"pos": self._world_tris(obj, self.target.mask)})
        gpu.state.blend_set("ALPHA")
        gpu.state.depth_test_set("NONE")  # the original faces may lie inside a modifier's surface
        if self._selected_batch is not None and selected:
            shader.uniform_float("color", SELECTED_RGBA)
            self._selected_batch.draw(shader)
        if self.target is not None:
            shader.uniform_float("color", HOVER_RGBA)
            self._batch.draw(shader)
        gpu.state.blend_set("NONE")
