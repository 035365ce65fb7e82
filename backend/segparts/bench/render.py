"""`segparts bench render`: the multi-view renderer and lifting on a 100k-face mesh.

Targets (issue 4, 2-core CPU): 16 views at 512^2 (SAMPart3D rig, every output) <= 1 s;
12 views at 1024^2 normal + point maps (GeoSAM2 rig) <= 3 s; lifting 12 views of masks to
100k faces <= 0.5 s. Each figure is the median over --runs, as wall time and as this process's
CPU time (on a machine shared with other jobs the CPU time is the steadier figure). The
visibility-only rows (Embree ray casting alone) show the floor under each render.
"""

from __future__ import annotations

import json
import statistics
import time

import numpy as np


def register(sub):
    p = sub.add_parser("render", help="multi-view rendering and lifting speed on a 100k-face mesh")
    p.add_argument("--mesh", default=None, help="mesh file instead of the synthetic 100k-face torus")
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--backend", choices=["auto", "embree", "nvdiffrast"], default="auto")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the figures as JSON")
    p.set_defaults(func=run)


def bumpy_torus(major: int = 250, minor: int = 200):
    """A torus with 2 * major * minor triangles (100k by default), its surface rippled so views
    see varied slopes and self-occlusion."""
    import trimesh

    tm = trimesh.creation.torus(major_radius=1.0, minor_radius=0.35, major_sections=major, minor_sections=minor)
    v = np.asarray(tm.vertices)
    ripple = 1.0 + 0.08 * np.sin(9.0 * np.arctan2(v[:, 1], v[:, 0])) * np.cos(5.0 * v[:, 2] / 0.35)
    return v * ripple[:, None], np.asarray(tm.faces)


def timed(fn, runs: int):
    walls, cpus, out = [], [], None
    for _ in range(runs):
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), out


def run(args) -> int:
    from .. import lifting
    from ..mesh import Mesh
    from ..render import geosam2_inputs, geosam2_rig, normalize_for_rendering, raycast, render_views, sampart3d_rig

    if args.mesh:
        from ..meshio import load_mesh

        src = load_mesh(args.mesh)
        vertices, faces, name = src.vertices, src.faces, args.mesh
    else:
        vertices, faces = bumpy_torus()
        name = "bumpy torus"
    v, norm = normalize_for_rendering(vertices)
    mesh = Mesh(v, np.asarray(faces, dtype=np.int64))
    sam = sampart3d_rig(16, 512, extents=norm.extents)
    geo = geosam2_rig(1024, extents=norm.extents)
    runs = max(1, args.runs)
    render_views(mesh, sam, outputs=("face_id",), backend=args.backend)  # build and cache the scene once

    rows = []

    def row(label, target, fn, extra=""):
        wall, cpu, out = timed(fn, runs)
        rows.append(
            {"what": label, "wall_s": round(wall, 4), "cpu_s": round(cpu, 4), "target_s": target, "note": extra}
        )
        return out

    views16 = row(
        "render 16 x 512^2, all outputs (SAMPart3D)", 1.0, lambda: render_views(mesh, sam, backend=args.backend)
    )
    rows[-1]["note"] = f"{(views16.face_id >= 0).mean():.0%} of pixels covered"

    def cold():
        import segparts.render as render_module

        raycast._scene_cache.clear()
        render_module._table_cache.clear()
        return render_views(mesh, sam, backend=args.backend)

    row("  same, first render of a mesh (+ Embree scene, smooth normals)", None, cold)
    row(
        "  visibility only (embree rays)",
        None,
        lambda: raycast.rasterize(mesh.vertices, mesh.faces, sam, cache_key=mesh.content_hash),
    )
    views12 = row(
        "render 12 x 1024^2, normal + point (GeoSAM2)",
        3.0,
        lambda: render_views(mesh, geo, outputs=("face_id", "depth", "alpha", "normal", "point"), backend=args.backend),
    )
    rows[-1]["note"] = f"{(views12.face_id >= 0).mean():.0%} of pixels covered"
    hits = row(
        "  visibility only (embree rays)",
        None,
        lambda: raycast.rasterize(mesh.vertices, mesh.faces, geo, cache_key=mesh.content_hash),
    )
    rows[-1]["note"] = f"{len(hits.lin):,} hits"
    row(
        "  GeoSAM2 encodings (ImageNet normal map, clipped point map)",
        None,
        lambda: geosam2_inputs(views12, as_torch=False),
    )

    # masks: 8 parts by angle around the torus, drawn from the face-id buffer
    angle = np.arctan2(*mesh.vertices[mesh.faces].mean(axis=1)[:, :2].T[::-1])
    part = ((angle + np.pi) / (2 * np.pi) * 8).astype(np.int32) % 8
    masks = np.where(views12.face_id >= 0, part[np.maximum(views12.face_id, 0)], -1).astype(np.int32)
    labels = row(
        f"lift 12 views of masks -> {mesh.n_faces / 1000:.0f}k faces (samples + votes)",
        0.5,
        lambda: lifting.lift_masks(mesh, geo, views12, masks),
    )
    seen = labels >= 0
    rows[-1]["note"] = f"{seen.mean():.1%} faces seen, {np.mean(labels[seen] == part[seen]):.2%} correct"
    samples = lifting.face_visible_samples(mesh, geo, views12)
    row("  votes only (samples reused)", None, lambda: lifting.lift_masks(mesh, geo, views12, masks, samples=samples))
    adj = lifting.face_adjacency(mesh)
    row(
        "post-process (PA 0.02, 64 fills, 3-NN, split)",
        None,
        lambda: lifting.postprocess_labels(mesh, labels, adjacency=adj),
    )

    print(f"segparts bench render: {name}, {mesh.n_faces:,} faces, backend {views16.backend}, median of {runs} runs")
    print(f"{'':58s} {'wall s':>8s} {'cpu s':>8s} {'target':>7s}")
    for r in rows:
        target = f"{r['target_s']:.1f}" if r["target_s"] else ""
        print(f"{r['what']:58s} {r['wall_s']:8.3f} {r['cpu_s']:8.3f} {target:>7s}  {r['note']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"mesh": name, "faces": mesh.n_faces, "backend": views16.backend, "runs": runs, "rows": rows},
                f,
                indent=2,
            )
    return 0
