"""What the user sees, read from Blender: material base colours, base-colour image textures with
the active UV map, the active colour attribute. `surface_arrays` gives the upload_mesh appearance
arrays (the choice between them is atlas.compose, without bpy).

Materials are the user's own (under the add-on's part preview their indices are saved in the
face attribute `segparts_material`, see mesh_io.authoring_cues). A material's colour is its
Principled BSDF "Base Color": an Image Texture node upstream of it gives a texture, a Color
Attribute / Attribute node means "the colour attribute", an unlinked socket its value; without a
Principled BSDF, the viewport colour (`diffuse_color`). Colours are sent as display (sRGB)
values. Images are downscaled to at most atlas.MAX_TEXTURE_SIDE and kept by identity (file,
modification time, size...), so segmenting again does not re-read a big image.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict

import numpy as np

from . import atlas
from .partdata import fan_triangles

IMAGE_CACHE_SIZE = 8
_image_cache: OrderedDict = OrderedDict()
ATTRIBUTE_NODES = {"VERTEX_COLOR", "ATTRIBUTE"}
UPSTREAM_LIMIT = 16  # nodes searched behind a Base Color socket


def surface_arrays(obj, topo, tri_poly: np.ndarray) -> dict[str, np.ndarray]:
    """Appearance arrays of `obj`'s ORIGINAL mesh, per triangle of mesh_io.triangles()."""
    from .writeback import USER_SLOTS_PROP, real_material_indices

    mesh = obj.data
    poly_material = real_material_indices(obj)
    user_slots = list(obj.material_slots)[: int(obj.get(USER_SLOTS_PROP, len(obj.material_slots)))]
    looks = [material_look(slot.material) for slot in user_slots]  # never the part preview's
    if mesh.color_attributes.active_color is None and atlas.says_nothing(looks):
        return {}  # a plain grey mesh: no per-face work
    loops = functools.cache(lambda: triangle_loops(mesh, topo))  # only for UVs and corner colours
    return atlas.compose(
        looks, poly_material[tri_poly], lambda: corner_uv(mesh, loops), lambda: active_colors(mesh, loops)
    )


def triangle_loops(mesh, topo) -> np.ndarray:
    """(T, 3) loop (corner) index of each corner of mesh_io.triangles() (same split)."""
    if topo.loop_total.size == 0 or topo.loop_total.max() <= 4:
        return fan_triangles(np.arange(len(topo.corner_verts), dtype=np.int32), topo.loop_total)[0]
    mesh.calc_loop_triangles()
    n = len(mesh.loop_triangles)
    out = np.empty(n * 3, dtype=np.int32)
    mesh.loop_triangles.foreach_get("loops", out)
    return out.reshape(n, 3)


def corner_normals(mesh, tri_loops: np.ndarray) -> np.ndarray:
    """(T, 3, 3) float32 shading normal at each triangle corner, in object space (Blender's
    corner normals: flat faces, smooth faces, sharp edges and custom split normals)."""
    values = np.empty(len(mesh.loops) * 3, dtype=np.float32)
    mesh.corner_normals.foreach_get("vector", values)
    return values.reshape(-1, 3)[tri_loops]


def corner_uv(mesh, tri_loops) -> np.ndarray | None:
    """(T, 3, 2) active UV map at each triangle corner, or None without a UV map.
    `tri_loops()` gives triangle_loops (called only when there is a UV map)."""
    layer = mesh.uv_layers.active
    if layer is None:
        return None
    uv = np.empty(len(mesh.loops) * 2, dtype=np.float32)
    mesh.attributes[layer.name].data.foreach_get("vector", uv)
    return uv.reshape(-1, 2)[tri_loops()]


def active_colors(mesh, tri_loops) -> tuple[str, np.ndarray] | None:
    """The active colour attribute as (domain, sRGB uint8 colours): POINT (V, 3) or CORNER ->
    (T, 3, 3). `tri_loops()` gives triangle_loops (called only for a CORNER attribute). Bytes
    before the gather: a quarter of the memory traffic of floats."""
    attr = mesh.color_attributes.active_color
    if attr is None or attr.domain not in ("POINT", "CORNER"):
        return None
    values = np.empty(len(attr.data) * 4, dtype=np.float32)
    if attr.data_type == "FLOAT_COLOR":  # stored linear: the raw values are a fast contiguous read
        attr.data.foreach_get("color", values)
        values = values.reshape(-1, 4)
        values[:, :3] = atlas.linear_to_srgb(values[:, :3])
    else:  # bytes, stored as display values: color_srgb reads them unconverted
        attr.data.foreach_get("color_srgb", values)
        values = values.reshape(-1, 4)
    rgb = atlas.to_u8(values[:, :3])
    return ("POINT", rgb) if attr.domain == "POINT" else ("CORNER", rgb[tri_loops()])


