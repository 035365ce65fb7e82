"""The add-on sends what the user sees (material colours, image textures with UVs, colour
attributes) and the mesh in world orientation; the backend computes the same mesh id, which
covers every appearance array, so they went over the wire."""

from __future__ import annotations

import numpy as np
import pytest

from blender_env import bpy, sub
from blender_meshes import boxes_object


def principled(name: str, rgba=(0.8, 0.8, 0.8, 1.0)):
    mat = bpy.data.materials.new(name)
    bsdf = next(n for n in mat.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    bsdf.inputs["Base Color"].default_value = rgba
    return mat, bsdf


def textured(name: str, image):
    mat, bsdf = principled(name)
    node = mat.node_tree.nodes.new("ShaderNodeTexImage")
    node.image = image
    mat.node_tree.links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
    return mat


def image_from(rgb: np.ndarray, name: str):
    """A byte image whose display colours are `rgb` (h, w, 3) uint8, row 0 = top."""
    h, w = rgb.shape[:2]
    image = bpy.data.images.new(name, w, h)
    rgba = np.concatenate([rgb, np.full((h, w, 1), 255, np.uint8)], axis=2)[::-1]  # Blender: bottom row first
    image.pixels.foreach_set((rgba.astype(np.float32) / 255.0).ravel())
    return image


def polygon_uv(obj, poly_uv: np.ndarray):
    """A UV map giving every corner of polygon p the UV poly_uv[p]."""
    mesh = obj.data
    layer = mesh.uv_layers.new(name="UVMap")
    totals = np.array([p.loop_total for p in mesh.polygons])
    layer.uv.foreach_set("vector", np.repeat(poly_uv, totals, axis=0).astype(np.float32).ravel())
    mesh.uv_layers.active = layer


def loop_table(mesh):
    """(polygon, vertex) -> loop, the reference for which corner a triangle corner is."""
    n = len(mesh.loops)
    vert = np.empty(n, np.int32)
    mesh.loops.foreach_get("vertex_index", vert)
    totals = np.array([p.loop_total for p in mesh.polygons])
    poly = np.repeat(np.arange(len(mesh.polygons)), totals)
    return {(int(p), int(v)): i for i, (p, v) in enumerate(zip(poly, vert))}


def segment_and_check_id(runtime, obj, arrays):
    client = sub(runtime, "_shared.client")
    bpy.context.view_layer.objects.active = obj
    assert bpy.ops.segparts.segment() == {"FINISHED"}
    runtime.run_until_idle(timeout=60)
    assert "part_id" in obj.data.attributes, runtime.message()
    # the backend hashed what it received: equal ids mean every array went over the wire as made here
    assert obj.segparts.mesh_id == client.mesh_id(arrays.vertices, arrays.faces, arrays.cues, arrays.appearance)
    assert obj.segparts.mesh_id != client.mesh_id(arrays.vertices, arrays.faces, arrays.cues)


def test_material_base_colours_become_face_colours(runtime, backend):
    obj = boxes_object()
    red, _ = principled("Red", (1.0, 0.0, 0.0, 1.0))
    blue, _ = principled("Blue", (0.0, 0.0, 1.0, 1.0))
    viewport = bpy.data.materials.new("Viewport")  # no Principled BSDF: its viewport colour
    viewport.node_tree.nodes.remove(next(n for n in viewport.node_tree.nodes if n.type == "BSDF_PRINCIPLED"))
    viewport.diffuse_color = (0.0, 1.0, 0.0, 1.0)
    for mat in (red, blue, viewport):
        obj.data.materials.append(mat)
    n = len(obj.data.polygons)
    user = (np.arange(n) % 3).astype(np.int32)
    obj.data.polygons.foreach_set("material_index", user)
    arrays = sub(runtime, "mesh_io").mesh_arrays(obj)
    assert set(arrays.appearance) == {"face_colors"}
    expected = np.array([[255, 0, 0], [0, 0, 255], [0, 255, 0]], np.uint8)[user[arrays.tri_poly]]
    np.testing.assert_array_equal(arrays.appearance["face_colors"], expected)
    segment_and_check_id(runtime, obj, arrays)
    # under the part preview the faces show preview materials; the colours stay the user's
    again = sub(runtime, "mesh_io").mesh_arrays(obj)
    np.testing.assert_array_equal(again.appearance["face_colors"], expected)


def test_plain_grey_materials_send_nothing(runtime):
    obj = boxes_object()
    obj.data.materials.append(principled("GreyA")[0])
    obj.data.materials.append(principled("GreyB")[0])
    obj.data.polygons.foreach_set("material_index", (np.arange(len(obj.data.polygons)) % 2).astype(np.int32))
    assert sub(runtime, "mesh_io").mesh_arrays(obj).appearance == {}


def test_the_part_preview_is_not_what_the_user_sees(runtime, backend):
    """After a segmentation the faces show the preview's part colours; the object still looks grey
    to the backend, so its id stays that of the segmented mesh (picks find the segmentation)."""
    obj = boxes_object()
    arrays = sub(runtime, "mesh_io").mesh_arrays(obj)
    assert arrays.appearance == {}
    bpy.context.view_layer.objects.active = obj
    assert bpy.ops.segparts.segment() == {"FINISHED"}
    runtime.run_until_idle(timeout=60)
    assert len(obj.data.materials) > 1, runtime.message()  # the preview's materials
    assert sub(runtime, "mesh_io").mesh_arrays(obj).appearance == {}


def sample(looks: dict) -> np.ndarray:
    """The colour at each triangle's centroid UV, sampled as the backend's renderer does (nearest
    texel, repeating; segparts itself is not imported into Blender's process)."""
    st = looks["uv"].astype(np.float64).mean(axis=1)
    texture = looks["texture"]
    h, w = texture.shape[:2]
    x = np.mod(np.floor(st[:, 0] * w), w).astype(int)
    y = np.mod(np.floor((1.0 - st[:, 1]) * h), h).astype(int)
    return texture[y, x, :3]


def pixel_centres(rng, n: int, h: int, w: int):
    ij = np.c_[rng.integers(0, h, n), rng.integers(0, w, n)]
    return ij, np.c_[(ij[:, 1] + 0.5) / w, 1.0 - (ij[:, 0] + 0.5) / h]  # (row, col), (u, v)


def test_an_image_texture_is_sent_with_its_uvs(runtime, backend):
    rng = np.random.default_rng(3)
    rgb = rng.integers(0, 256, (4, 8, 3)).astype(np.uint8)
    obj = boxes_object()
    obj.data.materials.append(textured("Painted", image_from(rgb, "paint")))
    n = len(obj.data.polygons)
    ij, uv = pixel_centres(rng, n, 4, 8)
    polygon_uv(obj, uv + rng.integers(-2, 3, (n, 1)))  # whole tiles away: the texture repeats
    arrays = sub(runtime, "mesh_io").mesh_arrays(obj)
    looks = arrays.appearance
    assert set(looks) == {"uv", "texture"} and looks["uv"].shape == (len(arrays.faces), 3, 2)
    np.testing.assert_array_equal(looks["texture"][..., :3], rgb)
    np.testing.assert_array_equal(sample(looks), rgb[ij[:, 0], ij[:, 1]][arrays.tri_poly])
    segment_and_check_id(runtime, obj, arrays)


def test_several_textured_materials_share_one_atlas(runtime):
    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (8, 8, 3)).astype(np.uint8) for _ in range(2)]
    obj = boxes_object()
    for k, rgb in enumerate(images):
        obj.data.materials.append(textured(f"T{k}", image_from(rgb, f"img{k}")))
    obj.data.materials.append(principled("Plain", (0.0, 1.0, 0.0, 1.0))[0])
    n = len(obj.data.polygons)
    material = (np.arange(n) % 3).astype(np.int32)
    obj.data.polygons.foreach_set("material_index", material)
    ij, uv = pixel_centres(rng, n, 8, 8)
    polygon_uv(obj, uv + rng.integers(-1, 2, (n, 1)))
    arrays = sub(runtime, "mesh_io").mesh_arrays(obj)
    looks = arrays.appearance
    assert set(looks) == {"uv", "texture"} and max(looks["texture"].shape[:2]) <= 2048
    got = sample(looks)
    stack = np.stack(images + [np.zeros_like(images[0])])
    stack[2] = [0, 255, 0]  # the plain material: a solid tile of its colour
    want = stack[material, ij[:, 0], ij[:, 1]][arrays.tri_poly]
    np.testing.assert_array_equal(got, want)


