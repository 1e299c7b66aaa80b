"""All per-scene settings of the add-on, in one PropertyGroup at ``Scene.depthcast``.

Per-object prompts are not here: they live on the objects as the plain custom properties
``depthcast_prompt`` and ``depthcast_weight`` (so they survive without the add-on, travel with
linked/appended objects, and the batch script reads them without registering anything).
"""
import random

import bpy
from bpy.props import (BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty, StringProperty)

from .core.messages import SCHEDULERS
from .core.protocol_limits import MAX_STEPS, PARAMS
from .core.runtime import SEED_MAX, parse_seed

def model_search(self, context, edit_text):
    """Suggestions for the model field: the models the connected service announced."""
    from . import client

    text = (edit_text or "").lower()
    for m in client.known_models():
        name = m.get("name", "")
        if name and text in name.lower():
            yield name


SCHEDULER_ITEMS = [("default", "Model default", "Use the model's default scheduler")] + [
    (s, s, "Scheduler %s" % s) for s in SCHEDULERS]

NEAR_FAR_ITEMS = [
    ("CAMERA", "Camera clip", "Near/far are the camera's clip start and end"),
    ("SCENE", "Fit to view", "Near/far fit the depth that is in view"),
    ("MANUAL", "Manual", "Near/far as set below"),
]

DEPTH_RANGE_ITEMS = [
    ("auto", "Auto", "The service stretches the depth in view over the model's range (as the models were trained)"),
    ("fixed", "Fixed", "The service maps near..far as sent, so brightness stays steady while the camera moves; "
     "set near/far to the range the subject occupies (Manual)"),
]

ANIMATION_CONSISTENCY_ITEMS = [
    ("per-frame", "Per frame", "Every frame on its own; each frame is still scored against the one before (warp error)"),
    ("consistent", "Consistent", "Each frame continues the one before along Cycles' Vector pass, so the animation "
                                 "does not flicker; new surfaces are generated"),
]

LIVE_SOURCE_ITEMS = [
    ("VIEWPORT", "3D View", "Depth of the current 3D view from a GPU depth pass (needs a visible 3D viewport)"),
    ("CAMERA", "Camera", "Depth from the scene camera, re-rendered on changes (works everywhere)"),
]


def _randomize_if_needed(self, context):
    if self.seed_randomize:
        self.seed = str(random.randint(0, SEED_MAX))


def _normalize_seed(self, context):
    # Only digits in range stay; anything else is refused when sending (parse_seed says why).
    text = self.seed.strip()
    if text != self.seed:
        self.seed = text


