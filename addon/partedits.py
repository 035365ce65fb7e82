"""Fixing a result by hand, in the part hierarchy itself (no bpy): merge parts, split a part one
level finer, split a selection of faces off as a new part.

Every edit returns a new (leaf_labels, parent, height) that the shipped Hierarchy accepts, so the
granularity slider keeps working afterwards: an edit made at scale s shows at s, and at other
scales the tree decides as before (a merge made at s holds at s and coarser; a split made at s
holds at s and finer). `node_map` maps old node ids to new ones (-1: removed), so anything keyed
by node (part names) follows the edit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ABOVE_ROOT = float(np.nextafter(np.float32(1.0), np.float32(2.0)))  # never reached by a cut (scale <= 1)


@dataclass
class Edit:
    leaf_labels: np.ndarray
    parent: np.ndarray
    height: np.ndarray
    node_map: np.ndarray  # old node -> new node (-1 when it went away)
    new_node: int  # the node that is the edited part now


def active_nodes(hierarchy, scale: float) -> np.ndarray:
    """Per face, the node of its part at `scale`."""
    rep = hierarchy.representative(hierarchy.active_at_scale(scale))
    return rep[hierarchy.leaf_labels]


def ancestors(parent: np.ndarray, node: int) -> list[int]:
    out = [int(node)]
    while parent[out[-1]] >= 0:
        out.append(int(parent[out[-1]]))
    return out


def lowest_common_ancestor(parent: np.ndarray, nodes) -> int:
    nodes = [int(n) for n in nodes]
    common = ancestors(parent, nodes[0])
    for n in nodes[1:]:
        up = set(ancestors(parent, n))
        common = [a for a in common if a in up]
    return common[0]


def merge(hierarchy, nodes, scale: float) -> Edit:
    """The parts `nodes` (active at `scale`) become one: a new node at height `scale` holds them,
    under their lowest common ancestor."""
    nodes = sorted({int(n) for n in nodes})
    if len(nodes) < 2:
        raise ValueError("select at least two parts to merge")
    parent = hierarchy.parent.astype(np.int64).tolist()
    height = hierarchy.height.astype(np.float64).tolist()
    top = lowest_common_ancestor(hierarchy.parent, nodes)
    new = len(parent)
    parent.append(top)
    height.append(min(float(scale), height[top]))
    for n in nodes:
        parent[n] = new
    return _renumber(hierarchy.leaf_labels, parent, height, new, hierarchy.n_leaves)


def split_finer(hierarchy, node: int, scale: float) -> Edit:
    """The part `node` shows its children at `scale` (and finer): its height moves just above it."""
    node = int(node)
    if not (hierarchy.parent == node).any():
        raise ValueError("this part is already a finest piece: select faces in Edit Mode to split it")
    height = hierarchy.height.astype(np.float64)
    up = hierarchy.parent[node]
    limit = height[up] if up >= 0 else ABOVE_ROOT
    height[node] = min(float(np.nextafter(np.float32(scale), np.float32(2.0))), limit)
    if up < 0:  # the root must stay above every cut: a new root holds it
        parent = np.append(hierarchy.parent, -1).astype(np.int64)
        parent[node] = len(parent) - 1
        height = np.append(height, max(ABOVE_ROOT, height[node]))
        return _renumber(hierarchy.leaf_labels, parent.tolist(), height.tolist(), node, hierarchy.n_leaves)
    return _renumber(hierarchy.leaf_labels, hierarchy.parent.tolist(), height.tolist(), node, hierarchy.n_leaves)


def split_faces(hierarchy, face_mask: np.ndarray, scale: float) -> Edit:
    """The faces in `face_mask` become a new part at `scale`: their share of every leaf becomes a
    new leaf, and one new node (height `scale`) holds those, beside the parts they came from."""
    face_mask = np.asarray(face_mask, dtype=bool)
    if face_mask.shape != hierarchy.leaf_labels.shape:
        raise ValueError(f"{face_mask.size} selected flags for {hierarchy.leaf_labels.size} faces")
    if not face_mask.any() or face_mask.all():
        raise ValueError("select some faces of the mesh (not none, not all) to split them off")
    leaf = hierarchy.leaf_labels.astype(np.int64)
    parent = hierarchy.parent.astype(np.int64).tolist()
    height = hierarchy.height.astype(np.float64).tolist()
    touched_parts = np.unique(active_nodes(hierarchy, scale)[face_mask])
    top = lowest_common_ancestor(hierarchy.parent, touched_parts)
    if len(touched_parts) == 1:  # inside one part: the new part sits beside it
        top = parent[top]
    if top < 0:  # the part was the whole mesh: a new root above every cut
        root = len(parent) - 1
        parent.append(-1)
        height.append(ABOVE_ROOT)
        parent[root] = top = len(parent) - 1
    group = len(parent)
    parent.append(top)
    height.append(min(float(scale), height[top]))
    new_leaf_of = {}
    for old in np.unique(leaf[face_mask]).tolist():
        new_leaf_of[old] = len(parent)
        parent.append(group)
        height.append(0.0)
    lookup = np.arange(len(parent))
    for old, new in new_leaf_of.items():
        lookup[old] = new
    leaf = np.where(face_mask, lookup[leaf], leaf)
    return _renumber(leaf, parent, height, group, hierarchy.n_leaves, list(new_leaf_of.values()))


def _renumber(leaf_labels, parents: list, heights: list, edited: int, n_leaves: int, extra_leaves=()) -> Edit:
    """Indices back into the Hierarchy's order (leaves first, every parent after its children,
    the root last), dropping internal nodes that lost every child."""
    parent = np.asarray(parents, dtype=np.int64)
    height = np.asarray(heights, dtype=np.float64)
    n = len(parent)
    is_leaf = np.zeros(n, dtype=bool)
    is_leaf[:n_leaves] = True
    is_leaf[list(extra_leaves)] = True
    was_internal = ~is_leaf
    alive = np.ones(n, dtype=bool)
    while True:  # internal nodes without children go, which may empty their parent
        kids = np.bincount(parent[(parent >= 0) & alive], minlength=n)
        dead = alive & was_internal & (kids == 0)
        if not dead.any():
            break
        alive &= ~dead
    level = np.zeros(n, dtype=np.int64)
    for _ in range(n):  # bottom-up levels: a parent sits above all its children
        up = parent[alive & (parent >= 0)]
        lv = np.zeros(n, dtype=np.int64)
        np.maximum.at(lv, up, level[alive & (parent >= 0)] + 1)
        changed = np.maximum(level, lv)
        if np.array_equal(changed, level):
            break
        level = changed
    leaves = np.flatnonzero(alive & is_leaf)
    internal = np.flatnonzero(alive & ~is_leaf)
    internal = internal[np.lexsort((internal, level[internal]))]
    order = np.concatenate([leaves, internal])
    node_map = np.full(n, -1, dtype=np.int64)
    node_map[order] = np.arange(len(order))
    new_parent = np.where(parent[order] >= 0, node_map[np.maximum(parent[order], 0)], -1)
    new_leaf = node_map[np.asarray(leaf_labels, dtype=np.int64)]
    return Edit(
        new_leaf.astype(np.int32),
        new_parent.astype(np.int32),
        height[order].astype(np.float32),
        node_map[:n],
        int(node_map[edited]),
    )
