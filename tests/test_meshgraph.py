"""segparts.meshgraph (the face graph shared by the geometric engine, lifting, metrics and eval),
checked against plain-Python definitions on random meshes with degenerate and non-manifold edges."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest

from segparts import meshgraph


def random_faces(seed: int, n_vertices: int = 12, n_faces: int = 60) -> np.ndarray:
    """Few vertices, many faces (each with three distinct vertices): shared and non-manifold edges."""
    rng = np.random.default_rng(seed)
    return np.array([rng.choice(n_vertices, 3, replace=False) for _ in range(n_faces)])


def faces_around_edges(faces: np.ndarray) -> dict[tuple[int, int], list[int]]:
    """Edge -> faces using it, in face order."""
    around = defaultdict(list)
    for face, (a, b, c) in enumerate(faces.tolist()):
        for u, v in ((a, b), (b, c), (c, a)):
            edge = (min(u, v), max(u, v))
            around[edge].append(face)
    return around


@pytest.mark.parametrize("chain", ["corner", "face"])
@pytest.mark.parametrize("seed", range(20))
def test_adjacency_chains_the_faces_of_every_edge(seed, chain):
    faces = random_faces(seed)
    pairs, edges = meshgraph.face_adjacency(faces, chain=chain)
    around = faces_around_edges(faces)
    got = defaultdict(list)
    for (f, g), edge in zip(pairs.tolist(), edges.tolist()):
        got[tuple(edge)].append((f, g))
    assert [tuple(e) for e in edges.tolist()] == sorted(tuple(e) for e in edges.tolist())  # by edge
    for edge, owners in around.items():
        links = got.pop(edge, [])
        assert len(links) == len(owners) - 1  # k faces around an edge: a chain of k - 1 pairs
        if links:
            chained = [links[0][0]] + [g for _, g in links]
            assert sorted(chained) == owners
            assert all(links[i][1] == links[i + 1][0] for i in range(len(links) - 1))
            if chain == "face":
                assert chained == owners  # face order
    assert not got  # no pair without a shared edge


def test_corner_chain_orders_by_corner_slot_then_face():
    # edge (0, 1) is the first edge of face 1 and the second edge of face 0
    faces = np.array([[2, 0, 1], [0, 1, 3]])
    assert meshgraph.face_adjacency(faces, chain="corner")[0].tolist() == [[1, 0]]
    assert meshgraph.face_adjacency(faces, chain="face")[0].tolist() == [[0, 1]]
    with pytest.raises(ValueError):
        meshgraph.face_adjacency(faces, chain="other")


def test_degenerate_faces_never_pair_with_themselves():
    # face 1 is (0, 1, 0): its edge (0, 1) twice and a collapsed edge (0, 0)
    faces = np.array([[0, 1, 2], [0, 1, 0], [3, 1, 0]])
    for chain in ("corner", "face"):
        pairs, edges = meshgraph.face_adjacency(faces, chain=chain)
        assert (pairs[:, 0] != pairs[:, 1]).all()
        assert (edges == [0, 1]).all() and set(pairs.ravel().tolist()) == {0, 1, 2}
    assert meshgraph.face_adjacency(faces, chain="face")[0].tolist() == [[0, 1], [1, 2]]


def test_vertex_ids_weld_seams():
    # two triangles whose shared edge uses split vertices (a UV seam): 2, 3 duplicate 0, 1
    faces = np.array([[0, 1, 4], [3, 2, 5]])
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0], [0, 1, 0], [0, -1, 0]], float)
    assert len(meshgraph.face_adjacency(faces)[0]) == 0
    ids = meshgraph.exact_vertex_ids(vertices)
    assert ids[0] == ids[2] and ids[1] == ids[3] and len(set(ids.tolist())) == 4
    assert meshgraph.face_adjacency(faces, ids)[0].tolist() == [[0, 1]]


@pytest.mark.parametrize("seed", range(10))
def test_components_match_a_union_find(seed):
    faces = random_faces(seed, n_vertices=40, n_faces=30)
    labels = np.random.default_rng(seed).integers(-1, 3, len(faces))
    pairs, _ = meshgraph.face_adjacency(faces)
    for apart in (False, True):
        root = list(range(len(faces)))

        def find(i, root=root):
            while root[i] != i:
                i = root[i]
            return i

        for f, g in pairs.tolist():
            if labels[f] == labels[g] and not (apart and labels[f] < 0):
                root[find(f)] = find(g)
        got = meshgraph.label_components(labels, pairs, unlabelled_apart=apart)
        expected = [find(i) for i in range(len(faces))]
        same_got = got[:, None] == got[None, :]
        same_expected = np.array(expected)[:, None] == np.array(expected)[None, :]
        assert np.array_equal(same_got, same_expected)
        first = [got[i] for i in range(len(faces)) if got[i] not in got[:i]]
        assert first == list(range(got.max() + 1))  # numbered in order of their lowest face
