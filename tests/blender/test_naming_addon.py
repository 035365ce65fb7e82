"""Name Parts in headless Blender: the built add-on, its own backend process and a real HTTP
server on 127.0.0.1 that names parts from the images it receives (tests/fake_vlm.py)."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from blender_env import MODULE, bpy, sub

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: the fake endpoint
from fake_vlm import FakeVLM, completion, lamp_parts

ROOT = Path(__file__).resolve().parents[2]
VLM_ENV = ("SEGPARTS_VLM_URL", "SEGPARTS_VLM_MODEL", "SEGPARTS_VLM_API_KEY")


@pytest.fixture(scope="module")
def naming_backend(runtime, tmp_path_factory):
    """The add-on's backend, run from this checkout's backend/ (the venv's editable install may
    point at another one) with a name cache of its own; the previous set-up is restored after."""
    folder = tmp_path_factory.mktemp("naming")
    wrapper = folder / "python"
    wrapper.write_text(
        f"#!/bin/sh\nPYTHONPATH='{ROOT / 'backend'}' SEGPARTS_NAME_CACHE='{folder / 'names.json'}' "
        f"exec '{sys.executable}' \"$@\"\n"
    )
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    prefs = bpy.context.preferences.addons[MODULE].preferences
    saved = {k: os.environ.pop(k) for k in VLM_ENV if k in os.environ}
    before = prefs.python_path
    prefs.python_path = str(wrapper)  # restarts the backend with it
    s = runtime.ensure_started()
    runtime.run_until_idle(timeout=60)
    assert s.ready, s.message
    yield prefs
    prefs.vlm_url = prefs.vlm_model = prefs.vlm_api_key = ""
    prefs.python_path = before
    os.environ.update(saved)


def lamp_object(name="Lamp"):
    vertices, faces, _ = lamp_parts()
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(vertices.tolist(), [], faces.tolist())
    mesh.update()
    obj = bpy.data.objects.new(name, mesh)
    bpy.context.scene.collection.objects.link(obj)
    bpy.context.view_layer.objects.active = obj
    obj.select_set(True)
    return obj


def segment(runtime, obj):
    bpy.context.view_layer.objects.active = obj
    bpy.context.scene.segparts_engine = "geometric"
    assert bpy.ops.segparts.segment() == {"FINISHED"}
    runtime.run_until_idle(timeout=60)
    assert len(obj.segparts.parts) == 4, runtime.message()


def part_heights(obj) -> dict[int, float]:
    """Mean height of each part's polygons (which box a part is)."""
    labels = np.empty(len(obj.data.polygons), dtype=np.int32)
    obj.data.attributes["part_id"].data.foreach_get("value", labels)
    centres = np.empty(len(obj.data.polygons) * 3)
    obj.data.polygons.foreach_get("center", centres)
    z = centres.reshape(-1, 3)[:, 2]
    return {int(p): float(z[labels == p].mean()) for p in np.unique(labels)}


def group_vertices(obj, name) -> set[int]:
    index = obj.vertex_groups[name].index
    return {v.index for v in obj.data.vertices if any(g.group == index for g in v.groups)}


def test_name_parts_off_until_configured(runtime, naming_backend):
    prefs = naming_backend
    prefs.vlm_url = prefs.vlm_model = ""
    obj = lamp_object()
    segment(runtime, obj)
    with FakeVLM() as vlm:
        assert not bpy.ops.segparts.name_parts.poll()
        with pytest.raises(RuntimeError, match="Naming is off"):
            sub(runtime, "naming_ops").start_naming(obj)
    assert vlm.requests == []
    assert [it.name for it in obj.segparts.parts] == [f"Part_{i:03d}" for i in range(4)]


