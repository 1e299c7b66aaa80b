"""Live mode as a user sees it: Blender in a real window (run under Xvfb, software GL).

    blender --factory-startup --python blender-addon/tests/e2e_live_window.py -- \
        --addon-zip depthcast-addon.zip --service-command "node bin/depthcast.js" \
        --models-dir DIR --model tiny --out DIR

Installs the add-on from the zip, runs the service itself (so it can kill and restart it),
then, driven by timers on Blender's main loop:
1. orbits the 3D View with live mode off (a plain redraw: the baseline gaps of the main loop);
2. starts Live and orbits the same way: frames must be sent during the orbit, and the main
   loop's gaps are compared with the baseline's;
3. stops moving, waits for the result of the final view, takes a screenshot of the window and
   compares the 3D View's pixels with the result image (the overlay must show it exactly there);
4. kills the service, restarts it on the same port, and waits for a result with no user action.
Writes ``OUT/live-window-report.json`` (checks, figures) and screenshots, then quits.
"""
import argparse
import array
import json
import math
import os
import shlex
import subprocess
import sys
import time
import traceback

import addon_utils
import bpy

REPORT = {"checks": [], "figures": {}, "passed": 0, "failed": 0}
_SERVICE = []  # the running service, killed whatever happens


def parse_args():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    p = argparse.ArgumentParser(prog="e2e_live_window.py")
    p.add_argument("--addon-zip", required=True)
    p.add_argument("--service-command", required=True)
    p.add_argument("--models-dir", required=True)
    p.add_argument("--model", default="tiny")
    p.add_argument("--out", required=True)
    p.add_argument("--timeout", type=float, default=120.0)
    return p.parse_args(argv)


ARGS = parse_args()
os.makedirs(ARGS.out, exist_ok=True)
# Read before Blender opens its splash screen, which would cover the 3D View.
bpy.context.preferences.view.show_splash = False


def check(name, ok, detail=""):
    REPORT["checks"].append({"name": name, "ok": bool(ok), "detail": str(detail)})
    REPORT["passed" if ok else "failed"] += 1
    print("[%s] %s%s" % ("ok" if ok else "FAIL", name, (": " + str(detail)) if detail != "" else ""), flush=True)
    return ok


def write_report():
    with open(os.path.join(ARGS.out, "live-window-report.json"), "w") as f:
        json.dump(REPORT, f, indent=1)


# ------------------------------------------------------------------ the service
class Service:
    def __init__(self):
        from depthcast.core import service

        self.port = service.free_port()
        self.proc = None
        self.log = open(os.path.join(ARGS.out, "service.log"), "ab")

    def start(self):
        argv = shlex.split(ARGS.service_command) + ["serve", "--port", str(self.port), "--models-dir", ARGS.models_dir,
                                                    "--model", ARGS.model, "--device", "cpu"]
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


# ------------------------------------------------------------------ view helpers
def view3d():
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                region = next(r for r in area.regions if r.type == "WINDOW")
                return window, area, region, area.spaces.active
    raise RuntimeError("no 3D View in the window")


def orbit_step(space, angle):
    from mathutils import Quaternion

    rv3d = space.region_3d
    rv3d.view_rotation = Quaternion((0.0, 0.0, 1.0), angle) @ rv3d.view_rotation


def screenshot(path):
    window, area, region, _space = view3d()
    with bpy.context.temp_override(window=window, area=area, region=region):
        bpy.ops.screen.screenshot(filepath=path, check_existing=False)
    return path


def read_image(path):
    img = bpy.data.images.load(path, check_existing=False)
    try:
        w, h = img.size
        px = array.array("f", bytes(4 * w * h * 4))
        img.pixels.foreach_get(px)
        return w, h, px
    finally:
        bpy.data.images.remove(img)


# ------------------------------------------------------------------ steps (generator on a timer)
def gap_stats(stamps):
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    if not gaps:
        return {"n": 0, "mean_ms": 0.0, "max_ms": 0.0}
    return {"n": len(gaps), "mean_ms": round(1000 * sum(gaps) / len(gaps), 2), "max_ms": round(1000 * max(gaps), 2)}


