"""Mesh files keep their face order: every format, polygons -> triangles with a face map."""

from __future__ import annotations

import struct
import warnings
from pathlib import Path

import numpy as np
import pytest
import trimesh

from segparts.mesh import MeshError
from segparts.meshio import load_mesh, save_labels, y_up_to_z_up
from segparts.palette import part_colours

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
RNG = np.random.default_rng(7)
VERTICES = RNG.normal(size=(40, 3)).round(4)
# mixed polygons in a scrambled order: triangles, quads, a pentagon and a hexagon
POLYGONS = [list(RNG.choice(40, size=k, replace=False)) for k in RNG.permutation([3, 4, 3, 5, 3, 4, 6, 3, 4, 3] * 3)]


def fan(polygons):
    """Expected triangles (file order, fan order within a polygon) and their polygon index."""
    tris, owner = [], []
    for i, p in enumerate(polygons):
        for j in range(1, len(p) - 1):
            tris.append([p[0], p[j], p[j + 1]])
            owner.append(i)
    return np.array(tris), np.array(owner)


def assert_same_triangles(mesh, vertices, triangles):
    """Compare by coordinates, so vertex renumbering (merging, unmerging) does not matter."""
    assert mesh.n_faces == len(triangles)
    np.testing.assert_allclose(mesh.vertices[mesh.faces], np.asarray(vertices)[np.asarray(triangles)], atol=1e-6)


def write_obj(path: Path):
    lines = (
        ["# mixed polygons", "mtllib none.mtl"] + [f"v {x} {y} {z}" for x, y, z in VERTICES] + ["vt 0 0", "vn 0 0 1"]
    )
    for i, p in enumerate(POLYGONS):
        if i % 7 == 3:
            lines += [f"o part{i}", f"usemtl m{i % 3}", f"g group{i % 2}"]  # trimesh would regroup on these
        style = i % 4
        toks = [
            str(v + 1)
            if style == 0
            else f"{v + 1}/1"
            if style == 1
            else f"{v + 1}//1"
            if style == 2
            else str(v - len(VERTICES))
            for v in p
        ]  # style 3: negative (relative) indices
        lines.append("f " + " ".join(toks))
    path.write_text("\n".join(lines) + "\n")


def write_off(path: Path):
    lines = ["OFF", "# comment", f"{len(VERTICES)} {len(POLYGONS)} 0"] + [f"{x} {y} {z}" for x, y, z in VERTICES]
    lines += [f"{len(p)} " + " ".join(map(str, p)) + (" 255 0 0" if i % 3 == 0 else "") for i, p in enumerate(POLYGONS)]
    path.write_text("\n".join(lines) + "\n")


def write_ply(path: Path, binary: bool):
    header = [
        "ply",
        f"format {'binary_little_endian' if binary else 'ascii'} 1.0",
        f"element vertex {len(VERTICES)}",
        "property float x",
        "property float y",
        "property float z",
        f"element face {len(POLYGONS)}",
        "property list uchar int vertex_indices",
        "end_header",
    ]
    if not binary:
        body = [f"{x} {y} {z}" for x, y, z in VERTICES] + [f"{len(p)} " + " ".join(map(str, p)) for p in POLYGONS]
        path.write_text("\n".join(header + body) + "\n")
        return
    data = bytearray(("\n".join(header) + "\n").encode())
    data += VERTICES.astype("<f4").tobytes()
    for p in POLYGONS:
        data += struct.pack("<B", len(p)) + np.asarray(p, "<i4").tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("fmt", ["obj", "off", "ply-ascii", "ply-binary"])
def test_polygon_formats_keep_file_order_with_face_map(tmp_path, fmt):
    path = tmp_path / f"m.{fmt.split('-')[0]}"
    {"obj": write_obj, "off": write_off}.get(fmt, lambda p: write_ply(p, fmt == "ply-binary"))(path)
    mesh = load_mesh(path)
    triangles, owner = fan(POLYGONS)
    vertices = VERTICES.astype("<f4").astype(float) if fmt.startswith("ply") else VERTICES
    assert_same_triangles(mesh, vertices, triangles)
    np.testing.assert_array_equal(mesh.face_map, owner)
    assert mesh.n_polygons == len(POLYGONS)
    # labels come out one per polygon of the file
    out = tmp_path / "labels.npy"
    written = save_labels(out, mesh, (owner * 3 + 1).astype(np.int32))
    labels = np.load(out)
    assert labels.dtype == np.int32 and labels.shape == (len(POLYGONS),)
    np.testing.assert_array_equal(labels, np.arange(len(POLYGONS)) * 3 + 1)
    np.testing.assert_array_equal(written, labels)