def test_name_parts_names_list_groups_and_separated_objects(runtime, naming_backend):
    prefs = naming_backend
    obj = lamp_object()
    segment(runtime, obj)
    heights = part_heights(obj)
    by_height = sorted(heights, key=heights.get)  # foot, foot, body, cap
    before = {p: group_vertices(obj, f"Part_{p:03d}") for p in heights}
    with FakeVLM() as vlm:
        prefs.vlm_url, prefs.vlm_model, prefs.vlm_api_key = vlm.url, "fake-vision", "sk-blender"
        assert bpy.ops.segparts.name_parts.poll()
        assert bpy.ops.segparts.name_parts() == {"FINISHED"}
        job = runtime.object_jobs.get(obj.name)
        assert job is not None  # runs in the backend; Blender only polls
        runtime.run_until_idle(timeout=120)
    assert len(vlm.requests) == 4 and vlm.requests[0]["headers"]["Authorization"] == "Bearer sk-blender"
    assert "a 3D model of a lamp" in vlm.requests[0]["body"]["messages"][-1]["content"][0]["text"]
    names = {it.part_id: it.name for it in obj.segparts.parts}
    assert {names[by_height[0]], names[by_height[1]]} == {"Foot 1", "Foot 2"}
    assert names[by_height[2]] == "Body" and names[by_height[3]] == "Cap", runtime.message()
    assert "4 parts named by fake-vision at http://127.0.0.1" in runtime.message()
    # vertex groups carry the names, with the same members
    for part, name in names.items():
        assert group_vertices(obj, name) == before[part]
    assert not any(vg.name.startswith("Part_") for vg in obj.vertex_groups)
    # renaming by hand still works, and the group follows
    body = next(it for it in obj.segparts.parts if it.part_id == by_height[2])
    body.name = "Shade"
    assert "Shade" in obj.vertex_groups and "Body" not in obj.vertex_groups
    # a separated part's object is named after it and keeps its group
    sub(runtime, "partlist").set_selected_parts(obj, {by_height[3]})
    assert bpy.ops.segparts.separate() == {"FINISHED"}
    cap = bpy.data.objects.get(f"{obj.name}.Cap")
    assert cap is not None and [vg.name for vg in cap.vertex_groups] == ["Cap"]
    assert cap.segparts.parts[0].name == "Cap"
    assert "Cap" not in obj.vertex_groups and "Shade" in obj.vertex_groups
    assert group_vertices(obj, "Shade") == before[by_height[2]]
    # a new segmentation starts from fresh names; no stale named groups remain
    segment_again = bpy.data.objects.get(obj.name)
    bpy.context.view_layer.objects.active = segment_again
    assert bpy.ops.segparts.segment() == {"FINISHED"}
    runtime.run_until_idle(timeout=60)
    assert sorted(vg.name for vg in obj.vertex_groups) == [it.name for it in obj.segparts.parts]
    assert all(it.name.startswith("Part_") for it in obj.segparts.parts)


