"""`segparts bench addon`: the Blender add-on's figures, in headless Blender (the `bpy` module).

Needs bpy (Python 3.11, `pip install bpy==5.0.1`) and the built extension zip (dist/, made by
`python build_addon.py --local`; built here when missing). Measures, as medians over --runs:
- install + enable: `extensions.package_install_files(..., enable_on_install=True)` of the zip into
  a fresh temporary user folder, each run in its own process (Blender reads the folder at import);
- write-back of 1M face labels: face attribute `part_id` + per-part preview material slots and
  material indices + `Part_###` vertex groups on a 1M-quad grid, 32 parts (target <= 1 s);
- timer ticks: every call of the add-on's timer function while (a) that 1M write-back is applied
  from the queue and (b) a real backend segments a 20k-face mesh (polling only); worst and median;
- mesh export (`mesh_io.mesh_arrays`: what Segment / a pick reads before uploading) of the 1M grid:
  plain, rotated + mirrored, with a CORNER colour attribute, with a 2048² image texture + UV map
  (the image read once, then from the add-on's cache).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODULE = "bl_ext.user_default.segment_parts"
REPO = Path(__file__).resolve().parents[3]


def register(sub):
    p = sub.add_parser("addon", help="Blender add-on: 1M-label write-back, timer ticks, install + enable (needs bpy)")
    p.add_argument("--zip", default=None, help="extension zip (default: dist/segment_parts-*-<platform>.zip)")
    p.add_argument("--faces", type=int, default=1_000_000)
    p.add_argument("--parts", type=int, default=32)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", default=None, metavar="OUT")
    p.add_argument(
        "--big-faces",
        type=int,
        default=0,
        metavar="N",
        help="also segment a bumpy N-face grid with the real backend: ticks, pick tool start, "
        "Cancel and memory (issue 16's targets; e.g. 1000000)",
    )
    p.add_argument("--install-only", action="store_true", help=argparse.SUPPRESS)  # child of the install timing
    p.set_defaults(func=run)


def _find_zip(path: str | None) -> Path:
    from ..cli import CliError

    if path:
        return Path(path)
    sys.path.insert(0, str(REPO))
    try:
        import build_addon
    except ImportError:
        raise CliError("build_addon.py not found: pass --zip") from None
    try:
        name = build_addon.local_platform().replace("-", "_")
        zips = sorted((REPO / "dist").glob(f"segment_parts-*-{name}.zip"))
        if not zips:
            zips = build_addon.build([build_addon.local_platform()], REPO / "dist")
    except build_addon.BuildError as exc:
        raise CliError(f"could not build the add-on: {exc}") from None
    return zips[-1]


def _import_bpy(user_dir: str):
    from ..cli import CliError

    os.environ["BLENDER_USER_RESOURCES"] = user_dir
    os.environ.setdefault("SEGPARTS_RUNTIME_DIR", os.path.join(user_dir, "runtime"))
    try:
        import bpy
    except ImportError as exc:
        raise CliError(
            f"bpy is not importable here ({exc}); the add-on bench needs `pip install bpy==5.0.1` on Python 3.11"
        ) from None
    return bpy


def _install(bpy, zip_path: Path) -> float:
    t0 = time.perf_counter()
    result = bpy.ops.extensions.package_install_files(
        filepath=str(zip_path), repo="user_default", enable_on_install=True
    )
    seconds = time.perf_counter() - t0
    if result != {"FINISHED"} or MODULE not in bpy.context.preferences.addons:
        raise RuntimeError(f"install failed: {result}")
    return seconds


def run(args) -> int:
    import importlib.util

    from ..cli import CliError

    if importlib.util.find_spec("bpy") is None:
        raise CliError("bpy is not importable here; the add-on bench needs `pip install bpy==5.0.1` on Python 3.11")
    zip_path = _find_zip(args.zip)
    if args.install_only:  # child process of the install timing
        bpy = _import_bpy(tempfile.mkdtemp(prefix="segparts-bench-user-"))
        print(json.dumps({"install_s": _install(bpy, zip_path)}))
        return 0
    installs = []
    for _ in range(args.runs):
        out = subprocess.run(
            [sys.executable, "-m", "segparts", "bench", "addon", "--install-only", "--zip", str(zip_path)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if out.returncode != 0 or not lines:
            print(out.stdout[-2000:], out.stderr[-2000:], file=sys.stderr)
            return 1
        installs.append(json.loads(lines[-1])["install_s"])

    bpy = _import_bpy(tempfile.mkdtemp(prefix="segparts-bench-user-"))
    bpy.ops.wm.read_factory_settings(use_empty=True)
    _install(bpy, zip_path)
    runtime = importlib.import_module(MODULE + ".runtime")
    writeback = importlib.import_module(MODULE + ".writeback")
    figures = {"install_enable_s": installs}
    figures.update(_bench_writeback(bpy, runtime, writeback, args))
    figures.update(_bench_export(bpy, args))
    figures.update(_bench_job_ticks(bpy, runtime, args))
    if args.big_faces:
        figures.update(_bench_big(bpy, runtime, args))
    runtime.shutdown()

    med = {k: statistics.median(v) for k, v in figures.items() if isinstance(v, list) and v}
    print(
        f"segparts bench addon — bpy {bpy.app.version_string}, {args.faces:,} faces, {args.parts} parts, "
        f"medians of {args.runs} runs (shared machine: timings include contention)"
    )
    rows = [
        ("install + enable extension", "install_enable_s", "<= 2 s"),
        ("write-back total (attr + materials + groups)", "writeback_total_s", "<= 1 s"),
        ("  face attribute part_id", "writeback_attribute_s", ""),
        ("  preview materials + indices", "writeback_materials_s", ""),
        ("  vertex groups Part_###", "writeback_groups_s", ""),
        ("worst timer tick, 1M write-back queued", "tick_worst_writeback_s", "<= 20 ms"),
        ("median timer tick, 1M write-back queued", "tick_median_writeback_s", ""),
        ("worst timer tick, polling a running job", "tick_worst_polling_s", "<= 20 ms"),
        ("median timer tick, polling a running job", "tick_median_polling_s", ""),
        ("mesh export, plain", "export_plain_s", ""),
        ("mesh export, rotated + mirrored", "export_mirrored_s", ""),
        ("mesh export, corner colour attribute", "export_corner_colors_s", ""),
        ("mesh export, 2048² texture + UV (cached)", "export_texture_s", ""),
        ("big mesh: Segment, start to parts written", "big_segment_s", ""),
        ("big mesh: worst timer tick, whole Segment", "big_tick_worst_s", "<= 20 ms"),
        ("big mesh: median timer tick, whole Segment", "big_tick_median_s", ""),
        ("big mesh: Segment operator (export + hash)", "big_operator_s", ""),
        ("big mesh: pick tool start, index built ahead", "big_tool_start_s", "<= 0.3 s"),
        ("big mesh: pick tool start, no index yet", "big_tool_start_cold_s", "<= 0.3 s"),
        ("big mesh: pick index build (background)", "big_index_build_s", ""),
        ("big mesh: hover ray cast", "big_cast_s", ""),
        ("big mesh: Cancel to cancelled", "big_cancel_s", "<= 1 s"),
        ("big mesh: Blender memory growth / mesh", "big_memory_ratio", "<= 2x"),
        ("big mesh: the mesh's own arrays (MB)", "big_mesh_mb", ""),
        ("big mesh: RSS growth, Segment + pick (MB)", "big_growth_mb", ""),
    ]
    for label, key, target in rows:
        if key in med:
            v = med[key]
            if key.endswith("_ratio"):
                text = f"{v:8.2f} x "
            elif key.endswith("_mb"):
                text = f"{v:8.0f} MB"
            else:
                text = f"{v * 1000:8.1f} ms" if v < 1 else f"{v:8.2f} s "
            print(f"  {label:46s} {text}  {target}")
    if args.json:
        Path(args.json).write_text(json.dumps({"medians": med, "runs": figures}, indent=1))
    return 0


def _grid(bpy, n_faces: int):
    """A flat grid of about n_faces quads, one object, made with numpy and from_pydata."""
    import numpy as np

    side = int(round(np.sqrt(n_faces)))
    y, x = np.mgrid[0 : side + 1, 0 : side + 1]
    verts = np.column_stack([x.ravel(), y.ravel(), np.zeros(x.size)]).astype(np.float32)
    idx = np.arange((side + 1) ** 2).reshape(side + 1, side + 1)
    quads = np.column_stack([idx[:-1, :-1].ravel(), idx[:-1, 1:].ravel(), idx[1:, 1:].ravel(), idx[1:, :-1].ravel()])
    mesh = bpy.data.meshes.new("Grid")
    mesh.vertices.add(len(verts))
    mesh.vertices.foreach_set("co", verts.ravel())
    mesh.loops.add(quads.size)
    mesh.loops.foreach_set("vertex_index", quads.ravel().astype(np.int32))
    mesh.polygons.add(len(quads))
    mesh.polygons.foreach_set("loop_start", (np.arange(len(quads)) * 4).astype(np.int32))
    mesh.update(calc_edges=True)
    obj = bpy.data.objects.new("Grid", mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    # parts: vertical bands, so every part has borders with shared vertices
    cols = np.tile(np.arange(side), side)
    labels = (cols * 32 // side).astype(np.int32)
    return obj, labels


def _clear(bpy) -> None:
    """Empty the scene (read_factory_settings would also reset the add-on's preferences)."""
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    for mesh in list(bpy.data.meshes):
        bpy.data.meshes.remove(mesh)


def _bench_writeback(bpy, runtime, writeback, args) -> dict:
    import numpy as np

    _clear(bpy)
    obj, labels = _grid(bpy, args.faces)
    labels = (labels * args.parts // 32).astype(np.int32)
    out = {
        k: []
        for k in (
            "writeback_total_s",
            "writeback_attribute_s",
            "writeback_materials_s",
            "writeback_groups_s",
            "tick_worst_writeback_s",
            "tick_median_writeback_s",
        )
    }
    mod = {name: importlib.import_module(f"{MODULE}.{name}") for name in ("mesh_io", "partdata", "background")}
    topo = mod["mesh_io"].topology(obj.data)  # read at the user's action in the add-on (not timed here)
    for run_index in range(args.runs):
        shifted = ((labels + run_index) % args.parts).astype(np.int32)  # every vertex changes group
        old = writeback.labels(obj)
        t0 = time.perf_counter()
        mod["mesh_io"].write_face_attribute(obj.data, writeback.LABEL_ATTR, shifted)
        t1 = time.perf_counter()
        writeback.write_preview_materials(obj, shifted)
        t2 = time.perf_counter()
        known_old = old if len(obj.vertex_groups) else None
        update = mod["partdata"].group_update(known_old, shifted, topo)
        mod["background"].run(writeback._write_group_update(obj, update))
        t3 = time.perf_counter()
        out["writeback_attribute_s"].append(t1 - t0)
        out["writeback_materials_s"].append(t2 - t1)
        out["writeback_groups_s"].append(t3 - t2)
        out["writeback_total_s"].append(t3 - t0)
        assert len(obj.vertex_groups) == args.parts
        # the whole write-back (with the part list) applied from the queue by the timer function
        runtime.queue_work(
            ("bench", run_index),
            importlib.import_module(MODULE + ".partlist").write_all(
                obj, ((shifted + 1) % args.parts).astype(np.int32), topo
            ),
        )
        ticks = _tick_times(runtime, lambda: runtime.work, pause=0.001)
        out["tick_worst_writeback_s"].append(max(ticks))
        out["tick_median_writeback_s"].append(statistics.median(ticks))
    return out


def _bench_export(bpy, args) -> dict:
    """mesh_arrays of the grid in the states the add-on meets (appearance.py, orientation.py)."""
    import numpy as np

    _clear(bpy)
    obj, _ = _grid(bpy, args.faces)
    mesh_io = importlib.import_module(f"{MODULE}.mesh_io")
    rng = np.random.default_rng(0)

    def timed(key: str, expect: set) -> dict:
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            arrays = mesh_io.mesh_arrays(obj)
            times.append(time.perf_counter() - t0)
        assert set(arrays.appearance) == expect, (key, sorted(arrays.appearance))
        return {key: times}

    out = timed("export_plain_s", set())
    obj.rotation_euler, obj.scale = (0.3, 0.2, 0.1), (1.0, -1.0, 1.0)
    bpy.context.view_layer.update()
    out.update(timed("export_mirrored_s", set()))
    colours = obj.data.color_attributes.new("Paint", "BYTE_COLOR", "CORNER")
    obj.data.color_attributes.active_color = colours
    colours.data.foreach_set("color_srgb", rng.random(len(colours.data) * 4).astype(np.float32))
    out.update(timed("export_corner_colors_s", {"corner_colors"}))
    obj.data.uv_layers.new(name="UVMap").uv.foreach_set(
        "vector", rng.random(len(obj.data.loops) * 2).astype(np.float32)
    )
    image = bpy.data.images.new("BenchTexture", 2048, 2048)
    image.pixels.foreach_set(rng.random(2048 * 2048 * 4).astype(np.float32))
    image.pack()  # saved: cached by identity
    material = bpy.data.materials.new("BenchTextured")
    bsdf = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    node = material.node_tree.nodes.new("ShaderNodeTexImage")
    node.image = image
    material.node_tree.links.new(node.outputs["Color"], bsdf.inputs["Base Color"])
    obj.data.materials.append(material)
    out.update(timed("export_texture_s", {"uv", "texture"}))
    return out


def _tick_times(runtime, busy, pause: float) -> list[float]:
    """Run the add-on's timer function by hand while `busy()`; the duration of every tick."""
    ticks = []
    while busy():
        runtime.drain()
        ticks.append(runtime.tick_stats["last_s"])
        time.sleep(pause)
    return ticks


def _bench_job_ticks(bpy, runtime, args) -> dict:
    """Ticks while a real backend segments a 20k-face sphere: the timer only polls."""
    _clear(bpy)
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.python_path, prefs.port, prefs.device = sys.executable, 0, "cpu"
    session = runtime.ensure_started()
    runtime.run_until_idle(timeout=120)
    if not session.ready:
        raise RuntimeError(session.message)
    out = {"tick_worst_polling_s": [], "tick_median_polling_s": []}
    for run_index in range(args.runs):
        bpy.ops.mesh.primitive_uv_sphere_add(segments=200 + run_index, ring_count=50)
        obj = bpy.context.active_object
        importlib.import_module(MODULE + ".results").start_segment(obj, "geometric")
        ticks = _tick_times(runtime, lambda: runtime.object_jobs, pause=0.005)
        out["tick_worst_polling_s"].append(max(ticks))
        out["tick_median_polling_s"].append(statistics.median(ticks))
        runtime.run_until_idle(timeout=60)
    return out


def _rss_mb() -> float:
    """Resident memory of this (Blender) process now, from /proc (Linux), else the peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return float(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _bench_big(bpy, runtime, args) -> dict:
    """One run on a bumpy grid of --big-faces quads through the add-on and a real backend."""
    import gc

    import numpy as np

    pickview = importlib.import_module(MODULE + ".pickview")
    _clear(bpy)
    gc.collect()
    rss0 = _rss_mb()
    obj, _ = _grid(bpy, args.big_faces)
    pos = np.empty(len(obj.data.vertices) * 3, dtype=np.float32)
    obj.data.vertices.foreach_get("co", pos)
    pos = pos.reshape(-1, 3)
    pos[:, 2] = 8 * np.sin(pos[:, 0] / 40) * np.cos(pos[:, 1] / 55)  # hills: something to cut
    obj.data.vertices.foreach_set("co", pos.ravel())
    obj.data.update()
    me = obj.data  # the mesh's own arrays: positions, edges, corner vertex + edge, face offsets
    mesh_mb = (12 * len(me.vertices) + 8 * len(me.edges) + 8 * len(me.loops) + 4 * len(me.polygons)) / 2**20
    rss0 = _rss_mb()  # from here on: what Segment and the pick tool add
    out = {}
    ticks_before = runtime.tick_stats["ticks"]
    t0 = time.perf_counter()
    importlib.import_module(MODULE + ".results").start_segment(obj, "geometric")
    out["big_operator_s"] = [time.perf_counter() - t0]
    ticks = _tick_times(runtime, lambda: runtime.object_jobs or runtime.work, pause=0.005)
    out["big_segment_s"] = [time.perf_counter() - t0]
    if not obj.segparts.parts:
        raise RuntimeError(f"big mesh: segmentation failed: {runtime.message()}")
    out["big_tick_worst_s"], out["big_tick_median_s"] = [max(ticks)], [statistics.median(ticks)]
    del ticks_before
    t1 = time.perf_counter()
    tool = pickview.PickTool(obj, "geometric")
    out["big_tool_start_s"] = [time.perf_counter() - t1]
    tool.ray.wait()
    pickview._rays.pop(obj.name, None)
    t1 = time.perf_counter()
    tool = pickview.PickTool(obj, "geometric")
    out["big_tool_start_cold_s"] = [time.perf_counter() - t1]
    tool.ray.wait()
    out["big_index_build_s"] = [time.perf_counter() - t1]
    casts = []
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.uniform(0, np.sqrt(args.big_faces), 2)
        t1 = time.perf_counter()
        tool.ray.cast_world(obj, (x, y, 100.0), (0.2, 0.1, -1.0))
        casts.append(time.perf_counter() - t1)
    out["big_cast_s"] = [statistics.median(casts)]
    gc.collect()
    growth = _rss_mb() - rss0
    out["big_memory_ratio"] = [growth / mesh_mb]
    out["big_mesh_mb"], out["big_growth_mb"] = [mesh_mb], [growth]
    # Cancel: the geometry changed a little (no cached result), cancel once the job runs
    pos[0, 2] += 1.0
    obj.data.vertices.foreach_set("co", pos.ravel())
    obj.data.update()
    importlib.import_module(MODULE + ".results").start_segment(obj, "geometric")
    job = runtime.object_jobs[obj.name]
    deadline = time.monotonic() + 120
    while job.state not in ("running",) and job.active and time.monotonic() < deadline:
        runtime.drain()
        time.sleep(0.005)
    t1 = time.perf_counter()
    runtime.cancel(obj.name)
    while job.active and time.monotonic() < deadline:
        runtime.drain()
        time.sleep(0.005)
    out["big_cancel_s"] = [time.perf_counter() - t1]
    runtime.run_until_idle(timeout=60)
    return out
