"""The mesh's own normals are rendered when it has them (GeoSAM2's release renders the file's split
normals and flat/smooth faces in Blender); meshes without normals keep the 30-degree auto smooth."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from segparts.appearance import Appearance
from segparts.engines.geosam2 import GeoSAM2Engine
from segparts.mesh import Mesh
from segparts.render import face_normals, geosam2_rig, render_views
from segparts.render.normals import file_corner_normals


def _sphere(appearance=None) -> Mesh:
    tm = trimesh.creation.icosphere(subdivisions=2, radius=0.5)  # ~20 deg between faces: auto smooth rounds it
    return Mesh(np.asarray(tm.vertices, float), np.asarray(tm.faces, np.int64), appearance=appearance)


def _pixel_normals(mesh: Mesh):
    views = render_views(mesh, geosam2_rig(size=64), outputs=("face_id", "normal"))
    fg = views.face_id >= 0
    return views.normal[fg], views.face_id[fg]


def test_flat_split_normals_of_the_file_are_rendered_flat():
    plain = _sphere()
    fn = face_normals(plain.vertices, plain.faces)
    flat = _sphere(Appearance(normals=np.repeat(fn[:, None], 3, axis=1)))  # a flat-shaded file: split normals
    normal, fid = _pixel_normals(flat)
    facing = np.sign(np.einsum("ij,ij->i", normal, fn[fid]))[:, None]
    np.testing.assert_allclose(normal, facing * fn[fid], atol=1e-5)
    smooth, _ = _pixel_normals(plain)  # no file normals: auto smooth, not the face normals
    assert np.abs(smooth - facing * fn[fid]).max() > 0.05


def test_per_vertex_file_normals_are_interpolated_and_bad_ones_fall_back():
    box = trimesh.creation.box((1.0, 1.0, 1.0))
    radial = np.asarray(box.vertices) / np.linalg.norm(box.vertices, axis=1, keepdims=True)
    mesh = Mesh(np.asarray(box.vertices, float), np.asarray(box.faces, np.int64), appearance=Appearance(normals=radial))
    normal, fid = _pixel_normals(mesh)
    fn = face_normals(mesh.vertices, mesh.faces)
    assert np.abs(np.abs(np.einsum("ij,ij->i", normal, fn[fid])) - 1).max() > 0.1  # rounded, not the flat box
    broken = radial.copy()
    broken[0] = 0.0
    corners = file_corner_normals(broken, mesh.faces, fn)
    at_vertex0 = mesh.faces == 0
    np.testing.assert_allclose(corners[at_vertex0], fn[np.nonzero(at_vertex0)[0]])
    with pytest.raises(ValueError, match="per vertex"):
        file_corner_normals(np.zeros((3, 3)), mesh.faces, fn)


def test_geosam2_renders_the_meshs_own_normals():
    plain = _sphere()
    fn = face_normals(plain.vertices, plain.faces)
    flat = _sphere(Appearance(normals=np.repeat(fn[:, None], 3, axis=1)))
    s = GeoSAM2Engine("cpu", image_size=128, weights="random").render_session(flat)
    fg = s.views.face_id >= 0
    shown = s.views.normal[fg]
    expected = fn[s.views.face_id[fg]]
    np.testing.assert_allclose(np.abs(np.einsum("ij,ij->i", shown, expected)), 1.0, atol=1e-5)
