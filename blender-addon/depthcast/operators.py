"""Operators: connect, generate, cancel, live mode, results, render animation, object prompts.

Operators only start a capture (Generate: a render job, as F12 runs it) and enqueue; the network
work and the waiting happen elsewhere (client.py), so Blender stays responsive.
"""
import json
import os
import random
import time

import bpy
from bpy.props import IntProperty, StringProperty

from . import capture, capture_job, client, properties, results, viewport
from .core import messages, motion, runtime


def _report_error(op, scene, text):
    if scene is not None:
        runtime.of(scene).error = text
    client.set_status_bar("depthcast: " + text)
    op.report({"ERROR"}, text)


def capture_options(scene, with_init=None, frame=None, camera=None, with_vector=False):
    s = scene.depthcast
    return dict(camera=camera, frame=frame, with_layout=s.use_layout,
                with_init=s.use_init if with_init is None else with_init,
                near_far=s.near_far, manual_near=s.near, manual_far=s.far, with_vector=with_vector)


def capture_for(scene, with_init=None, frame=None, camera=None, with_vector=False):
    return capture.capture_camera(scene, **capture_options(scene, with_init, frame, camera, with_vector))


def build_job(scene, cap, kind, mode="batch", stream="blender"):
    params = properties.build_params(scene, cap.output_size[0], cap.output_size[1], with_init=cap.init_png is not None)
    job_id = messages.new_job_id({"generate": "gen", "animation": "anim"}.get(kind, kind[:6]))
    return messages.build_frame(job_id, cap.depth, params, stream=stream, mode=mode, init_png=cap.init_png,
                                layout=cap.layout)


#: The Generate capture now rendering (capture_job.AsyncCapture), by scene name.
_capturing = {}
#: The last Generate capture (its timings say where the time went).
last_capture = {"capture": None}


def generate(scene, on_sent=None):
    """Captures the scene camera without blocking the UI (see capture_job.capture_camera_async) and
    sends one generation when the capture is done; ``on_sent(job, capture)`` then, errors go to
    the scene's runtime error. In background mode all of this happens before it returns.
    Raises CaptureError / RuntimeError with a message for the user when it cannot start."""
    rt = runtime.of(scene)
    if rt.job_id:
        client.cancel(job_id=rt.job_id)
    previous = _capturing.pop(scene.name, None)
    if previous is not None:
        previous.cancel()
    rt.error = ""
    client.set_status_bar(None)
    rt.status = "capturing depth"
    rt.progress = 0.0
    scene_name = scene.name

    def captured(cap, err):
        _capturing.pop(scene_name, None)
        target = bpy.data.scenes.get(scene_name)
        if target is None:
            return
        trt = runtime.of(target)
        if err is not None:
            trt.job_ended("")
            trt.error = str(err)
            client.set_status_bar("depthcast: %s" % err)
            return
        try:
            t0 = time.perf_counter()
            header, payloads = build_job(target, cap, "generate")
            cap.timings["frame"] = time.perf_counter() - t0
            trt.status = "sending"
            job = client.submit(target, header, payloads, "generate", meta={"camera": cap.camera, "frame": cap.frame})
        except (messages.MessageError, RuntimeError, ValueError) as send_err:
            trt.job_ended("")
            trt.error = str(send_err)
            return
        trt.job_id = job.job_id
        last_capture["capture"] = cap
        if on_sent is not None:
            on_sent(job, cap)

    job = capture_job.capture_camera_async(scene, captured, **capture_options(scene))
    if job is not None:
        _capturing[scene_name] = job


class _NeedsSceneCamera:
    @classmethod
    def poll(cls, context):
        return context.scene is not None and context.scene.camera is not None


class _NeedsLastResult:
    @classmethod
    def poll(cls, context):
        return client.last_result() is not None


class DEPTHCAST_OT_connect(bpy.types.Operator):
    bl_idname = "depthcast.connect"
    bl_label = "Connect"
    bl_description = "Connect (or reconnect) to the depthcast service"

    def execute(self, context):
        try:
            client.restart(context)
        except (RuntimeError, ValueError) as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        client.retry_now()
        return {"FINISHED"}


class DEPTHCAST_OT_disconnect(bpy.types.Operator):
    bl_idname = "depthcast.disconnect"
    bl_label = "Disconnect"
    bl_description = "Close the connection (and stop the local service if the add-on started it)"

    def execute(self, context):
        viewport.stop()
        client.stop(stop_service=True)
        return {"FINISHED"}


