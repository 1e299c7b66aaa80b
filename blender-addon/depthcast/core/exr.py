"""Reads one channel of an uncompressed scanline OpenEXR file, in plain Python.

Captures write their passes as 32-bit float EXR without compression (capture.py's File Output
node). Loading them through ``bpy.data.images`` must happen on Blender's main thread and took
~1 s at 1365x768 on a loaded machine; this reader runs on a worker thread instead. It reads
what that node writes (single part, scanline, no compression, FLOAT or HALF channels) and
refuses anything else with :class:`ExrError` (the caller then falls back to Blender's loader).
Rows come back top-down (EXR's y grows downwards), as float32 ``array.array``.
"""
import array
import struct
import sys

MAGIC = 20000630
_TYPE_SIZES = {0: 4, 1: 2, 2: 4}  # UINT, HALF, FLOAT


class ExrError(ValueError):
    """A file this reader does not handle (or not an EXR at all)."""


def _cstring(data, pos):
    end = data.index(b"\0", pos)
    return data[pos:end].decode("latin-1"), end + 1


def read_header(data):
    """Parses the header: (attributes {name: (type, raw bytes)}, offset just past it)."""
    if len(data) < 8 or struct.unpack_from("<i", data, 0)[0] != MAGIC:
        raise ExrError("not an OpenEXR file")
    version = struct.unpack_from("<I", data, 4)[0]
    if version & 0xFF != 2 or version & 0x1E00:  # tiled, long names, deep, multi-part
        raise ExrError("only single-part scanline EXR files are read (version field 0x%x)" % version)
    pos = 8
    attrs = {}
    while True:
        if pos >= len(data):
            raise ExrError("the header is cut short")
        if data[pos] == 0:
            return attrs, pos + 1
        name, pos = _cstring(data, pos)
        kind, pos = _cstring(data, pos)
        (size,) = struct.unpack_from("<i", data, pos)
        pos += 4
        attrs[name] = (kind, data[pos:pos + size])
        pos += size


def _channels(raw):
    out = []
    pos = 0
    while pos < len(raw) and raw[pos] != 0:
        name, pos = _cstring(raw, pos)
        pixel_type, _linear, xs, ys = struct.unpack_from("<iB3xii", raw, pos)
        pos += 16
        if pixel_type not in _TYPE_SIZES or xs != 1 or ys != 1:
            raise ExrError("channel %r: type %d, sampling %dx%d not read" % (name, pixel_type, xs, ys))
        out.append((name, pixel_type))
    return out


def read_channel(path, names=("R", "Y", "Z", "V")):
    """The first channel of ``names`` present in the file: (float32 array top-down, width, height)."""
    with open(path, "rb") as f:
        data = f.read()
    attrs, pos = read_header(data)
    try:
        compression = attrs["compression"][1][0]
        xmin, ymin, xmax, ymax = struct.unpack("<iiii", attrs["dataWindow"][1])
        channels = _channels(attrs["channels"][1])
    except (KeyError, IndexError, struct.error) as err:
        raise ExrError("the header lacks %s" % err) from None
    if compression != 0:
        raise ExrError("compressed EXR (method %d) not read" % compression)
    width, height = xmax - xmin + 1, ymax - ymin + 1
    if width <= 0 or height <= 0:
        raise ExrError("empty data window")
    present = [c for c, _t in channels]
    wanted = next((n for n in names if n in present), None)
    if wanted is None:
        raise ExrError("no channel of %s in %s" % (", ".join(names), ", ".join(present)))
    # Each chunk is one scanline: int y, int size, then every channel's row, in header order.
    before = 0
    for name, pixel_type in channels:
        if name == wanted:
            kind = pixel_type
            break
        before += _TYPE_SIZES[pixel_type] * width
    line_bytes = sum(_TYPE_SIZES[t] for _c, t in channels) * width
    offsets = struct.unpack_from("<%dQ" % height, data, pos)
    out = array.array("f", bytes(4 * width * height))
    typecode = {0: "I", 1: "H", 2: "f"}[kind]
    for offset in offsets:
        y, size = struct.unpack_from("<ii", data, offset)
        row = y - ymin
        if size != line_bytes or not 0 <= row < height or offset + 8 + size > len(data):
            raise ExrError("scanline %d is not where its offset says" % y)
        start = offset + 8 + before
        values = array.array(typecode, data[start:start + _TYPE_SIZES[kind] * width])
        if sys.byteorder != "little":
            values.byteswap()
        if kind == 1:
            values = array.array("f", struct.unpack("<%de" % width, values.tobytes()))
        elif kind == 0:
            values = array.array("f", values)
        out[row * width:(row + 1) * width] = values  # y is the image row whatever the line order
    return out, width, height
