"""End-to-end test of the add-on inside real Blender, headless, against a depthcast service.

    blender -b --factory-startup --python-exit-code 1 --python blender-addon/tests/e2e_blender.py -- \
        --server ws://127.0.0.1:PORT/v1/ws --out DIR [--token T] [--model NAME] [--addon-zip dist/depthcast-addon.zip]
        [--fake]   (start the Python fake service of tests/fakeservice.py instead of --server)

Steps: register the add-on (installing the zip when given), build a scene (ground plane, a cube
at known distances, two cameras), capture depth and check distances, flip and layout; generate
through the operator and check the result lands in the "depthcast Result" datablock; save it
next to the .blend; render a 2-frame animation and resume it; live mode from the camera; the GPU
depth pass (through a RenderEngine with a GPU context) against the rendered Z pass; run the
batch script on both cameras in a second Blender; unregister cleanly. Writes DIR/e2e-report.json
and exits non-zero on any failure. Timers do not run in background mode, so the test drives
``client.process_events()`` itself (what the add-on's timer does in the UI).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
import traceback

import addon_utils
import bpy

HERE = os.path.dirname(os.path.abspath(__file__))
ADDON_DIR = os.path.dirname(HERE)
REPORT = {"checks": [], "timings": {}, "skipped": [], "blender": bpy.app.version_string}


def argv_after_dashes():
    return sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []


def parse_args():
    p = argparse.ArgumentParser(prog="e2e_blender.py")
    p.add_argument("--server", default="")
    p.add_argument("--token", default="")
    p.add_argument("--model", default="")
    p.add_argument("--out", required=True)
    p.add_argument("--addon-zip", default="")
    p.add_argument("--fake", action="store_true")
    p.add_argument("--size", type=int, default=64, help="render width and height")
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--timeout", type=float, default=300.0)
    p.add_argument("--service-command", default="", help="how to run the CLI, to test 'start a local service'")
    p.add_argument("--service-models-dir", default="")
    return p.parse_args(argv_after_dashes())


def check(name, ok, detail=""):
    REPORT["checks"].append({"name": name, "ok": bool(ok), "detail": str(detail)})
    print("[%s] %s%s" % ("ok" if ok else "FAIL", name, (": " + str(detail)) if detail else ""), flush=True)
    return ok


def close(a, b, tol):
    return abs(a - b) <= tol


# ------------------------------------------------------------------ setup
def register_addon(zip_path):
    if zip_path:
        bpy.ops.preferences.addon_install(filepath=os.path.abspath(zip_path), overwrite=True)
        addon_utils.modules_refresh()
    else:
        if ADDON_DIR not in sys.path:
            sys.path.insert(0, ADDON_DIR)
    mod = addon_utils.enable("depthcast", default_set=True, handle_error=None)
    check("add-on enabled", mod is not None and hasattr(bpy.types.Scene, "depthcast"),
          getattr(mod, "__file__", None))
    check("panel and operators registered", hasattr(bpy.types, "DEPTHCAST_PT_main") and
          hasattr(bpy.ops.depthcast, "generate"))
    if zip_path:
        check("add-on loaded from the installed zip", mod is not None and ADDON_DIR not in (mod.__file__ or ""),
              mod.__file__ if mod else None)
    return mod


def build_scene(size):
    for obj in list(bpy.data.objects):
        bpy.data.objects.remove(obj)
    scene = bpy.context.scene
    scene.render.resolution_x = size
    scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.frame_start, scene.frame_end, scene.frame_current = 1, 2, 1
    bpy.ops.mesh.primitive_plane_add(size=40, location=(0, 0, 0))
    bpy.context.object.name = "Ground"
    # Cube top face at z=2 (8 units below the top camera), moved to +Y so it shows in the
    # upper half of the top camera's image: checks that rows are sent top-down.
    bpy.ops.mesh.primitive_cube_add(size=2, location=(0, 2, 1))
    cube = bpy.context.object
    cube.name = "Box"
    cube["depthcast_prompt"] = "a red wooden crate"
    cube["depthcast_weight"] = 1.5
    bpy.ops.object.camera_add(location=(0, 0, 10), rotation=(0, 0, 0))
    top = bpy.context.object
    top.name = "CamTop"
    top.data.clip_start, top.data.clip_end = 0.5, 50.0
    # Side camera at y=-10 looking along +Y at the cube's front face (y=1): distance 11.
    bpy.ops.object.camera_add(location=(0, -10, 1), rotation=(math.pi / 2, 0, 0))
    side = bpy.context.object
    side.name = "CamSide"
    side.data.clip_start, side.data.clip_end = 0.5, 100.0
    scene.camera = top
    return scene, cube, top, side


# ------------------------------------------------------------------ steps
class _MockLayout:
    """Stands in for UILayout (no window under -b): every prop() must name a real property and
    every operator() a registered operator, so a typo in ui.py fails here."""

    problems = []
    calls = 0

    def __getattr__(self, name):
        def any_call(*args, **kwargs):
            _MockLayout.calls += 1
            return _MockLayout()
        return any_call

    def __setattr__(self, name, value):
        pass

    def prop(self, data, name, **kwargs):
        _MockLayout.calls += 1
        if name.startswith('["'):
            if name[2:-2] not in data:
                _MockLayout.problems.append("custom property %s missing on %r" % (name, data))
        elif not hasattr(data, name) or name not in data.bl_rna.properties:
            _MockLayout.problems.append("no property %r on %s" % (name, type(data).__name__))
        return _MockLayout()

    def operator(self, idname, **kwargs):
        _MockLayout.calls += 1
        mod, _, op = idname.partition(".")
        try:
            getattr(getattr(bpy.ops, mod), op).get_rna_type()
        except (KeyError, AttributeError):
            _MockLayout.problems.append("no operator %s" % idname)
        return _MockLayout()

    def template_list(self, listtype, list_id, data, propname, active_data, active_propname, **kwargs):
        _MockLayout.calls += 1
        if not hasattr(bpy.types, listtype):
            _MockLayout.problems.append("no UIList %s" % listtype)
        for obj, prop in ((data, propname), (active_data, active_propname)):
            if not hasattr(obj, prop):
                _MockLayout.problems.append("no property %r for template_list" % prop)


def step_draw_panels(scene):
    """Runs every panel's and the preferences' draw() against a checking mock layout, with and
    without a result, errors and per-object prompts."""
    from depthcast import preference_values, preferences, ui

    class Ctx:
        pass

    ctx = Ctx()
    ctx.scene = scene
    ctx.active_object = scene.objects.get("Box")
    ctx.preferences = bpy.context.preferences
    ctx.window_manager = bpy.context.window_manager
    from depthcast.core import runtime

    s = scene.depthcast
    for variant in range(3):
        runtime.of(scene).error = "a long error message " * 5 if variant == 1 else ""
        s.near_far = ("CAMERA", "MANUAL", "SCENE")[variant]
        s.use_steps = s.use_guidance = variant == 2
        for cls in ui.classes:
            if not issubclass(cls, bpy.types.Panel):
                continue
            try:
                cls.draw(_PanelProxy(_MockLayout()), ctx)
                if hasattr(cls, "draw_header"):
                    cls.draw_header(_PanelProxy(_MockLayout()), ctx)
            except Exception:
                _MockLayout.problems.append("%s.draw: %s" % (cls.__name__, traceback.format_exc(limit=3)))
        # the object list rows, with and without a prompt
        ul = _PanelProxy(None)
        for obj in scene.objects:
            try:
                ui.DEPTHCAST_UL_objects.draw_item(ul, ctx, _MockLayout(), scene, obj, 0, s, "active_object_index")
            except Exception:
                _MockLayout.problems.append("UL draw_item: %s" % traceback.format_exc(limit=3))
    runtime.of(scene).error = ""
    s.near_far = "CAMERA"
    s.use_steps = s.use_guidance = False
    try:
        preferences.DepthcastPreferences.draw(_PanelProxy(_MockLayout(), preference_values.get_prefs()), ctx)
    except Exception:
        _MockLayout.problems.append("preferences draw: %s" % traceback.format_exc(limit=3))
    check("panels, object list and preferences draw (checked mock layout)", not _MockLayout.problems and
          _MockLayout.calls > 50, _MockLayout.problems or _MockLayout.calls)


class _PanelProxy:
    def __init__(self, layout, target=None):
        self.layout = layout
        self._target = target

    def __getattr__(self, name):
        return getattr(self._target, name)


def step_capture(scene, size):
    from depthcast import capture

    t0 = time.perf_counter()
    cap = capture.capture_camera(scene, with_layout=True)
    REPORT["timings"]["capture_%dx%d_s" % (size, size)] = round(time.perf_counter() - t0, 4)
    d = cap.depth
    check("capture engine", cap.engine in ("CYCLES", "BLENDER_WORKBENCH"), cap.engine)
    check("depth size", (d.width, d.height) == (size, size), (d.width, d.height))
    check("near/far from camera clip", (round(d.near, 4), round(d.far, 4)) == (0.5, 50.0), (d.near, d.far))
    # Cube centre (0,2) projects to the upper half: image y = size/2 - 2/(0.36*8) * size/2
    cy = int(size / 2 - (2.0 / (0.36 * 8.0)) * size / 2)
    cube_z = d.at(size // 2, cy)
    ground_bottom = d.at(size // 2, size - 3)
    corner = d.at(0, 0)
    check("cube top at 8 units (top half: rows are top-down)", close(cube_z, 8.0, 0.01), cube_z)
    check("ground at 10 units below", close(ground_bottom, 10.0, 0.01), ground_bottom)
    check("planar Z, not ray distance (corner)", close(corner, 10.0, 0.01), corner)
    objs = {o["label"]: o for o in cap.objects}
    check("layout holds Box and Ground", set(objs) == {"Box", "Ground"}, sorted(objs))
    if "Box" in objs:
        box = objs["Box"]
        check("Box prompt and weight from custom properties",
              box.get("prompt") == "a red wooden crate" and box["weight"] == 1.5, box)
        x0, y0, x1, y1 = box["bbox"]
        check("Box bbox in the upper half, centred", y1 <= size // 2 + 1 and abs((x0 + x1) / 2 - size / 2) <= 1,
              box["bbox"])
        import array
        index = array.array("H")
        index.frombytes(cap.layout[0])
        check("index map marks the cube pixel", index[cy * size + size // 2] == box["id"],
              index[cy * size + size // 2])
    # Animation: a capture at another frame shows that frame's pose (the capture's scene copy
    # shares the objects, whose animation follows the original scene's frame).
    box_obj = scene.objects["Box"]
    home = tuple(box_obj.location)
    box_obj.keyframe_insert("location", frame=1)
    box_obj.location = (home[0] + 6.0, home[1], home[2])
    box_obj.keyframe_insert("location", frame=2)
    scene.frame_set(1)
    try:
        at1 = capture.capture_camera(scene, frame=1, with_layout=False).depth.at(size // 2, cy)
        at2 = capture.capture_camera(scene, frame=2, with_layout=False).depth.at(size // 2, cy)
        check("capture follows the frame's animation", close(at1, 8.0, 0.01) and close(at2, 10.0, 0.01), (at1, at2))
        check("capture restores the scene's frame", scene.frame_current == 1, scene.frame_current)
    finally:
        box_obj.animation_data_clear()
        box_obj.location = home
    check("pass_index restored", all(o.pass_index == 0 for o in scene.objects))
    check("no leftover capture scene", [s.name for s in bpy.data.scenes] == [scene.name],
          [s.name for s in bpy.data.scenes])
    t0 = time.perf_counter()
    cap512 = None
    old = scene.render.resolution_x, scene.render.resolution_y
    scene.render.resolution_x = scene.render.resolution_y = 512
    try:
        cap512 = capture.capture_camera(scene, with_layout=True)
        REPORT["timings"]["capture_512x512_s"] = round(time.perf_counter() - t0, 4)
        REPORT["timings"]["capture_512x512_stages_s"] = {k: round(v, 4) for k, v in cap512.timings.items()}
        check("the capture's EXR passes are read by the plain-Python reader (any thread)",
              cap512.pass_reader == "core.exr", cap512.pass_reader)
        t0 = time.perf_counter()
        capture.capture_camera(scene, with_layout=False)
        REPORT["timings"]["capture_512x512_depth_only_s"] = round(time.perf_counter() - t0, 4)
    finally:
        scene.render.resolution_x, scene.render.resolution_y = old
    return cap


def pump(client, until, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        client.process_events()
        if until():
            client.process_events()
            return True
        time.sleep(0.02)
    return False


def step_connect(client, args):
    from depthcast import preference_values

    prefs = preference_values.get_prefs()
    prefs.server_url = args.server
    prefs.token = args.token
    sess = client.start()
    ok = pump(client, lambda: client.connection_status()[0] == "connected", 30)
    check("connected to the service", ok, client.connection_status())
    check("hello lists models", bool(client.known_models()), [m.get("name") for m in client.known_models()])


def step_operators(client, scene):
    """The operators the other steps do not run: object prompts (add, then remove) and polls."""
    ground = scene.objects["Ground"]
    bpy.ops.depthcast.object_prompt_add(object_name=ground.name)
    check("object prompt added", ground.get("depthcast_prompt") == "ground" and ground.get("depthcast_weight") == 1.0,
          dict(ground.items()))
    bpy.ops.depthcast.object_prompt_remove(object_name=ground.name)
    check("object prompt removed", "depthcast_prompt" not in ground and "depthcast_weight" not in ground,
          dict(ground.items()))
    has_result = client.last_result() is not None
    polls = {name: getattr(bpy.ops.depthcast, name).poll() for name in
             ("generate", "render_animation", "save_result", "copy_params")}
    check("operator polls", polls == {"generate": True, "render_animation": True, "save_result": has_result,
                                      "copy_params": has_result}, polls)


def step_generate(client, scene, args):
    from depthcast import results
    from depthcast.core import runtime

    s = scene.depthcast
    rt = runtime.of(scene)
    s.prompt = "a wooden crate on a stone floor"
    s.use_steps, s.steps = True, args.steps
    s.seed_randomize = False
    s.seed = "42"
    s.show_in_viewport = True
    if args.model:
        s.model = args.model
    previews = []
    original = client._on_preview

    def counting(ev, job):
        previews.append((ev.data.get("format") or "jpeg", len(ev.payload), ev.data.get("width"), ev.data.get("height")))
        return original(ev, job)

    client._on_preview = counting
    try:
        t0 = time.perf_counter()
        res = bpy.ops.depthcast.generate()
        check("generate operator ran", res == {"FINISHED"}, (res, rt.error))
        job_id = rt.job_id
        ok = pump(client, lambda: not rt.job_id, args.timeout)
        REPORT["timings"]["generate_%dx%d_steps%d_s" % (args.size, args.size, args.steps)] = round(
            time.perf_counter() - t0, 3)
    finally:
        client._on_preview = original
    check("generation finished", ok and not rt.error, "job %s status %r error %r" % (job_id, rt.status, rt.error))
    img = bpy.data.images.get(results.RESULT_IMAGE)
    check("result image datablock exists", img is not None)
    if img is not None:
        w = args.size // 8 * 8
        check("result size", tuple(img.size) == (w, w), tuple(img.size))
        import array
        px = array.array("f", bytes(4 * img.size[0] * img.size[1] * 4))
        img.pixels.foreach_get(px)
        check("result has content", max(px[0::4]) - min(px[0::4]) > 0.0 or max(px[1::4]) > 0.0,
              (min(px[0::4]), max(px[0::4])))
        cam = scene.camera.data
        check("result shown as camera background",
              cam.show_background_images and any(b.image == img for b in cam.background_images))
    check("seed reported back", rt.last_seed == 42, rt.last_seed)
    check("step previews arrived", len(previews) >= 1, len(previews))
    # The add-on asks for raw previews: no temp file or image decoder per step.
    check("previews came as raw rgb8 of their stated size",
          previews and all(p[0] == "rgb8" and p[1] == p[2] * p[3] * 3 for p in previews), previews[:3])
    check("progress reached 100%", rt.progress >= 99.9, rt.progress)
    REPORT["previews"] = len(previews)
    return client.last_result()


def step_save(client, out):
    blend = os.path.join(out, "scene.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    path = client.save_last_result()
    side = os.path.splitext(path)[0] + ".json"
    ok = os.path.isfile(path) and os.path.isfile(side)
    check("result saved next to the .blend", ok and os.path.dirname(path) == os.path.join(out, "depthcast"), path)
    if ok:
        doc = json.load(open(side))
        check("sidecar has seed and params", doc.get("seed") == 42 and doc["request"]["params"]["prompt"], doc.get("seed"))
        check("saved PNG is the service's PNG", open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n")
    return blend


def step_animation(client, scene, out, args):
    from depthcast.operators import AnimationJob

    scene.render.filepath = os.path.join(out, "anim", "frame_####")
    job = AnimationJob(scene)
    t0 = time.perf_counter()
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and job.step():
        client.process_events()
        time.sleep(0.02)
    REPORT["timings"]["animation_2_frames_s"] = round(time.perf_counter() - t0, 3)
    files = sorted(os.listdir(os.path.join(out, "anim"))) if os.path.isdir(os.path.join(out, "anim")) else []
    check("animation wrote both frames", files == ["frame_0001.json", "frame_0001.png", "frame_0002.json",
                                                   "frame_0002.png"], (files, job.summary()))
    # Frame 2 went with the Vector pass as its motion to frame 1: its result carries the pair's score.
    warp = job.summary().get("warp") or {}
    pairs = warp.get("pairs") or []
    check("animation scores the frame pair (Vector pass sent)", [p["frame"] for p in pairs] == [2]
          and 0 < pairs[0]["validFraction"] <= 1 and warp.get("meanError") == pairs[0]["error"], warp)
    side = json.load(open(os.path.join(out, "anim", "frame_0002.json")))
    check("frame sidecar has the pair's score", (side.get("consistency") or {}).get("score") == {
        k: pairs[0][k] for k in ("error", "validFraction", "disoccludedDifference")} if pairs else False, side.get("consistency"))
    # The report Render Animation writes when it ends: the summary, then the plot the service draws.
    report = client.write_animation_report(scene, job.frames[0], job.summary())
    doc = {}
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        doc = json.load(open(report))
        if "plot" in doc or "plotError" in doc:
            break
        time.sleep(0.05)
    png = os.path.join(out, "anim", doc.get("plot") or "-")
    check("animation report has every pair and the plot PNG", doc.get("warp", {}).get("pairs") == pairs and bool(pairs)
          and doc.get("plot") == "depthcast-animation-warp.png" and open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n", doc)
    again = AnimationJob(scene)
    check("animation resumes (existing frames skipped)", again.done and again.skipped == 2, again.summary())


def step_live(client, scene, cube, args):
    from depthcast import results, viewport
    from depthcast.core import messages

    s = scene.depthcast
    # Live frames ask for raw rgb8 results where numpy makes them cheap to show; Debian's blender
    # has no numpy, so they are asked for here to run that path in real Blender.
    original_build = messages.build_params

    def raw_results(*a, **kw):
        if kw.get("result_format") is None:
            kw["result_format"] = "rgb8"
        return original_build(*a, **kw)

    messages.build_params = raw_results
    try:
        _live_steps(client, scene, cube, args, viewport, results)
    finally:
        messages.build_params = original_build


def _live_steps(client, scene, cube, args, viewport, results):
    from depthcast.core import runtime

    s = scene.depthcast
    rt = runtime.of(scene)
    s.live_source = "CAMERA"
    s.live_debounce = 0.05
    ctx = bpy.context
    viewport.start(ctx)
    st = viewport.state()
    sent = []

    def tick_until(cond, timeout):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            viewport._live_tick()
            client.process_events()
            if cond():
                return True
            time.sleep(0.03)
        return False

    ok = tick_until(lambda: st.frames_sent >= 1, 10)
    check("live: first frame sent on start", ok, st.frames_sent)
    ok = tick_until(lambda: not rt.job_id, args.timeout)
    check("live: result arrived", ok and not rt.error, (rt.status, rt.error))
    info = client.last_result()
    header = info["header"] if info else {}
    w, h = int(header.get("width", 0)), int(header.get("height", 0))
    check("live: the result came raw (rgb8), as asked", header.get("format") == "rgb8" and info["rgb8"] is not None and
          len(info["rgb8"]) == 3 * w * h > 0, (header.get("format"), w, h))
    img = bpy.data.images.get(results.RESULT_IMAGE)
    check("live: the raw result is shown at its size", img is not None and tuple(img.size) == (w, h),
          tuple(img.size) if img else None)
    path = client.save_last_result()
    check("live: a raw result saves as a PNG", open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n", path)
    saved = bpy.data.images.load(path)
    try:
        shown = list(img.pixels)
        loaded = list(saved.pixels)
        same = tuple(saved.size) == (w, h) and len(shown) == len(loaded) and max(abs(a - b) for a, b in zip(shown, loaded)) < 1e-6
        check("live: the saved PNG holds the pixels shown", same, tuple(saved.size))
    finally:
        bpy.data.images.remove(saved)
    # Our own capture and result writes must not retrigger live mode.
    bpy.context.view_layer.update()
    tick_until(lambda: False, 0.3)
    check("live: no frame without a change", st.frames_sent == 1, st.frames_sent)
    cube.location.x += 0.5
    bpy.context.view_layer.update()
    ok = tick_until(lambda: st.frames_sent >= 2, 10)
    check("live: moving an object re-sends", ok, st.frames_sent)
    tick_until(lambda: not rt.job_id, args.timeout)
    cube.hide_render = True
    bpy.context.view_layer.update()
    ok = tick_until(lambda: st.frames_sent >= 3, 10)
    check("live: hiding an object re-sends", ok, st.frames_sent)
    tick_until(lambda: not rt.job_id, args.timeout)
    cube.hide_render = False
    cube.location.x -= 0.5
    bpy.context.view_layer.update()
    viewport.stop()
    check("live: stopped", not viewport.is_running() and not rt.live_running)
    client.process_events()


class _GpuProbeEngine(bpy.types.RenderEngine):
    """Gives the GPU depth pass a GPU context in background mode (bl_use_gpu_context)."""

    bl_idname = "DEPTHCAST_TEST_GPU"
    bl_label = "depthcast GPU test"
    bl_use_gpu_context = True
    result = {}

    def render(self, depsgraph):
        from depthcast import gpu_depth

        try:
            scene = depsgraph.scene
            cam = scene.camera
            w, h = scene.render.resolution_x, scene.render.resolution_y
            proj = cam.calc_matrix_camera(depsgraph, x=w, y=h)
            ids = gpu_depth.layout_ids(scene.original if hasattr(scene, "original") else scene,
                                      depsgraph.view_layer)
            t0 = time.perf_counter()
            gp = gpu_depth.gpu_depth_pass(depsgraph, cam.matrix_world.inverted(), proj, w, h, ids=ids)
            _GpuProbeEngine.result["gpu_s"] = time.perf_counter() - t0
            _GpuProbeEngine.result["pass"] = gp
        except Exception:
            _GpuProbeEngine.result["error"] = traceback.format_exc()


def step_gpu_pass(scene, size):
    from depthcast import capture, gpu_depth

    bpy.utils.register_class(_GpuProbeEngine)
    tmp = scene.copy()
    try:
        tmp.render.engine = "DEPTHCAST_TEST_GPU"
        _GpuProbeEngine.result.clear()
        try:
            bpy.ops.render.render(scene=tmp.name)
        except RuntimeError as err:
            _GpuProbeEngine.result["error"] = str(err)
        res = _GpuProbeEngine.result
        if "pass" not in res:
            REPORT["skipped"].append("GPU depth pass: no GPU context in this environment: %s" % res.get("error", "?")[-300:])
            print("skip GPU depth pass:", res.get("error"))
            return
        t0 = time.perf_counter()
        image, layout, objects = gpu_depth.convert_gpu_pass(res["pass"], "CAMERA")
        REPORT["timings"]["gpu_pass_%dx%d_s" % (size, size)] = round(res["gpu_s"], 4)
        REPORT["timings"]["gpu_pass_convert_%dx%d_s" % (size, size)] = round(time.perf_counter() - t0, 4)
        ref = capture.capture_camera(scene, with_layout=True)
        diffs = [abs(a - b) for a, b in zip(image.values, ref.depth.values) if a < ref.depth.far and b < ref.depth.far]
        # Depth edges differ by a pixel between rasterizer and path tracer; compare the bulk.
        diffs.sort()
        median = diffs[len(diffs) // 2] if diffs else float("inf")
        p90 = diffs[int(len(diffs) * 0.9)] if diffs else float("inf")
        check("GPU depth pass matches the rendered Z pass", median < 0.01 and p90 < 0.05,
              "median %.4f p90 %.4f over %d px" % (median, p90, len(diffs)))
        check("GPU pass near/far from the projection", close(image.near, 0.5, 1e-3) and close(image.far, 50.0, 0.05),
              (image.near, image.far))
        labels = sorted(o["label"] for o in objects)
        check("GPU pass layout ids", labels == ["Box", "Ground"], labels)
        if objects and ref.objects:
            a = {o["label"]: o["bbox"] for o in objects}
            b = {o["label"]: o["bbox"] for o in ref.objects}
            check("GPU pass bbox matches the render's", all(max(abs(x - y) for x, y in zip(a[k], b[k])) <= 1 for k in b),
                  (a, b))
    finally:
        bpy.data.scenes.remove(tmp)
        bpy.utils.unregister_class(_GpuProbeEngine)


def step_batch(blend, out, args):
    batch_out = os.path.join(out, "batch")
    cmd = [bpy.app.binary_path, "-b", blend, "--factory-startup", "--python",
           os.path.join(ADDON_DIR, "scripts", "depthcast_batch.py"), "--",
           "--server", args.server, "--cameras", "all", "--frames", "1-1", "--prompt", "a crate, batch",
           "--steps", str(args.steps), "--seed", "7", "--out", batch_out]
    if args.token:
        cmd += ["--token", args.token]
    if args.model:
        cmd += ["--model", args.model]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=args.timeout * 2)
    REPORT["timings"]["batch_2_cameras_s"] = round(time.perf_counter() - t0, 3)
    tail = proc.stdout.decode("utf-8", "replace")[-3000:]
    check("batch script exit code 0", proc.returncode == 0, "rc %d\n%s" % (proc.returncode, tail))
    files = sorted(os.listdir(batch_out)) if os.path.isdir(batch_out) else []
    expected = ["CamSide_0001.json", "CamSide_0001.png", "CamTop_0001.json", "CamTop_0001.png", "batch.json"]
    check("batch wrote both cameras + sidecars", files == expected, files)
    if "CamSide_0001.json" in files:
        doc = json.load(open(os.path.join(batch_out, "CamSide_0001.json")))
        check("batch sidecar: camera, frame, seed", doc.get("camera") == "CamSide" and doc.get("frame") == 1 and
              doc.get("seed") == 7, {k: doc.get(k) for k in ("camera", "frame", "seed")})
        near = doc["request"]["depth"]["near"]
        check("batch sidecar: side camera clip range", close(near, 0.5, 1e-4), doc["request"]["depth"])
    # A bad server must give a non-zero exit code.
    bad = cmd[:]
    bad[bad.index("--server") + 1] = "ws://127.0.0.1:9/v1/ws"
    bad[bad.index("--out") + 1] = os.path.join(out, "batch-bad")
    proc = subprocess.run(bad + ["--timeout", "5"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
    check("batch script fails non-zero when the service is unreachable", proc.returncode != 0, proc.returncode)


def step_local_service(client, args):
    """Preferences > "start a local service": spawns `depthcast serve` on a free port, connects,
    and stops it again."""
    from depthcast import preference_values

    prefs = preference_values.get_prefs()
    prefs.service_command = args.service_command
    prefs.service_models_dir = args.service_models_dir
    prefs.service_model = args.model
    prefs.start_local_service = True  # its update callback restarts the connection
    client.ensure_started()
    svc = client.local_service()
    check("local service spawned", svc is not None and svc.running, svc and svc.argv)
    t0 = time.perf_counter()
    ok = pump(client, lambda: client.connection_status()[0] == "connected", 90)
    REPORT["timings"]["local_service_ready_s"] = round(time.perf_counter() - t0, 3)
    check("connected to the local service", ok and svc.url in client.connection_status()[1],
          (client.connection_status(), svc.log_tail(800) if svc else ""))
    proc = svc.proc
    prefs.start_local_service = False
    client.stop(stop_service=True)
    check("local service stopped", proc.poll() is not None, proc.poll())


def step_unregister(client):
    addon_utils.disable("depthcast", default_set=True)
    check("unregistered: scene property gone", not hasattr(bpy.types.Scene, "depthcast"))
    check("unregistered: classes gone", not hasattr(bpy.types, "DEPTHCAST_PT_main"))
    check("unregistered: timer gone", not bpy.app.timers.is_registered(client._tick))
    time.sleep(0.3)
    threads = [t.name for t in threading.enumerate() if t.name.startswith("depthcast")]
    check("unregistered: no network threads left", not threads, threads)


def main():
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    fake = None
    if args.fake:
        sys.path.insert(0, HERE)
        from fakeservice import FakeService

        fake = FakeService(steps=args.steps).__enter__()
        args.server = fake.url
    if not args.server:
        raise SystemExit("--server or --fake is required")
    REPORT["server"] = args.server
    try:
        register_addon(args.addon_zip)
        from depthcast import client

        scene, cube, top, side = build_scene(args.size)
        step_capture(scene, args.size)
        step_connect(client, args)
        step_draw_panels(scene)
        step_operators(client, scene)
        step_generate(client, scene, args)
        blend = step_save(client, args.out)
        step_animation(client, scene, args.out, args)
        step_live(client, scene, cube, args)
        step_gpu_pass(scene, args.size)
        bpy.ops.wm.save_mainfile()
        step_batch(blend, args.out, args)
        if args.service_command:
            step_local_service(client, args)
        else:
            REPORT["skipped"].append("local service: no --service-command")
        step_unregister(client)
    except Exception:
        check("no exception", False, traceback.format_exc())
    finally:
        if fake is not None:
            fake.__exit__(None, None, None)
        failed = [c for c in REPORT["checks"] if not c["ok"]]
        REPORT["passed"] = len(REPORT["checks"]) - len(failed)
        REPORT["failed"] = len(failed)
        with open(os.path.join(args.out, "e2e-report.json"), "w") as f:
            json.dump(REPORT, f, indent=2)
        print("e2e: %d checks, %d failed; timings %s" % (len(REPORT["checks"]), len(failed), REPORT["timings"]),
              flush=True)
    if failed:
        sys.exit(1)


main()
