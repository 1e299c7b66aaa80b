"""Where results go: the "depthcast Result" Image datablock, Image Editors, the camera's
background image, and files next to the .blend (PNG as received + JSON sidecar)."""
import os
import re
import tempfile

import bpy

from .core.files import write_atomic

RESULT_IMAGE = "depthcast Result"
RESULT_DIR = "depthcast"


def decode_image(data, suffix):
    """Decodes PNG/JPEG bytes with Blender's own loader (through a temp file; no numpy, no PIL).
    Returns ``(width, height, pixels)`` with pixels as flat bottom-up RGBA floats."""
    from .core.depth import float_array

    fd, path = tempfile.mkstemp(prefix="depthcast-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        img = bpy.data.images.load(path, check_existing=False)
        try:
            w, h = img.size
            if w == 0 or h == 0:
                raise ValueError("could not decode the %s image from the service" % suffix)
            px = float_array(bytes(4 * w * h * 4))
            if img.channels == 4:
                img.pixels.foreach_get(px)
            else:
                tmp = float_array(bytes(4 * w * h * img.channels))
                img.pixels.foreach_get(tmp)
                for c in range(3):
                    px[c::4] = tmp[min(c, img.channels - 1)::img.channels]
                px[3::4] = float_array([1.0]) * (w * h)
            return w, h, px
        finally:
            bpy.data.images.remove(img)
    finally:
        try:
            os.remove(path)
        except OSError:
            pass


def result_image(width, height, name=RESULT_IMAGE):
    """The result Image datablock, created or resized to ``width`` x ``height``."""
    img = bpy.data.images.get(name)
    if img is not None and img.source != "GENERATED":
        bpy.data.images.remove(img)
        img = None
    if img is None:
        img = bpy.data.images.new(name, width, height, alpha=True, float_buffer=False)
        img.use_fake_user = True
    elif tuple(img.size) != (width, height):
        img.scale(width, height)
    return img


def set_result_pixels(data, suffix, name=RESULT_IMAGE):
    """Writes an encoded image into the result datablock and returns it."""
    w, h, px = decode_image(data, suffix)
    return _show_pixels(w, h, px, name)


def set_result_rgb8(data, width, height, name=RESULT_IMAGE):
    """Writes a raw ``rgb8`` preview (rows top-down) into the result datablock and returns it."""
    from .core.pixels import rgb8_to_pixels

    return _show_pixels(width, height, rgb8_to_pixels(data, width, height), name)


def set_result_float_pixels(px, width, height, name=RESULT_IMAGE):
    """Writes decoded pixels (flat bottom-up RGBA floats) into the result datablock."""
    return _show_pixels(width, height, px, name)


def set_result_pixels_if_size(px, width, height, name=RESULT_IMAGE):
    """Writes a preview into the result datablock only when it already has that size (a smaller
    preview would resize it back and forth on every step). Returns the image or None."""
    img = bpy.data.images.get(name)
    if img is not None and img.source == "GENERATED" and tuple(img.size) != (width, height):
        return None
    return _show_pixels(width, height, px, name)


def _show_pixels(w, h, px, name):
    img = result_image(w, h, name)
    img.pixels.foreach_set(px)
    img.update()
    if hasattr(img, "update_tag"):
        img.update_tag()
    return img


def show_in_image_editors(img):
    """Shows ``img`` in every open Image Editor that is not showing something else the user
    chose (render results and our own image are replaced; other images are left alone).
    Returns the number of editors updated."""
    n = 0
    wm = bpy.context.window_manager
    for window in getattr(wm, "windows", []):
        for area in window.screen.areas:
            if area.type != "IMAGE_EDITOR":
                continue
            space = area.spaces.active
            current = space.image
            if current is None or current == img or current.type in ("RENDER_RESULT", "COMPOSITING"):
                space.image = img
                area.tag_redraw()
                n += 1
    return n


def open_image_editor(img):
    """Shows ``img`` in an Image Editor, opening a new window with one if none is open."""
    if show_in_image_editors(img):
        return True
    wm = bpy.context.window_manager
    if not getattr(wm, "windows", None):
        return False
    try:
        bpy.ops.wm.window_new()
    except RuntimeError:
        return False
    window = wm.windows[-1]
    area = window.screen.areas[0]
    area.type = "IMAGE_EDITOR"
    area.spaces.active.image = img
    return True


def set_camera_background(camera_obj, img, enabled):
    """Shows (or hides) ``img`` as the camera's background image in the viewport."""
    if camera_obj is None or camera_obj.type != "CAMERA":
        return
    cam = camera_obj.data
    entry = None
    for bg in cam.background_images:
        if bg.image == img:
            entry = bg
            break
    if not enabled:
        if entry is not None and entry.show_background_image:
            entry.show_background_image = False
        return
    if entry is None:
        entry = cam.background_images.new()
        entry.image = img
        entry.alpha = 1.0
        entry.source = "IMAGE"
        entry.display_depth = "FRONT"
        entry.frame_method = "STRETCH"
    # STRETCH: the image covers exactly the camera frame, as captured (FIT would letterbox
    # it when its size was rounded to multiples of 8).
    if entry.frame_method != "STRETCH":
        entry.frame_method = "STRETCH"
    # Only write what changed: every RNA write tags the camera for a depsgraph update.
    if not entry.show_background_image:
        entry.show_background_image = True
    if not cam.show_background_images:
        cam.show_background_images = True


def safe_name(text, default="result"):
    text = re.sub(r"[^A-Za-z0-9_.-]+", "_", text or "").strip("._")
    return text[:80] or default


def result_folder():
    """``<folder of the .blend>/depthcast``; None when the .blend was never saved."""
    if not bpy.data.filepath:
        return None
    return os.path.join(os.path.dirname(bpy.path.abspath(bpy.data.filepath)), RESULT_DIR)


def write_result(folder, basename, png, sidecar_text):
    """Writes ``basename.png`` (the service's PNG, untouched) and ``basename.json``. Returns the
    PNG path. Files are written to a temp name first so a crash never leaves half a PNG."""
    os.makedirs(folder, exist_ok=True)
    png_path = os.path.join(folder, basename + ".png")
    json_path = os.path.join(folder, basename + ".json")
    write_atomic(png_path, png)
    write_atomic(json_path, sidecar_text.encode("utf-8"))
    return png_path


def frame_output_path(scene, frame):
    """Where "Render animation" writes ``frame``: the scene's output path with the frame number
    (Blender's own #### rules), always ``.png``."""
    path = scene.render.frame_path(frame=frame)
    root, ext = os.path.splitext(path)
    return root + ".png"
