"""Image encodings the learned models were trained with (numpy / torch, no torchvision).

GeoSAM2 (release): world normals encoded (n + 1) / 2 as 8-bit RGB, composited on white by the
coverage alpha, then ImageNet mean/std normalised; the point map is world positions clipped to
[-1, 1] with background 0 and no further normalisation.
"""

from __future__ import annotations

import numpy as np

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def normal_map_rgb(normal: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) normals + (N, H, W) alpha -> (N, H, W, 3) uint8 (n + 1) / 2 on white."""
    a = alpha.reshape(-1)
    n = normal.reshape(-1, 3)
    out = np.full((len(a), 3), 255, dtype=np.uint8)
    cover = np.flatnonzero(a > 0)  # only covered pixels differ from white
    rgb8 = np.clip(np.rint((n[cover].astype(np.float32) + 1.0) * 127.5), 0, 255)
    ac = a[cover, None].astype(np.float32)
    out[cover] = np.clip(np.rint(rgb8 * ac + 255.0 * (1.0 - ac)), 0, 255).astype(np.uint8)
    return out.reshape(normal.shape)


def imagenet_normalize(rgb_uint8: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 ImageNet-normalised (a 256-entry table per channel)."""
    lut = (np.arange(256, dtype=np.float32)[None, :] / 255.0 - IMAGENET_MEAN[:, None]) / IMAGENET_STD[:, None]
    n, h, w, _ = rgb_uint8.shape
    out = np.empty((n, 3, h, w), dtype=np.float32)
    for c in range(3):
        np.take(lut[c], rgb_uint8[..., c], out=out[:, c])
    return out


def point_map(point: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) world points -> (N, 3, H, W) float32 clipped to [-1, 1], background 0."""
    n, h, w, _ = point.shape
    out = np.empty((n, 3, h, w), dtype=np.float32)
    bg = alpha <= 0
    for c in range(3):
        np.clip(point[..., c], -1.0, 1.0, out=out[:, c])
        out[:, c][bg] = 0.0
    return out


def _channel_planes(n_views: int, hw: int, fill) -> np.ndarray:
    """(N, 3, H*W) float32 planes, each channel filled with its background value."""
    out = np.empty((n_views, 3, hw), dtype=np.float32)
    for c in range(3):
        out[:, c].fill(fill[c])
    return out


def geosam2_inputs(views, as_torch: bool | None = None):
    """GeoSAM2's two image inputs from rendered `Views` (normal, point and alpha needed):
    (normal map (N, 3, H, W) ImageNet-normalised, point map (N, 3, H, W) clipped).
    Returned as torch float32 tensors when torch is importable (as_torch None or True),
    numpy otherwise or with as_torch=False.

    Only covered pixels are computed; the rest is the constant background (white, resp. 0)."""
    if views.normal is None or views.point is None:
        raise ValueError("geosam2_inputs needs views rendered with the 'normal' and 'point' outputs")
    n, h, w = views.face_id.shape
    hw = h * w
    alpha = views.alpha if views.alpha is not None else (views.face_id >= 0).astype(np.float32)
    a = alpha.reshape(-1)
    cover = np.flatnonzero(a > 0)
    # flat index of each covered pixel in channel 0 of an (N, 3, H*W) array
    base = (cover // hw) * (3 * hw) + cover % hw

    lut = (np.arange(256, dtype=np.float32)[None, :] / 255.0 - IMAGENET_MEAN[:, None]) / IMAGENET_STD[:, None]
    normal = _channel_planes(n, hw, lut[:, 255])
    rgb8 = np.rint((views.normal.reshape(-1, 3)[cover] + 1.0) * 127.5)
    ac = a[cover]
    if (ac < 1.0).any():  # partial coverage: composite the 8-bit colour on white
        rgb8 = np.rint(rgb8 * ac[:, None] + 255.0 * (1.0 - ac[:, None]))
    idx = np.clip(rgb8, 0, 255).astype(np.intp)
    flat = normal.reshape(-1)
    for c in range(3):
        flat[base + c * hw] = lut[c][idx[:, c]]

    points = np.zeros((n, 3, hw), dtype=np.float32)
    p = np.clip(views.point.reshape(-1, 3)[cover], -1.0, 1.0)
    flat = points.reshape(-1)
    for c in range(3):
        flat[base + c * hw] = p[:, c]
    normal = normal.reshape(n, 3, h, w)
    points = points.reshape(n, 3, h, w)
    if as_torch is False:
        return normal, points
    try:
        import torch
    except ImportError:
        if as_torch:
            raise
        return normal, points
    return torch.from_numpy(normal), torch.from_numpy(points)
