"""Camera capture: linear Z depth, the object-index layout and an optional solid-shaded init
image, rendered through the view layer at the scene's output resolution.

How (found by trying under ``blender -b`` with Debian's Blender 3.4):
* The render happens in a throw-away copy of the scene (``Scene.copy()`` shares the objects),
  so the user's engine, passes and compositor are never touched.
* Engine (``AUTO``): Cycles at 1 sample, no bounces, no denoising, a 0.01 px box filter: pure CPU (works
  without any GPU or display), ~0.15 s at 512x512, and it gives both the Z pass and the object
  index pass (``IndexOB``) in one render. Workbench is the fallback when Cycles is missing
  (depth only: Workbench has no index pass). Without a layout, Workbench goes first: its Z pass
  is ~4x faster (it needs a GPU context; headless it gets one through EGL when Mesa is there).
  EEVEE works headless too but is much slower.
* Passes come out through a compositor File Output node as 32-bit float EXR without
  compression, read back by ``core/exr.py`` (any thread; ``bpy.data.images.load`` is the
  fallback): the Viewer node is not updated by renders in background mode and ``Render
  Result`` pixels are not readable from Python.
* The index pass needs per-object ``pass_index`` values; they are set for the render and
  restored afterwards.
* The init image is a Workbench (solid) render written as PNG: the bytes go to the service as is.

Rows: Blender's buffers are bottom-up; everything returned here is top-down (row 0 = top).
"""
import os
import shutil
import tempfile
import time

import bpy

from .core import depth as D
from .core import exr
from .core import motion as M
from .core.layout import LayoutEntry, build_layout, clean_prompt, clean_weight

RENDERABLE_TYPES = {"MESH", "CURVE", "SURFACE", "META", "FONT", "VOLUME", "GPENCIL", "CURVES", "POINTCLOUD"}
PROMPT_KEY = "depthcast_prompt"
WEIGHT_KEY = "depthcast_weight"

#: True while a capture is rendering: handlers (live mode) ignore the updates it causes.
capturing = False


class CaptureError(RuntimeError):
    """A capture that cannot be done; the message says what to change."""


class RenderCancelled(CaptureError):
    """The user stopped the capture's render (Esc): no other engine is tried."""


class Capture:
    """What one capture produced (all images top-down)."""

    def __init__(self, depth, width, height, camera, frame):
        self.depth = depth  # core.depth.DepthImage
        self.width = width
        self.height = height
        self.camera = camera
        self.frame = frame
        self.layout = None  # (u16le bytes, width, height, objects) or None
        self.output_size = (width, height)  # the render size the image is for (depth may be smaller)
        self.objects = []
        self.init_png = None
        self.flow = None  # with_vector: float32 array, 2 planes of width*height (core.motion)
        self.pose = None  # the camera's matrix_world at the frame, row-major, 16 floats
        self.intrinsics = None  # dict fx, fy, cx, cy (perspective cameras without shift)
        self.engine = ""
        self.pass_reader = ""  # "core.exr", or "blender" where the plain reader refused the file
        self.timings = {}

    def layout_summary(self):
        return ", ".join("%s#%d" % (o["label"], o["id"]) for o in self.objects)


#: Depth is captured at most this many pixels: the service generates at the model's native size
#: (about 512x512 for SD 1.5) and upscales to the output size, so a 1920x1080 render's depth at
#: full size only made Blender's main thread render 2.25x longer.
CAPTURE_MAX_PIXELS = 1024 * 1024


def render_size(scene):
    """Output size from the scene's render settings (resolution x percentage)."""
    r = scene.render
    scale = r.resolution_percentage / 100.0
    return max(1, int(r.resolution_x * scale)), max(1, int(r.resolution_y * scale))


def cycles_available():
    """Cycles is an add-on (enabled by default); its engine class is a Python RenderEngine."""
    return any(getattr(cls, "bl_idname", "") == "CYCLES" for cls in bpy.types.RenderEngine.__subclasses__())


