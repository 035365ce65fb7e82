"""Validation of untrusted mesh arrays and polygon triangulation."""

import numpy as np
import pytest

from segparts.mesh import MeshError, fan_triangles, validate_mesh

TRI_V = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], float)
TRI_F = np.array([[0, 1, 2], [0, 2, 3]])


@pytest.mark.parametrize(
    "vertices, faces, code",
    [
        (np.zeros((0, 3)), np.zeros((0, 3), int), "empty_mesh"),
        (TRI_V, np.zeros((0, 3), int), "empty_mesh"),
        (np.array([[0, 0, np.nan]] * 4), TRI_F, "non_finite_vertices"),
        (np.array([[0, 0, np.inf]] * 4), TRI_F, "non_finite_vertices"),
        (TRI_V, np.array([[0, 1, 4]]), "face_index_out_of_range"),
        (TRI_V, np.array([[0, -1, 2]]), "face_index_out_of_range"),
        (TRI_V[:, :2], TRI_F, "bad_vertices"),
        (TRI_V, TRI_F.astype(float), "bad_faces"),
        (TRI_V, np.array([[0, 1, 2, 3]]), "bad_faces"),
    ],
)
def test_bad_meshes_give_clear_codes(vertices, faces, code):
    with pytest.raises(MeshError) as err:
        validate_mesh(vertices, faces)
    assert err.value.code == code and err.value.message


def test_face_limit():
    with pytest.raises(MeshError, match="limit"):
        validate_mesh(TRI_V, TRI_F, max_faces=1)


def test_degenerate_faces_are_accepted_and_hash_is_content_based():
    faces = np.array([[0, 1, 2], [0, 0, 0], [1, 1, 2]])
    a = validate_mesh(TRI_V, faces)
    b = validate_mesh(TRI_V.astype(np.float32), faces.astype(np.int32))
    assert a.content_hash == b.content_hash
    assert a.content_hash != validate_mesh(TRI_V + 1, faces).content_hash


def test_triangulate_keeps_polygon_order_and_maps_back():
    polys = [np.array([0, 1, 2, 3]), np.array([4, 5, 6]), np.array([0, 1, 2, 3, 4])]
    tris, fmap = fan_triangles(np.concatenate(polys), [len(p) for p in polys])
    assert fmap.tolist() == [0, 0, 1, 2, 2, 2]
    assert tris.tolist()[:3] == [[0, 1, 2], [0, 2, 3], [4, 5, 6]]
    mesh = validate_mesh(np.zeros((7, 3)), tris, face_map=fmap)
    assert mesh.polygon_labels(np.array([7, 7, 8, 9, 9, 9])).tolist() == [7, 8, 9]
    assert mesh.triangle_labels(np.array([1, 2, 3])).tolist() == [1, 1, 2, 3, 3, 3]
