"""Asking for results and applying them: Segment, prompt picks and new slider positions send their
jobs through the runtime's session, and their answers are written back as timer steps
(generators, see runtime.drain). Also the Preview Colours tick box."""

from __future__ import annotations

import bpy
import numpy as np

from . import (
    background,
    engines,
    jobs,
    mesh_io,
    palette,
    partdata,
    partlist,
    picking,
    pickview,
    runtime,
    similar,
    writeback,
)
from ._shared.client import mesh_id
from ._shared.hierarchy import Hierarchy

_quiet = {"granularity": False, "preview": False}  # set by the add-on, not the user: no re-cut


# ---- Segment ---------------------------------------------------------------------------------------
def start_segment(obj, engine: str) -> None:
    s = runtime.get_session()
    if not s.ready:
        raise RuntimeError(s.message)
    running = runtime.object_jobs
    if obj.name in running and running[obj.name].active:
        raise RuntimeError(f"{obj.name!r} is already being segmented")
    arrays = mesh_io.mesh_arrays(obj, normals=engines.renders(runtime.engine_status(), engine))
    name = obj.name

    def done(job, msg):
        running.pop(name, None)
        runtime.queue_work(
            ("segment", name),
            _apply_segmentation(name, arrays, job.mesh_id, engine, msg),
            on_done=lambda: runtime.undo_push("Segment Parts"),
        )

    def failed(job, text):
        running.pop(name, None)
        runtime.set_message(f"{name}: {text}", name)

    job = jobs.SegmentJob(s, arrays, None, engine, done, failed)
    running[name] = job
    runtime.set_message(f"Segmenting {name} with {engine}…", name)
    # the content hash (~60 MB at 1M faces) in the background thread; the upload starts after it
    runtime.queue_work(
        ("hash", name),
        _start_when_hashed(
            job, background.submit(mesh_id, arrays.vertices, arrays.faces, arrays.cues, arrays.appearance)
        ),
    )


def _start_when_hashed(job, future):
    job.mesh_id = yield from background.wait(future)
    if job.cancelled:
        job._finish_cancelled()
    elif job.active:
        job.start()


def segment_when_ready(obj_name: str, engine: str) -> None:
    """Segment once the backend that is starting is up (or say why it did not come up)."""

    def start(s):
        obj = bpy.data.objects.get(obj_name)
        if s.state != "ready":
            runtime.set_message(f"{obj_name}: {s.message}", obj_name)
        elif obj is not None:
            try:
                start_segment(obj, engine)
            except (RuntimeError, ValueError) as exc:
                runtime.set_message(f"{obj_name}: {exc}", obj_name)

    runtime.when_ready(start)


def _prepare_segmentation(result_arrays: dict, tri_poly, n_poly: int):
    """Triangle result -> polygon labels, polygon-level hierarchy and the matching slider scale.
    Pure numpy: runs in the background thread."""
    poly_labels = partdata.compact_labels(partdata.polygon_labels(result_arrays["labels"], tri_poly, n_poly))
    poly_leaf = partdata.polygon_labels(result_arrays["leaf_labels"], tri_poly, n_poly)
    parent, height = np.array(result_arrays["parent"]), np.array(result_arrays["height"])
    hierarchy = Hierarchy(poly_leaf, parent, height)
    scale = matching_scale(hierarchy, int(poly_labels.max()) + 1)
    return poly_labels, poly_leaf, parent, height, scale


def _live_object(name, n_polygons):
    obj = bpy.data.objects.get(name)
    if obj is None or obj.type != "MESH":
        runtime.set_message(f"{name} is gone; result dropped", name)
        return None
    if len(obj.data.polygons) != n_polygons:
        runtime.set_message(f"{name} changed while it was segmented; segment it again", name)
        return None
    return obj


