"""The "depthcast" tab of the 3D View sidebar (N panel)."""
import bpy

from . import capture, client, viewport
from .core import runtime


class DepthcastPanel:
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "depthcast"

    @classmethod
    def poll(cls, context):
        return context.scene is not None and hasattr(context.scene, "depthcast")


class DepthcastSubpanel(DepthcastPanel):
    bl_parent_id = "DEPTHCAST_PT_main"


def _split(layout):
    """``layout`` with labels left of their fields, no animation decorators."""
    layout.use_property_split = True
    layout.use_property_decorate = False
    return layout


def _progress(layout, rt):
    """One line of progress: a bar (Blender 4.0+) or a label, the value written once."""
    if not rt.status and not rt.progress:
        return
    text = rt.status or ("%d %%" % rt.progress)
    if hasattr(layout, "progress"):  # Blender 4.0+
        layout.progress(factor=max(0.0, min(1.0, rt.progress / 100.0)), type="BAR", text=text)
    else:
        layout.label(text=text, icon="TIME" if rt.job_id else "INFO")


def wrap_width(context, fallback=42):
    """Characters that fit the sidebar's width (so error text wraps between words, not mid-word
    at the panel's edge)."""
    region = getattr(context, "region", None)
    if region is None or region.width <= 0:
        return fallback
    scale = context.preferences.system.ui_scale if context.preferences else 1.0
    return max(16, int((region.width - 60 * scale) / (7.0 * scale)))


def _error_box(layout, text, width=42):
    box = layout.box()
    row = box.row()
    col = row.column()
    for i, line in enumerate(client.wrap(text, width)):
        col.label(text=line, icon="ERROR" if i == 0 else "BLANK1")
    row.operator("depthcast.dismiss_error", text="", icon="X", emboss=False)


class DEPTHCAST_PT_main(DepthcastPanel, bpy.types.Panel):
    bl_idname = "DEPTHCAST_PT_main"
    bl_label = "depthcast"

    def draw(self, context):
        layout = self.layout
        s = context.scene.depthcast
        rt = runtime.of(context.scene)
        state, message = client.connection_status()
        row = layout.row(align=True)
        row.label(text=state.capitalize(), icon=client.status_icon(state))
        row.operator("depthcast.connect", text="", icon="FILE_REFRESH")
        if message and state != "connected":
            col = layout.column()
            col.scale_y = 0.7
            for line in client.wrap(message, wrap_width(context))[:3]:
                col.label(text=line)

        col = layout.column(align=True)
        col.prop(s, "prompt", text="", icon="TEXT")
        col.prop(s, "negative_prompt", text="", icon="REMOVE")

        row = layout.row(align=True)
        row.scale_y = 1.4
        busy = bool(rt.job_id) or rt.animation_running
        row.operator("depthcast.generate", icon="RENDER_STILL")
        sub = row.row(align=True)
        sub.enabled = busy or rt.live_running
        sub.operator("depthcast.cancel", text="Cancel", icon="CANCEL")
        if context.scene.camera is None:
            layout.label(text="The scene needs a camera", icon="INFO")
        _progress(layout, rt)
        if rt.sizes:
            layout.label(text=rt.sizes, icon="IMAGE_DATA")
        if rt.error:
            _error_box(layout, rt.error, wrap_width(context))


class DEPTHCAST_PT_model(DepthcastSubpanel, bpy.types.Panel):
    bl_label = "Model"

    def draw(self, context):
        layout = _split(self.layout)
        s = context.scene.depthcast
        rt = runtime.of(context.scene)
        layout.prop(s, "model", icon="FILE_3D")
        if client.model_is_tiny(s.model):
            layout.label(text="Tiny test model: random weights, abstract images", icon="INFO")
        layout.prop(s, "scheduler")
        row = layout.row(heading="Steps")
        row.prop(s, "use_steps", text="")
        sub = row.row()
        sub.active = s.use_steps
        sub.prop(s, "steps", text="")
        row = layout.row(heading="Guidance")
        row.prop(s, "use_guidance", text="")
        sub = row.row()
        sub.active = s.use_guidance
        sub.prop(s, "guidance", text="")
        layout.prop(s, "controlnet_scale")
        row = layout.row(heading="Seed", align=True)
        sub = row.row(align=True)
        sub.active = not s.seed_randomize
        sub.prop(s, "seed", text="")
        row.operator("depthcast.randomize_seed", text="", icon="FILE_REFRESH")
        layout.prop(s, "seed_randomize")
        if rt.last_seed is not None:
            row = layout.row(align=True)
            row.label(text="Last seed: %d" % rt.last_seed)
            row.operator("depthcast.use_last_seed", text="", icon="PINNED")
        layout.prop(s, "preview_every")


