"""The service output of depthcast_batch.py (``--server URL``): each view's depth (and object
layout, with per-object prompts from the ``depthcast_prompt`` custom property) goes to the
service as a batch job (FIFO: never dropped), and the result lands in OUT/<camera>_<frame>.png
(the service's PNG) with OUT/<camera>_<frame>.json (parameters, seed, model, timings), plus
OUT/batch.json summarising the run. Existing outputs are kept unless --overwrite. Without
--prompt the scene's depthcast settings (if any) provide it.

Several frames make a sequence per camera: each frame carries its motion to the one before (the
Vector pass, so Cycles), results carry the pair's warp score and batch.json the mean, the worst
pair and every pair per camera (core/motion.py; docs/batch.md, "Animation without flicker"),
with the plot of the score over frames in OUT/warp-<camera>.png (drawn by the service).

Views render one after another while up to --in-flight jobs wait at the service.
"""
import json
import os
import socket
import sys
import time

import bpy

from depthcast import capture, results
from depthcast.core import messages, motion, warp_plot
from depthcast.core.session import Backoff, Session
from depthcast.core.websocket import parse_ws_url


def nothing_listens(url, timeout=3.0):
    """Why ``url`` cannot be reached right now (refused, unknown host), or '' when something
    accepts a TCP connection there: the script says so at once instead of retrying for 30 s."""
    _secure, host, port, _resource = parse_ws_url(url)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as err:
        return "nothing listens at %s:%d (%s)" % (host, port, err.strerror or err)
    return ""


def scene_defaults(scene):
    s = getattr(scene, "depthcast", None)
    if s is None:
        return {}
    return {"prompt": s.prompt, "negative": s.negative_prompt, "model": s.model or None}


def add_arguments(p):
    """The options only this output reads, added to ``p``; returns their argparse actions, which
    depthcast_batch.py refuses with --depth-files."""
    actions = []

    def add(*names, **kw):
        actions.append(p.add_argument(*names, **kw))

    add("--token", default=os.environ.get("DEPTHCAST_TOKEN", ""), help="access token (or $DEPTHCAST_TOKEN)")
    add("--prompt", default=None)
    add("--negative", default=None)
    add("--model", default=None)
    add("--steps", type=int, default=None)
    add("--guidance", type=float, default=None)
    add("--scheduler", default=None)
    add("--seed", type=int, default=None, help="seed for every image (default: random per image)")
    add("--controlnet-scale", type=float, default=None)
    add("--near-far", choices=["CAMERA", "SCENE", "MANUAL"], default="CAMERA")
    add("--near", type=float, default=0.1)
    add("--far", type=float, default=100.0)
    add("--depth-range", choices=["fixed", "auto"], default=None)
    add("--init", action="store_true", help="send a solid render as init image (img2img)")
    add("--strength", type=float, default=0.75)
    add("--no-layout", action="store_true", help="do not send the object layout")
    add("--in-flight", type=int, default=2, help="jobs waiting at the service at once")
    add("--timeout", type=float, default=600.0, help="seconds to wait for one image")
    add("--overwrite", action="store_true", help="replace existing outputs")
    add("--consistency", choices=["per-frame", "consistent"], default="per-frame",
        help="with several frames: consistent continues each frame from the one before (docs/batch.md)")
    return actions


def connect(url, args):
    """A connected Session, or (None, reason)."""
    refused = nothing_listens(url)
    if refused:
        return None, refused
    session = Session(url, args.token, reconnect=True, backoff=Backoff(initial=0.5, maximum=5.0),
                      client_version="batch")
    session.start()
    deadline = time.monotonic() + min(30.0, args.timeout)
    while not session.connected and time.monotonic() < deadline:
        if session.state == "disconnected":  # refused (401/403): no retries
            break
        time.sleep(0.05)
    if not session.connected:
        reason = session.last_error or session.state_message
        session.stop()
        return None, reason
    return session, ""


