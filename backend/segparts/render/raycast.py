"""CPU visibility by Embree ray casting (embreex): face id and barycentrics per pixel.

One Embree scene per mesh (cached by content hash); one Embree call per view traces all of that
view's primary rays. Rays are generated only in image tiles the mesh can cover.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import binary_dilation

from ..cache import SmallLRU
from .cameras import CameraRig

_scene_cache = SmallLRU(2)


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
        # embreex commits (builds the BVH) on the first query: do it now, in one thread
        self.scene.run(np.zeros((1, 3), np.float32), np.ones((1, 3), np.float32))
        tri = vertices[faces]
        edges = np.stack([np.linalg.norm(tri[:, i] - tri[:, (i + 1) % 3], axis=1) for i in range(3)])
        self.max_edge = edges.max(axis=0)  # for cheap tile coverage of small faces

    def intersect(self, origins: np.ndarray, directions: np.ndarray):
        """World-space rays -> (prim id or -1, u, v) with Embree's barycentrics (weights of v1, v2).
        `origins` may be a single (1, 3) row shared by all rays (a perspective camera)."""
        o = ((origins - self.center) * self.scale).astype(np.float32)
        if len(o) == 1:
            o = np.broadcast_to(o, (len(directions), 3))  # embreex reads strided buffers
        d = directions.astype(np.float32, copy=False)
        res = self.scene.run(o, d, output=1)
        return res["primID"], res["u"], res["v"]

    def occluded(self, origins: np.ndarray, directions: np.ndarray, max_distance: float) -> np.ndarray:
        """(P,) bool: does each world-space ray (unit `directions`) hit the mesh within
        `max_distance` (world units)? Embree's any-hit query, cheaper than a closest hit."""
        o = ((origins - self.center) * self.scale).astype(np.float32)
        d = np.ascontiguousarray(directions, dtype=np.float32)
        far = np.full(len(d), max_distance * self.scale, dtype=np.float32)
        return self.scene.run(o, d, dists=far, query="OCCLUDED") >= 0


def scene_for(vertices: np.ndarray, faces: np.ndarray, key) -> _Scene:
    """The cached Embree scene of a mesh (key None: built and not cached)."""
    return _scene_for(vertices, faces, key)


def _scene_for(vertices: np.ndarray, faces: np.ndarray, key) -> _Scene:
    return _scene_cache.get_or_build(key, lambda: _Scene(vertices, faces))


TILE = 8  # rays are cast only in 8x8-pixel tiles that some triangle's bounding box touches
# from this many faces on, tiles of small faces come from their vertices (see covered_tiles):
# below it, boxing every face is as fast and casts fewer rays
SHORTCUT_MIN_FACES = 300_000