# ---- materials ------------------------------------------------------------------------------
def material_look(material) -> atlas.MaterialLook | None:
    if material is None:
        return None
    bsdf = _principled(material)
    if bsdf is None or "Base Color" not in bsdf.inputs:
        return atlas.MaterialLook(_display(material.diffuse_color))
    socket = bsdf.inputs["Base Color"]
    look = atlas.MaterialLook(_display(socket.default_value))
    for node in _upstream(socket):
        if node.type == "TEX_IMAGE" and node.image is not None:
            look.image = image_pixels(node.image)
            if look.image is not None:
                return look
        elif node.type in ATTRIBUTE_NODES:
            look.uses_attribute = True
            return look
        elif node.type == "RGB":
            look.color = _display(node.outputs[0].default_value)
            return look
    return look


def _display(linear_rgba) -> np.ndarray:
    rgba = np.asarray(tuple(linear_rgba), dtype=np.float64)
    return np.append(atlas.linear_to_srgb(rgba[:3]), rgba[3] if len(rgba) > 3 else 1.0)


def _principled(material):
    tree = material.node_tree
    if tree is None:
        return None
    nodes = [n for n in tree.nodes if n.type == "BSDF_PRINCIPLED"]
    # prefer the one that feeds the active output
    output = next((n for n in tree.nodes if n.type == "OUTPUT_MATERIAL" and n.is_active_output), None)
    if output is not None and nodes:
        feeding = set(_upstream(output.inputs["Surface"]))
        nodes.sort(key=lambda n: n not in feeding)
    return nodes[0] if nodes else None


def _upstream(socket) -> list:
    """Nodes behind a socket, nearest first (breadth first, a bounded number)."""
    seen, order = set(), []
    frontier = [link.from_node for link in socket.links]
    while frontier and len(order) < UPSTREAM_LIMIT:
        node = frontier.pop(0)
        if node.as_pointer() in seen:
            continue
        seen.add(node.as_pointer())
        order.append(node)
        frontier.extend(link.from_node for s in node.inputs for link in s.links)
    return order


# ---- images ---------------------------------------------------------------------------------
def image_pixels(image) -> np.ndarray | None:
    """(h, w, 4) uint8 display colours, row 0 = top, at most atlas.MAX_TEXTURE_SIDE per side;
    None when the image has no pixels (e.g. a missing file). Cached by image identity."""
    key = _image_key(image)
    if key is not None and key in _image_cache:
        _image_cache.move_to_end(key)
        return _image_cache[key]
    pixels = _read_pixels(image)
    if key is not None and pixels is not None:
        _image_cache[key] = pixels
        while len(_image_cache) > IMAGE_CACHE_SIZE:
            _image_cache.popitem(last=False)
    return pixels


def _image_key(image):
    """What identifies an image's pixels without reading them; None (never cached) while it
    has unsaved edits (painting, pixels set from Python)."""
    if image.is_dirty:
        return None
    stamp = None
    if image.packed_file is not None:
        stamp = ("packed", image.packed_file.size)
    elif image.source == "GENERATED":
        stamp = (
            "generated",
            image.generated_type,
            tuple(image.generated_color),
            image.generated_width,
            image.generated_height,
        )
    else:
        import bpy

        try:
            stamp = ("file", os.path.getmtime(bpy.path.abspath(image.filepath, library=image.library)))
        except OSError:
            stamp = ("missing",)
    return (
        image.session_uid,
        image.name_full,
        image.filepath_raw,
        image.source,
        tuple(image.size),
        image.is_float,
        stamp,
    )


def _read_pixels(image) -> np.ndarray | None:
    w, h = image.size
    channels = image.channels
    if w * h == 0 or channels == 0:
        return None
    buf = np.empty(w * h * channels, dtype=np.float32)
    image.pixels.foreach_get(buf)
    px = buf.reshape(h, w, channels)[::-1]  # Blender's row 0 is the bottom
    if channels < 3:
        px = np.concatenate(
            [np.repeat(px[..., :1], 3, axis=2), px[..., 1:2] if channels == 2 else np.ones((h, w, 1), np.float32)],
            axis=2,
        )
    elif channels == 3:
        px = np.concatenate([px, np.ones((h, w, 1), np.float32)], axis=2)
    px = atlas.downscale(np.ascontiguousarray(px[..., :4]))
    if image.is_float:  # float images hold scene-linear values; byte images display values
        px = np.concatenate([atlas.linear_to_srgb(px[..., :3]), px[..., 3:]], axis=2)
    return atlas.to_u8(px)
