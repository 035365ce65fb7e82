"""Multi-view rendering shared by the SAMPart3D and GeoSAM2 engines.

`render_views(mesh, rig)` renders every view of a `CameraRig` in one batch. Visibility (which
face each pixel sees, and where on it) comes from a backend: Embree ray casting on CPU, or
nvdiffrast on CUDA when it is importable; everything else (depth, normals, point map, shading)
is computed from that by the same numpy code, so both backends give the same outputs.

Coordinates are the mesh's own ("world"); render a mesh normalised with
`normalize_for_rendering` to match the reference pipelines.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from ..appearance import Appearance
from ..cache import SmallLRU
from ..mesh import Mesh
from .cameras import (  # noqa: F401  (re-exported)
    CameraRig,
    Normalization,
    geosam2_rig,
    look_at,
    normalize_for_rendering,
    orthographic,
    perspective,
    rig_from_matrices,
    sampart3d_rig,
)
from .encodings import IMAGENET_MEAN, IMAGENET_STD, geosam2_inputs, normal_map_rgb  # noqa: F401
from .normals import face_normals, file_corner_normals, smooth_corner_normals

ALL_OUTPUTS = ("face_id", "depth", "alpha", "normal", "point", "bary", "color")
DEFAULT_OUTPUTS = ALL_OUTPUTS
BACKGROUND_COLOR = 255  # SAM sees the object on white, as in both references
GREY_ALBEDO = 0.72  # sRGB-encoded grey of `face_base_colors` for a colourless appearance
# The colour pass reproduces SAMPart3D's release renders (tools/blender_render_16views.py, EEVEE):
# no lamps, a uniform grey world of 0.5, the object's base colours (Blender's default surface,
# 0.8 linear, without a material), ambient occlusion (EEVEE GTAO, distance 0.2 on the unit-size
# object), 64 anti-aliasing samples, Blender's default AgX view transform, transparent film
# painted white where nothing was hit (edge pixels keep the object's colour: straight alpha).
WORLD_LIGHT = 0.5
DEFAULT_BASE_COLOR = 0.8
AO_DISTANCE = 0.2
AO_RAYS = 4  # cosine-weighted occlusion rays per sub-sample (16 per pixel at SUPERSAMPLE 2)
SUPERSAMPLE = 2  # sub-samples per pixel side (anti-aliasing)
SPECULAR_F0 = 0.04  # Principled BSDF, IOR 1.5; grazing gain halved for its default roughness 0.5
# Blender's AgX view transform (sRGB display) of grey, 8 bit, at exposures -10, -9.5, ..., +3 EV
# (linear 2**ev); measured with bpy's `Image.save_render` (tests/test_render.py re-measures it)
AGX_EV = np.arange(-10.0, 3.01, 0.5)
AGX_DISPLAY = np.array(
    [0, 1, 2, 4, 6, 10, 14, 20, 26, 34, 43, 53, 66, 81, 98, 117, 136, 154, 170, 184, 197, 208, 218, 226, 233, 240, 246],
    dtype=np.float64,
)
# Blender auto smooth angle of both reference render scripts: the normal pass shows shading normals
REFERENCE_SMOOTH_ANGLE = 30.0
_table_cache = SmallLRU(2)


@dataclass
class Views:
    """Per-view buffers; fields not requested are None. Pixel [v, y, x]: row y from the top."""

    face_id: np.ndarray  # (N, H, W) int32, -1 background
    depth: np.ndarray | None = None  # (N, H, W) float32 planar depth (-z camera), inf background
    alpha: np.ndarray | None = None  # (N, H, W) float32 coverage, 1 or 0
    normal: np.ndarray | None = None  # (N, H, W, 3) float32 world unit normal facing the camera, 0 bg
    point: np.ndarray | None = None  # (N, H, W, 3) float32 world position, 0 background
    bary: np.ndarray | None = None  # (N, H, W, 2) float32 barycentric weights of the face's v1, v2
    color: np.ndarray | None = None  # (N, H, W, 3) uint8 shaded colour on white
    rig: CameraRig | None = field(default=None, repr=False)
    backend: str = "embree"

    @property
    def n_views(self) -> int:
        return int(self.face_id.shape[0])

    @property
    def mask(self) -> np.ndarray:
        """(N, H, W) bool foreground."""
        return self.face_id >= 0


def face_base_colors(appearance: Appearance, faces: np.ndarray, n_vertices: int) -> np.ndarray:
    """(F, 3) uint8 base colour of `appearance` at each face's centroid (e.g. point colours sampled per face)."""
    faces = np.asarray(faces, dtype=np.int64)
    fid = np.arange(len(faces))
    albedo = _albedo(appearance, fid, faces, np.full((len(faces), 2), 1.0 / 3.0), n_vertices, len(faces))
    return np.round(albedo * 255.0).astype(np.uint8)


