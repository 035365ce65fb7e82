"""Border refinement (engines/geometric/refine.py) on a real mesh: a border drawn beside a fold
moves onto it, faces change sides only inside the band, moved faces take a leaf of their new part,
a border already on the fold stays, and a part small enough to fit in a band is left alone."""

from __future__ import annotations

import numpy as np

from segparts.engines.geometric.refine import refine_borders
from segparts.mesh import triangle_edge_ends
from segparts.meshgraph import build_dual_graph, weld_vertices

N = 16  # squares per side; the fold runs between columns 7 and 8


def folded_grid():
    """An N x N grid of unit squares (two triangles each) bent up 90 degrees along x = N/2, its
    dual graph, and the column of each face's square."""
    xs, ys = np.meshgrid(np.arange(N + 1.0), np.arange(N + 1.0), indexing="ij")
    half = N / 2
    vertices = np.stack([np.minimum(xs, half).ravel(), ys.ravel(), np.maximum(xs - half, 0.0).ravel()], axis=1)
    idx = np.arange((N + 1) ** 2).reshape(N + 1, N + 1)
    a, b, c, d = idx[:-1, :-1].ravel(), idx[1:, :-1].ravel(), idx[1:, 1:].ravel(), idx[:-1, 1:].ravel()
    faces = np.concatenate([np.stack([a, b, c], 1), np.stack([a, c, d], 1)])
    column = np.tile(np.repeat(np.arange(N), N), 2)
    return build_dual_graph(vertices, faces, weld_vertices(vertices)), column


def test_a_border_beside_the_fold_moves_onto_it_and_moved_faces_follow_a_leaf_of_their_new_part():
    graph, column = folded_grid()
    leaves = column.astype(np.int32)  # one leaf per column
    part_of_leaf = (np.arange(N) >= 7).astype(np.int64)  # part 1 starts one column before the fold
    new_leaves = refine_borders(graph, leaves, part_of_leaf[leaves])
    assert np.array_equal(part_of_leaf[new_leaves], (column >= 8).astype(np.int64))
    moved = new_leaves != leaves
    assert np.array_equal(np.flatnonzero(moved), np.flatnonzero(column == 7))
    assert np.all(new_leaves[moved] == 6)  # the leaf of their neighbours on the new side


def test_a_border_on_the_fold_stays_and_a_small_part_inside_a_band_is_left_alone():
    graph, column = folded_grid()
    leaves = np.arange(len(column), dtype=np.int32)  # one leaf per face: leaves are parts
    on_fold = (column >= 8).astype(np.int64)
    assert np.array_equal(refine_borders(graph, leaves, on_fold), leaves)
    island = on_fold.copy()
    island[np.flatnonzero(column == 3)[:4]] = 2  # four faces: every one of them is in the band
    refined = island[refine_borders(graph, leaves, island)]
    assert np.array_equal(refined, island)


def dumbbell(rings: int = 61, sections: int = 48):
    """A smooth solid of revolution, two bulbs and a neck at z = 0 (a ring of edges there): no
    crease anywhere, so only the neck decides where the two bulbs part."""
    import trimesh

    t = np.linspace(0, np.pi, rings)
    z = -2 * np.cos(t)
    radius = np.sin(t) * (1 - 0.6 * np.exp(-((z / 0.35) ** 2)))
    mesh = trimesh.creation.revolve(np.column_stack([radius, z]), sections=sections)
    mesh.merge_vertices()
    return np.asarray(mesh.vertices), np.asarray(mesh.faces)


def rings_of(vertices, faces):
    """Per vertex of a `dumbbell`, its ring (by height), and a function giving the (F, 3) marks of
    the triangle edges that lie along one ring."""
    ring_of = np.unique(np.round(vertices[:, 2], 6), return_inverse=True)[1].ravel()
    ends = ring_of[triangle_edge_ends(faces)]  # (F, 3, 2) rings of each edge's ends

    def marks_along(ring: int) -> np.ndarray:
        return (ends[..., 0] == ring) & (ends[..., 1] == ring)

    return ring_of, marks_along


def test_the_automatic_border_settles_on_a_ring_the_artist_marked_beside_the_neck():
    from segparts.engines.geometric.segmenter import build_tree
    from segparts.meshgraph import face_adjacency

    vertices, faces = dumbbell()
    ring_of, marks_along = rings_of(vertices, faces)
    pairs, shared = face_adjacency(faces)

    def border_rings(marked=None):
        labels = build_tree(vertices, faces, marked_edges=marked)[0].cut(scale=0.5)
        across = labels[pairs[:, 0]] != labels[pairs[:, 1]]
        return set(ring_of[shared[across]].ravel().tolist())

    neck = int(ring_of[np.argmin(np.abs(vertices[:, 2]))])
    assert border_rings() == {neck}
    for ring in (neck - 1, neck + 1):
        marked = marks_along(ring)
        assert border_rings(marked) == {ring}
    assert border_rings(np.zeros_like(marked)) == {neck}  # marks that mark nothing change nothing


def test_patches_end_on_the_edges_the_artist_marked_so_finer_levels_cut_there_too():
    from segparts.engines.geometric.segmenter import build_tree
    from segparts.meshgraph import face_adjacency

    vertices, faces = dumbbell()
    ring_of, marks_along = rings_of(vertices, faces)
    pairs, shared = face_adjacency(faces)
    for ring in (10, 40):
        marked = marks_along(ring)
        on_ring = (ring_of[shared[:, 0]] == ring) & (ring_of[shared[:, 1]] == ring)
        for marks, least, most in ((marked, 1.0, 1.0), (None, 0.0, 0.5)):
            leaves = build_tree(vertices, faces, marked_edges=marks)[0].leaf_labels
            share = (leaves[pairs[on_ring, 0]] != leaves[pairs[on_ring, 1]]).mean()
            assert least <= share <= most, (ring, marks is None, share)


def test_marks_on_most_edges_say_nothing():
    from segparts.engines.geometric.segmenter import build_tree

    vertices, faces = dumbbell()
    plain = build_tree(vertices, faces)[0]
    everywhere = build_tree(vertices, faces, marked_edges=np.ones((len(faces), 3), bool))[0]
    np.testing.assert_array_equal(everywhere.leaf_labels, plain.leaf_labels)
    np.testing.assert_array_equal(everywhere.parent, plain.parent)