def test_images_are_read_once_until_they_change(runtime, tmp_path):
    from PIL import Image

    appearance = sub(runtime, "appearance")
    path = tmp_path / "tex.png"
    Image.fromarray(np.full((4, 4, 3), 200, np.uint8)).save(path)
    image = bpy.data.images.load(str(path))
    first = appearance.image_pixels(image)
    assert first is not None and (first[..., :3] == 200).all()
    assert appearance.image_pixels(image) is first  # cached: not read again
    Image.fromarray(np.full((4, 4, 3), 10, np.uint8)).save(path)
    import os

    os.utime(path, (1, 1))  # a new modification time, as an edit outside Blender gives
    image.reload()
    assert (appearance.image_pixels(image)[..., :3] == 10).all()
    blank = bpy.data.images.new("blank", 8, 4)  # generated, never edited: its settings identify it
    pixels = appearance.image_pixels(blank)
    assert pixels.shape == (4, 8, 4) and (pixels[..., :3] == 0).all() and appearance.image_pixels(blank) is pixels
    painted = image_from(np.full((4, 8, 3), 50, np.uint8), "painted")  # unsaved edits: read each time
    assert appearance.image_pixels(painted) is not appearance.image_pixels(painted)


@pytest.mark.parametrize(
    "domain, data_type",
    [("CORNER", "BYTE_COLOR"), ("POINT", "BYTE_COLOR"), ("CORNER", "FLOAT_COLOR"), ("POINT", "FLOAT_COLOR")],
)
def test_the_active_colour_attribute_is_sent(runtime, domain, data_type):
    obj = boxes_object()
    mesh = obj.data
    mesh.color_attributes.new("Other", "BYTE_COLOR", "POINT")  # not the active one
    attr = mesh.color_attributes.new("Paint", data_type, domain)
    mesh.color_attributes.active_color = attr
    rng = np.random.default_rng(5)
    colours = rng.integers(0, 256, (len(attr.data), 4)).astype(np.uint8)
    attr.data.foreach_set("color_srgb", (colours / 255.0).astype(np.float32).ravel())
    arrays = sub(runtime, "mesh_io").mesh_arrays(obj)
    # float attributes hold linear values: back to display values within one level
    tolerance = 0 if data_type == "BYTE_COLOR" else 1
    if domain == "POINT":
        assert set(arrays.appearance) == {"vertex_colors"}
        np.testing.assert_allclose(arrays.appearance["vertex_colors"], colours[:, :3], atol=tolerance)
        return
    assert set(arrays.appearance) == {"corner_colors"}
    check_corner_colours(mesh, arrays, colours[:, :3], tolerance)


