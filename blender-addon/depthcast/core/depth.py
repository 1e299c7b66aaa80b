"""Depth buffers between Blender and the wire.

Blender hands out pixel buffers bottom-up (row 0 = bottom) as flat RGBA floats; the protocol
wants rows top-down (row 0 = top) as little-endian float32 (``dtype 'f32'``) of linear
camera-space Z (``kind 'zdepth'``, scene units, far = large). The background (no geometry) is
sent as a value >= far (``far`` by default, or +inf). Turning Z into the model's near-is-high
conditioning is the service's job, not ours.
"""
import array
import math
import sys

try:  # Blender's builds ship numpy; plain Python is the fallback
    import numpy
except ImportError:  # pragma: no cover - depends on the Python
    numpy = None

INF = float("inf")

#: Render engines report the empty background as a huge depth (Cycles: 1e10).
BACKGROUND_THRESHOLD = 1.0e9


def float_array(values=()):
    """A float32 ``array.array``."""
    return array.array("f", values)


def channel_top_down(pixels, width, height, channels=4, channel=0):
    """Takes one channel out of a flat bottom-up pixel buffer (``channels`` floats per pixel, as
    ``Image.pixels`` gives) and returns it as a top-down float32 array of width*height."""
    if len(pixels) != width * height * channels:
        raise ValueError("pixel buffer holds %d values, expected %d (%dx%dx%d)"
                         % (len(pixels), width * height * channels, width, height, channels))
    if not isinstance(pixels, array.array) or pixels.typecode != "f":
        pixels = float_array(pixels)
    out = float_array(bytes(4 * width * height))
    stride = width * channels
    for row in range(height):
        src = (height - 1 - row) * stride + channel
        out[row * width:(row + 1) * width] = pixels[src:src + stride:channels]
    return out


def flip_rows(values, width, height):
    """Reverses the row order of a flat single-channel buffer (bottom-up <-> top-down)."""
    if len(values) != width * height:
        raise ValueError("buffer holds %d values, expected %dx%d" % (len(values), width, height))
    out = array.array(values.typecode if isinstance(values, array.array) else "f", bytes(0))
    for row in range(height - 1, -1, -1):
        out.extend(values[row * width:(row + 1) * width])
    return out


def is_background(z, threshold=BACKGROUND_THRESHOLD):
    return z != z or z >= threshold or z <= 0.0 or z == INF


def foreground_range(values, threshold=BACKGROUND_THRESHOLD):
    """``(min, max)`` of the finite, positive depths below ``threshold``; ``None`` if there are none."""
    fg = [v for v in values if 0.0 < v < threshold]
    if not fg:
        return None
    return min(fg), max(fg)


def resolve_near_far(mode, clip_start, clip_end, manual_near=None, manual_far=None, values=None):
    """Chooses the ``near``/``far`` sent with a frame.

    ``mode`` 'CAMERA': the camera's clip range. 'MANUAL': the given values. 'SCENE': the range of
    the captured depth itself (``values``), padded a little, falling back to the clip range when
    nothing is in view. Always returns ``0 < near < far`` with finite values.
    """
    if mode == "MANUAL":
        near, far = float(manual_near), float(manual_far)
    elif mode == "SCENE" and values is not None:
        rng = foreground_range(values)
        if rng is None:
            near, far = float(clip_start), float(clip_end)
        else:
            lo, hi = rng
            pad = max((hi - lo) * 0.02, 1e-4)
            near, far = max(lo - pad, 1e-4), hi + pad
    else:
        near, far = float(clip_start), float(clip_end)
    if not (math.isfinite(near) and math.isfinite(far)):
        raise ValueError("depth near/far must be finite (got %r, %r)" % (near, far))
    if near <= 0:
        near = 1e-4
    if far <= near:
        raise ValueError("depth far (%g) must be greater than near (%g)" % (far, near))
    return near, far


def clean_background(values, far, background="far", threshold=BACKGROUND_THRESHOLD, use_numpy=True):
    """Returns a float32 array where empty pixels (NaN, <= 0, >= ``threshold``) and anything past
    ``far`` become ``far`` (``background='far'``) or +inf (``background='inf'``). Depths in front
    of ``near`` are kept as they are: the service clamps. With numpy (and ``use_numpy``) large
    buffers take numpy's path: a capture converts on a worker thread, and a pure-Python loop over
    a megapixel held the interpreter lock for about a second, starving Blender's UI of it."""
    fill = INF if background == "inf" else float(far)
    limit = min(float(far), threshold)
    if numpy is not None and use_numpy and len(values) > 4096:
        src = values if isinstance(values, array.array) and values.typecode == "f" else float_array(values)
        a = numpy.frombuffer(src, dtype=numpy.float32).astype(numpy.float64)
        out = float_array()
        out.frombytes(numpy.where((a > 0.0) & (a < limit), a, fill).astype(numpy.float32).tobytes())
        return out
    return float_array([v if 0.0 < v < limit else fill for v in values])


def f32le_bytes(values):
    """Little-endian float32 bytes of ``values``."""
    arr = values if isinstance(values, array.array) and values.typecode == "f" else float_array(values)
    if sys.byteorder != "little":
        arr = array.array("f", arr)
        arr.byteswap()
    return arr.tobytes()


def u16le_bytes(values):
    """Little-endian uint16 bytes of ``values``."""
    arr = values if isinstance(values, array.array) and values.typecode == "H" else array.array("H", values)
    if sys.byteorder != "little":
        arr = array.array("H", arr)
        arr.byteswap()
    return arr.tobytes()