class DEPTHCAST_OT_generate(_NeedsSceneCamera, bpy.types.Operator):
    bl_idname = "depthcast.generate"
    bl_label = "Generate"
    bl_description = "Capture the camera's depth and layout and generate an image"

    def execute(self, context):
        scene = context.scene
        report = self.report

        def sent(_job, cap):
            report({"INFO"}, "depthcast: sent %dx%d depth (%s, %.2f s capture)%s" % (
                cap.width, cap.height, cap.engine, cap.timings.get("total", 0.0),
                ", %d objects" % len(cap.objects) if cap.objects else ""))

        try:
            generate(scene, on_sent=sent if bpy.app.background else None)
        except (capture.CaptureError, messages.MessageError, RuntimeError, ValueError) as err:
            _report_error(self, scene, str(err))
            return {"CANCELLED"}
        if runtime.of(scene).error:
            _report_error(self, scene, runtime.of(scene).error)
            return {"CANCELLED"}
        return {"FINISHED"}


class DEPTHCAST_OT_cancel(bpy.types.Operator):
    bl_idname = "depthcast.cancel"
    bl_label = "Cancel"
    bl_description = "Cancel the running generation, live mode and animation render"

    def execute(self, context):
        rt = runtime.of(context.scene)
        if rt.job_id:
            client.cancel(job_id=rt.job_id)
        if rt.live_running or viewport.is_running():
            viewport.stop()
        if rt.animation_running:
            rt.animation_running = False  # the modal operator notices and cancels its jobs
        rt.status = "cancelling" if rt.job_id else rt.status
        return {"FINISHED"}


class DEPTHCAST_OT_randomize_seed(bpy.types.Operator):
    bl_idname = "depthcast.randomize_seed"
    bl_label = "New Seed"
    bl_description = "Pick a new random seed"

    def execute(self, context):
        context.scene.depthcast.seed = str(random.randint(0, runtime.SEED_MAX))
        return {"FINISHED"}


class DEPTHCAST_OT_use_last_seed(bpy.types.Operator):
    bl_idname = "depthcast.use_last_seed"
    bl_label = "Keep Seed"
    bl_description = "Use the last result's seed (and stop randomizing)"

    @classmethod
    def poll(cls, context):
        return context.scene is not None and runtime.of(context.scene).last_seed is not None

    def execute(self, context):
        s = context.scene.depthcast
        rt = runtime.of(context.scene)
        s.seed_randomize = False
        s.seed = str(rt.last_seed)
        return {"FINISHED"}


class DEPTHCAST_OT_live(bpy.types.Operator):
    bl_idname = "depthcast.live"
    bl_label = "Live"
    bl_description = "Start or stop live mode: re-send depth on every view or scene change (newest frame wins)"

    def execute(self, context):
        if viewport.is_running():
            viewport.stop()
            return {"FINISHED"}
        try:
            viewport.start(context)
        except (RuntimeError, ValueError) as err:
            _report_error(self, context.scene, str(err))
            return {"CANCELLED"}
        return {"FINISHED"}


class DEPTHCAST_OT_save_result(_NeedsLastResult, bpy.types.Operator):
    bl_idname = "depthcast.save_result"
    bl_label = "Save Result"
    bl_description = "Save the last result (PNG and generation parameters as JSON) next to the .blend"

    def execute(self, context):
        try:
            path = client.save_last_result()
        except (OSError, RuntimeError) as err:
            _report_error(self, context.scene, str(err))
            return {"CANCELLED"}
        self.report({"INFO"}, "depthcast: saved %s" % path)
        return {"FINISHED"}


class DEPTHCAST_OT_show_result(bpy.types.Operator):
    bl_idname = "depthcast.show_result"
    bl_label = "Show Result"
    bl_description = "Show the result image in an Image Editor (opens a window if none is open)"

    @classmethod
    def poll(cls, context):
        return bpy.data.images.get(results.RESULT_IMAGE) is not None

    def execute(self, context):
        results.open_image_editor(bpy.data.images[results.RESULT_IMAGE])
        return {"FINISHED"}


class _ObjectPromptOperator:
    """Add and remove act on the named object, else the active one."""

    bl_options = {"REGISTER", "UNDO"}

    object_name: StringProperty()

    def execute(self, context):
        obj = context.scene.objects.get(self.object_name) if self.object_name else context.active_object
        if obj is None:
            return {"CANCELLED"}
        self.change(obj)
        return {"FINISHED"}


class DEPTHCAST_OT_object_prompt_add(_ObjectPromptOperator, bpy.types.Operator):
    bl_idname = "depthcast.object_prompt_add"
    bl_label = "Add Prompt"
    bl_description = "Give the object its own prompt and weight (custom properties depthcast_prompt, depthcast_weight)"

    def change(self, obj):
        if capture.PROMPT_KEY not in obj:
            obj[capture.PROMPT_KEY] = obj.name.split(".")[0].replace("_", " ").lower()
        if capture.WEIGHT_KEY not in obj:
            obj[capture.WEIGHT_KEY] = 1.0
            try:
                ui = obj.id_properties_ui(capture.WEIGHT_KEY)
                ui.update(min=0.0, max=10.0, soft_min=0.0, soft_max=2.0, description="Layout weight for depthcast")
            except (AttributeError, TypeError):
                pass


