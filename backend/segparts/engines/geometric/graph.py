"""The edge geometry of a triangle mesh's dual graph (faces joined across shared edges, built by
`segparts.meshgraph`): lengths, dihedral angles and concavity per shared edge.

Everything here is vectorised over faces/edges: no per-face Python loops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...meshgraph import face_adjacency


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


def build_dual_graph(
    vertices: np.ndarray, faces: np.ndarray, vertex_ids: np.ndarray, cancel_check=lambda: None
) -> DualGraph:
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
