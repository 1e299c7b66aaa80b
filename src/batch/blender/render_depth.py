"""Renders linear camera-Z depth of a .blend headless, for `depthcast batch`.

    blender -b scene.blend --python-exit-code 3 --python render_depth.py -- \
        --out DIR [--camera NAME ...] [--frame N ...] [--resolution W H] [--engine auto|cycles|workbench] [--vector]

For every camera x frame it writes DIR/view-<i>.npy (float32, H x W, row 0 = top; background
= +inf) and finally DIR/render.json, which lists each view with its camera, frame, size, the
camera's clip range (near/far), the range of the geometry in view (min/max), the camera's pose and
intrinsics, and with --vector the motion to the previous frame (Cycles' Vector pass as flow
planes, DIR/view-<i>-flow.npy, float32 2 x H x W; capture.py). render.json is
written last, so a folder without it is an unfinished render.

How: through the add-on's own capture (blender-addon/depthcast/capture.py), the one
implementation of Blender depth rendering in depthcast: a throw-away copy of the scene, the Z
pass out of a compositor File Output node as 32-bit EXR, rows flipped to top-down, background
as +inf. The file is never saved. Only Blender's bundled Python is used (no numpy).
"""
import argparse
import json
import math
import os
import struct
import sys
import time
from array import array

import bpy

# The add-on's capture module renders the depth; this script only picks views and writes files.
sys.path.insert(0, os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "blender-addon")))
from depthcast import capture  # noqa: E402

ENGINES = {"auto": "AUTO", "cycles": "CYCLES", "workbench": "WORKBENCH"}


def fail(message):
    sys.stderr.write("DEPTHCAST_ERROR: %s\n" % message)
    sys.stderr.flush()
    sys.exit(3)


def parse_args():
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    p = argparse.ArgumentParser(prog="render_depth.py")
    p.add_argument("--out", required=True)
    p.add_argument("--camera", action="append", default=[])
    p.add_argument("--frame", action="append", type=int, default=[])
    p.add_argument("--resolution", nargs=2, type=int)
    p.add_argument("--engine", choices=["auto", "cycles", "workbench"], default="auto")
    p.add_argument("--vector", action="store_true")
    return p.parse_args(argv)


def write_npy(path, values, width, height):
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (height, width)
    pad = (64 - (10 + len(header) + 1) % 64) % 64
    header = header + " " * pad + "\n"
    if sys.byteorder != "little":
        values = array("f", values)
        values.byteswap()
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode("latin1"))
        f.write(values.tobytes())


def main():
    args = parse_args()
    scene = bpy.context.scene
    cameras = []
    for name in args.camera or [None]:
        cam = scene.objects.get(name) if name else scene.camera
        if cam is None:
            if name:
                known = ", ".join(sorted(o.name for o in scene.objects if o.type == "CAMERA")) or "none"
                fail("camera %r is not in scene %r (cameras: %s)" % (name, scene.name, known))
            fail("scene %r has no active camera; name one with camera/cameras" % scene.name)
        if cam.type != "CAMERA":
            fail("%r is not a camera" % cam.name)
        cameras.append(cam)
    frames = args.frame or [scene.frame_current]
    os.makedirs(args.out, exist_ok=True)
    if args.resolution:
        # The .blend is never saved, so its render settings can be changed for this run.
        scene.render.resolution_x, scene.render.resolution_y = args.resolution
        scene.render.resolution_percentage = 100
    views = []
    engine = ""
    for cam in cameras:
        for frame in frames:
            t0 = time.perf_counter()
            try:
                cap = capture.capture_camera(scene, cam, frame=frame, with_layout=False, engine=ENGINES[args.engine],
                                             near_far="CAMERA", background="inf", with_vector=args.vector)
            except capture.CaptureError as err:
                fail(str(err))
            except RuntimeError as err:
                fail("render failed: %s" % str(err).strip())
            engine = cap.engine
            depth = cap.depth
            finite = [v for v in depth.values if v != math.inf]
            file = "view-%d.npy" % len(views)
            write_npy(os.path.join(args.out, file), depth.values, depth.width, depth.height)
            motion = {"pose": cap.pose, "intrinsics": cap.intrinsics}
            if cap.flow is not None:
                motion["flow"] = "view-%d-flow.npy" % len(views)
                write_npy(os.path.join(args.out, motion["flow"]), cap.flow, depth.width, 2 * depth.height)
            views.append({
                **motion,
                "camera": cam.name, "frame": frame, "file": file, "width": depth.width, "height": depth.height,
                "near": cam.data.clip_start, "far": cam.data.clip_end,
                "min": min(finite) if finite else None, "max": max(finite) if finite else None,
                "background": 1.0 - len(finite) / float(depth.width * depth.height),
                "seconds": round(time.perf_counter() - t0, 4),
            })
    info = {"blender": bpy.app.version_string, "engine": engine, "views": views}
    with open(os.path.join(args.out, "render.json.partial"), "w") as f:
        json.dump(info, f, indent=1)
    os.replace(os.path.join(args.out, "render.json.partial"), os.path.join(args.out, "render.json"))


try:
    main()
except SystemExit:
    raise
except Exception as err:  # noqa: BLE001 - report anything as one line for the batch runner
    fail("%s: %s" % (type(err).__name__, err))
