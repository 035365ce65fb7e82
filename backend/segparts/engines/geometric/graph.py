"""The dual graph of a triangle mesh (faces joined across shared edges) and its edge geometry.

Everything here is vectorised over faces/edges: no per-face Python loops.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components


def face_adjacency(faces: np.ndarray, vertex_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of faces sharing an edge. Returns (pairs (E,2) int64, shared edge (E,2) vertex ids).

    `vertex_ids` maps vertices to welded representatives (so UV seams don't cut the graph).
    A non-manifold edge with k faces yields the k-1 pairs of consecutive faces around it; repeated
    (degenerate) edges of one face are ignored.
    """
    f = np.asarray(faces, dtype=np.int64)
    if vertex_ids is not None:
        f = vertex_ids[f]
    n = f.shape[0]
    if n == 0:
        return np.empty((0, 2), np.int64), np.empty((0, 2), np.int64)
    edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
    edges.sort(axis=1)
    owner = np.tile(np.arange(n, dtype=np.int64), 3)
    keep = edges[:, 0] != edges[:, 1]  # collapsed edges of degenerate faces join nothing
    edges, owner = edges[keep], owner[keep]
    key = edges[:, 0] * (int(edges.max(initial=0)) + 1) + edges[:, 1]
    order = np.argsort(key, kind="stable")  # stable: deterministic order around an edge
    key, owner, edges = key[order], owner[order], edges[order]
    same = (key[1:] == key[:-1]) & (owner[1:] != owner[:-1])
    idx = np.flatnonzero(same)
    pairs = np.stack([owner[idx], owner[idx + 1]], axis=1)
    return pairs, edges[idx]


def adjacency_matrix(pairs: np.ndarray, n: int, weights: np.ndarray | None = None) -> sparse.csr_matrix:
    """Symmetric sparse matrix of the dual graph (duplicate pairs keep the smallest weight)."""
    w = np.ones(len(pairs)) if weights is None else np.asarray(weights, dtype=np.float64)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    m = sparse.coo_matrix((np.concatenate([w, w]), (rows, cols)), shape=(n, n)).tocsr()
    return m


def dual_components(pairs: np.ndarray, n: int) -> np.ndarray:
    """Edge-connected components of the faces, (F,) int64 labels 0..K-1."""
    _, labels = connected_components(adjacency_matrix(pairs, n), directed=False)
    return labels.astype(np.int64)


@dataclass
class DualGraph:
    """Face normals/areas/centroids and, per dual edge, its length and dihedral concavity."""

    pairs: np.ndarray  # (E, 2) faces sharing an edge
    edge_length: np.ndarray  # (E,) length of the shared edge
    concavity: np.ndarray  # (E,) dihedral angle in [0, pi] where the crease is concave, else 0
    dihedral: np.ndarray  # (E,) unsigned angle between the two normals, [0, pi]
    normals: np.ndarray  # (F, 3) unit normals (zero for degenerate faces)
    areas: np.ndarray  # (F,)
    centroids: np.ndarray  # (F, 3)


def build_dual_graph(vertices: np.ndarray, faces: np.ndarray, vertex_ids: np.ndarray,
                     cancel_check=lambda: None) -> DualGraph:
    tri = vertices[faces]
    centroids = tri.mean(axis=1)
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    norm = np.linalg.norm(cross, axis=1)
    areas = 0.5 * norm
    normals = np.divide(cross, norm[:, None], out=np.zeros_like(cross), where=norm[:, None] > 0)
    cancel_check()
    pairs, shared = face_adjacency(faces, vertex_ids)
    cancel_check()
    # shared edges are in welded ids; any original vertex with that id has (nearly) that position
    rep_pos = np.zeros((int(vertex_ids.max(initial=-1)) + 1, 3))
    rep_pos[vertex_ids] = vertices
    edge_length = np.linalg.norm(rep_pos[shared[:, 0]] - rep_pos[shared[:, 1]], axis=1)
    a, b = pairs[:, 0], pairs[:, 1]
    cos = np.clip((normals[a] * normals[b]).sum(axis=1), -1.0, 1.0)
    dihedral = np.arccos(cos)
    # concave when each face's centroid lies above the other's plane (a valley between them)
    rel = centroids[b] - centroids[a]
    side = (rel * normals[a]).sum(axis=1) - (rel * normals[b]).sum(axis=1)
    concavity = np.where(side > 0, dihedral, 0.0)
    return DualGraph(pairs, edge_length, concavity, dihedral, normals, areas, centroids)
