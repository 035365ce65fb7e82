"""Shape diameter function (Shapira et al. 2008): the local thickness of the volume under a face,
measured by a cone of rays cast inward with Embree (embreex)."""

from __future__ import annotations

import numpy as np

CONE_HALF_ANGLE = np.deg2rad(60.0)  # Shapira et al.: a 120 degree cone
N_RAYS = 24


def cone_directions(n_rays: int = N_RAYS, half_angle: float = CONE_HALF_ANGLE) -> np.ndarray:
    """Unit directions spread evenly (golden-angle spiral) over a cone around +z, (R, 3)."""
    k = np.arange(n_rays) + 0.5
    cos_t = 1.0 - (1.0 - np.cos(half_angle)) * k / n_rays
    sin_t = np.sqrt(1.0 - cos_t**2)
    phi = k * np.pi * (3.0 - np.sqrt(5.0))
    return np.stack([sin_t * np.cos(phi), sin_t * np.sin(phi), cos_t], axis=1)


def orthonormal_frames(normals: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit tangents per normal, (S, 3) each."""
    helper = np.where(np.abs(normals[:, :1]) < 0.9, [[1.0, 0.0, 0.0]], [[0.0, 1.0, 0.0]])
    t1 = np.cross(normals, helper)
    t1 /= np.maximum(np.linalg.norm(t1, axis=1, keepdims=True), 1e-30)
    t2 = np.cross(normals, t1)
    return t1, t2


class RayCaster:
    """One Embree scene over the mesh, in coordinates normalised to the unit box for float32."""

    MAX_PASS_THROUGH = 8  # other pieces a ray may cross before it counts as unfinished

    def __init__(self, vertices: np.ndarray, faces: np.ndarray, face_piece: np.ndarray | None = None):
        """`face_piece` (F,): the separate piece of each face; rays given a piece then see only
        that piece's faces, so a piece that intersects another (an arm pushed into a hand)
        keeps its own thickness and convexity."""
        from embreex import rtcore_scene
        from embreex.mesh_construction import TriangleMesh

        self.origin = vertices.min(axis=0)
        self.scale = 1.0 / max(float(np.ptp(vertices, axis=0).max()), 1e-30)
        self.scene = rtcore_scene.EmbreeScene()
        TriangleMesh(
            scene=self.scene,
            vertices=((vertices - self.origin) * self.scale).astype(np.float32),
            indices=faces.astype(np.int32),
        )
        self.face_piece = None if face_piece is None or face_piece.max(initial=0) == 0 else face_piece

    def first_hits(self, origins: np.ndarray, directions: np.ndarray, piece: np.ndarray | None = None):
        """(distance in mesh units, hit face or -1, geometric normal of the hit) per ray; with
        `piece` (per ray), faces of other pieces are passed through."""
        o = ((origins - self.origin) * self.scale).astype(np.float32)
        d = directions.astype(np.float32)
        res = self.scene.run(o, d, output=1)
        dist = res["tfar"].astype(np.float64)
        hit = res["primID"].astype(np.int64)
        ng = res["Ng"].astype(np.float64)
        if piece is not None and self.face_piece is not None:
            travelled = np.zeros(len(dist))
            for _ in range(self.MAX_PASS_THROUGH):
                other = np.flatnonzero((hit >= 0) & (self.face_piece[np.maximum(hit, 0)] != piece))
                if len(other) == 0:
                    break
                step = dist[other] + 1e-6  # restart just past the other piece's face
                travelled[other] += step
                o[other] += (d[other] * step[:, None]).astype(np.float32)
                again = self.scene.run(o[other], d[other], output=1)
                dist[other] = again["tfar"]
                hit[other] = again["primID"]
                ng[other] = again["Ng"]
            else:
                other = np.flatnonzero((hit >= 0) & (self.face_piece[np.maximum(hit, 0)] != piece))
                hit[other] = -1
                dist[other] = np.inf
            dist = dist + travelled
        return dist / self.scale, hit, ng


def shape_diameter(
    caster: RayCaster,
    centroids: np.ndarray,
    normals: np.ndarray,
    offset: float,
    n_rays: int = N_RAYS,
    piece: np.ndarray | None = None,
) -> np.ndarray:
    """SDF of the given faces (S,): median length of the inward rays that hit the inside of the
    opposite wall; NaN where none does (open or flipped surface)."""
    s = len(centroids)
    if s == 0:
        return np.empty(0)
    inward = -normals
    t1, t2 = orthonormal_frames(inward)
    cone = cone_directions(n_rays)
    dirs = (
        cone[None, :, 0:1] * t1[:, None] + cone[None, :, 1:2] * t2[:, None] + cone[None, :, 2:3] * inward[:, None]
    ).reshape(-1, 3)
    origins = np.repeat(centroids + inward * offset, n_rays, axis=0)
    dist, hit, ng = caster.first_hits(origins, dirs, None if piece is None else np.repeat(piece, n_rays))
    # a ray from inside meets the opposite wall from behind: its outward normal faces along the ray
    valid = (hit >= 0) & ((ng * dirs).sum(axis=1) > 0) & np.isfinite(dist)
    lengths = np.where(valid, dist + offset, np.nan).reshape(s, n_rays)
    out = np.full(s, np.nan)
    has = valid.reshape(s, n_rays).any(axis=1)
    out[has] = np.nanmedian(lengths[has], axis=1)
    return out
