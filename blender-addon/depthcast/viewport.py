"""Live mode: re-send depth whenever the view or the scene changes, debounced, as a live stream
(``mode 'live'``: the service keeps only the newest frame of the stream).

Two sources:
* 3D View (``VIEWPORT``): a GPU depth pass of the current 3D view, without a render
  (gpu_depth.py). The draw handler of the chosen 3D View only draws it; the live tick reads it
  back after the redraw (software GL would otherwise wait for the whole 3D View's
  rasterisation) and hands the raw buffers to a worker thread, which converts and frames them.
* Camera (``CAMERA``): :func:`capture_job.capture_camera_async` (a 1-sample render job) on every change.

Changes are: depsgraph updates of renderable objects and their data, the camera, the render size
or the frame, and (3D View source) any change of the view matrix or region size.
"""
import collections
import queue
import threading
import time

import bpy
from bpy.app.handlers import persistent

from . import capture, capture_job, client, gpu_depth, overlay, properties
from .core import depth as D
from .core import costs, messages, runtime
from .core.costs import timed
from .core.pacing import LivePacer

# Data whose change moves surfaces. Collections are left out: capturing (a scene copy) updates the
# scene collection; what collections change (which objects are visible) is in the scene signature.
DATA_TYPES = {"Mesh", "Curve", "TextCurve", "SurfaceCurve", "MetaBall", "GreasePencil", "Volume", "Curves",
              "PointCloud"}


# ------------------------------------------------------------------ live controller
class LiveState:
    def __init__(self):
        self.enabled = False
        self.scene_name = ""
        self.source = "VIEWPORT"
        self.pacer = LivePacer()
        self.area_ptr = 0
        self.view_sig = None
        self.scene_sig = None
        self.request = False
        self.busy = False
        self.drawn = None  # (scene name, DrawnPass, params, settings, meta) waiting for its read-back
        self.draw_handle = None
        self.frames_sent = 0
        self.captures = 0
        self.capture_s = []  # main-thread seconds of each draw (draw handler) and read-back (tick), last 64
        self.capture_parts = {}  # the last capture's main-thread time by part
        self.trace = collections.deque(maxlen=256)  # (monotonic time, what): request/capture/sent
        self.cache = gpu_depth.BatchCache(keep_offscreen=True)

    def mark_dirty(self):
        self.pacer.changed(time.monotonic())

    def due(self, debounce):
        return self.pacer.due(time.monotonic(), debounce)


_live = LiveState()
_outgoing = collections.deque()  # (scene name, header, payloads, meta) built by workers, sent on the main thread


def is_running():
    return _live.enabled


def state():
    return _live


def _scene():
    return bpy.data.scenes.get(_live.scene_name)


def _active_scene():
    """The scene of the window live mode watches (live mode follows scene switches)."""
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if not _live.area_ptr or area.as_pointer() == _live.area_ptr:
                return window.scene
    return bpy.context.scene


def _scene_signature(scene):
    cam = scene.camera
    r = scene.render
    sig = [scene.name, r.resolution_x, r.resolution_y, r.resolution_percentage, scene.frame_current]
    try:
        layer = bpy.context.view_layer if bpy.context.scene == scene else scene.view_layers[0]
        sig.append(tuple(o.name for o in capture.layout_candidates(scene, layer)))
    except (AttributeError, ReferenceError):
        pass
    if cam is not None:
        sig.append(cam.name)
        sig.extend(round(v, 6) for row in cam.matrix_world for v in row)
        if cam.type == "CAMERA":
            d = cam.data
            sig.extend((d.type, round(d.lens, 5), round(d.ortho_scale, 5), round(d.clip_start, 6), round(d.clip_end, 4),
                        round(d.shift_x, 5), round(d.shift_y, 5), d.sensor_fit, round(d.sensor_width, 4)))
    return tuple(sig)


def relevant_update(depsgraph, scene):
    """Whether a depsgraph update changes what the live depth would show."""
    for u in depsgraph.updates:
        idb = u.id
        if isinstance(idb, bpy.types.Object):
            if idb.type in capture.RENDERABLE_TYPES and (u.is_updated_transform or u.is_updated_geometry):
                if u.is_updated_geometry:
                    _live.cache.invalidate()
                return True
        elif type(idb).__name__ in DATA_TYPES:
            _live.cache.invalidate()
            return True
    sig = _scene_signature(scene)
    if sig != _live.scene_sig:
        _live.scene_sig = sig
        return True
    return False


