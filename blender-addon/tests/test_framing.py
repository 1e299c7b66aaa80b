import struct
import unittest

import _path  # noqa: F401
from core import framing


class FramingTest(unittest.TestCase):
    def test_roundtrip(self):
        data = framing.encode_binary_message({"type": "frame", "é": 1}, b"abc", bytearray(b"de"))
        (n,) = struct.unpack_from("<I", data)
        self.assertEqual(data[4:4 + n].decode(), '{"type":"frame","é":1}')
        header, payload = framing.decode_binary_message(data)
        self.assertEqual(header, {"type": "frame", "é": 1})
        self.assertEqual(bytes(payload), b"abcde")

    def test_same_bytes_as_typescript_encoder(self):
        # encodeBinaryMessage({type:'x'}, Uint8Array[1,2]) in src/protocol/frame.ts
        self.assertEqual(framing.encode_binary_message({"type": "x"}, b"\x01\x02"),
                         b"\x0c\x00\x00\x00" + b'{"type":"x"}' + b"\x01\x02")

    def test_errors(self):
        with self.assertRaises(framing.FramingError):
            framing.decode_binary_message(b"\x01\x00")
        with self.assertRaises(framing.FramingError):
            framing.decode_binary_message(struct.pack("<I", 10) + b"{}")
        with self.assertRaises(framing.FramingError):
            framing.decode_binary_message(struct.pack("<I", framing.MAX_HEADER_BYTES + 1) + b"x")
        with self.assertRaises(framing.FramingError):
            framing.decode_binary_message(struct.pack("<I", 2) + b"\xff\xfe")
        with self.assertRaises(framing.FramingError):
            framing.decode_binary_message(struct.pack("<I", 2) + b"[]")
        with self.assertRaises(ValueError):
            framing.encode_binary_message({"x": float("nan")})


if __name__ == "__main__":
    unittest.main()