def _apply_segmentation(name, arrays, mid, engine, msg):
    future = background.submit(_prepare_segmentation, msg.arrays, arrays.tri_poly, arrays.n_polygons)
    poly_labels, poly_leaf, parent, height, scale = yield from background.wait(future)
    obj = _live_object(name, arrays.n_polygons)
    if obj is None:
        return
    partlist.ensure_object_mode(obj)
    writeback.store_hierarchy(obj, poly_leaf, parent, height)
    if writeback.NAMES_PROP in obj:  # names belonged to the previous hierarchy's nodes
        del obj[writeback.NAMES_PROP]
    info = msg.result.get("info") if isinstance(msg.result.get("info"), dict) else {}
    obj[writeback.REPEATS_PROP] = similar.clean_groups(info.get("repeats"), len(parent))
    levels = partdata.slider_levels(height)
    obj[writeback.LEVELS_PROP] = levels.tolist()
    position = partdata.slider_position(levels, scale)
    writeback.store_automatic(obj, poly_labels, position)
    set_granularity_quietly(obj, position)
    yield
    yield from partlist.write_all(obj, poly_labels, arrays.topology)
    obj.segparts.engine, obj.segparts.mesh_id = engine, mid
    obj.segparts.segmentation_id = str(msg.result.get("segmentation_id") or "")
    yield
    obj = _live_object(name, arrays.n_polygons)
    if obj is None:
        return
    if not obj.modifiers:  # the pick tool's index from the arrays at hand, built in the background now
        pickview.prebuild(obj, arrays.vertices, arrays.faces, arrays.tri_poly)
    runtime.set_message(f"{name}: {len(obj.segparts.parts)} parts ({engine})", name)


def matching_scale(hierarchy, n_parts: int) -> float:
    """The cut scale whose number of parts is closest to n_parts (binary search on node heights)."""
    heights = np.unique(hierarchy.height)
    lo, hi = 0, len(heights) - 1
    while lo < hi:  # parts decrease as the scale grows
        mid = (lo + hi) // 2
        if int(hierarchy.active_at_scale(heights[mid]).sum()) > n_parts:
            lo = mid + 1
        else:
            hi = mid
    return float(heights[lo])


# ---- prompt picks (engines whose clicks are prompts) ------------------------------------------------
def start_pick(obj, engine: str, clicks: list[dict]) -> None:
    """Prompt clicks for an engine that answers them itself: the mask it returns becomes a new part."""
    s = runtime.get_session()
    if not s.ready:
        raise RuntimeError(s.message)
    arrays = mesh_io.mesh_arrays(obj, normals=engines.renders(runtime.engine_status(), engine))
    mid = mesh_id(arrays.vertices, arrays.faces, arrays.cues, arrays.appearance)
    name = obj.name
    running = runtime.object_jobs

    def done(job, msg):
        running.pop(name, None)
        runtime.queue_work(
            ("pick", name), _apply_pick(name, arrays, msg), on_done=lambda: runtime.undo_push("Pick Part")
        )

    def failed(job, text):
        running.pop(name, None)
        runtime.set_message(f"{name}: {text}", name)

    job = jobs.PickJob(s, arrays, mid, engine, clicks, done, failed, scale=writeback.current_scale(obj))
    running[name] = job
    job.start()


def _apply_pick(name, arrays, msg):
    obj = bpy.data.objects.get(name)
    if obj is None or len(obj.data.polygons) != arrays.n_polygons:
        runtime.set_message(f"{name} changed; pick dropped", name)
        return
    mask = partdata.polygon_mask(msg.arrays["mask"], arrays.tri_poly, arrays.n_polygons)
    labels = writeback.labels(obj)
    if labels is None:
        labels = np.zeros(arrays.n_polygons, dtype=np.int32)
    labels, new_id = picking.split_off(labels, mask)
    yield
    yield from partlist.write_all(obj, labels, arrays.topology, keep=True)
    partlist.set_selected_parts(obj, {new_id})
    runtime.set_message(f"{name}: picked {int(mask.sum())} faces as {palette.part_name(new_id)}", name)


# ---- the granularity slider ------------------------------------------------------------------------
def set_granularity_quietly(obj, value: float) -> None:
    _quiet["granularity"] = True
    try:
        obj.segparts.granularity = value
    finally:
        _quiet["granularity"] = False


def on_granularity_changed(obj, granularity: float) -> None:
    if _quiet["granularity"]:
        return
    if _scales_on_backend(obj):
        _request_scale(obj.name)
        return
    topo = mesh_io.topology(obj.data)  # read now, in the user's action, not in a timer tick
    _queue_recut(obj.name, granularity, topo)


def _queue_recut(name, granularity, topo, note: str = "") -> None:
    runtime.queue_work(
        ("recut", name), _recut(name, granularity, topo, note), on_done=lambda: runtime.undo_push("Granularity")
    )


def _scales_on_backend(obj) -> bool:
    """Whether a new slider position asks the backend: the result's engine gives every scale its own
    result (SAMPart3D re-clusters its field) and the backend is up to hold that result."""
    props = obj.segparts
    return bool(
        engines.scales_on_backend(runtime.engine_status(), props.engine) and props.segmentation_id and props.mesh_id
    )


