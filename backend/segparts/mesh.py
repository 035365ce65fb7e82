"""The triangle mesh every engine works on, its validation and its content hash.

A `Mesh` is always triangulated. When the source had polygons, `face_map[i]` is the index of the
original polygon that triangle i came from, so labels can be reported per original polygon.

`material` and `group` (optional, (F,) int32 per triangle) are authoring cues: the material of
each face and the object/group it came from (glTF materials and nodes, OBJ `usemtl` and `o`/`g`,
PLY face properties, Blender's `material_index`). Ids are arbitrary non-negative integers; engines
use only which faces share an id, so one id on every face says nothing and counts as no cue. They
ARE part of the content hash: the same geometry with other materials is another input. Absent
arrays leave the id of the geometry unchanged.

`marked_edges` (optional, (F, 3) bool; edge k of triangle i runs from corner k to corner k+1) are
the edges the artist marked: Blender's sharp edges, UV seams and UV island borders. Engines may
settle borders on them; they are part of the content hash like the other cues.

`appearance` (optional, a `segparts.appearance.Appearance`) carries the surface colours (a file's,
or an upload's appearance arrays, see `segparts.appearance`) to the renderer. It IS part of the
content hash, in its canonical wire form: what the engines see is the input, so the same shape
with other colours is another mesh (a coloured re-upload never reuses a grey mesh's results).
Without colours the id is the geometry's (and cues') id, as before.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

DEFAULT_MAX_FACES = 5_000_000
# Coordinates beyond this cannot be normalised without overflow (squared distances, areas, cross
# products of float64 need ~1e154 of headroom); real meshes are many orders of magnitude smaller.
MAX_COORDINATE = 1e100
FACE_CUES = ("material", "group")  # optional per-face integer arrays: the authoring cues
EDGE_CUES = ("marked_edges",)  # optional (F, 3) 0/1 per triangle edge: the edges the artist marked
CUES = FACE_CUES + EDGE_CUES  # in hash order
# optional appearance arrays, in hash order (segparts.appearance validates them)
APPEARANCE_ARRAYS = ("vertex_colors", "corner_colors", "face_colors", "uv", "texture", "normals")


class MeshError(ValueError):
    """A mesh that cannot be segmented. `code` is stable and goes on the wire."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(eq=False)
class Mesh:
    vertices: np.ndarray  # (V, 3) float64
    faces: np.ndarray  # (F, 3) int64, triangles
    face_map: np.ndarray | None = None  # (F,) int64 original polygon per triangle
    n_polygons: int | None = None  # number of original polygons (== F when face_map is None)
    appearance: object | None = None  # segparts.appearance.Appearance: colours for rendering (hashed)
    material: np.ndarray | None = None  # (F,) int32 material id per triangle (authoring cue)
    group: np.ndarray | None = None  # (F,) int32 object/group id per triangle (authoring cue)
    marked_edges: np.ndarray | None = None  # (F, 3) bool: triangle edges the artist marked (cue)
    _hash: str | None = field(default=None, repr=False)

    @property
    def n_faces(self) -> int:
        return int(self.faces.shape[0])

    @property
    def n_vertices(self) -> int:
        return int(self.vertices.shape[0])

    @property
    def content_hash(self) -> str:
        """Stable id of the content: same vertices, faces, cues and colours give the same id
        (re-upload is free). Set `appearance` before the first call: the id is computed once."""
        if self._hash is None:
            from .appearance import wire_arrays

            self._hash = mesh_hash(self.vertices, self.faces, self.cues, wire_arrays(self.appearance, self.faces))
        return self._hash

    @property
    def cues(self) -> dict[str, np.ndarray]:
        """The authoring cues this mesh carries, by name (only those present)."""
        return {name: getattr(self, name) for name in CUES if getattr(self, name) is not None}

    def polygon_labels(self, face_labels: np.ndarray) -> np.ndarray:
        """Map per-triangle labels to per-original-polygon labels (first triangle wins)."""
        if self.face_map is None:
            return np.asarray(face_labels)
        assert self.n_polygons is not None, "validate_mesh sets n_polygons with a face_map"
        out = np.empty(self.n_polygons, dtype=np.asarray(face_labels).dtype)
        # assigning in reverse order leaves each polygon with its first triangle's label
        out[self.face_map[::-1]] = np.asarray(face_labels)[::-1]
        return out

    def triangle_labels(self, polygon_labels: np.ndarray) -> np.ndarray:
        """Inverse of polygon_labels: per-polygon values spread to their triangles."""
        polygon_labels = np.asarray(polygon_labels)
        return polygon_labels if self.face_map is None else polygon_labels[self.face_map]