def settle(rt, viewport, overlay, shows=lambda w, h, view: True):
    """Yields (a timer generator's step) until live has been idle for 1 s, no job, nothing dirty or
    being captured, with the overlay showing what ``shows(width, height, view)`` accepts."""
    deadline = time.monotonic() + ARGS.timeout
    settled = time.monotonic()
    while time.monotonic() < deadline:
        w, h, view, _preview, _draws = overlay.shown()
        if rt.job_id or viewport.state().pacer.dirty or viewport.state().busy or not shows(w, h, view):
            settled = time.monotonic()
        elif time.monotonic() - settled > 1.0:
            return
        yield 0.1


def result_pixels(w, h):
    """The "depthcast Result" image's pixels, bottom-up RGBA floats."""
    px = array.array("f", bytes(4 * w * h * 4))
    bpy.data.images.get("depthcast Result").pixels.foreach_get(px)
    return px


def overlay_check(name, key, shot, rx, ry, rw, rh, res_px, w_r, h_r, alignment_only=False):
    """Checks that the window screenshot ``shot`` shows the result image (``res_px``, w_r x h_r,
    bottom-up RGBA floats) over the window rectangle (rx, ry, rw, rh), fractional where the
    rectangle is (a camera frame). ``alignment_only``: where software GL's filtering departs from
    the float reference (below), that the match is best unshifted, by a wide margin."""
    sw, sh, spx = read_image(shot)
    # The screenshot is the whole window, bottom-up; the region sits at (rx, ry).
    # Each screenshot pixel inside the region must show the result image sampled bilinearly at
    # that pixel's centre (the overlay's texture filter). One screenshot pixel per result texel.
    def expected(u, v, c):
        fx = min(max(u * w_r - 0.5, 0.0), w_r - 1.0)
        fy = min(max(v * h_r - 0.5, 0.0), h_r - 1.0)
        x0, y0 = int(fx), int(fy)
        x1, y1 = min(x0 + 1, w_r - 1), min(y0 + 1, h_r - 1)
        ax, ay = fx - x0, fy - y0

        def at(x, y):
            return res_px[4 * (y * w_r + x) + c]

        return ((at(x0, y0) * (1 - ax) + at(x1, y0) * ax) * (1 - ay) +
                (at(x0, y1) * (1 - ax) + at(x1, y1) * ax) * ay)

    def compare(dx, dy):
        diffs = []
        for j in range(h_r):
            y = int(ry + (j + 0.5) * rh / h_r)
            for i in range(w_r):
                x = int(rx + (i + 0.5) * rw / w_r)
                if not (0 <= x + dx < sw and 0 <= y + dy < sh):
                    continue
                u, v = (x - rx + 0.5) / rw, (y - ry + 0.5) / rh
                p = 4 * ((y + dy) * sw + x + dx)
                diffs.append(max(abs(spx[p + c] - on_screen(expected(u, v, c))) for c in range(3)))
        return diffs

    def on_screen(value):
        return round(value * 255.0) / 255.0

    diffs = compare(0, 0)
    n = len(diffs)
    samples = []
    for j in range(0, h_r, 9):
        y = int(ry + (j + 0.5) * rh / h_r)
        x = int(rx + 40.5 * rw / w_r)
        u, v = (x - rx + 0.5) / rw, (y - ry + 0.5) / rh
        p = 4 * (y * sw + x)
        samples.append(([round(255 * spx[p + c]) for c in range(3)],
                        [round(255 * on_screen(expected(u, v, c)), 1) for c in range(3)]))
    REPORT["figures"][key + "_samples"] = samples
    # where else it would match best (a misaligned overlay shows here as a non-zero offset)
    offsets = {}
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        d = compare(dx, dy)
        offsets["%+d,%+d" % (dx, dy)] = round(255 * sum(d) / max(1, len(d)), 2)
    REPORT["figures"][key + "_offsets"] = offsets
    diffs.sort()
    mean = sum(diffs) / max(1, len(diffs))
    REPORT["figures"][key] = {"samples": n, "mean_abs_255": round(255 * mean, 2),
                                              "p99_abs_255": round(255 * diffs[int(0.99 * (len(diffs) - 1))], 2)
                                              if diffs else None, "rect": [round(v, 2) for v in (rx, ry, rw, rh)],
                                              "result": [w_r, h_r]}
    if alignment_only:
        # At about 1.5 screen pixels per texel (Max size 512 in this window) llvmpipe's filtered
        # pixels differ from the float bilinear reference by a mean of 2.5 levels (p99 22) over the
        # tiny model's noisy image, which we have not traced; a one-pixel shift costs about 21.
        return check(name, n == w_r * h_r and mean * 255 <= 4.0 and min(offsets.values()) >= 4 * 255 * mean,
                     REPORT["figures"][key])
    # Tolerance: the overlay layer keeps linear values at 8 bits, so dark values (sRGB < ~10)
    # lose up to 4 levels; everything else matches to rounding.
    return check(name,
          n == w_r * h_r and mean * 255 <= 1.5 and diffs[int(0.99 * (len(diffs) - 1))] * 255 <= 6.0,
          REPORT["figures"][key])


