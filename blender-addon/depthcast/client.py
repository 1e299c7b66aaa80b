"""The add-on's one connection to the service, and the bridge back to Blender's main thread.

Networking runs on the threads of :class:`core.session.Session`; everything it reports lands
in a ``queue.Queue``. :func:`process_events` drains that queue on the main thread, from a
``bpy.app.timers`` function (or directly, in background mode where timers do not run), and is
the only place that touches bpy data for results. Nothing here waits on the network.
"""
import json
import os
import queue
import tempfile
import textwrap
import time

import bpy

from . import results
from .core import messages, pixels, runtime, service, warp_plot
from .core.costs import timed
from .core.session import (CONNECTED, CONNECTING, DISCONNECTED, RECONNECTING, STOPPED, Backoff, Session,
                           is_loopback_url, normalize_url)
from .preference_values import get_prefs

ADDON_VERSION = "0.1.0"
LIVE_STREAM = "blender-live"
TIMER_INTERVAL = 0.1

_events = queue.Queue()
_session = None
_service = None
_jobs = {}  # jobId -> JobRecord
_models = []
_last = {"result": None}  # last finished result: dict(header, png, frame_header, scene, camera, frame)
_status_bar_text = [None]


class JobRecord:
    """What the add-on remembers about a job it sent."""

    def __init__(self, job_id, scene_name, kind, frame_header, on_done=None, meta=None):
        self.job_id = job_id
        self.scene_name = scene_name
        self.kind = kind  # 'generate', 'live', 'animation', 'batch'
        self.frame_header = frame_header
        self.on_done = on_done
        self.meta = meta or {}
        self.sent_at = time.monotonic()
        self.position = None


# ---------------------------------------------------------------- status
def connection_status():
    if _session is None:
        return DISCONNECTED, ""
    return _session.state, _session.state_message


def status_icon(state):
    return {CONNECTED: "CHECKMARK", CONNECTING: "TIME", RECONNECTING: "TIME", DISCONNECTED: "UNLINKED",
            STOPPED: "UNLINKED"}.get(state, "QUESTION")


def known_models():
    return list(_models)


def model_is_tiny(name):
    """Whether the named model (or the service default when blank) is a tiny random-weight test model."""
    for m in _models:
        if (m.get("name") == name) if name else m.get("default"):
            return bool(m.get("tiny"))
    return False


def local_service():
    return _service


def is_started():
    return _session is not None


def wrap(text, width=60):
    return textwrap.wrap(text or "", width) or [""]


# ---------------------------------------------------------------- lifecycle
def start(context=None):
    """Connects (and starts the local service when asked to). Returns the Session."""
    global _session, _service
    if _session is not None:
        return _session
    prefs = get_prefs(context)
    if prefs.start_local_service:
        if _service is None or not _service.running:
            port = service.free_port()
            log_path = os.path.join(tempfile.gettempdir(), "depthcast-service-%d.log" % os.getpid())
            command = service.resolve_command(prefs.service_command, service.shipped_package_root(
                os.path.dirname(os.path.abspath(__file__))))
            argv = service.build_command(command, port, models_dir=bpy.path.abspath(
                prefs.service_models_dir) if prefs.service_models_dir else "", model=prefs.service_model,
                extra=prefs.service_args)
            _service = service.LocalService(argv, "127.0.0.1", port, log_path=log_path).start()
        url = _service.url
    else:
        url = normalize_url(prefs.server_url)
        online = getattr(bpy.app, "online_access", True)
        if not online and not is_loopback_url(url):
            raise RuntimeError("Blender's 'Allow Online Access' is off: only a local service (localhost) can be used")
    _session = Session(url, prefs.token, events=_events, reconnect=bool(prefs.auto_connect),
                       backoff=Backoff(initial=0.5, maximum=30.0), connect_timeout=float(prefs.connect_timeout),
                       client_version=ADDON_VERSION)
    if _service is not None and prefs.start_local_service:
        # The service needs a moment to load; the session's backoff covers it.
        _session.backoff = Backoff(initial=0.25, factor=1.5, maximum=5.0)
    _session.start()
    _ensure_timer()
    return _session


