"""Assemblies: separate pieces (and the regions that materials or groups cut them into) as
first-class units of the merge tree.

Each unit is a region: an edge-connected set of faces of one piece with one material and one
group. Inside a unit the patch tree of merge.py splits along creases and thickness; above the
units, `group_units` merges them greedily, cheapest first, by

    cost = (UNIT_BASE + gap / sqrt(area of the smaller) / GAP_UNIT) x material x repeat x size x block

- `gap`: the surface distance between the two clusters (0 when they touch or intersect),
  relative to the smaller one's size (at least GAP_FLOOR of the mesh): a washer on a bolt joins
  it, two bolts a hand apart don't, specks a hair apart do;
- `material`: x SAME_MATERIAL when they share a material or a group (and the gap then counts
  relative to the larger one and the whole: scattered pieces of one leather join it),
  x OTHER_MATERIAL when they share neither; nothing without cues (geometry only);
- `repeat`: x REPEAT when a lone copy of a repeated shape would join anything, even a piece of its
  own material or another copy (bolts, wheels and keys stay parts: each copy is one); and a shape
  with k > FEW_COPIES copies gets only SAME_MATERIAL ** (FEW_COPIES / k) for a shared material:
  screws and keys repeated by the dozen share their metal or plastic with everything around
  them, while a pair or a triple (left and right, a tripod's legs) is a design's symmetry;
- `size`: (smaller area / mesh area / UNIT_REF) ** 0.5, so tiny bits (hair, particles, rivets)
  merge first and never stay thousands of top-level parts.
- `block`: x SAME_BLOCK when both hold faces of one block of the file (`file_blocks`: loose
  parts of one material whose face ranges interleave were written as one object), so such units
  join first.

Neighbours come from k nearest surface samples, so pieces and contacts stay near-linear even in
a dense soup of overlapping triangles; units that share a cue are also paired with the few nearest
units of that cue (`same_cue_pairs`), so the scattered pieces of one material can find each other
past the pieces between them. Merges keep the larger cluster's neighbour table
(small-to-large) and re-check stale heap entries lazily.

Repetition: units (and groups of whole units at the automatic level) that are congruent — same
face count, area and sorted principal moments within a tolerance — are reported in
`info["repeats"]`, and the tree is rearranged so the copies of one group are siblings under one
node just above the automatic level (one such node per sub-assembly when the sub-assemblies that
hold them are themselves repeated), or just under it when the copies touch one another into one
piece and carry the same cues (`copies_in_one_piece`: a chain's links are one part).
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence

import numpy as np
from scipy.spatial import cKDTree

from ...hierarchy import roots_and_depths
from ...meshgraph import dual_components, face_components

# tuned once on both development samples together (assemblies, both tracks; never per model)
UNIT_BASE = 1.0
GAP_UNIT = 0.1  # a gap of 0.1 x the smaller unit's size doubles the base cost
SAME_MATERIAL = 0.1
OTHER_MATERIAL = 30.0
SHARED_GAP_MIX = 0.25  # with a shared cue the gap counts relative to big^0.75 x mesh^0.25 (areas)
GAP_FLOOR = 0.01  # bits smaller than 1% of the area measure their gaps as if they had 1%
REPEAT = 3.0
FEW_COPIES = 3  # up to this many copies share their material's bonus in full; more, less and less
SAME_BLOCK = 1e-3  # units of one block of the file (`file_blocks`) join first: written as one object
UNIT_REF = 0.01
SIZE_POWER = 0.5
NEIGHBOURS = 12  # nearest surface samples asked per sample for unit contacts
UNIT_NEIGHBOURS = 16  # closest other units kept per unit
QUERY_CHUNK = 20_000
MAX_SAMPLES = 300_000
CONGRUENCE_TOLERANCE = 0.02  # relative, on area and sorted principal moments
SUBASSEMBLY_AREA_RATIO = 0.8  # sub-assemblies holding as many copies, this close in area, repeat


def file_blocks(faces: np.ndarray, cues: Sequence[np.ndarray] = ()) -> np.ndarray | None:
    """Per face, its block of the file: loose parts (faces joined by shared vertex indices, as
    Blender's "separate by loose parts") whose face ranges interleave, closed under interleaving.
    A joined object keeps each original object's faces in one run (Ctrl-J, glTF/OBJ/STL exports),
    so loose parts written into each other's runs come from one object. None when everything
    ends up in one block: then the order says nothing (one loose part, or a shuffled file).

    Loose parts are taken per value of each cue (`cues`: per-face ids): files write one run per
    material, so a welded piece of two materials (Blender after Merge by Distance) would be one
    loose part spanning every object written between its runs; glTF splits it there anyway."""
    n_faces = len(faces)
    corners = np.asarray(faces, dtype=np.int64)
    for cue in cues:  # a vertex used by faces of k materials counts as k vertices
        corners = corners * (int(cue.max(initial=0)) + 1) + np.asarray(cue, dtype=np.int64)[:, None]
        corners = np.unique(corners, return_inverse=True)[1].reshape(faces.shape)  # compact: no overflow
    loose = face_components(corners, np.arange(int(corners.max(initial=-1)) + 1))
    n_loose = int(loose.max(initial=-1)) + 1
    first = np.full(n_loose, n_faces, dtype=np.int64)
    last = np.zeros(n_loose, dtype=np.int64)
    np.minimum.at(first, loose, np.arange(n_faces))
    np.maximum.at(last, loose, np.arange(n_faces))
    order = np.argsort(first, kind="stable")
    starts_new = np.r_[True, first[order][1:] > np.maximum.accumulate(last[order])[:-1]]
    block = np.empty(n_loose, dtype=np.int64)
    block[order] = np.cumsum(starts_new) - 1
    return block[loose] if block.max(initial=0) > 0 else None


def unit_blocks(units: np.ndarray, blocks: np.ndarray, n_units: int) -> tuple[list[set[int]] | None, np.ndarray]:
    """The file blocks (`file_blocks`) shared by several units that each unit has faces in
    (None when no block holds two units), and pairs joining every unit of such a block to the
    block's first unit (so units of one block meet however far apart they lie)."""
    both = np.unique(np.stack([units, blocks], axis=1), axis=0)
    both = both[np.bincount(both[:, 1])[both[:, 1]] > 1]  # a block of one unit says nothing
    if len(both) == 0:
        return None, np.empty((0, 2), np.int64)
    held: list[set[int]] = [set() for _ in range(n_units)]
    for unit, block in both.tolist():
        held[unit].add(block)
    by_block = both[np.lexsort((both[:, 0], both[:, 1]))]
    first = np.r_[True, by_block[1:, 1] != by_block[:-1, 1]]
    head = by_block[first, 0][np.cumsum(first) - 1]
    return held, np.stack([head, by_block[:, 0]], axis=1)[~first]


def unit_labels(pairs: np.ndarray, n_faces: int, pieces: np.ndarray, cues: list[np.ndarray]) -> np.ndarray:
    """Regions: pieces cut wherever a cue (material, group) changes across an edge."""
    if not cues:
        return pieces
    keep = np.ones(len(pairs), dtype=bool)
    for cue in cues:
        keep &= cue[pairs[:, 0]] == cue[pairs[:, 1]]
    return dual_components(pairs[keep], n_faces)


def surface_samples(vertices, faces, areas, n_samples, rng):
    """Every used vertex and area-weighted random points, with the face each comes from."""
    n_faces = len(faces)
    face_of_vertex = np.full(len(vertices), -1, dtype=np.int64)
    face_of_vertex[faces.ravel()] = np.repeat(np.arange(n_faces), 3)
    used = np.flatnonzero(face_of_vertex >= 0)
    total = float(areas.sum())
    if total > 0 and n_samples > 0:
        face = rng.choice(n_faces, size=n_samples, p=areas / total)
        r = rng.random((n_samples, 2))
        flip = r.sum(axis=1) > 1
        r[flip] = 1 - r[flip]
        tri = vertices[faces[face]]
        random_points = tri[:, 0] + r[:, :1] * (tri[:, 1] - tri[:, 0]) + r[:, 1:] * (tri[:, 2] - tri[:, 0])
    else:
        face, random_points = np.empty(0, np.int64), np.empty((0, 3))
    points = np.concatenate([vertices[used], random_points])
    owner = np.concatenate([face_of_vertex[used], face])
    if len(points) > MAX_SAMPLES:
        keep = np.sort(rng.choice(len(points), MAX_SAMPLES, replace=False))
        points, owner = points[keep], owner[keep]
    return points, owner


def unit_contacts(vertices, faces, areas, units, rng, k: int = NEIGHBOURS, cancel_check=lambda: None):
    """Pairs of units that are near each other and the smallest gap between them (mesh units,
    0 when within the sampling spacing): from the k nearest samples of every sample, so the
    number of pairs is at most k per sample however crowded the pieces are."""
    n_units = int(units.max()) + 1
    if n_units < 2:
        return np.empty((0, 2), np.int64), np.empty(0)
    n_samples = min(MAX_SAMPLES // 2, 20 * len(faces))
    points, owner = surface_samples(vertices, faces, areas, n_samples, rng)
    unit = units[owner]
    k = min(k + 1, len(points))
    tree = cKDTree(points)
    cancel_check()
    keys, dists = [], []
    for lo in range(0, len(points), QUERY_CHUNK):  # in batches, so a cancel is heard meanwhile
        dist, idx = tree.query(points[lo : lo + QUERY_CHUNK], k=k)
        key, d = _closest_per_pair(np.repeat(unit[lo : lo + QUERY_CHUNK], k), unit[idx.ravel()], dist.ravel(), n_units)
        keys.append(key)
        dists.append(d)
        cancel_check()
    key, d = _closest_per_pair(
        np.concatenate(keys) // n_units, np.concatenate(keys) % n_units, np.concatenate(dists), n_units
    )
    spacing = np.sqrt(max(float(areas.sum()), 1e-300) / max(n_samples, 1))
    gap = np.maximum(d - 2.0 * spacing, 0.0)
    pairs = np.stack([key // n_units, key % n_units], axis=1)
    cancel_check()
    keep = nearest_per_unit(pairs, gap, n_units, UNIT_NEIGHBOURS)
    return pairs[keep], gap[keep]


def _closest_per_pair(a: np.ndarray, b: np.ndarray, d: np.ndarray, n_units: int):
    """Unit pairs (as keys lo * n + hi, sorted) of different units and their smallest distance."""
    between = a != b
    a, b, d = a[between], b[between], d[between]
    key = np.minimum(a, b) * n_units + np.maximum(a, b)
    order = np.lexsort((d, key))
    key, d = key[order], d[order]
    first = np.r_[True, key[1:] != key[:-1]] if len(key) else np.zeros(0, dtype=bool)
    return key[first], d[first]


def nearest_per_unit(pairs: np.ndarray, gap: np.ndarray, n_units: int, k: int) -> np.ndarray:
    """Mask of the pairs that are among the k smallest gaps of either of their units (bounds the
    neighbours of a unit in a crowd, so the merging stays linear in the units)."""
    side = np.concatenate([pairs[:, 0], pairs[:, 1]])
    index = np.tile(np.arange(len(pairs)), 2)
    order = np.lexsort((np.tile(gap, 2), side))
    side, index = side[order], index[order]
    starts = np.r_[0, np.flatnonzero(side[1:] != side[:-1]) + 1]
    rank = np.arange(len(side)) - np.repeat(starts, np.diff(np.r_[starts, len(side)]))
    keep = np.zeros(len(pairs), dtype=bool)
    keep[index[rank < k]] = True
    return keep


def unit_centres_pairs(centres: np.ndarray, k: int = 4) -> np.ndarray:
    """Each unit's k nearest other units by centre (so units far from all others still have
    neighbours to merge with)."""
    n = len(centres)
    if n < 2:
        return np.empty((0, 2), np.int64)
    k = min(k + 1, n)
    _, idx = cKDTree(centres).query(centres, k=k)
    a = np.repeat(np.arange(n), k)
    b = idx.ravel()
    ok = a != b
    return np.unique(np.sort(np.stack([a[ok], b[ok]], axis=1), axis=1), axis=0)


def same_cue_pairs(centres: np.ndarray, cues: list[np.ndarray], k: int = 4) -> np.ndarray:
    """For every cue (material, group): each unit's k nearest units of the same id by centre."""
    out = [np.empty((0, 2), np.int64)]
    for cue in cues:
        shared = np.flatnonzero(np.bincount(cue)[cue] > 1)  # ids held by one unit pair with nothing
        order = shared[np.argsort(cue[shared], kind="stable")]
        bounds = np.flatnonzero(np.diff(cue[order])) + 1
        for members in np.split(order, bounds) if len(order) else []:
            out.append(members[unit_centres_pairs(centres[members], k)])
    return np.unique(np.sort(np.concatenate(out), axis=1), axis=0)


def centre_gaps(centres: np.ndarray, area: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Gap estimate between units that sampled contacts missed: centre distance less the radii of
    discs of their areas."""
    radius = np.sqrt(area / np.pi)
    dist = np.linalg.norm(centres[pairs[:, 0]] - centres[pairs[:, 1]], axis=1)
    return np.maximum(dist - radius[pairs[:, 0]] - radius[pairs[:, 1]], 0.0)


def shape_signatures(vertices, faces, areas, labels, n: int) -> np.ndarray:
    """Per label: (faces, area, three sorted principal second moments of the area about the
    centroid, normalised), invariant to rigid motion. (n, 5)."""
    tri = vertices[faces]
    cen = tri.mean(axis=1)
    area = np.bincount(labels, weights=areas, minlength=n)
    safe = np.maximum(area, 1e-300)
    c = (
        np.stack([np.bincount(labels, weights=areas * cen[:, k], minlength=n) for k in range(3)], axis=1)
        / safe[:, None]
    )
    # second moments of the vertices of each face (better than centroids for few large faces)
    rel = tri - c[labels][:, None, :]
    w = areas / 3.0
    cov = np.zeros((n, 3, 3))
    for i in range(3):
        for j in range(i, 3):
            v = np.bincount(labels, weights=w * (rel[:, :, i] * rel[:, :, j]).sum(axis=1), minlength=n) / safe
            cov[:, i, j] = cov[:, j, i] = v
    eig = np.sort(np.linalg.eigvalsh(cov), axis=1)
    count = np.bincount(labels, minlength=n).astype(np.float64)
    return np.column_stack([count, area, np.sqrt(np.maximum(eig, 0.0))])


def congruent_groups(signatures: np.ndarray, candidates: np.ndarray, scale: float) -> list[np.ndarray]:
    """Groups (>= 2) of candidate labels whose signatures agree: same face count, area and
    principal extents within CONGRUENCE_TOLERANCE (relative; extents also to 1e-3 of `scale`)."""
    if len(candidates) < 2:
        return []
    sig = signatures[candidates]
    order = np.lexsort((sig[:, 1], sig[:, 0]))
    groups, current = [], [order[0]]

    def close(a, b):
        sa, sb = sig[a], sig[b]
        if sa[0] != sb[0]:
            return False
        tol = CONGRUENCE_TOLERANCE * np.maximum(np.abs(sa[1:]), np.abs(sb[1:]))
        tol[1:] = np.maximum(tol[1:], 1e-3 * scale)
        return bool(np.all(np.abs(sa[1:] - sb[1:]) <= tol))

    for idx in order[1:]:
        if close(current[0], idx):
            current.append(idx)
        else:
            if len(current) > 1:
                groups.append(candidates[np.array(current)])
            current = [idx]
    if len(current) > 1:
        groups.append(candidates[np.array(current)])
    return groups


COPY_SAMPLES = 4000  # surface samples per copy for the contact test between copies
BOX_FILTER_MAX = 4096  # copies per group up to which boxes are compared pairwise first


def copies_in_one_piece(vertices, faces, areas, labels, groups: list[np.ndarray], rng) -> np.ndarray:
    """Per group of copies (label ids), whether its copies touch one another into one connected
    whole: a chain's links, strands of hair, which artists make one object. Copies apart
    (wheels, bolts, chess pieces, the bars of a commutator) stay parts each. Touching: surface
    samples of two copies within twice the sample spacing, sampled densely on the copies alone
    so that a gap small against the mesh but not against the copies still counts as apart."""
    out = np.zeros(len(groups), dtype=bool)
    if not groups:
        return out
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(int(labels.max(initial=-1)) + 2))
    corners = vertices[faces[order]]  # per label (every label 0..n-1 has faces): its box
    lo = np.minimum.reduceat(corners.min(axis=1), bounds[:-1])
    hi = np.maximum.reduceat(corners.max(axis=1), bounds[:-1])
    for k, members in enumerate(np.sort(g) for g in groups):
        face_ids = np.concatenate([order[bounds[m] : bounds[m + 1]] for m in members])
        n_samples = min(COPY_SAMPLES * len(members), MAX_SAMPLES)
        reach = 2.0 * np.sqrt(max(float(areas[face_ids].sum()), 1e-300) / n_samples)
        if len(members) <= BOX_FILTER_MAX:  # boxes apart: the copies can't touch (most groups end here)
            overlap = np.all((lo[members, None] <= hi[None, members] + reach), axis=2)
            if dual_components(np.argwhere(overlap & overlap.T), len(members)).max() > 0:
                continue
        used, local = np.unique(faces[face_ids], return_inverse=True)
        points, owner = surface_samples(vertices[used], local.reshape(-1, 3), areas[face_ids], n_samples, rng)
        copy = np.searchsorted(members, labels[face_ids[owner]])
        near = cKDTree(points).query_pairs(reach, output_type="ndarray")
        out[k] = dual_components(copy[near], len(members)).max() == 0  # one connected whole
    return out


def copies_share_cues(labels: np.ndarray, cues: Sequence[np.ndarray], groups: list[np.ndarray]) -> np.ndarray:
    """Per group of copies (label ids), whether every copy carries the same authoring cue ids
    (materials, groups): copies the artist told apart (two-tone halves) are no one whole."""
    out = np.ones(len(groups), dtype=bool)
    if not groups:
        return out
    copies = np.unique(np.concatenate(groups))
    face_ids = np.flatnonzero(np.isin(labels, copies))
    for cue in cues:
        held = np.unique(np.stack([labels[face_ids], np.asarray(cue)[face_ids]], axis=1), axis=0)  # sorted
        starts = np.searchsorted(held[:, 0], copies)
        ends = np.searchsorted(held[:, 0], copies, side="right")
        ids = {int(c): tuple(held[a:b, 1].tolist()) for c, a, b in zip(copies, starts, ends)}
        out &= [len({ids[int(m)] for m in members}) == 1 for members in groups]
    return out


def group_units(
    area: np.ndarray,
    cues: list[np.ndarray],
    repeat: np.ndarray,
    pairs: np.ndarray,
    gap: np.ndarray,
    total_area: float,
    cancel_check=None,
    blocks: list[set[int]] | None = None,
):
    """Greedy merging of units, cheapest first. Returns merges [(a, b, cost)] in the numbering of
    scipy's linkage (units 0..n-1, the k-th merge makes unit n + k); clusters the neighbour graph
    leaves apart are not joined."""
    n = len(area)
    slot_area = list(map(float, area))
    # per cue (material, group): the set of ids each cluster holds
    slot_cues = [[{int(v)} for v in cue] for cue in cues]
    slot_repeat = list(map(int, repeat))  # repeat group of a lone copy, -1 otherwise
    copies_of = np.bincount(repeat[repeat >= 0]).tolist()  # copies per repeat group
    slot_blocks = [set(b) for b in blocks] if blocks is not None else None  # blocks of the file held
    node = list(range(n))  # linkage id of the cluster living in each slot
    version = [0] * n
    nbr: list[dict[int, float]] = [dict() for _ in range(n)]
    for (a, b), g in zip(pairs.tolist(), gap.tolist()):
        if a != b:
            g0 = nbr[a].get(b)
            if g0 is None or g < g0:
                nbr[a][b] = g
                nbr[b][a] = g
    alive = [True] * n

    def cost(i: int, j: int) -> float:
        small, big = min(slot_area[i], slot_area[j]), max(slot_area[i], slot_area[j])
        # authoring cues (material, group) count once: shared if any cue is shared
        shared = any(sets[i] & sets[j] for sets in slot_cues)
        factor = (SAME_MATERIAL if shared else OTHER_MATERIAL) if slot_cues else 1.0
        if shared:  # scattered pieces of one material join relative to the larger or the whole
            size_for_gap = big ** (1.0 - SHARED_GAP_MIX) * total_area**SHARED_GAP_MIX
        else:
            size_for_gap = small
        if slot_repeat[i] >= 0 or slot_repeat[j] >= 0:  # a lone copy stays a part, cue or not
            if shared:  # a shape repeated by the dozen shares its material with everything
                copies = max(copies_of[g] for g in (slot_repeat[i], slot_repeat[j]) if g >= 0)
                factor = SAME_MATERIAL ** min(1.0, FEW_COPIES / copies)
            factor *= REPEAT
        if slot_blocks is not None and slot_blocks[i] & slot_blocks[j]:  # written as one object
            factor *= SAME_BLOCK
        rel_gap = nbr[i][j] / np.sqrt(max(size_for_gap, GAP_FLOOR * total_area, 1e-300))
        size = (small / max(total_area, 1e-300) / UNIT_REF) ** SIZE_POWER
        return (UNIT_BASE + rel_gap / GAP_UNIT) * factor * size

    heap = []
    for i in range(n):
        heap.extend((cost(i, j), i, j, 0, 0) for j in nbr[i] if i < j)
        if cancel_check is not None and i % 2048 == 2047:
            cancel_check()
    heapq.heapify(heap)
    merges = []
    steps = 0
    while heap:
        c, i, j, vi, vj = heapq.heappop(heap)
        steps += 1
        if cancel_check is not None and steps % 4096 == 0:
            cancel_check()
        if not (alive[i] and alive[j]) or j not in nbr[i]:
            continue
        if vi != version[i] or vj != version[j]:  # stale: re-price and put back
            heapq.heappush(heap, (cost(i, j), i, j, version[i], version[j]))
            continue
        # keep the slot with more neighbours; move the other's neighbours into it
        keep, gone = (i, j) if len(nbr[i]) >= len(nbr[j]) else (j, i)
        del nbr[keep][gone]
        del nbr[gone][keep]
        for m, g in nbr[gone].items():
            del nbr[m][gone]
            if g < nbr[keep].get(m, np.inf):
                nbr[keep][m] = g
                nbr[m][keep] = g
        moved = list(nbr[gone])
        nbr[gone] = {}
        alive[gone] = False
        merges.append((node[keep], node[gone], c))
        node[keep] = n + len(merges) - 1
        slot_area[keep] += slot_area[gone]
        for sets in slot_cues:
            sets[keep] |= sets[gone]
        if slot_blocks is not None:  # the larger set absorbs the smaller (n log n overall)
            small, large = sorted((slot_blocks[keep], slot_blocks[gone]), key=len)
            large |= small
            slot_blocks[keep] = large
        slot_repeat[keep] = -1
        version[keep] += 1
        # the moved neighbours are priced now; the others wait in the heap and are re-priced
        # when they come up (lazy: costs rarely fall when a cluster grows)
        for m in moved:
            if m in nbr[keep]:
                heapq.heappush(heap, (cost(keep, m), keep, m, version[keep], version[m]))
    return merges


def lowest_common_ancestor(parent, group: list[int]) -> tuple[int, list[int]]:
    """The lowest common ancestor of the nodes of `group` (none an ancestor of another) and, per
    node, its ancestor (or itself) just below it."""
    ancestors = []
    x = group[0]
    while x >= 0:
        ancestors.append(x)
        x = parent[x]
    rank = {a: r for r, a in enumerate(ancestors)}
    top = 0
    for node in group[1:]:
        x = node
        while x not in rank:
            x = parent[x]
        top = max(top, rank[x])
    lca = ancestors[top]
    below = []
    for node in group:
        x = node
        while parent[x] != lca:
            x = parent[x]
        below.append(x)
    return lca, below


def split_by_repeated_subassemblies(parent, group: list[int], node_area: np.ndarray) -> list[list[int]]:
    """The sets of copies to gather under one node each: the whole group, unless its copies lie in
    sub-assemblies that are themselves repeated (two vases, each with its bouquet of six
    leaves): children of the copies' common ancestor that are more than a copy (none is one
    itself), hold the same number of copies and have about the same area
    (SUBASSEMBLY_AREA_RATIO). Then each sub-assembly's copies are split in turn, so a coarser cut
    still holds one vase with its bouquet, where one node for all twelve leaves would take them
    out of both."""
    lca, below = lowest_common_ancestor(parent, group)
    holders, counts = np.unique(below, return_counts=True)
    areas = node_area[holders]
    repeated = (
        not set(holders.tolist()) & set(group)
        and counts.min() == counts.max()
        and areas.min() >= SUBASSEMBLY_AREA_RATIO * areas.max()
    )
    if not repeated:
        return [group]
    out = []
    for holder in holders.tolist():
        copies = [node for node, b in zip(group, below) if b == holder]
        if len(copies) > 1:
            out.extend(split_by_repeated_subassemblies(parent, copies, node_area))
    return out


def gather_copies(
    parent: np.ndarray,
    height: np.ndarray,
    n_leaves: int,
    groups: list[np.ndarray],
    level: float,
    node_area: np.ndarray | None = None,
    as_one: Sequence[bool] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """Rearrange a merge tree (parent, height; leaves 0..L-1) so the nodes of each group become
    the children of one new node just above `level` (each copy a part there), or just under it
    for the groups flagged in `as_one` (the copies one part there, each a part below), hung
    under their lowest common ancestor. With `node_area` (per node), a group spread over repeated
    sub-assemblies is gathered per sub-assembly instead (`split_by_repeated_subassemblies`).
    Nodes left with fewer than two children are spliced out; nodes are renumbered so parents
    come after children. Returns the new (parent, height) and the groups (whole) in new node ids."""
    parent = list(map(int, parent))
    height = list(map(float, height))
    flags = [False] * len(groups) if as_one is None else [bool(f) for f in as_one]
    sets = [([int(x) for x in group], flag) for group, flag in zip(groups, flags, strict=True)]
    if node_area is not None:  # on the tree as merged, before any copies move
        sets = [
            (part, flag) for group, flag in sets for part in split_by_repeated_subassemblies(parent, group, node_area)
        ]
    for group, one_part in sets:
        lca, _ = lowest_common_ancestor(parent, group)
        new = len(parent)
        if one_part:  # a hair under the level, so the cut there holds it in float32 heights too
            new_height = max(max(height[g] for g in group), level - 1e-6)
        else:
            new_height = np.nextafter(max(max(height[g] for g in group), level), 2.0) + 1e-6
        new_height = min(new_height, height[lca])
        parent.append(lca)
        height.append(new_height)
        for g in group:
            parent[g] = new
    parent_a = np.array(parent, dtype=np.int64)
    height_a = np.array(height, dtype=np.float64)
    parent_a, alive = _splice_out_thin_nodes(parent_a, n_leaves)
    roots = np.flatnonzero(alive & (parent_a < 0))
    if len(roots) != 1:
        raise RuntimeError("gathering copies broke the tree")
    # renumber: leaves keep their ids, internal nodes by height (children first on ties)
    order_nodes = np.flatnonzero(alive)
    _, depth = roots_and_depths(np.where(alive, parent_a, -1))
    internal_nodes = order_nodes[order_nodes >= n_leaves]
    internal_nodes = internal_nodes[np.lexsort((-depth[internal_nodes], height_a[internal_nodes]))]
    new_id = np.full(len(parent_a), -1, dtype=np.int64)
    new_id[:n_leaves] = np.arange(n_leaves)
    new_id[internal_nodes] = n_leaves + np.arange(len(internal_nodes))
    keep = np.r_[np.arange(n_leaves), internal_nodes]
    out_parent = np.where(parent_a[keep] >= 0, new_id[np.maximum(parent_a[keep], 0)], -1)
    out_height = height_a[keep]
    renamed = [[int(new_id[g]) for g in group] for group in groups]
    return out_parent, out_height, renamed


def _splice_out_thin_nodes(parent: np.ndarray, n_leaves: int) -> tuple[np.ndarray, np.ndarray]:
    """Drop internal nodes left without children (removals cascade upwards), then hang the child
    of every single-child node from its nearest ancestor with two or more (a lone root hands over
    to its child). Returns the new parents and the mask of the nodes kept."""
    n_nodes = len(parent)
    internal = np.arange(n_nodes) >= n_leaves
    alive = np.ones(n_nodes, dtype=bool)
    while True:
        kids = np.bincount(parent[alive & (parent >= 0)], minlength=n_nodes)
        empty = alive & internal & (kids == 0)
        if not empty.any():
            break
        alive[empty] = False
    single = alive & internal & (kids == 1)
    # per node, itself or (single) the first ancestor that is not single; n_nodes stands above the root
    skip = np.r_[np.where(single, np.where(parent >= 0, parent, n_nodes), np.arange(n_nodes)), n_nodes]
    while True:  # pointer jumping: chains of single nodes collapse in log rounds
        further = skip[skip]
        if np.array_equal(further, skip):
            break
        skip = further
    above = skip[np.where(parent >= 0, parent, n_nodes)]
    new_parent = np.where(above < n_nodes, above, -1)
    alive &= ~single
    return np.where(alive, new_parent, parent), alive
