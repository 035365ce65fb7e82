"""Authoring cues (per-face material and group ids) from every reader, on the wire and in the
mesh id; the glTF up axis; coordinates too large to normalise."""

from __future__ import annotations

import numpy as np
import pytest
import trimesh

from backend_fixtures import thread_server
from segparts.appearance import wire_arrays
from segparts.client import BackendError, mesh_id
from segparts.mesh import MeshError, validate_mesh
from segparts.meshio import load_mesh, y_up_to_z_up

SQUARE = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 1]], float)


def obj_reference(lines: list[str]):
    """Per-polygon material and group keys by the plain reading of the OBJ rules."""
    material, obj, group, out = None, "", "", []
    for ln in lines:
        tag, _, rest = ln.partition(" ")
        if tag == "usemtl":
            material = rest.strip()
        elif tag == "o":
            obj = rest.strip()
        elif tag == "g":
            group = rest.strip()
        elif tag == "f":
            out.append((material, (obj, group), len(rest.split())))
    return out


def same_partition(a, b) -> bool:
    """Equal up to renaming the ids."""
    a, b = np.asarray(a), np.asarray(b)
    pairs = np.unique(np.column_stack([a, b]), axis=0)
    return len(pairs) == len(np.unique(a)) == len(np.unique(b))


def test_obj_materials_and_groups_follow_the_records_in_force(tmp_path):
    rng = np.random.default_rng(3)
    lines = [f"v {x} {y} {z}" for x, y, z in rng.normal(size=(30, 3)).round(3)]
    for i in range(60):
        if i % 7 == 0:
            lines.append(f"usemtl mat{rng.integers(4)}")
        if i % 11 == 5:
            lines.append(f"o obj{rng.integers(3)}")
        if i % 5 == 2:
            lines.append(f"g grp{rng.integers(2)}")
        k = 3 + i % 3  # triangles, quads and pentagons: cues are spread to the triangles
        lines.append("f " + " ".join(str(v + 1) for v in rng.choice(30, k, replace=False)))
    path = tmp_path / "cues.obj"
    path.write_text("\n".join(lines) + "\n")
    mesh = load_mesh(path)
    ref = obj_reference(lines)
    per_triangle = [r for r in ref for _ in range(r[2] - 2)]
    assert mesh.n_faces == len(per_triangle)
    assert same_partition(mesh.material, [str(r[0]) for r in per_triangle])
    assert same_partition(mesh.group, ["/".join(r[1]) for r in per_triangle])
    # a plain OBJ carries no cue, and its id is the geometry's alone
    plain = tmp_path / "plain.obj"
    plain.write_text("\n".join(ln for ln in lines if ln[0] in "vf") + "\n")
    bare = load_mesh(plain)
    assert bare.material is None and bare.group is None and bare.cues == {}
    assert bare.content_hash == mesh_id(bare.vertices, bare.faces) != mesh.content_hash


@pytest.mark.parametrize("binary", [False, True])
def test_ply_face_properties_become_cues(tmp_path, binary):
    faces = np.array([[0, 1, 2], [0, 2, 3], [0, 1, 4], [1, 2, 4]])
    material, group = np.array([7, 7, 2, 9]), np.array([0, 1, 1, 0])
    header = [
        "ply",
        f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
        "element vertex 5",
        "property float x",
        "property float y",
        "property float z",
        "element face 4",
        "property list uchar int vertex_indices",
        "property int material_index",
        "property uchar group",
        "end_header",
    ]
    path = tmp_path / "cues.ply"
    if binary:
        body = SQUARE.astype("<f4").tobytes() + b"".join(
            np.uint8(3).tobytes() + f.astype("<i4").tobytes() + np.int32(m).tobytes() + np.uint8(g).tobytes()
            for f, m, g in zip(faces, material, group)
        )
        path.write_bytes(("\n".join(header) + "\n").encode() + body)
    else:
        rows = [" ".join(map(str, v)) for v in SQUARE] + [
            f"3 {' '.join(map(str, f))} {m} {g}" for f, m, g in zip(faces, material, group)
        ]
        path.write_text("\n".join(header + rows) + "\n")
    mesh = load_mesh(path)
    np.testing.assert_array_equal(mesh.material, material)
    np.testing.assert_array_equal(mesh.group, group)