def stop(stop_service=True):
    global _session, _service
    sess, _session = _session, None
    if sess is not None:
        sess.stop(timeout=1.5)
    if stop_service and _service is not None:
        _service.stop(timeout=3.0)
        _service = None
    _drain_silently()
    for job in list(_jobs.values()):
        _finish(job, "error", {"code": "OFFLINE", "message": "disconnected"})
    _jobs.clear()
    # Nothing runs any more: no panel may keep showing "step 7 / 101" with Cancel enabled.
    runtime.end_all_jobs("disconnected")


def restart(context=None):
    prefs = get_prefs(context)
    keep_service = _service is not None and prefs.start_local_service and _service.running
    stop(stop_service=not keep_service)
    return start(context)


def ensure_started(context=None):
    if _session is None:
        return start(context)
    return _session


def retry_now():
    if _session is not None:
        _session.retry_now()


def _drain_silently():
    while True:
        try:
            _events.get_nowait()
        except queue.Empty:
            return


# ---------------------------------------------------------------- jobs
def submit(scene, header, payloads, kind, on_done=None, meta=None):
    """Sends a frame; its events will update ``scene``. Returns the JobRecord."""
    sess = ensure_started()
    job = JobRecord(header["jobId"], scene.name, kind, header, on_done=on_done, meta=meta)
    _jobs[job.job_id] = job
    sess.send_frame(header, payloads)
    return job


def cancel(job_id=None, stream=None):
    if _session is not None:
        _session.cancel(job_id=job_id, stream=stream)


def jobs_of(scene_name, kind=None):
    return [j for j in _jobs.values() if j.scene_name == scene_name and (kind is None or j.kind == kind)]


def last_result():
    return _last["result"]


# ---------------------------------------------------------------- main-thread side
@timed("events")
def process_events(max_events=200, budget_s=0.05):
    """Applies queued network events to Blender data. Main thread only. Returns how many."""
    n = 0
    deadline = time.perf_counter() + budget_s
    while n < max_events:
        try:
            ev = _events.get_nowait()
        except queue.Empty:
            break
        n += 1
        try:
            _handle(ev)
        except Exception as err:  # never let one bad event kill the timer
            print("depthcast: error while handling %r: %s" % (ev, err))
        if time.perf_counter() > deadline:
            break
    if n:
        _tag_redraw()
    return n


def _tick():
    try:
        process_events()
    except Exception as err:
        print("depthcast: timer error: %s" % err)
    return TIMER_INTERVAL if _session is not None or _jobs else 0.5


def _ensure_timer():
    if not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=TIMER_INTERVAL, persistent=True)


def _scene_of(job):
    return bpy.data.scenes.get(job.scene_name) if job is not None else None


def _handle(ev):
    kind = ev.kind
    if kind == "state":
        _on_state(ev.data.get("state"))
        return
    if kind == "hello":
        _models[:] = ev.data.get("models", [])
        return
    job = _jobs.get(ev.data.get("jobId"))
    scene = _scene_of(job)
    rt = runtime.of(scene) if scene is not None else None
    mine = rt is not None and job is not None and rt.job_id == job.job_id
    if kind == "accepted" and job is not None:
        job.position = ev.data.get("position", 0)
        if mine and job.kind != "animation":
            rt.status = "running" if not job.position else "queued (%d ahead)" % job.position
        return
    if kind == "progress" and job is not None and job.kind in ("generate", "live"):
        total = max(1, int(ev.data.get("total", 1)))
        if mine:
            rt.progress = 100.0 * int(ev.data.get("step", 0)) / total
            rt.status = "step %d / %d" % (ev.data.get("step", 0), total)
        return
    if kind == "preview" and job is not None and job.kind in ("generate", "live"):
        if mine:
            _on_preview(ev, job)
        return
    if kind == "result":
        _on_result(ev, job, scene)
        return
    if kind == "error":
        message = "%s: %s" % (ev.data.get("code", "ERROR"), ev.data.get("message", ""))
        if job is None:
            if ev.data.get("jobId") is None:
                # A connection-level error: show it on every scene that has a job running.
                for state in runtime.all_states():
                    if state.job_id:
                        state.error = message
                set_status_bar("depthcast: " + message)
            return
        if rt is not None and job.kind != "animation":
            rt.error = message
            if mine:
                rt.job_ended("failed")
        set_status_bar("depthcast: " + message)
        _finish(job, "error", ev.data)
        return
    if kind == "cancelled":
        if job is not None:
            if mine:
                rt.job_ended("cancelled" if ev.data.get("reason") != "superseded" else "superseded")
            _finish(job, "cancelled", ev.data)


