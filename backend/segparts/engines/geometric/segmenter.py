"""The geometric engine's pipeline: mesh -> merge tree over all faces.

1. weld coincident vertices; split into edge-connected pieces;
2. over-segment into a few hundred patches bounded by creases (oversegment.py);
3. measure each patch's thickness (SDF, Embree rays from a sample of its faces);
4. find borders between patches: shared edges inside a piece, contact/proximity between pieces;
5. merge greedily by a concavity + thickness + size cost into a merge tree (merge.py).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
from scipy.spatial import cKDTree

from ...hierarchy import Hierarchy
from .components import DEFAULT_WELD_TOLERANCE, weld_vertices
from .graph import DualGraph, build_dual_graph, dual_components
from .merge import CONTACT_CONCAVITY, PatchGraph, agglomerate, border_stats, cost_to_height
from .oversegment import oversegment
from .sdf import RayCaster, shape_diameter

DEFAULT_PATCHES = 200  # leaves of the tree (more only when there are more separate pieces)
SDF_SAMPLES_PER_PATCH = 12
CONTACT_RADIUS = 2e-3  # pieces closer than this x bbox diagonal touch
MAX_CONTACT_POINTS = 300_000
AUTO_COST = 0.5  # automatic granularity: the merge-cost threshold, tuned once on the whole sample


def auto_scale() -> float:
    return cost_to_height(AUTO_COST)


def sample_per_group(groups: np.ndarray, eligible: np.ndarray, per_group: int, rng: np.random.Generator) -> np.ndarray:
    """Up to `per_group` random eligible indices from each group (vectorised group ranking)."""
    idx = rng.permutation(np.flatnonzero(eligible))
    idx = idx[np.argsort(groups[idx], kind="stable")]
    g = groups[idx]
    starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    rank = np.arange(len(idx)) - np.repeat(starts, np.diff(np.r_[starts, len(idx)]))
    return idx[rank < per_group]


def group_median(values: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Median of the finite values in each group (NaN for a group with none)."""
    ok = np.isfinite(values)
    v, g = values[ok], groups[ok]
    order = np.lexsort((v, g))
    v, g = v[order], g[order]
    out = np.full(n_groups, np.nan)
    if len(v) == 0:
        return out
    starts = np.r_[0, np.flatnonzero(g[1:] != g[:-1]) + 1]
    ends = np.r_[starts[1:], len(v)]
    out[g[starts]] = 0.5 * (v[(starts + ends - 1) // 2] + v[(starts + ends) // 2])
    return out


BAND_STEPS = 6  # rings of faces averaged on each side of a patch border for its concavity


def border_concavity(graph: DualGraph, labels: np.ndarray) -> np.ndarray:
    """Concave angle per dual edge measured over a band on each side of patch borders: face
    normals averaged a few rings deep inside their own patch, so a valley spread over several
    rings of a dense scan counts its whole bend, not one edge's share of it."""
    if BAND_STEPS <= 0:
        return graph.concavity
    from scipy import sparse

    n = len(labels)
    a, b = graph.pairs[:, 0], graph.pairs[:, 1]
    same = labels[a] == labels[b]
    rows = np.concatenate([a[same], b[same], np.arange(n)])
    cols = np.concatenate([b[same], a[same], np.arange(n)])
    w = np.concatenate([np.ones(2 * same.sum()), np.ones(n)])
    m = sparse.csr_matrix((w, (rows, cols)), shape=(n, n))
    normals = graph.normals * graph.areas[:, None]
    centroids = graph.centroids * graph.areas[:, None]
    weight = graph.areas.copy()
    for _ in range(BAND_STEPS):
        normals, centroids, weight = m @ normals, m @ centroids, m @ weight
    normals = normals / np.maximum(np.linalg.norm(normals, axis=1, keepdims=True), 1e-300)
    centroids = centroids / np.maximum(weight, 1e-300)[:, None]
    cross = ~same
    out = graph.concavity.copy()
    ca, cb = a[cross], b[cross]
    angle = np.arccos(np.clip((normals[ca] * normals[cb]).sum(axis=1), -1.0, 1.0))
    rel = centroids[cb] - centroids[ca]
    side = (rel * normals[ca]).sum(axis=1) - (rel * normals[cb]).sum(axis=1)
    out[cross] = np.where(side > 0, angle, 0.0)
    return out


def patch_thickness(caster, graph: DualGraph, labels, sample, n_patches, diag, pieces) -> np.ndarray:
    """log SDF per patch: median SDF of a few sampled faces of the patch."""
    sdf = shape_diameter(caster, graph.centroids[sample], graph.normals[sample], offset=1e-5 * diag,
                         piece=pieces[sample])
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(group_median(sdf, labels[sample], n_patches))


def surface_points(vertices, faces, areas, n_samples, rng):
    """Points on the surface with their face: every used vertex plus area-weighted random points
    (so a small piece resting inside a large face still finds that face nearby)."""
    n_faces = len(faces)
    face_of_vertex = np.full(len(vertices), -1, dtype=np.int64)
    face_of_vertex[faces.ravel()] = np.repeat(np.arange(n_faces), 3)
    used = np.flatnonzero(face_of_vertex >= 0)
    total = areas.sum()
    if total > 0:
        face = rng.choice(n_faces, size=n_samples, p=areas / total)
        r1, r2 = rng.random((2, n_samples))
        flip = r1 + r2 > 1
        r1[flip], r2[flip] = 1 - r1[flip], 1 - r2[flip]
        tri = vertices[faces[face]]
        random_points = tri[:, 0] + r1[:, None] * (tri[:, 1] - tri[:, 0]) + r2[:, None] * (tri[:, 2] - tri[:, 0])
    else:
        face, random_points = np.empty(0, np.int64), np.empty((0, 3))
    points = np.concatenate([vertices[used], random_points])
    owner = np.concatenate([face_of_vertex[used], face])
    if len(points) > MAX_CONTACT_POINTS:
        keep = np.sort(rng.choice(len(points), MAX_CONTACT_POINTS, replace=False))
        points, owner = points[keep], owner[keep]
    return points, owner


def contact_borders(vertices, faces, areas, pieces, labels, diag, rng):
    """Patch pairs of different pieces that touch or nearly touch: (pairs, estimated length of
    the contact), from surface points of different pieces closer than a small radius."""
    n_samples = min(MAX_CONTACT_POINTS // 2, 20 * len(faces))
    points, owner = surface_points(vertices, faces, areas, n_samples, rng)
    spacing = np.sqrt(max(areas.sum(), 1e-300) / max(n_samples, 1))
    radius = max(CONTACT_RADIUS * diag, 1.5 * spacing)
    close = cKDTree(points).query_pairs(radius, output_type="ndarray")
    fa, fb = owner[close[:, 0]], owner[close[:, 1]]
    between = pieces[fa] != pieces[fb]
    if not between.any():
        return np.empty((0, 2), np.int64), np.empty(0)
    pa, pb = labels[fa[between]], labels[fb[between]]
    lo, hi = np.minimum(pa, pb), np.maximum(pa, pb)
    n = int(labels.max()) + 1
    key = lo * n + hi
    uniq, inv = np.unique(key, return_inverse=True)
    # contact area ~ distinct close points x spacing^2; its "border length" ~ 4 sqrt(area)
    point_ids = np.concatenate([close[between, 0], close[between, 1]])
    pair_ids = np.concatenate([inv, inv])
    n_points = np.bincount(np.unique(pair_ids * len(points) + point_ids) // len(points), minlength=len(uniq))
    return np.stack([uniq // n, uniq % n], axis=1), 4.0 * np.sqrt(n_points) * spacing


def build_tree(vertices: np.ndarray, faces: np.ndarray, *, weld_tolerance: float = DEFAULT_WELD_TOLERANCE,
               n_patches: int | None = None, seed: int = 0,
               progress: Callable[[float, str], None] | None = None,
               cancel_check: Callable[[], None] | None = None) -> tuple[Hierarchy, dict]:
    """Merge tree (coarse -> fine) over all faces, and timings per stage."""
    progress = progress or (lambda f, s: None)
    cancel_check = cancel_check or (lambda: None)
    rng = np.random.default_rng(seed)
    n_patches = DEFAULT_PATCHES if n_patches is None else n_patches
    times: dict[str, float] = {}
    t = time.perf_counter()

    def lap(name):
        nonlocal t
        now = time.perf_counter()
        times[name] = round(now - t, 4)
        t = now
        cancel_check()

    vertices = np.asarray(vertices, dtype=np.float64)
    faces = np.asarray(faces, dtype=np.int64)
    diag = float(np.linalg.norm(np.ptp(vertices[faces.ravel()], axis=0))) or 1.0
    progress(0.0, "graph")
    welded = weld_vertices(vertices, weld_tolerance)
    graph = build_dual_graph(vertices, faces, welded)
    pieces = dual_components(graph.pairs, len(faces))
    lap("graph")

    progress(0.2, "patches")
    labels = oversegment(graph, pieces, min(n_patches, max(1, len(faces) // 8)), diag, rng)
    n_leaves = int(labels.max()) + 1
    lap("patches")

    progress(0.5, "thickness")
    caster = RayCaster(vertices, faces, pieces)
    sample = sample_per_group(labels, graph.areas > 0, SDF_SAMPLES_PER_PATCH, rng)
    log_sdf = patch_thickness(caster, graph, labels, sample, n_leaves, diag, pieces)
    lap("thickness")

    progress(0.7, "borders")
    area = np.bincount(labels, weights=graph.areas, minlength=n_leaves)
    piece_of_patch = np.zeros(n_leaves, dtype=np.int64)
    piece_of_patch[labels] = pieces
    piece_area = np.bincount(pieces, weights=graph.areas)[piece_of_patch]
    edges, length, concave = border_stats(labels, graph.pairs, graph.edge_length, border_concavity(graph, labels))
    contact = np.zeros(len(edges), dtype=bool)
    if pieces.max() > 0:
        c_edges, c_length = contact_borders(vertices, faces, graph.areas, pieces, labels, diag, rng)
        edges = np.concatenate([edges, c_edges])
        length = np.concatenate([length, c_length])
        concave = np.concatenate([concave, c_length * CONTACT_CONCAVITY])
        contact = np.concatenate([contact, np.ones(len(c_edges), dtype=bool)])
        edges, length, concave, contact = _merge_duplicate_borders(edges, length, concave, contact, n_leaves)
    # a tiny epsilon keeps zero-area (all degenerate) patches from dividing by zero
    eps = 1e-12 * diag * diag
    patch_graph = PatchGraph(area + eps, log_sdf, piece_area + eps, edges, length, concave, contact,
                             graph.centroids[sample], graph.normals[sample], labels[sample], caster, diag, pieces[sample])
    lap("borders")

    progress(0.8, "merging")
    centroids = np.stack([np.bincount(labels, weights=graph.areas * graph.centroids[:, k], minlength=n_leaves)
                          for k in range(3)], axis=1) / np.maximum(area, 1e-300)[:, None]
    hierarchy = agglomerate(labels, patch_graph, centroids, cancel_check, distant_floor=auto_scale())
    lap("merge")
    progress(1.0, "done")
    info = {"times": times, "n_leaves": n_leaves, "n_pieces": int(pieces.max()) + 1}
    return hierarchy, info


def _merge_duplicate_borders(edges, length, concave, contact, n):
    """Sum the stats of borders listed twice (shared edges and proximity between the same pair)."""
    key = edges[:, 0] * n + edges[:, 1]
    uniq, inv = np.unique(key, return_inverse=True)
    length = np.bincount(inv, weights=length)
    concave = np.bincount(inv, weights=concave)
    # a border is a contact only when the two patches share no edge at all
    shared = np.bincount(inv, weights=~contact) > 0
    return np.stack([uniq // n, uniq % n], axis=1), length, concave, ~shared
