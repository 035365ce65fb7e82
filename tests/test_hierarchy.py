"""The merge tree every engine returns and the add-on re-cuts."""

import itertools

import numpy as np
import pytest
from scipy.cluster.hierarchy import fcluster, linkage

from segparts.hierarchy import Hierarchy, roots_and_depths


def random_tree(n_leaves=40, n_faces=1000, seed=0):
    rng = np.random.default_rng(seed)
    z = linkage(rng.normal(size=(n_leaves, 3)), "average")
    leaf = rng.integers(0, n_leaves, n_faces)
    leaf[:n_leaves] = np.arange(n_leaves)  # every leaf owns a face
    return Hierarchy.from_linkage(leaf, z), z, leaf


def same_partition(a, b):
    """Equal up to label names: the pairs (a, b) are a bijection."""
    pairs = np.unique(np.stack([a, b]), axis=1)
    return len(np.unique(pairs[0])) == pairs.shape[1] == len(np.unique(pairs[1]))


@pytest.mark.parametrize("k", [1, 2, 3, 7, 40])
def test_cut_at_parts_matches_scipy(k):
    h, z, leaf = random_tree()
    ours = h.cut(parts=k)
    ref = fcluster(z, k, criterion="maxclust")[leaf]
    assert len(np.unique(ours)) == k
    assert same_partition(ours, ref)


def test_cut_at_scale_matches_scipy_distance():
    h, z, leaf = random_tree(seed=1)
    top = z[:, 2].max()
    for s in [0.0, 0.2, 0.5, 0.8, 1.0]:
        ref = fcluster(z, s * top, criterion="distance")[leaf]
        assert same_partition(h.cut(scale=s), ref), s


def test_scale_is_monotone_and_spans_leaves_to_root():
    h, _, leaf = random_tree(seed=2)
    counts = [len(np.unique(h.cut(scale=s))) for s in np.linspace(0, 1, 11)]
    assert counts[0] == 40 and counts[-1] == 1
    assert all(a >= b for a, b in itertools.pairwise(counts))


def test_face_mask_parent_and_children_are_consistent():
    h, _, leaf = random_tree(seed=3)
    labels = h.cut(parts=5)
    for face in [0, 17, 999]:
        node = h.node_at(face, parts=5)
        mask = h.face_mask(node)
        assert np.array_equal(mask, labels == labels[face])
        parent = int(h.parent[node])
        assert (h.face_mask(parent) >= mask).all() and h.face_mask(parent).sum() > mask.sum()
        kids = h.children(node)
        if len(kids):
            assert np.array_equal(np.logical_or.reduce([h.face_mask(c) for c in kids]), mask)


def test_subtree_sums_add_up_the_faces_under_every_node():
    for seed in range(3):
        h, _, leaf = random_tree(seed=seed)
        face_area = np.random.default_rng(seed).random(len(leaf))
        sums = h.subtree_sums(np.bincount(leaf, face_area, h.n_leaves))
        expected = [face_area[h.face_mask(node)].sum() for node in range(h.n_nodes)]
        np.testing.assert_allclose(sums, expected)
    flat = Hierarchy.flat(np.zeros(5, np.int64))
    assert flat.subtree_sums(np.array([2.0])).tolist() == [2.0]


def test_flat_hierarchy_and_single_part():
    h = Hierarchy.flat(np.array([5, 5, 9, 2]))
    assert same_partition(h.cut(scale=0), np.array([0, 0, 1, 2]))
    assert len(np.unique(h.cut(scale=1))) == 1
    one = Hierarchy.flat(np.zeros(10, int))
    assert one.n_nodes == 1 and one.face_mask(0).all()


def test_rejects_malformed_trees():
    with pytest.raises(ValueError):
        Hierarchy(np.zeros(3), np.array([1, -1, -1]), np.array([0, 1, 1]))  # two roots
    with pytest.raises(ValueError):
        Hierarchy(np.zeros(3), np.array([-1, 0]), np.array([1, 0]))  # parent before child


def test_without_empty_leaves_keeps_every_cut_of_the_faces():
    rng = np.random.default_rng(3)
    points = rng.random((12, 2))
    leaf_labels = rng.integers(0, 12, 200)
    h = Hierarchy.from_linkage(leaf_labels, linkage(points, "average"))
    assert h.without_empty_leaves() is h or np.array_equal(h.without_empty_leaves().leaf_labels, leaf_labels)
    emptied = leaf_labels.copy()
    emptied[np.isin(emptied, [2, 7, 8])] = 0  # leaves 2, 7, 8 lose their faces to leaf 0
    before = Hierarchy(emptied, h.parent, h.height)
    after = before.without_empty_leaves()
    assert after.n_leaves == 9 and after.leaf_labels.max() == 8
    assert set(np.unique(after.leaf_labels)) == set(range(9))  # every leaf holds a face
    kids = np.bincount(after.parent[after.parent >= 0], minlength=after.n_nodes)
    assert np.all(kids[after.n_leaves : -1] >= 2)  # no internal node below the root has one child
    for scale in np.linspace(0.0, 1.0, 21):  # the same partition of the faces at every scale
        a, b = before.cut(scale=scale), after.cut(scale=scale)
        pairs = set(zip(a.tolist(), b.tolist()))
        assert len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))
    fine = after.cut(scale=0.0)
    assert fine.max() + 1 == after.n_leaves


def test_roots_and_depths_match_a_walk_to_the_root_on_random_and_chain_trees():
    rng = np.random.default_rng(0)
    for n in (1, 2, 60, 2000):
        order = rng.permutation(n)  # node ids in any order: parents are not numbered first
        parent = np.full(n, -1)
        parent[order[1:]] = order[[rng.integers(0, i) for i in range(1, n)]]
        walked, top = np.zeros(n, np.int64), np.arange(n)
        for node in range(n):
            while parent[top[node]] >= 0:
                top[node], walked[node] = parent[top[node]], walked[node] + 1
        roots, depths = roots_and_depths(parent)
        np.testing.assert_array_equal(depths, walked)
        np.testing.assert_array_equal(roots, top)
    chain = np.arange(-1, 4999)  # a soup's merge tree: every node the parent of the next
    roots, depths = roots_and_depths(chain)
    np.testing.assert_array_equal(depths, np.arange(5000))
    assert (roots == 0).all()
    # a forest: each tree keeps its own root
    roots, depths = roots_and_depths(np.array([-1, 0, 1, -1, 3]))
    np.testing.assert_array_equal(roots, [0, 0, 0, 3, 3])
    np.testing.assert_array_equal(depths, [0, 1, 2, 0, 1])


def test_representative_is_the_first_active_node_on_the_walk_up():
    h, _, _ = random_tree(n_leaves=60, seed=3)
    rng = np.random.default_rng(3)
    for share in (0.0, 0.1, 0.5, 1.0):
        active = rng.random(h.n_nodes) < share
        expected = np.arange(h.n_nodes)
        for node in range(h.n_nodes):
            while not active[expected[node]] and h.parent[expected[node]] >= 0:
                expected[node] = h.parent[expected[node]]
        np.testing.assert_array_equal(h.representative(active), expected)
