"""What the user sees, as upload_mesh appearance arrays; numpy only (addon/appearance.py reads
Blender and calls these).

Per material the add-on knows a `MaterialLook`: a display colour and maybe a base-colour image.
`compose` turns them (plus the triangles' materials, the active UV map and the active colour
attribute) into the arrays of docs/protocol.md:
- any used material with an image and a UV map -> `uv` + `texture`; one such material covering
  everything sends its image with the UVs as they are, several (or a mix with plain materials)
  are packed into one atlas: a grid of equal cells, a solid cell per plain material, UVs wrapped
  per triangle and mapped into their material's cell;
- else material colours that differ (or are not grey) -> `face_colors`, unless a material takes
  its base colour from a colour attribute;
- else the active colour attribute -> `vertex_colors` (POINT) or `corner_colors` (CORNER);
- nothing for a plain grey mesh (its id stays the geometry-only id).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

MAX_TEXTURE_SIDE = 2048  # the add-on's limit per side (the backend accepts up to 4096)
DEFAULT_COLOR = (0.8, 0.8, 0.8, 1.0)  # Blender's default material base colour (scene linear)


@dataclass
class MaterialLook:
    color: np.ndarray  # (4,) display (sRGB) colour in [0, 1]
    image: np.ndarray | None = None  # (h, w, 4) uint8, row 0 = top: the base-colour texture
    uses_attribute: bool = False  # the base colour comes from a colour attribute node


def linear_to_srgb(x) -> np.ndarray:
    """Scene-linear -> display (sRGB) values, the transfer function of the sRGB standard."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)


def to_u8(x) -> np.ndarray:
    """Colours in [0, 1] -> 0..255 (uint8 input is returned as it is)."""
    x = np.asarray(x)
    if x.dtype == np.uint8:
        return x
    return np.round(np.clip(x.astype(np.float32, copy=False), 0.0, 1.0) * np.float32(255.0)).astype(np.uint8)