def _request_scale(name: str) -> None:
    """Ask the backend for the slider's scale; one request per object at a time: when it answers,
    a slider that moved on meanwhile is asked for again."""
    obj = bpy.data.objects.get(name)
    running = runtime.object_jobs
    if obj is None or (name in running and running[name].active):
        return  # the running request's answer checks the slider again
    scale = writeback.current_scale(obj)
    automatic = writeback.automatic_labels(obj, obj.segparts.granularity)
    if automatic is not None and len(automatic) == len(obj.data.polygons):  # the engine's own first result
        _queue_recut(name, obj.segparts.granularity, mesh_io.topology(obj.data))
        return

    def done(job, msg):
        running.pop(name, None)
        runtime.queue_work(
            ("recut", name), _apply_scale(name, scale, msg), on_done=lambda: runtime.undo_push("Granularity")
        )

    def failed(job, text):  # the backend lost the result (restart, eviction) or went away
        running.pop(name, None)
        here = bpy.data.objects.get(name)
        if here is None or text == "Cancelled":
            runtime.set_message(f"{name}: {text}", name)
            return
        _queue_recut(
            name,
            here.segparts.granularity,
            mesh_io.topology(here.data),
            f"{text}; the slider cuts the stored part tree (segment again to re-cluster)",
        )

    props = obj.segparts
    job = jobs.ScaleJob(runtime.get_session(), props.mesh_id, props.engine, props.segmentation_id, scale, done, failed)
    running[name] = job
    runtime.set_message(f"{name}: re-clustering at scale {scale:.2f}…", name)
    job.start()


def _apply_scale(name, scale, msg):
    """The backend's labels at `scale` replace the cut of the stored tree; a slider that moved on
    while they were computed is asked for again instead."""
    obj = bpy.data.objects.get(name)
    if obj is None:
        return
    if writeback.current_scale(obj) != scale:
        _request_scale(name)
        return
    topo = mesh_io.topology(obj.data)
    _tris, tri_poly = mesh_io.triangles(obj.data, topo)
    tri_labels = msg.arrays["labels"]
    if len(tri_labels) != len(tri_poly):
        runtime.set_message(f"{name} changed since it was segmented; segment it again", name)
        return
    poly_labels = partdata.compact_labels(partdata.polygon_labels(tri_labels, tri_poly, topo.n_polygons))
    yield
    yield from partlist.write_all(obj, poly_labels, topo)
    runtime.set_message(f"{name}: {len(obj.segparts.parts)} parts at scale {scale:.2f} ({obj.segparts.engine})", name)


def _recut(name, granularity, topo, note: str = ""):
    """The stored tree cut at the slider's scale (the engine's own result at its position)."""
    obj = bpy.data.objects.get(name)
    if obj is None:
        return
    arrays = writeback.hierarchy_arrays(obj)
    scale = writeback.current_scale(obj, granularity)
    automatic = writeback.automatic_labels(obj, granularity)  # back at the engine's spot: its own result

    def cut():  # in the background thread: building the tree walks every node
        hierarchy = writeback.make_hierarchy(arrays)
        return None if hierarchy is None else hierarchy.cut(scale=scale)

    if automatic is not None and len(automatic) == topo.n_polygons:
        poly_labels = automatic
    else:
        poly_labels = yield from background.wait(background.submit(cut))
    if poly_labels is None:
        runtime.set_message(f"{name} has no usable part hierarchy; segment it again", name)
        return
    obj = _live_object(name, topo.n_polygons)
    if obj is None:
        return
    yield from partlist.write_all(obj, poly_labels, topo)
    runtime.set_message(f"{name}: {len(obj.segparts.parts)} parts" + (f" ({note})" if note else ""), name)


# ---- Preview Colours -------------------------------------------------------------------------------
def set_preview_quietly(scene, value: bool) -> None:
    _quiet["preview"] = True
    try:
        scene.segparts_preview = value
    finally:
        _quiet["preview"] = False


def on_preview_changed(scene) -> None:
    """The Preview Colours tick box: part colours on or off for every segmented mesh of the scene."""
    if _quiet["preview"]:
        return
    for obj in scene.objects:
        if obj.type != "MESH" or not obj.segparts.parts:
            continue
        partlist.ensure_object_mode(obj)
        if not scene.segparts_preview:
            writeback.clear_preview(obj)
            continue
        poly_labels = writeback.labels(obj)
        if poly_labels is not None and len(poly_labels) == len(obj.data.polygons):
            kept = {it.part_id: 0 for it in obj.segparts.parts if it.material}
            writeback.write_preview_materials(obj, poly_labels, kept)
