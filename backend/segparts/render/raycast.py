"""CPU visibility by Embree ray casting (embreex): face id and barycentrics per pixel.

One Embree scene per mesh (cached by content hash), primary rays of all views traced in a few big
batches; rays are only generated inside each view's projected bounding rectangle of the mesh.
"""
from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from .cameras import CameraRig

# rays per embree call: big enough to amortise call overhead, small enough for memory (~100 MB)
RAY_BATCH = 4_194_304
_SCENE_CACHE_SIZE = 2
_scene_cache: "OrderedDict[tuple, _Scene]" = OrderedDict()
_cache_lock = threading.Lock()


def available() -> bool:
    try:
        from embreex import rtcore_scene  # noqa: F401
    except ImportError:
        return False
    return True


class _Scene:
    """An Embree scene over vertices moved to a unit box around the origin (float32 precision)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        from embreex import rtcore_scene
        from embreex.mesh_construction import TriangleMesh

        lo, hi = vertices.min(axis=0), vertices.max(axis=0)
        self.center = (lo + hi) / 2.0
        extent = float((hi - lo).max())
        self.scale = 1.0 / extent if extent > 0 else 1.0
        local = ((vertices - self.center) * self.scale).astype(np.float32)
        self.scene = rtcore_scene.EmbreeScene()
        TriangleMesh(scene=self.scene, vertices=local, indices=faces.astype(np.int32))

    def intersect(self, origins: np.ndarray, directions: np.ndarray):
        """World-space rays -> (prim id or -1, u, v) with Embree's barycentrics (weights of v1, v2)."""
        o = ((origins - self.center) * self.scale).astype(np.float32)
        d = directions.astype(np.float32, copy=False)
        res = self.scene.run(o, d, output=1)
        return res["primID"], res["u"], res["v"]


def _scene_for(vertices: np.ndarray, faces: np.ndarray, key) -> _Scene:
    with _cache_lock:
        if key is not None and key in _scene_cache:
            _scene_cache.move_to_end(key)
            return _scene_cache[key]
    scene = _Scene(vertices, faces)
    if key is not None:
        with _cache_lock:
            _scene_cache[key] = scene
            while len(_scene_cache) > _SCENE_CACHE_SIZE:
                _scene_cache.popitem(last=False)
    return scene


def view_rectangles(vertices: np.ndarray, rig: CameraRig) -> np.ndarray:
    """(N, 4) pixel rectangles [x0, x1, y0, y1) covering the mesh's projection in each view;
    the whole image where some vertex is behind the camera."""
    out = np.zeros((rig.n_views, 4), dtype=np.int64)
    corners = _box_corners(vertices)
    for k in range(rig.n_views):
        cam = corners @ rig.world_to_cam[k, :3, :3].T + rig.world_to_cam[k, :3, 3]
        if rig.is_perspective()[k] and (cam[:, 2] > -1e-9).any():
            pts = vertices  # the box reaches behind the camera: use the true vertices
            cam = pts @ rig.world_to_cam[k, :3, :3].T + rig.world_to_cam[k, :3, 3]
            if (cam[:, 2] > -1e-9).any():
                out[k] = (0, rig.width, 0, rig.height)
                continue
        clip = cam @ rig.proj[k, :4, :3].T + rig.proj[k, :4, 3]
        ndc = clip[:, :2] / clip[:, 3:4]
        x = (ndc[:, 0] + 1.0) * 0.5 * rig.width
        y = (1.0 - ndc[:, 1]) * 0.5 * rig.height
        out[k] = (
            np.clip(np.floor(x.min()) - 1, 0, rig.width),
            np.clip(np.ceil(x.max()) + 1, 0, rig.width),
            np.clip(np.floor(y.min()) - 1, 0, rig.height),
            np.clip(np.ceil(y.max()) + 1, 0, rig.height),
        )
    return out


def _box_corners(vertices: np.ndarray) -> np.ndarray:
    lo, hi = vertices.min(axis=0), vertices.max(axis=0)
    return np.array([[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])])


def pixel_rays(rig: CameraRig, view: int, rect) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rays through the pixel centres of `rect` in one view: (linear pixel index in the view,
    origins (P, 3), unit directions (P, 3)), both float64. Works for any projection matrix by
    unprojecting each pixel at the near and far planes."""
    x0, x1, y0, y1 = (int(v) for v in rect)
    xs = np.arange(x0, x1)
    ys = np.arange(y0, y1)
    nx = (xs + 0.5) / rig.width * 2.0 - 1.0
    ny = 1.0 - (ys + 0.5) / rig.height * 2.0
    inv = np.linalg.inv(rig.view_proj[view])
    # unprojection is affine in (nx, ny) before the homogeneous divide: build it from outer sums
    def plane(z):
        base = inv[:, 2] * z + inv[:, 3]
        h = base[None, None, :] + ny[:, None, None] * inv[None, None, :, 1] + nx[None, :, None] * inv[None, None, :, 0]
        return h[..., :3] / h[..., 3:4]

    near, far = plane(-1.0), plane(1.0)
    d = far - near
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    lin = (ys[:, None] * rig.width + xs[None, :]).ravel()
    return lin, near.reshape(-1, 3), d.reshape(-1, 3)


def rasterize(vertices: np.ndarray, faces: np.ndarray, rig: CameraRig, cache_key=None):
    """(face_id (N, H, W) int32, -1 background; bary (N, H, W, 2) float32 weights of v1, v2)."""
    scene = _scene_for(vertices, faces, cache_key)
    n, h, w = rig.n_views, rig.height, rig.width
    face_id = np.full(n * h * w, -1, dtype=np.int32)
    bary = np.zeros((n * h * w, 2), dtype=np.float32)
    rects = view_rectangles(vertices, rig)

    batch_lin, batch_o, batch_d, batch_size = [], [], [], 0

    def flush():
        nonlocal batch_lin, batch_o, batch_d, batch_size
        if not batch_lin:
            return
        lin = np.concatenate(batch_lin)
        prim, u, v = scene.intersect(np.concatenate(batch_o), np.concatenate(batch_d))
        hit = prim >= 0
        face_id[lin[hit]] = prim[hit]
        bary[lin[hit], 0] = u[hit]
        bary[lin[hit], 1] = v[hit]
        batch_lin, batch_o, batch_d, batch_size = [], [], [], 0

    for k in range(n):
        if rects[k, 1] <= rects[k, 0] or rects[k, 3] <= rects[k, 2]:
            continue
        lin, o, d = pixel_rays(rig, k, rects[k])
        batch_lin.append(lin + k * h * w)
        batch_o.append(o)
        batch_d.append(d)
        batch_size += len(lin)
        if batch_size >= RAY_BATCH:
            flush()
    flush()
    return face_id.reshape(n, h, w), bary.reshape(n, h, w, 2)
