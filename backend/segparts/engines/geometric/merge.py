"""Agglomerative merging of patches into a merge tree.

Two neighbouring clusters merge early when the border between them is flat or convex, when
straight segments across it stay inside the volume (weak convexity, tested with Embree rays),
when they have the same thickness (SDF), and when the smaller one is small for the length of
their border; they merge late across a concave valley at a narrow neck where the thickness
changes (arm/torso, handle/cup, leg/seat). Every cost is unitless (angles, fractions,
log-ratios, area/length ratios), so the tree doesn't change with pose or scale.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field

import numpy as np

from ...hierarchy import Hierarchy, roots_and_depths

# cost weights, tuned once on the whole development sample (never per mesh)
CONCAVITY_UNIT = np.pi / 4  # a mean concave angle of 45 degrees (over the border bands) counts 1
THICKNESS_WEIGHT = 1.0  # per unit of |log SDF ratio|
BASE_COST = 0.05  # merging across a flat border with equal thickness
CONTACT_CONCAVITY = np.pi / 2  # a border between separate pieces counts as a 90 degree valley
NECK_POWER = 0.5  # weight of the isoperimetric (neck) size factor
NECK_REF = 0.3  # neck ratio at which the factor is 1
VISIBILITY_WEIGHT = 4.0  # per unit fraction of blocked segments across the border
VISIBILITY_PAIRS = 32  # closest sample pairs across a border tested for visibility
OUTWARD_TOLERANCE = 0.35  # segments leaving the surface more steeply than this (sine) cross a valley


@dataclass
class PatchGraph:
    """Patches and the borders between them (sums over the dual edges crossing each border)."""

    area: np.ndarray  # (P,)
    log_sdf: np.ndarray  # (P,) log thickness (NaN unknown)
    piece_area: np.ndarray  # (P,) area of the connected piece the patch lies in
    edges: np.ndarray  # (B, 2) patch pairs, i < j
    length: np.ndarray  # (B,) border length
    concave_length: np.ndarray  # (B,) sum of edge length x concave angle
    contact: np.ndarray = field(default=None)  # (B,) bool: border between separate pieces
    sample_points: np.ndarray | None = None  # (S, 3) surface points sampled in the patches
    sample_normals: np.ndarray | None = None  # (S, 3) their outward normals
    sample_patch: np.ndarray | None = None  # (S,) patch of each sample
    caster: object = None  # sdf.RayCaster for the visibility test
    diag: float = 1.0
    sample_piece: np.ndarray | None = None  # (S,) separate piece of each sample (rays see only it)


def border_stats(labels: np.ndarray, pairs: np.ndarray, edge_length: np.ndarray, concavity: np.ndarray):
    """Group dual edges that cross patch borders by patch pair: (pairs, length, concave_length)."""
    la, lb = labels[pairs[:, 0]], labels[pairs[:, 1]]
    cross = la != lb
    lo = np.minimum(la[cross], lb[cross])
    hi = np.maximum(la[cross], lb[cross])
    n = int(labels.max()) + 1
    uniq, inv = np.unique(lo * n + hi, return_inverse=True)
    length = np.bincount(inv, weights=edge_length[cross], minlength=len(uniq))
    concave = np.bincount(inv, weights=(edge_length * concavity)[cross], minlength=len(uniq))
    return np.stack([uniq // n, uniq % n], axis=1), length, concave


class _Clusters:
    """Mutable state of the agglomeration (plain dicts: a few hundred clusters)."""

    def __init__(self, g: PatchGraph):
        p = len(g.area)
        self.area = list(g.area)
        self.sdf_mass = list(np.where(np.isfinite(g.log_sdf), g.log_sdf * g.area, 0.0))
        self.sdf_area = list(np.where(np.isfinite(g.log_sdf), g.area, 0.0))
        self.piece_area = list(g.piece_area)
        self.total_area = float(np.sum(g.area))
        self.nbr: list[dict[int, list[float]]] = [dict() for _ in range(p)]
        self.g = g
        if g.sample_patch is not None:
            order = np.argsort(g.sample_patch, kind="stable")
            bounds = np.searchsorted(g.sample_patch[order], np.arange(p + 1))
            self.samples = [order[bounds[i] : bounds[i + 1]] for i in range(p)]
        else:
            self.samples = [np.empty(0, np.int64) for _ in range(p)]
        for (i, j), length, conc, contact in zip(g.edges.tolist(), g.length, g.concave_length, g.contact):
            stats = [length, conc, float(contact), np.nan]
            self.nbr[i][j] = stats
            self.nbr[j][i] = stats
        # visibility is measured once per leaf border; a merged border gets the length-weighted
        # mean of its leaf borders (as good as re-measuring on the sample, and much faster)
        for i, j in g.edges.tolist():
            stats = self.nbr[i][j]
            stats[3] = self.blocked_fraction(i, j) * stats[0]
        for i in range(p):  # independent copies per side
            self.nbr[i] = {m: list(st) for m, st in self.nbr[i].items()}

    def log_sdf(self, i: int) -> float:
        return self.sdf_mass[i] / self.sdf_area[i] if self.sdf_area[i] > 0 else np.nan

    def cost(self, i: int, j: int) -> float:
        length, conc, contact, blocked_length = self.nbr[i][j]
        concave = conc / max(length, 1e-300) / CONCAVITY_UNIT
        if contact:
            concave = max(concave, CONTACT_CONCAVITY / CONCAVITY_UNIT)
        blocked = blocked_length / max(length, 1e-300)
        thick = abs(self.log_sdf(i) - self.log_sdf(j))
        thick = 0.0 if not np.isfinite(thick) else thick
        # isoperimetric (normalised-cut like) factor: a part joined by a short border for its
        # area (a limb at its neck) is worth keeping; tiny bits and long borders merge early.
        # Areas are relative to the piece, or to the whole mesh across a contact between pieces.
        ref = self.total_area if contact else min(self.piece_area[i], self.piece_area[j])
        neck = min(self.area[i], self.area[j]) / (max(length, 1e-300) * np.sqrt(ref))
        size = (neck / NECK_REF) ** NECK_POWER
        return (BASE_COST + concave + THICKNESS_WEIGHT * thick + VISIBILITY_WEIGHT * blocked) * size

    def blocked_fraction(self, i: int, j: int) -> float:
        """Weak convexity of the union: among the closest sample pairs across the border, the
        fraction whose straight segment leaves the volume (it crosses a concave valley)."""
        si, sj = self.samples[i], self.samples[j]
        if self.g.caster is None or len(si) == 0 or len(sj) == 0:
            return 0.0
        pts, nrm = self.g.sample_points, self.g.sample_normals
        d2 = ((pts[si][:, None, :] - pts[sj][None, :, :]) ** 2).sum(axis=2).ravel()
        k = min(VISIBILITY_PAIRS, d2.size)
        flat = np.argpartition(d2, k - 1)[:k]
        a, b = si[flat // len(sj)], sj[flat % len(sj)]
        seg = pts[b] - pts[a]
        length = np.linalg.norm(seg, axis=1)
        ok = length > 1e-9 * self.g.diag
        if not ok.any():
            return 0.0
        a, b, seg, length = a[ok], b[ok], seg[ok], length[ok]
        direction = seg / length[:, None]
        leaves = ((direction * nrm[a]).sum(axis=1) > OUTWARD_TOLERANCE) | (
            (-direction * nrm[b]).sum(axis=1) > OUTWARD_TOLERANCE
        )
        # a segment that runs into the volume at both ends may still cross air on its way
        inward = ((direction * nrm[a]).sum(axis=1) < -OUTWARD_TOLERANCE) & (
            (-direction * nrm[b]).sum(axis=1) < -OUTWARD_TOLERANCE
        )
        blocked = leaves.copy()
        if inward.any():
            eps = 1e-4 * self.g.diag
            piece = None if self.g.sample_piece is None else self.g.sample_piece[a[inward]]
            dist, hit, _ = self.g.caster.first_hits(pts[a[inward]] - nrm[a[inward]] * eps, direction[inward], piece)
            blocked[inward] = (hit >= 0) & (dist < 0.97 * length[inward] - 2 * eps)
        return float(blocked.mean())

    def merge(self, i: int, j: int) -> int:
        k = len(self.area)
        self.area.append(self.area[i] + self.area[j])
        self.sdf_mass.append(self.sdf_mass[i] + self.sdf_mass[j])
        self.sdf_area.append(self.sdf_area[i] + self.sdf_area[j])
        self.piece_area.append(
            max(self.piece_area[i], self.piece_area[j])
            if self.nbr[i][j][2] == 0
            else self.piece_area[i] + self.piece_area[j]
        )
        merged: dict[int, list[float]] = {}
        for src in (i, j):
            for m, stats in self.nbr[src].items():
                if m in (i, j):
                    continue
                if m in merged:
                    old = merged[m]
                    merged[m] = [old[0] + stats[0], old[1] + stats[1], min(old[2], stats[2]), old[3] + stats[3]]
                else:
                    merged[m] = list(stats)
                del self.nbr[m][src]
        for m, stats in merged.items():
            self.nbr[m][k] = list(stats)
        self.nbr.append(merged)
        self.nbr[i] = {}
        self.nbr[j] = {}
        return k


def cost_to_height(cost: float) -> float:
    """Monotone map of merge costs to tree heights in [0, 1) (same scale for every mesh)."""
    return cost / (1.0 + cost)


def finish_tree(leaf_labels, parent_a, height_a, centroids, areas, distant_floor) -> Hierarchy:
    """Join what is left apart by distance (above everything and the floor) into one tree."""
    roots = np.flatnonzero(parent_a < 0)
    if len(roots) > 1:
        parent_a, height_a = _join_by_distance(parent_a, height_a, roots, leaf_labels, centroids, areas, distant_floor)
    height_a[-1] = 1.0
    return Hierarchy(leaf_labels, parent_a, height_a)


def merge_forest(g: PatchGraph, cancel_check=None) -> tuple[np.ndarray, np.ndarray]:
    """Greedy lowest-cost merging along the borders of `g`: (parent, height) per node, -1 for
    the roots of what the borders leave apart."""
    clusters = _Clusters(g)
    n_leaves = len(g.area)
    heap = [(clusters.cost(i, j), i, j) for i, j in g.edges.tolist()]
    heapq.heapify(heap)
    alive = [True] * n_leaves
    parent: list[int] = [-1] * n_leaves
    height: list[float] = [0.0] * n_leaves
    while heap:
        cost, i, j = heapq.heappop(heap)
        if not (alive[i] and alive[j]):
            continue
        k = clusters.merge(i, j)
        alive[i] = alive[j] = False
        alive.append(True)
        parent[i] = parent[j] = k
        parent.append(-1)
        height.append(max(cost_to_height(cost), height[i], height[j]))
        for m in clusters.nbr[k]:
            heapq.heappush(heap, (clusters.cost(m, k), m, k))
        if cancel_check is not None and len(parent) % 64 == 0:
            cancel_check()
    return np.array(parent, dtype=np.int64), np.array(height, dtype=np.float64)


def _join_by_distance(parent, height, roots, leaf_labels, centroids, areas=None, floor=0.0):
    """Nearest-first (single-linkage) merges of the clusters left apart, by the distance between
    their area-weighted centres; heights spread evenly above the top contact merge."""
    top, _ = roots_and_depths(parent)
    n_leaves = len(centroids)
    slot = np.full(len(parent), -1, dtype=np.int64)
    slot[roots] = np.arange(len(roots))
    leaf_root = slot[top[:n_leaves]]
    weight = np.ones(n_leaves) if areas is None else areas
    centre = (
        np.stack(
            [np.bincount(leaf_root, weights=weight * centroids[:, k], minlength=len(roots)) for k in range(3)], axis=1
        )
        / np.bincount(leaf_root, weights=weight)[:, None]
    )
    merges = _single_linkage_order(centre)
    base = max(float(height.max(initial=0.0)), floor)
    node = list(roots)
    parent, height = list(parent), list(height)
    for step, (a, b) in enumerate(merges):
        k = len(parent)
        parent[node[a]] = k
        parent[node[b]] = k
        parent.append(-1)
        height.append(base + (1.0 - base) * (step + 1) / (len(merges) + 1))
        node.append(k)
    return np.array(parent, dtype=np.int64), np.array(height, dtype=np.float64)


def _single_linkage_order(points: np.ndarray) -> list[tuple[int, int]]:
    """Merges (scipy linkage numbering: new clusters n, n+1, ...) joining all points nearest
    first. Exact for up to 2000 points; beyond, along the spanning tree of an 8-NN graph."""
    n = len(points)
    if n <= 2000:
        from scipy.cluster.hierarchy import linkage

        return [(int(a), int(b)) for a, b in linkage(points, method="single")[:, :2]]
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import minimum_spanning_tree
    from scipy.spatial import cKDTree

    dist, idx = cKDTree(points).query(points, k=9)
    rows = np.repeat(np.arange(n), 8)
    graph = coo_matrix((dist[:, 1:].ravel() + 1e-300, (rows, idx[:, 1:].ravel())), shape=(n, n))
    tree = minimum_spanning_tree(graph).tocoo()
    order = np.argsort(tree.data, kind="stable")
    edges = list(zip(tree.row[order].tolist(), tree.col[order].tolist()))
    edges += [(0, j) for j in range(1, n)]  # joins whatever the k-NN graph left apart
    find = list(range(n))
    cluster_of = list(range(n))  # linkage id of each union-find root

    def root(x):
        while find[x] != x:
            find[x] = find[find[x]]
            x = find[x]
        return x

    merges = []
    for a, b in edges:
        ra, rb = root(a), root(b)
        if ra == rb:
            continue
        merges.append((cluster_of[ra], cluster_of[rb]))
        find[rb] = ra
        cluster_of[ra] = n + len(merges) - 1
        if len(merges) == n - 1:
            break
    return merges
