"""Over-segmentation into a few hundred compact patches whose borders snap to creases.

Seeds are spread by farthest-point sampling (invariant to rigid motion and scale); every face
joins its nearest seed along the dual graph, where crossing a concave or sharp edge costs
extra, so patch borders settle in valleys, on sharp edges and on the edges the artist marked
(geodesic Voronoi + Dijkstra).
"""

from __future__ import annotations

import numpy as np
from scipy.sparse.csgraph import dijkstra

from ...meshgraph import DualGraph, adjacency_matrix
from ..base import run_cancellable

CONCAVE_PENALTY = 40.0  # extra cost per radian of concave crease crossed
SHARP_PENALTY = 3.0  # extra cost per radian of any dihedral angle crossed
MARKED_PENALTY = CONCAVE_PENALTY * np.pi / 4  # an edge the artist marked counts as a 45 degree valley


def farthest_point_seeds(points: np.ndarray, k: int) -> np.ndarray:
    """Indices of k points spread by farthest-point sampling, starting from the point farthest
    from the centre (so the choice doesn't depend on point order or pose)."""
    k = min(k, len(points))
    first = int(np.argmax(((points - points.mean(axis=0)) ** 2).sum(axis=1)))
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = first
    dist = ((points - points[first]) ** 2).sum(axis=1)
    for i in range(1, k):  # k is a few hundred; each step is one vectorised distance update
        chosen[i] = int(np.argmax(dist))
        dist = np.minimum(dist, ((points - points[chosen[i]]) ** 2).sum(axis=1))
    return chosen


def pick_seeds(graph: DualGraph, components: np.ndarray, n_patches: int, rng: np.random.Generator) -> np.ndarray:
    """Face indices of the patch seeds: FPS over an area-weighted sample of face centroids, plus
    the largest face of any component that got no seed."""
    areas = graph.areas
    n_faces = len(areas)
    total = areas.sum()
    n_sample = min(n_faces, max(20 * n_patches, 2000))
    if total > 0 and n_sample < n_faces:
        sample = rng.choice(n_faces, size=n_sample, replace=False, p=areas / total)
    else:
        sample = np.arange(n_faces)
    seeds = sample[farthest_point_seeds(graph.centroids[sample], n_patches)]
    has_seed = np.zeros(int(components.max()) + 1, dtype=bool)
    has_seed[components[seeds]] = True
    if not has_seed.all():
        # the largest face of each seedless component (ties: lowest index)
        order = np.lexsort((np.arange(n_faces), -areas, components))
        first = order[np.r_[True, components[order][1:] != components[order][:-1]]]
        seeds = np.concatenate([seeds, first[~has_seed[components[first]]]])
    return np.unique(seeds)


def oversegment(
    graph: DualGraph,
    components: np.ndarray,
    n_patches: int,
    scale: float,
    rng: np.random.Generator,
    cancel_check=lambda: None,
) -> np.ndarray:
    """(F,) patch label 0..P-1 per face; every patch is edge-connected and within one component."""
    n_faces = len(graph.areas)
    seeds = pick_seeds(graph, components, n_patches, rng)
    cancel_check()
    a, b = graph.pairs[:, 0], graph.pairs[:, 1]
    step = np.linalg.norm(graph.centroids[a] - graph.centroids[b], axis=1) + 1e-9 * scale
    weight = step * (1.0 + CONCAVE_PENALTY * graph.concavity + SHARP_PENALTY * graph.dihedral)
    if graph.marked is not None:
        weight = weight + step * MARKED_PENALTY * graph.marked
    adj = adjacency_matrix(graph.pairs, n_faces, weight)
    _, _, sources = run_cancellable(
        lambda: dijkstra(adj, directed=False, indices=seeds, min_only=True, return_predecessors=True), cancel_check
    )
    patch_of_seed = np.full(n_faces, -1, dtype=np.int64)
    patch_of_seed[seeds] = np.arange(len(seeds))
    labels = np.where(sources >= 0, patch_of_seed[np.maximum(sources, 0)], -1)
    # a face no seed reaches can only be a component of its own that got a seed; guard anyway
    if (labels < 0).any():
        _, extra = np.unique(components[labels < 0], return_inverse=True)
        labels[labels < 0] = len(seeds) + extra
    return labels
