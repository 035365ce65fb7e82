"""The viewport side of the pick tool: ray casting the mesh as it is drawn, the hover overlay, clicks.

Rays are cast against a grid index (picking.TriangleGrid) of the EVALUATED mesh (modifiers applied: subdivision, mirror...)
in object space and every hit is mapped back to the ORIGINAL polygon the labels belong to, so a
mirrored half picks (and highlights) the part of the faces it mirrors.
"""

from __future__ import annotations

import bpy
import numpy as np
from bpy_extras import view3d_utils

from . import background, editing, engines, mesh_io, orientation, partdata, partlist, picking, runtime, writeback

HOVER_RGBA = (1.0, 0.85, 0.1, 0.45)
SELECTED_RGBA = (0.1, 0.8, 1.0, 0.3)


def build_picker(obj) -> picking.PartPicker | None:
    labels = writeback.labels(obj)
    if labels is None:
        return None
    return picking.PartPicker(labels, writeback.load_hierarchy(obj), scale=writeback.current_scale(obj))


class MeshRay:
    """Ray casts on the EVALUATED mesh (modifiers applied: a mirrored half can be hit) in object
    space; each triangle knows its ORIGINAL polygon through the face attribute `.segparts_face`
    that the write-back puts on the original mesh and modifiers carry along. A hit -> (triangle,
    original polygon, point). Without that attribute on the evaluated mesh (a modifier that drops
    attributes) the original mesh is used.

    The index (picking.TriangleGrid, numpy only) is built in the background thread: starting the
    tool never waits for it, and after Segment it is built ahead (`prebuild`)."""

    def __init__(self, obj=None, depsgraph=None, arrays=None):
        """From `obj` (its drawn mesh, read now; triangulated and indexed in the background) or
        from `arrays` = (vertices, tris, tri_poly) of the original mesh (e.g. a job's)."""
        self.obj_name = obj.name if obj is not None else None
        if arrays is not None:
            vertices, tris, tri_poly = arrays
            self.exact, source = True, (tris, tri_poly, None)
        else:
            mesh, origin = self._drawn(obj, depsgraph)
            self.exact = origin is None
            vertices, source = mesh_io.vertices(mesh), self._corners(mesh) + (origin,)
        self.vertices = np.asarray(vertices, dtype=np.float32)  # as Blender stores them: half the memory
        self.future = background.submit(_build_index, self.vertices, *source)
        self.key = None  # set by ray_for / prebuild

    @property
    def ready(self) -> bool:
        return self.future.done()

    def wait(self):
        return self.future.result()[0]

    @property
    def tris(self) -> np.ndarray:
        return self.future.result()[1]

    @property
    def tri_poly(self) -> np.ndarray:
        """ORIGINAL polygon of each indexed triangle."""
        return self.future.result()[2]

    @staticmethod
    def _drawn(obj, depsgraph):
        """(mesh to index, evaluated->original face map or None): the evaluated mesh when the
        modifiers carry `.segparts_face`, else the original mesh."""
        if obj.modifiers:
            depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
            mesh = obj.evaluated_get(depsgraph).data
            origin = mesh_io.read_int_attribute(mesh, writeback.ORIGIN_ATTR)
            n = len(obj.data.polygons)
            if origin is not None and len(mesh.polygons) and origin.min() >= 0 and origin.max() < n:
                return mesh, origin
        return obj.data, None

    @staticmethod
    def _corners(mesh) -> tuple:
        """What the background thread needs to triangulate: the corner arrays (numpy fans), or
        Blender's own triangles for meshes with larger n-gons (bpy: read here, on the main thread)."""
        topo = mesh_io.topology(mesh)
        if topo.loop_total.size and topo.loop_total.max() > 4:
            return mesh_io.triangles(mesh, topo)
        return topo, None

    def cast_world(self, obj, origin, direction):
        """(triangle, original polygon, object-space point) of the nearest hit; a miss while the
        index is still being built."""
        if not self.ready:
            return -1, -1, None
        inv = np.array(obj.matrix_world.inverted(), dtype=np.float64)
        o, d = picking.ray_to_object(origin, direction, inv)
        tri, t = self.wait().cast(o, d)
        if tri < 0:
            return -1, -1, None
        return tri, int(self.tri_poly[tri]), o + t * d

    def original_click(self, tri: int, poly: int, loc):
        """(triangle of the uploaded ORIGINAL mesh, object-space point) for a prompt click: with
        modifiers the hit lies on the evaluated surface, so the original polygon's first triangle
        and its centre stand in for it."""
        if self.exact:
            return tri, loc
        mesh = bpy.data.objects[self.obj_name].data
        tris, tri_poly = mesh_io.triangles(mesh)
        first = int(np.flatnonzero(tri_poly == poly)[0])
        return first, mesh_io.vertices(mesh)[tris[first]].mean(axis=0)


def _build_index(vertices, tris_or_topo, tri_poly, origin):
    """Background thread: triangles (numpy fans when given the corner arrays), their ORIGINAL
    polygons, and the grid. Returns (grid, tris, tri_poly)."""
    if isinstance(tris_or_topo, partdata.Topology):
        tris, tri_poly = partdata.fan_triangles(tris_or_topo.corner_verts, tris_or_topo.loop_total)
    else:
        tris = tris_or_topo
    if origin is not None:
        tri_poly = origin[tri_poly]
    return picking.TriangleGrid(vertices, tris), tris, tri_poly


