"""The mesh as the backend sees it: world orientation (numpy only).

GeoSAM2 was trained on world-space normal and point maps of Z-up scenes, so the add-on uploads
vertices turned by the linear part of the object's `matrix_world` (rotation and scale; the
translation is dropped, the backend centres the mesh anyway). A mirroring matrix (negative
determinant) would turn every face inside out: two corners of each triangle are swapped, and so
are the per-corner appearance arrays, so normals stay outward and colours stay on their corners.
Shading normals (sent for the engines that render) turn by the inverse transpose.
Triangle order is unchanged, so labels per face need no mapping back. Click points the add-on
sends go through the same matrix (picking.click_prompt).
"""

from __future__ import annotations

import numpy as np

PER_CORNER = ("corner_colors", "uv", "normals")  # appearance arrays with one row per triangle corner


def linear_part(matrix_world) -> np.ndarray:
    """(3, 3) rotation and scale of a 4x4 (mathutils.Matrix or array)."""
    return np.array(matrix_world, dtype=np.float64)[:3, :3]


def mirrors(linear: np.ndarray) -> bool:
    return bool(np.linalg.det(linear) < 0)


def swap_corners(per_corner: np.ndarray) -> np.ndarray:
    """Corners (0, 1, 2) -> (0, 2, 1) of every triangle: the opposite winding."""
    return np.ascontiguousarray(np.asarray(per_corner)[:, [0, 2, 1]])


def to_world(vertices: np.ndarray, faces: np.ndarray, appearance: dict, linear: np.ndarray):
    """(vertices, faces, appearance) turned by `linear`; the winding (and the per-corner
    appearance arrays) flipped when it mirrors."""
    linear = np.asarray(linear, dtype=np.float64)
    if np.array_equal(linear, np.eye(3)):  # an untransformed object: the arrays as they are
        return np.asarray(vertices, dtype=np.float64), faces, appearance
    vertices = np.asarray(vertices, dtype=np.float64) @ linear.T
    if appearance.get("normals") is not None:  # normals turn by the inverse transpose
        turned = appearance["normals"] @ np.linalg.inv(linear).astype(np.float32)
        turned /= np.maximum(np.linalg.norm(turned, axis=-1, keepdims=True), 1e-12)
        appearance = {**appearance, "normals": turned}
    if not mirrors(linear):
        return vertices, faces, appearance
    appearance = {name: swap_corners(values) if name in PER_CORNER else values for name, values in appearance.items()}
    return vertices, swap_corners(faces), appearance
