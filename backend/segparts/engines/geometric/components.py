"""Connected components of a triangle mesh, with vertices welded within a tolerance so that
UV-seam or normal splits (duplicated vertices at the same position) don't count as parts."""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

DEFAULT_WELD_TOLERANCE = 1e-6  # relative to the bounding-box diagonal


def weld_vertices(vertices: np.ndarray, tolerance: float = DEFAULT_WELD_TOLERANCE) -> np.ndarray:
    """Map each vertex to a representative index; vertices within `tolerance` x bbox diagonal
    of each other (on a grid) share one. Returns (V,) int64."""
    span = np.ptp(vertices, axis=0).max() if len(vertices) else 0.0
    diag = float(np.linalg.norm(np.ptp(vertices, axis=0))) if len(vertices) else 0.0
    if diag == 0.0 or tolerance <= 0:
        _, inv = np.unique(vertices, axis=0, return_inverse=True)
        return inv.ravel().astype(np.int64)
    cell = tolerance * diag
    q = np.floor((vertices - vertices.min(axis=0)) / cell).astype(np.int64)
    del span
    dims = q.max(axis=0) + 1
    if float(dims[0]) * float(dims[1]) * float(dims[2]) < 2.0**62:
        # one int64 key per grid cell: a 1-D unique is much faster than unique over rows
        key = (q[:, 0] * dims[1] + q[:, 1]) * dims[2] + q[:, 2]
        _, inv = np.unique(key, return_inverse=True)
    else:
        _, inv = np.unique(q, axis=0, return_inverse=True)
    return inv.ravel().astype(np.int64)


def face_components(faces: np.ndarray, vertex_ids: np.ndarray) -> np.ndarray:
    """Label faces by connected component, faces being connected when they share a (welded)
    vertex. Returns (F,) int32 labels 0..K-1."""
    welded = vertex_ids[faces]  # (F, 3)
    n_faces = faces.shape[0]
    n_verts = int(welded.max()) + 1
    rows = np.repeat(np.arange(n_faces), 3)
    incidence = sparse.csr_matrix((np.ones(rows.size, np.int8), (rows, welded.ravel())), shape=(n_faces, n_verts))
    # faces and vertices as one bipartite graph: components of it are mesh pieces
    graph = sparse.bmat([[None, incidence], [incidence.T, None]], format="csr")
    _, labels = connected_components(graph, directed=False)
    return labels[:n_faces].astype(np.int32)
