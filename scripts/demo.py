#!/usr/bin/env python3
"""`make demo`: headless Blender segments a procedural robot through the add-on and a real backend.

    python build_addon.py --local && python scripts/demo.py [--out demo_out]

Installs the BUILT extension zip (dist/) into a temporary Blender user folder, builds a sample
mesh made here (a robot assembled from primitives around a smooth bevelled body — not benchmark
data), presses the add-on's Segment operator with the default engine (the add-on starts
`segparts serve` with this Python), waits for the result through the add-on's timer function,
and writes demo_out/segmented.blend and demo_out/segmented.png (Workbench, parts in their
preview colours).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("BLENDER_USER_RESOURCES", tempfile.mkdtemp(prefix="segparts-demo-user-"))
os.environ.setdefault("SEGPARTS_RUNTIME_DIR", os.path.join(os.environ["BLENDER_USER_RESOURCES"], "runtime"))

import bpy  # noqa: E402  (after the environment above: Blender reads it at import)

MODULE = "bl_ext.user_default.segment_parts"


def find_zip(dist: Path) -> Path:
    sys.path.insert(0, str(ROOT))
    import build_addon

    name = build_addon.local_platform().replace("-", "_")
    zips = sorted(dist.glob(f"segment_parts-*-{name}.zip"))
    if not zips:
        print(f"demo: no add-on zip in {dist}; building it (python build_addon.py --local)")
        zips = build_addon.build([build_addon.local_platform()], dist)
    return zips[-1]


def install(zip_path: Path):
    t0 = time.perf_counter()
    result = bpy.ops.extensions.package_install_files(
        filepath=str(zip_path), repo="user_default", enable_on_install=True
    )
    if result != {"FINISHED"} or MODULE not in bpy.context.preferences.addons:
        raise SystemExit(f"demo: installing {zip_path} failed: {result}")
    print(f"demo: installed and enabled {zip_path.name} in {time.perf_counter() - t0:.2f} s")
    prefs = bpy.context.preferences.addons[MODULE].preferences
    prefs.python_path = sys.executable  # the project's venv: segparts is installed there
    prefs.port = 0  # a free port
    prefs.device = "cpu"
    return importlib.import_module(MODULE + ".runtime")


# ---- the sample mesh ----------------------------------------------------------------------------
def _add(op, name, **kw):
    op(**kw)
    obj = bpy.context.active_object
    obj.name = name
    return obj


def build_robot():
    """A robot: smooth bevelled body, head, eyes, antenna, limbs, hands, feet — one mesh of
    separate pieces (each a different shape and size), like a kit-bashed asset."""
    m = bpy.ops.mesh
    pieces = [
        _add(m.primitive_cube_add, "body", size=1.0, location=(0, 0, 1.6), scale=(0.9, 0.55, 1.0)),
        _add(m.primitive_uv_sphere_add, "head", radius=0.42, location=(0, 0, 2.55), segments=32, ring_count=16),
        _add(m.primitive_uv_sphere_add, "eye_l", radius=0.08, location=(-0.15, -0.37, 2.62), segments=16, ring_count=8),
        _add(m.primitive_uv_sphere_add, "eye_r", radius=0.08, location=(0.15, -0.37, 2.62), segments=16, ring_count=8),
        _add(
            m.primitive_uv_sphere_add,
            "antenna",
            radius=1.0,
            location=(0, 0, 3.12),
            scale=(0.04, 0.04, 0.26),
            segments=12,
            ring_count=12,
        ),
        _add(m.primitive_uv_sphere_add, "antenna_ball", radius=0.08, location=(0, 0, 3.45), segments=16, ring_count=8),
        _add(
            m.primitive_uv_sphere_add,
            "arm_l",
            radius=1.0,
            location=(-0.72, 0, 1.62),
            scale=(0.13, 0.13, 0.52),
            segments=24,
            ring_count=16,
        ),
        _add(
            m.primitive_uv_sphere_add,
            "arm_r",
            radius=1.0,
            location=(0.72, 0, 1.62),
            scale=(0.13, 0.13, 0.52),
            segments=24,
            ring_count=16,
        ),
        _add(m.primitive_uv_sphere_add, "hand_l", radius=0.17, location=(-0.72, 0, 1.0), segments=24, ring_count=12),
        _add(m.primitive_uv_sphere_add, "hand_r", radius=0.17, location=(0.72, 0, 1.0), segments=24, ring_count=12),
        _add(
            m.primitive_uv_sphere_add,
            "leg_l",
            radius=1.0,
            location=(-0.25, 0, 0.62),
            scale=(0.16, 0.16, 0.46),
            segments=24,
            ring_count=16,
        ),
        _add(
            m.primitive_uv_sphere_add,
            "leg_r",
            radius=1.0,
            location=(0.25, 0, 0.62),
            scale=(0.16, 0.16, 0.46),
            segments=24,
            ring_count=16,
        ),
        _add(m.primitive_cube_add, "foot_l", size=1.0, location=(-0.25, -0.1, 0.08), scale=(0.3, 0.45, 0.16)),
        _add(m.primitive_cube_add, "foot_r", size=1.0, location=(0.25, -0.1, 0.08), scale=(0.3, 0.45, 0.16)),
    ]
    body = pieces[0]
    bevel = body.modifiers.new("Bevel", "BEVEL")  # a smooth, rounded body
    bevel.width, bevel.segments = 0.18, 5
    subsurf = body.modifiers.new("Smooth", "SUBSURF")
    subsurf.levels = 1
    for obj in bpy.context.view_layer.objects:
        obj.select_set(obj in pieces)
    bpy.context.view_layer.objects.active = body
    with bpy.context.temp_override(active_object=body, selected_editable_objects=pieces, selected_objects=pieces):
        for obj in pieces:
            with bpy.context.temp_override(object=obj, active_object=obj):
                for mod in list(obj.modifiers):
                    bpy.ops.object.modifier_apply(modifier=mod.name)
        bpy.ops.object.join()
    robot = bpy.context.view_layer.objects.active
    robot.name = robot.data.name = "Robot"
    with bpy.context.temp_override(active_object=robot, object=robot, selected_editable_objects=[robot]):
        bpy.ops.object.transform_apply(location=False, rotation=True, scale=True)
        bpy.ops.object.shade_smooth()
    return robot


def setup_render(robot, out_png: Path):
    scene = bpy.context.scene
    scene.render.engine = "BLENDER_WORKBENCH"
    shading = scene.display.shading
    shading.light, shading.color_type = "STUDIO", "MATERIAL"
    shading.show_cavity, shading.show_object_outline = True, True
    scene.render.resolution_x, scene.render.resolution_y = 1000, 1000
    scene.render.film_transparent = False
    scene.world = scene.world or bpy.data.worlds.new("World")
    scene.world.color = (0.92, 0.92, 0.94)
    cam_data = bpy.data.cameras.new("Camera")
    cam = bpy.data.objects.new("Camera", cam_data)
    scene.collection.objects.link(cam)
    scene.camera = cam
    cam_data.lens = 50
    cam.location = (3.6, -6.4, 3.4)
    target = (0.0, 0.0, 1.65)
    direction = [t - c for t, c in zip(target, cam.location)]
    from mathutils import Vector

    cam.rotation_euler = Vector(direction).to_track_quat("-Z", "Y").to_euler()
    scene.render.filepath = str(out_png)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Segment a procedural robot with the add-on and render it.")
    ap.add_argument("--out", type=Path, default=ROOT / "demo_out")
    ap.add_argument("--dist", type=Path, default=ROOT / "dist")
    ap.add_argument("--engine", default="geometric")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)

    bpy.ops.wm.read_factory_settings(use_empty=True)
    runtime = install(find_zip(args.dist))
    robot = build_robot()
    print(f"demo: sample mesh 'Robot': {len(robot.data.polygons)} faces, {len(robot.data.vertices)} vertices")

    t0 = time.perf_counter()
    session = runtime.ensure_started()
    runtime.run_until_idle(timeout=120)
    if not session.ready:
        print(f"demo: backend did not start: {session.message}", file=sys.stderr)
        return 1
    print(f"demo: {session.message} (started in {time.perf_counter() - t0:.1f} s)")
    bpy.context.view_layer.objects.active = robot
    bpy.context.scene.segparts_engine = args.engine
    t0 = time.perf_counter()
    if bpy.ops.segparts.segment() != {"FINISHED"}:
        return 1
    runtime.run_until_idle(timeout=300)
    parts = robot.segparts.parts
    if "part_id" not in robot.data.attributes or not parts:
        print(f"demo: segmentation failed: {runtime.message()}", file=sys.stderr)
        return 1
    print(
        f"demo: {runtime.message()} in {time.perf_counter() - t0:.2f} s; "
        f"worst timer tick {runtime.tick_stats['worst_s'] * 1000:.1f} ms"
    )
    for it in parts:
        print(f"  {it.name}: {it.face_count} faces, {it.vertex_count} vertices")

    setup_render(robot, args.out / "segmented.png")
    blend = args.out / "segmented.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(blend))
    bpy.ops.render.render(write_still=True)
    runtime.shutdown()
    print(f"demo: wrote {blend} and {args.out / 'segmented.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
