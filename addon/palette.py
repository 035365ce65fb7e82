"""Distinct, stable preview colours for parts (no bpy).

Part k always gets the same colour, neighbouring ids get far-apart hues (golden-ratio steps), and
saturation/value alternate so that even 100+ parts stay tellable apart in a Workbench render.
"""

from __future__ import annotations

import colorsys

GOLDEN = 0.618033988749895
_SAT = (0.75, 0.55, 0.9)
_VAL = (0.95, 0.8, 0.65)


def part_colour(part_id: int) -> tuple[float, float, float, float]:
    """RGBA in 0..1 (sRGB-ish display colour) for a part id >= 0."""
    k = int(part_id)
    hue = (0.11 + k * GOLDEN) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, _SAT[k % 3], _VAL[(k // 3) % 3])
    return (r, g, b, 1.0)


def part_colours(n: int) -> list[tuple[float, float, float, float]]:
    return [part_colour(k) for k in range(n)]


def part_name(part_id: int) -> str:
    """Name shared by the vertex group, the preview material and the list entry of a part."""
    return f"Part_{int(part_id):03d}"