_rays: dict[str, MeshRay] = {}  # object name -> the latest index made for it


def _key(obj, mesh) -> tuple:
    """What must match for a cached index to still fit: modifiers and element counts (the
    positions are compared too; topology edits change the counts)."""
    mods = tuple((m.name, m.type, m.show_viewport) for m in obj.modifiers)
    return mods, len(mesh.vertices), len(mesh.polygons), len(mesh.loops)


def _drawn_mesh(obj):
    if not obj.modifiers:
        return obj.data
    return obj.evaluated_get(bpy.context.evaluated_depsgraph_get()).data


def ray_for(obj) -> MeshRay:
    """The pick index of `obj`: the one built ahead when modifiers, counts and positions are the
    same (reading positions is cheap; re-triangulating 1M faces is not), else a new one (built in
    the background)."""
    mesh = _drawn_mesh(obj)
    key = _key(obj, mesh)
    cached = _rays.get(obj.name)
    if cached is not None and cached.key == key and np.array_equal(mesh_io.vertices(mesh), cached.vertices):
        return cached
    ray = MeshRay(obj)  # reads the drawn mesh now; triangulates and indexes it in the background
    ray.key = key
    _rays[obj.name] = ray
    return ray


def prebuild(obj, vertices, tris, tri_poly) -> None:
    """After Segment of a mesh without modifiers: its index from the job's arrays, in the background."""
    ray = MeshRay(obj, arrays=(vertices, tris, tri_poly))
    ray.key = _key(obj, obj.data)
    _rays[obj.name] = ray


def pick_at_ray(obj, origin, direction, level: int = 0):
    """World-space ray -> PickTarget on `obj` (what a click would pick), or None."""
    ray = ray_for(obj)
    ray.wait()
    _tri, poly, _loc = ray.cast_world(obj, origin, direction)
    picker = build_picker(obj)
    if poly < 0 or picker is None:
        return None
    return picker.target(poly, picker.clamp_level(poly, level))


class PickTool:
    def __init__(self, obj, engine: str, send_prompt=None):
        """`send_prompt(obj, engine, clicks)` sends a prompt for engines whose clicks are prompts
        (results.start_pick)."""
        self.obj_name, self.engine, self.send_prompt = obj.name, engine, send_prompt
        self.prompt_mode = engines.click_prompts(runtime.engine_status(), engine)
        self.ray = ray_for(obj)  # built ahead after Segment, or now in the background
        self.picker = build_picker(obj)
        self.level = 0
        self.target = None
        self.hit = None  # (triangle, polygon, point)
        self.clicks: list[dict] = []
        self._batch = None
        self._selected_batch = None
        self._selected_key = None
        self._revision = partlist.revision

    @property
    def obj(self):
        return bpy.data.objects.get(self.obj_name)

    def hover(self, context, mouse_x: int, mouse_y: int):
        area, region = picking.region_under(context.window.screen.areas, mouse_x, mouse_y)
        obj = self.obj
        if obj is not None and self._revision != partlist.revision:  # new labels arrived
            self._revision = partlist.revision
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
            target is not None
            and (target.node, target.polygon if target.node < 0 else 0, target.level)
            != (self.target.node, self.target.polygon if self.target.node < 0 else 0, self.target.level)
        )
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
        if target.level < 0:  # finer than the current parts: that piece becomes a part, in the hierarchy too
            if self.picker.hierarchy is not None:
                editing.split_faces(obj, target.mask)
            else:
                labels, new_id = picking.split_off(self.picker.poly_labels, target.mask)
                background.run(partlist.write_all(obj, labels, mesh_io.topology(obj.data), keep=True))
                partlist.set_selected_parts(obj, {new_id})
            self.picker = build_picker(obj)
            self._revision, self._selected_key = partlist.revision, None
            self.level = 0
            return f"Split off a new part ({int(target.mask.sum())} faces)"
        current = {it.part_id for it in obj.segparts.parts if it.selected}
        chosen = partdata.SelectionUpdate.from_modifiers(shift, ctrl).apply(current, target.parts)
        partlist.set_selected_parts(obj, chosen)
        return f"{len(chosen)} parts selected"

    def select_similar(self) -> str:
        """S in the tool: the part under the mouse (else the selection) and all its copies, added."""
        obj = self.obj
        if obj is None or self.picker is None:
            return ""
        current = {it.part_id for it in obj.segparts.parts if it.selected}
        seeds = self.target.parts if self.target is not None else current
        if not editing.repeat_groups(obj):
            return "This result has no repeated parts"
        found = editing.similar_parts(obj, seeds)
        partlist.set_selected_parts(obj, current | found)
        return f"{len(found)} copies selected"

    def _prompt(self, obj, positive: bool, extend: bool) -> str:
        tri, poly, loc = self.hit
        click = picking.click_prompt(
            *self.ray.original_click(tri, poly, loc), positive, orientation.linear_part(obj.matrix_world)
        )
        self.clicks = (self.clicks + [click]) if extend else [click]
        if self.send_prompt is None:
            return "Prompt not sent: this tool has no way to send prompts"
        try:
            runtime.ensure_started()
            self.send_prompt(obj, self.engine, list(self.clicks))
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
