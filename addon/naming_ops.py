"""Name Parts in Blender: the operator, writing the names back, and keeping vertex-group names in
step with the part list. The logic without bpy is in naming.py; the backend does the rendering and
the requests (op `name_parts`), so Blender's UI never waits on the network.

Vertex groups are found by the write-back under their canonical names (`Part_###`). A named
part's group carries its name instead, recorded in the object property `segparts_group_names`
(part id -> group name); `restore_group_names` turns them back before labels are rewritten, and
the part list's name update renames them again.
"""

from __future__ import annotations

import bpy
import numpy as np

from . import config, mesh_io, naming, palette, runtime, writeback
from ._shared.client import mesh_id

GROUP_NAMES_PROP = "segparts_group_names"
NAMED_MATERIAL_PROP = "segparts_named_part"  # on materials this add-on made and named for a part
_NEW_PART_MATERIAL = "Part " + writeback.GROUP_PREFIX  # editing.new_part_material's names


def endpoint_settings() -> naming.EndpointSettings | None:
    p = config.prefs()
    if p is None:
        return naming.endpoint_settings()
    return naming.endpoint_settings(p.vlm_url, p.vlm_model, p.vlm_api_key)


# ---- the job --------------------------------------------------------------------------------------
def start_naming(obj) -> None:
    settings = endpoint_settings()
    if settings is None:
        raise RuntimeError("Naming is off: set a vision-language endpoint in the add-on preferences")
    if settings.problem():
        raise ValueError(settings.problem())
    s = runtime.get_session()
    if not s.ready:
        raise RuntimeError(s.message)
    if obj.name in runtime.object_jobs and runtime.object_jobs[obj.name].active:
        raise RuntimeError(f"{obj.name!r} is busy")
    poly_labels = writeback.labels(obj)
    if poly_labels is None:
        raise RuntimeError(f"{obj.name!r} has no parts yet: segment it first")
    arrays = mesh_io.mesh_arrays(obj)
    mid = mesh_id(arrays.vertices, arrays.faces, arrays.cues, arrays.appearance)
    digest = naming.labels_digest(poly_labels)
    name = obj.name
    describe = settings.describe()

    def done(job, msg):
        runtime.object_jobs.pop(name, None)
        runtime.queue_work(
            ("name", name), _apply(name, digest, msg.result, describe), on_done=lambda: runtime.undo_push("Name Parts")
        )

    def failed(job, text):
        runtime.object_jobs.pop(name, None)
        runtime.set_message(f"{name}: naming failed: {text}")

    job = naming.NameJob(
        s,
        arrays,
        mid,
        poly_labels[arrays.tri_poly],
        settings,
        naming.object_hint(name),
        done,
        failed,
        views=config.prefs().vlm_views if config.prefs() else 3,
    )
    runtime.object_jobs[name] = job
    runtime.set_message(f"Naming the parts of {name} with {describe}…")
    job.start()


def _apply(name: str, digest: bytes, result: dict, describe: str):
    """Write-back step (a generator for runtime.queue_work)."""
    obj = bpy.data.objects.get(name)
    if obj is None:
        runtime.set_message(f"{name} is gone; names dropped")
        return
    labels = writeback.labels(obj)
    if labels is None or naming.labels_digest(labels) != digest:
        runtime.set_message(f"The parts of {name} changed while they were named; press Name Parts again")
        return
    got = naming.outcome(result, [it.part_id for it in obj.segparts.parts])
    apply_names(obj, got.names)
    runtime.set_message(got.message(name, describe))
    yield


def apply_names(obj, names: dict[int, str]) -> None:
    """Part list entries get the names; their vertex groups follow (on_part_renamed)."""
    for it in obj.segparts.parts:
        if it.part_id in names:
            it.name = names[it.part_id]


# ---- vertex groups and materials follow the part names ---------------------------------------
def _stored_group_name(obj, part: int) -> str | None:
    stored = obj.get(GROUP_NAMES_PROP)
    return stored.get(str(part)) if stored is not None else None


def _remember_group_name(obj, part: int, name: str | None) -> None:
    if GROUP_NAMES_PROP not in obj:
        obj[GROUP_NAMES_PROP] = {}
    stored = obj[GROUP_NAMES_PROP]
    if name is not None:
        stored[str(part)] = name
    elif str(part) in stored:
        del stored[str(part)]


def _part_group(obj, part: int):
    ours = writeback.part_groups(obj).get(part)  # the groups the add-on made are recorded (segparts_groups)
    if ours is not None:
        return obj.vertex_groups.get(ours)
    name = _stored_group_name(obj, part)
    vg = obj.vertex_groups.get(name) if name else None
    return vg if vg is not None else obj.vertex_groups.get(palette.part_name(part))


def on_part_renamed(item, context) -> None:
    """The part list's name changed (by hand or by Name Parts): rename the part's vertex group
    and the material this add-on made for it."""
    obj = item.id_data
    if not isinstance(obj, bpy.types.Object):
        return
    part = int(item.part_id)
    canonical = palette.part_name(part)
    wanted = item.name.strip() or canonical
    vg = _part_group(obj, part)
    if vg is not None and vg.name != wanted:
        # a name like another part's canonical group would confuse the write-back: keep ours then
        taken = obj.vertex_groups.get(wanted) is not None
        if not taken and not (wanted.startswith(writeback.GROUP_PREFIX) and wanted != canonical):
            vg.name = wanted
            writeback.record_group(obj, part, vg.name)
            _remember_group_name(obj, part, None if vg.name == canonical else vg.name)
    if wanted != canonical:  # materials follow given names only
        _rename_part_material(obj, item, wanted)


