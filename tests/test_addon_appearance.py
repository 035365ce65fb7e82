"""The add-on's appearance and orientation logic without Blender: which arrays a mesh's looks
become (atlas.compose), image downscaling and atlas packing, world orientation and click points.
The arrays go through the backend's own validation and renderer."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from addon import atlas, orientation, picking
from segparts.appearance import Appearance, from_wire
from segparts.client import mesh_id
from segparts.render import face_base_colors

RED, BLUE, GREY = np.array([1.0, 0, 0, 1]), np.array([0, 0, 1.0, 1]), np.array([0.5, 0.5, 0.5, 1])


def never():
    raise AssertionError("read although not needed")


def test_plain_grey_sends_nothing_and_colours_send_face_colours():
    grey = atlas.MaterialLook(GREY)
    assert atlas.compose([grey, grey], np.array([0, 1, 0]), never, lambda: None) == {}
    assert atlas.compose([], np.zeros(3, np.int64), never, lambda: None) == {}  # no material: default grey
    looks = atlas.compose(
        [atlas.MaterialLook(RED), atlas.MaterialLook(BLUE), None], np.array([0, 1, 2, 7]), never, never
    )
    default = atlas.to_u8(atlas.linear_to_srgb(0.8))
    np.testing.assert_array_equal(looks["face_colors"], [[255, 0, 0], [0, 0, 255], [default] * 3, [default] * 3])


def test_says_nothing_agrees_with_compose():
    grey, red = atlas.MaterialLook(GREY), atlas.MaterialLook(RED)
    textured = atlas.MaterialLook(GREY, image=np.zeros((1, 1, 4), np.uint8))
    for looks in (
        [],
        [None],
        [None, atlas.default_look()],
        [grey],
        [grey, None],
        [red],
        [textured],
        [atlas.MaterialLook(GREY, uses_attribute=True)],
    ):
        for materials in (np.zeros(2, np.int64), np.arange(len(looks) + 1)):
            uv = np.zeros((len(materials), 3, 2))
            composed = atlas.compose(looks, materials, lambda uv=uv: uv, lambda: None)
            if atlas.says_nothing(looks):
                assert composed == {}, looks


def test_colour_attribute_when_materials_say_nothing_or_ask_for_it():
    corner = np.random.default_rng(0).random((3, 3, 4)).astype(np.float32)
    looks = atlas.compose([atlas.MaterialLook(GREY)], np.zeros(3, np.int64), never, lambda: ("CORNER", corner))
    np.testing.assert_array_equal(looks["corner_colors"], atlas.to_u8(corner[..., :3]))
    points = np.random.default_rng(1).random((5, 4))
    wanted = atlas.MaterialLook(RED, uses_attribute=True)
    looks = atlas.compose([wanted], np.zeros(3, np.int64), never, lambda: ("POINT", points))
    np.testing.assert_array_equal(looks["vertex_colors"], atlas.to_u8(points[:, :3]))
    # a uniform attribute adds nothing to coloured materials
    flat = atlas.compose([atlas.MaterialLook(RED)], np.zeros(2, np.int64), never, lambda: ("POINT", np.ones((4, 4))))
    assert set(flat) == {"face_colors"}


def test_a_texture_without_a_uv_map_falls_back_to_the_material_colour():
    look = atlas.MaterialLook(RED, image=np.zeros((2, 2, 4), np.uint8))
    assert set(atlas.compose([look], np.zeros(2, np.int64), lambda: None, never)) == {"face_colors"}


def test_atlas_samples_each_material_where_its_own_image_was_sampled():
    """Triangles of three materials (two images of different sizes, one plain) with UVs tiles
    away from [0, 1): the backend's renderer, given the atlas, finds the colours of the images."""
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, (8, 8, 4)).astype(np.uint8), rng.integers(0, 256, (16, 16, 4)).astype(np.uint8)]
    looks = [
        atlas.MaterialLook(GREY, image=images[0]),
        atlas.MaterialLook(GREY, image=images[1]),
        atlas.MaterialLook(BLUE),
    ]
    n = 60
    material = np.arange(n) % 3
    ij = rng.integers(0, 8, (n, 2))  # texel (row, col) of the 8x8 image; of the 16x16 one: 2 ij + 1
    uv = np.c_[(ij[:, 1] + 0.5) / 8, 1 - (ij[:, 0] + 0.5) / 8] + rng.integers(-3, 4, (n, 1))
    corner_uv = np.repeat(uv[:, None], 3, axis=1)
    out = atlas.compose(looks, material, lambda: corner_uv, never)
    faces = np.arange(3 * n).reshape(n, 3)
    appearance = from_wire(out, 3 * n, n)  # the backend accepts the arrays as they are
    got = face_base_colors(appearance, faces, 3 * n)
    want = np.where(
        material[:, None] == 0, images[0][ij[:, 0], ij[:, 1], :3], images[1][2 * ij[:, 0] + 1, 2 * ij[:, 1] + 1, :3]
    )
    want[material == 2] = [0, 0, 255]
    np.testing.assert_array_equal(got, want)
    assert out["texture"].shape[0] <= atlas.MAX_TEXTURE_SIDE


def test_one_textured_material_sends_its_image_and_uvs_unchanged():
    image = np.random.default_rng(3).integers(0, 256, (4, 6, 4)).astype(np.uint8)
    uv = np.random.default_rng(4).random((5, 3, 2)) * 4 - 2
    out = atlas.compose([atlas.MaterialLook(GREY, image=image)], np.zeros(5, np.int64), lambda: uv, never)
    assert out["texture"] is image
    np.testing.assert_array_equal(out["uv"], uv.astype(np.float32))


