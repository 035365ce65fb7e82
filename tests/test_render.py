"""Camera rigs, the multi-view renderer and its encodings, checked against analytic geometry and an
independent ray-triangle intersector (trimesh's pure-numpy one)."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from segparts.mesh import validate_mesh
from segparts.render import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    Appearance,
    geosam2_inputs,
    geosam2_rig,
    look_at,
    normalize_for_rendering,
    nvdiff,
    orthographic,
    perspective,
    raycast,
    render_views,
    rig_from_matrices,
    sampart3d_rig,
)
from segparts.render.cameras import REFERENCE_FOV_X, reference_distance


def as_mesh(tm: trimesh.Trimesh):
    return validate_mesh(np.asarray(tm.vertices), np.asarray(tm.faces))


def unit_cube():
    return as_mesh(trimesh.creation.box(extents=(1.0, 1.0, 1.0)))


FOV_40 = np.radians(40.0)


def axis_rig(size=64, distance=3.0, fov=FOV_40):
    """Cameras on +X, -Y and +Z looking at the origin."""
    eyes = [(distance, 0, 0), (0, -distance, 0), (0, 0, distance)]
    return rig_from_matrices(np.stack([look_at(e) for e in eyes]), perspective(fov), size, size)


# ----------------------------------------------------------------------------- rigs
def test_sampart3d_rig_matches_reference_angles_and_distance():
    extents = np.array([1.0, 0.5, 0.25])
    rig = sampart3d_rig(extents=extents)
    assert rig.n_views == 16 and (rig.width, rig.height) == (512, 512)
    pos = rig.camera_positions
    d = 50.0 / 36.0 * np.linalg.norm(extents)
    np.testing.assert_allclose(np.linalg.norm(pos, axis=1), d, rtol=1e-9)
    elev = np.degrees(np.arcsin(pos[:, 2] / d))
    np.testing.assert_allclose(elev, [25, 40] * 4 + [-25, -40] * 4, atol=1e-9)
    az = np.degrees(np.arctan2(pos[:, 1], pos[:, 0])) % 360
    np.testing.assert_allclose(az, np.tile(np.arange(8) * 45.0, 2), atol=1e-9)
    # every camera looks at the origin with its up vector towards +Z
    np.testing.assert_allclose(rig.forward, -pos / d, atol=1e-12)
    up = rig.cam_to_world[:, :3, 1]
    assert (up[:, 2] > 0).all()
    np.testing.assert_allclose(np.einsum("ij,ij->i", up, rig.forward), 0, atol=1e-12)
    np.testing.assert_allclose(rig.focal_px(), 0.5 * 512 / np.tan(REFERENCE_FOV_X / 2))
    assert abs(REFERENCE_FOV_X - 0.6911) < 1e-4


def test_sampart3d_36_views_has_axis_views_and_random_ones():
    rig = sampart3d_rig(36)
    assert rig.n_views == 36
    d = reference_distance()
    pos = rig.camera_positions
    np.testing.assert_allclose(np.abs(pos[:6]).max(axis=1), d)
    r = np.linalg.norm(pos[6:], axis=1)
    assert np.isclose(r, d).sum() == 18 and np.isclose(r, d / 2).sum() == 12
    np.testing.assert_allclose(sampart3d_rig(36).world_to_cam, rig.world_to_cam)  # fixed seed
    with pytest.raises(ValueError, match="16 or 36"):
        sampart3d_rig(12)


def test_geosam2_ring_is_antipodal_and_steps_30_degrees():
    rig = geosam2_rig(size=64)
    pos = rig.camera_positions
    assert rig.n_views == 12
    np.testing.assert_allclose(pos[6:], -pos[:6], atol=1e-9)  # view k + 6 is opposite view k
    az = np.degrees(np.arctan2(pos[:, 1], pos[:, 0])) % 360
    np.testing.assert_allclose(az, (180 + 30 * np.arange(12)) % 360, atol=1e-9)
    elev = np.degrees(np.arcsin(pos[:, 2] / np.linalg.norm(pos, axis=1)))
    np.testing.assert_allclose(elev, np.tile([0, 25, 0, -25], 3), atol=1e-9)
    start = geosam2_rig(size=64, start_azimuth_deg=270).camera_positions
    np.testing.assert_allclose(np.degrees(np.arctan2(start[0, 1], start[0, 0])) % 360, 270)


def test_normalization_round_trips_and_fits_unit_box():
    rng = np.random.default_rng(1)
    v = rng.normal(size=(100, 3)) * [3.0, 1.0, 0.5] + [10.0, -4.0, 2.0]
    nv, norm = normalize_for_rendering(v)
    span = nv.max(axis=0) - nv.min(axis=0)
    assert np.isclose(span.max(), 1.0)
    np.testing.assert_allclose((nv.max(axis=0) + nv.min(axis=0)) / 2, 0, atol=1e-12)
    np.testing.assert_allclose(norm.extents, span)
    np.testing.assert_allclose(norm.inverse(nv), v, atol=1e-12)
    homo = np.c_[v, np.ones(len(v))] @ norm.matrix.T
    np.testing.assert_allclose(homo[:, :3], nv, atol=1e-12)


def test_rig_validation_errors():
    with pytest.raises(ValueError, match="projection"):
        rig_from_matrices(np.stack([np.eye(4)] * 3), np.stack([perspective(1.0)] * 2), 8, 8)
    with pytest.raises(ValueError, match="positive"):
        rig_from_matrices(np.eye(4), perspective(1.0), 0, 8)
    with pytest.raises(ValueError, match="unknown render outputs"):
        render_views(unit_cube(), axis_rig(8), outputs=("face_id", "albedo"))


# ----------------------------------------------------------------------------- analytic scenes
def test_cube_depth_normals_points_match_geometry():
    mesh = unit_cube()
    rig = axis_rig(size=96, distance=3.0)
    views = render_views(mesh, rig)
    for k, axis in enumerate([np.array([1.0, 0, 0]), np.array([0, -1.0, 0]), np.array([0, 0, 1.0])]):
        hit = views.face_id[k] >= 0
        # a face-on cube face: planar depth is constant, normals are the face's axis
        assert hit.sum() > 0.15 * hit.size
        np.testing.assert_allclose(views.depth[k][hit], 2.5, atol=2e-6)
        np.testing.assert_allclose(views.normal[k][hit], np.broadcast_to(axis, (hit.sum(), 3)), atol=1e-6)
        np.testing.assert_allclose(views.point[k][hit] @ axis, 0.5, atol=2e-6)
        assert np.abs(views.point[k][hit]).max() <= 0.5 + 1e-6
        assert np.isinf(views.depth[k][~hit]).all() and (views.alpha[k] == hit).all()
        # the face's projected square: half-width 0.5 at distance 2.5
        expected = (0.5 / 2.5 * rig.focal_px()[k] * 2) ** 2
        assert abs(hit.sum() - expected) < 4 * np.sqrt(expected) + 4
    # barycentrics reproduce the point map
    faces = mesh.faces[views.face_id[0][views.face_id[0] >= 0]]
    b = views.bary[0][views.face_id[0] >= 0]
    v = mesh.vertices
    p = v[faces[:, 0]] + b[:, :1] * (v[faces[:, 1]] - v[faces[:, 0]]) + b[:, 1:] * (v[faces[:, 2]] - v[faces[:, 0]])
    np.testing.assert_allclose(p, views.point[0][views.face_id[0] >= 0], atol=1e-5)


def test_sphere_points_on_surface_normals_radial_and_silhouette_area():
    tm = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
    mesh = as_mesh(tm)
    rig = sampart3d_rig(size=128)
    views = render_views(mesh, rig, outputs=("face_id", "depth", "point", "normal"))
    hit = views.face_id >= 0
    p = views.point[hit]
    r = np.linalg.norm(p, axis=1)
    assert np.abs(r - 0.5).max() < 2e-3  # inscribed polyhedron sags at most ~1e-3 below the sphere
    n = views.normal[hit]
    assert (np.einsum("ij,ij->i", n, p / r[:, None]) > 0.995).all()
    # depth is the planar distance along each camera's axis
    view_of = np.nonzero(hit)[0]
    z = np.einsum("ij,ij->i", p, rig.world_to_cam[view_of, 2, :3]) + rig.world_to_cam[view_of, 2, 3]
    np.testing.assert_allclose(views.depth[hit], -z, atol=1e-5)
    # silhouette of a sphere of radius r at distance d: a disc of angular radius asin(r / d)
    d = np.linalg.norm(rig.camera_positions[0])
    radius_px = np.tan(np.arcsin(0.5 / d)) * rig.focal_px()[0]
    area = hit.reshape(rig.n_views, -1).sum(axis=1)
    np.testing.assert_allclose(area, np.pi * radius_px**2, rtol=0.03)


def brute_force_first_hit(triangles, origins, dirs):
    """Moller-Trumbore of every ray against every triangle (tiny scenes only)."""
    v0, e1, e2 = triangles[:, 0], triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0]
    o, d = origins[:, None], dirs[:, None]
    p = np.cross(d, e2[None])
    det = np.einsum("rtk,tk->rt", p, e1)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = o - v0[None]
        u = np.einsum("rtk,rtk->rt", s, p) / det
        q = np.cross(s, e1[None])
        v = np.einsum("rtk,rtk->rt", np.broadcast_to(d, q.shape), q) / det
        t = np.einsum("rtk,tk->rt", q, e2) / det
    ok = (np.abs(det) > 1e-12) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    t = np.where(ok, t, np.inf)
    first = t.argmin(axis=1)
    hit = np.isfinite(t.min(axis=1))
    where = origins + dirs * np.where(hit, t.min(axis=1), 0)[:, None]
    return np.where(hit, first, -1), where


def test_known_rays_hit_the_faces_an_independent_intersector_finds():
    boxes = [trimesh.creation.box(extents=(0.4, 0.4, 0.4)).apply_translation((x, 0, 0)) for x in (-0.4, 0.4)]
    tm = trimesh.util.concatenate(boxes)
    mesh = as_mesh(tm)
    rig = sampart3d_rig(size=48)
    views = render_views(mesh, rig, outputs=("face_id", "point"))
    rng = np.random.default_rng(0)
    for k in (0, 5, 11):
        ys, xs = np.divmod(rng.choice(48 * 48, 400, replace=False), 48)
        origins, dirs = raycast.pixel_rays(rig, k, xs, ys)
        origins = np.broadcast_to(origins, dirs.shape)
        expected, where = brute_force_first_hit(tm.triangles, origins, dirs)
        got = views.face_id[k, ys, xs]
        assert ((got >= 0) == (expected >= 0)).all()
        assert (got == expected).mean() > 0.97
        # a ray through an edge may report either neighbour; the hit point must still agree
        hit = got >= 0
        np.testing.assert_allclose(views.point[k, ys, xs][hit], where[hit], atol=1e-5)
        assert (got[hit] < 12).sum() + (got[hit] >= 12).sum() == hit.sum()


def test_point_to_pixel_to_face_round_trip():
    from segparts.lifting import pixel_to_face

    mesh = unit_cube()
    rig = geosam2_rig(size=128)
    views = render_views(mesh, rig, outputs=("face_id", "depth"))
    centroids = mesh.vertices[mesh.faces].mean(axis=1)
    normals = np.cross(*(mesh.vertices[mesh.faces][:, i] - mesh.vertices[mesh.faces][:, 0] for i in (1, 2)))
    checked = 0
    for k in range(rig.n_views):
        px, depth = rig.project(centroids, k)
        to_cam = rig.camera_positions[k] - centroids
        facing = (
            np.einsum("ij,ij->i", normals, to_cam) / np.linalg.norm(normals, axis=1) / np.linalg.norm(to_cam, axis=1)
        )
        for f in np.flatnonzero(facing > 0.2):  # clearly front-facing faces of a convex mesh are visible
            x, y = int(px[f, 0]), int(px[f, 1])
            assert pixel_to_face(views, k, x, y) == f
            assert abs(views.depth[k, y, x] - depth[f]) < 0.05  # within a pixel of the centroid
            checked += 1
    assert checked > 30
    assert pixel_to_face(views, 0, -1, 5) == -1 and pixel_to_face(views, 0, 0, 0) == -1


def test_orthographic_camera_from_matrices():
    mesh = unit_cube()
    w2c = look_at((0, 0, 5.0))
    rig = rig_from_matrices(w2c, orthographic(2.0, aspect=2.0), 64, 32)  # 2 units across, 1 unit tall
    views = render_views(mesh, rig, outputs=("face_id", "depth", "normal"))
    hit = views.face_id[0] >= 0
    np.testing.assert_allclose(views.depth[0][hit], 4.5, atol=1e-5)
    np.testing.assert_allclose(views.normal[0][hit], np.broadcast_to([0, 0, 1.0], (hit.sum(), 3)), atol=1e-6)
    # the unit face covers half the width and the full height
    assert hit.shape == (32, 64) and hit.sum() == 32 * 32
    assert hit[:, 16:48].all() and not hit[:, :16].any()


def test_shaded_colour_uses_vertex_colours_texture_or_grey():
    tm = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    mesh = as_mesh(tm)
    rig = geosam2_rig(size=48)
    grey = render_views(mesh, rig, outputs=("face_id", "color")).color
    hit = render_views(mesh, rig, outputs=("face_id",)).face_id >= 0
    from scipy.ndimage import binary_dilation

    near_silhouette = np.stack([binary_dilation(h) for h in hit])  # anti-aliased edge pixels
    assert (grey[~near_silhouette] == 255).all()
    c = grey[hit].astype(int)
    assert (c[:, 0] == c[:, 1]).all() and (c[:, 1] == c[:, 2]).all() and c[:, 0].max() < 255
    red = np.tile([255, 0, 0, 255], (len(tm.vertices), 1)).astype(np.uint8)
    tm.visual.vertex_colors = red
    col = render_views(mesh, rig, appearance=Appearance.from_trimesh(tm)).color[hit].astype(int)
    # red base colour; green = blue = the white specular (Fresnel) reflection only
    assert (col[:, 0] > col[:, 1] + 60).all() and (col[:, 1] == col[:, 2]).all()
    # a 2x1 texture: left half green, right half blue, chosen by the u coordinate
    tex = np.array([[[0, 255, 0], [0, 0, 255]]], dtype=np.uint8)
    uv = np.c_[(tm.vertices[:, 0] > 0) * 0.5 + 0.25, np.full(len(tm.vertices), 0.5)]
    col = render_views(mesh, rig, appearance=Appearance(uv=uv, texture=tex)).color
    views = render_views(mesh, rig, outputs=("face_id", "point"))
    right = hit & (views.point[..., 0] > 0.05)
    left = hit & (views.point[..., 0] < -0.05)
    assert (col[right][:, 2] > col[right][:, 1]).all() and (col[left][:, 1] > col[left][:, 2]).all()


def test_geosam2_encodings():
    mesh = unit_cube()
    rig = axis_rig(size=32)
    views = render_views(mesh, rig, outputs=("face_id", "alpha", "normal", "point"))
    normal, points = geosam2_inputs(views, as_torch=False)
    assert normal.shape == points.shape == (3, 3, 32, 32) and normal.dtype == np.float32
    hit = views.face_id >= 0
    white = (1.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(normal.transpose(0, 2, 3, 1)[~hit], np.broadcast_to(white, ((~hit).sum(), 3)), atol=1e-6)
    # +X face: (n + 1) / 2 = (1, 0.5, 0.5) -> 8 bit (255, 128, 128)
    expected = (np.array([255, 128, 128]) / 255.0 - IMAGENET_MEAN) / IMAGENET_STD
    np.testing.assert_allclose(
        normal[0].transpose(1, 2, 0)[hit[0]], np.broadcast_to(expected, (hit[0].sum(), 3)), atol=1e-6
    )
    assert (points.transpose(0, 2, 3, 1)[~hit] == 0).all()
    np.testing.assert_allclose(points[0, 0][hit[0]], 0.5, atol=1e-6)
    big = validate_mesh(mesh.vertices * 4.0, mesh.faces)  # points beyond [-1, 1] are clipped
    _, clipped = geosam2_inputs(render_views(big, axis_rig(size=32, distance=8.0)), as_torch=False)
    assert clipped.max() == 1.0 and clipped.min() == -1.0
    torch = pytest.importorskip("torch")
    tn, tp = geosam2_inputs(views)
    assert isinstance(tn, torch.Tensor) and torch.equal(tn, torch.from_numpy(normal))


def test_mesh_behind_and_around_the_camera_renders():
    """A camera inside a box sees the inner walls everywhere (tile culling must not drop them)."""
    tm = trimesh.creation.box(extents=(4.0, 4.0, 4.0))
    rig = rig_from_matrices(look_at((0, 0, 0.5), (1, 0, 0.5)), perspective(np.radians(90)), 32, 32)
    views = render_views(as_mesh(tm), rig, outputs=("face_id", "depth"))
    assert (views.face_id >= 0).all()
    assert np.isfinite(views.depth).all()


def test_cpu_and_cuda_backends_agree():
    reason = nvdiff.unavailable_reason()
    if reason is not None:
        pytest.skip(f"CUDA renderer not testable here: {reason}")
    tm = trimesh.creation.icosphere(subdivisions=4, radius=0.5)
    mesh = as_mesh(tm)
    rig = geosam2_rig(size=256)
    cpu = render_views(mesh, rig, backend="embree")
    gpu = render_views(mesh, rig, backend="nvdiffrast")
    same = cpu.face_id == gpu.face_id
    assert same.mean() > 0.995  # differences only on edges and the silhouette
    both = (cpu.face_id >= 0) & (gpu.face_id >= 0)
    assert np.abs(cpu.depth[both] - gpu.depth[both]).max() < 1e-2
    np.testing.assert_allclose(cpu.point[both & same], gpu.point[both & same], atol=1e-4)


def test_auto_smooth_normals_like_blender():
    from segparts.render.normals import smooth_corner_normals

    tm = trimesh.creation.icosphere(subdivisions=3, radius=0.5)
    mesh = as_mesh(tm)
    rig = geosam2_rig(size=96)
    smooth = render_views(mesh, rig, outputs=("face_id", "normal", "point"))
    flat = render_views(mesh, rig, outputs=("face_id", "normal", "point"), smooth_angle_deg=0)
    hit = smooth.face_id >= 0
    radial = smooth.point[hit] / np.linalg.norm(smooth.point[hit], axis=1, keepdims=True)
    err_smooth = 1 - np.einsum("ij,ij->i", smooth.normal[hit], radial)
    err_flat = 1 - np.einsum("ij,ij->i", flat.normal[hit], radial)
    assert np.median(err_smooth) < 0.2 * np.median(err_flat)
    np.testing.assert_allclose(np.linalg.norm(smooth.normal[hit], axis=1), 1, atol=1e-5)
    np.testing.assert_allclose(flat.normal[hit], tm.face_normals[flat.face_id[hit]], atol=1e-6)
    # a roof of two triangles sharing an edge: smoothed below the angle, sharp above it
    for angle, smoothed in ((20.0, True), (40.0, False)):
        t = np.radians(angle)
        v = np.array([[0, 0, 0], [0, 1, 0], [-1, 0.5, 0], [np.cos(t), 0.5, np.sin(t)]], float)
        f = np.array([[0, 1, 2], [1, 0, 3]])
        cn = smooth_corner_normals(v, f, 30.0)
        fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        fn /= np.linalg.norm(fn, axis=1, keepdims=True)
        shared = cn[0, 0]  # corner of face 0 at vertex 0, on the shared edge
        assert np.allclose(shared, fn[0]) != smoothed
        np.testing.assert_allclose(cn[0, 2], fn[0], atol=1e-12)  # the unshared corner stays flat
        if smoothed:
            np.testing.assert_allclose(cn[0, 0], cn[1, 1], atol=1e-12)  # both faces agree at vertex 0


def test_geosam2_encodings_equal_the_dense_formulas():
    from segparts.render.encodings import imagenet_normalize, normal_map_rgb, point_map

    mesh = as_mesh(trimesh.creation.icosphere(subdivisions=3, radius=0.7))
    views = render_views(mesh, geosam2_rig(size=64), outputs=("face_id", "alpha", "normal", "point"))
    normal, points = geosam2_inputs(views, as_torch=False)
    np.testing.assert_array_equal(normal, imagenet_normalize(normal_map_rgb(views.normal, views.alpha)))
    np.testing.assert_array_equal(points, point_map(views.point, views.alpha))
    with pytest.raises(ValueError, match="normal"):
        geosam2_inputs(render_views(mesh, geosam2_rig(size=16), outputs=("face_id",)))


def test_render_command_writes_contact_sheets(tmp_path, capsys):
    from PIL import Image

    from segparts.cli import main

    tm = trimesh.util.concatenate(
        [
            trimesh.creation.box(extents=(1, 1, 1)),
            trimesh.creation.box(extents=(0.5, 0.5, 0.5)).apply_translation((1.2, 0, 0)),
        ]
    )
    off = tmp_path / "two_boxes.off"
    lines = ["OFF", f"{len(tm.vertices)} {len(tm.faces)} 0"]
    lines += [" ".join(map(str, v)) for v in tm.vertices] + [f"3 {a} {b} {c}" for a, b, c in tm.faces]
    off.write_text("\n".join(lines) + "\n")
    labels = tmp_path / "parts.npy"
    np.save(labels, (np.arange(len(tm.faces)) >= 12).astype(np.int32))
    out = tmp_path / "sheets"
    assert (
        main(["render", str(off), "--rig", "sampart3d", "--size", "64", "--labels", str(labels), "--out", str(out)])
        == 0
    )
    names = {p.name for p in out.iterdir()}
    assert names == {f"{n}.png" for n in ("color", "face_id", "normal", "depth", "point", "labels", "lifted")}
    sheet = np.asarray(Image.open(out / "lifted.png"))
    assert sheet.shape == (4 * 66, 4 * 66, 3)
    assert "100.00% of all faces match" in capsys.readouterr().out
    np.save(labels, np.zeros(5, np.int32))
    assert main(["render", str(off), "--labels", str(labels), "--out", str(out)]) == 2
    assert "5 labels for a mesh with 24 faces" in capsys.readouterr().err


@pytest.mark.parametrize("kind", ["perspective", "shifted", "orthographic"])
def test_pixel_rays_and_projection_agree_for_any_projection(kind):
    """Each rendered point projects back to the centre of the pixel that saw it."""
    mesh = as_mesh(trimesh.creation.icosphere(subdivisions=3, radius=0.5))
    if kind == "orthographic":
        proj = orthographic(1.6, aspect=48 / 40)
    else:
        proj = perspective(np.radians(50), aspect=48 / 40)
        if kind == "shifted":  # an off-centre lens (Blender's shift_x / shift_y)
            proj[0, 2], proj[1, 2] = 0.25, -0.1
    rig = rig_from_matrices(np.stack([look_at((2.0, -1.0, 1.0)), look_at((0.3, 0.2, -2.5))]), proj, 48, 40)
    views = render_views(mesh, rig, outputs=("face_id", "point", "depth"))
    for k in range(2):
        ys, xs = np.nonzero(views.face_id[k] >= 0)
        assert len(xs) > 100
        px, depth = rig.project(views.point[k, ys, xs].astype(np.float64), k)
        np.testing.assert_allclose(px[:, 0], xs + 0.5, atol=2e-3)
        np.testing.assert_allclose(px[:, 1], ys + 0.5, atol=2e-3)
        np.testing.assert_allclose(depth, views.depth[k, ys, xs], atol=1e-5)


def test_rig_transformed_to_the_normalised_mesh_sees_the_same_faces():
    """A camera given in the user's coordinates (e.g. a Blender viewport) renders the normalised
    mesh exactly as it rendered the original, with depths in normalised units."""
    tm = trimesh.creation.icosphere(subdivisions=3, radius=3.0).apply_translation((10.0, -4.0, 2.0))
    mesh = as_mesh(tm)
    w2c = np.stack([look_at((20.0, -4.0, 5.0), (10.0, -4.0, 2.0)), look_at((10.0, 8.0, 2.0), (10.0, -4.0, 2.0))])
    for proj in (perspective(np.radians(45)), orthographic(8.0)):
        rig = rig_from_matrices(w2c, proj, 40, 40)
        original = render_views(mesh, rig, outputs=("face_id", "depth"))
        nv, norm = normalize_for_rendering(mesh.vertices)
        moved = rig.transformed(norm.matrix)
        normalised = render_views(validate_mesh(nv, mesh.faces), moved, outputs=("face_id", "depth"))
        assert (original.face_id == normalised.face_id).mean() > 0.995
        hit = (original.face_id >= 0) & (normalised.face_id >= 0)
        np.testing.assert_allclose(normalised.depth[hit], original.depth[hit] * norm.scale, rtol=1e-3)
        np.testing.assert_allclose(np.linalg.det(moved.world_to_cam[:, :3, :3]), 1.0)  # still rigid
    with pytest.raises(ValueError, match="similarity"):
        rig.transformed(np.diag([1.0, 2.0, 1.0, 1.0]))


def test_appearance_from_a_textured_trimesh():
    from PIL import Image

    tm = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
    image = Image.fromarray(np.array([[[250, 20, 20], [20, 20, 250]]], dtype=np.uint8))
    uv = np.c_[np.where(tm.vertices[:, 0] > 0, 0.75, 0.25), np.full(len(tm.vertices), 0.5)]
    tm.visual = trimesh.visual.TextureVisuals(uv=uv, image=image)
    appearance = Appearance.from_trimesh(tm)
    assert appearance is not None and appearance.texture.shape == (1, 2, 3)
    views = render_views(as_mesh(tm), axis_rig(size=32), appearance=appearance)
    front = views.face_id[0] >= 0  # the +X face: every corner has u = 0.75, the blue texel
    col = views.color[0][front].astype(int)
    assert (col[:, 2] > 3 * col[:, 0]).all()
    assert Appearance.from_trimesh(trimesh.creation.box()) is None  # untextured: plain grey


def test_tile_culling_with_the_small_face_shortcut_stays_conservative():
    from segparts.bench.render import bumpy_torus

    v, f = bumpy_torus(120, 60)
    v, _ = normalize_for_rendering(v)
    max_edge = np.max([np.linalg.norm(v[f[:, i]] - v[f[:, (i + 1) % 3]], axis=1) for i in range(3)], axis=0)
    shifted = perspective(np.radians(40))
    shifted[0, 2] = 0.3
    rigs = [
        sampart3d_rig(size=128),
        geosam2_rig(size=96),
        rig_from_matrices(np.stack([look_at((0.2, 1.5, 0.4)), look_at((0, 0, 3))]), shifted, 80, 64),
        rig_from_matrices(look_at((0, -2, 1)), orthographic(1.5), 64, 64),
    ]
    for rig in rigs:
        for k in range(rig.n_views):
            exact = raycast.covered_tiles(v, f, rig, k)
            fast = raycast.covered_tiles(v, f, rig, k, max_edge=max_edge)
            assert exact.any() and not (exact & ~fast).any()  # the shortcut never drops a tile
            assert fast.sum() <= exact.sum() + 2 * (exact.shape[0] + exact.shape[1]) + 4 * np.sqrt(exact.sum() * 8) + 16


# ----------------------------------------------------------------------------- the release's look
def test_colour_is_uniform_grey_ambient_light_not_a_head_light():
    """SAMPart3D's renders are lit by a uniform grey world (0.5) only: faces at any angle to the
    camera get the same light; untextured surfaces are Blender's default 0.8 grey through AgX."""
    from segparts.render import agx_display

    mesh = unit_cube()
    eye = np.array([3.0, -2.0, 1.2])  # sees three faces of the cube at three different angles
    rig = rig_from_matrices(look_at(eye), perspective(np.radians(40)), 96, 96)
    views = render_views(mesh, rig, outputs=("face_id", "normal", "color"))
    hit = views.face_id[0] >= 0
    colour = views.color[0].astype(int)
    face_normals = views.normal[0][hit]
    per_face = [colour[hit][np.abs(face_normals[:, a]) > 0.99][:, 0] for a in range(3)]
    medians = [float(np.median(c)) for c in per_face if len(c)]
    assert len(medians) == 3 and max(medians) - min(medians) <= 4, medians  # a head-light spreads them by > 40
    facing = 0.5 * (0.8 * 0.96 + 0.04)  # normal incidence: Fresnel 0.04
    assert abs(max(medians) - int(agx_display(np.array([facing]))[0])) <= 6
    assert (colour[0][0] == 255).all()  # background white


