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
from .normals import face_normals, smooth_corner_normals
from .raycast import SmallLRU

ALL_OUTPUTS = ("face_id", "depth", "alpha", "normal", "point", "bary", "color")
DEFAULT_OUTPUTS = ALL_OUTPUTS
BACKGROUND_COLOR = 255  # SAM sees the object on white, as in both references
GREY_ALBEDO = 0.72
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


@dataclass
class Appearance:
    """Optional surface colour for the shaded image. Give one of: per-vertex colours, per-face
    colours, per triangle-corner colours, or a base-colour texture with UVs (per vertex (V, 2) or
    per face corner (F, 3, 2)). When several are given: texture, corner, vertex, face colours."""

    vertex_colors: np.ndarray | None = None  # (V, 3|4) uint8 or float in [0, 1]
    face_colors: np.ndarray | None = None  # (F, 3|4)
    uv: np.ndarray | None = None  # (V, 2) or (F, 3, 2)
    texture: np.ndarray | None = None  # (h, w, 3|4) uint8, row 0 = top (v = 1)
    corner_colors: np.ndarray | None = None  # (F, 3, 3|4) per triangle corner, interpolated

    @classmethod
    def from_trimesh(cls, tm) -> "Appearance | None":
        """Colours of a trimesh.Trimesh's visual: base-colour texture via UV when present,
        else vertex or face colours; None for an untextured grey mesh."""
        visual = getattr(tm, "visual", None)
        if visual is None:
            return None
        if getattr(visual, "kind", None) == "texture" and getattr(visual, "uv", None) is not None:
            material = visual.material
            image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
            if image is not None:
                return cls(uv=np.asarray(visual.uv, dtype=np.float64), texture=np.asarray(image.convert("RGB")))
            base = getattr(material, "baseColorFactor", None)
            if base is not None:
                return cls(face_colors=np.tile(np.asarray(base)[:3], (len(tm.faces), 1)))
            return None
        if getattr(visual, "kind", None) == "vertex":
            return cls(vertex_colors=np.asarray(visual.vertex_colors))
        if getattr(visual, "kind", None) == "face":
            return cls(face_colors=np.asarray(visual.face_colors))
        return None

    def face_base_colors(self, faces: np.ndarray, n_vertices: int) -> np.ndarray:
        """(F, 3) uint8 base colour at each face's centroid (e.g. point colours sampled per face)."""
        faces = np.asarray(faces, dtype=np.int64)
        fid = np.arange(len(faces))
        albedo = _albedo(self, fid, faces, np.full((len(faces), 2), 1.0 / 3.0), n_vertices, len(faces))
        return np.round(albedo * 255.0).astype(np.uint8)


def available_backends() -> list[str]:
    from . import nvdiff, raycast

    out = []
    if nvdiff.available():
        out.append("nvdiffrast")
    if raycast.available():
        out.append("embree")
    return out


def render_views(
    mesh: Mesh,
    rig: CameraRig,
    outputs=DEFAULT_OUTPUTS,
    backend: str = "auto",
    appearance: Appearance | None = None,
    smooth_angle_deg: float = REFERENCE_SMOOTH_ANGLE,
) -> Views:
    """Render all views of `rig`. `backend`: "auto" (nvdiffrast on CUDA when importable, else
    Embree; the environment variable SEGPARTS_RENDER_BACKEND overrides "auto"), "embree" or
    "nvdiffrast". `face_id` is always computed. `appearance` defaults to `mesh.appearance` (the
    file's colours, set by segparts.meshio); grey when neither is given.

    Normals (and the shading of `color`) are Blender auto-smooth shading normals at
    `smooth_angle_deg` (30, as the references render them); 0 gives flat face normals."""
    outputs = tuple(outputs)
    unknown = set(outputs) - set(ALL_OUTPUTS)
    if unknown:
        raise ValueError(f"unknown render outputs {sorted(unknown)}; choose from {ALL_OUTPUTS}")
    if appearance is None:
        appearance = getattr(mesh, "appearance", None)
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
        if smooth_angle_deg > 0 and {"normal", "color"} & set(outputs):
            corners = tables.smooth_normals(smooth_angle_deg)
        _fill_geometry(views, hits, tables, faces, outputs, appearance, corners)
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
        self.corner = np.concatenate([tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]], axis=1).astype(np.float32)
        self.fnormal = face_normals(vertices, faces)
        self.fnormal32 = self.fnormal.astype(np.float32)
        self.plane = np.einsum("ij,ij->i", self.fnormal, tri[:, 0])  # n . x on each face's plane
        self._vertices, self._faces = vertices, faces
        self._smooth: dict[float, np.ndarray] = {}

    def smooth_normals(self, angle: float) -> np.ndarray:
        """(F, 9) float32 auto-smooth corner normals."""
        if angle not in self._smooth:
            self._smooth[angle] = smooth_corner_normals(self._vertices, self._faces, angle, self.fnormal).reshape(
                len(self._faces), 9).astype(np.float32)
        return self._smooth[angle]


