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
    rgb8 = np.clip(np.rint((normal.astype(np.float32) + 1.0) * 0.5 * 255.0), 0, 255)
    a = alpha.astype(np.float32)[..., None]
    return np.clip(np.rint(rgb8 * a + 255.0 * (1.0 - a)), 0, 255).astype(np.uint8)


def imagenet_normalize(rgb_uint8: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) float32 ImageNet-normalised."""
    x = rgb_uint8.astype(np.float32) / 255.0
    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def point_map(point: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) world points -> (N, 3, H, W) float32 clipped to [-1, 1], background 0."""
    p = np.clip(point.astype(np.float32), -1.0, 1.0) * (alpha[..., None] > 0)
    return np.ascontiguousarray(p.transpose(0, 3, 1, 2))


def geosam2_inputs(views, as_torch: bool | None = None):
    """GeoSAM2's two image inputs from rendered `Views` (normal, point and alpha needed):
    (normal map (N, 3, H, W) ImageNet-normalised, point map (N, 3, H, W) clipped).
    Returned as torch float32 tensors when torch is importable (as_torch None or True),
    numpy otherwise or with as_torch=False."""
    if views.normal is None or views.point is None:
        raise ValueError("geosam2_inputs needs views rendered with the 'normal' and 'point' outputs")
    alpha = views.alpha if views.alpha is not None else (views.face_id >= 0).astype(np.float32)
    normal = imagenet_normalize(normal_map_rgb(views.normal, alpha))
    points = point_map(views.point, alpha)
    if as_torch is False:
        return normal, points
    try:
        import torch
    except ImportError:
        if as_torch:
            raise
        return normal, points
    return torch.from_numpy(normal), torch.from_numpy(points)