def run(scene, views, url, args, out_dir, render, report):
    """``views``: [(camera, frame)]; ``render(camera, frame, **capture_options)`` is the batch's
    one capture call; ``report(message)`` prints an error line. Returns the exit code."""
    session, refused = connect(url, args)
    if session is None:
        report("cannot connect: %s" % refused)
        _write_summary(out_dir, url, [], [{"error": "cannot connect: %s" % refused}])
        return 1
    defaults = scene_defaults(scene)
    prompt = args.prompt if args.prompt is not None else defaults.get("prompt", "")
    written, failed, skipped = [], [], []
    in_flight = {}  # jobId -> (camera, frame, header, started)
    cameras = list(dict.fromkeys(c.name for c, _f in views))
    frames = list(dict.fromkeys(f for _c, f in views))
    sequence = len(frames) > 1
    previous = {}  # camera name -> (jobId, frame, pose) of the frame sent before
    warp = {}  # camera name -> {frame: the result's consistency}
    t_start = time.monotonic()

    def base_name(cam_name, frame):
        return "%s_%04d" % (results.safe_name(cam_name, "camera"), frame)

    def on_final(ev):
        cam_name, frame, header, started = in_flight.pop(ev.data["jobId"])
        if ev.kind == "result" and sequence:
            warp.setdefault(cam_name, {})[frame] = ev.data.get("consistency")
        if ev.kind == "result":
            sidecar = messages.sidecar_json(ev.data, header, camera=cam_name, frame=frame, scene=scene.name,
                                            blend=bpy.data.filepath or None,
                                            wallSeconds=round(time.monotonic() - started, 3))
            path = results.write_result(out_dir, base_name(cam_name, frame), ev.payload, sidecar)
            written.append(path)
            gen = ev.data.get("generated") or {}
            print("depthcast batch: %s frame %d -> %s (%sx%s, generated at %sx%s, seed %s)" % (
                cam_name, frame, path, ev.data.get("width"), ev.data.get("height"), gen.get("width"), gen.get("height"),
                ev.data.get("seed")), flush=True)
        else:
            msg = "%s: %s" % (ev.data.get("code", ev.kind), ev.data.get("message", ev.data.get("reason", "")))
            failed.append({"camera": cam_name, "frame": frame, "error": msg})
            report("%s frame %d FAILED: %s" % (cam_name, frame, msg))

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
                report("service error: %s" % ev.data.get("message"))
            if time.monotonic() >= end:
                return

    for cam, frame in views:
        name = base_name(cam.name, frame)
        if not args.overwrite and os.path.exists(os.path.join(out_dir, name + ".png")):
            skipped.append(name)
            continue
        while len(in_flight) >= max(1, args.in_flight):
            _expire(in_flight, failed, args.timeout)
            drain(0.5)
        try:
            cap = render(cam, frame, with_layout=not args.no_layout, with_init=args.init, near_far=args.near_far,
                         manual_near=args.near, manual_far=args.far, with_vector=sequence)
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
            # One stream per camera, so the service remembers each camera's previous frame.
            header, payloads = messages.build_frame(messages.new_job_id("batch"), cap.depth, params,
                                                    stream="blender-batch-%d" % cameras.index(cam.name) if sequence else "blender-batch",
                                                    mode="batch", init_png=cap.init_png, layout=cap.layout)
            if sequence:
                motion.attach_motion(header, payloads, frame, cap.flow, cap.pose, cap.intrinsics, previous.get(cam.name))
                previous[cam.name] = (header["jobId"], frame, cap.pose)
        except (capture.CaptureError, messages.MessageError, ValueError) as err:
            failed.append({"camera": cam.name, "frame": frame, "error": str(err)})
            report("%s frame %d FAILED: %s" % (cam.name, frame, err))
            continue
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
            # The plot of the score over frames, drawn by the service (core/warp_plot.py).
            plot = "warp-%s.png" % results.safe_name(cam, "camera")
            error = warp_plot.write_warp_plot(os.path.join(out_dir, plot), url, args.token,
                                              "%s: warp error per frame pair" % cam, [(args.consistency, s["pairs"])])
            if error:
                s["plotError"] = error
                report("%s: no warp plot: %s" % (cam, error))
            else:
                s["plot"] = plot
    extra = {"warp": summaries, "consistency": args.consistency} if sequence else {}
    _write_summary(out_dir, url, written, failed, skipped=skipped, seconds=round(time.monotonic() - t_start, 3),
                   cameras=cameras, frames=frames, **extra)
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
