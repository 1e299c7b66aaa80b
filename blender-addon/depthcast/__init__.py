"""depthcast for Blender: send the scene's depth and layout to a depthcast service and get
depth-conditioned Stable Diffusion images back, with step previews, inside Blender.

Thin entry point: metadata and (un)registration. See docs/blender.md.
"""
bl_info = {
    "name": "depthcast",
    "author": "depthcast contributors",
    "version": (0, 1, 0),
    "blender": (3, 4, 0),
    "location": "3D View > Sidebar (N) > depthcast",
    "description": "Depth-conditioned Stable Diffusion from your scene's depth and layout, via a local depthcast service",
    "doc_url": "https://github.com/depthcast/depthcast/blob/main/docs/blender.md",
    "category": "Render",
}

import bpy  # noqa: E402

from . import capture_job, client, operators, preferences, properties, results, ui, viewport  # noqa: E402,F401

classes = preferences.classes + properties.classes + operators.classes + ui.classes


def register():
    for cls in classes:
        bpy.utils.register_class(cls)
    properties.register_props()
    client.register()
    viewport.register()


def unregister():
    viewport.unregister()
    capture_job.unregister()
    client.unregister()
    properties.unregister_props()
    for cls in reversed(classes):
        bpy.utils.unregister_class(cls)
