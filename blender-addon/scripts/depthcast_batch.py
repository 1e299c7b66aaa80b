"""Headless batch: depth of every chosen camera and frame -> depthcast service -> images.

    blender -b scene.blend --python blender-addon/scripts/depthcast_batch.py -- \
        --server ws://127.0.0.1:7860/v1/ws [--token T] [--cameras all|NAME,...] [--frames 1-10]
        [--prompt TEXT] [--consistency per-frame|consistent] --out DIR

For each camera and frame: renders the Z pass (and the object layout, with per-object prompts
from the ``depthcast_prompt`` custom property), sends it as a batch job (FIFO: never dropped),
and writes ``DIR/<camera>_<frame>.png`` (the service's PNG) and ``DIR/<camera>_<frame>.json``
(parameters, seed, model, timings), plus ``DIR/batch.json`` summarising the run. Existing
outputs are kept unless --overwrite. Exits 0 when every image was written, 1 when any failed,
2 on bad arguments. Without --prompt the scene's depthcast settings (if any) provide it.

With several frames, each camera's frames are a sequence: every frame goes with Cycles' Vector
pass as its motion to the frame before, results carry the pair's warp score, and batch.json has
per camera every pair, the mean and the worst (docs/batch.md, "Animation without flicker").

Frames render one after another while up to --in-flight jobs wait at the service.
Needs only the files of this repository: the add-on does not have to be installed.
"""
import argparse
import json
import os
import sys
import time

import bpy

