"""Captures as render jobs, so Generate and Live's Camera source leave the UI running.

:func:`capture.capture_camera` renders on the main thread (Blender shows nothing until it is
done: 3.7 s at 1920x1080). Here the same capture steps (``capture.capture_steps``) run with
the renders as Blender's render job, invoked as F12 does but with the render display kept at
"Keep User Interface" for that call; ``render_complete``/``render_cancel`` handlers and a timer
notice the end, and the EXR read and the depth conversion run on a worker thread.
"""
import threading
import time

import bpy

from . import capture
from .core import costs


def capture_camera_async(scene, on_done, camera=None, **options):
    """:func:`capture.capture_camera` without blocking the UI: the renders run as Blender's render job
    (``render.render`` invoked, as F12 does, with the render window kept closed), the pass
    conversion on a worker thread, and ``on_done(capture, error)`` is called on the main thread
    at the end (error: a CaptureError, capture None). In background mode, or with no window to
    invoke a render from, it runs :func:`capture.capture_camera` and calls ``on_done`` before returning.
    Returns the :class:`AsyncCapture` (None when it already finished)."""
    if bpy.app.background or _render_window() is None:
        try:
            cap = capture.capture_camera(scene, camera, **options)
        except capture.CaptureError as err:
            on_done(None, err)
            return None
        on_done(cap, None)
        return None
    job = AsyncCapture(capture.capture_steps(scene, camera, in_job=True, **options), on_done)
    _active.add(job)
    job.advance(None)
    return job


#: Captures not finished yet (dropped on unregister).
_active = set()


def unregister():
    """Drops running captures and removes the render handlers (add-on disabled)."""
    for job in list(_active):
        job.cancel()
    _active.clear()
    for handlers, fn in ((bpy.app.handlers.render_complete, _on_render_complete),
                         (bpy.app.handlers.render_cancel, _on_render_cancel)):
        while fn in handlers:
            handlers.remove(fn)


def _render_window():
    wm = bpy.context.window_manager
    windows = list(getattr(wm, "windows", []))
    return bpy.context.window or (windows[0] if windows else None)


#: The outcome of the render job :class:`AsyncCapture` started ("complete" / "cancel"), set by
#: the render handlers (Blender may call them from its render thread: they only set this).
_render_outcome = {"value": None}


@bpy.app.handlers.persistent
def _on_render_complete(*_args):
    _render_outcome["value"] = "complete"


@bpy.app.handlers.persistent
def _on_render_cancel(*_args):
    _render_outcome["value"] = "cancel"


def _render_job_running():
    is_running = getattr(bpy.app, "is_job_running", None)
    return bool(is_running("RENDER")) if is_running is not None else False


def _invoke_render(tmp, view_layer):
    """Starts the render job for the scene copy. Returns None, or the CaptureError it failed with."""
    prefs = bpy.context.preferences
    saved_display, saved_dirty = prefs.view.render_display_type, prefs.is_dirty
    window = _render_window()
    _render_outcome["value"] = None
    for handlers, fn in ((bpy.app.handlers.render_complete, _on_render_complete),
                         (bpy.app.handlers.render_cancel, _on_render_cancel)):
        if fn not in handlers:
            handlers.append(fn)
    try:
        prefs.view.render_display_type = "NONE"  # keep the user's layout: no render window
        with bpy.context.temp_override(window=window, screen=window.screen):
            result = bpy.ops.render.render("INVOKE_DEFAULT", write_still=False, scene=tmp.name, layer=view_layer.name)
    except RuntimeError as err:
        return capture.CaptureError("render failed (%s): %s" % (tmp.render.engine, str(err).strip()))
    finally:
        prefs.view.render_display_type = saved_display
        try:
            prefs.is_dirty = saved_dirty  # a capture is no change of the user's preferences
        except (AttributeError, TypeError):
            pass
    if "CANCELLED" in result:
        return capture.CaptureError("Blender refused to render (is another render running?)")
    return None


class AsyncCapture:
    """Drives :func:`capture.capture_steps` from timers: renders as render jobs, work on a thread."""

    def __init__(self, steps, on_done):
        self.steps = steps
        self.on_done = on_done
        self.waiting = None  # "render" or "work"
        self.work_result = None  # (error or None, value) once the worker finished
        self.cancelled = False
        self.started = 0.0
        self.ticks = 0
        self.finished = False
        self.trace = []  # (time.monotonic(), what): where the main thread was, for profiling

    def advance(self, value):
        while True:
            try:
                capture.capturing = True
                self.trace.append((time.monotonic(), "resume"))
                step = self.steps.send(value)
                self.trace.append((time.monotonic(), step[0]))
            except StopIteration as done:
                return self._finish(done.value, None)
            except Exception as err:  # noqa: BLE001 - reported to on_done, never lost
                if not isinstance(err, capture.CaptureError):
                    err = capture.CaptureError(str(err))
                return self._finish(None, err)
            if step[0] == "render":
                value = _invoke_render(step[1], step[2])
                if value is not None:
                    continue
                self.waiting = "render"
            else:
                self.waiting = "work"
                self.work_result = None
                threading.Thread(target=self._work, args=(step[1],), daemon=True, name="depthcast-capture").start()
            self.started = time.monotonic()
            # While the job runs the user may edit the scene, and live mode must see it; what the
            # capture itself changed (the scene copy, pass indices) was before this point.
            capture.capturing = False
            bpy.app.timers.register(self._poll, first_interval=0.05)
            return None

    def _work(self, fn):
        try:
            with costs.short_gil_slices():
                value = fn()
            self.work_result = (None, value)
        except Exception as err:  # noqa: BLE001 - handed to the main thread
            self.work_result = (err, None)

    def _poll(self):
        self.ticks += 1
        if self.finished:
            return None
        if self.waiting == "work":
            if self.work_result is None:
                return 0.02
            self.trace.append((time.monotonic(), "work done"))
            self.waiting = None
            err, value = self.work_result
            if err is not None:
                self.steps.close()
                if not isinstance(err, capture.CaptureError):
                    err = capture.CaptureError("capture: %s" % err)
                self._finish(None, err)
            else:
                self.advance(value)
            return None
        outcome = _render_outcome["value"]
        if _render_job_running() or (outcome is None and time.monotonic() - self.started < 2.0):
            return 0.05  # (without is_job_running, a render that never reports ends after 2 s)
        self.waiting = None
        self.trace.append((time.monotonic(), "render %s" % outcome))
        if self.cancelled:  # the scene copy can go now that the job no longer renders it
            self.finished = True
            _active.discard(self)
            self.steps.close()
            return None
        self.advance(None if outcome == "complete" else capture.RenderCancelled(
            "the capture's render was cancelled" if outcome == "cancel" else "the capture's render did not finish"))
        return None

    def cancel(self):
        """Drops the capture without calling ``on_done``. A running render job finishes on its
        own (Esc stops it), and the scene copy it renders is removed only after it."""
        self.cancelled = True
        if not self.finished and self.waiting != "render":
            self.finished = True
            _active.discard(self)
            self.steps.close()

    def _finish(self, cap, err):
        if self.finished:
            return None
        self.trace.append((time.monotonic(), "done"))
        self.finished = True
        _active.discard(self)
        self.steps.close()
        try:
            self.on_done(cap, err)
        except Exception as cb_err:  # noqa: BLE001 - a callback must not break the timer
            print("depthcast: capture callback failed: %s" % cb_err)
        return None
