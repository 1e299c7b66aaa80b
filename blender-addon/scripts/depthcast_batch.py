"""Headless batch: the depth of every chosen camera x frame of a .blend, rendered by the add-on's
capture (depthcast/capture.py), to one of two outputs:

    # images from a depthcast service (batch_service.py)
    blender -b scene.blend --python blender-addon/scripts/depthcast_batch.py -- \
        --server ws://127.0.0.1:7860/v1/ws [--token T] [--prompt TEXT] [--consistency consistent] ... --out DIR
    # depth views as .npy + render.json for `depthcast batch` (batch_depth_files.py)
    blender -b scene.blend --python blender-addon/scripts/depthcast_batch.py -- --depth-files [--vector] --out DIR

Views, for both: [--scene NAME] [--cameras all|NAME,...] or [--camera NAME ...] (exact names, as
many as wanted), [--frames 5|1-10|1-20:5|1,3,7-9|all] (default: the current frame),
[--resolution W H] [--engine auto|cycles|workbench]. The .blend is never saved.

Motion (docs/batch.md, "Animation without flicker"): with --server and several frames, each
camera's frames are a sequence: every frame goes with Cycles' Vector pass as its motion to the
frame before, results carry the pair's warp score, and batch.json has per camera every pair, the
mean and the worst. With --depth-files, --vector writes that motion next to each view.

Exits 0 when every view was done, 1 when any failed (or the service is unreachable), 2 on bad
arguments. Errors are lines on stderr starting "depthcast batch: ".
Needs only the files of this repository: the add-on does not have to be installed.
"""
import argparse
import os
import sys

import bpy

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.normpath(os.path.join(HERE, "..")))  # the `depthcast` add-on package
sys.path.insert(0, HERE)

import batch_depth_files  # noqa: E402
import batch_service  # noqa: E402
from depthcast import capture  # noqa: E402
from depthcast.core.session import normalize_url  # noqa: E402

ENGINES = {"auto": "AUTO", "cycles": "CYCLES", "workbench": "WORKBENCH"}


def report(message):
    print("depthcast batch: %s" % message, file=sys.stderr, flush=True)


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


def pick_cameras(names, spec, scene):
    """``names``: exact camera names (--camera); ``spec``: 'all' or 'A,B' (--cameras); neither:
    the scene camera."""
    cams = sorted((o for o in scene.objects if o.type == "CAMERA"), key=lambda o: o.name)
    known = ", ".join(c.name for c in cams) or "none"
    if names and spec:
        raise ValueError("--camera and --cameras do not mix: use one")
    if spec == "all":
        if not cams:
            raise ValueError("scene %r has no cameras" % scene.name)
        return cams
    if spec:
        names = [n.strip() for n in spec.split(",") if n.strip()]
    if not names:
        if scene.camera is None:
            raise ValueError("scene %r has no active camera: name the cameras to render" % scene.name)
        return [scene.camera]
    out = []
    for name in names:
        obj = scene.objects.get(name)
        if obj is None:
            raise ValueError("camera %r is not in scene %r (cameras: %s)" % (name, scene.name, known))
        if obj.type != "CAMERA":
            raise ValueError("%r is not a camera (cameras: %s)" % (name, known))
        out.append(obj)
    return out


def parse_args(argv):
    p = argparse.ArgumentParser(prog="depthcast_batch.py", description="Render depth per camera and frame, and "
                                "generate images with a depthcast service or write the depth as files.")
    output = p.add_mutually_exclusive_group(required=True)
    output.add_argument("--server", help="ws://host:port/v1/ws of the service: generate images")
    output.add_argument("--depth-files", action="store_true",
                        help="write view-<i>.npy + render.json (for `depthcast batch`) instead")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--scene", default="", help="scene name (default: the active scene)")
    p.add_argument("--cameras", default="", help="'all' or comma-separated camera names (default: the scene camera)")
    p.add_argument("--camera", action="append", default=[], help="one exact camera name; repeat for more")
    p.add_argument("--frames", default="", help="'1-10', '1,5,9', '1-20:5' or 'all' (default: the current frame)")
    p.add_argument("--resolution", nargs=2, type=int, metavar=("W", "H"), help="render size (default: the scene's)")
    p.add_argument("--engine", choices=sorted(ENGINES), default="auto")
    p.add_argument("--verbose-render", action="store_true", help="keep Blender's per-tile render progress lines")
    vector = p.add_argument_group("--depth-files only").add_argument(
        "--vector", action="store_true", help="also write each view's motion to the frame before (Cycles' Vector pass)")
    service_only = batch_service.add_arguments(p.add_argument_group("--server only"))
    args = p.parse_args(argv)
    if args.depth_files:
        for action in service_only:
            if getattr(args, action.dest) != action.default:
                p.error("%s needs --server (--depth-files writes depth only)" % action.option_strings[0])
    elif args.vector:
        p.error("%s needs --depth-files (with --server, several frames send their motion anyway)" % vector.option_strings[0])
    return args


def main(argv):
    args = parse_args(argv)
    scene = bpy.data.scenes.get(args.scene) if args.scene else bpy.context.scene
    if scene is None:
        report("no scene named %r" % args.scene)
        return 2
    try:
        cameras = pick_cameras(args.camera, args.cameras, scene)
        frames = parse_frames(args.frames, scene)
        url = normalize_url(args.server) if args.server else ""
    except ValueError as err:
        report(err)
        return 2
    if args.resolution:
        # The .blend is never saved, so its render settings can be changed for this run.
        scene.render.resolution_x, scene.render.resolution_y = args.resolution
        scene.render.resolution_percentage = 100
    out_dir = os.path.abspath(bpy.path.abspath(args.out))
    os.makedirs(out_dir, exist_ok=True)
    capture.quiet_renders = not args.verbose_render
    views = [(cam, frame) for cam in cameras for frame in frames]

    def render(cam, frame, **options):
        cap = capture.capture_camera(scene, cam, frame=frame, engine=ENGINES[args.engine], **options)
        print("depthcast batch: %s frame %d: %dx%d depth in %.2f s (%s)" % (
            cam.name, frame, cap.width, cap.height, cap.timings.get("total", 0), cap.engine), flush=True)
        return cap

    if args.depth_files:
        try:
            return batch_depth_files.run(views, out_dir, render, with_vector=args.vector)
        except capture.CaptureError as err:
            report(err)
            return 1
    return batch_service.run(scene, views, url, args, out_dir, render, report)


if __name__ == "__main__":
    argv = sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse errors
        code = exc.code if isinstance(exc.code, int) else 2
    except Exception as err:  # noqa: BLE001 - anything else is one line for whoever runs the batch
        report("%s: %s" % (type(err).__name__, err))
        code = 1
    sys.exit(code)