def test_gltf_materials_shared_by_nodes_and_one_group_per_node(tmp_path):
    red = trimesh.visual.material.PBRMaterial(name="red", baseColorFactor=[255, 0, 0, 255])
    blue = trimesh.visual.material.PBRMaterial(name="blue", baseColorFactor=[0, 0, 255, 255])
    scene = trimesh.Scene()
    for i, material in enumerate([red, blue, red]):
        box = trimesh.creation.box()
        box.visual = trimesh.visual.TextureVisuals(material=material)
        scene.add_geometry(
            box,
            node_name=f"n{i}",
            geom_name=f"g{i}",
            transform=trimesh.transformations.translation_matrix([3 * i, 0, 0]),
        )
    path = tmp_path / "parts.glb"
    path.write_bytes(scene.export(file_type="glb"))
    mesh = load_mesh(path)
    node = np.repeat(np.arange(3), 12)
    np.testing.assert_array_equal(mesh.group, node)
    np.testing.assert_array_equal(mesh.material, np.array([0, 1, 0])[node])  # red nodes share an id
    # Y-up glTF is turned Z-up as Blender's importer does; up_axis="z" keeps the stored coordinates
    stored = load_mesh(path, up_axis="z")
    np.testing.assert_allclose(mesh.vertices, y_up_to_z_up(stored.vertices))
    assert mesh.vertices[:, 2].max() == pytest.approx(0.5) and mesh.vertices[:, 1].min() == pytest.approx(-0.5)


def test_up_axis_option(tmp_path):
    path = tmp_path / "m.obj"
    path.write_text("v 0 1 0\nv 1 0 0\nv 0 0 2\nf 1 2 3\n")
    np.testing.assert_array_equal(load_mesh(path).vertices, [[0, 1, 0], [1, 0, 0], [0, 0, 2]])
    np.testing.assert_array_equal(load_mesh(path, up_axis="y").vertices, [[0, 0, 1], [1, 0, 0], [0, -2, 0]])
    with pytest.raises(MeshError, match="up axis"):
        load_mesh(path, up_axis="x")


def test_stl_and_off_carry_no_cues(tmp_path):
    box = trimesh.creation.box()
    for suffix in ("stl", "off"):
        path = tmp_path / f"b.{suffix}"
        path.write_bytes(box.export(file_type=suffix).encode() if suffix == "off" else box.export(file_type=suffix))
        assert load_mesh(path).cues == {}


@pytest.mark.parametrize("name", ["material", "group"])
@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros(3, np.int32), "one id per face"),
        (np.zeros(4, np.float32), "integers"),
        (np.array([0, -1, 0, 0]), r"\[0, 2\^31\)"),
    ],
)
def test_bad_cue_arrays_are_refused(name, bad, match):
    with pytest.raises(MeshError, match=match) as err:
        validate_mesh(SQUARE, [[0, 1, 2], [0, 2, 3], [0, 1, 4], [1, 2, 4]], **{name: bad})
    assert err.value.code == f"bad_{name}"


def test_coordinates_beyond_normalisation_are_refused():
    with pytest.raises(MeshError, match="scale the mesh down") as err:
        validate_mesh(SQUARE * 1e300, [[0, 1, 2]])
    assert err.value.code == "coordinates_too_large"


def test_cues_on_the_wire_belong_to_the_mesh_id(tmp_path):
    box = trimesh.creation.box()
    vertices, faces = np.asarray(box.vertices), np.asarray(box.faces)
    material = np.repeat([0, 1], 6).astype(np.int32)
    with thread_server(tmp_path) as (server, client):
        geometry_only = client.upload_mesh(vertices, faces)
        with_cues = client.upload_mesh(vertices, faces, cues={"material": material})
        assert geometry_only == mesh_id(vertices, faces)  # clients that send geometry only: unchanged
        assert with_cues == mesh_id(vertices, faces, {"material": material}) != geometry_only
        assert client.upload_mesh(vertices, faces, cues={"material": material}, check_first=True) == with_cues
        cached = server._cache.get(("mesh", with_cues))
        np.testing.assert_array_equal(cached.material, material)
        assert cached.group is None
        for bad, code in (
            (material[:5], "bad_material"),
            (material.astype(np.float32), "bad_material"),
            (material - 1, "bad_material"),
        ):
            with pytest.raises(BackendError) as err:
                client.upload_mesh(vertices, faces, cues={"material": bad}) if bad.dtype.kind == "i" else client.call(
                    "upload_mesh", {}, {"vertices": vertices, "faces": faces, "material": bad}
                )
            assert err.value.code == code
        # the server is still up and segments the mesh with its cues
        result = client.segment(with_cues)
        assert result.arrays["labels"].shape == (len(faces),)