class DEPTHCAST_PT_image(DepthcastSubpanel, bpy.types.Panel):
    bl_label = "Image"

    def draw(self, context):
        layout = _split(self.layout)
        scene = context.scene
        s = scene.depthcast
        w, h = capture.render_size(scene)
        row = layout.row()
        row.label(text="Resolution")
        row.label(text="%d x %d (render settings)" % (w, h))
        if w % 8 or h % 8:
            layout.label(text="Output is cut to %d x %d (multiples of 8)" % (w // 8 * 8, h // 8 * 8), icon="INFO")
        layout.prop(s, "use_init")
        sub = layout.column()
        sub.active = s.use_init
        sub.prop(s, "strength", slider=True)


class DEPTHCAST_PT_depth(DepthcastSubpanel, bpy.types.Panel):
    bl_label = "Depth"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = _split(self.layout)
        s = context.scene.depthcast
        layout.prop(s, "near_far")
        if s.near_far == "MANUAL":
            col = layout.column(align=True)
            col.prop(s, "near")
            col.prop(s, "far")
        elif s.near_far == "CAMERA" and context.scene.camera is not None and context.scene.camera.type == "CAMERA":
            cam = context.scene.camera.data
            layout.label(text="Clip %.3g .. %.4g (%s)" % (cam.clip_start, cam.clip_end, context.scene.camera.name))
        layout.prop(s, "depth_range")


class DEPTHCAST_UL_objects(bpy.types.UIList):
    """Scene objects with their depthcast prompt and weight (custom properties on the object)."""

    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index=0):
        obj = item
        row = layout.row(align=True)
        row.label(text=obj.name, icon="OUTLINER_OB_%s" % obj.type if obj.type in (
            "MESH", "CURVE", "SURFACE", "META", "FONT", "VOLUME") else "OBJECT_DATA")
        if capture.PROMPT_KEY in obj:
            row.prop(obj, '["%s"]' % capture.PROMPT_KEY, text="")
            if capture.WEIGHT_KEY in obj:
                sub = row.row(align=True)
                sub.ui_units_x = 2.5
                sub.prop(obj, '["%s"]' % capture.WEIGHT_KEY, text="")
            op = row.operator("depthcast.object_prompt_remove", text="", icon="X", emboss=False)
            op.object_name = obj.name
        else:
            op = row.operator("depthcast.object_prompt_add", text="Add prompt", icon="ADD", emboss=False)
            op.object_name = obj.name

    def filter_items(self, context, data, propname):
        objects = getattr(data, propname)
        s = context.scene.depthcast
        flags = []
        for obj in objects:
            show = obj.type in capture.RENDERABLE_TYPES and (s.show_all_objects or capture.PROMPT_KEY in obj)
            if show and self.filter_name:
                show = self.filter_name.lower() in obj.name.lower()
            flags.append(self.bitflag_filter_item if show else 0)
        order = bpy.types.UI_UL_list.sort_items_by_name(objects, "name")
        return flags, order


class DEPTHCAST_PT_layout(DepthcastSubpanel, bpy.types.Panel):
    bl_label = "Layout"

    def draw_header(self, context):
        self.layout.prop(context.scene.depthcast, "use_layout", text="")

    def draw(self, context):
        layout = self.layout
        scene = context.scene
        s = scene.depthcast
        layout.active = s.use_layout
        row = layout.row()
        row.prop(s, "compose_from_labels")
        row.prop(s, "show_all_objects")
        layout.template_list("DEPTHCAST_UL_objects", "", scene, "objects", s, "active_object_index", rows=4)
        obj = context.active_object
        if obj is not None and obj.type in capture.RENDERABLE_TYPES and capture.PROMPT_KEY not in obj:
            op = layout.operator("depthcast.object_prompt_add", text="Add prompt to %s" % obj.name, icon="ADD")
            op.object_name = obj.name


class DEPTHCAST_PT_live(DepthcastSubpanel, bpy.types.Panel):
    """Open by default and right under the main panel: Start Live is the first thing in it."""
    bl_label = "Live"

    def draw(self, context):
        layout = self.layout
        s = context.scene.depthcast
        running = viewport.is_running()
        row = layout.row()
        row.scale_y = 1.2
        row.operator("depthcast.live", text="Stop Live" if running else "Start Live",
                     icon="PAUSE" if running else "PLAY", depress=running)
        if running:
            layout.label(text="%d frames sent" % viewport.state().frames_sent)
        col = layout.column()
        col.use_property_split = True
        col.prop(s, "overlay")
        sub = col.column()
        sub.active = s.overlay
        sub.prop(s, "overlay_opacity", slider=True)
        sub.prop(s, "overlay_split", slider=True)
        col = layout.column()
        col.enabled = not running
        col.use_property_split = True
        col.prop(s, "live_source")
        col.prop(s, "live_debounce")
        if s.live_source == "VIEWPORT":
            col.prop(s, "live_max_side")


class DEPTHCAST_PT_output(DepthcastSubpanel, bpy.types.Panel):
    bl_label = "Output"

    def draw(self, context):
        layout = self.layout
        scene = context.scene
        s = scene.depthcast
        rt = runtime.of(scene)
        col = layout.column()
        col.prop(s, "show_in_viewport")
        col.prop(s, "auto_save")
        row = layout.row(align=True)
        row.operator("depthcast.show_result", icon="IMAGE_DATA")
        row.operator("depthcast.save_result", text="Save", icon="FILE_TICK")
        row.operator("depthcast.copy_params", text="", icon="COPYDOWN")
        layout.separator()
        layout.label(text="Frames %d-%d to %s" % (scene.frame_start, scene.frame_end, scene.render.filepath or "//"))
        layout.prop(s, "animation_consistency")
        row = layout.row()
        row.enabled = not rt.animation_running
        row.operator("depthcast.render_animation", icon="RENDER_ANIMATION")


classes = (
    DEPTHCAST_UL_objects,
    DEPTHCAST_PT_main,
    DEPTHCAST_PT_live,
    DEPTHCAST_PT_model,
    DEPTHCAST_PT_image,
    DEPTHCAST_PT_depth,
    DEPTHCAST_PT_layout,
    DEPTHCAST_PT_output,
)
