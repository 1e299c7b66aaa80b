"""Renders linear camera-Z depth of a .blend headless, for `depthcast batch`.

    blender -b scene.blend --python-exit-code 3 --python render_depth.py -- \
        --out DIR [--camera NAME ...] [--frame N ...] [--resolution W H] [--engine auto|cycles|workbench]

For every camera x frame it writes DIR/view-<i>.npy (float32, H x W, row 0 = top; background
= +inf) and finally DIR/render.json, which lists each view with its camera, frame, size, the
camera's clip range (near/far) and the range of the geometry in view (min/max). render.json is
written last, so a folder without it is an unfinished render.

How: Cycles at 1 sample with no bounces and a 0.01 px box filter (CPU, no display needed) or,
without Cycles, Workbench with anti-aliasing off; the Z pass leaves through a compositor File
Output node as 32-bit EXR (background renders never update the Viewer node) and is read back
with bpy.data.images.load. The render happens in a copy of the scene, so the file is untouched.
Only Blender's bundled Python is used (no numpy).
"""
import argparse
import json
import math
import os
import shutil
import struct
import sys
import tempfile
import time
from array import array

import bpy

#: Z values at or beyond this are "no geometry" (Cycles writes 1e10 for the background).
BACKGROUND_Z = 1e9


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
    return p.parse_args(argv)


def has_cycles():
    try:
        import addon_utils
        addon_utils.enable("cycles", default_set=False)
    except Exception:  # noqa: BLE001 - any failure means no Cycles
        pass
    return "cycles" in bpy.context.preferences.addons.keys() or hasattr(bpy.types, "CyclesRenderSettings")


def setup_engine(tmp, layer, engine):
    use_cycles = engine == "cycles" or (engine == "auto" and has_cycles())
    if engine == "cycles" and not has_cycles():
        fail("Cycles is not available in this Blender")
    if use_cycles:
        tmp.render.engine = "CYCLES"
        c = tmp.cycles
        c.device = "CPU"
        c.samples = 1
        for attr, value in (("use_denoising", False), ("use_adaptive_sampling", False), ("pixel_filter_type", "BOX"),
                            ("filter_width", 0.01), ("max_bounces", 0), ("use_auto_tile", False)):
            if hasattr(c, attr):
                setattr(c, attr, value)
    else:
        tmp.render.engine = "BLENDER_WORKBENCH"
        tmp.display.render_aa = "OFF"
    layer.use_pass_z = True
    return tmp.render.engine


def setup_compositor(tmp, layer, out_dir):
    tmp.use_nodes = True
    tmp.render.use_compositing = True
    tree = tmp.node_tree
    for node in list(tree.nodes):
        tree.nodes.remove(node)
    rl = tree.nodes.new("CompositorNodeRLayers")
    rl.scene = tmp
    rl.layer = layer.name
    comp = tree.nodes.new("CompositorNodeComposite")
    tree.links.new(rl.outputs["Image"], comp.inputs[0])
    fo = tree.nodes.new("CompositorNodeOutputFile")
    fo.base_path = out_dir
    fo.format.file_format = "OPEN_EXR"
    fo.format.color_depth = "32"
    fo.format.exr_codec = "NONE"
    fo.format.color_mode = "RGB"
    fo.file_slots.clear()
    fo.file_slots.new("depth")
    if "Depth" not in rl.outputs or not rl.outputs["Depth"].enabled:
        fail("the %s render has no Depth (Z) pass" % tmp.render.engine)
    tree.links.new(rl.outputs["Depth"], fo.inputs["depth"])


def read_depth(path, width, height):
    img = bpy.data.images.load(path, check_existing=False)
    try:
        img.colorspace_settings.name = "Non-Color"
        w, h = img.size
        if (w, h) != (width, height):
            fail("the depth pass is %dx%d, expected %dx%d" % (w, h, width, height))
        ch = img.channels
        px = array("f", bytes(4 * w * h * ch))
        img.pixels.foreach_get(px)
    finally:
        bpy.data.images.remove(img)
    out = array("f", bytes(4 * w * h))
    inf = float("inf")
    for y in range(h):
        src = (h - 1 - y) * w  # Blender rows are bottom-up
        dst = y * w
        for x in range(w):
            z = px[(src + x) * ch]
            out[dst + x] = z if (z == z and 0.0 < z < BACKGROUND_Z) else inf
    return out


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
    work = tempfile.mkdtemp(prefix="depthcast-render-")
    tmp = scene.copy()
    tmp.name = "depthcast batch depth"
    views = []
    try:
        r = tmp.render
        if args.resolution:
            r.resolution_x, r.resolution_y = args.resolution
            r.resolution_percentage = 100
        r.use_border = False
        r.use_motion_blur = False
        r.use_sequencer = False
        r.use_single_layer = True
        scale = r.resolution_percentage / 100.0
        width, height = max(1, int(r.resolution_x * scale)), max(1, int(r.resolution_y * scale))
        layer = tmp.view_layers[bpy.context.view_layer.name] if bpy.context.view_layer.name in tmp.view_layers else tmp.view_layers[0]
        for other in tmp.view_layers:
            other.use = other == layer
        engine = setup_engine(tmp, layer, args.engine)
        for cam in cameras:
            for frame in frames:
                t0 = time.perf_counter()
                tmp.camera = cam
                # Objects are shared with the original scene, whose frame drives their animation;
                # the file is never saved, so moving its frame is harmless.
                scene.frame_set(frame)
                tmp.frame_set(frame)
                pass_dir = os.path.join(work, "view-%d" % len(views))
                setup_compositor(tmp, layer, pass_dir)
                try:
                    result = bpy.ops.render.render(write_still=False, scene=tmp.name, layer=layer.name)
                except RuntimeError as err:
                    fail("render failed (%s): %s" % (engine, str(err).strip()))
                if "CANCELLED" in result:
                    fail("Blender refused to render")
                names = sorted(n for n in os.listdir(pass_dir) if n.startswith("depth")) if os.path.isdir(pass_dir) else []
                if not names:
                    fail("the render wrote no depth pass")
                values = read_depth(os.path.join(pass_dir, names[0]), width, height)
                finite = [v for v in values if v != math.inf]
                file = "view-%d.npy" % len(views)
                write_npy(os.path.join(args.out, file), values, width, height)
                views.append({
                    "camera": cam.name, "frame": frame, "file": file, "width": width, "height": height,
                    "near": cam.data.clip_start, "far": cam.data.clip_end,
                    "min": min(finite) if finite else None, "max": max(finite) if finite else None,
                    "background": 1.0 - len(finite) / float(width * height),
                    "seconds": round(time.perf_counter() - t0, 4),
                })
    finally:
        bpy.data.scenes.remove(tmp)
        shutil.rmtree(work, ignore_errors=True)
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
