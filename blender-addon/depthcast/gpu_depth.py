"""The GPU depth pass of live mode's 3D View source: every visible mesh-like object drawn into a
``GPUOffScreen`` with the region's view and projection, with a flat shader whose colour encodes
the object's layout id, read back between redraws (:func:`read_depth_pass`), and converted off
the main thread (:func:`convert_gpu_pass`: window depth -> linear Z with the projection's clip
range, colours -> the layout index map). viewport.py decides when; this module draws and reads.
"""
import array
import collections

import bpy
import gpu
from gpu_extras.batch import batch_for_shader

from . import capture
from .core import depth as D
from .core.layout import LayoutEntry, build_layout

MESHABLE = {"MESH", "CURVE", "SURFACE", "META", "FONT"}


def uniform_color_shader():
    name = "3D_UNIFORM_COLOR" if bpy.app.version < (4, 0, 0) else "UNIFORM_COLOR"
    return gpu.shader.from_builtin(name)


class BatchCache:
    """GPU batches of evaluated meshes, rebuilt when their object's geometry changes."""

    def __init__(self, keep_offscreen=False):
        self._batches = {}
        self._offscreen = None
        self._offscreen_size = None
        # Live mode keeps its offscreen buffer between frames: creating one costs more than
        # the small depth pass itself under software GL.
        self.owns_offscreens = keep_offscreen

    def offscreen(self, width, height):
        if not self.owns_offscreens:
            return gpu.types.GPUOffScreen(width, height)
        if self._offscreen is None or self._offscreen_size != (width, height):
            self.free_offscreen()
            self._offscreen = gpu.types.GPUOffScreen(width, height)
            self._offscreen_size = (width, height)
        return self._offscreen

    def free_offscreen(self):
        if self._offscreen is not None:
            self._offscreen.free()
        self._offscreen = None
        self._offscreen_size = None

    def invalidate(self, name=None):
        if name is None:
            self._batches.clear()
        else:
            self._batches.pop(name, None)

    def get(self, obj_eval, shader):
        key = (obj_eval.original.name, obj_eval.data.name if obj_eval.data is not None else "")
        batch = self._batches.get(key)
        if batch is None:
            batch = _mesh_batch(obj_eval, shader)
            self._batches[key] = batch
        return batch


def _mesh_batch(obj_eval, shader):
    try:
        mesh = obj_eval.to_mesh()
    except RuntimeError:
        return None
    if mesh is None:
        return None
    try:
        mesh.calc_loop_triangles()
        nv, nt = len(mesh.vertices), len(mesh.loop_triangles)
        if not nv or not nt:
            return None
        co = array.array("f", bytes(12 * nv))
        mesh.vertices.foreach_get("co", co)
        tris = array.array("i", bytes(12 * nt))
        mesh.loop_triangles.foreach_get("vertices", tris)
        coords = list(zip(co[0::3], co[1::3], co[2::3]))
        indices = list(zip(tris[0::3], tris[1::3], tris[2::3]))
        return batch_for_shader(shader, "TRIS", {"pos": coords}, indices=indices)
    finally:
        obj_eval.to_mesh_clear()


def _floats(buf, n):
    """A float32 array from a gpu Buffer (buffer protocol when available)."""
    try:
        out = array.array("f")
        out.frombytes(memoryview(buf).cast("B"))
        if len(out) == n:
            return out
    except (TypeError, ValueError):
        pass
    flat = array.array("f")
    for row in buf.to_list():
        flat.extend(row)
    return flat


def _bytes(buf):
    try:
        return bytes(memoryview(buf).cast("B"))
    except (TypeError, ValueError):
        out = bytearray()
        for row in buf.to_list():
            for px in row:
                out.extend(px)
        return bytes(out)


#: Raw output of :func:`read_depth_pass`: bottom-up window depth and RGBA8 id colours (GPU module
#: Buffers, or arrays).
GpuPass = collections.namedtuple("GpuPass", "width height depth color projection ids")


def layout_ids(scene, view_layer):
    """Object name -> (LayoutEntry) for the objects a GPU pass may colour."""
    out = {}
    for i, obj in enumerate(capture.layout_candidates(scene, view_layer), start=1):
        if i > 65535:
            break
        out[obj.name] = LayoutEntry(i, obj.name, capture.object_prompt(obj), capture.object_weight(obj))
    return out


class DrawnPass:
    """A depth pass drawn into an offscreen buffer and not read back yet (see :func:`draw_depth_pass`)."""

    __slots__ = ("offscreen", "width", "height", "projection", "ids", "owned")

    def __init__(self, offscreen, width, height, projection, ids, owned):
        self.offscreen = offscreen
        self.width = width
        self.height = height
        self.projection = projection
        self.ids = ids
        self.owned = owned  # freed after the read-back (not a cache's kept buffer)