class DEPTHCAST_OT_object_prompt_remove(_ObjectPromptOperator, bpy.types.Operator):
    bl_idname = "depthcast.object_prompt_remove"
    bl_label = "Remove Prompt"
    bl_description = "Remove the object's depthcast prompt and weight"

    def change(self, obj):
        for key in (capture.PROMPT_KEY, capture.WEIGHT_KEY):
            if key in obj:
                del obj[key]


class AnimationJob:
    """Renders the scene's frame range through the service: captures frame by frame (each a
    short render), keeps up to ``max_in_flight`` frames at the service, writes each result to
    the scene's output path as PNG (+ JSON sidecar). Frames whose PNG already exists are
    skipped, so a cancelled or crashed run resumes where it stopped. Driven by :meth:`step`
    (from a modal operator's timer, or a loop in background mode)."""

    def __init__(self, scene, frames=None, max_in_flight=2, overwrite=False):
        self.scene_name = scene.name
        if frames is None:
            frames = list(range(scene.frame_start, scene.frame_end + 1, max(1, scene.frame_step)))
        self.frames = list(frames)
        self.todo = [f for f in self.frames if overwrite or not os.path.exists(results.frame_output_path(scene, f))]
        self.skipped = len(self.frames) - len(self.todo)
        self.max_in_flight = max_in_flight
        self.in_flight = {}  # jobId -> frame
        self.written = []
        self.failed = []  # (frame, message)
        self.cancelled = False
        # Several frames are a sequence: each goes with its motion to the frame before (Cycles'
        # Vector pass) and comes back with the pair's warp score (docs/batch.md).
        self.sequence = len(self.frames) > 1
        self.consistency = scene.depthcast.animation_consistency
        self.previous = None  # (jobId, frame, pose) of the frame sent before
        self.warp = {}  # frame -> the result's consistency

    @property
    def scene(self):
        return bpy.data.scenes[self.scene_name]

    @property
    def done(self):
        return not self.todo and not self.in_flight

    @property
    def total(self):
        return len(self.frames)

    def progress(self):
        finished = self.skipped + len(self.written) + len(self.failed)
        return 100.0 * finished / max(1, self.total)

    def step(self):
        """Sends more frames if there is room. Returns False when everything is finished."""
        if self.cancelled:
            return not self.done
        scene = self.scene
        while self.todo and len(self.in_flight) < self.max_in_flight:
            frame = self.todo.pop(0)
            try:
                cap = capture_for(scene, frame=frame, with_vector=self.sequence)
                header, payloads = build_job(scene, cap, "animation", stream="blender-anim")
                if self.sequence:
                    header["params"]["consistency"] = self.consistency
                    motion.attach_motion(header, payloads, frame, cap.flow, cap.pose, cap.intrinsics, self.previous)
                    self.previous = (header["jobId"], frame, cap.pose)
            except (capture.CaptureError, messages.MessageError, ValueError) as err:
                self.failed.append((frame, str(err)))
                continue
            self.in_flight[header["jobId"]] = frame
            client.submit(scene, header, payloads, "animation", on_done=self._on_done,
                          meta={"camera": cap.camera, "frame": frame})
        rt = runtime.of(scene)
        rt.progress = self.progress()
        rt.status = "animation: %d/%d written%s%s" % (
            len(self.written) + self.skipped, self.total,
            ", %d failed" % len(self.failed) if self.failed else "",
            " (%d skipped: already there)" % self.skipped if self.skipped else "")
        return not self.done

    def _on_done(self, job, outcome, data, payload):
        frame = self.in_flight.pop(job.job_id, None)
        if frame is None:
            return
        if outcome != "result":
            if outcome != "cancelled" or not self.cancelled:
                self.failed.append((frame, "%s: %s" % (data.get("code", outcome), data.get("message", ""))))
            return
        if self.sequence:
            self.warp[frame] = data.get("consistency")
        scene = bpy.data.scenes.get(self.scene_name)
        path = results.frame_output_path(scene, frame)
        folder, name = os.path.split(path)
        sidecar = messages.sidecar_json(data, job.frame_header, scene=self.scene_name, camera=job.meta.get("camera"),
                                        frame=frame, blend=bpy.data.filepath or None)
        try:
            results.write_result(folder or ".", os.path.splitext(name)[0], payload, sidecar)
            self.written.append(path)
        except OSError as err:
            self.failed.append((frame, "could not write %s: %s" % (path, err)))

    def cancel(self):
        self.cancelled = True
        self.todo = []
        for job_id in list(self.in_flight):
            client.cancel(job_id=job_id)

    def summary(self):
        doc = {"frames": self.total, "written": len(self.written), "skipped": self.skipped,
               "failed": [{"frame": f, "error": e} for f, e in self.failed]}
        if self.sequence:
            doc["consistency"] = self.consistency
            doc["warp"] = motion.warp_summary(self.warp)
        return doc


