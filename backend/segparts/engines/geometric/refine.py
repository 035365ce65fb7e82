"""Border refinement at the automatic level: the patches' borders come from a greedy
over-segmentation and can run across flat surface in staircases; a minimum cut in a band of faces
around each border between two parts moves it onto the nearest crease or valley, or onto an edge
the artist marked.

The capacity of a dual edge falls with the bend across it (Katz & Tal 2003, "Hierarchical mesh
decomposition using fuzzy clustering and cuts"): length / (1 + bend / mean bend in the band),
bend = 1 - cos(dihedral), a tenth of that where the edge is convex. The band's outer rims are tied
to their own part (infinite capacity), so a cut never leaves the band and small parts that fit
inside a band are left as they are.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import sparse
from scipy.sparse.csgraph import breadth_first_order, maximum_flow

from ...meshgraph import DualGraph, adjacency_matrix

BAND_RINGS = 3  # faces up to this many dual steps from a border may change sides
CONVEX_WEIGHT = 0.1  # a convex bend counts a tenth of a concave one (Katz & Tal's eta)
MARKED_BEND = 1.0  # an edge the artist marked (sharp, UV seam) bends as a 90 degree valley at least
CAPACITY_SCALE = 1_000_000  # max-flow needs integer capacities


def refine_borders(
    graph: DualGraph, leaf_labels: np.ndarray, part: np.ndarray, cancel_check=lambda: None
) -> np.ndarray:
    """Leaf labels with the faces near each border between two parts (`part`, per face) moved to
    the side a minimum cut through the band chooses; a moved face takes the leaf of a neighbour
    on its new side (a leaf may be left empty: `Hierarchy.without_empty_leaves` drops it).
    `graph.pairs` must only join faces that may share a part (one unit)."""
    a, b = graph.pairs[:, 0], graph.pairs[:, 1]
    cross = np.flatnonzero(part[a] != part[b])
    if len(cross) == 0:
        return leaf_labels
    adjacency = adjacency_matrix(graph.pairs, len(part))
    bands = Bands(adjacency, graph.pairs)
    bend = (1.0 - np.cos(graph.dihedral)) * np.where(graph.concavity > 0, 1.0, CONVEX_WEIGHT)
    if graph.marked is not None:
        bend = np.where(graph.marked, np.maximum(bend, MARKED_BEND), bend)
    new_part = part.copy()
    lo, hi = np.minimum(part[a[cross]], part[b[cross]]), np.maximum(part[a[cross]], part[b[cross]])
    order = np.lexsort((hi, lo))
    starts = np.r_[0, np.flatnonzero((np.diff(lo[order]) != 0) | (np.diff(hi[order]) != 0)) + 1]
    for edges in np.split(cross[order], starts[1:]):
        p, q = sorted((int(part[a[edges[0]]]), int(part[b[edges[0]]])))
        seeds = np.unique(np.r_[a[edges], b[edges]])
        cut_pair(bands, graph, bend, part, new_part, p, q, seeds)
        cancel_check()
    return follow_leaves(adjacency, leaf_labels, part, new_part)


def csr_rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """The column indices of the given rows of a CSR matrix, concatenated."""
    start, length = indptr[rows], indptr[rows + 1] - indptr[rows]
    return indices[np.repeat(start - np.cumsum(length) + length, length) + np.arange(int(length.sum()))]


class Bands:
    """Bands of faces around borders, each found in time proportional to its own faces: rows are
    read straight from CSR arrays, and a face's membership is a stamp (a fresh number per use), so
    no band passes over the whole mesh or clears anything."""

    def __init__(self, adjacency: sparse.csr_matrix, pairs: np.ndarray):
        n = adjacency.shape[0]
        incidence = sparse.csr_matrix(  # face -> its dual edges
            (np.ones(2 * len(pairs), np.int8), (pairs.T.ravel(), np.tile(np.arange(len(pairs)), 2))),
            shape=(n, len(pairs)),
        )
        self.adjacency = (adjacency.indptr, adjacency.indices)
        self.incidence = (incidence.indptr, incidence.indices)
        self.stamp = np.full(n, -1, dtype=np.int64)
        self.uses = 0

    def fresh_mark(self) -> int:
        self.uses += 1
        return self.uses

    def neighbours(self, faces: np.ndarray) -> np.ndarray:
        return csr_rows(*self.adjacency, faces)

    def edges(self, faces: np.ndarray) -> np.ndarray:
        return np.unique(csr_rows(*self.incidence, faces))

    def ring_distance(
        self, seeds: np.ndarray, allowed: Callable[[np.ndarray], np.ndarray], rings: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Faces within `rings` dual steps of the (unique) seed faces, staying inside the faces
        `allowed(faces)` accepts, sorted, and their distance."""
        mark = self.fresh_mark()
        self.stamp[seeds] = mark
        reached, dist = [seeds], [np.zeros(len(seeds), np.int64)]
        frontier = seeds
        for ring in range(1, rings + 1):
            step = self.neighbours(frontier)
            step = np.unique(step[self.stamp[step] != mark])
            frontier = step[allowed(step)]
            if len(frontier) == 0:
                break
            self.stamp[frontier] = mark
            reached.append(frontier)
            dist.append(np.full(len(frontier), ring, np.int64))
        faces, dist_all = np.concatenate(reached), np.concatenate(dist)
        order = np.argsort(faces)
        return faces[order], dist_all[order]


