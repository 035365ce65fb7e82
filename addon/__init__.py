"""Segment Parts: split a mesh into parts with a local segmentation backend.

Thin Blender front end. The backend (engines, torch, ...) runs in its own process and Python;
this add-on talks to it over ZeroMQ through the bundled `_shared` client (a copy of the
backend's wire.py, client.py and hierarchy.py made by build_addon.py). Nothing here imports
torch or segparts. Modules without bpy (partdata, picking, palette, session, jobs, setup) hold the
logic and are tested outside Blender.
"""

bl_info = {
    "name": "Segment Parts",
    "author": "Segment Parts developers",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "View3D > Sidebar > Segment Parts",
    "description": "Split meshes into parts with a local segmentation backend",
    "category": "Mesh",
}


# bpy and the Blender-facing modules are imported in register(), not here: the logic tests import
# the pure modules (`from addon import partdata`) as a plain package, outside Blender.
def register():
    import bpy

    from . import naming_ops, operators, pickview, props, runtime, ui  # noqa: F401 (pickview: compiled now, not mid-Segment)

    props.register()
    operators.register()
    naming_ops.register()
    ui.register()
    bpy.app.handlers.load_pre.append(runtime.on_load_pre)
    runtime.ensure_timer()


def unregister():
    import bpy

    from . import naming_ops, operators, props, runtime, ui

    if bpy.app.timers.is_registered(runtime.drain):
        bpy.app.timers.unregister(runtime.drain)
    if runtime.on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(runtime.on_load_pre)
    runtime.shutdown()
    import atexit

    atexit.unregister(runtime.shutdown)  # this module instance is going away
    ui.unregister()
    naming_ops.unregister()
    operators.unregister()
    props.unregister()