def render_views(
    mesh: Mesh,
    rig: CameraRig,
    outputs=DEFAULT_OUTPUTS,
    backend: str = "auto",
    appearance: Appearance | None = None,
    smooth_angle_deg: float = REFERENCE_SMOOTH_ANGLE,
    supersample: int = SUPERSAMPLE,
    ao_rays: int = AO_RAYS,
) -> Views:
    """Render all views of `rig`. `backend`: "auto" (nvdiffrast on CUDA when importable, else
    Embree; the environment variable SEGPARTS_RENDER_BACKEND overrides "auto"), "embree" or
    "nvdiffrast". `face_id` is always computed. `appearance` defaults to `mesh.appearance` (the
    file's colours, set by segparts.meshio); grey when neither is given.

    Normals (and the shading of `color`) are the mesh's own normals when `appearance.normals`
    holds them (as Blender shows a file's or an object's split normals), else Blender auto-smooth
    shading normals at `smooth_angle_deg` (30, as the references render them); 0 gives flat face
    normals. `color` is the release's look (see WORLD_LIGHT): `supersample`**2 sub-samples per
    pixel and `ao_rays` occlusion rays per sub-sample (0: no occlusion)."""
    outputs = tuple(outputs)
    unknown = set(outputs) - set(ALL_OUTPUTS)
    if unknown:
        raise ValueError(f"unknown render outputs {sorted(unknown)}; choose from {ALL_OUTPUTS}")
    if appearance is None:
        appearance = getattr(mesh, "appearance", None)
    if int(supersample) < 1 or int(ao_rays) < 0:
        raise ValueError(f"supersample must be >= 1 and ao_rays >= 0, not {supersample} and {ao_rays}")
    vertices = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    hits, backend = _visibility(vertices, faces, rig, backend, _cache_key(mesh))
    views = Views(face_id=hits.face_id(), rig=rig, backend=backend)
    if "bary" in outputs:
        views.bary = hits.bary_image()
    if "alpha" in outputs:
        views.alpha = (views.face_id >= 0).astype(np.float32)
    if {"depth", "normal", "point", "color"} & set(outputs):
        tables = _face_tables(vertices, faces, _cache_key(mesh))
        corners = None
        own = getattr(appearance, "normals", None)
        if own is not None and {"normal", "color"} & set(outputs):  # the mesh's own normals, as Blender shows them
            corners = file_corner_normals(own, faces, tables.fnormal).reshape(len(faces), 9).astype(np.float32)
        elif smooth_angle_deg > 0 and {"normal", "color"} & set(outputs):
            corners = tables.smooth_normals(smooth_angle_deg)
        _fill_geometry(views, hits, tables, outputs, corners)
        if "color" in outputs:
            views.color = _shade_views(
                vertices, faces, rig, backend, _cache_key(mesh), tables, corners, appearance, supersample, ao_rays
            )
    return views


def _cache_key(mesh: Mesh):
    try:
        return mesh.content_hash
    except Exception:  # noqa: BLE001 - any object with vertices/faces renders, just uncached
        return None


