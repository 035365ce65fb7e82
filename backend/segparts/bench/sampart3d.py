"""`segparts bench sampart3d`: per-stage times of the SAMPart3D pipeline on this machine.

A procedural ~30k-face object (three spheres and a box) is run through each stage with random
weights (no checkpoints needed): render (16 views, 512 px, Embree or nvdiffrast), automatic masks
(`--mask-model`: the release's SAM ViT-H by default, or a SAM 2.1 model; random weights, 32x32
points; timed on `--mask-views` views and scaled to 16),
PTv3-object forward (15,000 samples -> grid points), grouping-field training (the release's batch
of 90 views x 256 pixels, supervised by the object's part masks; timed over `--train-iterations`
and scaled to 100), HDBSCAN at one scale, face voting. Medians over `--runs`.
"""

from __future__ import annotations

import functools
import json
import statistics
import time

import numpy as np


def register(sub):
    p = sub.add_parser("sampart3d", help="per-stage times of the SAMPart3D pipeline (random weights)")
    p.add_argument("--runs", type=int, default=1)
    p.add_argument(
        "--mask-views", type=int, default=1, help="views to run SAM on (time scaled to 16); 0 skips the stage"
    )
    p.add_argument("--train-iterations", type=int, default=5, help="iterations timed (scaled to 100)")
    p.add_argument(
        "--mask-model",
        default="sam-vit-h",
        help="sam-vit-h (the release's, the paper preset) or a SAM 2.1 name, e.g. sam2.1-hiera-large",
    )
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--json", default=None, metavar="OUT")
    p.set_defaults(func=run)


def bench_mesh():
    """Three spheres and a box, ~30.7k faces; returns (Mesh, part id per face)."""
    import trimesh

    from ..mesh import Mesh

    parts = [
        trimesh.creation.icosphere(5, radius=0.5),
        trimesh.creation.icosphere(4, radius=0.3).apply_translation((0, 0, 0.75)),
        trimesh.creation.icosphere(4, radius=0.15).apply_translation((0.35, 0, 0.9)),
        trimesh.creation.box((0.2, 0.2, 0.2)).apply_translation((0, 0, -0.55)),
    ]
    offsets = np.cumsum([0] + [len(p.vertices) for p in parts[:-1]])
    vertices = np.concatenate([p.vertices for p in parts])
    faces = np.concatenate([p.faces + o for p, o in zip(parts, offsets)])
    part = np.concatenate([np.full(len(p.faces), i) for i, p in enumerate(parts)])
    return Mesh(vertices, faces), part


def _sync():
    """Wait for queued GPU work, so a stage's time is its own (CUDA kernels run asynchronously)."""
    import torch

    if torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timed(fn, label=""):
    _sync()
    t = time.perf_counter()
    out = fn()
    _sync()
    elapsed = time.perf_counter() - t
    if label:
        print(f"  ... {label}: {elapsed:.2f} s", flush=True)
    return out, elapsed


def run_once(args) -> dict:
    import torch

    from ..engines.sampart3d import cluster, grouping
    from ..engines.sampart3d.backbone import PTv3Object, backbone_features
    from ..engines.sampart3d.masks import (
        SAM2_CONFIGS,
        SAM_VIT_H,
        Sam2AutomaticMasks,
        SamAutomaticMasks,
        build_sam_vit_h,
    )
    from ..mesh import Mesh
    from ..render import normalize_for_rendering, render_views, sampart3d_rig

    mesh, part = bench_mesh()
    vertices, norm = normalize_for_rendering(mesh.vertices)
    render_mesh = Mesh(vertices, mesh.faces)
    rig = sampart3d_rig(16, 512, extents=norm.extents)
    out = {"faces": mesh.n_faces}
    views, out["render_s"] = _timed(
        lambda: render_views(render_mesh, rig, outputs=("face_id", "depth", "point", "color", "alpha")), "render"
    )

    if args.mask_views > 0:
        torch.manual_seed(0)
        if args.mask_model == SAM_VIT_H:
            sam = build_sam_vit_h(None, device=args.device)
            generator = SamAutomaticMasks(model=sam, device=args.device)
        else:
            from sam2.build_sam import build_sam2

            sam = build_sam2(SAM2_CONFIGS[args.mask_model], None, device=args.device)
            generator = Sam2AutomaticMasks(model=sam, device=args.device)
        _, t = _timed(lambda: [generator.masks_for_image(views.color[k]) for k in range(args.mask_views)], "masks")
        out["masks_per_view_s"] = t / args.mask_views
        out["masks_16_views_s"] = 16 * out["masks_per_view_s"]
        del sam, generator

    points, out["points_s"] = _timed(lambda: grouping.prepare_points(render_mesh.vertices, render_mesh.faces))
    out["grid_points"] = points.n_grid
    model = PTv3Object().eval().to(args.device)
    backbone = functools.partial(backbone_features, model, points.grid_coord, points.feat, args.device)
    feats, out["backbone_s"] = _timed(backbone, "backbone")
    del backbone
    del model

    fid = views.face_id
    per_view = []
    for k in range(views.n_views):
        img = np.where(fid[k] >= 0, part[np.maximum(fid[k], 0)], -1)
        per_view.append([img == c for c in np.unique(img) if c >= 0] + [fid[k] >= 0])
    groups, out["groups_s"] = _timed(
        lambda: grouping.build_view_groups(points, list(views.point), list(views.mask), per_view)
    )
    cfg = grouping.TrainConfig(iterations=args.train_iterations)
    trained, t = _timed(lambda: grouping.train_field(feats, points.feat, groups, cfg, device=args.device), "training")
    out["training_per_100_it_s"] = t / args.train_iterations * 100
    out["training_paper_5000_it_s"] = out["training_per_100_it_s"] * 50

    field_feats = trained.features(feats, points.feat, 1.0)
    if args.device == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
    labels, out["clustering_one_scale_s"] = _timed(
        lambda: cluster.cluster_points(field_feats, points.grid_xyz), "clustering"
    )
    centroids = render_mesh.vertices[render_mesh.faces].mean(axis=1)
    _, out["voting_s"] = _timed(lambda: cluster.face_labels(labels[points.inverse], points.sample_face, centroids))
    return out


def run(args):
    import torch

    runs = [run_once(args) for _ in range(max(1, args.runs))]
    keys = [k for k in runs[0] if k.endswith("_s")]
    medians = {k: statistics.median(r[k] for r in runs) for k in keys}
    print(
        f"SAMPart3D stages, {runs[0]['faces']} faces, {runs[0]['grid_points']} grid points, device {args.device}, "
        f"torch threads {torch.get_num_threads()}, random weights, median of {len(runs)} run(s)"
    )
    for k in keys:
        print(f"  {k:<28} {medians[k]:10.2f}")
    if "peak_cuda_mb" in runs[0]:
        print(f"  {'peak CUDA memory (MB)':<28} {max(r['peak_cuda_mb'] for r in runs):10.0f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"runs": runs, "median": medians}, fh, indent=1)
