"""View3D > Sidebar > "Segment Parts" panel, the part list and the preferences layout."""

from __future__ import annotations

import textwrap

import bpy

from . import config, engines, naming_ops, runtime, writeback


class SEGPARTS_UL_parts(bpy.types.UIList):
    bl_idname = "SEGPARTS_UL_parts"

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        row = layout.row(align=True)
        swatch = row.row()
        swatch.ui_units_x = 1.0
        swatch.prop(item, "color", text="")
        swatch.enabled = False
        row.prop(item, "name", text="", emboss=False)
        row.label(text=f"{item.vertex_count} v")
        row.prop(item, "visible", text="", icon="HIDE_OFF" if item.visible else "HIDE_ON", emboss=False)
        op = row.operator(
            "segparts.part_select",
            text="",
            emboss=False,
            icon="RESTRICT_SELECT_OFF" if item.selected else "RESTRICT_SELECT_ON",
        )
        op.part_id = item.part_id


class SEGPARTS_PT_panel(bpy.types.Panel):
    bl_idname = "SEGPARTS_PT_panel"
    bl_label = "Segment Parts"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Segment Parts"

    def draw(self, context):
        layout = self.layout
        s = runtime.current_session()
        _draw_backend(layout, s)
        obj = context.active_object
        col = layout.column()
        col.prop(context.scene, "segparts_engine", text="Engine")
        info = runtime.engine_status().get(context.scene.segparts_engine)
        if info is not None and not info.get("available"):
            box = col.box()
            for line in _wrap(str(info.get("message", "unavailable")), 48):
                box.label(text=line)
            op = box.operator("segparts.fetch_models", icon="IMPORT")
            op.engine = context.scene.segparts_engine
        if obj is None or obj.type != "MESH":
            layout.label(text="Select a mesh object", icon="INFO")
            return
        job = runtime.object_jobs.get(obj.name)
        if job is not None and job.active:
            row = layout.row(align=True)
            row.progress(factor=job.progress, type="BAR", text=f"{job.stage} {job.progress * 100:.0f}%")
            row.operator("segparts.cancel", text="", icon="X")
        else:
            layout.operator("segparts.segment", icon="MOD_EXPLODE")
        text = runtime.message(obj)  # this object's own message, never another's
        if text:
            for i, line in enumerate(_wrap(text, 48)):
                layout.label(text=line, icon="INFO" if i == 0 else "BLANK1")
        props = obj.segparts
        if not props.parts:
            return
        layout.prop(props, "granularity", slider=True)
        layout.template_list("SEGPARTS_UL_parts", "", props, "parts", props, "active_part", rows=6)
        row = layout.row(align=True)
        row.operator("segparts.pick", icon="RESTRICT_SELECT_OFF")
        row.operator("segparts.select_similar", text="Similar", icon="DUPLICATE")
        row.operator("segparts.select_faces", icon="EDITMODE_HLT")
        row = layout.row(align=True)
        row.operator("segparts.merge_parts", text="Merge", icon="AUTOMERGE_ON")
        row.operator("segparts.split_part", text="Split", icon="MOD_EDGESPLIT")
        row.operator("segparts.rename_part", text="Rename", icon="SORTALPHA")
        row = layout.row(align=True)
        row.operator("segparts.assign_material", icon="MATERIAL")
        row.operator("segparts.separate", icon="MOD_EXPLODE")
        row = layout.row(align=True)
        row.operator("segparts.visibility", text="Hide").action = "HIDE"
        row.operator("segparts.visibility", text="Isolate").action = "ISOLATE"
        row.operator("segparts.visibility", text="Show All").action = "REVEAL"
        row = layout.row(align=True)
        row.prop(context.scene, "segparts_preview", text="Preview Colours")
        if writeback.preview_active(obj):
            row.operator("segparts.clear_preview", text="Restore", icon="LOOP_BACK")
        row.operator("segparts.apply_materials", text="Apply", icon="CHECKMARK")
        naming_ops.draw_panel(layout, obj)


def _draw_backend(layout, s):
    box = layout.box()
    state = s.state if s is not None else "off"
    icon = {"ready": "CHECKMARK", "starting": "SORTTIME", "error": "ERROR"}.get(state, "RADIOBUT_OFF")
    for i, line in enumerate(_wrap(s.message if s is not None else "Backend not started", 44)):
        box.label(text=line, icon=icon if i == 0 else "BLANK1")
    if s is not None and s.warning:  # e.g. another backend version than the add-on's
        for i, line in enumerate(_wrap(s.warning, 44)):
            box.label(text=line, icon="ERROR" if i == 0 else "BLANK1")
    row = box.row(align=True)
    if state in ("off", "error"):
        row.operator("segparts.backend_start", text="Restart" if state == "error" else "Start Backend", icon="PLAY")
    else:
        row.operator("segparts.backend_restart", text="Restart", icon="FILE_REFRESH")
    if state in ("starting", "ready") or (s is not None and s.process is not None):
        row.operator("segparts.backend_stop", text="Stop", icon="PAUSE")  # whenever a process of ours exists


def _wrap(text: str, width: int) -> list[str]:
    """At most six lines of at most `width` characters (a longer word keeps its own line)."""
    lines = textwrap.wrap(" ".join(text.split()), width, break_long_words=False, break_on_hyphens=False)
    return lines[:6] or [""]


def draw_preferences(prefs, context):
    layout = prefs.layout
    col = layout.column()
    col.label(text="Backend")
    col.prop(prefs, "python_path")
    row = col.row()
    row.prop(prefs, "host")
    row.prop(prefs, "port")
    row = col.row()
    row.prop(prefs, "auto_start")
    row.prop(prefs, "device")
    col.prop(prefs, "models_dir")
    box = layout.box()
    box.label(text="Set up a backend environment from the copy bundled with the add-on")
    box.prop(prefs, "setup_python")
    box.prop(prefs, "setup_learned")
    task = runtime.setup_task
    if task is not None:
        box.progress(factor=task.progress, type="BAR", text=task.status)
        box.label(text=task.last_line()[:80])
    else:
        box.operator("segparts.setup_backend", icon="CONSOLE")
    box.label(text=f"Log and environment: {config.state_dir()}")
    status = runtime.engine_status() or engines.last_known()
    needing = [name for name in status if engines.models(status, name)]
    row = layout.row()
    if needing:
        row.label(text="Fetch models:")
        for engine in needing:
            row.operator("segparts.fetch_models", text=engines.label(status, engine)).engine = engine
    else:
        row.label(text="Start the backend to fetch the models of its learned engines", icon="INFO")
    naming_ops.draw_preferences(layout, prefs)


CLASSES = (SEGPARTS_UL_parts, SEGPARTS_PT_panel)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
