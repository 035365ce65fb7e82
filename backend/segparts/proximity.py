"""Point -> surface queries shared by every engine and by lifting: the exact closest point on a
mesh and the face it lies on, for 3D clicks.

trimesh's `proximity.closest_point` needs rtree (absent here), so the index is k-d trees over face
centroids with an exact point-triangle check of the faces that can still win. Every point of a
face lies within `radius` (its farthest corner) of its centroid, so a face closer than the best
exact distance `d` found so far has its centroid within `d + radius`. Faces are grouped by radius
(powers of two) with one tree per group, so a few huge triangles next to many small ones do not
widen the search among the small ones. The index is built once per Mesh object and kept while
the mesh lives (clicks after the first cost well under a millisecond).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

import numpy as np

from .mesh import Mesh

_MAX_GROUPS = 24  # radii below largest / 2**23 share the last group
_SEED_NEIGHBOURS = 4  # nearest centroids per group whose exact distance gives the first bound


@dataclass
class _Group:
    faces: np.ndarray  # (n,) face indices
    tree: Any  # scipy cKDTree over their centroids
    radius: float  # largest centroid-to-corner distance in the group


class SurfaceIndex:
    """Exact closest-point queries on one triangle mesh."""

    vertices_ref: np.ndarray  # the Mesh arrays it was built from (set by surface_index)
    faces_ref: np.ndarray

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        from scipy.spatial import cKDTree

        # kept by reference: candidate triangles are gathered per query, not stored (72 B/face)
        self.vertices = np.asarray(vertices, dtype=np.float64)
        self.faces = np.asarray(faces, dtype=np.int64)
        if len(self.faces) == 0:
            raise ValueError("the mesh has no faces")
        triangles = self.vertices[self.faces]
        centroids = triangles.mean(axis=1)
        radius = np.linalg.norm(triangles - centroids[:, None], axis=2).max(axis=1)
        del triangles
        largest = float(radius.max())
        with np.errstate(divide="ignore"):
            level = np.floor(np.log2(largest / np.maximum(radius, 1e-300))) if largest > 0 else np.zeros(len(radius))
        level = np.clip(level, 0, _MAX_GROUPS - 1).astype(np.int64)
        self.groups = []
        for lv in np.unique(level):
            idx = np.flatnonzero(level == lv)
            self.groups.append(_Group(idx, cKDTree(centroids[idx]), float(radius[idx].max())))

    def query(self, points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(face (P,) int64, distance (P,), closest point (P, 3)) for points (P, 3); ties go to the
        lowest face index."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
        n = len(points)
        # 1. an upper bound per point: exact distances to a few nearest centroids of every group
        seeds = np.concatenate(
            [
                g.faces[np.asarray(g.tree.query(points, k=min(_SEED_NEIGHBOURS, g.tree.n))[1]).reshape(n, -1)]
                for g in self.groups
            ],
            axis=1,
        )
        seed_points = np.repeat(np.arange(n), seeds.shape[1])
        seed_closest = self._closest(seed_points, seeds.ravel(), points)
        bound = np.linalg.norm(seed_closest - points[seed_points], axis=1).reshape(n, -1).min(axis=1)
        # 2. every face that can beat it, checked exactly
        slack = 1e-9 * (1.0 + bound)
        point_blocks, face_blocks = [], []
        for g in self.groups:
            hits = g.tree.query_ball_point(points, bound + g.radius + slack)
            counts = np.fromiter(map(len, hits), dtype=np.int64, count=n)
            point_blocks.append(np.repeat(np.arange(n), counts))
            face_blocks.append(g.faces[np.concatenate([np.asarray(h, dtype=np.int64) for h in hits])])
        point_idx, face_idx = np.concatenate(point_blocks), np.concatenate(face_blocks)
        closest = self._closest(point_idx, face_idx, points)
        dist = np.linalg.norm(closest - points[point_idx], axis=1)
        order = np.lexsort((face_idx, dist, point_idx))  # per point: nearest first, then lowest face
        first = order[np.r_[True, point_idx[order][1:] != point_idx[order][:-1]]]
        return face_idx[first], dist[first], closest[first]

    def _closest(self, point_idx, face_idx, points):
        from trimesh.triangles import closest_point  # exact, copes with degenerate triangles

        return closest_point(self.vertices[self.faces[face_idx]], points[point_idx])


_INDEXES: weakref.WeakKeyDictionary[Mesh, SurfaceIndex] = weakref.WeakKeyDictionary()
_LOCK = threading.Lock()


def surface_index(mesh: Mesh) -> SurfaceIndex:
    """The mesh's index, built on first use and kept as long as the Mesh object lives."""
    with _LOCK:
        index = _INDEXES.get(mesh)
    # rebuilt when the mesh's arrays were replaced (Mesh arrays are never edited in place)
    if index is None or index.vertices_ref is not mesh.vertices or index.faces_ref is not mesh.faces:
        index = SurfaceIndex(mesh.vertices, mesh.faces)
        index.vertices_ref, index.faces_ref = mesh.vertices, mesh.faces
        with _LOCK:
            _INDEXES[mesh] = index
    return index


def closest_point(mesh: Mesh, points) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(face, distance, closest point) on the surface of `mesh` for each of `points` (P, 3)."""
    points = np.asarray(points, dtype=np.float64)
    if points.ndim not in (1, 2) or points.shape[-1] != 3 or not np.isfinite(points).all():
        raise ValueError("points must be finite (P, 3) coordinates")
    return surface_index(mesh).query(points)


def nearest_face(mesh: Mesh, point) -> int:
    """The face a 3D click lies on: the face of the closest surface point (exact)."""
    point = np.asarray(point, dtype=np.float64)
    if point.shape != (3,) or not np.isfinite(point).all():
        raise ValueError("a click point must be 3 finite numbers")
    return int(closest_point(mesh, point[None])[0][0])
