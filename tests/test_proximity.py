"""segparts.proximity: exact point -> surface queries (the face a 3D click lies on), cached per mesh."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from trimesh.triangles import closest_point as exact_closest

from segparts.mesh import validate_mesh
from segparts.proximity import closest_point, nearest_face, surface_index


def brute_force(mesh, q):
    tri = mesh.vertices[mesh.faces]
    return np.linalg.norm(exact_closest(tri, np.repeat(q[None], len(tri), axis=0)) - q, axis=1)


def sphere_over_big_slab():
    """Many small triangles next to a few huge ones: centroid distance alone picks wrong faces."""
    tm = trimesh.util.concatenate(
        [
            trimesh.creation.icosphere(subdivisions=3, radius=0.3),
            trimesh.creation.box(extents=(4.0, 4.0, 0.1)).apply_translation((0, 0, -1.0)),
        ]
    )
    return validate_mesh(tm.vertices, tm.faces)


def test_nearest_face_is_exact_even_next_to_big_triangles():
    mesh = sphere_over_big_slab()
    rng = np.random.default_rng(5)
    for q in rng.uniform(-2, 2, size=(40, 3)):
        d = brute_force(mesh, q)
        assert np.isclose(d[nearest_face(mesh, q)], d.min())
    centroid_wrong = 0
    for q in rng.uniform(-2, 2, size=(40, 3)):
        d = brute_force(mesh, q)
        centroid = np.argmin(np.linalg.norm(mesh.vertices[mesh.faces].mean(axis=1) - q, axis=1))
        centroid_wrong += not np.isclose(d[centroid], d.min())
    assert centroid_wrong > 0  # the case is hard: a centroid search gets some of these wrong


def test_batch_query_matches_brute_force_with_degenerate_faces():
    rng = np.random.default_rng(1)
    tm = trimesh.creation.icosphere(subdivisions=2)
    vertices = np.vstack([tm.vertices, [[2.0, 0, 0], [3.0, 0, 0]]])
    n = len(tm.vertices)
    faces = np.vstack([tm.faces, [[n, n, n], [n, n + 1, n + 1], [n, n + 1, n]]])  # a point and two segments
    mesh = validate_mesh(vertices, faces)
    points = rng.uniform(-3, 4, size=(200, 3))
    face, dist, closest = closest_point(mesh, points)
    for q, f, d, c in zip(points, face, dist, closest):
        ref = brute_force(mesh, q)
        assert np.isclose(d, ref.min()) and np.isclose(ref[f], ref.min())
        assert np.isclose(np.linalg.norm(c - q), d)
    on_segment = closest_point(mesh, [[2.5, 1.0, 0.0]])
    assert on_segment[0][0] >= len(tm.faces) and np.allclose(on_segment[2][0], [2.5, 0, 0])


def test_points_on_the_surface_find_their_own_face():
    tm = trimesh.creation.torus(major_radius=1.0, minor_radius=0.3)
    mesh = validate_mesh(tm.vertices, tm.faces)
    rng = np.random.default_rng(2)
    faces = rng.integers(0, mesh.n_faces, 100)
    w = rng.dirichlet(np.ones(3), size=100)[:, :, None]
    points = (mesh.vertices[mesh.faces[faces]] * w).sum(axis=1)
    face, dist, _ = closest_point(mesh, points)
    assert dist.max() < 1e-9
    np.testing.assert_array_equal(face, faces)  # interior points of non-coplanar faces are unique


def test_index_is_built_once_per_mesh():
    # click speed (~4 ms at 1M faces) is measured by `segparts bench geometric`, not asserted here
    tm = trimesh.creation.icosphere(subdivisions=6)  # 82k faces
    mesh = validate_mesh(tm.vertices, tm.faces)
    nearest_face(mesh, np.array([0.0, 0.0, 2.0]))
    index = surface_index(mesh)
    rng = np.random.default_rng(3)
    clicks = rng.normal(size=(50, 3))
    got = [nearest_face(mesh, q) for q in clicks]
    assert surface_index(mesh) is index
    for q, f in zip(clicks[:5], got[:5]):
        d = brute_force(mesh, q)
        assert np.isclose(d[f], d.min())
    other = validate_mesh(tm.vertices * 2.0, tm.faces)  # another mesh gets its own index
    assert surface_index(other) is not index


@pytest.mark.parametrize("bad", [[1.0, 2.0], [np.nan, 0, 0], [[1, 2, 3, 4]]])
def test_bad_click_points_raise_value_error(bad):
    mesh = sphere_over_big_slab()
    with pytest.raises(ValueError):
        nearest_face(mesh, bad)


def test_index_is_dropped_with_its_mesh():
    import gc
    import weakref

    from segparts import proximity

    tm = trimesh.creation.icosphere(subdivisions=2)
    mesh = validate_mesh(tm.vertices, tm.faces)
    nearest_face(mesh, np.zeros(3))
    index = weakref.ref(surface_index(mesh))
    assert mesh in proximity._INDEXES
    del mesh
    gc.collect()
    assert index() is None  # no mesh, no index: the cache never outgrows the meshes in use