def test_file_normals_are_read_turned_z_up_and_sent(tmp_path):
    """glTF NORMAL and PLY nx/ny/nz become Appearance.normals (world space, Z-up like the
    vertices), go over the wire, and change the mesh id (they change what the renders show)."""
    box = trimesh.creation.box()
    flat = np.repeat(box.face_normals, 3, axis=0)  # split per corner: every corner its own vertex
    soup = trimesh.Trimesh(
        box.vertices[box.faces].reshape(-1, 3), np.arange(36).reshape(-1, 3), vertex_normals=flat, process=False
    )
    scene = trimesh.Scene()
    turn = trimesh.transformations.rotation_matrix(0.5, [1, 0, 0])
    scene.add_geometry(soup, node_name="n", geom_name="g", transform=turn)
    path = tmp_path / "flat.glb"
    path.write_bytes(scene.export(file_type="glb"))
    mesh = load_mesh(path)
    normals = mesh.appearance.normals
    expected = y_up_to_z_up(flat @ turn[:3, :3].T)
    np.testing.assert_allclose(normals, expected, atol=1e-6)
    # the file's normals are the faces' own (flat), as the vertices say after the same transforms
    tri = mesh.vertices[mesh.faces]
    geometric = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    geometric /= np.linalg.norm(geometric, axis=1, keepdims=True)
    np.testing.assert_allclose(normals[mesh.faces[:, 0]], geometric, atol=1e-6)

    ply = tmp_path / "n.ply"
    header = [
        "ply",
        "format ascii 1.0",
        "element vertex 3",
        "property float x",
        "property float y",
        "property float z",
        "property float nx",
        "property float ny",
        "property float nz",
        "element face 1",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    ply.write_text("\n".join(header + ["0 0 0 0 0 1", "1 0 0 0 0 1", "0 1 0 0 0 1", "3 0 1 2"]) + "\n")
    np.testing.assert_allclose(load_mesh(ply).appearance.normals, [[0, 0, 1]] * 3)

    with thread_server(tmp_path) as (server, client):
        looks = wire_arrays(mesh.appearance, mesh.faces)
        assert "normals" in looks
        unshaded = client.upload_mesh(
            mesh.vertices, mesh.faces, cues=mesh.cues, appearance={k: v for k, v in looks.items() if k != "normals"}
        )
        shaded = client.upload_mesh(mesh.vertices, mesh.faces, cues=mesh.cues, appearance=looks)
        assert shaded == mesh.content_hash != unshaded
        np.testing.assert_allclose(server._cache.get(("mesh", shaded)).appearance.normals, normals, atol=1e-6)
        with pytest.raises(BackendError) as err:
            client.upload_mesh(mesh.vertices, mesh.faces, appearance={"normals": normals[:-1]})
        assert err.value.code == "bad_appearance"


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((4, 2), np.uint8), r"shape \(4, 3\)"),
        (np.zeros((4, 3), np.float32), "0/1 integers or booleans"),
        (np.full((4, 3), 2), "0 or 1"),
    ],
)
def test_bad_marked_edges_are_refused(bad, match):
    with pytest.raises(MeshError, match=match) as err:
        validate_mesh(SQUARE, [[0, 1, 2], [0, 2, 3], [0, 1, 4], [1, 2, 4]], marked_edges=bad)
    assert err.value.code == "bad_marked_edges"


def test_marked_edges_on_the_wire_belong_to_the_mesh_id(tmp_path):
    box = trimesh.creation.box()
    vertices, faces = np.asarray(box.vertices), np.asarray(box.faces)
    marked = np.zeros((len(faces), 3), bool)
    marked[0, 1] = marked[5, 2] = True
    with thread_server(tmp_path) as (server, client):
        geometry_only = client.upload_mesh(vertices, faces)
        with_marks = client.upload_mesh(vertices, faces, cues={"marked_edges": marked})
        assert with_marks == mesh_id(vertices, faces, {"marked_edges": marked}) != geometry_only
        np.testing.assert_array_equal(server._cache.get(("mesh", with_marks)).marked_edges, marked)
        for bad in (marked[:5], marked.astype(np.float32), marked * 3):
            with pytest.raises(BackendError) as err:
                client.call("upload_mesh", {}, {"vertices": vertices, "faces": faces, "marked_edges": bad})
            assert err.value.code == "bad_marked_edges"
        assert client.segment(with_marks).arrays["labels"].shape == (len(faces),)  # still up
