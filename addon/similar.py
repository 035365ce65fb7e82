"""Select Similar: the copies of a part (bolts, wheels, keys) from the engine's repetition groups.

No bpy. A segmentation may carry `info["repeats"]`: groups of hierarchy node ids that are
congruent copies of one another (those in one sub-assembly share a parent node). For a part, the
copies are found through the node of the part at the slider's scale, or the nearest node above it
that is in a group (the part is a piece of one copy: then the whole copies are selected, since the
pieces of the other copies have no known correspondence).
"""

from __future__ import annotations

import numpy as np


def clean_groups(repeats, n_nodes: int) -> list[list[int]]:
    """Valid groups only: lists of 2+ distinct node ids inside the tree (anything else dropped)."""
    out = []
    for group in repeats or []:
        try:
            nodes = sorted({int(n) for n in group})
        except (TypeError, ValueError):
            continue
        nodes = [n for n in nodes if 0 <= n < n_nodes]
        if len(nodes) >= 2:
            out.append(nodes)
    return out


def remap_groups(groups, node_map) -> list[list[int]]:
    """Groups after a hierarchy edit (node_map: old -> new, -1 gone)."""
    node_map = np.asarray(node_map)
    remapped = [[int(node_map[n]) for n in g if 0 <= n < len(node_map) and node_map[n] >= 0] for g in groups]
    return [g for g in remapped if len(g) >= 2]


def copies_of(hierarchy, node: int, groups) -> list[int]:
    """The nodes that are copies of `node` or of its nearest ancestor in a group ([] if none)."""
    member = {n: g for g in groups for n in g}
    while node >= 0:
        if node in member:
            return list(member[node])
        node = int(hierarchy.parent[node])
    return []


def similar_parts(hierarchy, poly_labels: np.ndarray, part_nodes_per_face: np.ndarray, parts, groups) -> set[int]:
    """Every part that lies in a copy of one of `parts` (the given parts included).

    part_nodes_per_face: the node of each face's part at the slider's scale
    (partedits.active_nodes)."""
    poly_labels = np.asarray(poly_labels)
    chosen = {int(p) for p in parts}
    out = set(chosen)
    for part in chosen:
        faces = np.flatnonzero(poly_labels == part)
        if faces.size == 0:
            continue
        for copy in copies_of(hierarchy, int(part_nodes_per_face[faces[0]]), groups):
            under = np.asarray(hierarchy.face_mask(copy), dtype=bool)
            out |= set(np.unique(poly_labels[under]).tolist()) - {-1}
    return out
