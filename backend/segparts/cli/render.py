"""`segparts render MESH --rig sampart3d|geosam2 --out DIR [--labels L]`: debug contact sheets.

Writes one PNG per rendered buffer (all views in a grid): shaded colour, face ids, normals,
depth, point map; with --labels (one label per face, .npy or text such as a Princeton .seg):
the labels painted into the views, and the labels lifted back from those view masks through the
same lifting and post-processing the engines use, with the agreement printed.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from . import CliError

TILE_MAX = 256  # contact-sheet tiles are downscaled to at most this many pixels per side


def register(sub):
    p = sub.add_parser("render", help="render a mesh's views (and lifted labels) as PNG contact sheets")
    p.add_argument("mesh", help="mesh file (.obj .off .ply .stl .glb .gltf)")
    p.add_argument("--rig", choices=["sampart3d", "geosam2"], default="geosam2")
    p.add_argument("--views", type=int, default=None, help="SAMPart3D rig: 16 (default) or 36")
    p.add_argument("--size", type=int, default=None, help="image size (default: the rig's, 512 or 1024)")
    p.add_argument("--backend", choices=["auto", "embree", "nvdiffrast"], default="auto")
    p.add_argument("--labels", default=None, help="per-face labels (.npy, or text one per line) to paint and lift")
    p.add_argument("--out", required=True, help="output folder for the PNGs")
    p.add_argument(
        "--up-axis",
        choices=["y", "z"],
        default=None,
        help="the file's up axis (default: Y for .glb/.gltf, Z otherwise); Y-up is turned Z-up",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from ..mesh import Mesh, MeshError
    from ..meshio import load_mesh
    from ..render import geosam2_rig, normalize_for_rendering, render_views, sampart3d_rig

    try:
        mesh = load_mesh(args.mesh, up_axis=args.up_axis)
    except MeshError as exc:
        raise CliError(exc.message) from None
    labels = _read_labels(args.labels, mesh) if args.labels else None
    vertices, norm = normalize_for_rendering(mesh.vertices)
    nmesh = Mesh(vertices, mesh.faces, appearance=mesh.appearance)  # the file's colours in the shaded views
    if args.rig == "sampart3d":
        if args.views not in (None, 16, 36):
            raise CliError("--views must be 16 or 36 for the SAMPart3D rig")
        rig = sampart3d_rig(args.views or 16, args.size or 512, extents=norm.extents)
    else:
        if args.views not in (None, 12):
            raise CliError("the GeoSAM2 rig has 12 views")
        rig = geosam2_rig(args.size or 1024, extents=norm.extents)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    try:
        views = render_views(nmesh, rig, backend=args.backend)
    except RuntimeError as exc:
        raise CliError(str(exc)) from None
    t_render = time.perf_counter() - t0
    sheets = {
        "color": views.color,
        "face_id": id_colors(views.face_id),
        "normal": np.where(views.face_id[..., None] >= 0, np.rint((views.normal + 1) * 127.5), 255).astype(np.uint8),
        "depth": depth_grey(views.depth),
        "point": np.where(views.face_id[..., None] >= 0, np.rint((np.clip(views.point, -1, 1) + 1) * 127.5), 0).astype(
            np.uint8
        ),
    }
    if labels is not None:
        from .. import lifting

        masks = np.where(views.face_id >= 0, labels[np.maximum(views.face_id, 0)], -1).astype(np.int32)
        t1 = time.perf_counter()
        lifted = lifting.lift_masks(nmesh, rig, views, masks)
        t_lift = time.perf_counter() - t1
        cleaned = lifting.postprocess_labels(nmesh, lifted, min_fraction=0.0, split_disconnected=False)
        seen = lifted >= 0
        print(
            f"lifted labels: {seen.mean():.1%} of faces seen, {np.mean(lifted[seen] == labels[seen]):.2%} of those "
            f"match; after fill {np.mean(cleaned == labels):.2%} of all faces match ({t_lift:.2f} s)"
        )
        sheets["labels"] = label_colors(masks)
        sheets["lifted"] = label_colors(np.where(views.face_id >= 0, cleaned[np.maximum(views.face_id, 0)], -1))
    for name, images in sheets.items():
        contact_sheet(images).save(out / f"{name}.png")
    print(
        f"{rig.n_views} views at {rig.width}x{rig.height} ({views.backend}, {t_render:.2f} s) -> "
        f"{', '.join(f'{n}.png' for n in sheets)} in {out}"
    )
    return 0


def _read_labels(path: str, mesh) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise CliError(f"{path}: no such file")
    try:
        labels = np.load(p) if p.suffix == ".npy" else np.loadtxt(p, dtype=np.int64, ndmin=1)
    except Exception as exc:  # noqa: BLE001 - one line for any unreadable file
        raise CliError(f"{path}: cannot read labels ({type(exc).__name__})") from None
    labels = np.asarray(labels).astype(np.int64).ravel()
    if mesh.face_map is not None and len(labels) == mesh.n_polygons:
        labels = mesh.triangle_labels(labels)
    if len(labels) != mesh.n_faces:
        raise CliError(f"{path}: {len(labels)} labels for a mesh with {mesh.n_faces} faces")
    return labels


def id_colors(ids: np.ndarray) -> np.ndarray:
    """Distinct, stable colours per id (a multiplicative hash); -1 is white."""
    h = (ids.astype(np.int64) * 2654435761) & 0xFFFFFF
    rgb = np.stack([(h >> 16) & 255, (h >> 8) & 255, h & 255], axis=-1)
    rgb = 60 + (rgb * 180) // 255  # avoid near-white and near-black
    return np.where(ids[..., None] >= 0, rgb, 255).astype(np.uint8)


def label_colors(labels: np.ndarray) -> np.ndarray:
    """The parts' colours (segparts.palette, as in Blender); -1 is white."""
    from ..palette import part_colours

    return np.where(labels[..., None] >= 0, part_colours(labels)[..., :3], 255).astype(np.uint8)


def depth_grey(depth: np.ndarray) -> np.ndarray:
    """Per view: near dark, far light, background white."""
    out = np.full(depth.shape + (3,), 255, dtype=np.uint8)
    for k in range(len(depth)):
        fg = np.isfinite(depth[k])
        if fg.any():
            d = depth[k][fg]
            t = (d - d.min()) / max(float(d.max() - d.min()), 1e-12)
            out[k][fg] = np.rint(30 + 190 * t)[:, None].astype(np.uint8)
    return out


def contact_sheet(images: np.ndarray, columns: int | None = None):
    """(N, H, W, 3) uint8 -> one PIL image: a grid of views, each numbered."""
    from PIL import Image, ImageDraw

    n, h, w, _ = images.shape
    columns = columns or (4 if n <= 16 else 6)
    scale = min(1.0, TILE_MAX / max(h, w))
    th, tw = max(1, int(h * scale)), max(1, int(w * scale))
    rows = -(-n // columns)
    sheet = Image.new("RGB", (columns * (tw + 2), rows * (th + 2)), (90, 90, 90))
    draw = ImageDraw.Draw(sheet)
    for k in range(n):
        tile = Image.fromarray(images[k])
        if scale < 1.0:
            tile = tile.resize((tw, th), Image.Resampling.BOX)
        x, y = (k % columns) * (tw + 2) + 1, (k // columns) * (th + 2) + 1
        sheet.paste(tile, (x, y))
        draw.text((x + 3, y + 2), str(k), fill=(200, 0, 0))
    return sheet