def f32le_to_array(data):
    arr = array.array("f")
    arr.frombytes(bytes(data))
    if sys.byteorder != "little":
        arr.byteswap()
    return arr


def linearize_depth_buffer(values, projection, background="far", far=None):
    """Converts a GPU depth buffer (window depth in [0, 1], as ``GPUFrameBuffer.read_depth``
    gives) to linear camera Z with the view's 4x4 ``projection`` matrix (rows; Blender's
    ``region_3d.window_matrix``). Works for perspective and orthographic views.

    clip = P * (x, y, z, 1); ndc = clip.z / clip.w = 2d - 1; solved for view-space z (negative
    in front of the camera): z = (P23 - ndc*P33) / (ndc*P32 - P22). Pixels at d >= 1 (cleared,
    nothing drawn) become ``far`` (or +inf).
    """
    p22, p23 = float(projection[2][2]), float(projection[2][3])
    p32, p33 = float(projection[3][2]), float(projection[3][3])
    if far is None:
        far = far_from_projection(projection)
    fill = INF if background == "inf" else float(far)
    out = float_array(bytes(4 * len(values)))
    for i, d in enumerate(values):
        if d >= 1.0 or d != d:
            out[i] = fill
            continue
        ndc = 2.0 * d - 1.0
        denom = ndc * p32 - p22
        z = -(p23 - ndc * p33) / denom if denom != 0.0 else fill
        out[i] = z if z < far else fill
    return out


def near_from_projection(projection):
    """View-space near distance of a projection matrix (rows)."""
    return _plane_distance(projection, -1.0)


def far_from_projection(projection):
    """View-space far distance of a projection matrix (rows)."""
    return _plane_distance(projection, 1.0)


def _plane_distance(projection, ndc):
    p22, p23 = float(projection[2][2]), float(projection[2][3])
    p32, p33 = float(projection[3][2]), float(projection[3][3])
    return -(p23 - ndc * p33) / (ndc * p32 - p22)


def perspective_matrix(fov_y, aspect, near, far):
    """An OpenGL-style perspective projection (rows), as Blender builds them. For tests."""
    f = 1.0 / math.tan(fov_y / 2.0)
    return [
        [f / aspect, 0.0, 0.0, 0.0],
        [0.0, f, 0.0, 0.0],
        [0.0, 0.0, (far + near) / (near - far), 2.0 * far * near / (near - far)],
        [0.0, 0.0, -1.0, 0.0],
    ]


def orthographic_matrix(half_width, half_height, near, far):
    """An OpenGL-style orthographic projection (rows). For tests."""
    return [
        [1.0 / half_width, 0.0, 0.0, 0.0],
        [0.0, 1.0 / half_height, 0.0, 0.0],
        [0.0, 0.0, -2.0 / (far - near), -(far + near) / (far - near)],
        [0.0, 0.0, 0.0, 1.0],
    ]


def resample_nearest(values, width, height, new_width, new_height):
    """Nearest-neighbour resize of a top-down single-channel buffer (depth must never be
    blended across edges, so no filtering)."""
    if (width, height) == (new_width, new_height):
        return values
    typecode = values.typecode if isinstance(values, array.array) else "f"
    out = array.array(typecode)
    xs = [min(width - 1, int((x + 0.5) * width / new_width)) for x in range(new_width)]
    for y in range(new_height):
        sy = min(height - 1, int((y + 0.5) * height / new_height))
        row = values[sy * width:(sy + 1) * width]
        out.extend(row[x] for x in xs)
    return out


def fit_size(width, height, max_side, multiple=8):
    """Scales ``width`` x ``height`` to fit ``max_side`` (keeping aspect), rounded down to
    ``multiple`` (at least ``multiple``)."""
    scale = min(1.0, float(max_side) / max(width, height))
    w = max(multiple, int(width * scale) // multiple * multiple)
    h = max(multiple, int(height * scale) // multiple * multiple)
    return w, h


def fit_pixels(width, height, max_pixels):
    """``width`` x ``height`` scaled down (keeping aspect) to at most ``max_pixels`` pixels;
    unchanged when already within (or ``max_pixels`` is 0)."""
    if not max_pixels or width * height <= max_pixels:
        return width, height
    scale = (max_pixels / float(width * height)) ** 0.5
    return max(8, int(width * scale)), max(8, int(height * scale))


def crop(values, width, height, x0, y0, x1, y1):
    """Crops a top-down single-channel buffer to columns [x0, x1) and rows [y0, y1)."""
    typecode = values.typecode if isinstance(values, array.array) else "f"
    out = array.array(typecode)
    for y in range(y0, y1):
        out.extend(values[y * width + x0:y * width + x1])
    return out


class DepthImage:
    """A linear Z depth image ready for the wire: top-down float32 of ``width`` x ``height``."""

    __slots__ = ("values", "width", "height", "near", "far", "kind")

    def __init__(self, values, width, height, near, far, kind="zdepth"):
        if len(values) != width * height:
            raise ValueError("depth holds %d values, expected %dx%d" % (len(values), width, height))
        if not (0 < near < far) or not math.isfinite(near) or not math.isfinite(far):
            raise ValueError("depth needs 0 < near < far, both finite (got %r, %r)" % (near, far))
        self.values = values
        self.width = width
        self.height = height
        self.near = float(near)
        self.far = float(far)
        self.kind = kind

    def to_bytes(self):
        return f32le_bytes(self.values)

    def at(self, x, y):
        """Depth at column ``x``, row ``y`` (row 0 = top)."""
        return self.values[y * self.width + x]