def test_corner_colours_follow_ngon_triangles(runtime):
    """Polygons of more than 4 corners are split by Blender's loop triangles: their corners too."""
    angles = np.linspace(0, 2 * np.pi, 7)[:-1]
    ring = np.c_[np.cos(angles), np.sin(angles) * (1 + 0.5 * (np.arange(6) % 2)), np.zeros(6)]  # concave-ish
    verts = np.vstack([ring, ring[:2] + [0, 0, 1], [[3, 0, 0]]])
    mesh = bpy.data.meshes.new("Ngon")
    mesh.from_pydata(verts.tolist(), [], [list(range(6)), [0, 1, 7, 6], [0, 8, 1]])
    obj = bpy.data.objects.new("Ngon", mesh)
    bpy.context.scene.collection.objects.link(obj)
    attr = mesh.color_attributes.new("Paint", "BYTE_COLOR", "CORNER")
    mesh.color_attributes.active_color = attr
    colours = np.random.default_rng(7).integers(0, 256, (len(attr.data), 4)).astype(np.uint8)
    attr.data.foreach_set("color_srgb", (colours / 255.0).astype(np.float32).ravel())
    arrays = sub(runtime, "mesh_io").mesh_arrays(obj)
    assert len(arrays.faces) == 4 + 2 + 1
    check_corner_colours(mesh, arrays, colours[:, :3])