class DEPTHCAST_OT_render_animation(_NeedsSceneCamera, bpy.types.Operator):
    bl_idname = "depthcast.render_animation"
    bl_label = "Render Animation"
    bl_description = ("Send every frame of the scene range and write the images to the scene's output path "
                      "(resumes: frames already written are skipped)")

    max_in_flight: IntProperty(name="Frames in flight", default=2, min=1, max=8)

    _job = None
    _timer = None

    @classmethod
    def poll(cls, context):
        return super().poll(context) and not runtime.of(context.scene).animation_running

    def execute(self, context):
        scene = context.scene
        try:
            client.ensure_started(context)
        except (RuntimeError, ValueError) as err:
            _report_error(self, scene, str(err))
            return {"CANCELLED"}
        self._job = AnimationJob(scene, max_in_flight=self.max_in_flight)
        if self._job.done:
            self.report({"INFO"}, "depthcast: all %d frames are already written" % self._job.total)
            return {"FINISHED"}
        runtime.of(scene).animation_running = True
        runtime.of(scene).error = ""
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.2, window=context.window)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        scene = bpy.data.scenes.get(self._job.scene_name)
        if scene is None:
            return self._finish(context, cancelled=True)
        if event.type == "ESC" or not runtime.of(scene).animation_running:
            self._job.cancel()
            return self._finish(context, cancelled=True)
        if event.type == "TIMER":
            if not self._job.step():
                return self._finish(context)
        return {"PASS_THROUGH"}

    def _finish(self, context, cancelled=False):
        context.window_manager.event_timer_remove(self._timer)
        job = self._job
        scene = bpy.data.scenes.get(job.scene_name)
        if scene is not None:
            rt = runtime.of(scene)
            rt.animation_running = False
            rt.status = "animation %s: %d written, %d skipped, %d failed" % (
                "cancelled" if cancelled else "done", len(job.written), job.skipped, len(job.failed))
            summary = job.summary()
            warp = summary.get("warp")
            if warp and warp["meanError"] is not None:
                rt.status += "; warp error mean %.4f, worst %.4f (frame %d)" % (
                    warp["meanError"], warp["worst"]["error"], warp["worst"]["frame"])
                report = client.write_animation_report(scene, job.frames[0], summary)
                if report:
                    rt.status += "; report %s" % os.path.basename(report)
            if job.failed:
                rt.error = "frame %d: %s" % job.failed[0]
        if job.failed:
            self.report({"WARNING"}, "depthcast: %d frames failed (first: frame %d: %s)" % (
                len(job.failed), job.failed[0][0], job.failed[0][1]))
        return {"CANCELLED"} if cancelled else {"FINISHED"}


class DEPTHCAST_OT_dismiss_error(bpy.types.Operator):
    bl_idname = "depthcast.dismiss_error"
    bl_label = "Dismiss"
    bl_description = "Clear the error message"

    def execute(self, context):
        runtime.of(context.scene).error = ""
        client.set_status_bar(None)
        return {"FINISHED"}


class DEPTHCAST_OT_copy_params(_NeedsLastResult, bpy.types.Operator):
    bl_idname = "depthcast.copy_params"
    bl_label = "Copy Parameters"
    bl_description = "Copy the last result's generation parameters (JSON) to the clipboard"

    def execute(self, context):
        info = client.last_result()
        context.window_manager.clipboard = json.dumps(messages.sidecar(info["header"], info["frame_header"]), indent=2)
        return {"FINISHED"}


classes = (
    DEPTHCAST_OT_connect,
    DEPTHCAST_OT_disconnect,
    DEPTHCAST_OT_generate,
    DEPTHCAST_OT_cancel,
    DEPTHCAST_OT_randomize_seed,
    DEPTHCAST_OT_use_last_seed,
    DEPTHCAST_OT_live,
    DEPTHCAST_OT_save_result,
    DEPTHCAST_OT_show_result,
    DEPTHCAST_OT_object_prompt_add,
    DEPTHCAST_OT_object_prompt_remove,
    DEPTHCAST_OT_render_animation,
    DEPTHCAST_OT_dismiss_error,
    DEPTHCAST_OT_copy_params,
)