def _visibility(vertices, faces, rig, backend, key):
    from . import nvdiff, raycast

    if backend == "auto":
        backend = os.environ.get("SEGPARTS_RENDER_BACKEND", "auto") or "auto"
    if backend not in ("auto", "embree", "nvdiffrast"):
        raise ValueError(f"unknown render backend {backend!r}; use auto, embree or nvdiffrast")
    if backend == "nvdiffrast" or (backend == "auto" and nvdiff.available()):
        if not nvdiff.available():
            raise RuntimeError(f"nvdiffrast backend unavailable: {nvdiff.unavailable_reason()}")
        return raycast.Hits.from_buffers(*nvdiff.rasterize(vertices, faces, rig)), "nvdiffrast"
    if not raycast.available():
        raise RuntimeError("no render backend: install embreex (CPU) or nvdiffrast (CUDA)")
    return raycast.rasterize(vertices, faces, rig, cache_key=key), "embree"


class _FaceTables:
    """Per-face arrays the shading needs, computed once per mesh (cached by content hash)."""

    def __init__(self, vertices: np.ndarray, faces: np.ndarray):
        tri = vertices[faces]
        self.n_vertices = len(vertices)
        # rows [v0, v1 - v0, v2 - v0] in float32: one gather per hit gives its point
        self.corner = np.concatenate([tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]], axis=1).astype(
            np.float32
        )
        self.fnormal = face_normals(vertices, faces)
        self.fnormal32 = self.fnormal.astype(np.float32)
        self.plane = np.einsum("ij,ij->i", self.fnormal, tri[:, 0])  # n . x on each face's plane
        self._vertices, self._faces = vertices, faces
        self._smooth: dict[float, np.ndarray] = {}

    def smooth_normals(self, angle: float) -> np.ndarray:
        """(F, 9) float32 auto-smooth corner normals."""
        if angle not in self._smooth:
            self._smooth[angle] = (
                smooth_corner_normals(self._vertices, self._faces, angle, self.fnormal)
                .reshape(len(self._faces), 9)
                .astype(np.float32)
            )
        return self._smooth[angle]


def _face_tables(vertices, faces, key) -> _FaceTables:
    return _table_cache.get_or_build(key, lambda: _FaceTables(vertices, faces))


def _fill_geometry(views: Views, hits, tables: _FaceTables, outputs, corners=None):
    """Depth, normal and point of the covered pixels, from (face, barycentrics).

    Works view by view on the compact hits (they are sorted by view), with per-view constants
    instead of per-pixel gathers, writing straight into the output images."""
    rig = views.rig
    n, h, w = hits.shape
    want = set(outputs)
    depth = np.full(n * h * w, np.inf, dtype=np.float32) if "depth" in want else None
    point_img = np.zeros((n * h * w, 3), dtype=np.float32) if "point" in want else None
    normal_img = np.zeros((n * h * w, 3), dtype=np.float32) if "normal" in want else None
    bounds = np.searchsorted(hits.lin, np.arange(n + 1) * (h * w))
    for k in range(n):
        sl = slice(bounds[k], bounds[k + 1])
        lin, fid, bary = hits.lin[sl], hits.face[sl], hits.bary[sl]
        if len(lin) == 0:
            continue
        point = _hit_points(tables, fid, bary)
        if depth is not None:
            zrow = rig.world_to_cam[k, 2].astype(np.float32)
            depth[lin] = -(point @ zrow[:3] + zrow[3])
        if point_img is not None:
            point_img[lin] = point
        if normal_img is not None:
            normal_img[lin] = _facing_normals(rig, k, tables, fid, bary, corners)[0]
    if depth is not None:
        views.depth = depth.reshape(n, h, w)
    if point_img is not None:
        views.point = point_img.reshape(n, h, w, 3)
    if normal_img is not None:
        views.normal = normal_img.reshape(n, h, w, 3)


def _hit_points(tables: _FaceTables, fid, bary) -> np.ndarray:
    g = np.take(tables.corner, fid, axis=0)
    return g[:, 0:3] + bary[:, :1] * g[:, 3:6] + bary[:, 1:] * g[:, 6:9]