def test_wrapping_keeps_a_triangle_in_one_piece():
    uv = np.array([[[0.9, 0.2], [1.1, 0.2], [1.0, 0.4]]])  # crosses u = 1
    np.testing.assert_allclose(atlas.wrap_per_triangle(uv), [[[0.0, 0.2], [0.1, 0.2], [0.0, 0.4]]], atol=1e-12)
    inside = np.array([[[2.1, -0.9], [2.3, -0.7], [2.2, -0.5]]])
    np.testing.assert_allclose(atlas.wrap_per_triangle(inside), inside - [2, -1], atol=1e-12)


def test_downscale_averages_blocks_to_the_limit():
    image = np.arange(12 * 8 * 4, dtype=np.float32).reshape(12, 8, 4) % 255
    small = atlas.downscale(image, max_side=4)
    assert small.shape == (4, 2, 4)  # k = 3: 12 x 8 -> 4 x 2 (two dropped columns)
    np.testing.assert_allclose(small[0, 0], image[:3, :3].mean(axis=(0, 1)), rtol=1e-6)
    assert atlas.downscale(image, max_side=12) is image
    wide = np.full((1, 5000, 4), 7, np.uint8)
    assert atlas.downscale(wide).shape == (1, 1666, 4) and (atlas.downscale(wide) == 7).all()


def test_linear_to_srgb_matches_the_standard():
    np.testing.assert_allclose(
        atlas.linear_to_srgb([0.0, 0.0031308, 0.214041, 1.0]), [0.0, 0.04045, 0.5, 1.0], atol=1e-4
    )


def box():
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=np.float64)
    f = np.array(
        [
            [0, 1, 3],
            [0, 3, 2],
            [4, 6, 7],
            [4, 7, 5],
            [0, 4, 5],
            [0, 5, 1],
            [2, 3, 7],
            [2, 7, 6],
            [0, 2, 6],
            [0, 6, 4],
            [1, 5, 7],
            [1, 7, 3],
        ],
        dtype=np.int32,
    )
    return v, f


def volume(v, f):
    t = v[f]
    return float(np.einsum("ij,ij->i", t[:, 0], np.cross(t[:, 1], t[:, 2])).sum() / 6)


@pytest.mark.parametrize("scale", [(1.0, 2.0, 0.5), (-1.0, 2.0, 0.5), (-1.0, -1.0, -1.0)])
def test_world_orientation_keeps_faces_outward_and_corners_with_their_colours(scale):
    v, f = box()
    assert volume(v, f) > 0
    c, s = np.cos(0.7), np.sin(0.7)
    linear = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ np.diag(scale)
    corner = np.arange(len(f) * 3 * 3, dtype=np.uint8).reshape(len(f), 3, 3)
    looks = {"corner_colors": corner, "face_colors": np.zeros((len(f), 3), np.uint8)}
    wv, wf, wl = orientation.to_world(v, f, looks, linear)
    np.testing.assert_allclose(wv, v @ linear.T)
    np.testing.assert_allclose(volume(wv, wf), abs(np.linalg.det(linear)) * volume(v, f))
    # every corner keeps its colour: the colour of (triangle t, vertex x) is unchanged
    before = {(t, int(x)): tuple(corner[t, k]) for t in range(len(f)) for k, x in enumerate(f[t])}
    after = {(t, int(x)): tuple(wl["corner_colors"][t, k]) for t in range(len(f)) for k, x in enumerate(wf[t])}
    assert before == after
    assert wl["face_colors"] is looks["face_colors"]
    assert mesh_id(wv, wf, appearance=wl) != mesh_id(v, f, appearance=looks)


def test_an_unmoved_object_keeps_its_arrays_and_id():
    v, f = box()
    wv, wf, _ = orientation.to_world(v, f, {}, orientation.linear_part(np.eye(4)))
    assert wf is f and mesh_id(wv, wf) == mesh_id(v, f)


def test_click_points_follow_the_mesh_into_world_orientation():
    v, f = box()
    linear = np.diag([-2.0, 1.0, 3.0]) @ np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    t, bary = 4, np.array([0.2, 0.3, 0.5])
    point = bary @ v[f[t]]  # on triangle t, in object space
    click = picking.click_prompt(t, point, True, linear)
    _, wf, _ = orientation.to_world(v, f, {}, linear)
    np.testing.assert_allclose(click["point"], bary @ (v[f[t]] @ linear.T))  # on the uploaded triangle
    assert click["face"] == t and set(wf[t]) == set(f[t])  # the same triangle, corners maybe swapped
    assert picking.click_prompt(t, point, True)["point"] == pytest.approx(point.tolist())


def test_appearance_from_the_addon_is_accepted_by_the_backend():
    """Every array compose makes fits the wire contract (dtype, shape) of the backend."""
    n = 4
    for looks in (
        atlas.compose([atlas.MaterialLook(RED), atlas.MaterialLook(BLUE)], np.array([0, 1, 0, 1]), never, never),
        atlas.compose(
            [atlas.MaterialLook(GREY)],
            np.zeros(n, np.int64),
            never,
            lambda: ("CORNER", np.random.default_rng(0).random((n, 3, 4))),
        ),
    ):
        assert isinstance(from_wire(looks, 3 * n, n), Appearance)
