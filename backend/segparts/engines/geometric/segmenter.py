"""The geometric engine's pipeline: mesh -> merge tree over all faces.

1. weld coincident vertices; split into edge-connected pieces;
2. over-segment into a few hundred patches bounded by creases (oversegment.py);
3. measure each patch's thickness (SDF, Embree rays from a sample of its faces);
4. find borders between patches inside each unit (a piece cut by material/group borders);
5. merge greedily by a concavity + thickness + size cost into one tree per unit (merge.py);
6. merge the units by file block, contact, gap, shared material/group and repetition
   (assembly.py), and gather congruent copies under one node;
7. move the automatic level's borders onto nearby creases by a minimum cut in a band (refine.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ...hierarchy import Hierarchy, roots_and_depths
from ...meshgraph import DEFAULT_WELD_TOLERANCE, DualGraph, build_dual_graph, dual_components, weld_vertices
from ..base import run_cancellable
from .assembly import (
    centre_gaps,
    congruent_groups,
    copies_in_one_piece,
    copies_share_cues,
    file_blocks,
    gather_copies,
    group_units,
    same_cue_pairs,
    shape_signatures,
    unit_blocks,
    unit_centres_pairs,
    unit_contacts,
    unit_labels,
)
from .merge import PatchGraph, border_stats, cost_to_height, finish_tree, merge_forest
from .oversegment import oversegment
from .refine import refine_borders
from .sdf import RayCaster, shape_diameter

DEFAULT_PATCHES = 200  # leaves of the tree (more only when there are more separate pieces)
SDF_SAMPLES_PER_PATCH = 12
REFINE_BORDERS = True  # a min cut in a band moves the automatic level's borders onto creases (refine.py)
MOSTLY_MARKED = 0.5  # marked_edges on more than this share of the triangle edges are no cue
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


SDF_CHUNK = 4096  # sampled faces per batch of rays (the cancel check runs between batches)


def patch_thickness(
    caster, graph: DualGraph, labels, sample, n_patches, diag, pieces, cancel_check=lambda: None
) -> np.ndarray:
    """log SDF per patch: median SDF of a few sampled faces of the patch."""
    sdf = np.empty(len(sample))
    for lo in range(0, len(sample), SDF_CHUNK):
        part = sample[lo : lo + SDF_CHUNK]
        sdf[lo : lo + SDF_CHUNK] = shape_diameter(
            caster, graph.centroids[part], graph.normals[part], offset=1e-5 * diag, piece=pieces[part]
        )
        cancel_check()
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log(group_median(sdf, labels[sample], n_patches))


def build_tree(
    vertices: np.ndarray,
    faces: np.ndarray,
    *,
    material: np.ndarray | None = None,
    group: np.ndarray | None = None,
    marked_edges: np.ndarray | None = None,
    weld_tolerance: float = DEFAULT_WELD_TOLERANCE,
    n_patches: int | None = None,
    seed: int = 0,
    progress: Callable[[float, str], None] | None = None,
    cancel_check: Callable[[], None] | None = None,
) -> tuple[Hierarchy, dict]:
    """Merge tree (coarse -> fine) over all faces, and timings per stage. `material` and `group`
    (per face ids, optional) are authoring cues: units never straddle them, and units that share
    one group early. `marked_edges` ((F, 3) bool, optional): edges the artist marked (sharp, UV
    seam); patch borders and the refined borders settle on them, but they make no part alone; marks
    on most edges are ignored."""
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
    n_faces = len(faces)
    diag = float(np.linalg.norm(np.ptp(vertices[faces.ravel()], axis=0))) or 1.0
    # a cue with one id says nothing (one material everywhere is the geometry-only mesh, as the
    # add-on sends it): otherwise every pair would count as sharing it
    cues = [
        np.unique(np.asarray(c).ravel(), return_inverse=True)[1].ravel()
        for c in (material, group)
        if c is not None and np.ptp(np.asarray(c)) > 0
    ]
    progress(0.0, "graph")
    if marked_edges is not None and np.mean(marked_edges) > MOSTLY_MARKED:
        marked_edges = None  # marks everywhere (a UV map cut at every edge) say nothing either
    welded = weld_vertices(vertices, weld_tolerance)
    cancel_check()  # between the graph's steps, so a cancel is answered within about a second
    full_graph = build_dual_graph(vertices, faces, welded, cancel_check, marked_edges)
    cancel_check()
    pieces = dual_components(full_graph.pairs, n_faces)
    units = unit_labels(full_graph.pairs, n_faces, pieces, cues)
    inner = units[full_graph.pairs[:, 0]] == units[full_graph.pairs[:, 1]]
    graph = replace(
        full_graph,
        pairs=full_graph.pairs[inner],
        edge_length=full_graph.edge_length[inner],
        concavity=full_graph.concavity[inner],
        dihedral=full_graph.dihedral[inner],
        marked=None if full_graph.marked is None else full_graph.marked[inner],
    )
    n_units = int(units.max()) + 1
    lap("graph")

    progress(0.2, "patches")
    labels = oversegment(graph, units, min(n_patches, max(1, n_faces // 8)), diag, rng, cancel_check)
    n_leaves = int(labels.max()) + 1
    lap("patches")

    progress(0.5, "thickness")
    caster = run_cancellable(lambda: RayCaster(vertices, faces, pieces), cancel_check)
    # thickness and visibility only matter where patches meet: a patch alone in its unit (a
    # bolt, a triangle of a soup) gets no rays
    bordered = np.zeros(n_leaves, dtype=bool)
    between = labels[graph.pairs[:, 0]] != labels[graph.pairs[:, 1]]
    bordered[labels[graph.pairs[between].ravel()]] = True
    sample = sample_per_group(labels, (graph.areas > 0) & bordered[labels], SDF_SAMPLES_PER_PATCH, rng)
    log_sdf = patch_thickness(caster, graph, labels, sample, n_leaves, diag, pieces, cancel_check)
    lap("thickness")

    progress(0.7, "borders")
    area = np.bincount(labels, weights=graph.areas, minlength=n_leaves)
    unit_of_patch = np.zeros(n_leaves, dtype=np.int64)
    unit_of_patch[labels] = units
    unit_area = np.bincount(units, weights=graph.areas, minlength=n_units)
    band_concavity = border_concavity(graph, labels)
    cancel_check()
    edges, length, concave = border_stats(labels, graph.pairs, graph.edge_length, band_concavity)
    # a tiny epsilon keeps zero-area (all degenerate) patches from dividing by zero
    eps = 1e-12 * diag * diag
    patch_graph = PatchGraph(
        area + eps,
        log_sdf,
        unit_area[unit_of_patch] + eps,
        edges,
        length,
        concave,
        np.zeros(len(edges), dtype=bool),
        graph.centroids[sample],
        graph.normals[sample],
        labels[sample],
        caster,
        diag,
        pieces[sample],
    )
    lap("borders")

    progress(0.8, "merging")
    parent, height = merge_forest(patch_graph, cancel_check)
    if is_assembly(unit_area):
        height = height * (0.99 * auto_scale() / max(float(height.max(initial=0.0)), 1e-12))
    unit_repeat = np.full(n_units, -1, dtype=np.int64)
    if n_units > 1:
        parent, height, unit_repeat = _group_units(
            parent, height, labels, units, unit_of_patch, n_units, vertices, faces, graph, cues, diag, rng, cancel_check
        )
    centroids = (
        np.stack(
            [np.bincount(labels, weights=graph.areas * graph.centroids[:, k], minlength=n_leaves) for k in range(3)],
            axis=1,
        )
        / np.maximum(area, 1e-300)[:, None]
    )
    hierarchy = finish_tree(labels, parent, height, centroids, area, auto_scale())
    lap("merge")
    if REFINE_BORDERS:  # before gathering copies: it renumbers nodes (the copies are whole units)
        progress(0.9, "refining borders")
        leaves = refine_borders(graph, hierarchy.leaf_labels, hierarchy.cut(scale=auto_scale()), cancel_check)
        hierarchy = Hierarchy(leaves, hierarchy.parent, hierarchy.height).without_empty_leaves()
    lap("refine")
    repeats = []
    if n_units > 1:
        hierarchy, repeats = _gather_repeats(hierarchy, units, n_units, vertices, faces, graph, diag, cues, rng)
    lap("repeats")
    progress(1.0, "done")
    info = {
        "times": times,
        "n_leaves": hierarchy.n_leaves,
        "n_pieces": int(pieces.max()) + 1,
        "n_units": n_units,
        "repeats": repeats,
    }
    return hierarchy, info


ASSEMBLY_SHARE = 0.01  # a unit with this share of the area counts as a substantial piece


def is_assembly(unit_area: np.ndarray) -> bool:
    """Several substantial units (pieces or material regions): the artist's decomposition.
    Their inner trees then sit below the automatic level (units are its parts; finer cuts
    still split them along creases and thickness). A scan with specks of debris is not one."""
    return int(np.count_nonzero(unit_area >= ASSEMBLY_SHARE * unit_area.sum())) >= 2


def _group_units(
    parent, height, labels, units, unit_of_patch, n_units, vertices, faces, graph, cues, diag, rng, cancel_check
):
    """Merges of whole units (their patch trees' roots) by contact, gap, cues and repetition,
    appended to the patch forest."""
    root, _ = roots_and_depths(parent)
    unit_root = np.zeros(n_units, dtype=np.int64)
    unit_root[unit_of_patch] = root[: len(unit_of_patch)]
    unit_area = np.bincount(units, weights=graph.areas, minlength=n_units)
    pairs, gap = unit_contacts(vertices, faces, graph.areas, units, rng, cancel_check=cancel_check)
    cancel_check()
    centre = (
        np.stack(
            [np.bincount(units, weights=graph.areas * graph.centroids[:, k], minlength=n_units) for k in range(3)],
            axis=1,
        )
        / np.maximum(unit_area, 1e-300)[:, None]
    )
    unit_cues = []
    for cue in cues:
        per_unit = np.zeros(n_units, dtype=np.int64)
        per_unit[units] = cue
        unit_cues.append(per_unit)
    far = np.concatenate([unit_centres_pairs(centre), same_cue_pairs(centre, unit_cues)])
    blocks = file_blocks(faces, cues)
    held = None
    if blocks is not None:  # units written as one object (their faces interleave in the file)
        held, block_pairs = unit_blocks(units, blocks, n_units)
        far = np.concatenate([far, block_pairs])
    if len(far):
        pairs = np.concatenate([pairs, far])
        gap = np.concatenate([gap, centre_gaps(centre, unit_area, far)])
    signatures = shape_signatures(vertices, faces, graph.areas, units, n_units)
    repeat = np.full(n_units, -1, dtype=np.int64)
    for k, members in enumerate(congruent_groups(signatures, np.arange(n_units), diag)):
        repeat[members] = k
    cancel_check()
    merges = group_units(unit_area, unit_cues, repeat, pairs, gap, float(unit_area.sum()), cancel_check, held)
    node_of = list(unit_root)
    parent, height = list(parent), list(height)
    for a, b, c in merges:
        k = len(parent)
        na, nb = node_of[a], node_of[b]
        parent[na] = parent[nb] = k
        parent.append(-1)
        height.append(max(cost_to_height(c), height[na], height[nb]))
        node_of.append(k)
    return np.array(parent, dtype=np.int64), np.array(height, dtype=np.float64), repeat


def _gather_repeats(hierarchy, units, n_units, vertices, faces, graph, diag, cues, rng):
    """Congruent parts at the automatic level that consist of whole units become siblings under
    one node just above that level, or at it when the copies touch into one whole and carry the
    same cues (a chain: one part there, each link a part below); returns the new tree and the
    groups (node ids)."""
    level = auto_scale()
    active = hierarchy.active_at_scale(level)
    node_of_face = hierarchy.representative(active)[hierarchy.leaf_labels]
    nodes, part = np.unique(node_of_face, return_inverse=True)
    part = part.ravel()
    # a part made of whole units: every unit it touches lies entirely inside it
    per_unit_parts = np.unique(np.stack([units, part], axis=1), axis=0)
    split_units = np.bincount(per_unit_parts[:, 0], minlength=n_units) > 1
    whole = np.ones(len(nodes), dtype=bool)
    whole[part[split_units[units]]] = False
    signatures = shape_signatures(vertices, faces, graph.areas, part, len(nodes))
    part_groups = congruent_groups(signatures, np.flatnonzero(whole), diag)
    if not part_groups:
        return hierarchy, []
    in_one_piece = copies_share_cues(part, cues, part_groups)
    in_one_piece[in_one_piece] = copies_in_one_piece(
        vertices, faces, graph.areas, part, [g for g, ok in zip(part_groups, in_one_piece) if ok], rng
    )
    groups = [nodes[g] for g in part_groups]
    node_area = hierarchy.subtree_sums(np.bincount(hierarchy.leaf_labels, graph.areas, hierarchy.n_leaves))
    parent, height, renamed = gather_copies(
        hierarchy.parent, hierarchy.height, hierarchy.n_leaves, groups, level, node_area, in_one_piece
    )
    height[-1] = 1.0
    return Hierarchy(hierarchy.leaf_labels, parent, height), renamed