def layout_candidates(scene, view_layer):
    """Visible, renderable objects sorted by name: the ones that get an id in the layout."""
    out = []
    for obj in scene.objects:
        if obj.type not in RENDERABLE_TYPES or obj.hide_render:
            continue
        try:
            if not obj.visible_get(view_layer=view_layer):
                continue
        except (TypeError, RuntimeError):
            if obj.hide_get():
                continue
        out.append(obj)
    out.sort(key=lambda o: o.name)
    return out


def object_prompt(obj):
    return clean_prompt(obj.get(PROMPT_KEY))


def object_weight(obj):
    return clean_weight(obj.get(WEIGHT_KEY, 1.0))


def _view_layer_of(scene, name=None):
    if name and name in scene.view_layers:
        return scene.view_layers[name]
    ctx = bpy.context
    if getattr(ctx, "scene", None) == scene and getattr(ctx, "view_layer", None) is not None:
        return ctx.view_layer
    return scene.view_layers[0]


def _setup_cycles(tmp, view_layer, with_index):
    tmp.render.engine = "CYCLES"
    c = tmp.cycles
    c.device = "CPU"
    c.samples = 1
    c.preview_samples = 1
    for attr, value in (("use_denoising", False), ("use_adaptive_sampling", False), ("pixel_filter_type", "BOX"),
                        ("filter_width", 0.01), ("max_bounces", 0), ("use_animated_seed", False),
                        ("use_auto_tile", False)):
        if hasattr(c, attr):
            setattr(c, attr, value)
    view_layer.use_pass_z = True
    view_layer.use_pass_object_index = with_index
    if hasattr(view_layer, "cycles") and hasattr(view_layer.cycles, "denoising_store_passes"):
        view_layer.cycles.denoising_store_passes = False


def _setup_workbench(tmp, view_layer, solid=False):
    tmp.render.engine = "BLENDER_WORKBENCH"
    tmp.display.render_aa = "OFF" if not solid else "8"
    shading = tmp.display.shading
    shading.light = "STUDIO" if solid else "FLAT"
    shading.color_type = "MATERIAL" if solid else "SINGLE"
    view_layer.use_pass_z = True


def _compositor(tmp, view_layer, out_dir, slots, file_format="OPEN_EXR", color_mode="RGB"):
    """Rebuilds the copy's compositor: Render Layers -> File Output (one file per slot)."""
    tmp.use_nodes = True
    tmp.render.use_compositing = True
    tree = tmp.node_tree
    for node in list(tree.nodes):
        tree.nodes.remove(node)
    rl = tree.nodes.new("CompositorNodeRLayers")
    rl.scene = tmp
    rl.layer = view_layer.name
    comp = tree.nodes.new("CompositorNodeComposite")
    tree.links.new(rl.outputs["Image"], comp.inputs[0])
    fo = tree.nodes.new("CompositorNodeOutputFile")
    fo.base_path = out_dir
    fmt = fo.format
    fmt.file_format = file_format
    if file_format == "OPEN_EXR":
        fmt.color_depth = "32"
        fmt.exr_codec = "NONE"
        fmt.color_mode = color_mode
    else:
        fmt.color_depth = "8"
        fmt.color_mode = "RGB"
        fmt.compression = 15
    fo.file_slots.clear()
    for slot, socket in slots:
        fo.file_slots.new(slot)
        if socket not in rl.outputs or not rl.outputs[socket].enabled:
            raise CaptureError("the %s render has no %s pass" % (tmp.render.engine, socket))
        tree.links.new(rl.outputs[socket], fo.inputs[slot])
    return fo


#: Set by the headless batch script: renders print their per-tile "Fra:" progress lines to
#: stdout (about 190 per Cycles capture), which buried the script's own output.
quiet_renders = False


class _StdoutSilenced:
    """Points file descriptor 1 at /dev/null for the duration (Blender prints from C)."""

    def __enter__(self):
        import sys

        sys.stdout.flush()
        self._saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
        return self

    def __exit__(self, *exc):
        os.dup2(self._saved, 1)
        os.close(self._saved)


