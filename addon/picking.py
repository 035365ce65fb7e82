"""Ray -> face -> part, without bpy (the modal pick tool uses it; tests drive it directly).

In Blender the ray is cast against a BVHTree of the ORIGINAL mesh's triangles (object space), so
labels follow the original faces even with modifiers; `first_hit` is the same query in numpy,
used where no BVH is at hand and by the tests to check the BVH route.

Moving along the hierarchy: the faces under the mouse sit on a path leaf -> ... -> root. The part
of the current cut is one node on that path; `level` moves up (coarser, > 0) or down (finer, < 0).
"""
from __future__ import annotations

from dataclasses import dataclass, field

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
    hierarchy: object | None = None
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
