"""Array logic behind the write-back, kept free of bpy so it is tested without Blender.

Conventions: the backend labels triangles; the Blender mesh has polygons. `tri_poly[t]` is the
polygon that triangle t came from (Blender's `loop_triangles[t].polygon_index`).

Vertex-group policy for vertices shared by several parts: a vertex belongs, with weight 1.0, to
EVERY part whose faces use it. Each group therefore holds whole faces of its part (selecting the
group selects the part's faces, and an armature bone bound to it moves the part without tearing
its border), at the price that border vertices sit in two or more groups.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def polygon_labels(tri_labels: np.ndarray, tri_poly: np.ndarray, n_polygons: int, fill: int = -1) -> np.ndarray:
    """Per-triangle labels -> per-polygon labels (the polygon's first triangle wins)."""
    tri_labels = np.asarray(tri_labels)
    tri_poly = np.asarray(tri_poly, dtype=np.int64)
    if tri_labels.shape != tri_poly.shape:
        raise ValueError(f"{tri_labels.shape[0]} labels for {tri_poly.shape[0]} triangles")
    out = np.full(int(n_polygons), fill, dtype=np.int32)
    # reverse order: the first triangle of each polygon is written last and wins
    out[tri_poly[::-1]] = tri_labels[::-1]
    return out


def polygon_mask(tri_mask: np.ndarray, tri_poly: np.ndarray, n_polygons: int) -> np.ndarray:
    """A polygon is in the mask when any of its triangles is."""
    out = np.zeros(int(n_polygons), dtype=bool)
    out[np.asarray(tri_poly)[np.asarray(tri_mask, dtype=bool)]] = True
    return out


def compact_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel to 0..K-1 in order of first appearance (negative labels stay negative)."""
    labels = np.asarray(labels)
    out = np.full(labels.shape, -1, dtype=np.int32)
    valid = labels >= 0
    if not valid.any():
        return out
    uniq, first, inv = np.unique(labels[valid], return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int32)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq), dtype=np.int32)
    out[valid] = rank[inv]
    return out


def fan_triangles(corner_verts: np.ndarray, loop_total: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fan-triangulate polygons given as flat corner lists: (T,3) vertex indices, (T,) polygon."""
    corner_verts = np.asarray(corner_verts, dtype=np.int32)
    loop_total = np.asarray(loop_total, dtype=np.int64)
    n_tris = np.clip(loop_total - 2, 0, None)
    tri_poly = np.repeat(np.arange(len(loop_total), dtype=np.int32), n_tris)
    start = np.concatenate([[0], np.cumsum(loop_total)[:-1]]).astype(np.int64)
    # k-th triangle of a polygon: corners (0, k+1, k+2) of that polygon
    first_tri = np.concatenate([[0], np.cumsum(n_tris)[:-1]])
    k = np.arange(len(tri_poly), dtype=np.int64) - first_tri[tri_poly]
    base = start[tri_poly]
    tris = np.stack([corner_verts[base], corner_verts[base + k + 1], corner_verts[base + k + 2]], axis=1)
    return tris, tri_poly


def vertex_groups(
    poly_labels: np.ndarray, loop_vertex: np.ndarray, loop_total: np.ndarray, n_vertices: int
) -> dict[int, np.ndarray]:
    """Part id -> sorted vertex indices of that part (policy in the module docstring).

    Vectorised without sorting all (part, vertex) pairs: every used vertex gets one part by a
    scatter, then only the corners that disagree with it (the borders) are de-duplicated.
    """
    poly_labels = np.asarray(poly_labels, dtype=np.int32)
    loop_vertex = np.asarray(loop_vertex, dtype=np.int32)
    corner_part = np.repeat(poly_labels, np.asarray(loop_total))
    if poly_labels.size and poly_labels.min() < 0:  # unlabelled faces belong to no group
        keep = corner_part >= 0
        corner_part, loop_vertex = corner_part[keep], loop_vertex[keep]
    vertex_part = np.full(int(n_vertices), -1, dtype=np.int32)
    vertex_part[loop_vertex] = corner_part  # one part per vertex (the last corner written wins)
    border = corner_part != vertex_part[loop_vertex]  # corners whose vertex went to another part
    extra = np.unique(corner_part[border].astype(np.int64) * n_vertices + loop_vertex[border])
    used = np.flatnonzero(vertex_part >= 0).astype(np.int32)
    groups = _split_by(vertex_part[used], used)
    for part, verts in _split_by(extra // n_vertices, (extra % n_vertices).astype(np.int32)).items():
        # border vertices are never in the part their scatter chose, so no duplicates arise
        groups[part] = np.concatenate([groups[part], verts]) if part in groups else verts
    return groups


def _split_by(keys: np.ndarray, values: np.ndarray) -> dict[int, np.ndarray]:
    """{key: values with that key}, values keeping their order (stable counting sort)."""
    if keys.size == 0:
        return {}
    order = np.argsort(keys, kind="stable")
    keys, values = keys[order], values[order]
    cut = np.flatnonzero(np.diff(keys)) + 1
    starts = np.concatenate([[0], cut])
    ends = np.append(cut, len(keys))
    return {int(keys[s]): values[s:e] for s, e in zip(starts, ends)}


@dataclass
class Topology:
    """What the write-back needs of a mesh's connectivity, read once at the user's action (reading
    polygon offsets from Blender takes ~90 ms per million faces: not something a timer tick may do)."""

    corner_verts: np.ndarray  # (L,) vertex of each face corner
    loop_total: np.ndarray  # (P,) corners per polygon
    n_vertices: int

    @property
    def n_polygons(self) -> int:
        return int(self.loop_total.shape[0])


@dataclass
class GroupUpdate:
    """Vertex-group edits that turn the groups of `old` labels into those of `new` labels."""

    changes: dict  # part -> (vertices to remove, vertices to add, all its vertices)
    drop: list  # parts whose group must go
    counts: dict  # part -> vertex count under the new labels
    face_counts: np.ndarray | None = None  # faces per part id under the new labels


def group_update(old_labels: np.ndarray | None, new_labels: np.ndarray, topo: Topology) -> GroupUpdate:
    """Only the membership that changes is touched: re-cutting the hierarchy usually moves few
    vertices, and Blender's per-vertex group edits are what costs time."""
    new = vertex_groups(new_labels, topo.corner_verts, topo.loop_total, topo.n_vertices)
    old = {} if old_labels is None else vertex_groups(old_labels, topo.corner_verts, topo.loop_total, topo.n_vertices)
    empty = np.empty(0, dtype=np.int32)
    changes = {}
    for part, verts in new.items():
        before = old.get(part)
        if before is None:
            changes[part] = (empty, verts, verts)
        else:
            changes[part] = (
                np.setdiff1d(before, verts, assume_unique=True),
                np.setdiff1d(verts, before, assume_unique=True),
                verts,
            )
    labels = np.asarray(new_labels)
    faces = np.bincount(labels[labels >= 0]) if labels.size else np.zeros(0, dtype=np.int64)
    return GroupUpdate(changes, sorted(set(old) - set(new)), part_vertex_counts(new), faces)


def chunks(values: np.ndarray, size: int):
    for start in range(0, len(values), size):
        yield values[start : start + size]


def part_vertex_counts(groups: dict[int, np.ndarray]) -> dict[int, int]:
    return {p: int(v.size) for p, v in groups.items()}


def preview_material_indices(poly_labels: np.ndarray, first_preview_slot: int) -> np.ndarray:
    """Material index per polygon in preview mode: part k uses slot first_preview_slot + k."""
    out = np.add(np.asarray(poly_labels, dtype=np.int32), np.int32(first_preview_slot))
    return np.maximum(out, 0, out=out)  # in place: np.clip on 1M ints costs ~10x more


def part_centres(poly_labels: np.ndarray, poly_centres: np.ndarray, poly_areas: np.ndarray) -> dict[int, np.ndarray]:
    """Area-weighted centre of each part (falls back to the plain mean for zero-area parts)."""
    labels = np.asarray(poly_labels)
    valid = labels >= 0
    n = int(labels[valid].max()) + 1 if valid.any() else 0
    w = np.asarray(poly_areas, dtype=np.float64)[valid]
    c = np.asarray(poly_centres, dtype=np.float64)[valid]
    lab = labels[valid]
    wsum = np.bincount(lab, weights=w, minlength=n)
    count = np.bincount(lab, minlength=n)
    out = {}
    sums = np.stack([np.bincount(lab, weights=w * c[:, i], minlength=n) for i in range(3)], axis=1)
    means = np.stack([np.bincount(lab, weights=c[:, i], minlength=n) for i in range(3)], axis=1)
    for p in np.flatnonzero(count):
        out[int(p)] = sums[p] / wsum[p] if wsum[p] > 0 else means[p] / count[p]
    return out


@dataclass
class SelectionUpdate:
    """How a click changes the selected parts: replace, add (Shift) or remove (Ctrl)."""

    mode: str = "SET"  # SET | ADD | REMOVE

    @classmethod
    def from_modifiers(cls, shift: bool, ctrl: bool) -> SelectionUpdate:
        return cls("REMOVE" if ctrl else "ADD" if shift else "SET")

    def apply(self, selected: set[int], parts: set[int] | list[int]) -> set[int]:
        parts = {int(p) for p in parts}
        if self.mode == "ADD":
            return set(selected) | parts
        if self.mode == "REMOVE":
            return set(selected) - parts
        return parts


# ---- the granularity slider ---------------------------------------------------------------------
def granularity_to_scale(value: float) -> float:
    """The UI's granularity (coarse 0 ... fine 1) as the hierarchy's scale (fine 0 ... coarse 1) and
    back (the flip is its own inverse): the one place where the two directions meet."""
    return 1.0 - float(np.clip(value, 0.0, 1.0))


def slider_levels(height: np.ndarray) -> np.ndarray:
    """The distinct cut scales of a hierarchy (0 = the leaves ... 1 = the root), ascending."""
    h = np.asarray(height, dtype=np.float64)
    return np.unique(np.concatenate([[0.0], h[(h >= 0) & (h <= 1.0)], [1.0]]))


def slider_scale(levels: np.ndarray, granularity: float) -> float:
    """Slider position (coarse 0 ... fine 1) -> cut scale. Every distinct cut gets an equal share of
    the slider, however the engine spread its merge heights."""
    levels = np.asarray(levels, dtype=np.float64)
    k = int(round(granularity_to_scale(granularity) * (len(levels) - 1)))
    return float(levels[k])


def slider_position(levels: np.ndarray, scale: float) -> float:
    """Cut scale -> the slider position that gives it (the nearest level)."""
    levels = np.asarray(levels, dtype=np.float64)
    if len(levels) < 2:
        return 0.5
    k = int(np.argmin(np.abs(levels - float(scale))))
    return granularity_to_scale(k / (len(levels) - 1))


def marked_triangle_edges(triangles: np.ndarray, edge_verts: np.ndarray) -> np.ndarray:
    """(T, 3) bool: whether edge k of each triangle (corners k, k+1) is one of the mesh edges
    `edge_verts` ((M, 2) vertex pairs: the edges the artist marked). Diagonals that triangulate a
    polygon are no mesh edges, so they are never marked."""
    tris = np.asarray(triangles, dtype=np.int64)
    edge_verts = np.asarray(edge_verts, dtype=np.int64).reshape(-1, 2)
    if len(edge_verts) == 0:
        return np.zeros(tris.shape, dtype=bool)
    n = int(max(tris.max(initial=0), edge_verts.max(initial=0))) + 1
    marked = np.unique(edge_verts.min(axis=1) * n + edge_verts.max(axis=1))
    following = np.roll(tris, -1, axis=1)
    keys = np.minimum(tris, following) * n + np.maximum(tris, following)
    # a binary search in the few marked keys: much faster than isin's sort of every triangle edge
    return marked[np.minimum(np.searchsorted(marked, keys), len(marked) - 1)] == keys


UV_TOLERANCE = 1e-5  # Blender's UV editor treats corners this close as one UV vertex


def uv_cut_edges(topology: Topology, corner_edge: np.ndarray, uv: np.ndarray, n_edges: int) -> np.ndarray:
    """(E,) bool: the edges where the UV map is cut: the polygons on either side give an end of the
    edge different UVs, so the edge borders a UV island (marked as a seam or not). `corner_edge`:
    (L,) the edge from each face corner to the next; `uv`: (L, 2) per face corner."""
    loop_total = np.asarray(topology.loop_total, dtype=np.int64)
    corner_verts = np.asarray(topology.corner_verts)
    corner_edge = np.asarray(corner_edge, dtype=np.int64)
    following = np.arange(len(corner_verts))
    following[np.cumsum(loop_total) - 1] -= loop_total  # a polygon's last corner is followed by its first
    following += 1
    point = np.ascontiguousarray(uv, dtype=np.float32).view(np.complex64).ravel()  # u + iv: one value
    flip = corner_verts > corner_verts[following]  # the UVs of both ends, lower vertex first
    low = np.where(flip, point[following], point)
    high = np.where(flip, point, point[following])
    first_low, first_high = np.empty(n_edges, np.complex64), np.empty(n_edges, np.complex64)
    first_low[corner_edge[::-1]] = low[::-1]  # per edge, the UVs its first corner gives (no sort)
    first_high[corner_edge[::-1]] = high[::-1]
    differs = (np.abs(low - first_low[corner_edge]) > UV_TOLERANCE) | (
        np.abs(high - first_high[corner_edge]) > UV_TOLERANCE
    )
    cut = np.zeros(n_edges, dtype=bool)
    cut[corner_edge[differs]] = True
    return cut
