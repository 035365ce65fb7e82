"""Face normals, the file's own shading normals, and Blender-style auto-smooth corner normals.

When the mesh carries its own normals (`Appearance.normals`: glTF NORMAL, OBJ vn, Blender's split
normals and flat/smooth faces) they are what Blender shows and what GeoSAM2's release renders, so
they are used as given (`file_corner_normals`); only meshes without normals get the auto smooth.

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


def file_corner_normals(
    normals: np.ndarray, faces: np.ndarray, fnormal: np.ndarray | None = None, vertices: np.ndarray | None = None
) -> np.ndarray:
    """(F, 3, 3) unit corner normals from a file's normals: per vertex (V, 3), gathered by the
    faces, or per face corner (F, 3, 3) (split normals; a flat face has its face normal at all
    three corners). Zero-length or non-finite normals fall back to the face normal."""
    faces = np.asarray(faces, dtype=np.int64)
    n = np.asarray(normals, dtype=np.float64)
    if n.ndim == 3 and n.shape == (len(faces), 3, 3):
        corner = n.copy()
    elif n.ndim == 2 and n.shape[1] == 3 and (len(faces) == 0 or int(faces.max()) < len(n)):
        corner = n[faces]
    else:
        raise ValueError(f"normals must be per vertex (V, 3) or per face corner ({len(faces)}, 3, 3), got {n.shape}")
    length = np.linalg.norm(corner, axis=2, keepdims=True)
    usable = np.isfinite(length) & (length > 1e-12)
    if fnormal is None:
        if vertices is None:
            raise ValueError("file_corner_normals needs the face normals or the vertices")
        fnormal = face_normals(np.asarray(vertices, dtype=np.float64), faces)
    fallback = np.repeat(np.asarray(fnormal, dtype=np.float64)[:, None, :], 3, axis=1)
    return np.where(usable, corner / np.where(usable, length, 1.0), fallback)


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


def smooth_corner_normals(
    vertices: np.ndarray,
    faces: np.ndarray,
    angle_deg: float = 30.0,
    fnormal: np.ndarray | None = None,
    max_block: int = 2_000_000,
) -> np.ndarray:
    """(F, 3, 3) unit normal at each face corner with auto smooth at `angle_deg`.

    Corners are grouped by the degree d of their vertex; each group is one batched (d x d) matrix
    product of face normals (which faces around the vertex are within the angle of which), in
    blocks of at most `max_block` pairs so memory stays bounded on million-face meshes."""
    f = len(faces)
    fn = face_normals(vertices, faces) if fnormal is None else fnormal
    if angle_deg <= 0:
        return np.repeat(fn[:, None, :], 3, axis=1)
    fn32 = fn.astype(np.float32)
    weight = corner_angles(vertices, faces).reshape(-1).astype(np.float32)
    corner_face = np.repeat(np.arange(f), 3)
    order = np.argsort(faces.reshape(-1), kind="stable")  # corners grouped by vertex
    sorted_vert = faces.reshape(-1)[order]
    starts = np.flatnonzero(np.r_[True, sorted_vert[1:] != sorted_vert[:-1]])
    degree = np.diff(np.r_[starts, len(order)])
    cos_limit = np.float32(np.cos(np.radians(angle_deg)) - 1e-6)
    out = np.zeros((3 * f, 3), dtype=np.float32)
    for d in np.unique(degree):
        groups = starts[degree == d]
        step = max(1, max_block // int(d * d))
        for g0 in range(0, len(groups), step):
            corners = order[groups[g0 : g0 + step, None] + np.arange(d)]  # (n, d) corner ids
            normals = fn32[corner_face[corners]]  # (n, d, 3)
            near = np.matmul(normals, normals.transpose(0, 2, 1)) >= cos_limit  # (n, d, d)
            out[corners] = np.matmul(near * weight[corners][:, None, :], normals)
    length = np.linalg.norm(out, axis=1, keepdims=True)
    flat = np.repeat(fn32, 3, axis=0)
    out = np.where(length > 1e-12, out / np.maximum(length, 1e-30), flat)  # degenerate: flat normal
    return out.reshape(f, 3, 3).astype(np.float64)