@persistent
def _on_depsgraph_update(scene, depsgraph=None):
    if not _live.enabled or capture.capturing or scene.name != _live.scene_name:
        return
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    if relevant_update(depsgraph, scene):
        _live.mark_dirty()


@persistent
def _on_frame_change(scene, depsgraph=None):
    if _live.enabled and scene.name == _live.scene_name and not capture.capturing:
        _live.cache.invalidate()
        _live.mark_dirty()


@persistent
def _on_load_pre(*_args):
    stop()
    runtime.clear()


def _on_reconnected():
    """After an outage the frame in flight is lost: send the current view again."""
    if _live.enabled:
        _live.busy = False
        _live.mark_dirty()
        _live.pacer.last_sent = None


def _follow_scene():
    """Live mode goes with the window's scene: a switch sends the new scene's depth with its
    own prompt, and its results land in it."""
    scene = _active_scene()
    if scene is None or scene.name == _live.scene_name or not hasattr(scene, "depthcast"):
        return _scene()
    old = _scene()
    if old is not None:
        runtime.of(old).live_running = False
        runtime.of(old).job_ended("")
    client.cancel(stream=client.LIVE_STREAM)
    _live.scene_name = scene.name
    _live.scene_sig = _scene_signature(scene)
    _live.cache.invalidate()
    runtime.of(scene).live_running = True
    _live.mark_dirty()
    return scene


@timed("live tick")
def _live_tick():
    if not _live.enabled:
        return None
    scene = _follow_scene()
    if scene is None:
        stop()
        return None
    s = scene.depthcast
    rt = runtime.of(scene)
    t0 = time.perf_counter()
    while _outgoing:
        item = _outgoing.popleft()
        if isinstance(item, Exception):
            rt.error = "live: %s" % item
            continue
        scene_name, header, payloads, meta = item
        target = bpy.data.scenes.get(scene_name)
        if target is None:
            continue
        try:
            job = client.submit(target, header, payloads, "live", meta=meta)
        except (RuntimeError, ValueError) as err:
            runtime.of(target).error = "live: %s" % err
            continue
        trt = runtime.of(target)
        trt.job_id = job.job_id
        trt.progress = 0.0
        _live.frames_sent += 1
        _live.trace.append((time.monotonic(), "sent"))
        _live.capture_parts["submit_ms"] = round(1000 * (time.perf_counter() - t0), 2)
    if _live.drawn is not None:
        _read_back()
    elif not _live.busy and _live.due(s.live_debounce):
        _live.pacer.sent(time.monotonic())
        _live.trace.append((time.monotonic(), "request"))
        if _live.source == "CAMERA":
            try:
                _send_camera_frame(scene)
            except (capture.CaptureError, messages.MessageError, ValueError, RuntimeError) as err:
                rt.error = "live: %s" % err
        else:
            _live.request = True
            _tag_live_area()
    return 0.05


def _send_camera_frame(scene):
    """Camera source: a capture as a render job (the UI keeps running); the frame is sent when
    it is done. Live stays busy meanwhile, so renders never pile up."""
    s = scene.depthcast
    scene_name = scene.name

    def captured(cap, err):
        _live.busy = False
        target = bpy.data.scenes.get(scene_name)
        if not _live.enabled or target is None or target.name != _live.scene_name:
            return
        if err is not None:
            runtime.of(target).error = "live: %s" % err
            return
        try:
            params = properties.build_params(target, cap.output_size[0], cap.output_size[1], live=True)
            header, payloads = messages.build_frame(messages.new_job_id("live"), cap.depth, params,
                                                    stream=client.LIVE_STREAM, mode="live", layout=cap.layout)
            job = client.submit(target, header, payloads, "live", meta={"camera": cap.camera, "frame": cap.frame})
        except (messages.MessageError, ValueError, RuntimeError) as send_err:
            runtime.of(target).error = "live: %s" % send_err
            return
        runtime.of(target).job_id = job.job_id
        _live.frames_sent += 1

    _live.busy = True
    capture_job.capture_camera_async(scene, captured, with_layout=s.use_layout, near_far=s.near_far, manual_near=s.near,
                                 manual_far=s.far)


def _tag_live_area():
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D" and (not _live.area_ptr or area.as_pointer() == _live.area_ptr):
                area.tag_redraw()


