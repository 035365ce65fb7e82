"""Workbench renders of the scene, checked pixel by pixel against the materials the faces point at.

The add-on's colours are only right if Blender is told that the mesh changed: a mesh that was
drawn before keeps its old draw data otherwise. So tests render BEFORE each change (the draw data
exists, as in a real viewport) and after it, and compare every pixel that a face covers with the
colour of that face's material slot (Workbench, material colours, flat light, Standard view: the
pixel is the sRGB encoding of the material's viewport colour).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import bpy
import numpy as np
from mathutils import Vector
from mathutils.bvhtree import BVHTree

SIZE = 64
_OUT = Path(tempfile.mkdtemp(prefix="segparts-render-"))


def top_camera(centre=(1.8, 2.4), scale=8.0, height=30.0):
    """An orthographic camera looking straight down, Workbench showing material colours flat."""
    scene = bpy.context.scene
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.render.resolution_x = scene.render.resolution_y = SIZE
    scene.render.resolution_percentage = 100
    scene.display.shading.color_type = "MATERIAL"
    scene.display.shading.light = "FLAT"
    scene.display.shading.show_shadows = False
    scene.display.shading.show_cavity = False
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    scene.render.film_transparent = True
    cam = bpy.data.objects.new("TopCamera", bpy.data.cameras.new("TopCamera"))
    scene.collection.objects.link(cam)
    cam.data.type, cam.data.ortho_scale = "ORTHO", scale
    cam.location = (centre[0], centre[1], height)
    scene.camera = cam
    return cam


def render() -> np.ndarray:
    """(SIZE, SIZE, 4) RGBA of a Workbench render of the scene, row 0 at the bottom."""
    scene = bpy.context.scene
    path = _OUT / "render.png"
    scene.render.filepath = str(path)
    scene.render.image_settings.file_format = "PNG"
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(str(path))
    try:
        return np.array(image.pixels[:], dtype=np.float32).reshape(SIZE, SIZE, 4)
    finally:
        bpy.data.images.remove(image)


def srgb(linear) -> np.ndarray:
    c = np.clip(np.asarray(linear, dtype=np.float64), 0.0, 1.0)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * c ** (1 / 2.4) - 0.055)


def visible_polygons(obj) -> np.ndarray:
    """(SIZE, SIZE) polygon of the ORIGINAL mesh seen at each pixel centre from the top camera (-1:
    nothing), by ray casting; pixels on a border between two polygons are -1 (antialiasing)."""
    cam = bpy.context.scene.camera
    mesh = obj.data
    verts = [obj.matrix_world @ v.co for v in mesh.vertices]
    bvh = BVHTree.FromPolygons(verts, [list(p.vertices) for p in mesh.polygons])
    half = cam.data.ortho_scale / 2
    out = np.full((SIZE, SIZE), -1, dtype=np.int64)
    for row in range(SIZE):
        for col in range(SIZE):
            x = cam.location.x - half + (col + 0.5) * 2 * half / SIZE
            y = cam.location.y - half + (row + 0.5) * 2 * half / SIZE
            _loc, _n, index, _d = bvh.ray_cast(Vector((x, y, cam.location.z)), Vector((0, 0, -1)))
            out[row, col] = -1 if index is None else index
    inner = out.copy()
    for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)):
        inner[np.roll(np.roll(out, dr, 0), dc, 1) != out] = -1
    inner[[0, -1], :] = inner[:, [0, -1]] = -1
    return inner


def wrong_pixels(obj, image: np.ndarray, seen: np.ndarray, tol: float = 0.04) -> int:
    """How many face pixels do NOT show the colour of their face's material slot."""
    mesh = obj.data
    index = np.array([p.material_index for p in mesh.polygons])
    slots = [m.diffuse_color[:3] if m is not None else (0.8, 0.8, 0.8) for m in mesh.materials] or [(0.8, 0.8, 0.8)]
    colour = srgb(np.array(slots))[np.clip(index, 0, len(slots) - 1)]
    mask = seen >= 0
    expected = colour[seen[mask]]
    got = image[..., :3][mask]
    return int((np.abs(got - expected).max(axis=1) > tol).sum())


def colours_by_part(image: np.ndarray, seen: np.ndarray, labels: np.ndarray) -> dict[int, set]:
    """part -> the set of (rounded) colours its pixels show."""
    out: dict[int, set] = {}
    for poly, rgb in zip(seen[seen >= 0], image[..., :3][seen >= 0]):
        out.setdefault(int(labels[poly]), set()).add(tuple(np.round(rgb, 1)))
    return out
