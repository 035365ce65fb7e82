"""Face normals and Blender-style auto-smooth corner normals.

Both reference render scripts turn on Blender's auto smooth at 30 degrees before rendering the
normal pass, so the models were trained on shading normals: smooth across edges flatter than
30 degrees, sharp across steeper ones. A corner's normal here is the corner-angle-weighted mean of
the normals of the faces around its vertex that are within the angle of the corner's own face
(Blender groups faces into fans bounded by sharp edges; "within the angle of this face" is the
same on ordinary meshes and needs no fan walk). Vertices are taken as given (split vertices stay
split, as in Blender).
"""
from __future__ import annotations

import numpy as np


def face_normals(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3) unit normals by the right-hand rule (zero for degenerate faces)."""
    tri = vertices[faces]
    n = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    length = np.linalg.norm(n, axis=1, keepdims=True)
    return np.divide(n, length, out=np.zeros_like(n), where=length > 0)


def corner_angles(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(F, 3) interior angle of each triangle at each of its corners."""
    tri = vertices[faces]
    out = np.empty(faces.shape, dtype=np.float64)
    for i in range(3):
        a = tri[:, (i + 1) % 3] - tri[:, i]
        b = tri[:, (i + 2) % 3] - tri[:, i]
        la, lb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        cos = np.einsum("ij,ij->i", a, b) / np.maximum(la * lb, 1e-300)
        out[:, i] = np.arccos(np.clip(cos, -1.0, 1.0))
    return out


def smooth_corner_normals(vertices: np.ndarray, faces: np.ndarray, angle_deg: float = 30.0,
                          fnormal: np.ndarray | None = None) -> np.ndarray:
    """(F, 3, 3) unit normal at each face corner with auto smooth at `angle_deg`.

    Vectorised over all (corner, face around the same vertex) pairs: about sum(degree^2) pairs."""
    f = len(faces)
    fn = face_normals(vertices, faces) if fnormal is None else fnormal
    if angle_deg <= 0:
        return np.repeat(fn[:, None, :], 3, axis=1)
    weight = corner_angles(vertices, faces).reshape(-1)
    vert = faces.reshape(-1)
    corner_face = np.repeat(np.arange(f), 3)
    order = np.argsort(vert, kind="stable")
    sorted_vert = vert[order]
    starts = np.flatnonzero(np.r_[True, sorted_vert[1:] != sorted_vert[:-1]])
    sizes = np.diff(np.r_[starts, len(order)])
    group_size = np.repeat(sizes, sizes)  # per sorted corner: how many corners share its vertex
    group_start = np.repeat(starts, sizes)
    # every ordered pair (i, j) of corners around the same vertex
    i = np.repeat(np.arange(len(order)), group_size)
    first_pair = np.cumsum(group_size) - group_size
    j = group_start[i] + (np.arange(len(i)) - np.repeat(first_pair, group_size))
    ci, cj = order[i], order[j]
    fi, fj = corner_face[ci], corner_face[cj]
    cos_limit = np.cos(np.radians(angle_deg)) - 1e-9
    keep = np.einsum("ij,ij->i", fn[fi], fn[fj]) >= cos_limit
    ci, fj, w = ci[keep], fj[keep], weight[cj[keep]]
    out = np.zeros((3 * f, 3))
    for c in range(3):
        out[:, c] = np.bincount(ci, weights=w * fn[fj, c], minlength=3 * f)
    length = np.linalg.norm(out, axis=1, keepdims=True)
    flat = np.repeat(fn, 3, axis=0)
    out = np.where(length > 1e-12, out / np.maximum(length, 1e-300), flat)  # degenerate: flat normal
    return out.reshape(f, 3, 3)
