"""Appearance on the wire: `upload_mesh` accepts colours / UV + texture, validates them against the
mesh, keeps them as Mesh.appearance for the renderer, and they belong to the mesh id (a coloured
re-upload never reuses a grey mesh). The renderer interpolates per-corner colours."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from backend_fixtures import thread_server
from segparts.appearance import Appearance, from_wire, wire_arrays
from segparts.client import BackendError, mesh_id
from segparts.mesh import MeshError, validate_mesh
from segparts.render import geosam2_rig, render_views


def box():
    tm = trimesh.creation.box()
    return np.asarray(tm.vertices, dtype=np.float64), np.asarray(tm.faces, dtype=np.int64)


def appearances(n_vertices: int, n_faces: int) -> dict[str, dict]:
    rng = np.random.default_rng(1)
    return {
        "face": {"face_colors": rng.integers(0, 256, (n_faces, 3)).astype(np.uint8)},
        "vertex": {"vertex_colors": rng.random((n_vertices, 4)).astype(np.float32)},
        "corner": {"corner_colors": rng.integers(0, 256, (n_faces, 3, 4)).astype(np.uint8)},
        "texture": {
            "uv": rng.random((n_faces, 3, 2)) * 3 - 1,  # float64, outside [0, 1]: wraps
            "texture": rng.integers(0, 256, (8, 16, 3)).astype(np.uint8),
        },
    }


@pytest.mark.parametrize("kind", ["face", "vertex", "corner", "texture"])
def test_appearance_arrays_reach_the_mesh_and_its_id(tmp_path, kind):
    vertices, faces = box()
    looks = appearances(len(vertices), len(faces))[kind]
    with thread_server(tmp_path) as (server, client):
        grey = client.upload_mesh(vertices, faces)
        coloured = client.upload_mesh(vertices, faces, appearance=looks)
        assert grey == mesh_id(vertices, faces)  # geometry-only clients keep their ids
        assert coloured == mesh_id(vertices, faces, appearance=looks) != grey
        assert client.upload_mesh(vertices, faces, appearance=looks, check_first=True) == coloured
        stored = server._cache.get(("mesh", coloured))
        assert stored is not server._cache.get(("mesh", grey))  # not the grey mesh, reused
        assert server._cache.get(("mesh", grey)).appearance is None
        for name, values in looks.items():
            expected = values.astype(np.float32) if values.dtype.kind == "f" else values
            np.testing.assert_array_equal(getattr(stored.appearance, name), expected)
        assert stored.content_hash == coloured  # the server-side hash of the stored mesh agrees
        # a re-upload of the same colours is the same mesh; other colours are another
        assert client.upload_mesh(vertices, faces, appearance=looks) == coloured
        other = {name: (values[::-1] if name != "texture" else 255 - values) for name, values in looks.items()}
        assert client.upload_mesh(vertices, faces, appearance=other) not in (coloured, grey)
        assert client.segment(coloured).arrays["labels"].shape == (len(faces),)


def bad_cases(n_vertices: int, n_faces: int):
    u8 = np.uint8
    return [
        ({"face_colors": np.zeros((n_faces - 1, 3), u8)}, r"shape \(12, 3\|4\)"),
        ({"face_colors": np.zeros((n_faces, 2), u8)}, "shape"),
        ({"vertex_colors": np.zeros((n_vertices, 3), np.int32)}, "uint8 .* or float"),
        ({"vertex_colors": np.full((n_vertices, 3), np.nan, np.float32)}, "NaN"),
        ({"vertex_colors": np.full((n_vertices, 3), 2.0, np.float32)}, r"\[0, 1\]"),
        ({"corner_colors": np.zeros((n_faces, 2, 3), u8)}, r"\(12, 3, 3\|4\)"),
        ({"uv": np.zeros((n_faces, 3, 2), np.float32)}, "go together"),
        ({"uv": np.zeros((n_faces, 2), np.float32), "texture": np.zeros((2, 2, 3), u8)}, "per triangle corner"),
        ({"uv": np.full((n_faces, 3, 2), np.inf, np.float32), "texture": np.zeros((2, 2, 3), u8)}, "infinite"),
        ({"uv": np.zeros((n_faces, 3, 2), np.int32), "texture": np.zeros((2, 2, 3), u8)}, "float"),
        ({"uv": np.zeros((n_faces, 3, 2), np.float32), "texture": np.zeros((2, 2, 3), np.float32)}, "uint8"),
        ({"uv": np.zeros((n_faces, 3, 2), np.float32), "texture": np.zeros((2, 2), u8)}, r"\(H, W, 3\|4\)"),
        ({"uv": np.zeros((n_faces, 3, 2), np.float32), "texture": np.zeros((1, 5000, 3), u8)}, "1..4096"),
    ]


def test_bad_appearance_arrays_are_refused_and_the_server_keeps_serving(tmp_path):
    vertices, faces = box()
    with thread_server(tmp_path) as (server, client):
        for looks, match in bad_cases(len(vertices), len(faces)):
            with pytest.raises(BackendError, match=match) as err:  # raw arrays: the client does not convert
                client.call("upload_mesh", {}, {"vertices": vertices, "faces": faces, **looks})
            assert err.value.code == "bad_appearance", looks
        with pytest.raises(BackendError) as err:
            client.call("upload_mesh", {}, {"vertices": vertices, "faces": faces, "colours": faces})
        assert err.value.code == "bad_args" and "vertex_colors" in err.value.message
        assert client.upload_mesh(vertices, faces) == mesh_id(vertices, faces)  # still serving
        assert len(server._cache) == 1


def test_file_colours_are_in_the_id_and_round_trip_through_the_wire_form():
    vertices, faces = box()
    looks = Appearance(
        uv=np.random.default_rng(0).random((len(vertices), 2)),  # per vertex, as files have
        texture=np.zeros((4, 4, 3), np.uint8),
    )
    mesh = validate_mesh(vertices, faces, appearance=looks)
    assert mesh.content_hash != validate_mesh(vertices, faces).content_hash
    arrays = wire_arrays(looks, faces)
    assert arrays["uv"].shape == (len(faces), 3, 2) and arrays["uv"].dtype == np.float32
    assert mesh.content_hash == mesh_id(vertices, faces, appearance=arrays)  # what the CLI uploads
    again = validate_mesh(vertices, faces, appearance=from_wire(arrays, len(vertices), len(faces)))
    assert again.content_hash == mesh.content_hash


def test_bad_appearance_is_a_mesh_error():
    vertices, faces = box()
    with pytest.raises(MeshError) as err:
        from_wire({"face_colors": np.zeros((3, 3), np.uint8)}, len(vertices), len(faces))
    assert err.value.code == "bad_appearance"
    assert from_wire({}, len(vertices), len(faces)) is None


def test_corner_colours_are_interpolated_by_the_renderer():
    """Each triangle of a box has red, green and blue corners: pixels near a corner take its
    colour, and the same mesh with one colour per face renders flat."""
    vertices, faces = box()
    corners = np.tile(np.eye(3, dtype=np.float32)[None], (len(faces), 1, 1))  # corner k is channel k
    mesh = validate_mesh(vertices, faces, appearance=Appearance(corner_colors=corners))
    # one sample per pixel, no occlusion: each pixel's colour is its own corner weights, shaded
    views = render_views(mesh, geosam2_rig(size=64), outputs=("face_id", "bary", "color"), supersample=1, ao_rays=0)
    hit = views.face_id >= 0
    bary = views.bary[hit]
    weights = np.c_[1.0 - bary.sum(axis=1), bary]  # weight of corner 0, 1, 2
    colour = views.color[hit].astype(float)
    dominant = weights.max(axis=1) > 0.8
    assert dominant.sum() > 100
    np.testing.assert_array_equal(colour[dominant].argmax(axis=1), weights[dominant].argmax(axis=1))
    # the colour follows the weights: the shading (light, Fresnel, AgX) is one increasing curve
    # for the three channels of a pixel, so channels order as their corners' weights
    gaps = np.diff(np.sort(weights, axis=1), axis=1).min(axis=1) > 0.05
    assert gaps.sum() > 100
    np.testing.assert_array_equal(np.argsort(colour[gaps], axis=1), np.argsort(weights[gaps], axis=1))
    flat = validate_mesh(vertices, faces, appearance=Appearance(face_colors=corners[:, 0]))
    flat_colour = render_views(flat, geosam2_rig(size=64), outputs=("face_id", "color"), supersample=1).color[hit]
    # red only; green = blue = the white specular reflection
    assert (flat_colour[:, 1] == flat_colour[:, 2]).all() and (flat_colour[:, 0] > flat_colour[:, 1]).all()


def test_cli_through_a_backend_uploads_the_files_colours(tmp_path):
    """`segparts segment FILE --port P`: the backend gets the file's colours (its id is the
    in-process mesh's, which covers them)."""
    from segparts.cli import main
    from segparts.meshio import load_mesh

    tm = trimesh.creation.box()
    tm.visual.face_colors = np.where(np.arange(12)[:, None] < 6, [255, 0, 0, 255], [0, 0, 255, 255]).astype(np.uint8)
    path = tmp_path / "box.ply"
    path.write_bytes(tm.export(file_type="ply"))
    local = load_mesh(path)
    assert local.appearance is not None
    with thread_server(tmp_path) as (server, _client):
        assert (
            main(
                [
                    "segment",
                    str(path),
                    "--port",
                    str(server.port),
                    "--token-file",
                    str(tmp_path / "token"),
                    "--out",
                    str(tmp_path / "labels.npy"),
                    "--quiet",
                ]
            )
            == 0
        )
        remote = server._cache.get(("mesh", local.content_hash))
        assert remote is not None and remote.appearance is not None
        np.testing.assert_array_equal(remote.appearance.face_colors, local.appearance.face_colors)