def mesh_hash(
    vertices: np.ndarray,
    faces: np.ndarray,
    cues: dict[str, np.ndarray] | None = None,
    appearance: dict[str, np.ndarray] | None = None,
) -> str:
    """Content id of a mesh; `segparts.client.mesh_id` computes the same digest on the client.
    `appearance`: named arrays in canonical form (`segparts.appearance.wire_arrays`)."""
    h = hashlib.sha256()  # SHA-NI makes it ~2x faster than blake2b here (1M faces: ~30 ms)
    v = np.ascontiguousarray(vertices, dtype="<f8")
    f = np.ascontiguousarray(faces, dtype="<i8")
    h.update(np.asarray(v.shape, dtype="<i8").tobytes())
    h.update(v.data.cast("B"))  # no copy of the data
    h.update(np.asarray(f.shape, dtype="<i8").tobytes())
    h.update(f.data.cast("B"))
    for name in CUES:  # fixed order; an absent cue adds nothing (geometry-only ids unchanged)
        if cues and cues.get(name) is not None:
            values = np.ascontiguousarray(cues[name], dtype="<i4")
            h.update(name.encode())
            h.update(values.data.cast("B"))
    for name in APPEARANCE_ARRAYS:  # fixed order; name, dtype, shape and bytes of each present
        if appearance and appearance.get(name) is not None:
            values = np.ascontiguousarray(appearance[name])
            h.update(name.encode())
            h.update(values.dtype.str.encode())
            h.update(np.asarray(values.shape, dtype="<i8").tobytes())
            h.update(values.data.cast("B"))
    return h.hexdigest()[:32]


def validate_mesh(
    vertices,
    faces,
    face_map=None,
    n_polygons=None,
    max_faces: int = DEFAULT_MAX_FACES,
    appearance=None,
    material=None,
    group=None,
    marked_edges=None,
) -> Mesh:
    """Check untrusted arrays and build a Mesh, or raise MeshError with a clear message.

    Degenerate faces (repeated indices, zero area) are allowed: engines must cope with them.
    """
    vertices = np.asarray(vertices)
    faces = np.asarray(faces)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise MeshError("bad_vertices", f"vertices must have shape (V, 3), got {vertices.shape}")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise MeshError("bad_faces", f"faces must have shape (F, 3) triangles, got {faces.shape}")
    if not np.issubdtype(vertices.dtype, np.number) or np.issubdtype(vertices.dtype, np.complexfloating):
        raise MeshError("bad_vertices", f"vertices must be real numbers, got dtype {vertices.dtype}")
    if not np.issubdtype(faces.dtype, np.integer):
        raise MeshError("bad_faces", f"faces must be integers, got dtype {faces.dtype}")
    if faces.shape[0] == 0 or vertices.shape[0] == 0:
        raise MeshError("empty_mesh", "the mesh has no faces" if faces.shape[0] == 0 else "the mesh has no vertices")
    if faces.shape[0] > max_faces:
        raise MeshError("mesh_too_large", f"the mesh has {faces.shape[0]:,} faces; the limit is {max_faces:,}")
    vertices = np.ascontiguousarray(vertices, dtype=np.float64)
    if not np.isfinite(vertices).all():
        bad = int((~np.isfinite(vertices).all(axis=1)).sum())
        raise MeshError("non_finite_vertices", f"{bad} vertices have NaN or infinite coordinates")
    extent = float(np.abs(vertices).max())
    if extent > MAX_COORDINATE:
        raise MeshError(
            "coordinates_too_large",
            f"a coordinate is {extent:.3g}; coordinates must be within ±{MAX_COORDINATE:.0e} (scale the mesh down)",
        )
    lo, hi = int(faces.min()), int(faces.max())
    if lo < 0 or hi >= vertices.shape[0]:
        raise MeshError(
            "face_index_out_of_range",
            f"face indices span [{lo}, {hi}] but there are {vertices.shape[0]} vertices",
        )
    faces = np.ascontiguousarray(faces, dtype=np.int64)
    if face_map is not None:
        face_map = np.ascontiguousarray(face_map, dtype=np.int64)
        if face_map.shape != (faces.shape[0],):
            raise MeshError("bad_face_map", f"face_map must have shape ({faces.shape[0]},), got {face_map.shape}")
        if n_polygons is None:
            n_polygons = int(face_map.max()) + 1
        if face_map.min() < 0 or face_map.max() >= n_polygons:
            raise MeshError("bad_face_map", "face_map refers to polygons outside [0, n_polygons)")
    _check_appearance(appearance, vertices.shape[0], faces.shape[0])
    cues = {
        name: _face_cue(name, values, faces.shape[0]) for name, values in (("material", material), ("group", group))
    }
    return Mesh(
        vertices,
        faces,
        face_map,
        n_polygons if face_map is not None else faces.shape[0],
        appearance,
        material=cues["material"],
        group=cues["group"],
        marked_edges=_edge_marks(marked_edges, faces.shape[0]),
    )


