"""Camera rigs as data, and the mesh normalisation both learned engines render with.

Conventions (OpenGL, as Blender's camera matrices and both reference pipelines):
- `world_to_cam` maps world points to camera space; the camera looks down -Z with +Y up.
- `proj` maps camera space to clip space; NDC x grows to the right, NDC y grows upwards.
- Pixel (x, y) is column x, row y with row 0 at the top; its centre is at NDC
  ((x + 0.5) / W * 2 - 1, 1 - (y + 0.5) / H * 2).

Every rig (SAMPart3D, GeoSAM2, a Blender viewport) is just these matrices, so the renderer and
the lifting code have one code path.

The reference render scripts (Blender) normalise the mesh so its longest bounding-box side is 1,
centred at the origin (Z up), and put the cameras at distance (50 / 36) x the diagonal of the
*normalised* bounding box. Pass `extents=Normalization.extents` to the rig functions to get that
distance exactly; without it the unit cube's diagonal (sqrt 3) is assumed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

LENS_MM = 50.0
SENSOR_MM = 36.0
# horizontal field of view of a 50 mm lens on a 36 mm sensor: 0.6911 rad (39.6 degrees)
REFERENCE_FOV_X = 2.0 * np.arctan(SENSOR_MM / 2.0 / LENS_MM)
DEFAULT_NEAR = 0.01
DEFAULT_FAR = 100.0


@dataclass
class CameraRig:
    world_to_cam: np.ndarray  # (N, 4, 4) float64, OpenGL convention
    proj: np.ndarray  # (N, 4, 4) float64, OpenGL projection
    width: int
    height: int

    def __post_init__(self):
        self.world_to_cam = _as_matrices(self.world_to_cam, "world_to_cam")
        self.proj = _as_matrices(self.proj, "proj")
        if self.proj.shape[0] == 1 and self.world_to_cam.shape[0] > 1:
            self.proj = np.repeat(self.proj, self.world_to_cam.shape[0], axis=0)
        if self.proj.shape[0] != self.world_to_cam.shape[0]:
            raise ValueError(f"{self.world_to_cam.shape[0]} view matrices but {self.proj.shape[0]} projection matrices")
        self.width, self.height = int(self.width), int(self.height)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"image size must be positive, got {self.width}x{self.height}")

    @property
    def n_views(self) -> int:
        return int(self.world_to_cam.shape[0])

    # derived matrices are cached: a rig is not meant to be modified after construction
    @cached_property
    def cam_to_world(self) -> np.ndarray:
        return np.linalg.inv(self.world_to_cam)

    @cached_property
    def view_proj(self) -> np.ndarray:
        """(N, 4, 4) world -> clip."""
        return self.proj @ self.world_to_cam

    @cached_property
    def inv_view_proj(self) -> np.ndarray:
        """(N, 4, 4) clip -> world."""
        return np.linalg.inv(self.view_proj)

    @property
    def camera_positions(self) -> np.ndarray:
        """(N, 3) camera centres in world space (for orthographic cameras: the view origin)."""
        return self.cam_to_world[:, :3, 3]

    @property
    def forward(self) -> np.ndarray:
        """(N, 3) unit viewing directions (camera -Z) in world space."""
        f = -self.cam_to_world[:, :3, 2]
        return f / np.linalg.norm(f, axis=1, keepdims=True)

    def focal_px(self) -> np.ndarray:
        """(N,) horizontal focal length in pixels (0.5 W / tan(fov_x / 2) for a perspective camera)."""
        return self.proj[:, 0, 0] * self.width / 2.0

    def is_perspective(self) -> np.ndarray:
        """(N,) True where the projection divides by depth."""
        return np.abs(self.proj[:, 3, 2]) > 1e-12

    def transformed(self, matrix) -> CameraRig:
        """The same cameras for a world moved by a similarity `matrix` (p' = M p: rotation,
        uniform scale, translation), e.g. `Normalization.matrix` to use a Blender viewport's
        view on the normalised mesh. Pixels map to the same surface points; camera space is
        scaled with the world, so depths come out in the new units and the view stays rigid."""
        m = np.asarray(matrix, dtype=np.float64)
        if m.shape != (4, 4):
            raise ValueError(f"matrix must be (4, 4), got {m.shape}")
        scale = float(np.cbrt(abs(np.linalg.det(m[:3, :3]))))
        if scale <= 0 or not np.allclose(m[:3, :3] @ m[:3, :3].T, scale**2 * np.eye(3), atol=1e-9 * scale**2):
            raise ValueError("transformed() needs a similarity transform (rotation, uniform scale, translation)")
        s = np.diag([scale, scale, scale, 1.0])
        s_inv = np.diag([1.0 / scale, 1.0 / scale, 1.0 / scale, 1.0])
        return CameraRig(s @ self.world_to_cam @ np.linalg.inv(m), self.proj @ s_inv, self.width, self.height)

    def project(self, points: np.ndarray, view: int) -> tuple[np.ndarray, np.ndarray]:
        """World points (P, 3) -> (pixel xy as float (P, 2) with pixel centres at .5, planar depth (P,)).

        Planar depth is -z in camera space (the distance along the viewing axis)."""
        points = np.asarray(points, dtype=np.float64)
        cam = points @ self.world_to_cam[view, :3, :3].T + self.world_to_cam[view, :3, 3]
        clip = cam @ self.proj[view, :4, :3].T + self.proj[view, :4, 3]
        w = clip[:, 3]
        w = np.where(np.abs(w) < 1e-30, 1e-30, w)
        ndc = clip[:, :2] / w[:, None]
        px = np.empty_like(ndc)
        px[:, 0] = (ndc[:, 0] + 1.0) * 0.5 * self.width
        px[:, 1] = (1.0 - ndc[:, 1]) * 0.5 * self.height
        return px, -cam[:, 2]


def _as_matrices(m, name: str) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    if m.shape == (4, 4):
        m = m[None]
    if m.ndim != 3 or m.shape[1:] != (4, 4):
        raise ValueError(f"{name} must be (4, 4) or (N, 4, 4), got {m.shape}")
    if not np.isfinite(m).all():
        raise ValueError(f"{name} has NaN or infinite entries")
    return np.ascontiguousarray(m)


def perspective(fov_x: float, aspect: float = 1.0, near: float = DEFAULT_NEAR, far: float = DEFAULT_FAR) -> np.ndarray:
    """OpenGL perspective projection from the horizontal field of view (Blender's sensor fit for W >= H)."""
    t = np.tan(fov_x / 2.0)
    p = np.zeros((4, 4))
    p[0, 0] = 1.0 / t
    p[1, 1] = aspect / t
    p[2, 2] = -(far + near) / (far - near)
    p[2, 3] = -2.0 * far * near / (far - near)
    p[3, 2] = -1.0
    return p


def orthographic(width: float, aspect: float = 1.0, near: float = DEFAULT_NEAR, far: float = DEFAULT_FAR) -> np.ndarray:
    """OpenGL orthographic projection showing `width` world units across (Blender's ortho_scale)."""
    p = np.eye(4)
    p[0, 0] = 2.0 / width
    p[1, 1] = 2.0 * aspect / width
    p[2, 2] = -2.0 / (far - near)
    p[2, 3] = -(far + near) / (far - near)
    return p


def look_at(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """(4, 4) world_to_cam of a camera at `eye` looking at `target`, its +Y towards `up`.

    Same as Blender's `to_track_quat('-Z', 'Y')` used by the reference render scripts; when the
    view is parallel to `up` (straight down or up), world +Y serves as up instead."""
    eye = np.asarray(eye, dtype=np.float64)
    forward = np.asarray(target, dtype=np.float64) - eye
    forward /= np.linalg.norm(forward)
    up = np.asarray(up, dtype=np.float64)
    right = np.cross(forward, up)
    if np.linalg.norm(right) < 1e-9:
        right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    true_up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, -forward, eye
    return np.linalg.inv(c2w)


def reference_distance(extents=None) -> float:
    """Camera distance of both reference scripts: (50 / 36) x the normalised bounding-box diagonal."""
    diag = np.sqrt(3.0) if extents is None else float(np.linalg.norm(np.asarray(extents, dtype=np.float64)))
    return LENS_MM / SENSOR_MM * diag


def orbit_rig(azimuths_deg, elevations_deg, size: int, distance: float, fov_x: float = REFERENCE_FOV_X) -> CameraRig:
    """Cameras on a sphere around the origin: x = d cos(el) cos(az), y = d cos(el) sin(az), z = d sin(el)."""
    az = np.radians(np.asarray(azimuths_deg, dtype=np.float64))
    el = np.radians(np.asarray(elevations_deg, dtype=np.float64))
    eyes = distance * np.stack([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)], axis=1)
    return rig_from_positions(eyes, size, fov_x)


def rig_from_positions(eyes, size: int, fov_x: float = REFERENCE_FOV_X) -> CameraRig:
    w2c = np.stack([look_at(e) for e in np.asarray(eyes, dtype=np.float64)])
    return CameraRig(w2c, perspective(fov_x), size, size)


def sampart3d_rig(n_views: int = 16, size: int = 512, extents=None, seed: int = 0) -> CameraRig:
    """SAMPart3D's cameras. 16 views: azimuths 0..315 step 45 with elevations +25/+40 alternating
    (views 0-7) and -25/-40 (views 8-15). 36 views: the 6 axis views plus 30 random views drawn
    like the release's `get_random_points_on_sphere` (18 at the full distance, 12 at half),
    from a fixed seed."""
    d = reference_distance(extents)
    if n_views == 16:
        az = np.tile(np.arange(8) * 45.0, 2)
        el = np.array([25.0, 40.0] * 4 + [-25.0, -40.0] * 4)
        return orbit_rig(az, el, size, d)
    if n_views == 36:
        axes = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], np.float64) * d
        rng = np.random.default_rng(seed)
        radius = np.r_[np.full(18, d), np.full(12, 0.5 * d)]
        theta = rng.uniform(0.0, 2.0 * np.pi, 30)
        phi = rng.uniform(0.0, 0.5 * np.pi, 30)
        flip = np.where(rng.integers(0, 2, 30) == 1, -1.0, 1.0)
        rand = radius[:, None] * np.stack(
            [np.sin(phi) * np.cos(theta), np.sin(phi) * np.sin(theta), np.cos(phi) * flip], axis=1
        )
        return rig_from_positions(np.concatenate([axes, rand]), size)
    raise ValueError(f"SAMPart3D renders 16 or 36 views, not {n_views}")


