"""The face graph of a triangle mesh: welded vertices, faces joined across shared edges, the
edge geometry (lengths, dihedral angles, concavity) and components.

One owner for what the geometric engine, the learned engines' post-processing (`lifting`), the
metrics and the evaluations need; vectorised over faces and edges (no per-face Python loops).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import connected_components

from .mesh import triangle_edge_ends


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


DEFAULT_WELD_TOLERANCE = 1e-6  # relative to the bounding-box diagonal


def weld_vertices(vertices: np.ndarray, tolerance: float = DEFAULT_WELD_TOLERANCE) -> np.ndarray:
    """Map each vertex to a representative index; vertices within `tolerance` x bbox diagonal
    of each other (on a grid) share one. Returns (V,) int64."""
    diag = float(np.linalg.norm(np.ptp(vertices, axis=0))) if len(vertices) else 0.0
    if diag == 0.0 or tolerance <= 0:
        _, inv = np.unique(vertices, axis=0, return_inverse=True)
        return inv.ravel().astype(np.int64)
    cell = tolerance * diag
    q = np.floor((vertices - vertices.min(axis=0)) / cell).astype(np.int64)
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
    marked: np.ndarray | None = None  # (E,) bool: an edge the artist marked (sharp, UV seam); None: no marks


def build_dual_graph(
    vertices: np.ndarray,
    faces: np.ndarray,
    vertex_ids: np.ndarray,
    cancel_check=lambda: None,
    marked_edges: np.ndarray | None = None,
) -> DualGraph:
    """Faces joined across edges shared in the welded `vertex_ids`, with each face's normal, area
    and centroid and each shared edge's length, dihedral angle and concavity. `marked_edges`
    ((F, 3) bool, edge k of a face = corners k, k+1): the artist's marks; a shared edge is marked
    when a face on either side marks it."""
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
    marked = None if marked_edges is None else _marked_shared_edges(faces, vertex_ids, marked_edges, shared)
    return DualGraph(pairs, edge_length, concavity, dihedral, normals, areas, centroids, marked)


def _marked_shared_edges(faces, vertex_ids, marked_edges, shared) -> np.ndarray:
    """Per shared edge (welded vertex ids, lower first as `face_adjacency` gives them), whether any
    face marks it."""
    ends = np.asarray(vertex_ids)[triangle_edge_ends(faces)][np.asarray(marked_edges, dtype=bool)]  # (M, 2)
    n = int(np.asarray(vertex_ids).max(initial=0)) + 1
    marked_keys = np.sort(ends, axis=1) @ np.array([n, 1])
    return np.isin(shared @ np.array([n, 1]), marked_keys)
