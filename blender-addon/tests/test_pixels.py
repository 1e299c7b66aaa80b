import array
import unittest

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


if __name__ == "__main__":
    unittest.main()