def geosam2_rig(size: int = 1024, start_azimuth_deg: float = 180.0, extents=None) -> CameraRig:
    """GeoSAM2's ring: 12 views, azimuth +30 degrees per view from `start_azimuth_deg`,
    elevations cycling 0, +25, 0, -25; view k + 6 is opposite view k."""
    az = start_azimuth_deg + 30.0 * np.arange(12)
    el = np.tile([0.0, 25.0, 0.0, -25.0], 3)
    return orbit_rig(az % 360.0, el, size, reference_distance(extents))


def rig_from_matrices(view_matrices, proj_matrices, width: int, height: int) -> CameraRig:
    """Any cameras given as OpenGL view (world -> camera) and projection matrices, e.g. Blender's
    `region_3d.view_matrix` / `window_matrix` or `camera.matrix_world.inverted()` /
    `camera.calc_matrix_camera(...)`. A single projection is shared by all views."""
    return CameraRig(view_matrices, proj_matrices, width, height)


@dataclass
class Normalization:
    """normalized = (v + offset) * scale; `extents` is the normalised bounding-box size (max side 1)."""

    scale: float
    offset: np.ndarray  # (3,)
    extents: np.ndarray | None = None  # (3,)

    def apply(self, points) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) + self.offset) * self.scale

    def inverse(self, points) -> np.ndarray:
        """Normalised coordinates back to the user's coordinates."""
        return np.asarray(points, dtype=np.float64) / self.scale - self.offset

    @property
    def matrix(self) -> np.ndarray:
        """(4, 4) original -> normalised."""
        m = np.eye(4) * self.scale
        m[3, 3] = 1.0
        m[:3, 3] = self.offset * self.scale
        return m


def normalize_for_rendering(vertices) -> tuple[np.ndarray, Normalization]:
    """Scale so the longest bounding-box side is 1 and centre the box at the origin (as both
    reference render scripts). Returns the normalised vertices and the transform to map back."""
    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise ValueError(f"vertices must be a non-empty (V, 3) array, got {v.shape}")
    lo, hi = v.min(axis=0), v.max(axis=0)
    longest = float((hi - lo).max())
    scale = 1.0 / longest if longest > 0 else 1.0
    offset = -(lo + hi) / 2.0
    norm = Normalization(scale, offset, (hi - lo) * scale)
    return norm.apply(v), norm
