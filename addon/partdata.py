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


def loop_labels(poly_labels: np.ndarray, loop_total: np.ndarray) -> np.ndarray:
    """Each loop (face corner) gets its polygon's label."""
    return np.repeat(np.asarray(poly_labels), np.asarray(loop_total))


def vertex_groups(poly_labels: np.ndarray, loop_vertex: np.ndarray, loop_total: np.ndarray,
                  n_vertices: int) -> dict[int, np.ndarray]:
    """Part id -> sorted vertex indices of that part (policy in the module docstring).

    Vectorised without sorting all (part, vertex) pairs: every used vertex gets one part by a
    scatter, then only the corners that disagree with it (the borders) are de-duplicated.
    """
    corner_part = loop_labels(poly_labels, loop_total).astype(np.int64)
    loop_vertex = np.asarray(loop_vertex, dtype=np.int64)
    keep = corner_part >= 0
    corner_part, loop_vertex = corner_part[keep], loop_vertex[keep]
    vertex_part = np.full(int(n_vertices), -1, dtype=np.int64)
    vertex_part[loop_vertex] = corner_part
    border = corner_part != vertex_part[loop_vertex]
    extra = np.unique(corner_part[border] * n_vertices + loop_vertex[border])
    pairs_part = np.concatenate([vertex_part[vertex_part >= 0], extra // n_vertices])
    pairs_vert = np.concatenate([np.flatnonzero(vertex_part >= 0), extra % n_vertices])
    order = np.lexsort((pairs_vert, pairs_part))
    pairs_part, pairs_vert = pairs_part[order], pairs_vert[order]
    parts, starts = np.unique(pairs_part, return_index=True)
    ends = np.append(starts[1:], len(pairs_part))
    return {int(p): pairs_vert[s:e] for p, s, e in zip(parts, starts, ends)}


def part_vertex_counts(groups: dict[int, np.ndarray]) -> dict[int, int]:
    return {p: int(v.size) for p, v in groups.items()}


def preview_material_indices(poly_labels: np.ndarray, first_preview_slot: int) -> np.ndarray:
    """Material index per polygon in preview mode: part k uses slot first_preview_slot + k."""
    return (np.asarray(poly_labels, dtype=np.int32) + np.int32(first_preview_slot)).clip(0)


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
    def from_modifiers(cls, shift: bool, ctrl: bool) -> "SelectionUpdate":
        return cls("REMOVE" if ctrl else "ADD" if shift else "SET")

    def apply(self, selected: set[int], parts: set[int] | list[int]) -> set[int]:
        parts = set(int(p) for p in parts)
        if self.mode == "ADD":
            return set(selected) | parts
        if self.mode == "REMOVE":
            return set(selected) - parts
        return parts
