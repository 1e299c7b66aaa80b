"""Binary message framing of the depthcast protocol (src/protocol/frame.ts):

    u32 little-endian header length N | N bytes of UTF-8 JSON header | payload bytes
"""
import json
import struct

#: A header larger than this is refused before parsing (same limit as the service).
MAX_HEADER_BYTES = 256 * 1024


class FramingError(ValueError):
    """A binary message that does not follow the framing."""


def encode_binary_message(header, *payload):
    """Returns ``bytes``: the header as compact UTF-8 JSON, then every payload part in order."""
    header_bytes = json.dumps(header, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
    if len(header_bytes) > MAX_HEADER_BYTES:
        raise FramingError("header of %d bytes exceeds %d bytes" % (len(header_bytes), MAX_HEADER_BYTES))
    parts = [struct.pack("<I", len(header_bytes)), header_bytes]
    parts.extend(bytes(p) if not isinstance(p, (bytes, bytearray)) else p for p in payload)
    return b"".join(parts)


def decode_binary_message(data):
    """Returns ``(header, payload)`` where payload is a ``memoryview`` into ``data``."""
    view = memoryview(data)
    if len(view) < 4:
        raise FramingError("binary message of %d bytes is shorter than its 4-byte header length" % len(view))
    (length,) = struct.unpack_from("<I", view, 0)
    if length > MAX_HEADER_BYTES:
        raise FramingError("header length %d exceeds %d bytes" % (length, MAX_HEADER_BYTES))
    if 4 + length > len(view):
        raise FramingError("header length %d runs past the end of the %d-byte message" % (length, len(view)))
    try:
        header = json.loads(bytes(view[4:4 + length]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise FramingError("header is not valid UTF-8 JSON: %s" % err) from None
    if not isinstance(header, dict):
        raise FramingError("header is not a JSON object")
    return header, view[4 + length:]