def _facing_normals(rig: CameraRig, k: int, tables: _FaceTables, fid, bary, corners=None):
    """(shading normal, face normal), both unit and turned towards view k's camera. Which side
    of a face the camera sees is a per-face sign: no per-pixel dot products."""
    fnormal = tables.fnormal
    if rig.is_perspective()[k]:
        side = fnormal @ rig.camera_positions[k] - tables.plane
    else:
        side = -(fnormal @ rig.forward[k])
    sign = np.take(np.where(side < 0, -1.0, 1.0).astype(np.float32), fid)[:, None]
    flat = np.take(tables.fnormal32, fid, axis=0) * sign
    if corners is None:
        return flat, flat
    c = np.take(corners, fid, axis=0)  # interpolate the smooth corner normals with the barycentrics
    b0 = 1.0 - bary[:, :1] - bary[:, 1:]
    normal = b0 * c[:, 0:3] + bary[:, :1] * c[:, 3:6] + bary[:, 1:] * c[:, 6:9]
    normal /= np.maximum(_row_norm(normal), 1e-12)[:, None]
    return normal * sign, flat


def _shade_views(
    vertices,
    faces,
    rig: CameraRig,
    backend: str,
    key,
    tables: _FaceTables,
    corners,
    appearance,
    supersample: int,
    ao_rays: int,
) -> np.ndarray:
    """(N, H, W, 3) uint8 in the release's look (see WORLD_LIGHT), view by view: each view is
    traced at `supersample` times the resolution, every sub-sample shaded with the uniform grey
    world, its occlusion and a Fresnel term, averaged in linear light over the covered sub-samples
    of each pixel (white where none is covered), then mapped through AgX."""
    from . import raycast

    s = int(supersample)
    n, h, w = rig.n_views, rig.height, rig.width
    out = np.full((n, h * w, 3), BACKGROUND_COLOR, dtype=np.uint8)
    scene = raycast.scene_for(vertices, faces, key) if ao_rays > 0 and raycast.available() else None
    for k in range(n):
        fine = CameraRig(rig.world_to_cam[k : k + 1], rig.proj[k : k + 1], w * s, h * s)
        hits, _ = _visibility(vertices, faces, fine, backend, key)
        if len(hits.lin) == 0:
            continue
        fid, bary = hits.face, hits.bary
        point = _hit_points(tables, fid, bary)
        normal, flat = _facing_normals(fine, 0, tables, fid, bary, corners)
        if fine.is_perspective()[0]:
            to_eye = rig.camera_positions[k].astype(np.float32) - point
            cos = np.abs(np.einsum("ij,ij->i", normal, to_eye)) / np.maximum(_row_norm(to_eye), 1e-12)
        else:
            cos = np.abs(normal @ -rig.forward[k].astype(np.float32))
        albedo = _linear_albedo(appearance, fid, faces, bary, tables.n_vertices)
        fresnel = (SPECULAR_F0 + (1.0 - SPECULAR_F0) * 0.5 * (1.0 - np.clip(cos, 0.0, 1.0)) ** 5)[:, None]
        radiance = WORLD_LIGHT * (albedo * (1.0 - fresnel) + fresnel)
        if scene is not None:
            radiance *= ambient_occlusion(scene, point, flat, ao_rays, AO_DISTANCE, seed=k)[:, None]
        y, x = np.divmod(hits.lin, w * s)
        pixel = (y // s) * w + x // s
        count = np.bincount(pixel, minlength=h * w)
        total = np.stack([np.bincount(pixel, radiance[:, c], minlength=h * w) for c in range(3)], axis=1)
        covered = count > 0
        out[k, covered] = agx_display(total[covered] / count[covered, None])
    return out.reshape(n, h, w, 3)


def ambient_occlusion(
    scene, points: np.ndarray, normals: np.ndarray, rays: int, distance: float, seed: int = 0
) -> np.ndarray:
    """(P,) fraction of `rays` cosine-weighted hemisphere rays around each (unit) normal that leave
    without hitting the mesh within `distance`: stratified in elevation, each point's pattern
    turned by its own random angle (fixed seed), so neighbouring sub-samples average the noise."""
    rng = np.random.default_rng(seed)
    p = len(points)
    u1 = (np.arange(rays) + rng.random((p, rays))) / rays
    phi = 2.0 * np.pi * (np.arange(rays) * 0.618034 + rng.random((p, 1)))
    r = np.sqrt(u1)
    local = np.stack([r * np.cos(phi), r * np.sin(phi), np.sqrt(1.0 - u1)], axis=-1).astype(np.float32)
    n = normals.astype(np.float32)
    helper = np.where(np.abs(n[:, :1]) < 0.9, np.float32([[1, 0, 0]]), np.float32([[0, 1, 0]]))
    t = np.cross(n, helper)
    t /= np.maximum(_row_norm(t), 1e-12)[:, None]
    b = np.cross(n, t)
    dirs = local[..., :1] * t[:, None] + local[..., 1:2] * b[:, None] + local[..., 2:] * n[:, None]
    origins = np.repeat(points + 1e-4 * n, rays, axis=0)
    hit = scene.occluded(origins, dirs.reshape(-1, 3), distance)
    return 1.0 - hit.reshape(p, rays).mean(axis=1)


def agx_display(linear: np.ndarray) -> np.ndarray:
    """Linear light -> 8-bit display values through Blender's AgX curve, channel by channel."""
    x = np.asarray(linear, dtype=np.float64)
    ev = np.log2(np.maximum(x, 2.0**-20))
    out = np.interp(ev, AGX_EV, AGX_DISPLAY, left=0.0, right=AGX_DISPLAY[-1])
    return np.clip(np.rint(np.where(x > 0, out, 0.0)), 0, 255).astype(np.uint8)


def _linear_albedo(appearance, fid, faces, bary, n_vertices) -> np.ndarray:
    """(P, 3) linear base colour: the appearance's (sRGB-encoded) colours decoded, or Blender's
    default surface grey."""
    if appearance is None:
        return np.full((len(fid), 3), DEFAULT_BASE_COLOR, dtype=np.float32)
    c = _albedo(appearance, fid, faces[fid], bary, n_vertices, len(faces))
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4).astype(np.float32)


