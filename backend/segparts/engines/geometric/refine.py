"""Border refinement at the automatic level: the patches' borders come from a greedy
over-segmentation and can run across flat surface in staircases; a minimum cut in a band of faces
around each border between two parts moves it onto the nearest crease or valley.

The capacity of a dual edge falls with the bend across it (Katz & Tal 2003, "Hierarchical mesh
decomposition using fuzzy clustering and cuts"): length / (1 + bend / mean bend in the band),
bend = 1 - cos(dihedral), a tenth of that where the edge is convex. The band's outer rims are tied
to their own part (infinite capacity), so a cut never leaves the band and small parts that fit
inside a band are left as they are.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from ...meshgraph import DualGraph, adjacency_matrix

BAND_RINGS = 3  # faces up to this many dual steps from a border may change sides
CONVEX_WEIGHT = 0.1  # a convex bend counts a tenth of a concave one (Katz & Tal's eta)
CAPACITY_SCALE = 1_000_000  # max-flow needs integer capacities


def refine_borders(
    graph: DualGraph, leaf_labels: np.ndarray, part: np.ndarray, cancel_check=lambda: None
) -> np.ndarray:
    """Leaf labels with the faces near each border between two parts (`part`, per face) moved to
    the side a minimum cut through the band chooses; a moved face takes the leaf of a neighbour
    on its new side (a leaf may be left empty: `Hierarchy.without_empty_leaves` drops it).
    `graph.pairs` must only join faces that may share a part (one unit)."""
    a, b = graph.pairs[:, 0], graph.pairs[:, 1]
    cross = part[a] != part[b]
    if not cross.any():
        return leaf_labels
    n = len(part)
    adjacency = adjacency_matrix(graph.pairs, n)
    bend = (1.0 - np.cos(graph.dihedral)) * np.where(graph.concavity > 0, 1.0, CONVEX_WEIGHT)
    new_part = part.copy()
    border_pairs = np.unique(np.sort(np.stack([part[a[cross]], part[b[cross]]], axis=1), axis=1), axis=0)
    for p, q in border_pairs.tolist():
        cut_pair(adjacency, graph, bend, part, new_part, p, q)
        cancel_check()
    return follow_leaves(adjacency, leaf_labels, part, new_part)


def ring_distance(adjacency: sparse.csr_matrix, seeds: np.ndarray, allowed: np.ndarray, rings: int) -> np.ndarray:
    """Dual steps from the seed faces inside `allowed` (rings + 1 for farther or unreachable)."""
    dist = np.full(adjacency.shape[0], rings + 1, dtype=np.int64)
    frontier = seeds & allowed
    dist[frontier] = 0
    for ring in range(1, rings + 1):
        frontier = ((adjacency @ frontier) > 0) & allowed & (dist > ring)
        dist[frontier] = ring
    return dist


def cut_pair(
    adjacency, graph: DualGraph, bend: np.ndarray, part: np.ndarray, new_part: np.ndarray, p: int, q: int
) -> None:
    """Re-decide, by a minimum cut, which of parts p and q each face in the band of their
    common border belongs to (writes `new_part`)."""
    a, b = graph.pairs[:, 0], graph.pairs[:, 1]
    mine = (part == p) | (part == q)
    on_border = (part[a] == p) & (part[b] == q) | (part[a] == q) & (part[b] == p)
    seeds = np.zeros(len(part), bool)
    seeds[a[on_border]] = seeds[b[on_border]] = True
    dist = ring_distance(adjacency, seeds, mine, BAND_RINGS)
    band = dist <= BAND_RINGS
    # the rims: band faces next to a face of the same part outside the band
    outside = mine & ~band
    touches_outside = ((adjacency @ outside) > 0) & band
    rim_p, rim_q = touches_outside & (part == p), touches_outside & (part == q)
    if not rim_p.any() or not rim_q.any():
        return  # one side fits inside the band: leave that small part alone
    faces = np.flatnonzero(band)
    index = np.full(len(part), -1, dtype=np.int64)
    index[faces] = np.arange(len(faces))
    inner = band[a] & band[b]
    ia, ib = index[a[inner]], index[b[inner]]
    mean_bend = max(float(bend[inner].mean()), 1e-12)
    capacity = graph.edge_length[inner] / (1.0 + bend[inner] / mean_bend)
    capacity = np.maximum(np.rint(capacity * (CAPACITY_SCALE / max(float(capacity.max()), 1e-300))), 1)
    source, sink = len(faces), len(faces) + 1
    tie = CAPACITY_SCALE * len(faces)  # stands in for infinity
    ps, qs = index[np.flatnonzero(rim_p)], index[np.flatnonzero(rim_q)]
    rows = np.r_[ia, ib, np.full(len(ps), source), qs]
    cols = np.r_[ib, ia, ps, np.full(len(qs), sink)]
    caps = np.r_[capacity, capacity, np.full(len(ps) + len(qs), tie)].astype(np.int64)
    network = sparse.csr_matrix((caps, (rows, cols)), shape=(len(faces) + 2,) * 2)
    network.sum_duplicates()
    flow = maximum_flow(network, source, sink).flow
    residual = network - flow
    residual.data[residual.data < 0] = 0  # reverse-flow entries are not capacity left
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, source, directed=True, return_predecessors=False)
    on_p = np.zeros(len(faces) + 2, bool)
    on_p[reached] = True
    new_part[faces] = np.where(on_p[: len(faces)], p, q)


def follow_leaves(adjacency, leaf_labels: np.ndarray, part: np.ndarray, new_part: np.ndarray) -> np.ndarray:
    """A face that changed part takes the leaf of a neighbour already in its new part (repeated
    ring by ring from the faces that stayed)."""
    leaves = leaf_labels.copy()
    pending = new_part != part
    rows, cols = adjacency.nonzero()
    while pending.any():
        ok = pending[rows] & ~pending[cols] & (new_part[rows] == new_part[cols])
        if not ok.any():
            new_part[pending] = part[pending]  # nothing to inherit from: they stay where they were
            break
        leaves[rows[ok]] = leaves[cols[ok]]
        pending[rows[ok]] = False
    return leaves
