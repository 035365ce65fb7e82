"""Reading meshes from files and writing results, keeping the file's face order.

Face-order contract (DESIGN.md, `segparts segment --out x.npy`):
- `.obj .off .ply`: faces in the order they are stored in the file. Polygons (quads, n-gons) are
  fan-triangulated for the engines, and `Mesh.face_map` maps every triangle back to its polygon;
  labels written to `.npy` are then **one per original polygon** (the label of its first triangle),
  so `len(labels) == number of faces in the file`.
- `.stl`: one triangle per facet, in file order.
- `.glb .gltf`: the scene concatenated into one mesh in trimesh's scene-graph order with node
  transforms applied: exactly `trimesh.load(path).dump(concatenate=True)` (trimesh 5:
  `Scene.to_geometry()`), which is how PartObjaverse-Tiny's face labels are indexed.

OBJ/OFF are parsed here, vectorised (trimesh's loaders re-group faces by size or material, which
breaks the order); PLY uses trimesh's header and ASCII parsers and our binary reader (trimesh's
cannot read mixed polygon sizes); binary STL is read from its records (ASCII STL by trimesh);
glTF is loaded by trimesh with process=False so no face is dropped or moved.

Colours: `Mesh.appearance` is set from PLY vertex or face colours and from glTF/GLB vertex
colours, face colours or a base-colour texture with UVs, so renders (SAM's images) show them.
OBJ materials/textures and OFF colours are not read. Colours are part of the mesh id.

Authoring cues (`Mesh.material`, `Mesh.group`, part of the mesh id): glTF/GLB — the material of
each primitive (equal materials share an id) and the scene node it came from; OBJ — `usemtl`
names and the (`o`, `g`) names in force at each face; PLY — integer face properties
`material_index`/`material` and `group`/`object_index`. STL and OFF carry none.

Orientation: engines work Z-up, like Blender. glTF is Y-up by its specification, so `.glb/.gltf`
are turned to Z-up on reading exactly as Blender's importer does ((x, y, z) -> (x, -z, y)) and back
on writing; `up_axis="y"` does the same for an OBJ/PLY/OFF/STL file that was exported Y-up, and
`up_axis="z"` keeps a file's coordinates as stored. Face order is never affected.
"""

from __future__ import annotations

import itertools
import re
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .appearance import Appearance
from .hierarchy import first_use_ids
from .mesh import DEFAULT_MAX_FACES, Mesh, MeshError, fan_triangles, validate_mesh
from .palette import part_colours

MESH_SUFFIXES = (".obj", ".ply", ".off", ".stl", ".glb", ".gltf")
COLOURED_SUFFIXES = (".ply", ".glb")
Y_UP_SUFFIXES = (".glb", ".gltf")  # Y-up by the format's specification
UP_AXES = ("y", "z")


def y_up_to_z_up(points: np.ndarray) -> np.ndarray:
    """Blender's glTF import rotation: (x, y, z) -> (x, -z, y)."""
    return np.column_stack([points[:, 0], -points[:, 2], points[:, 1]])


def z_up_to_y_up(points: np.ndarray) -> np.ndarray:
    """Inverse of y_up_to_z_up (glTF export)."""
    return np.column_stack([points[:, 0], points[:, 2], -points[:, 1]])