def _render(tmp, view_layer):
    try:
        if quiet_renders:
            with _StdoutSilenced():
                result = bpy.ops.render.render(write_still=False, scene=tmp.name, layer=view_layer.name)
        else:
            result = bpy.ops.render.render(write_still=False, scene=tmp.name, layer=view_layer.name)
    except RuntimeError as err:
        raise CaptureError("render failed (%s): %s" % (tmp.render.engine, str(err).strip())) from None
    if "CANCELLED" in result:
        raise CaptureError("Blender refused to render (is another render running?)")


def _find_output(out_dir, slot):
    names = sorted(n for n in os.listdir(out_dir) if n.startswith(slot))
    if not names:
        raise CaptureError("the render wrote no %s pass to %s" % (slot, out_dir))
    return os.path.join(out_dir, names[0])


def _read_exr_pixels(path, width, height):
    """Loads a pass written by the File Output node: (bottom-up float pixels, channels). Main
    thread (bpy.data); the channel is taken out with :func:`core.depth.channel_top_down`, which
    any thread can run."""
    img = bpy.data.images.load(path, check_existing=False)
    try:
        img.colorspace_settings.name = "Non-Color"
        w, h = img.size
        if (w, h) != (width, height):
            raise CaptureError("pass %s is %dx%d, expected %dx%d" % (os.path.basename(path), w, h, width, height))
        px = D.float_array(bytes(4 * w * h * img.channels))
        img.pixels.foreach_get(px)
        return px, img.channels
    finally:
        bpy.data.images.remove(img)


def _read_vector_pass(path, width, height):
    """The Vector pass through Blender's loader (main thread), where core.exr refused the file."""
    px, channels = _read_exr_pixels(path, width, height)
    if channels != 4:
        raise CaptureError("the Vector pass has %d channels, expected RGBA" % channels)
    return M.flow_from_vector_pass(px, width, height)


def _camera_motion(cap, cam, width, height):
    """The pose and intrinsics a service needs to reproject a static scene (docs/protocol.md#motion)."""
    cap.pose = [float(v) for row in cam.matrix_world for v in row]
    d = cam.data
    if d.type == "PERSP" and d.shift_x == 0 and d.shift_y == 0:
        cap.intrinsics = M.pinhole_intrinsics(d.lens, d.sensor_width, d.sensor_height, d.sensor_fit, width, height)


def capture_camera(scene, camera=None, **options):
    """Renders the camera's depth (and layout / init image) and returns a :class:`Capture`.
    Blocks: the renders run on the main thread (batch script, animation frames, background
    mode); ``capture_job.capture_camera_async`` keeps the UI running.

    Options: ``view_layer``, ``frame``, ``with_layout`` (True), ``with_init`` (False),
    ``near_far``: 'CAMERA' (the camera's clip range), 'SCENE' (fit to what is in view) or
    'MANUAL' (``manual_near``/``manual_far``), ``background``, ``engine``: 'AUTO', 'CYCLES' or
    'WORKBENCH', ``max_pixels``, ``with_vector``: also the motion to the previous frame, Cycles'
    Vector pass (motion blur off), as ``cap.flow``; every capture records ``cap.pose`` and
    ``cap.intrinsics``. Raises :class:`CaptureError` with a message for the user.
    """
    steps = capture_steps(scene, camera, **options)
    value = None
    try:
        while True:
            step = steps.send(value)
            value = None
            if step[0] == "render":
                try:
                    _render(step[1], step[2])
                except CaptureError as err:
                    value = err
            else:  # "work": plain Python on the captured buffers
                value = step[1]()
    except StopIteration as done:
        return done.value
    finally:
        steps.close()


