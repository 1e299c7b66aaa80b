import array
import struct
import unittest
import zlib

import _path  # noqa: F401
from core import pixels as P


def expected(data, width, height):
    """The conversion written out pixel by pixel: row 0 of the wire is the top, Blender's row 0 the bottom."""
    out = []
    for y in range(height - 1, -1, -1):
        for x in range(width):
            i = 3 * (y * width + x)
            out += [data[i] / 255.0, data[i + 1] / 255.0, data[i + 2] / 255.0, 1.0]
    return array.array("f", out)


class PixelsTest(unittest.TestCase):
    def setUp(self):
        self.w, self.h = 5, 3
        self.data = bytes((7 * i + 3) % 256 for i in range(3 * self.w * self.h))

    def test_plain_python_matches_the_pixel_by_pixel_layout(self):
        out = P.rgb8_to_pixels(self.data, self.w, self.h, use_numpy=False)
        self.assertIsInstance(out, array.array)
        self.assertEqual(list(out), list(expected(self.data, self.w, self.h)))
        # The wire's top-left pixel lands at the start of Blender's top row.
        top_left = 4 * self.w * (self.h - 1)
        self.assertAlmostEqual(out[top_left], self.data[0] / 255.0, places=6)

    @unittest.skipIf(P.numpy is None, "numpy is not installed for this python3: the numpy path is not run here")
    def test_numpy_gives_the_same_floats(self):
        out = P.rgb8_to_pixels(self.data, self.w, self.h)
        self.assertEqual(out.dtype.name, "float32")
        self.assertEqual(out.tolist(), list(expected(self.data, self.w, self.h)))

    def test_refuses_a_size_that_does_not_match(self):
        for w, h in ((self.w + 1, self.h), (0, self.h)):
            with self.assertRaises(ValueError):
                P.rgb8_to_pixels(self.data, w, h, use_numpy=False)
            with self.assertRaises(ValueError):
                P.rgb8_to_png(self.data, w, h)

    def test_png_of_a_raw_result_holds_its_pixels_and_text(self):
        png = P.rgb8_to_png(self.data, self.w, self.h, {"parameters": '{"seed":1}', "Software": "depthcast"})
        self.assertEqual(png[:8], b"\x89PNG\r\n\x1a\n")
        chunks, at = [], 8
        while at < len(png):
            length, kind = struct.unpack(">I4s", png[at:at + 8])
            body = png[at + 8:at + 8 + length]
            (crc,) = struct.unpack(">I", png[at + 8 + length:at + 12 + length])
            self.assertEqual(crc, zlib.crc32(kind + body) & 0xFFFFFFFF, kind)
            chunks.append((kind, body))
            at += 12 + length
        self.assertEqual([k for k, _ in chunks], [b"IHDR", b"tEXt", b"tEXt", b"IDAT", b"IEND"])
        self.assertEqual(struct.unpack(">IIBBBBB", chunks[0][1]), (self.w, self.h, 8, 2, 0, 0, 0))
        self.assertEqual(chunks[1][1], b'parameters\x00{"seed":1}')
        rows = zlib.decompress(chunks[3][1])
        stride = 1 + 3 * self.w
        self.assertEqual(len(rows), stride * self.h)
        for y in range(self.h):
            self.assertEqual(rows[y * stride], 0)  # filter type none
            self.assertEqual(rows[y * stride + 1:(y + 1) * stride], self.data[y * 3 * self.w:(y + 1) * 3 * self.w])


if __name__ == "__main__":
    unittest.main()
