"""The face graph of a triangle mesh: faces joined across shared edges, and its components.

One owner for what the geometric engine, the learned engines' post-processing (`lifting`), the
metrics and the evaluations need; vectorised over faces and edges (no per-face Python loops).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components


def face_adjacency(
    faces: np.ndarray, vertex_ids: np.ndarray | None = None, chain: str = "corner"
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs of faces sharing an edge. Returns (pairs (E,2) int64, shared edge (E,2) vertex ids),
    ordered by shared edge.

    `vertex_ids` maps vertices to welded representatives (so UV seams don't cut the graph).
    A non-manifold edge with k faces yields the k-1 pairs of consecutive faces around it; collapsed
    edges join nothing and a face never pairs with itself (a degenerate face can use one edge twice). `chain` is the order of the faces around an edge
    (and so which face comes first in a pair): "corner" = by the edge's corner slot in its face,
    then by face (the geometric engine's order), "face" = by face index (GeoSAM2's post-processing).
    """
    if chain not in ("corner", "face"):
        raise ValueError(f"chain must be 'corner' or 'face', got {chain!r}")
    f = np.asarray(faces, dtype=np.int64)
    if vertex_ids is not None:
        f = np.asarray(vertex_ids)[f]
    n = f.shape[0]
    if n == 0:
        return np.empty((0, 2), np.int64), np.empty((0, 2), np.int64)
    if chain == "corner":
        edges = np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]])
        owner = np.tile(np.arange(n, dtype=np.int64), 3)
    else:
        edges = f[:, [0, 1, 1, 2, 2, 0]].reshape(-1, 2)
        owner = np.repeat(np.arange(n, dtype=np.int64), 3)
    edges.sort(axis=1)
    keep = edges[:, 0] != edges[:, 1]  # collapsed edges of degenerate faces join nothing
    edges, owner = edges[keep], owner[keep]
    key = edges[:, 0] * (int(edges.max(initial=0)) + 1) + edges[:, 1]
    order = np.argsort(key, kind="stable")  # stable: deterministic order around an edge
    key, owner, edges = key[order], owner[order], edges[order]
    same = (key[1:] == key[:-1]) & (owner[1:] != owner[:-1])
    idx = np.flatnonzero(same)
    pairs = np.stack([owner[idx], owner[idx + 1]], axis=1)
    return pairs, edges[idx]


def exact_vertex_ids(vertices: np.ndarray) -> np.ndarray:
    """(V,) int64: vertices at identical positions share one id (exact welding)."""
    _, inverse = np.unique(np.asarray(vertices), axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int64)


def adjacency_matrix(pairs: np.ndarray, n: int, weights: np.ndarray | None = None) -> sparse.csr_matrix:
    """Symmetric sparse (n, n) matrix of the face graph (duplicate pairs add up their weights)."""
    w = np.ones(len(pairs)) if weights is None else np.asarray(weights, dtype=np.float64)
    rows = np.concatenate([pairs[:, 0], pairs[:, 1]])
    cols = np.concatenate([pairs[:, 1], pairs[:, 0]])
    return sparse.coo_matrix((np.concatenate([w, w]), (rows, cols)), shape=(n, n)).tocsr()


def dual_components(pairs: np.ndarray, n: int) -> np.ndarray:
    """Connected components of n faces joined by `pairs`: (n,) int64 labels 0..K-1, numbered in
    order of their lowest face."""
    _, labels = connected_components(adjacency_matrix(pairs, n), directed=False)
    return labels.astype(np.int64)


def label_components(labels: np.ndarray, pairs: np.ndarray, unlabelled_apart: bool = False) -> np.ndarray:
    """(F,) int64 component id of the face-connected runs of one label. With `unlabelled_apart`,
    faces with a negative label join nothing (each is its own component)."""
    labels = np.asarray(labels).ravel()
    same = labels[pairs[:, 0]] == labels[pairs[:, 1]]
    if unlabelled_apart:
        same &= labels[pairs[:, 0]] >= 0
    return dual_components(pairs[same], labels.size)
