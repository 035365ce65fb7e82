"""Operators: backend control, segmentation, part editing and the modal pick tool."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, IntProperty, StringProperty

from . import (
    config,
    editing,
    engines,
    mesh_io,
    naming_ops,
    palette,
    partdata,
    partlist,
    pickview,
    results,
    runtime,
    setup,
    writeback,
)


def _mesh_object(context):
    obj = context.active_object
    return obj if obj is not None and obj.type == "MESH" else None


def mesh_problem(obj) -> str:
    """Why `obj` cannot be segmented ("" when it can)."""
    mesh = obj.data
    if len(mesh.polygons) == 0:
        what = (
            "is empty"
            if len(mesh.vertices) == 0
            else "has only loose edges"
            if len(mesh.edges)
            else "has only vertices"
        )
        return f"{obj.name}: no faces to segment (the mesh {what})"
    return ""


def _segmented_object(context):
    obj = _mesh_object(context)
    return obj if obj is not None and len(obj.segparts.parts) > 0 else None


class _OnSegmentedObject:
    """Mixin for the undoable part-editing operators: they need an active, segmented mesh."""

    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return _segmented_object(context) is not None


# ---- backend ---------------------------------------------------------------------------------
class SEGPARTS_OT_backend_start(bpy.types.Operator):
    bl_idname = "segparts.backend_start"
    bl_label = "Start Backend"
    bl_description = "Start (or connect to) the segmentation backend"

    def execute(self, context):
        runtime.ensure_started()
        return {"FINISHED"}


class SEGPARTS_OT_backend_stop(bpy.types.Operator):
    bl_idname = "segparts.backend_stop"
    bl_label = "Stop Backend"
    bl_description = "Stop the backend process started by the add-on"

    def execute(self, context):
        runtime.stop_backend()
        return {"FINISHED"}


class SEGPARTS_OT_backend_restart(bpy.types.Operator):
    bl_idname = "segparts.backend_restart"
    bl_label = "Restart Backend"
    bl_description = "Stop the backend and start it again"

    def execute(self, context):
        runtime.stop_backend()
        runtime.ensure_started()
        return {"FINISHED"}


class SEGPARTS_OT_setup_backend(bpy.types.Operator):
    bl_idname = "segparts.setup_backend"
    bl_label = "Set up Backend"
    bl_description = (
        "Create a virtual environment with the chosen Python and install the backend bundled "
        "with the add-on (log in the extension's user folder)"
    )

    def execute(self, context):
        p = config.prefs()
        python = bpy.path.abspath(p.setup_python) if p and p.setup_python else ""
        venv = config.state_dir() / "venv"
        try:
            task = setup.setup_backend_task(
                python,
                venv,
                config.bundled_backend(),
                config.state_dir() / "setup.log",
                learned=bool(p and p.setup_learned),
            )
            runtime.start_setup_task(task)
        except (ValueError, RuntimeError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class SEGPARTS_OT_fetch_models(bpy.types.Operator):
    bl_idname = "segparts.fetch_models"
    bl_label = "Fetch Models"
    bl_description = "Download this engine's checkpoints with the backend (`segparts models fetch`)"

    engine: StringProperty()

    def execute(self, context):
        p = config.prefs()
        manifest = config.manifest()
        try:
            # what the backend says the engine loads; the manifest's list when it is not running
            names = engines.models(runtime.engine_status(), self.engine) or setup.models_for_engine(
                manifest, self.engine
            )
            task = setup.fetch_models_task(
                config.backend_python(p),
                names,
                self.engine,
                config.state_dir() / f"fetch-{self.engine}.log",
                config.make_config().models_dir,
                manifest,
            )
            runtime.start_setup_task(task)
        except (ValueError, RuntimeError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


# ---- segmentation ----------------------------------------------------------------------------
class SEGPARTS_OT_segment(bpy.types.Operator):
    bl_idname = "segparts.segment"
    bl_label = "Segment"
    bl_description = "Segment the active mesh into parts with the chosen engine (runs in the backend)"
    bl_options = {"REGISTER"}  # the result arrives later and pushes its own undo step

    @classmethod
    def poll(cls, context):
        obj = _mesh_object(context)
        return obj is not None and obj.name not in runtime.object_jobs

    def execute(self, context):
        obj = _mesh_object(context)
        if obj.mode != "OBJECT":  # results are written in Object Mode; Edit Mode would overwrite them
            bpy.ops.object.mode_set(mode="OBJECT")
        problem = mesh_problem(obj)
        if problem:
            runtime.set_message(problem, obj.name)
            self.report({"WARNING"}, problem)
            return {"CANCELLED"}
        s = runtime.ensure_started()
        if not s.ready:
            # not up yet: start the job once hello arrives (the timer does it; nothing waits here)
            results.segment_when_ready(obj.name, context.scene.segparts_engine)
            self.report({"INFO"}, "Starting the backend; segmentation follows")
            return {"FINISHED"}
        try:
            results.start_segment(obj, context.scene.segparts_engine)
        except (RuntimeError, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class SEGPARTS_OT_cancel(bpy.types.Operator):
    bl_idname = "segparts.cancel"
    bl_label = "Cancel"
    bl_description = "Cancel the running segmentation"

    def execute(self, context):
        obj = _mesh_object(context)
        if obj is not None:
            runtime.cancel(obj.name)
        return {"FINISHED"}


class SEGPARTS_OT_clear_preview(bpy.types.Operator):
    bl_idname = "segparts.clear_preview"
    bl_label = "Restore Materials"
    bl_description = "Remove the preview colours and give the object its own materials back"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = _mesh_object(context)
        return obj is not None and writeback.preview_active(obj)

    def execute(self, context):
        writeback.clear_preview(_mesh_object(context))
        results.set_preview_quietly(context.scene, False)  # the other objects keep their colours
        return {"FINISHED"}


class SEGPARTS_OT_apply_materials(_OnSegmentedObject, bpy.types.Operator):
    bl_idname = "segparts.apply_materials"
    bl_label = "Apply Part Materials"
    bl_description = "Keep one material per part as the object's real materials"

    def execute(self, context):
        obj = _segmented_object(context)
        labels = writeback.labels(obj)
        if not writeback.preview_active(obj):
            writeback.write_preview_materials(obj, labels)
        writeback.apply_materials(obj)
        return {"FINISHED"}


# ---- parts -----------------------------------------------------------------------------------
class SEGPARTS_OT_part_select(bpy.types.Operator):
    bl_idname = "segparts.part_select"
    bl_label = "Select Part"
    bl_description = "Select this part (Shift: add to the selection)"
    bl_options = {"REGISTER", "UNDO"}

    part_id: IntProperty()
    extend: BoolProperty(default=False)

    def invoke(self, context, event):
        self.extend = event.shift
        return self.execute(context)

    def execute(self, context):
        obj = _segmented_object(context)
        if obj is None:
            return {"CANCELLED"}
        current = {it.part_id for it in obj.segparts.parts if it.selected}
        mode = partdata.SelectionUpdate("ADD" if self.extend else "SET")
        partlist.set_selected_parts(obj, mode.apply(current, [self.part_id]))
        return {"FINISHED"}


class SEGPARTS_OT_select_faces(_OnSegmentedObject, bpy.types.Operator):
    bl_idname = "segparts.select_faces"
    bl_label = "Edit Part Faces"
    bl_description = "Select the faces of the selected parts in Edit Mode, ready to transform"

    def execute(self, context):
        obj = _segmented_object(context)
        n = editing.select_faces(context, obj, partlist.selected_parts(obj))
        self.report({"INFO"}, f"{n} faces selected")
        return {"FINISHED"}


def _material_items(self, context):
    items = [("__NEW__", "New Material", "A new material for the selected parts", "ADD", 0)]
    for i, mat in enumerate(m for m in bpy.data.materials if not m.name.startswith(writeback.MATERIAL_PREFIX)):
        items.append((mat.name, mat.name, "", "MATERIAL", i + 1))
    _material_items.cache = items
    return items


class SEGPARTS_OT_assign_material(_OnSegmentedObject, bpy.types.Operator):
    bl_idname = "segparts.assign_material"
    bl_label = "Assign Material"
    bl_description = "Give the selected parts an existing or a new material"
    bl_property = "material"

    material: EnumProperty(name="Material", items=_material_items)

    def invoke(self, context, event):
        context.window_manager.invoke_search_popup(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        obj = _segmented_object(context)
        parts = partlist.selected_parts(obj)
        if not parts:
            self.report({"WARNING"}, "No part selected")
            return {"CANCELLED"}
        mat = editing.new_part_material(parts) if self.material == "__NEW__" else bpy.data.materials.get(self.material)
        if mat is None:
            self.report({"ERROR"}, f"No material {self.material!r}")
            return {"CANCELLED"}
        editing.assign_material(obj, parts, mat)
        return {"FINISHED"}


class SEGPARTS_OT_separate(_OnSegmentedObject, bpy.types.Operator):
    bl_idname = "segparts.separate"
    bl_label = "Separate Parts"
    bl_description = "Move each selected part into its own object (origin at the part's centre)"

    def execute(self, context):
        obj = _segmented_object(context)
        naming_ops.restore_group_names(obj)  # the separation finds groups by their canonical names
        new = editing.separate_parts(context, obj, partlist.selected_parts(obj))
        self.report({"INFO"}, f"{len(new)} new objects")
        return {"FINISHED"}


class SEGPARTS_OT_visibility(_OnSegmentedObject, bpy.types.Operator):
    bl_idname = "segparts.visibility"
    bl_label = "Part Visibility"
    bl_description = "Hide the selected parts, show only them (isolate), or show all parts"

    action: EnumProperty(items=[("HIDE", "Hide", ""), ("ISOLATE", "Isolate", ""), ("REVEAL", "Show All", "")])

    def execute(self, context):
        obj = _segmented_object(context)
        every = {it.part_id for it in obj.segparts.parts}
        shown = {it.part_id for it in obj.segparts.parts if it.visible}
        chosen = set(partlist.selected_parts(obj))
        visible = {"HIDE": shown - chosen, "ISOLATE": chosen, "REVEAL": every}[self.action]
        partlist.set_visible_parts(obj, visible)
        return {"FINISHED"}


class SEGPARTS_OT_merge_parts(_OnSegmentedObject, bpy.types.Operator):
    bl_idname = "segparts.merge_parts"
    bl_label = "Merge Parts"
    bl_description = "Make the selected parts one part (kept in the part hierarchy: the slider still works)"

    def execute(self, context):
        obj = _segmented_object(context)
        parts = [it.part_id for it in obj.segparts.parts if it.selected]
        try:
            part = editing.merge_parts(obj, parts)
        except (ValueError, RuntimeError) as exc:
            self.report({"WARNING"}, str(exc))
            return {"CANCELLED"}
        runtime.set_message(f"{obj.name}: merged {len(parts)} parts into {palette.part_name(part)}", obj.name)
        return {"FINISHED"}


class SEGPARTS_OT_split_part(_OnSegmentedObject, bpy.types.Operator):
    bl_idname = "segparts.split_part"
    bl_label = "Split Part"
    bl_description = (
        "Split the active part into its next finer pieces; in Edit Mode, the selected faces become a new part instead"
    )

    def execute(self, context):
        obj = _segmented_object(context)
        try:
            if obj.mode == "EDIT":
                partlist.ensure_object_mode(obj)  # writes the Edit Mode selection back to the mesh
                selected = mesh_io.selected_faces(obj.data)
                part = editing.split_faces(obj, selected)
                text = f"{int(selected.sum())} selected faces are now {palette.part_name(part)}"
            else:
                chosen = partlist.selected_parts(obj)
                if len(chosen) != 1:
                    raise ValueError("select one part to split (or faces in Edit Mode)")
                editing.split_part(obj, chosen[0])
                text = f"split {palette.part_name(chosen[0])} one level finer"
        except (ValueError, RuntimeError) as exc:
            self.report({"WARNING"}, str(exc))
            return {"CANCELLED"}
        runtime.set_message(f"{obj.name}: {text}", obj.name)
        return {"FINISHED"}


class SEGPARTS_OT_rename_part(_OnSegmentedObject, bpy.types.Operator):
    bl_idname = "segparts.rename_part"
    bl_label = "Rename Part"
    bl_description = "Give the active part a name (it stays with the part when the slider moves)"

    name: StringProperty(name="Name")

    def invoke(self, context, event):
        obj = _segmented_object(context)
        items = obj.segparts.parts
        if 0 <= obj.segparts.active_part < len(items):
            self.name = items[obj.segparts.active_part].name
        return context.window_manager.invoke_props_dialog(self)

    def execute(self, context):
        obj = _segmented_object(context)
        items = obj.segparts.parts
        if not self.name.strip() or not 0 <= obj.segparts.active_part < len(items):
            self.report({"WARNING"}, "no part or no name")
            return {"CANCELLED"}
        editing.rename_part(obj, items[obj.segparts.active_part].part_id, self.name.strip())
        return {"FINISHED"}


class SEGPARTS_OT_select_similar(_OnSegmentedObject, bpy.types.Operator):
    bl_idname = "segparts.select_similar"
    bl_label = "Select Similar"
    bl_description = "Also select every copy of the selected parts (repeated pieces the engine recognised)"

    def execute(self, context):
        obj = _segmented_object(context)
        chosen = partlist.selected_parts(obj)
        if not editing.repeat_groups(obj):
            self.report({"INFO"}, "This result has no repeated parts")
            return {"CANCELLED"}
        found = editing.similar_parts(obj, chosen)
        partlist.set_selected_parts(obj, found)
        self.report({"INFO"}, f"{len(found)} parts selected")
        return {"FINISHED"}


# ---- the modal pick tool ---------------------------------------------------------------------
PICK_HELP = "Pick parts: click select · Shift add · Ctrl remove · wheel/+/- coarser/finer · S similar · RMB/Esc done"


class SEGPARTS_OT_pick(bpy.types.Operator):
    bl_idname = "segparts.pick"
    bl_label = "Pick Parts"
    bl_description = (
        "Hover to highlight a part, click to select, Shift adds, Ctrl removes; wheel or +/- goes "
        "coarser/finer, S selects every copy of the part. With GeoSAM2 a click is a positive prompt, "
        "Ctrl-click a negative one. Right-click or Esc ends"
    )
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        obj = _mesh_object(context)
        return (
            obj is not None
            and len(obj.data.polygons) > 0
            and (
                len(obj.segparts.parts) > 0
                or engines.click_prompts(runtime.engine_status(), context.scene.segparts_engine)
            )
        )

    def invoke(self, context, event):
        obj = _mesh_object(context)
        self.obj_name = obj.name
        self.tool = pickview.PickTool(obj, context.scene.segparts_engine, results.start_pick)
        self.handler = bpy.types.SpaceView3D.draw_handler_add(self.tool.draw, (), "WINDOW", "POST_VIEW")
        context.window_manager.modal_handler_add(self)
        self.index_ready = True
        context.workspace.status_text_set(PICK_HELP)
        return {"RUNNING_MODAL"}

    def _finish(self, context):
        bpy.types.SpaceView3D.draw_handler_remove(self.handler, "WINDOW")
        context.workspace.status_text_set(None)
        runtime.redraw()

    def modal(self, context, event):
        tool = self.tool
        if bpy.data.objects.get(self.obj_name) is None:
            self._finish(context)
            return {"CANCELLED"}
        if event.type in {"ESC", "RIGHTMOUSE"} and event.value == "PRESS":
            self._finish(context)
            return {"FINISHED"}
        if event.type == "MOUSEMOVE":
            if tool.ray.ready != self.index_ready:  # a big mesh's index is still being built
                self.index_ready = tool.ray.ready
                context.workspace.status_text_set(
                    PICK_HELP if self.index_ready else "Pick parts: preparing the mesh for picking…"
                )
            tool.hover(context, event.mouse_x, event.mouse_y)
            return {"PASS_THROUGH"}
        step = {
            "WHEELUPMOUSE": 1,
            "NUMPAD_PLUS": 1,
            "EQUAL": 1,
            "PAGE_UP": 1,
            "WHEELDOWNMOUSE": -1,
            "NUMPAD_MINUS": -1,
            "MINUS": -1,
            "PAGE_DOWN": -1,
        }.get(event.type)
        if step is not None and event.value in {"PRESS", "NOTHING"} and not event.alt:
            tool.change_level(step)
            return {"RUNNING_MODAL"}
        if event.type == "S" and event.value == "PRESS":  # every copy of the part under the mouse
            text = tool.select_similar()
            if text:
                self.report({"INFO"}, text)
            runtime.undo_push("Select Similar")
            return {"RUNNING_MODAL"}
        if event.type == "LEFTMOUSE" and event.value == "PRESS":
            if tool.hover(context, event.mouse_x, event.mouse_y) is None:
                return {"PASS_THROUGH"}  # not over the object: let the click through
            text = tool.click(event.shift, event.ctrl)
            if text:
                self.report({"INFO"}, text)
            runtime.undo_push("Pick Parts")
            return {"RUNNING_MODAL"}
        return {"PASS_THROUGH"}


CLASSES = (
    SEGPARTS_OT_backend_start,
    SEGPARTS_OT_backend_stop,
    SEGPARTS_OT_backend_restart,
    SEGPARTS_OT_setup_backend,
    SEGPARTS_OT_fetch_models,
    SEGPARTS_OT_segment,
    SEGPARTS_OT_cancel,
    SEGPARTS_OT_clear_preview,
    SEGPARTS_OT_apply_materials,
    SEGPARTS_OT_part_select,
    SEGPARTS_OT_select_faces,
    SEGPARTS_OT_assign_material,
    SEGPARTS_OT_separate,
    SEGPARTS_OT_visibility,
    SEGPARTS_OT_merge_parts,
    SEGPARTS_OT_split_part,
    SEGPARTS_OT_rename_part,
    SEGPARTS_OT_select_similar,
    SEGPARTS_OT_pick,
)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