def test_fan_triangulation_of_ragged_and_square_input():
    from segparts.meshio import _ragged, _triangulate

    triangles, face_map, n = _triangulate(_ragged(POLYGONS))
    expected, expected_map = fan(POLYGONS)
    np.testing.assert_array_equal(triangles, expected)
    np.testing.assert_array_equal(face_map, expected_map)
    quads = np.asarray([p[:4] for p in POLYGONS if len(p) >= 4])
    triangles, face_map, n = _triangulate(quads)
    expected, expected_map = fan(quads.tolist())
    np.testing.assert_array_equal(triangles, expected)
    np.testing.assert_array_equal(face_map, expected_map)
    assert n == len(quads)


def scrambled_triangles():
    base = trimesh.creation.icosphere(2)
    order = RNG.permutation(len(base.faces))
    return trimesh.Trimesh(base.vertices, base.faces[order], process=False)


def test_stl_keeps_facet_order(tmp_path):
    tm = scrambled_triangles()
    for ascii_stl in (False, True):
        path = tmp_path / f"m{ascii_stl}.stl"
        path.write_bytes(
            tm.export(file_type="stl_ascii" if ascii_stl else "stl").encode()
            if ascii_stl
            else tm.export(file_type="stl")
        )
        mesh = load_mesh(path)
        assert mesh.face_map is None
        assert_same_triangles(mesh, tm.vertices, tm.faces)
        assert mesh.n_vertices == len(tm.vertices)  # the triangle soup is welded


def triangle_files_roundtrip(tmp_path):
    tm = scrambled_triangles()
    for suffix in ("obj", "off", "ply"):
        path = tmp_path / f"tri.{suffix}"
        data = tm.export(file_type=suffix)
        path.write_bytes(data if isinstance(data, bytes) else data.encode())
        yield suffix, tm, load_mesh(path)


def test_triangle_only_files_keep_order_without_face_map(tmp_path):
    for suffix, tm, mesh in triangle_files_roundtrip(tmp_path):
        assert mesh.face_map is None, suffix
        assert_same_triangles(mesh, tm.vertices, tm.faces)


def two_node_scene():
    a, b = scrambled_triangles(), trimesh.creation.box()
    scene = trimesh.Scene()
    t1 = trimesh.transformations.rotation_matrix(0.7, [0, 0, 1])
    t1[:3, 3] = [1, 2, 3]
    t2 = trimesh.transformations.scale_matrix(2.0)
    scene.add_geometry(a, node_name="first", geom_name="geom_a", transform=t1)
    scene.add_geometry(b, node_name="second", geom_name="geom_b", transform=t2)
    scene.add_geometry(b, node_name="third", geom_name="geom_b", transform=np.eye(4))  # an instance
    return scene, [(a, t1), (b, t2), (b, np.eye(4))]


@pytest.mark.parametrize("suffix", ["glb", "gltf"])
def test_gltf_scene_concatenated_like_partobjaverse(tmp_path, suffix):
    scene, parts = two_node_scene()
    path = tmp_path / f"scene.{suffix}"
    exported = scene.export(file_type=suffix)
    if isinstance(exported, dict):  # .gltf: the json plus its buffers
        for name, data in exported.items():
            (tmp_path / name).write_bytes(data)
        (tmp_path / "model.gltf").rename(path)
    else:
        path.write_bytes(exported)
    mesh = load_mesh(path, up_axis="z")  # as stored (Y-up), to compare with trimesh
    assert mesh.face_map is None
    # by default glTF turns Z-up as in Blender's importer: (x, y, z) -> (x, -z, y)
    np.testing.assert_array_equal(load_mesh(path).vertices, mesh.vertices[:, [0, 2, 1]] * [1, -1, 1])
    # the PartObjaverse-Tiny reference: trimesh.load(...).dump(concatenate=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        reference = trimesh.load(path).dump(concatenate=True)
    assert_same_triangles(mesh, reference.vertices, reference.faces)
    # and that is every node's geometry, transformed, in scene-graph order
    total = sum(len(g.faces) for g, _ in parts)
    assert mesh.n_faces == total == len(reference.faces)


def test_coloured_outputs_keep_triangle_order(tmp_path):
    path = tmp_path / "m.obj"
    write_obj(path)
    mesh = load_mesh(path)
    labels = (mesh.face_map % 5).astype(np.int32)
    labels[0] = -1
    colours = part_colours(labels)
    assert len(np.unique(colours[labels >= 0], axis=0)) == 5 and (colours[0, :3] == 128).all()
    save_labels(tmp_path / "out.ply", mesh, labels)
    ply = trimesh.load(tmp_path / "out.ply", process=False)
    assert_same_triangles(mesh, ply.vertices, ply.faces)
    np.testing.assert_array_equal(ply.visual.face_colors, colours)
    save_labels(tmp_path / "out.glb", mesh, labels)
    glb = trimesh.load(tmp_path / "out.glb", process=False).to_geometry()
    assert_same_triangles(mesh, y_up_to_z_up(glb.vertices), glb.faces)  # written Y-up, as glTF requires
    np.testing.assert_array_equal(glb.visual.vertex_colors[glb.faces[:, 0]], colours)