def cut_pair(
    bands: Bands,
    graph: DualGraph,
    bend: np.ndarray,
    part: np.ndarray,
    new_part: np.ndarray,
    p: int,
    q: int,
    seeds: np.ndarray,
) -> None:
    """Re-decide, by a minimum cut, which of parts p and q each face in the band of their
    common border (`seeds`: the faces on it) belongs to (writes `new_part`)."""
    faces, dist = bands.ring_distance(seeds, lambda f: (part[f] == p) | (part[f] == q), BAND_RINGS + 1)
    band = faces[dist <= BAND_RINGS]
    in_band = bands.fresh_mark()
    bands.stamp[band] = in_band
    # the rims: band faces next to a face of the same part outside the band (one ring further)
    near_beyond = bands.neighbours(faces[dist > BAND_RINGS])
    rim = np.unique(near_beyond[bands.stamp[near_beyond] == in_band])
    rim_p, rim_q = rim[part[rim] == p], rim[part[rim] == q]
    if len(rim_p) == 0 or len(rim_q) == 0:
        return  # one side fits inside the band: leave that small part alone
    a, b = graph.pairs[:, 0], graph.pairs[:, 1]
    edges = bands.edges(band)
    inner = edges[(bands.stamp[a[edges]] == in_band) & (bands.stamp[b[edges]] == in_band)]
    ia, ib = np.searchsorted(band, a[inner]), np.searchsorted(band, b[inner])
    mean_bend = max(float(bend[inner].mean()), 1e-12)
    capacity = graph.edge_length[inner] / (1.0 + bend[inner] / mean_bend)
    capacity = np.maximum(np.rint(capacity * (CAPACITY_SCALE / max(float(capacity.max()), 1e-300))), 1)
    source, sink = len(band), len(band) + 1
    tie = CAPACITY_SCALE * len(band)  # stands in for infinity
    ps, qs = np.searchsorted(band, rim_p), np.searchsorted(band, rim_q)
    rows = np.r_[ia, ib, np.full(len(ps), source), qs]
    cols = np.r_[ib, ia, ps, np.full(len(qs), sink)]
    caps = np.r_[capacity, capacity, np.full(len(ps) + len(qs), tie)].astype(np.int64)
    network = sparse.csr_matrix((caps, (rows, cols)), shape=(len(band) + 2,) * 2)
    network.sum_duplicates()
    flow = maximum_flow(network, source, sink).flow
    residual = network - flow
    residual.data[residual.data < 0] = 0  # reverse-flow entries are not capacity left
    residual.eliminate_zeros()
    reached = breadth_first_order(residual, source, directed=True, return_predecessors=False)
    on_p = np.zeros(len(band) + 2, bool)
    on_p[reached] = True
    new_part[band] = np.where(on_p[: len(band)], p, q)


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