def capture_steps(scene, camera=None, *, view_layer=None, frame=None, with_layout=True, with_init=False,
                   near_far="CAMERA", manual_near=0.1, manual_far=100.0, background="far", engine="AUTO",
                   max_pixels=CAPTURE_MAX_PIXELS, with_vector=False, in_job=False):
    """A capture as a generator: it yields ``("render", scene copy, view layer)`` where a render
    must happen (the driver sends back None, or the CaptureError it failed with) and ``("work",
    fn)`` for pure-Python work on the captured buffers (the driver sends back ``fn()``; it may
    run it on another thread). Returns the :class:`Capture`; cleans up when closed.
    ``in_job``: the renders run as render jobs next to the UI. Cycles then goes first, with one
    core left to Blender's main thread: a Workbench render job holds the GPU context, and the
    window cannot redraw until it is done."""
    global capturing
    cam = camera or scene.camera
    if cam is None:
        raise CaptureError("the scene has no camera: add one or set Scene > Camera")
    if cam.type != "CAMERA":
        raise CaptureError("%r is not a camera" % cam.name)
    output_size = render_size(scene)
    # An init image must match the output; depth alone can be smaller (see CAPTURE_MAX_PIXELS).
    width, height = output_size if with_init else D.fit_pixels(*output_size, max_pixels)
    src_layer = _view_layer_of(scene, view_layer)
    if (engine == "CYCLES" or with_vector) and not cycles_available():
        raise CaptureError("Cycles is not available in this Blender" + (" (the Vector pass needs it)" if with_vector else ""))
    if with_vector:
        # Workbench has no Vector pass; Cycles gives it with motion blur off (set below).
        order = ["CYCLES"]
    elif engine == "AUTO":
        # Workbench is the fastest Z pass but has no object index pass; Cycles has both and
        # needs no GPU. Without a layout, try Workbench first and fall back to Cycles.
        order = ["CYCLES", "WORKBENCH"] if with_layout or in_job else ["WORKBENCH", "CYCLES"]
        if not cycles_available():
            order.remove("CYCLES")
    else:
        order = [engine]
    t0 = time.perf_counter()
    timings = {}
    out_dir = tempfile.mkdtemp(prefix="depthcast-capture-")
    saved_index = {}
    saved_frame = None
    tmp = None
    capturing = True
    try:
        if frame is not None and int(frame) != scene.frame_current:
            # The copy below shares the objects, and their animation follows the original
            # scene's frame, not the copy's: without this every frame renders the same pose.
            saved_frame = scene.frame_current
            scene.frame_set(int(frame))
        candidates = layout_candidates(scene, src_layer) if with_layout else []
        if len(candidates) > 32767:
            candidates = candidates[:32767]
        entries = {}
        if "CYCLES" in order and with_layout:
            for i, obj in enumerate(candidates, start=1):
                try:
                    saved_index[obj.name] = obj.pass_index
                    obj.pass_index = i
                except (AttributeError, RuntimeError):  # linked, read-only data
                    continue
                entries[i] = LayoutEntry(i, obj.name, object_prompt(obj), object_weight(obj))
        tmp = scene.copy()
        tmp.name = "depthcast capture"
        tmp.camera = cam
        if frame is not None:
            tmp.frame_current = int(frame)
        r = tmp.render
        if (width, height) != output_size:
            r.resolution_x, r.resolution_y, r.resolution_percentage = width, height, 100
        r.use_border = False
        r.use_motion_blur = False
        r.use_sequencer = False
        r.use_single_layer = True
        if hasattr(r, "use_persistent_data"):
            r.use_persistent_data = False
        vl = tmp.view_layers[src_layer.name]
        for other in tmp.view_layers:
            other.use = other == vl
        for attempt, name in enumerate(order):
            with_index = name == "CYCLES" and with_layout and bool(entries)
            if name == "CYCLES":
                _setup_cycles(tmp, vl, with_index)
                vl.use_pass_vector = with_vector
                if in_job and (os.cpu_count() or 1) > 1:
                    tmp.render.threads_mode = "FIXED"
                    tmp.render.threads = (os.cpu_count() or 2) - 1
            else:
                _setup_workbench(tmp, vl)
            slots = [("depth", "Depth")] + ([("index", "IndexOB")] if with_index else []) + ([("vector", "Vector")] if with_vector else [])
            shutil.rmtree(os.path.join(out_dir, "passes"), ignore_errors=True)
            _compositor(tmp, vl, os.path.join(out_dir, "passes"), slots, color_mode="RGBA" if with_vector else "RGB")
            timings["setup"] = time.perf_counter() - t0
            t1 = time.perf_counter()
            failed = yield ("render", tmp, vl)
            if failed is not None:
                if attempt + 1 < len(order) and not isinstance(failed, RenderCancelled):
                    continue
                raise failed
            timings["render"] = time.perf_counter() - t1
            break
        t2 = time.perf_counter()
        paths = [_find_output(os.path.join(out_dir, "passes"), "depth")]
        if with_index:
            paths.append(_find_output(os.path.join(out_dir, "passes"), "index"))
        vector_path = _find_output(os.path.join(out_dir, "passes"), "vector") if with_vector else None

        def read_passes():
            try:
                read = [exr.read_channel(path) for path in paths]
                if vector_path:
                    # Vector's R, G: the motion to the previous frame; B, A (to the next) are not read.
                    dx, w, h = exr.read_channel(vector_path, ("R",))
                    dy_up, _w, _h = exr.read_channel(vector_path, ("G",))
                    read.append((M.flow_from_channels(dx, dy_up), w, h))
                return read
            except (exr.ExrError, OSError):
                return None

        # Read where the driver runs work (a worker thread for a render job); an EXR the plain
        # reader does not handle goes through Blender's loader on the main thread.
        passes = yield ("work", read_passes)
        reader = "core.exr"
        if passes is None:
            reader = "blender"
            passes = []
            for path in paths:
                px, channels = _read_exr_pixels(path, width, height)
                passes.append((D.channel_top_down(px, width, height, channels=channels, channel=0), width, height))
            if vector_path:
                passes.append((_read_vector_pass(vector_path, width, height), width, height))
        for (_values, w, h), path in zip(passes, paths + ([vector_path] if vector_path else [])):
            if (w, h) != (width, height):
                raise CaptureError("pass %s is %dx%d, expected %dx%d" % (os.path.basename(path), w, h, width, height))
        z = passes[0][0]
        index_values = passes[1][0] if with_index else None
        flow = passes[-1][0] if with_vector else None
        timings["read"] = time.perf_counter() - t2
        cap = Capture(None, width, height, cam.name, tmp.frame_current)
        cap.output_size = output_size
        cap.engine = tmp.render.engine
        cap.pass_reader = reader
        cap.flow = flow
        _camera_motion(cap, cam, width, height)
        clip = (cam.data.clip_start, cam.data.clip_end)

        def convert():
            t3 = time.perf_counter()
            near, far = D.resolve_near_far(near_far, clip[0], clip[1], manual_near, manual_far, values=z)
            values = D.clean_background(z, far, background=background)
            cap.depth = D.DepthImage(values, width, height, near, far)
            timings["depth"] = time.perf_counter() - t3
            if index_values is not None:
                t4 = time.perf_counter()
                index, objects = build_layout(index_values, width, height, entries)
                cap.layout = (D.u16le_bytes(index), width, height, objects)
                cap.objects = objects
                timings["layout"] = time.perf_counter() - t4

        yield ("work", convert)
        if with_init:
            t5 = time.perf_counter()
            for o in tmp.view_layers:
                o.use_pass_object_index = False
            _setup_workbench(tmp, vl, solid=True)
            tmp.view_settings.view_transform = "Standard"
            _compositor(tmp, vl, os.path.join(out_dir, "init"), [("init", "Image")], file_format="PNG")
            failed = yield ("render", tmp, vl)
            if failed is not None:
                raise failed
            with open(_find_output(os.path.join(out_dir, "init"), "init"), "rb") as f:
                cap.init_png = f.read()
            timings["init"] = time.perf_counter() - t5
        timings["total"] = time.perf_counter() - t0
        cap.timings = timings
        return cap
    finally:
        for name, value in saved_index.items():
            obj = scene.objects.get(name)
            if obj is not None and obj.pass_index != value:
                obj.pass_index = value
        if tmp is not None:
            bpy.data.scenes.remove(tmp)
        if saved_frame is not None:
            scene.frame_set(saved_frame)
        shutil.rmtree(out_dir, ignore_errors=True)
        capturing = False