def _face_cue(name: str, values, n_faces: int) -> np.ndarray | None:
    """An authoring cue: one non-negative integer id per triangle (int32), or None."""
    if values is None:
        return None
    values = np.asarray(values)
    if values.shape != (n_faces,):
        raise MeshError(f"bad_{name}", f"{name} must have one id per face, shape ({n_faces},), got {values.shape}")
    if not np.issubdtype(values.dtype, np.integer):
        raise MeshError(f"bad_{name}", f"{name} ids must be integers, got dtype {values.dtype}")
    if n_faces and (values.min() < 0 or values.max() > np.iinfo(np.int32).max):
        raise MeshError(f"bad_{name}", f"{name} ids must be in [0, 2^31), found [{values.min()}, {values.max()}]")
    return np.ascontiguousarray(values, dtype=np.int32)


def _edge_marks(values, n_faces: int) -> np.ndarray | None:
    """Marked triangle edges: 0/1 (or bool) per edge of each triangle, (F, 3) bool, or None."""
    if values is None:
        return None
    values = np.asarray(values)
    if values.shape != (n_faces, 3):
        raise MeshError("bad_marked_edges", f"marked_edges must have shape ({n_faces}, 3), got {values.shape}")
    if values.dtype != bool and not np.issubdtype(values.dtype, np.integer):
        raise MeshError("bad_marked_edges", f"marked_edges must be 0/1 integers or booleans, got dtype {values.dtype}")
    if values.dtype != bool and n_faces and (values.min() < 0 or values.max() > 1):
        raise MeshError("bad_marked_edges", f"marked_edges must be 0 or 1, found [{values.min()}, {values.max()}]")
    return np.ascontiguousarray(values, dtype=bool)


def triangle_edge_ends(faces: np.ndarray) -> np.ndarray:
    """(F, 3, 2) the two corners of each triangle edge, edge k running from corner k to k + 1: the
    edge order of `marked_edges`. Index any per-vertex array with it (`ids[triangle_edge_ends(f)]`)."""
    faces = np.asarray(faces)
    return np.stack([faces, np.roll(faces, -1, axis=1)], axis=2)


def _check_appearance(appearance, n_vertices: int, n_faces: int) -> None:
    """Colour arrays must match the (triangulated) mesh, or rendering would fail much later."""
    if appearance is None:
        return
    sizes = {
        "vertex_colors": (n_vertices,),
        "corner_colors": (n_faces,),
        "face_colors": (n_faces,),
        "uv": (n_vertices, n_faces),
        "normals": (n_vertices, n_faces),
    }
    for name, allowed in sizes.items():
        value = getattr(appearance, name, None)
        if value is not None and len(value) not in allowed:
            raise MeshError(
                "bad_appearance",
                f"{len(value)} {name.replace('_', ' ')} for a mesh with {n_vertices} vertices and {n_faces} faces",
            )


def fan_triangles(corners: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fan-triangulate polygons given as flat corner indices and corners per polygon (all >= 3):
    polygon k becomes triangles (c0, c1, c2), (c0, c2, c3), ... Returns (triangles (T, 3) of the
    corners' values, polygon of each triangle (T,) int64), in polygon order. Vectorised: a million
    quads cost a few numpy calls."""
    corners, counts = np.asarray(corners), np.asarray(counts, dtype=np.int64)
    starts = np.cumsum(counts) - counts
    n_tris = counts - 2
    polygon = np.repeat(np.arange(len(counts)), n_tris)
    j = np.arange(n_tris.sum()) - np.repeat(np.cumsum(n_tris) - n_tris, n_tris) + 1  # fan step 1..k-2
    base = starts[polygon]
    return np.column_stack([corners[base], corners[base + j], corners[base + j + 1]]), polygon
