"""Ray -> face -> part, without bpy (the modal pick tool uses it; tests drive it directly).

In Blender the ray is cast against a BVHTree of the ORIGINAL mesh's triangles (object space), so
labels follow the original faces even with modifiers; `first_hit` is the same query in numpy,
used where no BVH is at hand and by the tests to check the BVH route.

Moving along the hierarchy: the faces under the mouse sit on a path leaf -> ... -> root. The part
of the current cut is one node on that path; `level` moves up (coarser, > 0) or down (finer, < 0).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


def first_hit(origin, direction, tri_coords: np.ndarray, eps: float = 1e-12) -> tuple[int, float]:
    """Closest triangle hit by the ray (Moller-Trumbore, vectorised). Returns (triangle, t) or (-1, inf)."""
    o = np.asarray(origin, dtype=np.float64)
    d = np.asarray(direction, dtype=np.float64)
    tri = np.asarray(tri_coords, dtype=np.float64)
    v0, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    p = np.cross(d, e2)
    det = np.einsum("ij,ij->i", e1, p)
    ok = np.abs(det) > eps
    inv = np.zeros_like(det)
    inv[ok] = 1.0 / det[ok]
    s = o - v0
    u = np.einsum("ij,ij->i", s, p) * inv
    q = np.cross(s, e1)
    v = (q @ d) * inv
    t = np.einsum("ij,ij->i", e2, q) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > eps)
    if not hit.any():
        return -1, float("inf")
    t = np.where(hit, t, np.inf)
    k = int(np.argmin(t))
    return k, float(t[k])


class TriangleGrid:
    """A uniform grid over a triangle mesh for ray casts, built with numpy only, so it can be made
    in a background thread (a mathutils BVHTree takes seconds at 1M faces and holds the GIL).

    Cells hold the triangles whose bounding box overlaps them (CSR arrays); a cast walks the cells
    along the ray in order (3D DDA) and tests their triangles, a chunk of cells at a time, until
    the nearest hit lies inside the cells already tested."""

    CHUNK = 16  # cells tested together

    BLOCK = 32_768  # triangles per numpy step while building: each step holds the GIL only briefly

    def __init__(self, vertices: np.ndarray, tris: np.ndarray, per_cell: float = 4.0, max_dim: int = 256):
        # Built in a background thread while Blender runs Python on the main thread: numpy calls on
        # whole 1M-face arrays would hold the GIL for tens of ms at a time, so work goes in blocks
        # with a yield of the GIL between them.
        # float32 like Blender's own positions (half the memory); hits are computed in float64
        self.vertices = v32 = np.ascontiguousarray(vertices, dtype=np.float32)
        self.tris = np.ascontiguousarray(tris, dtype=np.int32)
        blocks = [self._bounds(v32, self.tris[i : i + self.BLOCK]) for i in range(0, len(self.tris), self.BLOCK)]
        lo = np.min([b[0].min(axis=0) for b in blocks], axis=0).astype(np.float64)
        hi = np.max([b[1].max(axis=0) for b in blocks], axis=0).astype(np.float64)
        extent = np.maximum(hi - lo, 1e-9 * max(float((hi - lo).max()), 1e-12))
        # about `per_cell` triangles per cell on a surface: cells ~ T / per_cell, spread by extent
        n_cells = max(len(self.tris) / per_cell, 1.0)
        flat = extent / extent.max()
        side = (n_cells / max(np.prod(np.maximum(flat, 1.0 / max_dim)), 1e-12)) ** (1 / 3)
        self.dims = np.clip(np.ceil(flat * side), 1, max_dim).astype(np.int64)
        self.lo, self.cell = lo, extent / self.dims
        owners, cell_ids = [], []
        for b, (lo_t, hi_t) in enumerate(blocks):
            owner, cell_id = self._cells_of_block(lo_t, hi_t, b * self.BLOCK)
            owners.append(owner)
            cell_ids.append(cell_id)
            blocks[b] = None
            time.sleep(0)  # let the main thread run
        owner, cell_id = np.concatenate(owners), np.concatenate(cell_ids)
        del owners, cell_ids
        order = np.argsort(cell_id, kind="stable")  # numpy sorts without the GIL
        self.cell_tris = owner[order]
        self.cell_start = np.concatenate([[0], np.cumsum(np.bincount(cell_id, minlength=int(self.dims.prod())))])

    @staticmethod
    def _bounds(v32, tris):
        lo_t = v32[tris[:, 0]]
        hi_t = lo_t.copy()
        for corner in (1, 2):
            p = v32[tris[:, corner]]
            np.minimum(lo_t, p, out=lo_t)
            np.maximum(hi_t, p, out=hi_t)
        time.sleep(0)
        return lo_t, hi_t

    def _cells_of_block(self, lo_t, hi_t, offset: int):
        """(triangle, cell) pairs of one block: one per cell each triangle's box overlaps."""
        first, last = self._cell_of(lo_t), self._cell_of(hi_t)
        span = last - first + 1
        counts = span[:, 0] * span[:, 1] * span[:, 2]
        one = counts == 1  # most triangles lie in one cell: no expansion for them
        dy, dz = int(self.dims[1]), int(self.dims[2])
        owner = (np.flatnonzero(one) + offset).astype(np.int32)
        cell_id = (first[one, 0] * dy + first[one, 1]) * dz + first[one, 2]
        many = np.flatnonzero(~one)
        if many.size:  # larger triangles: one entry per overlapped cell
            c, f, sp = counts[many].astype(np.int64), first[many].astype(np.int64), span[many].astype(np.int64)
            rep = np.repeat(np.arange(many.size), c)
            k = np.arange(int(c.sum()), dtype=np.int64) - np.repeat(np.cumsum(c) - c, c)
            sy, sz = sp[rep, 1], sp[rep, 2]
            ids = ((f[rep, 0] + k // (sy * sz)) * dy + f[rep, 1] + (k // sz) % sy) * dz + f[rep, 2] + k % sz
            owner = np.concatenate([owner, (many[rep] + offset).astype(np.int32)])
            cell_id = np.concatenate([cell_id, ids.astype(np.int32)])
        return owner, cell_id

    def _cell_of(self, points: np.ndarray) -> np.ndarray:
        cells = ((points - self.lo.astype(points.dtype)) / self.cell.astype(points.dtype)).astype(np.int32)
        return np.clip(cells, 0, (self.dims - 1).astype(np.int32), out=cells)

    def _cells_along(self, o: np.ndarray, d: np.ndarray):
        """(cell ids, exit t of each) along the ray, in order (Amanatides-Woo)."""
        hi = self.lo + self.cell * self.dims
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / d
            t_a, t_b = (self.lo - o) * inv, (hi - o) * inv
        t_a = np.where(np.isnan(t_a), -np.inf, t_a)
        t_b = np.where(np.isnan(t_b), np.inf, t_b)
        t_enter = max(float(np.minimum(t_a, t_b).max()), 0.0)
        t_leave = float(np.maximum(t_a, t_b).min())
        if t_enter > t_leave:
            return [], []
        c = self._cell_of(o + t_enter * d).tolist()
        step = [1 if x > 0 else -1 for x in d]
        t_max, t_delta = [], []
        for a in range(3):
            if d[a] == 0:
                t_max.append(np.inf)
                t_delta.append(np.inf)
                continue
            edge = self.lo[a] + (c[a] + (step[a] > 0)) * self.cell[a]
            t_max.append(float((edge - o[a]) / d[a]))
            t_delta.append(float(self.cell[a] / abs(d[a])))
        dims = self.dims.tolist()
        cells, exits = [], []
        while all(0 <= c[a] < dims[a] for a in range(3)):
            a = 0 if t_max[0] <= min(t_max[1], t_max[2]) else (1 if t_max[1] <= t_max[2] else 2)
            cells.append((c[0] * dims[1] + c[1]) * dims[2] + c[2])
            exits.append(min(t_max[a], t_leave))
            c[a] += step[a]
            t_max[a] += t_delta[a]
        return cells, exits

    def cast(self, origin, direction) -> tuple[int, float]:
        """Nearest triangle hit by the ray and its t (direction as given), or (-1, inf)."""
        o = np.asarray(origin, dtype=np.float64)
        d = np.asarray(direction, dtype=np.float64)
        cells, exits = self._cells_along(o, d)
        best, best_t = -1, float("inf")
        for i in range(0, len(cells), self.CHUNK):
            chunk = np.asarray(cells[i : i + self.CHUNK], dtype=np.int64)
            starts, ends = self.cell_start[chunk], self.cell_start[chunk + 1]
            sizes = ends - starts
            if sizes.sum():
                idx = np.repeat(starts - np.cumsum(sizes) + sizes, sizes) + np.arange(int(sizes.sum()))
                cand = np.unique(self.cell_tris[idx])
                k, t = first_hit(o, d, self.vertices[self.tris[cand]])
                if k >= 0 and t < best_t:
                    best, best_t = int(cand[k]), t
            if best >= 0 and best_t <= exits[min(i + self.CHUNK, len(cells)) - 1]:
                break
        return best, best_t


def ray_to_object(origin_world, direction_world, world_to_object: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World-space ray -> object-space ray (direction not normalised: t stays comparable)."""
    m = np.asarray(world_to_object, dtype=np.float64)
    o = m[:3, :3] @ np.asarray(origin_world, dtype=np.float64) + m[:3, 3]
    d = m[:3, :3] @ np.asarray(direction_world, dtype=np.float64)
    return o, d


@dataclass
class PickTarget:
    polygon: int
    node: int  # hierarchy node (-1 when there is no hierarchy)
    mask: np.ndarray  # polygons of the target
    parts: set[int]  # current parts inside the target
    level: int  # 0 = the current part, > 0 coarser, < 0 finer


@dataclass
class PartPicker:
    """Polygon-level picking state for one object.

    poly_labels: current parts per polygon; hierarchy: an object with leaf_labels (per polygon),
    parent, face_mask(node), representative(active), active_at_scale(s) — the shipped
    hierarchy.Hierarchy built over polygons — or None for flat labels.
    """

    poly_labels: np.ndarray
    hierarchy: Any = None  # a _shared.hierarchy.Hierarchy (the copy is made when the zip is built)
    scale: float = 0.5
    _rep: np.ndarray | None = field(default=None, repr=False)

    def part_of(self, polygon: int) -> int:
        return int(self.poly_labels[polygon]) if 0 <= polygon < len(self.poly_labels) else -1

    def path(self, polygon: int) -> tuple[list[int], int]:
        """Nodes from the polygon's leaf to the root, and the index of the current part's node."""
        h = self.hierarchy
        if h is None:
            return [], 0
        node = int(h.leaf_labels[polygon])
        nodes = [node]
        while h.parent[node] >= 0:
            node = int(h.parent[node])
            nodes.append(node)
        if self._rep is None:
            self._rep = h.representative(h.active_at_scale(self.scale))
        current = int(self._rep[nodes[0]])
        return nodes, nodes.index(current) if current in nodes else 0

    def target(self, polygon: int, level: int = 0) -> PickTarget | None:
        if self.part_of(polygon) < 0:
            return None
        nodes, here = self.path(polygon)
        if not nodes or level == 0:
            mask = self.poly_labels == self.poly_labels[polygon]
            return PickTarget(polygon, nodes[here] if nodes else -1, mask, {self.part_of(polygon)}, 0)
        k = int(np.clip(here + level, 0, len(nodes) - 1))
        node = nodes[k]
        mask = np.asarray(self.hierarchy.face_mask(node), dtype=bool)
        parts = set(np.unique(self.poly_labels[mask]).tolist()) - {-1}
        return PickTarget(polygon, node, mask, parts, k - here)

    def clamp_level(self, polygon: int, level: int) -> int:
        """Keep `level` inside the path (so the wheel stops at the leaf and at the root)."""
        nodes, here = self.path(polygon)
        if not nodes:
            return 0
        return int(np.clip(level, -here, len(nodes) - 1 - here))


def split_off(poly_labels: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Make the masked polygons a new part (a finer pick); returns (new labels, new part id)."""
    labels = np.array(poly_labels, dtype=np.int32, copy=True)
    new_id = int(labels.max()) + 1 if labels.size else 0
    labels[np.asarray(mask, dtype=bool)] = new_id
    return labels, new_id


def click_prompt(tri_index: int, point, positive: bool, linear=None) -> dict:
    """One click of a prompt-driven engine (GeoSAM2) in the wire format: face is a triangle index
    of the uploaded (triangulated) mesh; `point` in object space is turned by `linear` (the
    object's rotation and scale, orientation.linear_part) into the uploaded mesh's coordinates."""
    if linear is not None:
        point = np.asarray(linear, dtype=np.float64) @ np.asarray(point, dtype=np.float64)
    return {"face": int(tri_index), "point": [float(x) for x in point], "positive": bool(positive)}


def _inside(r, x: int, y: int) -> bool:
    return r.x <= x < r.x + r.width and r.y <= y < r.y + r.height


def region_under(areas, x: int, y: int):
    """The VIEW_3D area and its 'WINDOW' region under window coordinates (x, y), or (None, None).

    Operators started from the sidebar get the sidebar ('UI') region in their context; picking
    needs the viewport region the mouse is over, with its own offset and view matrices."""
    for area in areas:
        if area.type != "VIEW_3D" or not _inside(area, x, y):
            continue
        regions = list(area.regions)
        # with region overlap the sidebar lies on top of the viewport: the mouse is over it then
        if any(r.type != "WINDOW" and r.width > 1 and _inside(r, x, y) for r in regions):
            return area, None
        for region in regions:
            if region.type == "WINDOW" and _inside(region, x, y):
                return area, region
    return None, None