def load_mesh(path: str | Path, max_faces: int = DEFAULT_MAX_FACES, up_axis: str | None = None) -> Mesh:
    """Read a mesh file into a validated triangle `Mesh`, or raise MeshError with one clear line.

    `up_axis`: the file's up axis, "y" or "z"; None = the format's own (Y for glTF, else Z).
    Y-up files are turned Z-up, the orientation every engine expects."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in MESH_SUFFIXES:
        raise MeshError(
            "unsupported_format",
            f"{path.name}: unsupported file type {suffix or '(none)'}; use one of {' '.join(MESH_SUFFIXES)}",
        )
    if not path.is_file():
        raise MeshError("unreadable", f"{path}: no such file")
    if path.stat().st_size == 0:
        raise MeshError("empty_mesh", f"{path}: the file is empty")
    if up_axis not in (None, *UP_AXES):
        raise MeshError("bad_up_axis", f"up axis must be one of {', '.join(UP_AXES)}, got {up_axis!r}")
    reader = {
        ".obj": _read_obj,
        ".off": _read_off,
        ".ply": _read_ply,
        ".stl": _read_stl,
        ".glb": _read_scene,
        ".gltf": _read_scene,
    }[suffix]
    try:
        vertices, polygons, *extra = reader(path)
    except MeshError:
        raise
    except Exception as exc:  # parsers raise anything on garbage; report it as one line
        raise MeshError("unreadable", f"{path.name}: cannot read as {suffix[1:].upper()}: {_one_line(exc)}") from None
    appearance = extra[0] if extra else None
    if (up_axis or ("y" if suffix in Y_UP_SUFFIXES else "z")) == "y" and len(vertices):
        vertices = y_up_to_z_up(np.asarray(vertices, dtype=np.float64))
        if appearance is not None and appearance.normals is not None:
            appearance.normals = y_up_to_z_up(appearance.normals)  # a rotation: normals turn alike
    triangles, face_map, n_polygons = _triangulate(polygons)
    cues = extra[1] if len(extra) > 1 else {}
    if face_map is not None:  # per polygon -> per triangle
        if appearance is not None and appearance.face_colors is not None:
            appearance.face_colors = appearance.face_colors[face_map]
        cues = {name: values[face_map] for name, values in cues.items()}
    try:
        return validate_mesh(
            vertices, triangles, face_map, n_polygons, max_faces=max_faces, appearance=appearance, **cues
        )
    except MeshError as exc:
        raise MeshError(exc.code, f"{path.name}: {exc.message}") from None


def _one_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _triangulate(polygons) -> tuple[np.ndarray, np.ndarray | None, int | None]:
    """Triangles pass through untouched (face_map None); anything else is fan-triangulated
    (segparts.mesh.fan_triangles)."""
    if isinstance(polygons, np.ndarray):
        if polygons.shape[0] == 0:
            return np.zeros((0, 3), np.int64), None, None
        if polygons.shape[1] == 3:
            return polygons, None, None
        polygons = (polygons.ravel(), np.full(len(polygons), polygons.shape[1], np.int64))
    items, counts = polygons  # flat corner indices + corners per polygon
    if counts.size == 0:
        return np.zeros((0, 3), np.int64), None, None
    if counts.min() < 3:
        raise MeshError("bad_faces", "a polygon has fewer than 3 corners")
    if (counts == 3).all():
        return items.reshape(-1, 3), None, None
    triangles, face_map = fan_triangles(items, counts)
    return triangles, face_map, len(counts)


def _ragged(polygons) -> tuple[np.ndarray, np.ndarray]:
    """(flat int64 corner indices, int64 corners per polygon) from a sequence of index lists."""
    counts = np.fromiter(map(len, polygons), dtype=np.int64, count=len(polygons))
    items = np.fromiter(itertools.chain.from_iterable(polygons), dtype=np.int64, count=int(counts.sum()))
    return items, counts


# ---- text parsing helpers (vectorised: no Python work per number) ---------------------------
def _numbers(lines: list[str], name: str) -> tuple[np.ndarray, np.ndarray]:
    """All whitespace-separated numbers of `lines` (float64, flat) and how many each line has."""
    text = "\n".join(lines)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # raised on a bad token; caught by the size check
        values = np.fromstring(text, dtype=np.float64, sep=" ") if text.strip() else np.zeros(0)
    counts = _tokens_per_line(text.encode(), len(lines))
    if values.size != counts.sum():
        raise MeshError("unreadable", f"{name}: a line holds something that is not a number")
    return values, counts


def _tokens_per_line(data: bytes, n_lines: int) -> np.ndarray:
    b = np.frombuffer(data, dtype=np.uint8)
    blank = (b == 32) | (b == 9) | (b == 13) | (b == 10)
    starts = np.flatnonzero(~blank & np.r_[True, blank[:-1]])  # first byte of each token
    ends = np.r_[np.flatnonzero(b == 10), len(b)][:n_lines]  # end of each line
    before = np.searchsorted(starts, ends)  # tokens that start before each line's end
    return np.diff(np.r_[0, before]).astype(np.int64)


def _row_items(values: np.ndarray, counts: np.ndarray, first: int, n: np.ndarray) -> np.ndarray:
    """Flat items [first, first + n_i) of every row i of a ragged row layout."""
    row_start = np.cumsum(counts) - counts
    within = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    return values[np.repeat(row_start + first, n) + within]


def _as_indices(values: np.ndarray, name: str) -> np.ndarray:
    idx = values.astype(np.int64)
    if not np.array_equal(idx, values):
        raise MeshError("unreadable", f"{name}: a face index is not an integer")
    return idx


def _polygon_layout(items: np.ndarray, n: np.ndarray):
    """(F, k) when every polygon has k corners, else (flat indices, counts)."""
    if n.size and (n == n[0]).all():
        return items.reshape(len(n), int(n[0]))
    return items, n


# ---- OBJ ---------------------------------------------------------------------------------
_OBJ_RECORDS = ("v ", "v\t", "f ", "f\t", "o ", "o\t", "g ", "g\t", "usemtl")


def _read_obj(path: Path):
    """`v` and `f` records; `f` tokens like 7, 7/1, 7//3, 7/1/3, and negative (relative) indices.
    `usemtl`, `o` and `g` give the faces' material and group ids; other records (vt, vn, ...) are
    ignored: faces stay in file order."""
    name = path.name
    text = path.read_bytes().decode("utf-8", errors="replace").replace("\\\n", " ")
    records = [ln for ln in text.splitlines() if ln.startswith(_OBJ_RECORDS)]
    cues = _obj_cues(records)
    lines = [ln for ln in records if ln[0] in "vf"]
    is_face = np.fromiter((ln[0] == "f" for ln in lines), dtype=bool, count=len(lines))
    v_lines = [ln[2:] for ln, f in zip(lines, is_face) if not f]
    f_lines = [ln[2:] for ln, f in zip(lines, is_face) if f]
    if not v_lines:
        raise MeshError("empty_mesh", f"{name}: the file has no vertices")
    values, counts = _numbers(v_lines, name)
    if counts.min() < 3:
        raise MeshError("unreadable", f"{name}: a vertex line has fewer than 3 coordinates")
    vertices = _row_items(values, counts, 0, np.full(len(counts), 3)).reshape(-1, 3)
    if not f_lines:
        return vertices, np.zeros((0, 3), np.int64), None, {}
    f_values, n = _numbers(re.sub(r"/\S*", "", "\n".join(f_lines)).split("\n"), name)
    idx = _as_indices(f_values, name)
    if (idx == 0).any():
        raise MeshError("unreadable", f"{name}: OBJ face indices start at 1, found 0")
    negative = idx < 0
    if negative.any():  # relative to the vertices defined before that face line
        vertices_before = np.cumsum(~is_face)[is_face]
        idx[negative] += np.repeat(vertices_before, n)[negative] + 1
    return vertices, _polygon_layout(idx - 1, n), None, cues


def _obj_cues(records: list[str]) -> dict[str, np.ndarray]:
    """Per-face material (the `usemtl` name in force) and group (the `o` and `g` names in force)
    ids, numbered in order of first use; a cue the file never sets is left out."""
    kind = np.array([ln[0] for ln in records], dtype="<U1")  # v f o g u(semtl)
    faces = np.flatnonzero(kind == "f")
    names = np.array(
        [ln.split(None, 1)[1].strip() if len(ln.split(None, 1)) > 1 else "" for ln in records], dtype=object
    )

    def in_force(marker: str) -> np.ndarray | None:
        """For each face, the name of the latest `marker` record before it ('' before the first)."""
        where = kind == marker
        if not where.any():
            return None
        last = np.maximum.accumulate(np.where(where, np.arange(len(kind)), -1))[faces]
        return np.where(last >= 0, names[np.maximum(last, 0)], "").astype(str)

    cues = {}
    material = in_force("u")
    if material is not None:
        cues["material"] = first_use_ids(material)
    obj, group = in_force("o"), in_force("g")
    if obj is not None or group is not None:
        blank = np.full(len(faces), "")
        pairs = np.char.add(
            np.char.add(obj if obj is not None else blank, "\x00"), group if group is not None else blank
        )
        cues["group"] = first_use_ids(pairs)
    return cues


# ---- OFF ---------------------------------------------------------------------------------
def _read_off(path: Path):
    """OFF / COFF / NOFF: counts line, vertex lines, then `n i1 .. in [colour]` face lines."""
    name = path.name
    raw = path.read_bytes().decode("utf-8", errors="replace")
    if "#" in raw:
        raw = "\n".join(ln.split("#", 1)[0] for ln in raw.splitlines())
    lines = [ln for ln in raw.splitlines() if ln.strip()]
    if not lines or not lines[0].strip().upper().lstrip("CN").startswith("OFF"):
        raise MeshError("unreadable", f"{name}: not an OFF file (no OFF header)")
    rest = lines[0].split()[1:]  # counts may follow the keyword on the same line
    body = lines[1:]
    if len(rest) < 2:
        if not body:
            raise MeshError("unreadable", f"{name}: the OFF file has no counts line")
        rest, body = body[0].split(), body[1:]
    try:
        n_vertices, n_faces = int(rest[0]), int(rest[1])
    except ValueError:
        raise MeshError("unreadable", f"{name}: the OFF counts line is not numbers: {' '.join(rest)[:60]}") from None
    if n_vertices == 0 or n_faces == 0:
        raise MeshError("empty_mesh", f"{name}: the file declares {n_vertices} vertices and {n_faces} faces")
    if len(body) < n_vertices + n_faces:
        raise MeshError(
            "unreadable", f"{name}: the file is truncated ({len(body)} data lines, {n_vertices + n_faces} declared)"
        )
    values, counts = _numbers(body[:n_vertices], name)
    if counts.min() < 3:
        raise MeshError("unreadable", f"{name}: a vertex line has fewer than 3 coordinates")
    vertices = _row_items(values, counts, 0, np.full(n_vertices, 3)).reshape(-1, 3)
    f_values, f_counts = _numbers(body[n_vertices : n_vertices + n_faces], name)
    n = _as_indices(f_values[np.cumsum(f_counts) - f_counts], name)  # each line starts with its size
    if (n < 1).any() or (f_counts < n + 1).any():
        raise MeshError("unreadable", f"{name}: a face line lists fewer indices than its count")
    items = _as_indices(_row_items(f_values, f_counts, 1, n), name)  # trailing colour values dropped
    return vertices, _polygon_layout(items, n)


# ---- PLY ---------------------------------------------------------------------------------
def _read_ply(path: Path):
    """trimesh's PLY header and ASCII parsers; our own binary body reader, because trimesh's
    assumes every face has as many corners as the first one (Blender writes mixed n-gons)."""
    from trimesh.exchange import ply

    with open(path, "rb") as f:
        elements, is_ascii, _ = ply._parse_header(f)
        if is_ascii:
            ply._ply_ascii(elements, f)
        else:
            _ply_binary_body(elements, f.read(), path.name)
    vertex = elements.get("vertex", {}).get("data")
    if vertex is None or any(k not in _field_names(vertex) for k in "xyz"):
        raise MeshError("unreadable", f"{path.name}: the PLY file has no vertex x/y/z")
    vertices = np.column_stack([np.asarray(vertex[k], dtype=np.float64).ravel() for k in "xyz"])
    face = elements.get("face", {}).get("data")
    key = next((k for k in ("vertex_indices", "vertex_index") if k in _field_names(face)), None)
    if key is None:
        raise MeshError("empty_mesh", f"{path.name}: the PLY file has no faces")
    faces = face[key]
    if isinstance(faces, np.ndarray) and faces.dtype.names:  # binary, equal-length lists: (count, indices)
        faces = faces[faces.dtype.names[-1]]
    appearance = _ply_appearance(vertex, face)
    cues = _ply_cues(face)
    if isinstance(faces, tuple):  # our binary reader, mixed sizes: (flat indices, counts)
        return vertices, faces, appearance, cues
    if isinstance(faces, np.ndarray) and faces.dtype != object:
        return vertices, faces.astype(np.int64).reshape(len(faces), -1), appearance, cues
    polygons = _polygon_layout(*_ragged([np.asarray(p, dtype=np.int64).ravel() for p in faces]))
    return vertices, polygons, appearance, cues


_PLY_CUE_PROPERTIES = {"material": ("material_index", "material"), "group": ("group", "object_index")}


def _ply_cues(face) -> dict[str, np.ndarray]:
    """Integer face properties naming each face's material and group, when the file has them."""
    names = _field_names(face)
    cues = {}
    for cue, candidates in _PLY_CUE_PROPERTIES.items():
        key = next((k for k in candidates if k in names), None)
        if key is not None:
            values = np.asarray(face[key]).ravel()
            if np.issubdtype(values.dtype, np.integer) or (values == np.round(values)).all():
                cues[cue] = values.astype(np.int64)
    return cues