def covered_tiles(
    vertices: np.ndarray,
    faces: np.ndarray,
    rig: CameraRig,
    view: int,
    tile: int = TILE,
    max_edge: np.ndarray | None = None,
) -> np.ndarray:
    """(ty, tx) bool grid of tiles touched by the pixel bounding box of some triangle in a view.

    Conservative: every pixel a triangle can cover lies in a marked tile. Views where part of the
    mesh is behind a perspective camera mark every tile. Bounding boxes are marked with a 2D
    difference array, so large triangles cost the same as small ones.

    With `max_edge` (per-face longest edge), faces whose projection is provably smaller than a
    tile are not visited one by one: the tiles of all vertices, grown by one tile, cover them.
    Only the remaining large faces get bounding boxes (this is what keeps 1M-face meshes cheap)."""
    gy, gx = -(-rig.height // tile), -(-rig.width // tile)
    cam = vertices @ rig.world_to_cam[view, :3, :3].T + rig.world_to_cam[view, :3, 3]
    perspective = rig.is_perspective()[view]
    if perspective and (cam[:, 2] > -1e-9).any():
        return np.ones((gy, gx), dtype=bool)
    clip = cam @ rig.proj[view, :4, :3].T + rig.proj[view, :4, 3]
    ndc = clip[:, :2] / clip[:, 3:4]
    px = ((ndc[:, 0] + 1.0) * 0.5 * rig.width) / tile
    py = ((1.0 - ndc[:, 1]) * 0.5 * rig.height) / tile
    cover = np.zeros((gy, gx), dtype=bool)
    big = faces
    bound = None if max_edge is None else _projected_extent_bound(cam, rig, view, tile)
    if bound is not None:
        small = max_edge * bound < 1.0  # projection narrower than a tile in x and y
        big = faces[~small]
        tx, ty = np.floor(px).astype(np.int64), np.floor(py).astype(np.int64)
        inside = (tx >= -1) & (tx <= gx) & (ty >= -1) & (ty <= gy)
        grid = np.zeros((gy + 2, gx + 2), dtype=bool)  # one tile of margin on every side
        grid[ty[inside] + 1, tx[inside] + 1] = True
        cover |= binary_dilation(grid, structure=np.ones((3, 3), dtype=bool))[1:-1, 1:-1]
    if len(big):
        cover |= _bbox_tiles(px, py, big, gy, gx)
    return cover


def _projected_extent_bound(cam: np.ndarray, rig: CameraRig, view: int, tile: int) -> float | None:
    """Factor b such that any segment of world length L projects to at most L * b tiles in x and
    y; None for projection matrices of an unusual form (then every face is boxed)."""
    p = rig.proj[view]
    scale = max(abs(p[0, 0]) * rig.width, abs(p[1, 1]) * rig.height) / (2.0 * tile)
    if p[0, 1] != 0 or p[1, 0] != 0:
        return None
    if np.allclose(p[3], [0.0, 0.0, -1.0, 0.0]):  # perspective: |d(X/Z)| <= L (1 + max|X/Z|) / Zmin
        depth = -cam[:, 2]
        slope = float(np.max(np.maximum(np.abs(cam[:, 0]), np.abs(cam[:, 1])) / depth))
        return scale * (1.0 + slope) / float(depth.min())
    if np.allclose(p[3], [0.0, 0.0, 0.0, 1.0]) and p[0, 2] == 0 and p[1, 2] == 0:  # orthographic
        return scale
    return None


def _bbox_tiles(px, py, faces, gy, gx) -> np.ndarray:
    """Tiles touched by the bounding boxes of `faces` (vertex positions px, py in tile units)."""
    # column-wise min/max: numpy reductions over a length-3 axis are slow
    a, b, c = faces[:, 0], faces[:, 1], faces[:, 2]
    x0 = np.floor(np.minimum(np.minimum(px[a], px[b]), px[c]))
    x1 = np.floor(np.maximum(np.maximum(px[a], px[b]), px[c]))
    y0 = np.floor(np.minimum(np.minimum(py[a], py[b]), py[c]))
    y1 = np.floor(np.maximum(np.maximum(py[a], py[b]), py[c]))
    on = (x1 >= 0) & (x0 < gx) & (y1 >= 0) & (y0 < gy)
    x0 = np.clip(x0[on], 0, gx - 1).astype(np.int64)
    x1 = np.clip(x1[on], 0, gx - 1).astype(np.int64) + 1
    y0 = np.clip(y0[on], 0, gy - 1).astype(np.int64)
    y1 = np.clip(y1[on], 0, gy - 1).astype(np.int64) + 1
    diff = np.zeros((gy + 1) * (gx + 1), dtype=np.int64)
    w = gx + 1
    for ys, xs, sign in ((y0, x0, 1), (y0, x1, -1), (y1, x0, -1), (y1, x1, 1)):
        diff += sign * np.bincount(ys * w + xs, minlength=len(diff))
    return diff.reshape(gy + 1, w).cumsum(axis=0).cumsum(axis=1)[:gy, :gx] > 0


def tile_pixels(tiles: np.ndarray, rig: CameraRig, tile: int = TILE) -> tuple[np.ndarray, np.ndarray]:
    """Pixel columns and rows (int64) of the marked tiles, tile by tile (coherent rays)."""
    ty, tx = np.nonzero(tiles)
    oy, ox = np.divmod(np.arange(tile * tile), tile)
    x = (tx[:, None] * tile + ox[None, :]).ravel()
    y = (ty[:, None] * tile + oy[None, :]).ravel()
    keep = (x < rig.width) & (y < rig.height)
    return x[keep], y[keep]


def pixel_rays(rig: CameraRig, view: int, x: np.ndarray, y: np.ndarray):
    """Rays through pixel centres (x, y) of one view: (origins (P, 3), or (1, 3) shared by all
    rays of a perspective camera; directions (P, 3), not unit). Any projection matrix works: the
    pixel is unprojected at the far plane (and at the near plane when there is no single eye).

    The unprojection is affine in NDC before its homogeneous divide; for a perspective camera
    the divide is skipped: (far_h - eye * far_w) is a positive multiple of the ray direction."""
    inv = rig.inv_view_proj[view]
    # NDC as affine functions of the pixel index: nx = ax * x + bx, ny = ay * y + by
    ax, bx = 2.0 / rig.width, 1.0 / rig.width - 1.0
    ay, by = -2.0 / rig.height, 1.0 - 1.0 / rig.height
    xf = x.astype(np.float32)
    yf = y.astype(np.float32)

    def homogeneous(z):
        """Coefficients (4, 3) of h = cx * x + cy * y + c0 for the unprojected point at NDC z."""
        cx = inv[:, 0] * ax
        cy = inv[:, 1] * ay
        c0 = inv[:, 0] * bx + inv[:, 1] * by + inv[:, 2] * z + inv[:, 3]
        return cx, cy, c0

    def evaluate(cx, cy, c0):
        out = np.empty((len(xf), len(c0)), dtype=np.float32)
        for i in range(len(c0)):
            out[:, i] = np.float32(cx[i]) * xf + np.float32(cy[i]) * yf + np.float32(c0[i])
        return out

    fx, fy, f0 = homogeneous(1.0)
    if rig.is_perspective()[view]:
        eye = rig.camera_positions[view]
        # direction = h_far[:3] - eye * h_far[3]
        dx, dy, d0 = fx[:3] - eye * fx[3], fy[:3] - eye * fy[3], f0[:3] - eye * f0[3]
        if fx[3] * rig.width / 2 + fy[3] * rig.height / 2 + f0[3] < 0:  # w < 0 convention: flip
            dx, dy, d0 = -dx, -dy, -d0
        return eye[None, :], evaluate(dx, dy, d0)
    far = evaluate(fx, fy, f0)
    nx_, ny_, n0 = homogeneous(-1.0)
    near = evaluate(nx_, ny_, n0)
    far = far[:, :3] / far[:, 3:4]
    near = near[:, :3] / near[:, 3:4]
    return near.astype(np.float64), far - near


class Hits:
    """Compact visibility: the covered pixels only."""

    def __init__(self, lin, face, bary, shape):
        self.lin = lin  # (M,) int64 index into the flattened (N, H, W) image stack
        self.face = face  # (M,) int32
        self.bary = bary  # (M, 2) float32 weights of v1, v2
        self.shape = shape  # (N, H, W)

    @classmethod
    def from_buffers(cls, face_id: np.ndarray, bary: np.ndarray) -> Hits:
        lin = np.flatnonzero(face_id.reshape(-1) >= 0)
        return cls(lin, face_id.reshape(-1)[lin], bary.reshape(-1, 2)[lin], face_id.shape)

    def face_id(self) -> np.ndarray:
        out = np.full(int(np.prod(self.shape)), -1, dtype=np.int32)
        out[self.lin] = self.face
        return out.reshape(self.shape)

    def bary_image(self) -> np.ndarray:
        out = np.zeros((int(np.prod(self.shape)), 2), dtype=np.float32)
        out[self.lin] = self.bary
        return out.reshape(*self.shape, 2)


def rasterize(vertices: np.ndarray, faces: np.ndarray, rig: CameraRig, cache_key=None) -> Hits:
    """Trace one ray per pixel centre of every view (only in tiles the mesh can cover)."""
    scene = _scene_for(vertices, faces, cache_key)
    n, h, w = rig.n_views, rig.height, rig.width
    lins, prims, bars = [], [], []
    for k in range(n):
        max_edge = scene.max_edge if len(faces) >= SHORTCUT_MIN_FACES else None
        x, y = tile_pixels(covered_tiles(vertices, faces, rig, k, max_edge=max_edge), rig)
        if len(x) == 0:
            continue
        origins, directions = pixel_rays(rig, k, x, y)
        prim, u, v = scene.intersect(origins, directions)
        hit = np.flatnonzero(prim >= 0)
        lins.append(k * h * w + y[hit] * w + x[hit])
        prims.append(prim[hit])
        bars.append(np.stack([u[hit], v[hit]], axis=1))
    if not lins:
        return Hits(np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros((0, 2), np.float32), (n, h, w))
    return Hits(np.concatenate(lins), np.concatenate(prims).astype(np.int32), np.concatenate(bars), (n, h, w))
