"""Result and preview pixels between the wire and Blender.

Raw ``rgb8`` previews (and live results) arrive as interleaved R, G, B bytes, rows top-down; Blender's
``Image.pixels`` wants flat RGBA floats in [0, 1], rows bottom-up. Converting them here costs no
temp file and no image decoder on Blender's main thread. numpy, which Blender's own builds ship,
makes it a few vectorised copies; without it (Debian's blender has none) a 64x64 latent-size
preview still takes about a millisecond in plain Python.
"""
import array
import struct
import zlib

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
    px = array.array("f", bytes(16 * n))
    px[3::4] = array.array("f", [1.0]) * n
    row_in = 3 * width
    row_out = 4 * width
    for y in range(height):
        # Row by row: one map() over the whole buffer runs in C without a bytecode boundary, so
        # it kept the interpreter lock from Blender's main thread for all of it (~50 ms at 512²).
        src = array.array("f", map(_UNIT_OF_BYTE.__getitem__, data[y * row_in:(y + 1) * row_in]))
        dst = (height - 1 - y) * row_out
        for c in range(3):
            px[dst + c:dst + row_out:4] = src[c::3]
    return px


def _chunk(kind, data):
    body = kind + data
    return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def rgb8_to_png(data, width, height, text=None, level=6):
    """``width*height*3`` RGB bytes, rows top-down, as PNG file bytes with ``text`` (keyword ->
    text) in tEXt chunks after IHDR, as the service writes them. Live results arrive raw; this
    is what "Save result" writes for them, so a live image is never lost for want of a PNG."""
    n = width * height
    if width <= 0 or height <= 0 or len(data) != 3 * n:
        raise ValueError("rgb8 image of %d bytes does not match %dx%d (expected %d)" % (len(data), width, height, 3 * n))
    row = 3 * width
    data = bytes(data)
    # Filter type 0 (none) on every scanline.
    scanlines = b"".join(b"\x00" + data[y * row:(y + 1) * row] for y in range(height))
    parts = [b"\x89PNG\r\n\x1a\n", _chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))]
    for keyword, value in (text or {}).items():
        parts.append(_chunk(b"tEXt", keyword.encode("latin-1") + b"\x00" + value.encode("latin-1", "replace")))
    parts.append(_chunk(b"IDAT", zlib.compress(scanlines, level)))
    parts.append(_chunk(b"IEND", b""))
    return b"".join(parts)