def capture_view(scene, depsgraph, region, rv3d, max_side):
    """What a live frame from this 3D View captures: (view matrix, projection, width, height,
    camera?). In camera view that is the scene camera's frame at the render's aspect (so the
    result fits the camera frame and its background exactly); otherwise the whole region."""
    cam = scene.camera
    if rv3d.view_perspective == "CAMERA" and cam is not None and cam.type == "CAMERA":
        rw, rh = capture.render_size(scene)
        w, h = D.fit_size(rw, rh, max_side)
        r = scene.render
        proj = cam.calc_matrix_camera(depsgraph, x=w, y=h, scale_x=r.pixel_aspect_x, scale_y=r.pixel_aspect_y)
        return cam.matrix_world.inverted(), proj, w, h, True
    w, h = D.fit_size(region.width, region.height, max_side)
    return rv3d.view_matrix.copy(), rv3d.window_matrix.copy(), w, h, False


@timed("live draw handler")
def _draw_callback():
    """POST_PIXEL draw handler of 3D Views: notices view changes and serves capture requests
    (also while the view keeps changing: the pacer bounds how often). The handler only draws the
    depth pass; the live tick reads it back after the redraw (see :func:`_read_back`)."""
    if not _live.enabled or _live.source != "VIEWPORT":
        return
    ctx = bpy.context
    area, region, rv3d = ctx.area, ctx.region, ctx.region_data
    if area is None or region is None or rv3d is None:
        return
    if _live.area_ptr and area.as_pointer() != _live.area_ptr:
        return
    sig = (tuple(tuple(r) for r in rv3d.view_matrix), tuple(tuple(r) for r in rv3d.window_matrix),
           region.width, region.height, rv3d.view_perspective)
    if sig != _live.view_sig:
        _live.view_sig = sig
        _live.mark_dirty()
    if not _live.request or _live.busy:
        return
    _live.request = False
    scene = ctx.scene
    if scene is None or scene.name != _live.scene_name:
        return
    s = scene.depthcast
    t0 = time.perf_counter()
    try:
        depsgraph = ctx.evaluated_depsgraph_get()
        view_m, proj_m, w, h, is_camera = capture_view(scene, depsgraph, region, rv3d, s.live_max_side)
        ids = gpu_depth.layout_ids(scene, ctx.view_layer) if s.use_layout else None
        t1 = time.perf_counter()
        drawn = gpu_depth.draw_depth_pass(depsgraph, view_m, proj_m, w, h, ids=ids, cache=_live.cache)
        t2 = time.perf_counter()
        params = properties.build_params(scene, w, h, live=True)
        view = overlay.view_info(area, view_m, proj_m, rv3d.view_location, camera=is_camera)
    except Exception as err:  # GPU errors must not break drawing
        _outgoing.append(err)
        return
    meta = {"view": view, "camera": scene.camera.name if is_camera else None, "frame": scene.frame_current}
    _live.busy = True
    _live.drawn = (scene.name, drawn, params, (s.near_far, s.near, s.far), meta)
    _live.captures += 1
    _live.trace.append((time.monotonic(), "capture"))
    t3 = time.perf_counter()
    _live.capture_parts = {"setup_ms": round(1000 * (t1 - t0), 2), "draw_ms": round(1000 * (t2 - t1), 2),
                           "params_ms": round(1000 * (t3 - t2), 2)}
    _live.capture_s = (_live.capture_s + [t3 - t0])[-64:]


def _read_back():
    """Reads the drawn pass back and hands the raw buffers to a worker thread, which converts
    and frames them. Runs in the live tick, between redraws: software GL (llvmpipe) finishes
    every queued draw before a read-back, so inside a draw handler the read waited for the
    rasterisation of the whole 3D View drawn so far (65-130 ms a frame on a loaded machine);
    after the window's buffer swap only the small pass itself is left."""
    scene_name, drawn, params, settings, meta = _live.drawn
    _live.drawn = None
    t0 = time.perf_counter()
    try:
        gp = gpu_depth.read_depth_pass(drawn)
    except Exception as err:  # GPU errors must not break drawing
        _live.busy = False
        _outgoing.append(err)
        return
    dt = time.perf_counter() - t0
    _live.capture_parts["read_ms"] = round(1000 * dt, 2)
    _live.capture_s = (_live.capture_s + [dt])[-64:]
    t1 = time.perf_counter()
    _converter().put((scene_name, gp, params, settings, meta))
    _live.capture_parts["hand_over_ms"] = round(1000 * (time.perf_counter() - t1), 2)


#: The conversion worker: one thread for the add-on's life (starting a thread per frame cost the
#: main thread 8-30 ms on a loaded machine, waiting for the new thread to run).
_convert_queue = {"queue": None}


