r"""What the surface looks like, on the wire: the optional appearance arrays of `upload_mesh`.

Names, in the fixed order in which they join the mesh id (`segparts.mesh.mesh_hash`):

| array | shape | dtype |
|---|---|---|
| `vertex_colors` | (V, 3\|4) | uint8 0..255 or float in [0, 1] |
| `corner_colors` | (F, 3, 3\|4) | colour per triangle corner (Blender's CORNER colour attributes) |
| `face_colors` | (F, 3\|4) | colour per triangle |
| `uv` | (F, 3, 2) | float, per triangle corner, any range (the texture repeats) |
| `texture` | (H, W, 3\|4) | uint8, row 0 = top (v = 1); at most MAX_TEXTURE_SIDE per side |
| `normals` | (V, 3) or (F, 3, 3) | float, the mesh's own shading normals (per vertex, or split per triangle corner) |

`uv` and `texture` come together. In canonical form (what is hashed and stored) float arrays are
float32 and uint8 arrays stay uint8; `segparts.client.mesh_id` canonicalises the same way.
The renderer uses the first present of: texture, corner, vertex, face colours; and `normals`,
when present, instead of its 30-degree auto smooth (as Blender shows the file's or object's own normals).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .mesh import APPEARANCE_ARRAYS, MeshError

COLOR_ARRAYS = ("vertex_colors", "corner_colors", "face_colors")
MAX_TEXTURE_SIDE = 4096


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
    normals: np.ndarray | None = None  # the file's shading normals, (V, 3) or (F, 3, 3): rendered as given

    @classmethod
    def from_trimesh(cls, tm) -> Appearance | None:
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


def canonical(name: str, values) -> np.ndarray:
    """The form an appearance array is hashed and stored in: floats as float32, uint8 kept."""
    values = np.asarray(values)
    if name == "texture" and values.dtype.kind == "f":  # a float image (files): to 8 bits
        values = np.round(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    if values.dtype.kind == "f" or name == "uv":
        return np.ascontiguousarray(values, dtype="<f4")
    return np.ascontiguousarray(values)


def wire_arrays(appearance, faces) -> dict[str, np.ndarray]:
    """Canonical named arrays of an `Appearance` (per-vertex UVs spread to triangle corners);
    empty for None. This is what an upload sends and what the mesh id covers."""
    if appearance is None:
        return {}
    out = {}
    for name in COLOR_ARRAYS:
        values = getattr(appearance, name, None)
        if values is not None:
            out[name] = canonical(name, values)
    uv, texture = getattr(appearance, "uv", None), getattr(appearance, "texture", None)
    if uv is not None and texture is not None:
        uv = np.asarray(uv)
        out["uv"] = canonical("uv", uv if uv.ndim == 3 else uv[np.asarray(faces, dtype=np.int64)])
        out["texture"] = canonical("texture", texture)
    normals = getattr(appearance, "normals", None)
    if normals is not None:
        out["normals"] = canonical("normals", normals)
    return out


def from_wire(arrays: dict, n_vertices: int, n_faces: int):
    """Validate the appearance arrays of an upload against its mesh and build a
    `Appearance` (canonical copies, detached from the message), or None when none came.
    Raises MeshError("bad_appearance") with what is wrong."""
    arrays = {name: np.asarray(arrays[name]) for name in APPEARANCE_ARRAYS if arrays.get(name) is not None}
    if not arrays:
        return None
    if ("uv" in arrays) != ("texture" in arrays):
        raise _bad("uv and texture go together: send both or neither")
    leading = {"vertex_colors": (n_vertices,), "corner_colors": (n_faces, 3), "face_colors": (n_faces,)}
    for name, lead in leading.items():
        if name in arrays:
            _check_colors(name, arrays[name], lead)
    if "uv" in arrays:
        _check_uv(arrays["uv"], n_faces)
        _check_texture(arrays["texture"])
    if "normals" in arrays:
        _check_normals(arrays["normals"], n_vertices, n_faces)
    return Appearance(**{name: np.array(canonical(name, values), copy=True) for name, values in arrays.items()})


def _bad(message: str) -> MeshError:
    return MeshError("bad_appearance", message)


def _check_colors(name: str, values: np.ndarray, lead: tuple) -> None:
    shape = "(" + ", ".join(map(str, lead)) + ", 3|4)"
    if values.shape[:-1] != lead or values.shape[-1:] not in ((3,), (4,)):
        raise _bad(f"{name} must have shape {shape}, got {values.shape}")
    if values.dtype == np.uint8:
        return
    if values.dtype.kind != "f":
        raise _bad(f"{name} must be uint8 (0..255) or float (0..1), got dtype {values.dtype}")
    if not np.isfinite(values).all():
        raise _bad(f"{name} has NaN or infinite values")
    if values.size and (values.min() < 0.0 or values.max() > 1.0):
        raise _bad(f"float {name} must lie in [0, 1], found [{values.min():.3g}, {values.max():.3g}]")


def _check_uv(uv: np.ndarray, n_faces: int) -> None:
    if uv.shape != (n_faces, 3, 2):
        raise _bad(f"uv must have one (u, v) per triangle corner, shape ({n_faces}, 3, 2), got {uv.shape}")
    if uv.dtype.kind != "f":
        raise _bad(f"uv must be float, got dtype {uv.dtype}")
    if not np.isfinite(uv).all():
        raise _bad("uv has NaN or infinite values")


def _check_normals(normals: np.ndarray, n_vertices: int, n_faces: int) -> None:
    if normals.shape not in ((n_vertices, 3), (n_faces, 3, 3)):
        raise _bad(
            f"normals must have shape ({n_vertices}, 3) per vertex or ({n_faces}, 3, 3) per triangle "
            f"corner, got {normals.shape}"
        )
    if normals.dtype.kind != "f":
        raise _bad(f"normals must be float, got dtype {normals.dtype}")
    if not np.isfinite(normals).all():
        raise _bad("normals have NaN or infinite values")


def _check_texture(texture: np.ndarray) -> None:
    if texture.ndim != 3 or texture.shape[2] not in (3, 4):
        raise _bad(f"texture must have shape (H, W, 3|4), got {texture.shape}")
    if texture.dtype != np.uint8:
        raise _bad(f"texture must be uint8, got dtype {texture.dtype}")
    h, w = texture.shape[:2]
    if min(h, w) < 1 or max(h, w) > MAX_TEXTURE_SIDE:
        raise _bad(f"texture is {w}x{h}; each side must be 1..{MAX_TEXTURE_SIDE} (downscale it)")