def _rename_part_material(obj, item, name: str) -> None:
    """Only a material this add-on made for this one part: a new material from Assign Material,
    or an applied part colour; and only while no other part or object uses it. The shared preview
    colours keep their names."""
    mat = item.material
    if mat is not None:
        alone = sum(it.material == mat for it in obj.segparts.parts) == 1 and not _used_elsewhere(mat, obj)
        if alone and (mat.get(NAMED_MATERIAL_PROP) or mat.name.startswith(_NEW_PART_MATERIAL)):
            mat.name = name
            mat[NAMED_MATERIAL_PROP] = True
        return
    if writeback.preview_active(obj):
        return
    m = _applied_part_material(obj, item.part_id)
    target = f"{writeback.MATERIAL_PREFIX}{name}"
    if (
        m is not None
        and not _used_elsewhere(m, obj)
        and m.name != target
        and (m.name == writeback.MATERIAL_PREFIX + palette.part_name(item.part_id) or m.get(NAMED_MATERIAL_PROP))
    ):
        m.name = target
        m[NAMED_MATERIAL_PROP] = True


def _used_elsewhere(mat, obj) -> bool:
    """Whether anything but this object's mesh slots and part list holds the material."""
    own = sum(m == mat for m in obj.data.materials) + sum(it.material == mat for it in obj.segparts.parts)
    return mat.users > own


def _applied_part_material(obj, part: int):
    """The material of the part's faces when they all use one slot that no other part uses."""
    labels = writeback.labels(obj)
    if labels is None:
        return None
    indices = mesh_io.material_indices(obj.data)
    mine = np.unique(indices[labels == part])
    if len(mine) != 1 or not 0 <= mine[0] < len(obj.material_slots):
        return None
    if np.any(labels[indices == mine[0]] != part):
        return None
    return obj.material_slots[int(mine[0])].material


def restore_group_names(obj) -> None:
    """Give named groups their canonical names back (before labels are rewritten or parts
    separated); the part list keeps the names and renames the groups again afterwards."""
    stored = obj.get(GROUP_NAMES_PROP)
    for part, name in (stored.to_dict() if stored is not None else {}).items():
        vg = obj.vertex_groups.get(name)
        canonical = palette.part_name(int(part))
        if vg is not None and obj.vertex_groups.get(canonical) is None:
            vg.name = canonical
            writeback.record_group(obj, int(part), vg.name)
    if GROUP_NAMES_PROP in obj:
        del obj[GROUP_NAMES_PROP]


# ---- operator -------------------------------------------------------------------------------------
class SEGPARTS_OT_name_parts(bpy.types.Operator):
    bl_idname = "segparts.name_parts"
    bl_label = "Name Parts"
    bl_description = (
        "Ask the vision-language model set in the preferences to name every part from renders "
        "of it (runs in the backend; the renders are sent to that endpoint)"
    )
    bl_options = {"REGISTER"}  # the names arrive later and push their own undo step

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if obj is None or obj.type != "MESH" or not len(obj.segparts.parts):
            cls.poll_message_set("Segment the active mesh first")
            return False
        if obj.name in runtime.object_jobs:
            cls.poll_message_set("The object is busy")
            return False
        if endpoint_settings() is None:
            cls.poll_message_set("Naming is off: set a vision-language endpoint in the add-on preferences")
            return False
        return True

    def execute(self, context):
        obj = context.active_object
        s = runtime.ensure_started()
        if not s.ready:
            self.report({"WARNING"}, "The backend is starting; press Name Parts again when it is ready")
            return {"CANCELLED"}
        try:
            start_naming(obj)
        except (RuntimeError, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


def draw_panel(layout, obj) -> None:
    """Under the part list: the button, and who will see the renders."""
    settings = endpoint_settings()
    col = layout.column(align=True)
    col.operator("segparts.name_parts", icon="SORTALPHA")
    if settings is None:
        col.label(text="Naming off: no endpoint set (Preferences)", icon="INFO")
    elif settings.problem():
        col.label(text=settings.problem(), icon="ERROR")
    else:
        col.label(text=f"Renders go to {settings.describe()}", icon="URL")


def draw_preferences(layout, prefs) -> None:
    box = layout.box()
    box.label(text="Part names (optional): a vision-language model sees renders of each part")
    box.prop(prefs, "vlm_url")
    box.prop(prefs, "vlm_model")
    box.prop(prefs, "vlm_api_key")
    box.prop(prefs, "vlm_views")
    settings = endpoint_settings()
    if settings is None:
        box.label(text="Off: nothing is sent anywhere", icon="CHECKMARK")
    elif settings.problem():
        box.label(text=settings.problem(), icon="ERROR")
    else:
        source = "" if settings.source == "preferences" else " (from SEGPARTS_VLM_URL)"
        box.label(text=f"Name Parts sends renders to {settings.describe()}{source}", icon="URL")


CLASSES = (SEGPARTS_OT_name_parts,)


register, unregister = bpy.utils.register_classes_factory(CLASSES)
