"""The depth-files output of depthcast_batch.py (``--depth-files``), for `depthcast batch` on a
.blend (src/batch/blender.ts reads what it writes).

For every camera x frame it writes OUT/view-<i>.npy (float32, H x W, row 0 = top; background
= +inf) and finally OUT/render.json, which lists each view with its camera, frame, size, the
camera's clip range (near/far), the range of the geometry in view (min/max), the camera's pose and
intrinsics, and with ``with_vector`` the motion to the previous frame (Cycles' Vector pass as flow
planes, OUT/view-<i>-flow.npy, float32 2 x H x W; capture.py). render.json is written last, so a folder without it is an unfinished render: the first view that cannot be
rendered ends the run.

The depth is the add-on's capture (depthcast/capture.py) with the camera's clip range, no
layout and +inf background. Only Blender's bundled Python is used (no numpy).
"""
import json
import math
import os
import struct
import sys
import time
from array import array

import bpy

from depthcast.core.files import write_atomic


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


def run(views, out_dir, render, with_vector=False):
    """``views``: [(camera, frame)]; ``render(camera, frame, **capture_options)`` is the batch's
    one capture call. Raises CaptureError on the first view that fails."""
    written = []
    engine = ""
    for cam, frame in views:
        t0 = time.perf_counter()
        cap = render(cam, frame, with_layout=False, near_far="CAMERA", background="inf", with_vector=with_vector)
        engine = cap.engine
        depth = cap.depth
        finite = [v for v in depth.values if v != math.inf]
        file = "view-%d.npy" % len(written)
        write_npy(os.path.join(out_dir, file), depth.values, depth.width, depth.height)
        motion = {"pose": cap.pose, "intrinsics": cap.intrinsics}
        if cap.flow is not None:
            motion["flow"] = "view-%d-flow.npy" % len(written)
            write_npy(os.path.join(out_dir, motion["flow"]), cap.flow, depth.width, 2 * depth.height)
        written.append({
            **motion,
            "camera": cam.name, "frame": frame, "file": file, "width": depth.width, "height": depth.height,
            "near": cam.data.clip_start, "far": cam.data.clip_end,
            "min": min(finite) if finite else None, "max": max(finite) if finite else None,
            "background": 1.0 - len(finite) / float(depth.width * depth.height),
            "seconds": round(time.perf_counter() - t0, 4),
        })
    info = {"blender": bpy.app.version_string, "engine": engine, "views": written}
    write_atomic(os.path.join(out_dir, "render.json"), json.dumps(info, indent=1).encode("utf-8"))
    return 0