def _converter():
    q = _convert_queue["queue"]
    if q is None:
        q = _convert_queue["queue"] = queue.Queue()
        threading.Thread(target=_convert_loop, args=(q,), daemon=True, name="depthcast-live-convert").start()
    return q


def _convert_loop(q):
    while True:
        item = q.get()
        if item is None:
            return
        _convert_and_queue(*item)


def _stop_converter():
    q = _convert_queue["queue"]
    _convert_queue["queue"] = None
    if q is not None:
        q.put(None)


def _convert_and_queue(scene_name, gp, params, settings, meta):
    try:
        near_far, near, far = settings
        with costs.short_gil_slices():
            image, layout, _objects = gpu_depth.convert_gpu_pass(gp, near_far, near, far)
        header, payloads = messages.build_frame(messages.new_job_id("live"), image, params, stream=client.LIVE_STREAM,
                                                mode="live", layout=layout)
        _outgoing.append((scene_name, header, payloads, meta))
    except Exception as err:
        _outgoing.append(err)
    finally:
        _live.busy = False


def start(context):
    """Starts live mode for the context's scene (and 3D View, for the VIEWPORT source)."""
    scene = context.scene
    s = scene.depthcast
    client.ensure_started(context)
    area = context.area if context.area is not None and context.area.type == "VIEW_3D" else None
    if area is None:
        for window in context.window_manager.windows:
            for a in window.screen.areas:
                if a.type == "VIEW_3D":
                    area = a
                    break
    if s.live_source == "VIEWPORT" and area is None:
        raise RuntimeError("no 3D View is open: live mode from the 3D View needs one (use the Camera source)")
    _live.enabled = True
    _live.scene_name = scene.name
    _live.source = s.live_source
    _live.view_sig = None
    _live.scene_sig = _scene_signature(scene)
    _live.request = False
    _live.busy = False
    _live.drawn = None
    _live.frames_sent = 0
    _live.captures = 0
    _live.capture_s = []
    _live.pacer.reset()
    _live.cache.invalidate()
    _live.area_ptr = area.as_pointer() if area is not None else 0
    if _on_depsgraph_update not in bpy.app.handlers.depsgraph_update_post:
        bpy.app.handlers.depsgraph_update_post.append(_on_depsgraph_update)
    if _on_frame_change not in bpy.app.handlers.frame_change_post:
        bpy.app.handlers.frame_change_post.append(_on_frame_change)
    if _live.source == "VIEWPORT" and _live.draw_handle is None:
        _live.draw_handle = bpy.types.SpaceView3D.draw_handler_add(_draw_callback, (), "WINDOW", "POST_PIXEL")
    if _on_reconnected not in client._on_connected:
        client._on_connected.append(_on_reconnected)
    if not bpy.app.timers.is_registered(_live_tick):
        bpy.app.timers.register(_live_tick, first_interval=0.05)
    runtime.of(scene).live_running = True
    runtime.of(scene).error = ""
    overlay.prepare()  # compile its shader now, not in the middle of the first redraw
    _live.mark_dirty()
    _tag_live_area()


def stop():
    """Stops live mode and cancels the live stream on the service."""
    was = _live.enabled
    _live.enabled = False
    _live.request = False
    _live.drawn = None
    _live.pacer.reset()
    if _live.draw_handle is not None:
        bpy.types.SpaceView3D.draw_handler_remove(_live.draw_handle, "WINDOW")
        _live.draw_handle = None
    for handlers, fn in ((bpy.app.handlers.depsgraph_update_post, _on_depsgraph_update),
                         (bpy.app.handlers.frame_change_post, _on_frame_change)):
        while fn in handlers:
            handlers.remove(fn)
    if bpy.app.timers.is_registered(_live_tick):
        bpy.app.timers.unregister(_live_tick)
    while _on_reconnected in client._on_connected:
        client._on_connected.remove(_on_reconnected)
    _outgoing.clear()
    _live.cache.invalidate()
    _live.cache.free_offscreen()
    overlay.clear()
    scene = _scene()
    if scene is not None:
        rt = runtime.of(scene)
        rt.live_running = False
        if rt.job_id:
            rt.job_ended("stopped")
    if was:
        client.cancel(stream=client.LIVE_STREAM)


def register():
    if _on_load_pre not in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.append(_on_load_pre)
    overlay.register(is_running)


def unregister():
    stop()
    _stop_converter()
    overlay.unregister()
    while _on_load_pre in bpy.app.handlers.load_pre:
        bpy.app.handlers.load_pre.remove(_on_load_pre)
    runtime.clear()