def _ply_appearance(vertex, face):
    """Vertex colours, else face colours (per polygon here; load_mesh spreads them to triangles),
    and the vertex normals nx/ny/nz when the file has them."""
    names = _field_names(vertex)
    normals = (
        np.column_stack([np.asarray(vertex[k], dtype=np.float64).ravel() for k in ("nx", "ny", "nz")])
        if all(k in names for k in ("nx", "ny", "nz"))
        else None
    )
    vertex_colors = _ply_colours(vertex)
    if vertex_colors is not None:
        return _with_normals(Appearance(vertex_colors=vertex_colors), normals)
    face_colors = _ply_colours(face)
    return _with_normals(None if face_colors is None else Appearance(face_colors=face_colors), normals)


def _ply_colours(data) -> np.ndarray | None:
    names = _field_names(data)
    for keys in (("red", "green", "blue"), ("diffuse_red", "diffuse_green", "diffuse_blue"), ("r", "g", "b")):
        if all(k in names for k in keys):
            rgb = np.column_stack([np.asarray(data[k]).ravel() for k in keys])
            if np.issubdtype(rgb.dtype, np.integer):  # uchar 0..255 (ushort 0..65535 is rescaled)
                return (rgb // 257 if rgb.max(initial=0) > 255 else rgb).astype(np.uint8)
            return rgb.astype(np.float64)  # float colours are in [0, 1]
    return None


def _ply_binary_body(elements: dict, buf: bytes, name: str) -> None:
    """Fill elements[*]["data"] (a dict of arrays) up to and including the face element.
    Rows of an element with one list property are located with one pass over the counts;
    the indices are then gathered with numpy."""
    data = np.frombuffer(buf, dtype=np.uint8)
    offset = 0
    for key, element in elements.items():
        props = list(element["properties"].items())
        n = int(element["length"])
        lists = [i for i, (_, dt) in enumerate(props) if "$LIST" in dt]
        if not lists:
            dtype = np.dtype([(k, dt) for k, dt in props])
            if offset + n * dtype.itemsize > len(buf):
                raise MeshError("unreadable", f"{name}: the PLY file is truncated in element {key!r}")
            rows = np.frombuffer(buf, dtype=dtype, count=n, offset=offset)
            element["data"] = {k: rows[k] for k, _ in props}
            offset += n * dtype.itemsize
        elif len(lists) == 1:
            element["data"], offset = _ply_list_rows(buf, data, offset, props, lists[0], n, name, key)
        else:
            raise MeshError("unreadable", f"{name}: PLY element {key!r} has several list properties")
        if key == "face":
            return


def _ply_list_rows(buf: bytes, raw: np.ndarray, offset: int, props, li: int, n: int, name: str, key: str):
    """Rows = fixed scalars before, a list (count + items), fixed scalars after."""
    before = np.dtype([(k, dt) for k, dt in props[:li]]) if li else np.dtype([])
    after = np.dtype([(k, dt) for k, dt in props[li + 1 :]]) if li + 1 < len(props) else np.dtype([])
    count_dt, item_dt = props[li][1].split(",", 1)
    count_dt, item_dt = np.dtype(count_dt.strip()), np.dtype(item_dt.split(")", 1)[1].strip())
    fixed = before.itemsize + count_dt.itemsize + after.itemsize
    starts = np.empty(n, np.int64)
    counts = np.empty(n, np.int64)
    # common case: every row has the first row's count -> all positions at once
    first = int(np.frombuffer(raw, count_dt, 1, offset + before.itemsize)[0]) if n else 0
    row = fixed + first * item_dt.itemsize
    if n and offset + n * row <= len(raw):
        starts[:] = offset + np.arange(n) * row
        pos = starts + before.itemsize
        gathered = raw[pos[:, None] + np.arange(count_dt.itemsize)].copy().view(count_dt).ravel()
        uniform = bool((gathered == first).all())
    else:
        uniform = False
    if uniform:
        counts[:] = first
    else:  # mixed sizes: walk the counts once
        p, b, k, isz = offset, before.itemsize, count_dt.itemsize, item_dt.itemsize
        order: Literal["big", "little"] = "big" if count_dt.byteorder == ">" else "little"
        for i in range(n):
            if p + fixed > len(buf):
                raise MeshError("unreadable", f"{name}: the PLY file is truncated in element {key!r}")
            c = buf[p + b] if k == 1 else int.from_bytes(buf[p + b : p + b + k], order)
            starts[i], counts[i] = p, c
            p += fixed + c * isz
    end = int(starts[-1] + fixed + counts[-1] * item_dt.itemsize) if n else offset
    if end > len(raw):
        raise MeshError("unreadable", f"{name}: the PLY file is truncated in element {key!r}")
    first_item = np.repeat(starts + before.itemsize + count_dt.itemsize, counts)
    within = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    item_pos = first_item + within * item_dt.itemsize
    items = raw[item_pos[:, None] + np.arange(item_dt.itemsize)].copy().view(item_dt).ravel()
    out: dict[str, Any] = {}
    if uniform:
        out[props[li][0]] = items.reshape(n, first)
    else:
        out[props[li][0]] = (items.astype(np.int64), counts)
    # the fixed scalars around the list (e.g. per-face colours)
    after_start = starts + before.itemsize + count_dt.itemsize + counts * item_dt.itemsize
    for layout, row_start in ((before, starts), (after, after_start)):
        for field in layout.names or ():
            assert layout.fields is not None  # a structured dtype with names has fields
            field_dt, field_offset = layout.fields[field][:2]
            pos = (row_start + field_offset)[:, None] + np.arange(field_dt.itemsize)
            out[field] = raw[pos].copy().view(field_dt).ravel()
    return out, end


def _field_names(data) -> tuple:
    """Property names of a parsed PLY element (a dict, or a structured array for binary files)."""
    if data is None:
        return ()
    if isinstance(data, np.ndarray):
        return data.dtype.names or ()
    return tuple(data)


# ---- STL and glTF (trimesh, process=False keeps every face where it is) ---------------------
def _read_stl(path: Path):
    """Binary STL straight from its 50-byte records; ASCII STL through trimesh. The triangle soup
    is welded (exactly equal corners share a vertex): vertices renumbered, faces untouched."""
    data = path.read_bytes()
    n = int.from_bytes(data[80:84], "little") if len(data) >= 84 else -1
    if len(data) == 84 + 50 * n:
        records = np.frombuffer(
            data,
            dtype=np.dtype([("normal", "<f4", 3), ("corners", "<f4", (3, 3)), ("attr", "<u2")]),
            count=n,
            offset=84,
        )
        corners = records["corners"].reshape(-1, 3).astype(np.float64)
    else:
        import trimesh

        tm = trimesh.load_mesh(path, file_type="stl", process=False)
        corners = np.asarray(tm.vertices)[np.asarray(tm.faces)].reshape(-1, 3)
    vertices, inverse = _weld_exact(corners)
    return vertices, inverse.reshape(-1, 3)


def _weld_exact(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unique rows (sorted) and the index of each input row's unique row."""
    if len(points) == 0:
        return points, np.zeros(0, np.int64)
    # return_index makes numpy sort stably: of equal rows (0.0 and -0.0) the first one is kept
    unique, _, inverse = np.unique(points, axis=0, return_index=True, return_inverse=True)
    return unique, inverse.reshape(-1).astype(np.int64)


def _read_scene(path: Path):
    import trimesh

    loaded: Any = trimesh.load(path, process=False)  # a Scene or a Trimesh (trimesh annotates a base class)
    normals = None
    if isinstance(loaded, trimesh.Scene):
        normals = _scene_normals(loaded)  # before dump(), which drops the file's normals
        # same as the deprecated dump(concatenate=True): geometry in graph order, transforms baked
        meshes: list[Any] = [g for g in loaded.dump() if isinstance(g, trimesh.Trimesh) and len(g.faces)]
        if not meshes:
            raise MeshError("empty_mesh", f"{path.name}: the scene has no triangle meshes")
        cues = _scene_cues(meshes)  # before any visual is replaced below
        kinds = {g.visual.kind for g in meshes}
        if len(meshes) > 1 and "texture" in kinds and len(kinds) > 1:
            # trimesh drops all colours when textured and colour-only parts are concatenated:
            # sample the textures at the vertices instead (geometry and face order unchanged)
            for g in meshes:
                if g.visual.kind == "texture":
                    g.visual = g.visual.to_color()
        loaded = trimesh.util.concatenate(meshes)
    else:
        cues = {}
    vertices, faces = np.asarray(loaded.vertices), np.asarray(loaded.faces, dtype=np.int64)
    return vertices, faces, _with_normals(Appearance.from_trimesh(loaded), normals), cues


def _with_normals(appearance, normals):
    """The appearance carrying the file's shading normals (one is made for an uncoloured mesh)."""
    if normals is None:
        return appearance
    appearance = appearance if appearance is not None else Appearance()
    appearance.normals = normals
    return appearance


def _scene_normals(scene) -> np.ndarray | None:
    """(V, 3) vertex normals of the concatenated scene as stored in the file, in world space (the
    same node order and transforms as dump()), or None unless every mesh node carries its own.
    trimesh keeps a file's NORMAL attribute only in the geometry's cache, so that is where to look."""
    out = []
    for node in scene.graph.nodes_geometry:
        transform, name = scene.graph[node]
        geometry = scene.geometry[name]
        if not hasattr(geometry, "faces") or not len(geometry.faces):
            continue
        if "vertex_normals" not in geometry._cache:
            return None
        turned = np.asarray(geometry.vertex_normals, dtype=np.float64) @ np.linalg.inv(np.asarray(transform)[:3, :3])
        out.append(turned / np.maximum(np.linalg.norm(turned, axis=1, keepdims=True), 1e-12))
    return np.concatenate(out) if out else None


def _scene_cues(meshes: list) -> dict[str, np.ndarray]:
    """Per-face material (primitives with equal materials share an id) and scene node (each
    mesh instance of the scene graph is one group), for the concatenated scene."""
    sizes = [len(g.faces) for g in meshes]
    keys = [hash(g.visual.material) if hasattr(g.visual, "material") else 0 for g in meshes]
    material = first_use_ids(np.asarray(keys, dtype=np.int64))
    return {"material": np.repeat(material, sizes), "group": np.repeat(np.arange(len(meshes)), sizes)}


# ---- writing -----------------------------------------------------------------------------
def save_labels(path: str | Path, mesh: Mesh, labels: np.ndarray) -> np.ndarray:
    """Write per-triangle `labels` to `.npy` (int32, one per face of the source file: per
    original polygon when the file had polygons) or `.ply/.glb` (the mesh coloured by part).
    Returns what was written for `.npy`, the per-triangle labels otherwise."""
    path = Path(path)
    labels = np.asarray(labels)
    if labels.shape != (mesh.n_faces,):
        raise ValueError(f"labels must have shape ({mesh.n_faces},), got {labels.shape}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        out = mesh.polygon_labels(labels).astype(np.int32)
        np.save(path, out)
        return out
    if suffix in COLOURED_SUFFIXES:
        save_coloured(path, mesh, labels)
        return labels
    raise ValueError(f"{path.name}: output must be .npy, .ply or .glb")


def save_coloured(path: str | Path, mesh: Mesh, labels: np.ndarray) -> None:
    """`.ply`: shared vertices + per-face colours. `.glb` (no face colours in glTF): every face
    gets its own three vertices coloured by its part. Triangle order is kept in both."""
    import trimesh

    path = Path(path)
    colours = part_colours(labels)
    if path.suffix.lower() == ".glb":
        corners = z_up_to_y_up(mesh.vertices[mesh.faces].reshape(-1, 3))  # glTF is Y-up
        tm = trimesh.Trimesh(
            corners, np.arange(len(corners)).reshape(-1, 3), vertex_colors=np.repeat(colours, 3, axis=0), process=False
        )
    else:
        tm = trimesh.Trimesh(mesh.vertices, mesh.faces, face_colors=colours, process=False)
    data = tm.export(file_type=path.suffix.lower()[1:])
    assert isinstance(data, (bytes, str)), "PLY and glTF exports are bytes"
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


__all__ = ["MESH_SUFFIXES", "MeshError", "load_mesh", "save_coloured", "save_labels"]