def downscale(image: np.ndarray, max_side: int = MAX_TEXTURE_SIDE) -> np.ndarray:
    """Average k x k blocks (k the smallest integer that brings both sides to <= max_side);
    edge rows/columns that do not fill a block are dropped. Same dtype kind back."""
    h, w = image.shape[:2]
    k = int(np.ceil(max(h, w) / max_side))
    if k <= 1:
        return image
    hh, ww = max(h // k, 1) * k, max(w // k, 1) * k
    cropped = image[:hh, :ww].astype(np.float32)
    if hh > h or ww > w:  # a side shorter than one block: repeat the edge
        cropped = np.pad(cropped, ((0, max(hh - h, 0)), (0, max(ww - w, 0)), (0, 0)), mode="edge")
    blocks = cropped.reshape(hh // k, k, ww // k, k, -1).mean(axis=(1, 3))
    return np.round(blocks).astype(image.dtype) if image.dtype == np.uint8 else blocks.astype(image.dtype)


def resize_nearest(image: np.ndarray, h: int, w: int) -> np.ndarray:
    ys = (np.arange(h) * image.shape[0]) // h
    xs = (np.arange(w) * image.shape[1]) // w
    return image[ys[:, None], xs[None, :]]


def is_plain(colors: np.ndarray) -> bool:
    """One colour everywhere, and it is grey: rendering it says nothing the grey default does not."""
    colors = np.asarray(colors)[:, :3]
    if len(colors) == 0:
        return True
    first = colors[0]
    return bool((colors == first).all() and first[0] == first[1] == first[2])


def is_uniform(colors: np.ndarray) -> bool:
    colors = np.asarray(colors).reshape(-1, np.asarray(colors).shape[-1])
    return len(colors) == 0 or bool((colors == colors[0]).all())


def wrap_per_triangle(uv: np.ndarray) -> np.ndarray:
    """UVs shifted by whole tiles so each triangle's centroid lies in [0, 1) (the triangle stays in
    one piece and its centre samples the right texel), then clipped to [0, 1] (a triangle that
    straddles a tile border is squeezed at that border)."""
    shift = np.floor(uv.mean(axis=1, keepdims=True))
    return np.clip(uv - shift, 0.0, 1.0)


@dataclass
class Atlas:
    image: np.ndarray  # (H, W, 4) uint8
    cols: int
    rows: int
    cell: int

    def remap(self, uv: np.ndarray, tile: np.ndarray) -> np.ndarray:
        """(T, 3, 2) UVs of triangles whose material sits in cell `tile` (T,) -> atlas UVs. Kept
        half a pixel inside the cell, so nearest sampling never reads a neighbour; an image of
        the cell's size is sampled at the same pixels as without the atlas."""
        local = wrap_per_triangle(np.asarray(uv, dtype=np.float64))
        col, row = (tile % self.cols)[:, None], (tile // self.cols)[:, None]
        lo, hi = 0.5, self.cell - 0.5
        x = col * self.cell + np.clip(local[..., 0] * self.cell, lo, hi)  # pixels from the left
        y = row * self.cell + np.clip((1.0 - local[..., 1]) * self.cell, lo, hi)  # pixels from the top
        h, w = self.image.shape[:2]
        return np.stack([x / w, 1.0 - y / h], axis=-1).astype(np.float32)


def pack_atlas(tiles: list[np.ndarray], max_side: int = MAX_TEXTURE_SIDE) -> Atlas:
    """Tiles ((h, w, 4) uint8 images, or (4,) colours for solid cells) in a square-ish grid of
    equal cells, each image resized to its cell."""
    cols = int(np.ceil(np.sqrt(len(tiles))))
    rows = int(np.ceil(len(tiles) / cols))
    biggest = max((max(t.shape[:2]) for t in tiles if t.ndim == 3), default=1)
    cell = max(1, min(max_side // cols, max_side // rows, biggest))
    atlas = np.zeros((rows * cell, cols * cell, 4), dtype=np.uint8)
    for i, tile in enumerate(tiles):
        r, c = divmod(i, cols)
        block = resize_nearest(tile, cell, cell) if tile.ndim == 3 else tile
        atlas[r * cell : (r + 1) * cell, c * cell : (c + 1) * cell] = block
    return Atlas(atlas, cols, rows, cell)


def default_look() -> MaterialLook:
    return MaterialLook(np.append(linear_to_srgb(DEFAULT_COLOR[:3]), 1.0))


def says_nothing(looks: list[MaterialLook | None]) -> bool:
    """Materials that all look the same plain grey (or none at all): without a colour attribute,
    compose would send nothing, whatever the faces use (a shortcut with no per-face work)."""
    table = [look or default_look() for look in looks] + [default_look()]
    if any(look.image is not None or look.uses_attribute for look in table):
        return False
    return is_plain(to_u8(np.array([np.asarray(look.color, dtype=np.float64)[:3] for look in table])))


def compose(
    looks: list[MaterialLook | None],
    tri_material: np.ndarray,
    corner_uv: Callable[[], np.ndarray | None],
    attribute: Callable[[], tuple[str, np.ndarray] | None],
) -> dict[str, np.ndarray]:
    """Appearance arrays (docs/protocol.md) for triangles whose materials are `tri_material`
    (indices into `looks`; out of range or None -> Blender's default grey). `corner_uv()` gives
    the active UV map per triangle corner (T, 3, 2) or None; `attribute()` the active colour
    attribute as (domain "POINT"|"CORNER", sRGB colours (V|T,[3,]3|4), uint8 or in [0, 1]) or None. Both are
    called only when needed: reading them costs time on big meshes."""
    table = [look or default_look() for look in looks] + [default_look()]
    tri_material = np.where((tri_material >= 0) & (tri_material < len(looks)), tri_material, len(looks))
    used = np.flatnonzero(np.bincount(tri_material, minlength=len(table)))
    textured = [int(m) for m in used if table[m].image is not None]
    if textured:
        uv = corner_uv()
        if uv is not None:
            return _textured(table, tri_material, used, uv)
    colors = to_u8(np.array([np.asarray(look.color, dtype=np.float64)[:3] for look in table]))
    plain = is_plain(colors[used])  # judged per material: no per-face work for a grey mesh
    if plain or any(table[m].uses_attribute for m in used):
        found = attribute()
        if found is not None and not is_uniform(found[1]):
            domain, values = found
            return {"vertex_colors" if domain == "POINT" else "corner_colors": to_u8(values[..., :3])}
    return {} if plain else {"face_colors": colors[tri_material]}


def _textured(table, tri_material, used, uv) -> dict[str, np.ndarray]:
    uv = np.asarray(uv, dtype=np.float32)
    if len(used) == 1:  # one textured material everywhere: its image and the UVs as they are
        return {"uv": uv, "texture": table[int(used[0])].image}
    cell_of = np.full(len(table), -1, dtype=np.int64)
    tiles: list[np.ndarray] = []
    for m in used:
        look = table[int(m)]
        cell_of[m] = len(tiles)
        tiles.append(look.image if look.image is not None else to_u8(look.color[:4]))
    atlas = pack_atlas(tiles)
    tile = cell_of[tri_material]
    solid = np.array([table[int(m)].image is None for m in range(len(table))])[tri_material]
    uv = np.where(solid[:, None, None], np.float32(0.5), uv)  # solid cells: any point inside
    return {"uv": atlas.remap(uv, tile), "texture": atlas.image}