def check_corner_colours(mesh, arrays, loop_colours, tolerance=0):
    """Each triangle corner carries the colour of its polygon's loop at that vertex."""
    table = loop_table(mesh)
    loops = np.array([[table[(int(p), int(v))] for v in tri] for p, tri in zip(arrays.tri_poly, arrays.faces)])
    np.testing.assert_allclose(arrays.appearance["corner_colors"], loop_colours[loops], atol=tolerance)


def signed_volume(vertices, faces) -> float:
    tri = vertices[faces]
    return float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0)


def test_a_rotated_mirrored_object_is_sent_in_world_orientation(runtime, backend):
    obj = boxes_object(with_tris=False)  # closed boxes: the signed volume tells the winding
    mesh = obj.data
    attr = mesh.color_attributes.new("Paint", "BYTE_COLOR", "CORNER")
    mesh.color_attributes.active_color = attr
    colours = np.random.default_rng(6).integers(0, 256, (len(attr.data), 4)).astype(np.uint8)
    attr.data.foreach_set("color_srgb", (colours / 255.0).astype(np.float32).ravel())
    obj.rotation_euler = (0.3, -0.5, 1.2)
    obj.scale = (1.5, -2.0, 0.5)  # a mirror
    obj.location = (3.0, -4.0, 5.0)  # not sent: the backend centres the mesh
    bpy.context.view_layer.update()
    mesh_io = sub(runtime, "mesh_io")
    local = mesh_io.vertices(mesh)
    tris, _ = mesh_io.triangles(mesh)
    arrays = mesh_io.mesh_arrays(obj)
    linear = np.array(obj.matrix_world)[:3, :3]
    np.testing.assert_allclose(arrays.vertices, local @ linear.T, atol=1e-9)
    np.testing.assert_array_equal(arrays.faces, tris[:, [0, 2, 1]])  # winding flipped
    assert signed_volume(local, tris) > 0  # outward in object space ...
    np.testing.assert_allclose(
        signed_volume(arrays.vertices, arrays.faces), abs(np.linalg.det(linear)) * signed_volume(local, tris)
    )  # ... and uploaded
    check_corner_colours(mesh, arrays, colours[:, :3])  # colours swapped with their corners
    segment_and_check_id(runtime, obj, arrays)


@pytest.mark.parametrize("smooth", [False, True])
def test_shading_normals_follow_the_object_for_rendering_engines(runtime, smooth):
    """Engines that render get Blender's own corner normals, turned with the mesh (inverse
    transpose, mirror included): flat faces show their face normal, smooth ones blend."""
    obj = boxes_object(with_tris=False)
    obj.data.shade_smooth() if smooth else obj.data.shade_flat()
    obj.rotation_euler = (0.4, 0.2, -0.9)
    obj.scale = (2.0, -0.5, 1.0)  # non-uniform and mirroring
    bpy.context.view_layer.update()
    mesh_io = sub(runtime, "mesh_io")
    assert "normals" not in mesh_io.mesh_arrays(obj).appearance  # the geometric engine renders nothing
    arrays = mesh_io.mesh_arrays(obj, normals=True)
    normals = arrays.appearance["normals"]
    assert normals.shape == (len(arrays.faces), 3, 3)
    np.testing.assert_allclose(np.linalg.norm(normals, axis=2), 1.0, atol=1e-5)
    tri = arrays.vertices[arrays.faces]
    face = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    face /= np.linalg.norm(face, axis=1, keepdims=True)
    agreement = np.einsum("fck,fk->fc", normals, face)
    if smooth:  # box corners blend three faces: never the face normal, still on its side
        assert (agreement > 0.1).all() and (agreement < 0.99).all()
    else:  # outward face normals of the uploaded (turned, re-wound) triangles
        np.testing.assert_allclose(agreement, 1.0, atol=1e-4)