def _row_norm(x: np.ndarray) -> np.ndarray:
    """Euclidean length of each row (einsum: faster than np.linalg.norm on (P, 3) arrays)."""
    return np.sqrt(np.einsum("ij,ij->i", x, x))


def _albedo(appearance: Appearance | None, fid, tri, b, n_vertices, n_faces) -> np.ndarray:
    """(P, 3) base colour in [0, 1] at each hit."""
    if appearance is None:
        return np.full((len(fid), 3), GREY_ALBEDO)
    b = b.astype(np.float64)
    w = np.stack([1.0 - b[:, 0] - b[:, 1], b[:, 0], b[:, 1]], axis=1)
    if appearance.texture is not None and appearance.uv is not None:
        uv = np.asarray(appearance.uv, dtype=np.float64)
        corner_uv = uv[fid] if uv.ndim == 3 else uv[tri]  # (P, 3, 2)
        st = np.einsum("pk,pkc->pc", w, corner_uv)
        tex = _unit_colors(np.asarray(appearance.texture))
        th, tw = tex.shape[:2]
        x = np.mod(np.floor(st[:, 0] * tw), tw).astype(np.int64)
        y = np.mod(np.floor((1.0 - st[:, 1]) * th), th).astype(np.int64)
        return tex[y, x, :3]
    if getattr(appearance, "corner_colors", None) is not None:
        cc = _unit_colors(np.asarray(appearance.corner_colors))[..., :3]
        if len(cc) != n_faces:
            raise ValueError(f"{len(cc)} corner colour triples for {n_faces} faces")
        return np.einsum("pk,pkc->pc", w, cc[fid])
    if appearance.vertex_colors is not None:
        vc = _unit_colors(np.asarray(appearance.vertex_colors))[:, :3]
        if len(vc) != n_vertices:
            raise ValueError(f"{len(vc)} vertex colours for {n_vertices} vertices")
        return np.einsum("pk,pkc->pc", w, vc[tri])
    if appearance.face_colors is not None:
        fc = _unit_colors(np.asarray(appearance.face_colors))[:, :3]
        if len(fc) != n_faces:
            raise ValueError(f"{len(fc)} face colours for {n_faces} faces")
        return fc[fid]
    return np.full((len(fid), 3), GREY_ALBEDO)


def _unit_colors(c: np.ndarray) -> np.ndarray:
    if np.issubdtype(c.dtype, np.integer):
        return c.astype(np.float64) / 255.0
    return np.clip(c.astype(np.float64), 0.0, 1.0)