def _on_state(state):
    """Connected again: errors the outage left are stale, and live mode sends the current view
    again (its frame in flight was lost with the connection), with no user action."""
    if state != CONNECTED:
        return
    for rt in runtime.all_states():
        if rt.error.startswith(("OFFLINE", "CONNECTION", "TIMEOUT")):
            rt.error = ""
    set_status_bar(None)
    for cb in list(_on_connected):
        try:
            cb()
        except Exception as err:
            print("depthcast: reconnect callback failed: %s" % err)


#: Called on the main thread after every (re)connection (live mode registers its resend here).
_on_connected = []


def _on_preview(ev, job):
    """Previews go to the 3D View overlay (stretched over the captured view) and into the result
    image only when they have its size, so the image does not resize on every step."""
    from . import overlay

    try:
        w, h = int(ev.data.get("width", 0)), int(ev.data.get("height", 0))
        if ev.data.get("format") == "rgb8":
            px = ev.pixels if ev.pixels is not None else pixels.rgb8_to_pixels(ev.payload, w, h)
        else:
            w, h, px = results.decode_image(ev.payload, ".jpg")
    except (ValueError, RuntimeError) as err:
        print("depthcast: preview skipped: %s" % err)
        return
    if job.kind == "live":
        overlay.show(px, w, h, job.meta.get("view"), preview=True)
    img = results.set_result_pixels_if_size(px, w, h)
    if img is not None:
        results.show_in_image_editors(img)


def _on_result(ev, job, scene):
    from . import overlay

    header, payload = ev.data, ev.payload
    # Live results may come raw (rgb8): shown without a decoder, made a PNG only if saved.
    raw = header.get("format") == "rgb8"
    frame_header = job.frame_header if job is not None else None
    info = {"header": header, "png": None if raw else payload, "rgb8": payload if raw else None, "frame_header": frame_header,
            "scene": scene.name if scene is not None else None,
            "camera": job.meta.get("camera") if job is not None else None,
            "frame": job.meta.get("frame") if job is not None else None}
    if job is None or job.kind != "animation":
        _last["result"] = info
        img = None
        try:
            if raw:
                w, h = int(header.get("width", 0)), int(header.get("height", 0))
                px = ev.pixels if ev.pixels is not None else pixels.rgb8_to_pixels(payload, w, h)
            else:
                w, h, px = results.decode_image(payload, ".png")
            img = results.set_result_float_pixels(px, w, h)
        except (ValueError, RuntimeError) as err:
            if scene is not None:
                runtime.of(scene).error = "result: %s" % err
        if img is not None:
            results.show_in_image_editors(img)
            if job is not None and job.kind == "live":
                overlay.show(px, w, h, job.meta.get("view"))
        if scene is not None:
            s = scene.depthcast
            rt = runtime.of(scene)
            if header.get("seed") is not None:
                rt.last_seed = int(header["seed"])  # all 32 bits: Keep seed must reproduce this image
            rt.sizes = runtime.size_note(header)
            if rt.job_id == header.get("jobId"):
                timings = header.get("timings") or {}
                total = timings.get("total")
                rt.job_ended("done (seed %s%s)" % (header.get("seed"), ", %.1f s" % (total / 1000.0) if total else ""))
                rt.progress = 100.0
                if img is not None:
                    rt.error = ""
            cam = scene.objects.get(info["camera"]) if info["camera"] else scene.camera
            view = job.meta.get("view") if job is not None else None
            if view is not None and not view.get("camera"):
                cam = None  # a 3D View region result: only the overlay can show it aligned
            if img is not None and cam is not None:
                results.set_camera_background(cam, img, s.show_in_viewport)
            if s.auto_save and job is not None and job.kind == "generate":
                try:
                    save_last_result()
                except (OSError, RuntimeError) as err:
                    rt.error = "could not save the result: %s" % err
        set_status_bar(None)
    if job is not None:
        _finish(job, "result", header, payload)