def test_ambient_occlusion_darkens_a_concave_corner():
    floor = trimesh.creation.box((1.0, 1.0, 0.02))
    block = trimesh.creation.box((0.3, 0.3, 0.3)).apply_translation((0, 0, 0.16))
    mesh = as_mesh(trimesh.util.concatenate([floor, block]))
    rig = rig_from_matrices(look_at((0.0, -0.9, 1.6)), perspective(np.radians(40)), 96, 96)
    views = render_views(mesh, rig, outputs=("face_id", "point", "normal", "color"))
    on_floor = (
        (views.face_id[0] >= 0)
        & (views.normal[0][..., 2] > 0.99)
        & (views.point[0][..., 2] > 0.005)
        & (views.point[0][..., 2] < 0.02)
    )
    gap = np.maximum(np.abs(views.point[0][..., 0]), np.abs(views.point[0][..., 1])) - 0.15
    near, far = on_floor & (gap > 0) & (gap < 0.03), on_floor & (gap > 0.3)
    assert near.sum() > 20 and far.sum() > 20
    lum = views.color[0][..., 0].astype(float)
    assert lum[near].mean() < lum[far].mean() - 10  # occluded light near the block
    plain = render_views(mesh, rig, outputs=("color",), ao_rays=0).color[0][..., 0].astype(float)
    assert abs(plain[near].mean() - plain[far].mean()) < 3  # without occlusion the floor is uniform


