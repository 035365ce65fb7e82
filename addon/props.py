"""Preferences and the per-object part list (bpy properties).

No `from __future__ import annotations` here: Blender evaluates string annotations in a namespace
without this module's globals, so an `update=` callback naming `runtime` would raise NameError.
"""

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    FloatVectorProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from . import editing, naming_ops, partlist, results, runtime, ui


def _session_settings_changed(self, context):
    runtime.configure_from_prefs()


class SegPartsPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    python_path: StringProperty(
        name="Backend Python",
        subtype="FILE_PATH",
        description="Python interpreter that has the segparts backend installed (empty: the one made by "
        "'Set up backend')",
        update=_session_settings_changed,
    )
    host: StringProperty(name="Host", default="127.0.0.1", update=_session_settings_changed)
    port: IntProperty(
        name="Port",
        default=0,
        min=0,
        max=65535,
        description="TCP port of the backend. 0 (default): with Auto-start, each Blender starts its "
        "own backend on a free port; without, connect to `segparts serve` on 5555",
        update=_session_settings_changed,
    )
    auto_start: BoolProperty(
        name="Auto-start",
        default=True,
        description="Start the backend when needed and stop it when Blender exits",
        update=_session_settings_changed,
    )
    device: EnumProperty(
        name="Device",
        items=[("auto", "Auto", "CUDA when present, else CPU"), ("cpu", "CPU", ""), ("cuda", "CUDA", "")],
        default="auto",
        update=_session_settings_changed,
    )
    models_dir: StringProperty(
        name="Models folder",
        subtype="DIR_PATH",
        description="Where model checkpoints are kept (empty: the backend's default)",
        update=_session_settings_changed,
    )
    setup_python: StringProperty(
        name="Python for set-up",
        subtype="FILE_PATH",
        description="Python 3.11+ used to create the backend's virtual environment",
    )
    setup_learned: BoolProperty(
        name="Learned engines (torch)",
        default=False,
        description="Also install torch and the learned engines' dependencies",
    )
    # Name Parts (naming_ops.py): empty URL = off, nothing is sent (SEGPARTS_VLM_* are the fallback)
    vlm_url: StringProperty(
        name="Endpoint URL",
        description="OpenAI-compatible chat-completions base URL of a vision model, e.g. "
        "http://localhost:11434/v1 for Ollama (empty: naming is off)",
    )
    vlm_model: StringProperty(name="Model", description="Model name at that endpoint, e.g. qwen2.5vl:7b")
    vlm_api_key: StringProperty(
        name="API key",
        subtype="PASSWORD",
        description="Sent as a Bearer token (stored in your preferences; SEGPARTS_VLM_API_KEY is used when empty)",
    )
    vlm_views: IntProperty(
        name="Views per part",
        default=3,
        min=1,
        max=8,
        description="Highlighted views of each part in the image sent (plus the whole object)",
    )

    def draw(self, context):
        ui.draw_preferences(self, context)


def _visibility_changed(self, context):
    partlist.on_visibility_changed(self)


def _part_renamed(self, context):
    naming_ops.on_part_renamed(self, context)  # the part's vertex group and material follow the name
    if not partlist.renaming_quietly():  # typed in the list: the name sticks to the part's hierarchy node
        editing.rename_part(self.id_data, self.part_id, self.name)


class SegPartsPart(bpy.types.PropertyGroup):
    part_id: IntProperty(name="Part id")
    name: StringProperty(name="Name", update=_part_renamed)
    color: FloatVectorProperty(name="Colour", subtype="COLOR", size=4, min=0.0, max=1.0)
    vertex_count: IntProperty(name="Vertices")
    face_count: IntProperty(name="Faces")
    visible: BoolProperty(name="Visible", default=True, update=_visibility_changed)
    selected: BoolProperty(name="Selected", default=False)
    material: PointerProperty(name="Material", type=bpy.types.Material)


def _granularity_changed(self, context):
    results.on_granularity_changed(self.id_data, self.granularity)


class SegPartsObject(bpy.types.PropertyGroup):
    parts: CollectionProperty(type=SegPartsPart)
    active_part: IntProperty(name="Active part", default=0)
    granularity: FloatProperty(
        name="Granularity",
        min=0.0,
        max=1.0,
        default=0.5,
        subtype="FACTOR",
        description="Coarse (0) to fine (1): re-cuts the returned part hierarchy, no new segmentation",
        update=_granularity_changed,
    )
    engine: StringProperty(name="Engine of the last result")
    mesh_id: StringProperty(name="Backend mesh id")
    segmentation_id: StringProperty(name="Backend result id", description="Names the result for new scales")


def _engine_items(self, context):
    return runtime.engine_enum_items()


CLASSES = (SegPartsPreferences, SegPartsPart, SegPartsObject)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Object.segparts = PointerProperty(type=SegPartsObject)
    bpy.types.Scene.segparts_engine = EnumProperty(
        name="Engine", items=_engine_items, description="Segmentation engine (availability from the backend)"
    )
    bpy.types.Scene.segparts_preview = BoolProperty(
        name="Preview colours",
        default=True,
        description="Show parts with temporary colour materials (your materials are kept)",
        update=lambda self, context: results.on_preview_changed(self),
    )


def unregister():
    del bpy.types.Scene.segparts_preview
    del bpy.types.Scene.segparts_engine
    del bpy.types.Object.segparts
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