def test_vertex_colours_and_odd_spacing_are_ignored(tmp_path):
    obj = tmp_path / "c.obj"
    obj.write_text("v 0 0 0 1 0 0\nv\t1 0 0  0 1 0\nv 0 1 0 0 0 1\nv 1 1 0 1 1 1\nf 1 2 3\nf\t2  4 3 1\r\n")
    off = tmp_path / "c.off"
    off.write_text(
        "COFF 4 2 0\n0 0 0 255 0 0 255\n1 0 0 0 255 0 255\n0 1 0 0 0 255 255\n1 1 0 9 9 9 255\n"
        "3 0 1 2 0.5 0.5 0.5\n4 1 3 2 0\n"
    )
    for path in (obj, off):
        mesh = load_mesh(path)
        np.testing.assert_array_equal(mesh.vertices, [[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0]])
        np.testing.assert_array_equal(mesh.faces, [[0, 1, 2], [1, 3, 2], [1, 2, 0]])
        assert mesh.n_polygons == 2 and list(mesh.face_map) == [0, 1, 1]


@pytest.mark.parametrize(
    "name,content,code",
    [
        ("empty.obj", b"", "empty_mesh"),
        ("nofaces.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\n", "empty_mesh"),
        ("novertices.obj", b"# nothing here\n", "empty_mesh"),
        ("garbage.glb", b"not a glb at all" * 4, "unreadable"),
        (
            "garbage.ply",
            b"ply\nformat binary_little_endian 1.0\nelement vertex 99\nproperty float x\nend_header\n",
            "unreadable",
        ),
        ("truncated.off", b"OFF\n4 2 0\n0 0 0\n1 0 0\n", "unreadable"),
        ("zero.off", b"OFF\n0 0 0\n", "empty_mesh"),
        ("notoff.off", b"PLY\n1 2 3\n", "unreadable"),
        ("badindex.obj", b"v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n", "face_index_out_of_range"),
        ("nan.off", b"OFF\n3 1 0\nnan 0 0\n1 0 0\n0 1 0\n3 0 1 2\n", "non_finite_vertices"),
        ("mesh.xyz", b"1 2 3\n", "unsupported_format"),
    ],
)
def test_unreadable_files_raise_one_clear_line(tmp_path, name, content, code):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(MeshError) as err:
        load_mesh(path)
    assert err.value.code == code, err.value.message
    assert "\n" not in err.value.message and name in err.value.message


def test_missing_file(tmp_path):
    with pytest.raises(MeshError) as err:
        load_mesh(tmp_path / "absent.off")
    assert err.value.code == "unreadable" and "no such file" in err.value.message


def test_princeton_off_matches_trimesh_order():
    folder = SHARED / "benchmarks" / "princeton" / "off"
    if not folder.is_dir():
        pytest.skip(f"benchmark meshes not found at {folder}")
    path = sorted(folder.glob("*.off"))[0]
    mesh = load_mesh(path)
    reference = trimesh.load(path, process=False)
    assert_same_triangles(mesh, reference.vertices, reference.faces)
    assert mesh.n_faces == int(path.read_text().split("\n")[1].split()[1])


def test_file_io_does_not_load_the_renderer(tmp_path):
    """Reading and writing coloured files needs the appearance, not the renderer (a fresh process)."""
    import subprocess
    import sys

    tm = trimesh.creation.box()
    tm.visual.face_colors = np.tile([200, 30, 30, 255], (len(tm.faces), 1)).astype(np.uint8)
    (tmp_path / "box.glb").write_bytes(tm.export(file_type="glb"))
    code = (
        "import sys, numpy as np; from segparts.meshio import load_mesh, save_labels; "
        f"m = load_mesh({str(tmp_path / 'box.glb')!r}); assert m.appearance is not None; "
        f"save_labels({str(tmp_path / 'out.glb')!r}, m, np.zeros(m.n_faces, np.int32)); "
        "print(sorted(k for k in sys.modules if k.startswith('segparts.render')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_exact_welding_of_a_triangle_soup():
    from segparts.meshio import _weld_exact

    rng = np.random.default_rng(3)
    corners = rng.integers(-2, 3, (300, 3)).astype(np.float64)
    corners[rng.random(corners.shape) < 0.3] *= -0.0  # -0.0 and 0.0 are the same position
    vertices, inverse = _weld_exact(corners)
    assert np.array_equal(vertices[inverse], corners)
    assert (
        len({tuple(v) for v in (vertices + 0.0).tolist()})
        == len(vertices)
        == len({tuple(c) for c in (corners + 0.0).tolist()})
    )
    assert [tuple(v) for v in vertices.tolist()] == sorted(tuple(v) for v in vertices.tolist())
    assert _weld_exact(np.zeros((0, 3)))[1].shape == (0,)