def test_colour_is_anti_aliased_with_straight_alpha_edges():
    """Sub-samples average inside the object (a red/blue edge gets mixed pixels); pixels the
    silhouette only grazes keep the object's colour (the release drops alpha, paints only
    alpha = 0 white), so the coloured area is at least the centre-sampled one."""
    tm2 = trimesh.creation.box((1.0, 1.0, 1.0)).subdivide_to_size(0.05)
    centres = tm2.triangles_center
    colours = np.where(centres[:, 1:2] > 0, [[230, 20, 20]], [[20, 20, 230]]).astype(np.uint8)
    mesh = validate_mesh(np.asarray(tm2.vertices), np.asarray(tm2.faces), appearance=Appearance(face_colors=colours))
    rig = rig_from_matrices(look_at((2.6, 0.0123, 0.0), target=(0.0, 0.0123, 0.0)), perspective(np.radians(40)), 64, 64)
    views = render_views(mesh, rig, outputs=("face_id", "color"), ao_rays=0, supersample=4)
    col = views.color[0].astype(int)
    on = views.face_id[0] >= 0
    mixed = on & (col[..., 0] > 60) & (col[..., 2] > 60)  # red and blue in one pixel: the y = 0 seam
    assert mixed.sum() >= 20
    coloured = (col != 255).any(axis=-1)
    assert (coloured | ~on).all() and coloured.sum() > on.sum()
    edge = coloured & ~on
    assert np.abs(col[edge] - col[on].mean(axis=0)).max() < 120  # object colour, not half-way to white


def test_agx_table_is_blenders_view_transform():
    bpy = pytest.importorskip("bpy")
    from PIL import Image

    from segparts.render import AGX_EV, agx_display

    values = np.concatenate([2.0**AGX_EV, [0.0137, 0.3, 0.77]])
    image = bpy.data.images.new("segparts_agx", width=len(values), height=1, alpha=True, float_buffer=True)
    pixels = np.ones((1, len(values), 4), np.float32)
    pixels[0, :, :3] = values[:, None]
    image.pixels.foreach_set(pixels.ravel())
    scene = bpy.context.scene
    scene.view_settings.view_transform = "AgX"
    scene.view_settings.look = "None"
    scene.view_settings.exposure, scene.view_settings.gamma = 0.0, 1.0
    scene.display_settings.display_device = "sRGB"
    scene.render.image_settings.file_format = "PNG"
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "agx.png")
        image.save_render(path, scene=scene)
        measured = np.asarray(Image.open(path).convert("RGB"))[0, :, 0].astype(int)
    bpy.data.images.remove(image)
    assert np.abs(agx_display(values).astype(int) - measured).max() <= 2, (agx_display(values), measured)
