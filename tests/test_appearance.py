"""A file's colours reach the renderer: meshio sets Mesh.appearance (PLY vertex/face colours,
GLB vertex colours or texture), render_views uses it, and the colours belong to the mesh id."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh
from PIL import Image

from segparts.appearance import Appearance
from segparts.mesh import MeshError, validate_mesh
from segparts.meshio import load_mesh
from segparts.render import face_base_colors, geosam2_rig, render_views


def two_tone_sphere():
    """An icosphere whose +X half is red and -X half green (per vertex)."""
    tm = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    colours = np.where(tm.vertices[:, :1] > 0, [255, 0, 0, 255], [0, 255, 0, 255]).astype(np.uint8)
    tm.visual.vertex_colors = colours
    return tm, colours


def interior(mask):
    """Pixels whose 3x3 neighbourhood is all in `mask` (per view): the colour pass is
    anti-aliased, so pixels on a boundary mix both sides."""
    from scipy.ndimage import binary_erosion

    return np.stack([binary_erosion(m, np.ones((3, 3), bool)) for m in mask])


def sides(mesh, views):
    """Foreground pixels whose face lies clearly on the +X / -X side (all corners agree), away
    from the boundary."""
    corner_x = mesh.vertices[mesh.faces][:, :, 0]
    plus, minus = (corner_x > 0).all(axis=1), (corner_x <= 0).all(axis=1)
    fid = views.face_id
    hit = fid >= 0
    return interior(hit & plus[np.maximum(fid, 0)]), interior(hit & minus[np.maximum(fid, 0)])


@pytest.mark.parametrize("encoding", ["binary", "ascii"])
def test_ply_vertex_colours_are_rendered_and_change_the_id(tmp_path, encoding):
    tm, colours = two_tone_sphere()
    path = tmp_path / "sphere.ply"
    path.write_bytes(tm.export(file_type="ply", encoding=encoding))
    mesh = load_mesh(path)
    np.testing.assert_array_equal(mesh.appearance.vertex_colors, colours[:, :3])
    plain = validate_mesh(mesh.vertices, mesh.faces)
    assert plain.appearance is None and plain.content_hash != mesh.content_hash  # colours are in the id

    rig = geosam2_rig(size=48)
    views = render_views(mesh, rig, outputs=("face_id", "color"))
    plus, minus = sides(mesh, views)
    assert plus.sum() > 100 and minus.sum() > 100
    red, green = views.color[plus].astype(int), views.color[minus].astype(int)
    # the other two channels carry only the white specular (Fresnel) reflection, equally
    assert (red[:, 0] > red[:, 1]).all() and (red[:, 1] == red[:, 2]).all()
    assert (green[:, 1] > green[:, 0]).all() and (green[:, 0] == green[:, 2]).all()
    grey = render_views(plain, rig, outputs=("face_id", "color")).color[plus].astype(int)
    assert (grey[:, 0] == grey[:, 1]).all()  # same geometry without colours renders grey


@pytest.mark.parametrize("encoding", ["binary", "ascii"])
def test_ply_face_colours_follow_each_face(tmp_path, encoding):
    tm = trimesh.creation.box()
    rng = np.random.default_rng(0)
    face_colours = rng.integers(0, 256, (len(tm.faces), 4)).astype(np.uint8)
    tm.visual.face_colors = face_colours
    path = tmp_path / "box.ply"
    path.write_bytes(tm.export(file_type="ply", encoding=encoding))
    mesh = load_mesh(path)
    np.testing.assert_array_equal(mesh.appearance.face_colors, face_colours[:, :3])
    np.testing.assert_array_equal(face_base_colors(mesh.appearance, mesh.faces, mesh.n_vertices), face_colours[:, :3])


def test_ply_quad_face_colours_spread_to_their_triangles(tmp_path):
    header = [
        "ply",
        "format ascii 1.0",
        "element vertex 5",
        "property float x",
        "property float y",
        "property float z",
        "element face 2",
        "property list uchar int vertex_indices",
        "property uchar red",
        "property uchar green",
        "property uchar blue",
        "end_header",
    ]
    body = ["0 0 0", "1 0 0", "1 1 0", "0 1 0", "2 0 0", "4 0 1 2 3 10 20 30", "3 1 4 2 40 50 60"]
    path = tmp_path / "quad.ply"
    path.write_text("\n".join(header + body) + "\n")
    mesh = load_mesh(path)
    assert mesh.n_faces == 3 and mesh.n_polygons == 2
    np.testing.assert_array_equal(mesh.appearance.face_colors, [[10, 20, 30], [10, 20, 30], [40, 50, 60]])


def test_glb_vertex_colours_and_texture_are_loaded(tmp_path):
    tm, colours = two_tone_sphere()
    path = tmp_path / "sphere.glb"
    path.write_bytes(tm.export(file_type="glb"))
    mesh = load_mesh(path)
    np.testing.assert_array_equal(mesh.appearance.vertex_colors[:, :3], colours[:, :3])

    # a textured sphere: u < 0.5 is blue, u >= 0.5 yellow; u follows the sign of x
    textured = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    uv = np.c_[np.where(textured.vertices[:, 0] > 0, 0.75, 0.25), np.full(len(textured.vertices), 0.5)]
    image = Image.fromarray(np.array([[[0, 0, 255], [255, 255, 0]]], dtype=np.uint8))
    textured.visual = trimesh.visual.TextureVisuals(uv=uv, image=image)
    path = tmp_path / "textured.glb"
    path.write_bytes(textured.export(file_type="glb"))
    mesh = load_mesh(path)
    assert mesh.appearance.texture is not None and mesh.appearance.uv.shape == (mesh.n_vertices, 2)
    views = render_views(mesh, geosam2_rig(size=48), outputs=("face_id", "color"))
    plus, minus = sides(mesh, views)
    yellow, blue = views.color[plus].astype(int), views.color[minus].astype(int)
    assert (yellow[:, 1] > yellow[:, 2]).all() and (blue[:, 2] > blue[:, 1]).all()
    base = face_base_colors(mesh.appearance, mesh.faces, mesh.n_vertices)
    corner_x = mesh.vertices[mesh.faces][:, :, 0]
    assert (base[(corner_x > 0).all(axis=1)] == [255, 255, 0]).all()
    assert (base[(corner_x <= 0).all(axis=1)] == [0, 0, 255]).all()


def test_scene_mixing_texture_and_vertex_colours_keeps_both(tmp_path):
    coloured, _ = two_tone_sphere()
    textured = trimesh.creation.box().apply_translation((3, 0, 0))
    uv = np.full((len(textured.vertices), 2), 0.5)
    textured.visual = trimesh.visual.TextureVisuals(uv=uv, image=Image.new("RGB", (2, 2), (0, 0, 255)))
    path = tmp_path / "scene.glb"
    path.write_bytes(trimesh.Scene([coloured, textured]).export(file_type="glb"))
    mesh = load_mesh(path)
    reference = trimesh.load(path, process=False).to_geometry()  # the face-order contract
    np.testing.assert_array_equal(mesh.faces, reference.faces)
    vc = mesh.appearance.vertex_colors[:, :3].astype(int)
    box = mesh.vertices[:, 0] > 2
    assert (vc[box] == [0, 0, 255]).all()
    assert {tuple(c) for c in vc[~box]} == {(255, 0, 0), (0, 255, 0)}


def test_uncoloured_files_have_no_appearance_and_bad_colours_are_refused(tmp_path):
    tm = trimesh.creation.box()
    for suffix in ("ply", "glb", "obj"):
        path = tmp_path / f"box.{suffix}"
        data = tm.export(file_type=suffix)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        assert load_mesh(path).appearance is None
    with pytest.raises(MeshError, match="vertex colors"):
        validate_mesh(tm.vertices, tm.faces, appearance=Appearance(vertex_colors=np.zeros((3, 3), np.uint8)))


def test_sampart3d_sees_the_colours_in_its_images_and_points():
    from segparts.engines.base import CancelToken, SegmentParams
    from segparts.engines.sampart3d import SAMPart3DEngine
    from segparts.engines.sampart3d.masks import ProvidedMasks

    boxes = [trimesh.creation.box((0.4, 0.4, 0.4)).apply_translation((x, 0, 0)).subdivide() for x in (-0.3, 0.3)]
    tm = trimesh.util.concatenate(boxes)
    part = np.repeat([0, 1], [len(b.faces) for b in boxes])
    face_colours = np.where(part[:, None] == 0, [200, 30, 30], [30, 30, 200]).astype(np.uint8)
    mesh = validate_mesh(tm.vertices, tm.faces, appearance=Appearance(face_colors=face_colours))

    class RecordingMasks(ProvidedMasks):
        """One oracle mask per box and view; keeps the images SAM would have seen."""

        def __init__(self):
            super().__init__([])

        def masks_for_views(self, views):
            self.color, self.face_id = views.color, views.face_id
            self.per_view = [[np.where(f >= 0, part[np.maximum(f, 0)], -1) == k for k in (0, 1)] for f in views.face_id]
            return super().masks_for_views(views)

    source = RecordingMasks()
    options = dict(
        backbone="none",
        iterations=2,
        views_per_batch=2,
        pixels_per_view=16,
        n_points=800,
        render_size=64,
        mask_source=source,
    )
    seg = SAMPart3DEngine("cpu").segment(mesh, SegmentParams(options=options), lambda f, s: None, CancelToken())
    hit = source.face_id >= 0
    shown = part[np.maximum(source.face_id, 0)]
    red, blue = (
        source.color[interior(hit & (shown == 0))].astype(int),
        source.color[interior(hit & (shown == 1))].astype(int),
    )
    assert (red[:, 0] > red[:, 2]).all() and (blue[:, 2] > blue[:, 0]).all()
    points = seg.state.points
    rgb = np.round((points.feat[:, 6:9] + 1.0) * 127.5).astype(int)  # the release's NormalizeColor, undone
    left, right = points.grid_xyz[:, 0] < -0.05, points.grid_xyz[:, 0] > 0.05  # box 0 is at -x
    assert left.sum() > 50 and right.sum() > 50
    assert (rgb[left] == [200, 30, 30]).all() and (rgb[right] == [30, 30, 200]).all()