def _face_tables(vertices, faces, key) -> _FaceTables:
    return _table_cache.get_or_build(key, lambda: _FaceTables(vertices, faces))


def _fill_geometry(views: Views, hits, tables: _FaceTables, faces, outputs, appearance, corners=None):
    """Depth, normal, point and colour of the covered pixels, from (face, barycentrics).

    Works view by view on the compact hits (they are sorted by view), with per-view constants
    instead of per-pixel gathers, writing straight into the output images."""
    rig = views.rig
    n, h, w = hits.shape
    want = set(outputs)
    corner, fnormal, fnormal32, plane = tables.corner, tables.fnormal, tables.fnormal32, tables.plane
    depth = np.full(n * h * w, np.inf, dtype=np.float32) if "depth" in want else None
    point_img = np.zeros((n * h * w, 3), dtype=np.float32) if "point" in want else None
    normal_img = np.zeros((n * h * w, 3), dtype=np.float32) if "normal" in want else None
    color = np.full((n * h * w, 3), BACKGROUND_COLOR, dtype=np.uint8) if "color" in want else None
    bounds = np.searchsorted(hits.lin, np.arange(n + 1) * (h * w))
    persp = rig.is_perspective()
    for k in range(n):
        sl = slice(bounds[k], bounds[k + 1])
        lin, fid, bary = hits.lin[sl], hits.face[sl], hits.bary[sl]
        if len(lin) == 0:
            continue
        g = np.take(corner, fid, axis=0)
        point = g[:, 0:3] + bary[:, :1] * g[:, 3:6] + bary[:, 1:] * g[:, 6:9]
        if depth is not None:
            zrow = rig.world_to_cam[k, 2].astype(np.float32)
            depth[lin] = -(point @ zrow[:3] + zrow[3])
        if point_img is not None:
            point_img[lin] = point
        if normal_img is None and color is None:
            continue
        # which side of each face the camera sees is a per-face sign: no per-pixel dot products
        eye = rig.camera_positions[k]
        side = (fnormal @ eye - plane) if persp[k] else -(fnormal @ rig.forward[k])
        sign = np.where(side < 0, -1.0, 1.0).astype(np.float32)
        if corners is None:
            normal = np.take(fnormal32, fid, axis=0)
        else:  # interpolate the smooth corner normals with the barycentrics
            c = np.take(corners, fid, axis=0)
            b0 = 1.0 - bary[:, :1] - bary[:, 1:]
            normal = b0 * c[:, 0:3] + bary[:, :1] * c[:, 3:6] + bary[:, 1:] * c[:, 6:9]
            normal /= np.maximum(_row_norm(normal), 1e-12)[:, None]
        normal *= np.take(sign, fid)[:, None]
        if normal_img is not None:
            normal_img[lin] = normal
        if color is not None:
            if persp[k]:
                to_eye = eye.astype(np.float32) - point
                cos = np.einsum("ij,ij->i", normal, to_eye) / np.maximum(_row_norm(to_eye), 1e-12)
            else:
                cos = normal @ -rig.forward[k].astype(np.float32)
            albedo = _albedo(appearance, fid, faces[fid], bary, tables.n_vertices, len(faces))
            shade = (0.3 + 0.7 * np.abs(cos))[:, None] * albedo
            color[lin] = np.clip(np.rint(shade * 255.0), 0, 255).astype(np.uint8)
    if depth is not None:
        views.depth = depth.reshape(n, h, w)
    if point_img is not None:
        views.point = point_img.reshape(n, h, w, 3)
    if normal_img is not None:
        views.normal = normal_img.reshape(n, h, w, 3)
    if color is not None:
        views.color = color.reshape(n, h, w, 3)


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