sys.path.insert(0, os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")))

from depthcast import capture, results  # noqa: E402
from depthcast.core import messages, motion  # noqa: E402
from depthcast.core.session import Backoff, Session, normalize_url  # noqa: E402


def nothing_listens(url, timeout=3.0):
    """Why ``url`` cannot be reached right now (refused, unknown host), or '' when something
    accepts a TCP connection there: the script says so at once instead of retrying for 30 s."""
    import socket

    from depthcast.core.websocket import parse_ws_url

    _secure, host, port, _resource = parse_ws_url(url)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        return "nothing listens at %s:%d (%s)" % (host, port, err.strerror or err)
    return ""


def parse_frames(spec, scene):
    """'5', '1-10', '1-10:2', '1,3,7-9' -> sorted frame list; '' = the scene's current frame,
    'all' = the scene's frame range."""
    if not spec:
        return [scene.frame_current]
    if spec == "all":
        return list(range(scene.frame_start, scene.frame_end + 1, max(1, scene.frame_step)))
    frames = set()
    for part in spec.split(","):
        part = part.strip()
        step = 1
        if ":" in part:
            part, step_s = part.split(":", 1)
            step = int(step_s)
            if step < 1:
                raise ValueError("frame step must be >= 1 in %r" % spec)
        if "-" in part[1:]:
            i = part.index("-", 1)
            a, b = int(part[:i]), int(part[i + 1:])
            if b < a:
                raise ValueError("frame range %r runs backwards" % part)
            frames.update(range(a, b + 1, step))
        else:
            frames.add(int(part))
    return sorted(frames)


def pick_cameras(spec, scene):
    cams = sorted((o for o in scene.objects if o.type == "CAMERA"), key=lambda o: o.name)
    if not spec:
        if scene.camera is None:
            raise ValueError("the scene has no active camera: pass --cameras all or NAME,...")
        return [scene.camera]
    if spec == "all":
        if not cams:
            raise ValueError("the scene has no cameras")
        return cams
    out = []
    for name in (n.strip() for n in spec.split(",") if n.strip()):
        obj = scene.objects.get(name)
        if obj is None or obj.type != "CAMERA":
            raise ValueError("no camera named %r (cameras: %s)" % (name, ", ".join(c.name for c in cams) or "none"))
        out.append(obj)
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(prog="depthcast_batch.py", description="Render depth per camera and frame and "
                                "generate images with a depthcast service.")
    p.add_argument("--server", required=True, help="ws://host:port/v1/ws of the service")
    p.add_argument("--token", default=os.environ.get("DEPTHCAST_TOKEN", ""), help="access token (or $DEPTHCAST_TOKEN)")
    p.add_argument("--cameras", default="", help="'all' or comma-separated camera names (default: the scene camera)")
    p.add_argument("--frames", default="", help="'1-10', '1,5,9', '1-20:5' or 'all' (default: the current frame)")
    p.add_argument("--scene", default="", help="scene name (default: the active scene)")
    p.add_argument("--prompt", default=None)
    p.add_argument("--negative", default=None)
    p.add_argument("--model", default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--scheduler", default=None)
    p.add_argument("--seed", type=int, default=None, help="seed for every image (default: random per image)")
    p.add_argument("--controlnet-scale", type=float, default=None)
    p.add_argument("--near-far", choices=["CAMERA", "SCENE", "MANUAL"], default="CAMERA")
    p.add_argument("--near", type=float, default=0.1)
    p.add_argument("--far", type=float, default=100.0)
    p.add_argument("--depth-range", choices=["fixed", "auto"], default=None)
    p.add_argument("--init", action="store_true", help="send a solid render as init image (img2img)")
    p.add_argument("--strength", type=float, default=0.75)
    p.add_argument("--no-layout", action="store_true", help="do not send the object layout")
    p.add_argument("--in-flight", type=int, default=2, help="jobs waiting at the service at once")
    p.add_argument("--verbose-render", action="store_true", help="keep Blender's per-tile render progress lines")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for one image")
    p.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--consistency", choices=["per-frame", "consistent"], default="per-frame",
                   help="with several frames: each camera's frames are a sequence sent with the Vector pass; "
                        "consistent continues each frame from the one before (docs/batch.md)")
    return p.parse_args(argv)


def scene_defaults(scene):
    s = getattr(scene, "depthcast", None)
    if s is None:
        return {}
    return {"prompt": s.prompt, "negative": s.negative_prompt, "model": s.model or None}


def main(argv):
    args = parse_args(argv)
    scene = bpy.data.scenes.get(args.scene) if args.scene else bpy.context.scene
    if scene is None:
        print("depthcast batch: no scene named %r" % args.scene, file=sys.stderr)
        return 2
    try:
        cameras = pick_cameras(args.cameras, scene)
        frames = parse_frames(args.frames, scene)
        url = normalize_url(args.server)
    except ValueError as err:
        print("depthcast batch: %s" % err, file=sys.stderr)
        return 2
    defaults = scene_defaults(scene)
    prompt = args.prompt if args.prompt is not None else defaults.get("prompt", "")
    out_dir = os.path.abspath(bpy.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)

    refused = nothing_listens(url)
    if refused:
        print("depthcast batch: cannot connect: %s" % refused, file=sys.stderr)
        _write_summary(out_dir, url, [], [{"error": "cannot connect: %s" % refused}])
        return 1
    capture.quiet_renders = not args.verbose_render
    session = Session(url, args.token, reconnect=True, backoff=Backoff(initial=0.5, maximum=5.0),
                      client_version="batch")
    session.start()
    deadline = time.monotonic() + min(30.0, args.timeout)
    while not session.connected and time.monotonic() < deadline:
        if session.state == "disconnected":  # refused (401/403): no retries
            break
        time.sleep(0.05)
    if not session.connected:
        print("depthcast batch: cannot connect: %s" % (session.last_error or session.state_message), file=sys.stderr)
        session.stop()
        _write_summary(out_dir, url, [], [{"error": "cannot connect: %s" % session.last_error}])
        return 1

    work = [(cam, f) for cam in cameras for f in frames]
    written, failed, skipped = [], [], []
    # Several frames make a sequence per camera: each frame carries its motion to the one before
    # (the Vector pass, so Cycles) and its result the pair's warp score (core/motion.py).
    sequence = len(frames) > 1
    previous = {}  # camera name -> (jobId, frame, pose) of the frame sent before
    warp = {}  # camera name -> {frame: the result's consistency}
    in_flight = {}  # jobId -> (camera, frame, header, started)
    t_start = time.monotonic()

    def base_name(cam, frame):
        return "%s_%04d" % (results.safe_name(cam.name, "camera"), frame)

    def on_final(ev):
        cam_name, frame, header, started = in_flight.pop(ev.data["jobId"])
        name = "%s_%04d" % (results.safe_name(cam_name, "camera"), frame)
        if ev.kind == "result" and sequence:
            warp.setdefault(cam_name, {})[frame] = ev.data.get("consistency")
        if ev.kind == "result":
            sidecar = messages.sidecar_json(ev.data, header, camera=cam_name, frame=frame, scene=scene.name,
                                            blend=bpy.data.filepath or None,
                                            wallSeconds=round(time.monotonic() - started, 3))
            path = results.write_result(out_dir, name, ev.payload, sidecar)
            written.append(path)
            gen = ev.data.get("generated") or {}
            print("depthcast batch: %s frame %d -> %s (%sx%s, generated at %sx%s, seed %s)" % (
                cam_name, frame, path, ev.data.get("width"), ev.data.get("height"), gen.get("width"), gen.get("height"),
                ev.data.get("seed")), flush=True)
        else:
            msg = "%s: %s" % (ev.data.get("code", ev.kind), ev.data.get("message", ev.data.get("reason", "")))
            failed.append({"camera": cam_name, "frame": frame, "error": msg})
            print("depthcast batch: %s frame %d FAILED: %s" % (cam_name, frame, msg), file=sys.stderr, flush=True)

    def drain(block_s):
        end = time.monotonic() + block_s
        while True:
            try:
                ev = session.events.get(timeout=max(0.0, end - time.monotonic()))
            except Exception:
                return
            if ev.kind in ("result", "error", "cancelled") and ev.data.get("jobId") in in_flight:
                on_final(ev)
                return
            if ev.kind == "error" and not ev.data.get("jobId"):
                print("depthcast batch: service error: %s" % ev.data.get("message"), file=sys.stderr)
            if time.monotonic() >= end:
                return

    for cam, frame in work:
        name = base_name(cam, frame)
        if not args.overwrite and os.path.exists(os.path.join(out_dir, name + ".png")):
            skipped.append(name)
            continue
        while len(in_flight) >= max(1, args.in_flight):
            _expire(in_flight, failed, args.timeout)
            drain(0.5)
        try:
            cap = capture.capture_camera(scene, camera=cam, frame=frame, with_layout=not args.no_layout,
                                         with_init=args.init, near_far=args.near_far, manual_near=args.near,
                                         manual_far=args.far, with_vector=sequence)
            # The render size is the output size: the service generates at the model's own size and
            # upscales (docs/protocol.md#sizes), so a default 1920x1080 scene needs nothing special.
            params = messages.build_params(
                prompt, args.negative if args.negative is not None else defaults.get("negative", ""),
                model=args.model or defaults.get("model"), width=cap.output_size[0], height=cap.output_size[1],
                steps=args.steps, guidance=args.guidance, strength=args.strength if args.init else None,
                seed=args.seed, scheduler=args.scheduler, controlnet_scale=args.controlnet_scale,
                depth_range=args.depth_range, preview_every=0)
            if sequence:
                params["consistency"] = args.consistency
            header, payloads = messages.build_frame(messages.new_job_id("batch"), cap.depth, params,
                                                    stream="blender-batch-%d" % cameras.index(cam) if sequence else "blender-batch",
                                                    mode="batch", init_png=cap.init_png, layout=cap.layout)
            if sequence:
                motion.attach_motion(header, payloads, frame, cap.flow, cap.pose, cap.intrinsics, previous.get(cam.name))
                previous[cam.name] = (header["jobId"], frame, cap.pose)
        except (capture.CaptureError, messages.MessageError, ValueError) as err:
            failed.append({"camera": cam.name, "frame": frame, "error": str(err)})
            print("depthcast batch: %s frame %d FAILED: %s" % (cam.name, frame, err), file=sys.stderr)
            continue
        print("depthcast batch: %s frame %d: %dx%d depth in %.2f s (%s)" % (
            cam.name, frame, cap.width, cap.height, cap.timings.get("total", 0), cap.engine), flush=True)
        in_flight[header["jobId"]] = (cam.name, frame, header, time.monotonic())
        session.send_frame(header, payloads)
    while in_flight:
        _expire(in_flight, failed, args.timeout)
        drain(0.5)
    session.stop()
    summaries = {cam: motion.warp_summary(reports) for cam, reports in warp.items()}
    for cam, s in sorted(summaries.items()):
        if s["meanError"] is not None:
            print("depthcast batch: %s: warp error mean %.4f, worst %.4f (frame %d), %d pairs, %d fallbacks" % (
                cam, s["meanError"], s["worst"]["error"], s["worst"]["frame"], len(s["pairs"]), len(s["fallbacks"])), flush=True)
    extra = {"warp": summaries, "consistency": args.consistency} if sequence else {}
    _write_summary(out_dir, url, written, failed, skipped=skipped, seconds=round(time.monotonic() - t_start, 3),
                   cameras=[c.name for c in cameras], frames=frames, **extra)
    print("depthcast batch: %d written, %d skipped, %d failed" % (len(written), len(skipped), len(failed)), flush=True)
    return 1 if failed else 0


def _expire(in_flight, failed, timeout):
    now = time.monotonic()
    for job_id, (cam_name, frame, _header, started) in list(in_flight.items()):
        if now - started > timeout:
            in_flight.pop(job_id)
            failed.append({"camera": cam_name, "frame": frame, "error": "no result within %.0f s" % timeout})


def _write_summary(out_dir, url, written, failed, **extra):
    doc = {"server": url, "written": [os.path.basename(p) for p in written], "failed": failed}
    doc.update(extra)
    with open(os.path.join(out_dir, "batch.json"), "w") as f:
        json.dump(doc, f, indent=2)


if __name__ == "__main__":
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code if isinstance(exc.code, int) else 2
    sys.exit(code)
