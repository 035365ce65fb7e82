"""Part colours of the backend's outputs (coloured .ply/.glb, batch previews, debug renders): the
same colours as the add-on's preview (`addon/palette.py`, pinned to this by a test), so a file
written here looks like the object in Blender.

Part k always gets the same colour, neighbouring ids get far-apart hues (golden-ratio steps), and
saturation/value alternate so that even 100+ parts stay tellable apart.
"""

from __future__ import annotations

import numpy as np

GOLDEN = 0.618033988749895
HUE_OFFSET = 0.11
SATURATIONS = (0.75, 0.55, 0.9)
VALUES = (0.95, 0.8, 0.65)
UNLABELLED_GREY = 0.5


def part_rgb(part_ids) -> np.ndarray:
    """(..., 3) float RGB in [0, 1] of part ids >= 0."""
    k = np.asarray(part_ids, dtype=np.int64)
    hue = (HUE_OFFSET + k * GOLDEN) % 1.0
    sat = np.asarray(SATURATIONS)[k % 3]
    val = np.asarray(VALUES)[(k // 3) % 3]
    return _hsv_to_rgb(hue, sat, val)


def part_colours(labels) -> np.ndarray:
    """(..., 4) uint8 RGBA per label, grey for negative (unlabelled) ones."""
    labels = np.asarray(labels, dtype=np.int64)
    rgb = part_rgb(np.maximum(labels, 0))
    rgb[labels < 0] = UNLABELLED_GREY
    rgba = np.empty(labels.shape + (4,), np.uint8)
    rgba[..., :3] = np.round(rgb * 255)
    rgba[..., 3] = 255
    return rgba


def _hsv_to_rgb(h, s, v):
    """colorsys.hsv_to_rgb over arrays of the same shape."""
    i = np.floor(h * 6).astype(np.int64) % 6
    f = h * 6 - np.floor(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    table = np.stack(
        [np.stack(c, -1) for c in ((v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q))]
    )  # (6, ..., 3)
    return np.take_along_axis(table, i[None, ..., None], axis=0)[0]