def draw_depth_pass(depsgraph, view_matrix, projection_matrix, width, height, ids=None, cache=None):
    """Draws every visible mesh-like object into an offscreen buffer (with ``ids`` {object name:
    LayoutEntry}, in colours that encode the object's id). Needs an active GPU context: a draw
    handler, or a RenderEngine with ``bl_use_gpu_context``. Returns a :class:`DrawnPass` for
    :func:`read_depth_pass`: live mode reads it back in a later redraw, when the GPU (software GL:
    its rasteriser threads) has finished, so the main thread does not wait for it."""
    shader = uniform_color_shader()
    cache = cache or BatchCache()
    offscreen = cache.offscreen(width, height)
    owned = not cache.owns_offscreens
    try:
        with offscreen.bind():
            fb = gpu.state.active_framebuffer_get()
            fb.clear(color=(0.0, 0.0, 0.0, 0.0), depth=1.0)
            gpu.state.depth_test_set("LESS_EQUAL")
            gpu.state.depth_mask_set(True)
            gpu.state.blend_set("NONE")
            gpu.state.face_culling_set("NONE")
            with gpu.matrix.push_pop(), gpu.matrix.push_pop_projection():
                gpu.matrix.load_matrix(view_matrix)
                gpu.matrix.load_projection_matrix(projection_matrix)
                shader.bind()
                for inst in depsgraph.object_instances:
                    obj = inst.object
                    if obj.type not in MESHABLE or not getattr(inst, "show_self", True):
                        continue
                    owner = inst.parent if inst.is_instance and inst.parent is not None else obj
                    if owner.original.hide_render:
                        continue
                    batch = cache.get(obj, shader)
                    if batch is None:
                        continue
                    entry = ids.get(owner.original.name) if ids else None
                    oid = entry.id if entry is not None else 0
                    shader.uniform_float("color", ((oid & 255) / 255.0, ((oid >> 8) & 255) / 255.0, 0.0, 1.0))
                    with gpu.matrix.push_pop():
                        gpu.matrix.multiply_matrix(inst.matrix_world.copy())
                        batch.draw(shader)
            gpu.state.depth_test_set("NONE")
            gpu.state.depth_mask_set(False)
    except Exception:
        if owned:
            offscreen.free()
        raise
    rows = [list(r) for r in projection_matrix]
    return DrawnPass(offscreen, width, height, rows, ids, owned)


def read_depth_pass(drawn):
    """Reads a drawn pass back: a :class:`GpuPass` holding the GPU module's Buffers as they are
    (bottom-up window depth floats, RGBA8 id colours); :func:`convert_gpu_pass` turns them into
    arrays, on a worker thread."""
    w, h = drawn.width, drawn.height
    try:
        with drawn.offscreen.bind():
            fb = gpu.state.active_framebuffer_get()
            depth = fb.read_depth(0, 0, w, h)
            color = fb.read_color(0, 0, w, h, 4, 0, "UBYTE") if drawn.ids else None
    finally:
        if drawn.owned:
            drawn.offscreen.free()
    return GpuPass(w, h, depth, color, drawn.projection, drawn.ids)


def gpu_depth_pass(depsgraph, view_matrix, projection_matrix, width, height, ids=None, cache=None):
    """:func:`draw_depth_pass` and :func:`read_depth_pass` at once (the read waits for the GPU)."""
    return read_depth_pass(draw_depth_pass(depsgraph, view_matrix, projection_matrix, width, height, ids, cache))


def convert_gpu_pass(gp, near_far="CAMERA", manual_near=0.1, manual_far=100.0, background="far"):
    """Bottom-up window depth -> top-down linear Z DepthImage, and the layout (or None).
    Pure Python: safe on a worker thread."""
    w, h = gp.width, gp.height
    window = D.flip_rows(_floats(gp.depth, w * h), w, h)
    clip_near = D.near_from_projection(gp.projection)
    clip_far = D.far_from_projection(gp.projection)
    z = D.linearize_depth_buffer(window, gp.projection, background="far", far=clip_far)
    offset = 0.0
    if clip_near <= 0.0:
        # Orthographic views clip symmetrically around the view origin: shift so that the
        # near plane sits just in front of the viewer (zdepth must be positive).
        offset = -clip_near + 1e-3
        z = D.float_array(v + offset for v in z)
        clip_near, clip_far = 1e-3, clip_far + offset
    near, far = D.resolve_near_far(near_far, clip_near, clip_far, manual_near, manual_far,
                                   values=[v for v in z if v < clip_far])
    values = D.clean_background(z, far, background=background)
    image = D.DepthImage(values, w, h, near, far)
    layout = None
    objects = []
    if gp.color is not None and gp.ids:
        c = _bytes(gp.color)
        ids_bottom_up = array.array("H", bytes(2 * w * h))
        for p in range(w * h):
            ids_bottom_up[p] = c[4 * p] | (c[4 * p + 1] << 8)
        top_down = D.flip_rows(ids_bottom_up, w, h)
        entries = {e.id: e for e in gp.ids.values()}
        index, objects = build_layout(top_down, w, h, entries)
        layout = (D.u16le_bytes(index), w, h, objects)
    return image, layout, objects
