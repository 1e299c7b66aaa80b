"""Live results drawn in the 3D View, over exactly the view that was captured.

Every live frame remembers where its image lies in the world: the four corners of the captured
view (the whole 3D View region, or the camera frame in camera view) on a plane through the
view's centre. A ``POST_PIXEL`` draw handler projects those corners with the view as it is now
and draws the result texture there, perspective-correct (clip-space positions go straight to
the GPU). While the view is unchanged the quad covers the captured region (or camera frame)
pixel for pixel; while it moves, the last result moves with the scene instead of sticking to
the screen. Opacity and a left/right split (as on the preview page) come from the scene's
settings. Nothing here touches the network or saved data.
"""
import gpu
from gpu_extras.batch import batch_for_shader
from mathutils import Matrix, Vector

from .core.costs import timed

_VERT = """
in vec4 pos;
in vec2 uv;
out vec2 uv_interp;
void main() { uv_interp = uv; gl_Position = pos; }
"""
_FRAG = """
in vec2 uv_interp;
out vec4 fragColor;
uniform sampler2D image;
uniform float opacity;
uniform float split;
uniform bool decode_srgb;
vec3 display_to_linear(vec3 c) { return pow(c, vec3(2.2)); }
void main() {
  if (uv_interp.x > split) discard;
  vec3 c = texture(image, uv_interp).rgb;
  // The result holds display values; the 3D View's overlay layer reaches the screen through a
  // 2.2 power encode (measured in Blender 3.4: a piecewise-sRGB decode left darks 8 levels
  // bright), so decode with its inverse and the screen shows the result's values.
  if (decode_srgb) c = display_to_linear(c);
  fragColor = vec4(c, opacity);
}
"""


#: Whether the 3D View's POST_PIXEL framebuffer is an sRGB target (Blender 2.90 and later).
SRGB_TARGET = True


class _Shown:
    def __init__(self):
        self.texture = None
        self.size = (0, 0)
        self.view = None
        self.preview = False
        self.draws = 0


_shown = _Shown()
_shader = [None]
_handle = [None]


def _get_shader():
    if _shader[0] is None:
        _shader[0] = gpu.types.GPUShader(_VERT, _FRAG)
    return _shader[0]


def prepare():
    """Compiles the shader (needs a GPU context: not in background mode)."""
    import bpy

    if not bpy.app.background:
        _get_shader()


def view_info(area, view_matrix, projection_matrix, center, camera=False):
    """Where a frame captured with these matrices lies in the world: its corners (bottom-left,
    bottom-right, top-right, top-left of the image) on the plane through ``center`` facing the
    viewer, in world space. Kept with the job; :func:`show` draws its result there."""
    pv = Matrix(projection_matrix) @ Matrix(view_matrix)
    c = pv @ Vector((center[0], center[1], center[2], 1.0))
    z = c.z / c.w if abs(c.w) > 1e-12 else 0.0
    z = min(max(z, -0.999999), 0.999999)
    inv = pv.inverted()
    corners = []
    for x, y in ((-1.0, -1.0), (1.0, -1.0), (1.0, 1.0), (-1.0, 1.0)):
        p = inv @ Vector((x, y, z, 1.0))
        corners.append(tuple(p[i] / p.w for i in range(3)))
    return {"area": area.as_pointer() if area is not None else 0, "corners": corners, "camera": camera}


@timed("overlay upload")
def show(px, width, height, view, preview=False):
    """Shows decoded pixels (flat bottom-up RGBA floats, borrowed: copied into a texture here)
    at ``view`` (from :func:`view_info`). Main thread."""
    if view is None:
        return
    buf = gpu.types.Buffer("FLOAT", width * height * 4, px)
    _shown.texture = gpu.types.GPUTexture((width, height), format="RGBA32F", data=buf)
    _shown.size = (width, height)
    _shown.view = view
    _shown.preview = preview
    _tag_redraw()


def clear():
    _shown.texture = None
    _shown.view = None
    _shown.size = (0, 0)
    _tag_redraw()


def shown():
    """(width, height, view, preview, draws) of what is shown now; view None when nothing."""
    return _shown.size[0], _shown.size[1], _shown.view, _shown.preview, _shown.draws


def _tag_redraw():
    import bpy

    for window in getattr(bpy.context.window_manager, "windows", []):
        for area in window.screen.areas:
            if area.type == "VIEW_3D":
                area.tag_redraw()


@timed("overlay draw")
def _draw(live_running):
    import bpy

    if _shown.texture is None or _shown.view is None or not live_running():
        return
    ctx = bpy.context
    area, rv3d, scene = ctx.area, ctx.region_data, ctx.scene
    if area is None or rv3d is None or scene is None or not hasattr(scene, "depthcast"):
        return
    s = scene.depthcast
    view = _shown.view
    if not s.overlay or (view["area"] and area.as_pointer() != view["area"]):
        return
    pv = rv3d.window_matrix @ rv3d.view_matrix
    clip = []
    for corner in view["corners"]:
        p = pv @ Vector((corner[0], corner[1], corner[2], 1.0))
        if p.w <= 1e-6:
            return  # the captured view is behind the viewer now
        clip.append((p.x, p.y, p.z * 0.0, p.w))  # z 0: never clipped by near/far
    shader = _get_shader()
    batch = batch_for_shader(shader, "TRIS", {"pos": clip, "uv": ((0, 0), (1, 0), (1, 1), (0, 1))},
                             indices=((0, 1, 2), (0, 2, 3)))
    gpu.state.blend_set("ALPHA")
    gpu.state.depth_test_set("NONE")
    shader.bind()
    shader.uniform_sampler("image", _shown.texture)
    shader.uniform_float("opacity", float(s.overlay_opacity))
    shader.uniform_bool("decode_srgb", [SRGB_TARGET])
    shader.uniform_float("split", float(s.overlay_split) if s.overlay_split < 1.0 else 2.0)
    batch.draw(shader)
    gpu.state.blend_set("NONE")
    _shown.draws += 1


def register(live_running):
    """``live_running()``: whether live mode runs (viewport.py passes it: it imports this module)."""
    import bpy

    if _handle[0] is None:
        _handle[0] = bpy.types.SpaceView3D.draw_handler_add(_draw, (live_running,), "WINDOW", "POST_PIXEL")


def unregister():
    import bpy

    if _handle[0] is not None:
        bpy.types.SpaceView3D.draw_handler_remove(_handle[0], "WINDOW")
        _handle[0] = None
    _shown.texture = None
    _shown.view = None
    _shader[0] = None