class DepthcastSettings(bpy.types.PropertyGroup):
    # ---- prompt ----
    prompt: StringProperty(name="Prompt", description="What the image should show", default="")
    negative_prompt: StringProperty(name="Negative", description="What the image should not show", default="")

    # ---- model and sampling ----
    model: StringProperty(name="Model", default="", search=model_search,
                          description="Model name on the service (empty: the service's default)")
    scheduler: EnumProperty(name="Scheduler", items=SCHEDULER_ITEMS, default="default")
    use_steps: BoolProperty(name="Set steps", default=False,
                            description="Send a step count (off: the model's default)")
    steps: IntProperty(name="Steps", default=20, min=1, max=MAX_STEPS, soft_max=100)
    use_guidance: BoolProperty(name="Set guidance", default=False,
                               description="Send a guidance scale (off: the model's default)")
    guidance: FloatProperty(name="Guidance", default=7.5, min=0.0, max=PARAMS["guidance"]["maximum"], soft_max=20.0, precision=2)
    controlnet_scale: FloatProperty(name="ControlNet scale", default=1.0, min=0.0, max=PARAMS["controlnetScale"]["maximum"],
                                    description="Depth conditioning strength (ControlNet models)")
    preview_every: IntProperty(name="Preview every", default=1, min=0, max=PARAMS["previewEvery"]["maximum"],
                               description="Send a preview every N steps (0 = no previews)")

    # ---- seed ----
    # Text, not IntProperty: Blender ints are signed 32-bit and the service's seeds use all 32 bits
    # (a masked seed reproduces a different image).
    seed: StringProperty(name="Seed", default="0", update=_normalize_seed,
                         description="Seed of the noise, 0 to 4294967295 (same seed, same image)")
    seed_randomize: BoolProperty(name="Randomize", default=True, update=_randomize_if_needed,
                                 description="Let the service pick a new seed every time (the seed used is shown)")

    # ---- init image ----
    use_init: BoolProperty(name="Init image", default=False,
                           description="Start from a quick solid render of the camera view (img2img)")
    strength: FloatProperty(name="Strength", default=0.75, min=0.01, max=1.0,
                            description="How much the init image may change (1 = ignore it)")

    # ---- depth ----
    near_far: EnumProperty(name="Near/far", items=NEAR_FAR_ITEMS, default="CAMERA")
    near: FloatProperty(name="Near", default=0.1, min=1e-4, unit="LENGTH")
    far: FloatProperty(name="Far", default=100.0, min=1e-3, unit="LENGTH")
    depth_range: EnumProperty(name="Depth range", items=DEPTH_RANGE_ITEMS, default="auto")

    # ---- layout ----
    use_layout: BoolProperty(name="Send layout", default=True,
                             description="Send the object index map with labels, prompts and weights")
    compose_from_labels: BoolProperty(name="Prompt from names", default=False,
                                      description="Objects without a prompt are prompted with their name")
    active_object_index: IntProperty(name="Object", default=0)
    show_all_objects: BoolProperty(name="All objects", default=False,
                                   description="List every renderable object, not only those with a prompt")

    # ---- output ----
    show_in_viewport: BoolProperty(name="Show in camera", default=False,
                                   description="Show the result as the camera's background image")
    auto_save: BoolProperty(name="Save next to .blend", default=False,
                            description="Save every result (PNG + JSON) in a 'depthcast' folder next to the .blend")
    animation_consistency: EnumProperty(name="Animation", items=ANIMATION_CONSISTENCY_ITEMS, default="per-frame")

    # ---- live ----
    live_source: EnumProperty(name="Source", items=LIVE_SOURCE_ITEMS, default="VIEWPORT")
    live_debounce: FloatProperty(name="Debounce", default=0.4, min=0.05, max=5.0, unit="TIME_ABSOLUTE",
                                 description="Wait this long after the last change before sending")
    overlay: BoolProperty(name="Show in 3D View", default=True,
                          description="Draw live results over the 3D View, aligned to the view that was captured")
    overlay_opacity: FloatProperty(name="Opacity", default=1.0, min=0.0, max=1.0, subtype="FACTOR",
                                   description="Opacity of the result drawn over the 3D View")
    overlay_split: FloatProperty(name="Split", default=1.0, min=0.0, max=1.0, subtype="FACTOR",
                                 description="Part of the view's width, from the left, that shows the result "
                                 "(the rest shows the scene)")
    live_max_side: IntProperty(name="Max size", default=512, min=64, max=2048, step=64,
                               description="Longest side of live frames (3D View source)")


classes = (DepthcastSettings,)


def register_props():
    bpy.types.Scene.depthcast = PointerProperty(type=DepthcastSettings)


def unregister_props():
    del bpy.types.Scene.depthcast


def settings(context_or_scene):
    scene = getattr(context_or_scene, "scene", context_or_scene)
    return scene.depthcast


def build_params(scene, width, height, with_init=False, live=False):
    """``GenerationParams`` (as a dict) from the scene's settings; ``live`` for live frames."""
    from .core import messages

    s = scene.depthcast
    model = s.model.strip() or None
    return messages.build_params(
        s.prompt, s.negative_prompt,
        model=model,
        width=width // 8 * 8 or 8, height=height // 8 * 8 or 8,
        steps=s.steps if s.use_steps else None,
        guidance=s.guidance if s.use_guidance else None,
        strength=s.strength if with_init else None,
        seed=None if s.seed_randomize else parse_seed(s.seed),
        scheduler=None if s.scheduler == "default" else s.scheduler,
        controlnet_scale=s.controlnet_scale,
        depth_range=s.depth_range,
        preview_every=s.preview_every,
        preview_format="rgb8",
        # Live results raw: the connection's reader thread turns them into pixels (plain Python
        # without numpy), where a PNG would need Blender's image loader on the main thread.
        result_format="rgb8" if live else None,
        compose_from_labels=s.compose_from_labels if s.use_layout else None,
    )
