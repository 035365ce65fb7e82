"""`segparts bench geosam2`: GeoSAM2 engine speed with random weights (no checkpoint needed).

Figures (issue 7): time to render and encode the 12 ring views (both Hiera-B+ encoders), time per
click (a pick with 1, 2, 3 ... clicks on the cached views: prompt + propagation around the ring +
lifting), optionally the automatic mode, and peak memory (process max RSS; CUDA peak on GPU).
--size below 1024 is a reduced setting for slow machines (the release works at 1024).
Per-click figures are medians over --clicks picks; wall and process CPU time are both shown
(on a machine shared with other jobs the CPU time is the steadier figure).
"""

from __future__ import annotations

import json
import resource
import statistics
import sys
import time

import numpy as np


def register(sub):
    p = sub.add_parser("geosam2", help="GeoSAM2: encode time for the 12 views, time per click, peak memory")
    p.add_argument(
        "--mesh",
        default=None,
        help="mesh file (default: a Princeton benchmark mesh if present, else a synthetic three-part mesh)",
    )
    p.add_argument("--size", type=int, default=1024, help="image size (1024 = the release; smaller is faster)")
    p.add_argument("--clicks", type=int, default=3, help="number of picks to time (1, 2, ... clicks)")
    p.add_argument("--automatic", action="store_true", help="also time the automatic mode (segment)")
    p.add_argument("--auto-points", type=int, default=4096, help="automatic mask generator points per seed view")
    p.add_argument(
        "--auto-loose",
        action="store_true",
        help="open the generator's IoU/stability thresholds so random weights yield objects to "
        "propagate (timing only; the release's thresholds are 0.7)",
    )
    p.add_argument(
        "--encode-views",
        type=int,
        default=12,
        help="encode only this many views for real and reuse their features for the other views "
        "(for slow CPUs; the 12-view encode time is then extrapolated and says so)",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the figures as JSON")
    p.set_defaults(func=run)


def _default_mesh():
    from pathlib import Path

    from ..mesh import Mesh

    here = Path(__file__).resolve()
    for root in (here.parents[3].parent / "shared", here.parents[3] / "shared"):
        off = root / "benchmarks" / "princeton" / "off" / "1.off"
        if off.is_file():
            from ..meshio import load_mesh

            m = load_mesh(str(off))
            return Mesh(m.vertices, m.faces), f"princeton {off.name}"
    import trimesh

    parts = [trimesh.creation.box((1.0, 0.6, 0.8)), trimesh.creation.icosphere(2, 0.25)]
    parts[1].apply_translation((0, 0, 0.65))
    tm = trimesh.util.concatenate(parts)
    return Mesh(np.asarray(tm.vertices, float), np.asarray(tm.faces, np.int64)), "synthetic box + sphere"


def _encode_some_views(engine, s, k: int) -> None:
    """Encode views 0..k-1 for real; the other views reuse those features cyclically (same
    shapes, so the click path costs the same)."""
    import torch

    from ..engines.geosam2.predictor import MultiViewPredictor
    from ..render import geosam2_inputs

    normal, point = geosam2_inputs(s.views, as_torch=True)
    part = MultiViewPredictor(engine.model(), normal[:k], point[:k])
    part.encode()
    idx = torch.arange(12) % k
    s.predictor = MultiViewPredictor.from_features(engine.model(), [f[idx] for f in part._features], part._pos)
    s.info["encode_s"] = None


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if sys.platform != "darwin" else kb / 2**20


def run(args) -> int:
    import torch

    from ..engines.base import CancelToken, Click, PickRequest, SegmentParams
    from ..engines.geosam2 import GeoSAM2Engine
    from ..mesh import Mesh

    if args.mesh:
        from ..meshio import load_mesh

        m = load_mesh(args.mesh)
        mesh, name = Mesh(m.vertices, m.faces), args.mesh
    else:
        mesh, name = _default_mesh()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    torch.manual_seed(0)
    engine = GeoSAM2Engine(device, image_size=args.size, weights="random")
    figures = {
        "mesh": name,
        "faces": mesh.n_faces,
        "size": args.size,
        "device": device,
        "threads": torch.get_num_threads(),
    }

    t0 = time.perf_counter()
    model = engine.model()
    figures["build_s"] = round(time.perf_counter() - t0, 2)
    s = engine.render_session(mesh)
    figures["render_s"] = s.info["render_s"]
    k = max(1, min(12, args.encode_views))
    c0, t0 = time.process_time(), time.perf_counter()
    if k == 12:
        engine.session(mesh)
    else:
        _encode_some_views(engine, s, k)
    scale = 12 / k
    figures["encoded_views"] = k
    figures["encode_12_views_s"] = round((time.perf_counter() - t0) * scale, 2)
    figures["encode_12_views_cpu_s"] = round((time.process_time() - c0) * scale, 2)
    figures["encoder_calls"] = model.encoder_calls

    # clicks: faces seen best from different views, accumulated as one refined part
    rng = np.random.default_rng(0)
    visible = np.unique(s.views.face_id[s.views.face_id >= 0])
    faces = rng.choice(visible, size=args.clicks, replace=False)
    walls, cpus, clicks = [], [], []
    for i, f in enumerate(faces):
        clicks.append(Click(face=int(f), positive=(i % 2 == 0)))
        c0, t0 = time.process_time(), time.perf_counter()
        engine.pick(mesh, None, PickRequest(list(clicks)), CancelToken())
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    figures["click_s_each"] = [round(w, 3) for w in walls]
    figures["click_s_median"] = round(statistics.median(walls), 3)
    figures["click_cpu_s_median"] = round(statistics.median(cpus), 3)
    figures["encoder_calls_after_clicks"] = model.encoder_calls

    if args.automatic:
        t0 = time.perf_counter()
        options = {"auto_points": args.auto_points}
        if args.auto_loose:
            options.update(auto_pred_iou=-1.0, auto_stability=-1.0)
        seg = engine.segment(mesh, SegmentParams(options=options), lambda f, st: None, CancelToken())
        figures["automatic_s"] = round(time.perf_counter() - t0, 2)
        figures["automatic_objects"] = seg.info["n_objects"]
        figures["automatic_propagated"] = seg.info.get("n_propagated")
        figures["automatic_parts"] = int(seg.labels.max()) + 1

    figures["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    if device == "cuda":
        figures["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)

    print(
        f"GeoSAM2 (random weights) on {name} ({mesh.n_faces} faces), {args.size}² views, device {device}, "
        f"{figures['threads']} torch threads"
    )
    rows = [
        ("build model", figures["build_s"]),
        ("render 12 views", figures["render_s"]),
        (
            "encode 12 views (normal + point encoders)" + ("" if k == 12 else f", from {k} x 12/{k}"),
            figures["encode_12_views_s"],
        ),
        ("  (process CPU time)", figures["encode_12_views_cpu_s"]),
        (f"click, median of {args.clicks} (prompt + ring + lifting)", figures["click_s_median"]),
        ("  (process CPU time)", figures["click_cpu_s_median"]),
    ]
    if args.automatic:
        rows.append(
            (
                f"automatic mode ({figures['automatic_propagated']} propagated, {figures['automatic_objects']} kept)",
                figures["automatic_s"],
            )
        )
    for label, value in rows:
        print(f"  {label:<52s} {value:>9.2f} s")
    print(f"  {'peak memory (max RSS)':<52s} {figures['peak_rss_mb']:>9.0f} MB")
    if "peak_cuda_mb" in figures:
        print(f"  {'peak CUDA memory':<52s} {figures['peak_cuda_mb']:>9.0f} MB")
    print(
        f"  encoder calls: {figures['encoder_calls']} after encoding, "
        f"{figures['encoder_calls_after_clicks']} after {args.clicks} clicks (cached)"
    )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(figures, fh, indent=2)
    return 0
