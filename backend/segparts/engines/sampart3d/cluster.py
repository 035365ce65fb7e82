"""Clustering the grouping field per scale (HDBSCAN, the release's parameters), noise
reassignment, per-face voting, and a hierarchy across the standard scales for the slider."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from ...hierarchy import Hierarchy
from ...lifting import mode_by_group

SCALES = (0.0, 0.5, 1.0, 1.5, 2.0)  # the release's evaluation scales
HDBSCAN_PARAMS = dict(min_cluster_size=30, min_samples=30, cluster_selection_epsilon=0.1, allow_single_cluster=False)


def cluster_points(features: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """HDBSCAN labels of the grid points; noise takes the label of the nearest (3D) clustered
    point; all noise -> one part."""
    import hdbscan

    if len(features) <= HDBSCAN_PARAMS["min_cluster_size"]:
        return np.zeros(len(features), dtype=np.int64)
    labels = hdbscan.HDBSCAN(**HDBSCAN_PARAMS).fit_predict(np.asarray(features, dtype=np.float64))
    noise = labels < 0
    if noise.all():
        return np.zeros(len(features), dtype=np.int64)
    if noise.any():
        _, nearest = cKDTree(positions[~noise]).query(positions[noise], k=1)
        labels[noise] = labels[~noise][nearest]
    return labels.astype(np.int64)


def face_labels(sample_labels: np.ndarray, sample_face: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Majority vote of each face's samples; faces without samples take the nearest voted face's label."""
    n_faces = len(centroids)
    labels = mode_by_group(np.asarray(sample_face), np.asarray(sample_labels), n_faces).astype(np.int64)
    unvoted = labels < 0
    if unvoted.any():
        if unvoted.all():
            raise ValueError("no face received a point label")
        _, nearest = cKDTree(centroids[~unvoted]).query(centroids[unvoted], k=1)
        labels[unvoted] = labels[~unvoted][nearest]
    _, compact = np.unique(labels, return_inverse=True)
    return compact.reshape(-1).astype(np.int32)


def hierarchy_from_levels(levels: list[np.ndarray], areas: np.ndarray | None = None) -> Hierarchy:
    """A tree over per-face labelings ordered fine -> coarse: every cluster of a level hangs under
    the cluster of the next coarser level that covers most of its area. Level k (of K) sits at
    height k / (K - 1), the coarsest just below the root, so a slider value s in [0, 1] lands on
    the level of SAMPart3D scale 2 s (rounded down to the standard scales)."""
    if not levels:
        raise ValueError("no levels to build a hierarchy from")
    areas = np.ones(len(levels[0])) if areas is None else np.asarray(areas, dtype=np.float64)
    leaf = _compact(levels[0])
    node_of_label = [np.arange(leaf.max() + 1)]  # level 0: label -> node id
    parent: list[int] = [-1] * int(leaf.max() + 1)
    height: list[float] = [0.0] * int(leaf.max() + 1)
    current = leaf
    n_levels = len(levels)
    for k in range(1, n_levels):
        coarse = _compact(levels[k])
        n_fine, n_coarse = int(current.max()) + 1, int(coarse.max()) + 1
        overlap = np.zeros((n_fine, n_coarse))
        np.add.at(overlap, (current, coarse), areas)
        best = overlap.argmax(axis=1)  # coarse cluster of each fine cluster
        used, new_id = np.unique(best, return_inverse=True)
        first_node = len(parent)
        fine_nodes = node_of_label[-1]
        for fine in range(n_fine):
            parent[fine_nodes[fine]] = first_node + int(new_id[fine])
        parent += [-1] * len(used)
        height += [min(k / (n_levels - 1), 0.999)] * len(used)
        node_of_label.append(first_node + np.arange(len(used)))
        current = new_id.reshape(-1)[current]  # faces' cluster at this level, through the tree
    top = node_of_label[-1]
    if len(top) > 1:
        root = len(parent)
        for node in top:
            parent[node] = root
        parent.append(-1)
        height.append(1.0)
    else:
        height[-1] = 1.0
    return Hierarchy(leaf, np.array(parent), np.array(height))


def _compact(labels: np.ndarray) -> np.ndarray:
    _, inv = np.unique(np.asarray(labels), return_inverse=True)
    return inv.reshape(-1).astype(np.int64)