def test_failed_part_keeps_its_name_and_names_are_saved(runtime, naming_backend, tmp_path):
    prefs = naming_backend
    obj = lamp_object("Lamp_two")
    for name in ("Brass", "Glass", "Steel", "Felt"):  # the user's materials, one per box: face cues in the mesh id
        obj.data.materials.append(bpy.data.materials.new(name))
    indices = np.repeat(np.arange(4, dtype=np.int32), len(obj.data.polygons) // 4)  # lamp_parts: 4 boxes in order
    obj.data.polygons.foreach_set("material_index", indices)
    segment(runtime, obj)
    heights = part_heights(obj)
    top = max(heights, key=heights.get)

    def no_caps(n, body, verdict):
        if verdict["name"] == "cap":
            return 401, {"error": {"message": "no caps allowed"}}, 0
        return 200, completion(f'{{"name": "{verdict["name"]}"}}'), 0

    with FakeVLM(no_caps) as vlm:
        prefs.vlm_url, prefs.vlm_model = vlm.url, "other-model"  # another model: not from the cache
        assert bpy.ops.segparts.name_parts() == {"FINISHED"}
        runtime.run_until_idle(timeout=120)
    names = {it.part_id: it.name for it in obj.segparts.parts}
    assert names[top] == f"Part_{top:03d}" and f"Part_{top:03d}" in obj.vertex_groups
    assert sorted(n for p, n in names.items() if p != top) == ["Body", "Foot 1", "Foot 2"]
    assert "3 parts named" in runtime.message() and "no caps allowed" in runtime.message()
    # kept in the file
    path = tmp_path / "named.blend"
    bpy.ops.wm.save_as_mainfile(filepath=str(path), copy=True)
    saved = bpy.data.libraries.load(str(path))
    with saved as (data_from, data_to):
        data_to.objects = [obj.name]
    reloaded = data_to.objects[0]
    assert sorted(it.name for it in reloaded.segparts.parts) == sorted(names.values())
    assert "Body" in reloaded.vertex_groups


def test_renaming_follows_to_owned_materials_only(runtime, naming_backend):
    obj = lamp_object("Lamp_three")
    segment(runtime, obj)
    other = lamp_object("Lamp_four")  # shares the preview colour materials
    segment(runtime, other)
    heights = part_heights(obj)
    body, cap = sorted(heights, key=heights.get)[2:]
    items = {it.part_id: it for it in obj.segparts.parts}
    # preview colours are shared by every segmented object: a name never goes to them
    items[body].name = "Shade"
    assert bpy.data.materials.get(f"SegParts Part_{body:03d}") is not None
    assert bpy.data.materials.get("SegParts Shade") is None
    # a new material made for one part follows its name
    bpy.context.view_layer.objects.active = obj
    sub(runtime, "partlist").set_selected_parts(obj, {cap})
    assert bpy.ops.segparts.assign_material(material="__NEW__") == {"FINISHED"}
    assert items[cap].material.name == f"Part Part_{cap:03d}"
    items[cap].name = "Lid"
    assert items[cap].material.name == "Lid"
    # applied part colours used by this object alone follow too
    bpy.data.meshes.remove(other.data)  # (and the object)
    assert bpy.ops.segparts.apply_materials() == {"FINISHED"}
    items[body].name = "Globe"
    assert "SegParts Globe" in [s.material.name for s in obj.material_slots if s.material]
    assert sorted(vg.name for vg in obj.vertex_groups if not vg.name.startswith("Part_")) == ["Globe", "Lid"]


class _Layout:
    """Records what a draw function puts on the screen (the bpy module has no UI to draw into)."""

    def __init__(self):
        self.texts, self.operators = [], []

    def column(self, **_kw):
        return self

    box = row = column

    def label(self, text="", **_kw):
        self.texts.append(text)

    def operator(self, idname, **_kw):
        self.operators.append(idname)
        return self

    def prop(self, *args, **_kw):
        pass


def test_panel_says_who_sees_the_renders(runtime, naming_backend):
    prefs = naming_backend
    naming_ops = sub(runtime, "naming_ops")
    prefs.vlm_url = prefs.vlm_model = ""
    off = _Layout()
    naming_ops.draw_panel(off, None)
    assert "segparts.name_parts" in off.operators and any("Naming off" in t for t in off.texts)
    prefs.vlm_url, prefs.vlm_model, prefs.vlm_api_key = "http://127.0.0.1:11434/v1", "qwen2.5vl:7b", "secret"
    on, pref_page = _Layout(), _Layout()
    naming_ops.draw_panel(on, None)
    naming_ops.draw_preferences(pref_page, prefs)
    assert "Renders go to qwen2.5vl:7b at http://127.0.0.1:11434" in on.texts
    assert any("qwen2.5vl:7b at http://127.0.0.1:11434" in t for t in pref_page.texts)
    assert not any("secret" in t for t in on.texts + pref_page.texts)
    prefs.vlm_url = prefs.vlm_model = prefs.vlm_api_key = ""