def run():
    from depthcast import client, overlay, preference_values, viewport
    from depthcast.core import runtime

    window, area, region, space = view3d()
    # What the 3D View region shows must be only the scene and our overlay.
    space.overlay.show_overlays = False
    space.show_gizmo = False
    space.show_region_toolbar = False
    space.show_region_ui = False
    space.show_region_header = False
    space.shading.type = "SOLID"
    scene = bpy.context.scene
    s = scene.depthcast
    rt = runtime.of(scene)
    s.prompt = "a house on a hill"
    s.model = ARGS.model
    s.use_steps, s.steps = True, 2
    s.preview_every = 0
    s.seed_randomize, s.seed = False, "3089542005"
    s.live_debounce = 0.25
    s.live_max_side = 128
    s.use_layout = False
    scene.render.dither_intensity = 0.0  # the viewport's display transform dithers otherwise

    svc = Service()
    _SERVICE.append(svc)
    svc.start()
    prefs = preference_values.get_prefs()
    prefs.start_local_service = False
    prefs.auto_connect = True
    prefs.server_url = "ws://127.0.0.1:%d/v1/ws" % svc.port
    client.start()
    deadline = time.monotonic() + ARGS.timeout
    while client.connection_status()[0] != "connected" and time.monotonic() < deadline:
        yield 0.1
    if not check("connected to the service", client.connection_status()[0] == "connected", client.connection_status()):
        return

    # 1. baseline: orbit with live mode off, one step per main-loop turn
    def orbit(seconds):
        stamps = []
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            stamps.append(time.monotonic())
            orbit_step(space, 0.01)
            area.tag_redraw()
            yield 0.0
        REPORT["_stamps"] = stamps

    for _ in orbit(3.0):
        yield 0.0
    base = gap_stats(REPORT.pop("_stamps"))

    # 2. live, orbiting. The pacing rule is stated in debounce periods; on a loaded machine with
    # software GL one main-loop turn can take longer than the default debounce, so the debounce
    # is at least two turns of the baseline (the rule is then still observable).
    turn = base["mean_ms"] / 1000.0
    s.live_debounce = max(0.25, 2.0 * turn)
    orbit_s = min(30.0, max(10.0 * s.live_debounce, 6.0))
    REPORT["figures"]["debounce_s"] = round(s.live_debounce, 3)
    with bpy.context.temp_override(window=window, area=area, region=region):
        bpy.ops.depthcast.live()
    check("live started", viewport.is_running() and rt.live_running)
    # the first frame and its result, before timing the orbit
    deadline = time.monotonic() + ARGS.timeout
    while (viewport.state().frames_sent < 1 or rt.job_id) and time.monotonic() < deadline:
        yield 0.05
    sent_before = viewport.state().frames_sent
    t_orbit = time.monotonic()
    captures_before = viewport.state().captures
    for _ in orbit(orbit_s):
        yield 0.0
    stamps = REPORT.pop("_stamps")
    live = gap_stats(stamps)
    # Live's own main-thread work in each turn of the main loop (timers, handlers, draw callbacks,
    # each timing itself): measured from the work, not from the machine's noisy frame times.
    from depthcast.core import costs

    top = ("events", "live tick", "live draw handler", "overlay draw")
    work = [e for e in costs.since(stamps[0]) if e[2] in top]
    per_turn = [sum(d for t, d, _n in work if a <= t < b) for a, b in zip(stamps, stamps[1:])]
    worst_piece = max(work, key=lambda e: e[1]) if work else (0, 0.0, "")
    during = viewport.state().frames_sent - sent_before
    cap_s = viewport.state().capture_s[-max(1, 2 * (viewport.state().captures - captures_before)):]
    # one frame per 2 debounce periods, plus the two main-loop turns each frame needs (request,
    # then capture in the next redraw)
    expected = int(orbit_s / (2 * s.live_debounce + 2 * live["mean_ms"] / 1000.0))
    check("frames sent during the orbit (at least one every 2 debounce periods + 2 turns)",
          during >= max(2, expected), "%d in %.1f s (expected >= %d), debounce %.2f s" % (
              during, orbit_s, expected, s.live_debounce))
    ratio = live["mean_ms"] / base["mean_ms"] if base["mean_ms"] else 0.0
    REPORT["figures"]["main_loop_gap_plain_orbit"] = base
    REPORT["figures"]["main_loop_gap_live_orbit"] = live
    REPORT["figures"]["main_loop_gap_ratio"] = round(ratio, 3)
    REPORT["figures"]["worst_gap_over_plain_ms"] = round(live["max_ms"] - base["max_ms"], 2)
    REPORT["figures"]["capture_in_draw_handler_ms"] = {  # draws in the handler, read-backs in the tick
        "n": len(cap_s), "mean": round(1000 * sum(cap_s) / max(1, len(cap_s)), 2),
        "max": round(1000 * max(cap_s or [0.0]), 2)}
    REPORT["figures"]["frames_sent_during_orbit"] = during
    REPORT["figures"]["last_capture_parts"] = dict(viewport.state().capture_parts)
    REPORT["figures"]["live_trace_during_orbit"] = [(round(t - t_orbit, 3), what) for t, what in viewport.state().trace
                                                    if t >= t_orbit]
    added = sum(per_turn) / max(1, len(per_turn)) / (base["mean_ms"] / 1000.0) if base["mean_ms"] else 0.0
    REPORT["figures"]["live_work_per_turn_ms"] = {
        "mean": round(1000 * sum(per_turn) / max(1, len(per_turn)), 2), "max": round(1000 * max(per_turn or [0.0]), 2),
        "added_to_plain_redraw": round(added, 3), "worst_piece": [worst_piece[2], round(1000 * worst_piece[1], 2)]}
    check("live's main-thread work adds <= 20 % to a plain redraw's main-loop turn",
          added <= 0.2, REPORT["figures"]["live_work_per_turn_ms"])
    # Never a pause over 50 ms beyond a plain redraw: a main-loop turn holds at most 50 ms of
    # Live's own work (what the turn takes beyond the plain redraw it would do anyway). Wall time,
    # so a GPU wait counts; on a 2-core machine shared at load ~13 the scheduler also preempts any
    # callback now and then (an overlay draw of 0.4 ms measured 75 ms once), so the check takes
    # the 95th percentile of the turns, and no turn may hold a plain redraw's worth of it.
    worst_turn = max(range(len(per_turn)), key=lambda i: per_turn[i]) if per_turn else None
    if worst_turn is not None:
        a, b = stamps[worst_turn], stamps[worst_turn + 1]
        parts = {}
        for t, d, n in costs.since(a):
            if t < b:
                parts[n] = round(parts.get(n, 0.0) + 1000 * d, 2)
        REPORT["figures"]["worst_turn_parts_ms"] = parts
    ordered = sorted(per_turn or [0.0])
    p95 = ordered[int(0.95 * (len(ordered) - 1))]
    REPORT["figures"]["live_work_per_turn_ms"].update({
        "p95": round(1000 * p95, 2), "turns": len(per_turn), "turns_over_50ms": sum(1 for w in per_turn if w > 0.05)})
    check("live's main-thread work stays under 50 ms a turn (95th percentile; none as long as a plain redraw)",
          p95 <= 0.05 and ordered[-1] <= base["mean_ms"] / 1000.0, REPORT["figures"]["live_work_per_turn_ms"])

    # Each capture's own main-thread pieces (the draw, the read-back) are small: the median of
    # them, so that one preemption on a loaded machine does not decide it.
    pieces = sorted(cap_s or [0.0])
    median_piece = pieces[len(pieces) // 2]
    check("a live capture's main-thread pieces (draw, read-back) take <= 10 ms (median)", median_piece <= 0.01,
          REPORT["figures"]["capture_in_draw_handler_ms"])

    # 3. stop moving: the result of the final view, drawn exactly over the region
    yield from settle(rt, viewport, overlay)
    info = client.last_result()
    check("a live result arrived for the final view", info is not None and not rt.job_id, (rt.status, rt.error))
    if info is None:
        return
    w_r, h_r, _view, _preview, _draws = overlay.shown()
    res_px = result_pixels(w_r, h_r)
    area.tag_redraw()
    yield 0.3
    shot = screenshot(os.path.join(ARGS.out, "live-3dview.png"))
    _w, _a, region, _s = view3d()
    client.save_last_result(folder=ARGS.out)
    overlay_check("3D View pixels equal the result image over the captured region", "overlay_vs_result", shot,
                  region.x, region.y, region.width, region.height, res_px, w_r, h_r)
    # with the split at one half, the right half shows the scene again
    s.overlay_split = 0.5
    area.tag_redraw()
    yield 0.3
    screenshot(os.path.join(ARGS.out, "live-3dview-split.png"))
    s.overlay_split = 1.0

    # 3b. camera view: live captures the camera frame, and the result covers exactly that frame
    from bpy_extras.view3d_utils import location_3d_to_region_2d

    space.region_3d.view_perspective = "CAMERA"
    area.tag_redraw()
    yield from settle(rt, viewport, overlay, lambda w, h, view: bool(view and view["camera"]))
    w_r, h_r, view, _preview, _draws = overlay.shown()
    check("in camera view live captures the camera frame at the render's aspect", view is not None and view["camera"]
          and abs(w_r / h_r - 1920 / 1080) < 0.02, (w_r, h_r, view and view["camera"]))
    if view is not None and view["camera"]:
        res_px = result_pixels(w_r, h_r)
        _w, _a, region, _s = view3d()
        pts = [location_3d_to_region_2d(region, space.region_3d, c) for c in view["corners"]]
        x0, y0 = pts[0]
        x1, y1 = pts[2]
        frame = (x0, y0, x1 - x0, y1 - y0)
        REPORT["figures"]["camera_frame_in_region"] = [round(v, 2) for v in frame]
        shot = screenshot(os.path.join(ARGS.out, "live-camera-view.png"))
        overlay_check("in camera view the 3D View shows the result exactly over the camera frame", "camera_overlay",
                      shot, region.x + frame[0], region.y + frame[1], frame[2], frame[3], res_px, w_r, h_r)
    space.region_3d.view_perspective = "PERSP"

    # 3b'. Max size 512, the add-on's default: a larger capture, drawn exactly over the region too.
    s.live_max_side = 512
    area.tag_redraw()
    yield from settle(rt, viewport, overlay, lambda w, h, view: bool(view) and not view["camera"] and max(w, h) == 512)
    w_r, h_r, view, _preview, _draws = overlay.shown()
    check("at Max size 512 live shows a 512-pixel result of the 3D View", max(w_r, h_r) == 512 and view is not None
          and not view["camera"], (w_r, h_r, view and view["camera"]))
    if max(w_r, h_r) == 512:
        res_px = result_pixels(w_r, h_r)
        area.tag_redraw()
        yield 0.3
        shot = screenshot(os.path.join(ARGS.out, "live-3dview-512.png"))
        _w, _a, region, _s = view3d()
        overlay_check("at Max size 512 the result lies exactly over the captured region (best match unshifted)",
                      "overlay_vs_result_512", shot, region.x, region.y, region.width, region.height, res_px, w_r, h_r,
                      alignment_only=True)
    s.live_max_side = 128

    # 3c. Generate on the factory scene at 1920x1080: the capture renders as a render job, so
    # the main loop keeps turning (each turn stamped) until the depth is sent, and the image
    # arrives at the render size. Live is off meanwhile: both would own the scene's job.
    from depthcast import operators

    with bpy.context.temp_override(window=window, area=area, region=region):
        bpy.ops.depthcast.live()
    r = scene.render
    REPORT["figures"]["factory_render_size"] = [r.resolution_x, r.resolution_y, r.resolution_percentage]
    r.resolution_x, r.resolution_y, r.resolution_percentage = 1920, 1080, 100
    ticks = []
    t_gen = time.monotonic()
    with bpy.context.temp_override(window=window, area=area, region=region):
        res = bpy.ops.depthcast.generate()
    op_s = time.monotonic() - t_gen
    gen_capture = next(iter(operators._capturing.values()), None)
    deadline = time.monotonic() + ARGS.timeout
    while operators._capturing and time.monotonic() < deadline:
        ticks.append(time.monotonic())
        yield 0.0
    capture_s = time.monotonic() - t_gen
    gen_job = rt.job_id
    while rt.job_id and time.monotonic() < deadline:
        yield 0.1
    ticks_stats = gap_stats(ticks)
    if len(ticks) > 1:
        i = max(range(len(ticks) - 1), key=lambda k: ticks[k + 1] - ticks[k])
        ticks_stats["longest_at_s"] = [round(ticks[i] - t_gen, 3), round(ticks[i + 1] - t_gen, 3)]
    if gen_capture is not None:
        ticks_stats["capture_trace"] = [(round(t - t_gen, 3), what) for t, what in gen_capture.trace]
    REPORT["figures"]["generate_1920x1080"] = {"operator_s": round(op_s, 3), "capture_s": round(capture_s, 3),
                                               "main_loop_turns_during_capture": ticks_stats, "job": gen_job,
                                               "capture_timings_s": {k: round(v, 3) for k, v in (
                                                   operators.last_capture["capture"].timings.items()
                                                   if operators.last_capture["capture"] else ())},
                                               "pass_reader": getattr(operators.last_capture["capture"], "pass_reader", None)}
    check("Generate's capture keeps the main loop turning (render job, not a blocking render)",
          res == {"FINISHED"} and ticks_stats["n"] >= 5 and ticks_stats["max_ms"] <= 500 * capture_s,
          (res, REPORT["figures"]["generate_1920x1080"], rt.error))
    header = (client.last_result() or {}).get("header") or {}
    check("Generate on the factory scene gives a 1920x1080 image through the service",
          bool(gen_job) and header.get("jobId") == gen_job and (header.get("width"), header.get("height")) == (1920, 1080)
          and not rt.error, (gen_job, header.get("jobId"), header.get("width"), header.get("height"),
                             header.get("generated"), rt.error))
    # 3d. Esc while Generate's capture renders (a real key press, through the X server): the render
    # job stops, the panel says the capture was cancelled, nothing goes to the service, the scene
    # copy is removed, and the next Generate still works.
    import shutil

    if shutil.which("xdotool"):
        sent_before = client.last_result()
        with bpy.context.temp_override(window=window, area=area, region=region):
            bpy.ops.depthcast.generate()
        esc_capture = next(iter(operators._capturing.values()), None)
        deadline = time.monotonic() + ARGS.timeout
        while esc_capture is not None and esc_capture.waiting != "render" and time.monotonic() < deadline:
            yield 0.02
        yield 0.3  # the render job is running
        key = subprocess.Popen(["xdotool", "search", "--sync", "--onlyvisible", "--name", "Blender", "windowfocus",
                                "--sync", "key", "Escape"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while operators._capturing and time.monotonic() < deadline:
            yield 0.05
        key.wait(10)
        yield 0.3
        trace = [what for _t, what in esc_capture.trace] if esc_capture is not None else None
        check("Esc stops Generate's capture render: the panel says so, nothing is sent, the scene copy is gone",
              "cancelled" in rt.error and not rt.job_id and client.last_result() is sent_before
              and "depthcast capture" not in bpy.data.scenes and "render cancel" in (trace or []),
              (rt.error, rt.job_id, trace, key.returncode, key.stderr.read().decode(errors="replace")[-300:]))
        rt.error = ""
        with bpy.context.temp_override(window=window, area=area, region=region):
            res = bpy.ops.depthcast.generate()
        while (operators._capturing or rt.job_id) and time.monotonic() < deadline:
            yield 0.1
        check("after Esc, the next Generate gives an image", res == {"FINISHED"} and not rt.error
              and client.last_result() is not sent_before, (res, rt.error))
    else:
        REPORT["skipped"].append("Esc during Generate's capture: no xdotool to press the key")

    with bpy.context.temp_override(window=window, area=area, region=region):
        bpy.ops.depthcast.live()
    check("live restarted", viewport.is_running())

    # 4. outage: kill the service, restart it, a result must arrive with no user action
    results_before = id(client.last_result())
    svc.kill()
    deadline = time.monotonic() + 30
    while client.connection_status()[0] == "connected" and time.monotonic() < deadline:
        yield 0.1
    check("the add-on noticed the outage", client.connection_status()[0] != "connected", client.connection_status())
    yield 1.0
    svc.start()
    deadline = time.monotonic() + ARGS.timeout
    while id(client.last_result()) == results_before and time.monotonic() < deadline:
        yield 0.1
    check("after the restart a result arrived with no user action", id(client.last_result()) != results_before,
          (client.connection_status(), rt.status, rt.error))
    check("no stale error after reconnecting", not rt.error, rt.error)
    check("the real seed was kept (32 bits)", rt.last_seed == 3089542005, rt.last_seed)

    # 5. Disconnect mid-job resets the panel
    orbit_step(space, 0.05)
    area.tag_redraw()
    deadline = time.monotonic() + 10
    while not rt.job_id and time.monotonic() < deadline:
        yield 0.02
    with bpy.context.temp_override(window=window, area=area, region=region):
        bpy.ops.depthcast.disconnect()
    check("Disconnect mid-job resets the panel", not rt.job_id and rt.progress == 0.0 and not viewport.is_running(),
          (rt.job_id, rt.progress, rt.status))
    svc.kill()


def main():
    try:
        bpy.ops.preferences.addon_install(filepath=os.path.abspath(ARGS.addon_zip), overwrite=True)
        addon_utils.modules_refresh()
        mod = addon_utils.enable("depthcast", default_set=True, handle_error=None)
        check("add-on enabled from the zip", mod is not None and hasattr(bpy.types.Scene, "depthcast"))
    except Exception:
        check("add-on enabled from the zip", False, traceback.format_exc())
        write_report()
        bpy.ops.wm.quit_blender()
        return
    steps = run()

    def tick():
        try:
            delay = next(steps)
            return delay
        except StopIteration:
            pass
        except Exception:
            check("no exception in the live-window steps", False, traceback.format_exc())
        write_report()
        try:
            from depthcast import client
            client.stop()
        except Exception:
            pass
        for svc in _SERVICE:
            svc.kill()
        bpy.ops.wm.quit_blender()
        return None

    bpy.app.timers.register(tick, first_interval=1.0)


main()