def _finish(job, outcome, data, payload=None):
    _jobs.pop(job.job_id, None)
    if job.on_done is not None:
        try:
            job.on_done(job, outcome, data, payload)
        except Exception as err:
            print("depthcast: job callback failed: %s" % err)


def write_animation_report(scene, first_frame, summary):
    """Render Animation's report next to its frames: ``depthcast-animation.json`` (the summary,
    with every pair's warp score, the mean and the worst) and, drawn by the service on a worker
    thread, ``depthcast-animation-warp.png``. Returns the JSON's path, or None where the folder
    cannot be written (the status line still has the figures)."""
    out_dir = os.path.dirname(bpy.path.abspath(results.frame_output_path(scene, first_frame)))
    path = os.path.join(out_dir, "depthcast-animation.json")
    doc = dict(summary, scene=scene.name)
    title = "%s: warp error per frame pair" % scene.name
    try:
        os.makedirs(out_dir, exist_ok=True)
        if _session is None:
            warp_plot.write_report(path, dict(doc, plotError="not connected to a service"))
        else:
            warp_plot.write_report_and_plot(path, doc, _session.url, _session.token, title, summary.get("consistency", ""))
    except OSError as err:
        print("depthcast: could not write %s: %s" % (path, err))
        return None
    return path


def save_last_result(folder=None):
    """Saves the last result (PNG as received, or written from a raw live result, + JSON sidecar).
    Returns the PNG path."""
    info = _last["result"]
    if info is None:
        raise RuntimeError("no result to save yet")
    folder = folder or results.result_folder()
    if folder is None:
        raise RuntimeError("save the .blend first: results are saved in a 'depthcast' folder next to it")
    header = info["header"]
    base = "%s_%s" % (results.safe_name(os.path.splitext(os.path.basename(bpy.data.filepath))[0] or "untitled"),
                      results.safe_name(header.get("jobId", "result")))
    sidecar = messages.sidecar_json(header, info["frame_header"], scene=info["scene"], camera=info["camera"],
                                    frame=info["frame"], blend=bpy.data.filepath or None)
    png = info["png"]
    if png is None:
        text = {"parameters": json.dumps(header.get("params") or {}, separators=(",", ":")), "Software": "depthcast"}
        png = pixels.rgb8_to_png(info["rgb8"], int(header.get("width", 0)), int(header.get("height", 0)), text)
    return results.write_result(folder, base, png, sidecar)


# ---------------------------------------------------------------- UI helpers
def set_status_bar(text):
    """Shows ``text`` in the status bar of every window (None clears)."""
    _status_bar_text[0] = text
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        try:
            window.workspace.status_text_set(text)
        except (AttributeError, RuntimeError, TypeError):
            pass


def _tag_redraw():
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "IMAGE_EDITOR", "PREFERENCES", "PROPERTIES"):
                area.tag_redraw()


def register():
    _ensure_timer()


def unregister():
    stop(stop_service=True)
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
    set_status_bar(None)
