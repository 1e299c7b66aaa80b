"""Result and preview pixels between the wire and Blender.

Raw ``rgb8`` previews arrive as interleaved R, G, B bytes, rows top-down; Blender's
``Image.pixels`` wants flat RGBA floats in [0, 1], rows bottom-up. Converting them here costs no
temp file and no image decoder on Blender's main thread. numpy, which Blender's own builds ship,
makes it a few vectorised copies; without it (Debian's blender has none) a 64x64 latent-size
preview still takes about a millisecond in plain Python.
"""
import array

try:
    import numpy
except ImportError:  # plain Python below
    numpy = None

_UNIT_OF_BYTE = [i / 255.0 for i in range(256)]


def rgb8_to_pixels(data, width, height, use_numpy=True):
    """``width*height*3`` RGB bytes, rows top-down, as Blender's bottom-up RGBA floats (alpha 1):
    a float32 numpy array when numpy is there (and ``use_numpy``), else a float32 ``array.array``."""
    n = width * height
    if width <= 0 or height <= 0 or len(data) != 3 * n:
        raise ValueError("rgb8 preview of %d bytes does not match %dx%d (expected %d)" % (len(data), width, height, 3 * n))
    if numpy is not None and use_numpy:
        rgb = numpy.frombuffer(bytes(data), dtype=numpy.uint8).reshape(height, width, 3)[::-1]
        px = numpy.ones((height, width, 4), dtype=numpy.float32)
        # The same table as below, so both paths give the same floats.
        px[:, :, :3] = numpy.asarray(_UNIT_OF_BYTE, dtype=numpy.float32)[rgb]
        return px.reshape(-1)
    values = array.array("f", map(_UNIT_OF_BYTE.__getitem__, data))
    px = array.array("f", bytes(16 * n))
    px[3::4] = array.array("f", [1.0]) * n
    row_in = 3 * width
    row_out = 4 * width
    for y in range(height):
        src = values[y * row_in:(y + 1) * row_in]
        dst = (height - 1 - y) * row_out
        for c in range(3):
            px[dst + c:dst + row_out:4] = src[c::3]
    return px
