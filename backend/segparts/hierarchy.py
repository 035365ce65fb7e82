"""Part hierarchy (a merge tree over the faces) and how to cut it.

Pure numpy on purpose: the Blender add-on ships a copy of this module so its granularity slider
and click-to-select re-cut a returned hierarchy without a round trip to the backend.

Representation (all engines, and the wire):
- `leaf_labels` (F,) int32: the finest segment of each face, 0..L-1.
- `parent` (N,) int32: parent node of each node, -1 for the root. Nodes 0..L-1 are the leaves;
  every parent has a larger index than its children, and node N-1 is the single root.
- `height` (N,) float32 in [0, 1]: the scale at which a node forms. Leaves have 0, a parent is at
  least as high as its children, the root is 1.

Cutting at scale s keeps the highest nodes with height <= s (s = 0 gives the leaves, s = 1 the
root). Cutting at n parts undoes the n - 1 highest merges.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(eq=False)
class Hierarchy:
    leaf_labels: np.ndarray
    parent: np.ndarray
    height: np.ndarray

    def __post_init__(self):
        self.leaf_labels = np.ascontiguousarray(self.leaf_labels, dtype=np.int32)
        self.parent = np.ascontiguousarray(self.parent, dtype=np.int32)
        self.height = np.ascontiguousarray(self.height, dtype=np.float32)
        self._check()
        self._order_leaves()

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def flat(cls, labels: np.ndarray) -> Hierarchy:
        """A one-level tree: the given segments under a single root."""
        leaf = first_use_ids(labels).astype(np.int32)
        n_leaves = int(leaf.max()) + 1 if leaf.size else 1
        if n_leaves == 1:
            return cls(leaf, np.array([-1]), np.array([1.0]))
        parent = np.full(n_leaves + 1, n_leaves, dtype=np.int32)
        parent[-1] = -1
        height = np.zeros(n_leaves + 1, dtype=np.float32)
        height[-1] = 1.0
        return cls(leaf, parent, height)

    @classmethod
    def from_linkage(cls, leaf_labels: np.ndarray, linkage: np.ndarray) -> Hierarchy:
        """From a scipy-style linkage over L leaves: row k merges nodes Z[k,0], Z[k,1] into L+k at
        height Z[k,2]. Heights are rescaled to [0, 1]; a forest is joined under one root."""
        leaf = np.asarray(leaf_labels, dtype=np.int32)
        n_leaves = int(leaf.max()) + 1
        z = np.asarray(linkage, dtype=np.float64).reshape(
            -1, 4 if np.ndim(linkage) == 2 and np.shape(linkage)[1] == 4 else 3
        )
        n_nodes = n_leaves + len(z)
        parent = np.full(n_nodes, -1, dtype=np.int64)
        height = np.zeros(n_nodes, dtype=np.float64)
        if len(z):
            kids = z[:, :2].astype(np.int64)
            parent[kids[:, 0]] = np.arange(n_leaves, n_nodes)
            parent[kids[:, 1]] = np.arange(n_leaves, n_nodes)
            height[n_leaves:] = np.maximum.accumulate(z[:, 2])  # monotone, as a cut needs
        roots = np.flatnonzero(parent < 0)
        top = height.max() if height.max() > 0 else 1.0
        height = height / top
        if len(roots) > 1:  # join a forest under one root
            parent[roots] = n_nodes
            parent = np.append(parent, -1)
            height = np.append(height, 1.0)
        else:
            height[roots] = 1.0
        return cls(leaf, parent, height)

    # ---- properties ---------------------------------------------------------------------
    @property
    def n_leaves(self) -> int:
        return int(self.parent.shape[0] - self.n_internal)

    @property
    def n_internal(self) -> int:
        return int(np.count_nonzero(np.bincount(self.parent[self.parent >= 0], minlength=1)))

    @property
    def n_nodes(self) -> int:
        return int(self.parent.shape[0])

    @property
    def root(self) -> int:
        return self.n_nodes - 1

    def children(self, node: int) -> np.ndarray:
        return np.flatnonzero(self.parent == node).astype(np.int32)

    def without_empty_leaves(self) -> Hierarchy:
        """The same tree without leaves that hold no face: internal nodes left with no child go,
        those left with one hand it to their parent (the root stays), and nodes are renumbered
        in their old order (leaves first, parents after children)."""
        n_leaves = self.n_leaves
        alive = np.zeros(self.n_nodes, dtype=bool)
        alive[np.unique(self.leaf_labels)] = True
        if alive[:n_leaves].all():
            return self
        parent = self.parent.astype(np.int64).copy()
        kids = np.zeros(self.n_nodes, dtype=np.int64)
        for node in range(self.n_nodes - 1):  # children come before parents: one pass
            if node >= n_leaves:
                alive[node] = kids[node] > 0
            if alive[node]:
                kids[parent[node]] += 1
        alive[self.root] = True
        for node in range(self.n_nodes - 2, n_leaves - 1, -1):  # top down: chains collapse in turn
            if alive[node] and kids[node] == 1:
                alive[node] = False
                parent[(parent == node) & alive] = parent[node]
        new_id = np.full(self.n_nodes, -1, dtype=np.int64)
        new_id[alive] = np.arange(int(alive.sum()))
        kept = np.flatnonzero(alive)
        new_parent = np.where(parent[kept] >= 0, new_id[np.maximum(parent[kept], 0)], -1)
        return Hierarchy(new_id[self.leaf_labels], new_parent, self.height[kept])

    # ---- cutting ------------------------------------------------------------------------
    def active_at_scale(self, scale: float) -> np.ndarray:
        """Boolean mask of the nodes that form the parts at `scale` in [0, 1]."""
        s = float(np.clip(scale, 0.0, 1.0))
        ok = self.height <= s  # leaves (height 0) always qualify, so the cut covers every face
        par_ok = np.zeros_like(ok)
        has_parent = self.parent >= 0
        par_ok[has_parent] = ok[self.parent[has_parent]]
        return ok & ~par_ok

    def active_at_parts(self, n_parts: int) -> np.ndarray:
        """Boolean mask of the nodes left after undoing the n_parts - 1 highest merges (exactly
        n_parts parts in a binary tree; a split node with k children adds k - 1 parts)."""
        internal = np.flatnonzero(np.bincount(self.parent[self.parent >= 0], minlength=self.n_nodes) > 0)
        # undo the highest merges first; among equal heights, the later merge first
        order = internal[np.lexsort((-internal, -self.height[internal]))]
        split = np.zeros(self.n_nodes, dtype=bool)
        split[order[: max(int(n_parts), 1) - 1]] = True
        active = np.zeros(self.n_nodes, dtype=bool)
        has_parent = self.parent >= 0
        active[has_parent] = split[self.parent[has_parent]] & ~split[has_parent]
        if not split.any():
            active[self.root] = True
        return active

    def representative(self, active: np.ndarray) -> np.ndarray:
        """For every node, the active node above (or at) it (or the root when none is): the
        roots of the forest cut above every active node."""
        return roots_and_depths(np.where(active, -1, self.parent))[0].astype(np.int64)

    def cut(self, *, scale: float | None = None, parts: int | None = None) -> np.ndarray:
        """Per-face labels 0..K-1 at a scale or a number of parts (parts wins if both given)."""
        active = (
            self.active_at_parts(parts) if parts is not None else self.active_at_scale(0.5 if scale is None else scale)
        )
        return self.labels_for(active)

    def labels_for(self, active: np.ndarray) -> np.ndarray:
        rep = self.representative(active)
        return first_use_ids(rep[: self.n_leaves][self.leaf_labels]).astype(np.int32)

    def node_at(self, face: int, *, scale: float | None = None, parts: int | None = None) -> int:
        active = (
            self.active_at_parts(parts) if parts is not None else self.active_at_scale(0.5 if scale is None else scale)
        )
        node = int(self.leaf_labels[face])
        rep = self.representative(active)
        return int(rep[node])

    def subtree_sums(self, leaf_values: np.ndarray) -> np.ndarray:
        """Per node, the sum of a per-leaf value over the leaves under it (one cumulative sum
        over the leaves in DFS order: a node's leaves are one contiguous range of it)."""
        in_dfs_order = np.zeros(self.n_leaves, dtype=np.float64)
        in_dfs_order[self._leaf_pos[: self.n_leaves]] = np.asarray(leaf_values, dtype=np.float64)
        total = np.r_[0.0, np.cumsum(in_dfs_order)]
        return total[self._leaf_range[:, 1]] - total[self._leaf_range[:, 0]]

    def face_mask(self, node: int) -> np.ndarray:
        """Faces under `node`, without walking the tree: leaves are numbered in DFS order, so a
        node's leaves form one contiguous range."""
        lo, hi = self._leaf_range[node]
        pos = self._leaf_pos[self.leaf_labels]
        return (pos >= lo) & (pos < hi)

    # ---- internals ----------------------------------------------------------------------
    def _check(self):
        n = self.parent.shape[0]
        if self.height.shape != (n,) or n == 0:
            raise ValueError("parent and height must be non-empty and the same length")
        if (self.parent < 0).sum() != 1 or self.parent[-1] != -1:
            raise ValueError("the hierarchy must have exactly one root, the last node")
        idx = np.arange(n)
        if np.any(self.parent[:-1] <= idx[:-1]):
            raise ValueError("every parent must have a larger index than its children")
        internal = np.unique(self.parent[self.parent >= 0])
        if internal.size and internal[0] != n - internal.size:
            raise ValueError("leaves must be nodes 0..L-1 and internal nodes L..N-1")
        if self.leaf_labels.size and (self.leaf_labels.min() < 0 or self.leaf_labels.max() >= n - internal.size):
            raise ValueError("leaf labels must name leaves (0..L-1)")

    def _order_leaves(self):
        """Give every node the range of its leaves in a DFS order (vectorised by levels)."""
        n = self.n_nodes
        is_internal = np.zeros(n, dtype=bool)
        is_internal[self.parent[self.parent >= 0]] = True
        n_leaves_below = (~is_internal).astype(np.int64)
        for i in range(n - 1):  # children before parents; N is the number of nodes, small
            p = self.parent[i]
            n_leaves_below[p] += n_leaves_below[i]
        start = np.zeros(n, dtype=np.int64)
        # siblings are laid out in index order inside their parent's range
        offset = np.zeros(n, dtype=np.int64)
        for i in range(n - 2, -1, -1):
            p = self.parent[i]
            start[i] = start[p] + offset[p]
            offset[p] += n_leaves_below[i]
        self._leaf_range = np.stack([start, start + n_leaves_below], axis=1)
        leaves = np.flatnonzero(~is_internal)
        self._leaf_pos = np.zeros(n, dtype=np.int64)
        self._leaf_pos[leaves] = start[leaves]


def first_use_ids(values) -> np.ndarray:
    """(N,) int64 dense ids 0..K-1 of the values (labels, keys of any dtype), numbered in order of
    first appearance: the same partition always gets the same names."""
    values = np.asarray(values).ravel()
    if values.size == 0:
        return np.zeros(0, np.int64)
    uniq, first, inv = np.unique(values, return_index=True, return_inverse=True)
    rank = np.empty(len(uniq), dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(len(uniq))
    return rank[inv.ravel()]


def roots_and_depths(parent: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every node of a forest (parent -1 at its roots): its root and the edges up to it.
    Pointer jumping: log2(depth) vectorised rounds, where climbing one level per round would take
    as many rounds as the tree is deep (a triangle soup's merge tree is a chain thousands long)."""
    parent = np.asarray(parent)
    up = np.where(parent >= 0, parent, np.arange(len(parent)))
    depth = (parent >= 0).astype(np.int64)
    while True:
        further = up[up]
        if np.array_equal(further, up):
            return up, depth
        depth = depth + depth[up]
        up = further
