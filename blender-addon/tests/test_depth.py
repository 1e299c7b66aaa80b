import array
import math
import struct
import unittest

import _path  # noqa: F401
from core import depth as D


def rgba_bottom_up(rows_top_down):
    """Builds a Blender-style bottom-up RGBA float buffer from rows given top-down."""
    out = []
    for row in reversed(rows_top_down):
        for v in row:
            out += [v, v, v, 1.0]
    return array.array("f", out)


class DepthTest(unittest.TestCase):
    def test_channel_top_down_flips(self):
        rows = [[1, 2, 3], [4, 5, 6]]  # row 0 = top
        buf = rgba_bottom_up(rows)
        out = D.channel_top_down(buf, 3, 2)
        self.assertEqual(list(out), [1, 2, 3, 4, 5, 6])
        self.assertEqual(list(D.flip_rows(out, 3, 2)), [4, 5, 6, 1, 2, 3])
        with self.assertRaises(ValueError):
            D.channel_top_down(buf, 4, 2)

    @unittest.skipIf(D.numpy is None, "no numpy")
    def test_numpy_background_is_the_plain_one(self):
        vals = array.array("f", [1.0, 1e10, float("nan"), 0.0, -3.0, 50.0, 99.99999, 100.0, 150.0, float("inf"), 0.05] * 600)
        for background in ("far", "inf"):
            fast = D.clean_background(vals, far=100.0, background=background)
            plain = D.clean_background(vals, far=100.0, background=background, use_numpy=False)
            self.assertEqual(fast.tobytes(), plain.tobytes())

    def test_background_handling(self):
        vals = array.array("f", [1.0, 1e10, float("nan"), 0.0, 50.0, 150.0, float("inf"), 0.05])
        self.assertEqual(list(D.clean_background(vals, far=100.0)), [1.0, 100.0, 100.0, 100.0, 50.0, 100.0, 100.0,
                                                                      array.array("f", [0.05])[0]])
        out = D.clean_background(vals, far=100.0, background="inf")
        self.assertTrue(math.isinf(out[1]) and math.isinf(out[5]))
        self.assertEqual(D.foreground_range(vals), (array.array("f", [0.05])[0], 150.0))
        self.assertIsNone(D.foreground_range([1e10, float("nan")]))

    def test_resolve_near_far(self):
        self.assertEqual(D.resolve_near_far("CAMERA", 0.1, 100.0), (0.1, 100.0))
        self.assertEqual(D.resolve_near_far("MANUAL", 0.1, 100.0, 2.0, 12.0), (2.0, 12.0))
        near, far = D.resolve_near_far("SCENE", 0.1, 100.0, values=[8.0, 10.0, 1e10])
        self.assertTrue(7.9 < near < 8.0 and 10.0 < far < 10.1)
        self.assertEqual(D.resolve_near_far("SCENE", 0.1, 100.0, values=[1e10]), (0.1, 100.0))
        with self.assertRaises(ValueError):
            D.resolve_near_far("MANUAL", 0.1, 100.0, 5.0, 5.0)

    def test_bytes_little_endian(self):
        self.assertEqual(D.f32le_bytes([1.0, -2.5]), struct.pack("<ff", 1.0, -2.5))
        self.assertEqual(D.u16le_bytes([1, 65535]), struct.pack("<HH", 1, 65535))
        self.assertEqual(list(D.f32le_to_array(struct.pack("<ff", 3.0, 4.0))), [3.0, 4.0])

    def test_linearize_perspective(self):
        near, far = 0.1, 100.0
        P = D.perspective_matrix(math.radians(50), 1.5, near, far)
        for z in (0.1, 1.0, 7.25, 42.0, 99.0):
            # forward: window depth of view-space z=-z
            clip_z = P[2][2] * -z + P[2][3]
            clip_w = P[3][2] * -z + P[3][3]
            d = (clip_z / clip_w + 1) / 2
            lin = D.linearize_depth_buffer([d], P)[0]
            self.assertAlmostEqual(lin, z, delta=z * 1e-4)
        self.assertEqual(list(D.linearize_depth_buffer([1.0], P)), [array.array("f", [far])[0]])
        self.assertAlmostEqual(D.near_from_projection(P), near, places=5)
        self.assertAlmostEqual(D.far_from_projection(P), far, places=3)

    def test_linearize_orthographic(self):
        P = D.orthographic_matrix(5, 5, 1.0, 21.0)
        for z in (1.0, 3.0, 20.0):
            clip_z = P[2][2] * -z + P[2][3]
            d = (clip_z + 1) / 2
            self.assertAlmostEqual(D.linearize_depth_buffer([d], P)[0], z, places=4)

    def test_resample_fit_crop(self):
        vals = array.array("f", range(16))  # 4x4
        self.assertEqual(list(D.resample_nearest(vals, 4, 4, 2, 2)), [5.0, 7.0, 13.0, 15.0])
        self.assertEqual(D.fit_size(1920, 1080, 512), (512, 288))
        self.assertEqual(D.fit_size(300, 200, 512), (296, 200))
        self.assertEqual(list(D.crop(vals, 4, 4, 1, 1, 3, 3)), [5.0, 6.0, 9.0, 10.0])

    def test_depth_image(self):
        img = D.DepthImage(array.array("f", [1, 2, 3, 4, 5, 6]), 3, 2, 0.5, 10)
        self.assertEqual(img.at(2, 1), 6.0)
        self.assertEqual(len(img.to_bytes()), 24)
        with self.assertRaises(ValueError):
            D.DepthImage([1.0], 1, 1, 5, 5)
        with self.assertRaises(ValueError):
            D.DepthImage([1.0, 2.0], 1, 1, 1, 5)



class FitPixelsTest(unittest.TestCase):
    def test_full_hd_depth_is_captured_at_one_megapixel(self):
        w, h = D.fit_pixels(1920, 1080, 1024 * 1024)
        self.assertEqual((w, h), (1365, 768))
        self.assertLessEqual(w * h, 1024 * 1024)
        self.assertAlmostEqual(w / h, 1920 / 1080, places=2)
        self.assertEqual(D.fit_pixels(512, 512, 1024 * 1024), (512, 512))
        self.assertEqual(D.fit_pixels(4000, 3000, 0), (4000, 3000))

if __name__ == "__main__":
    unittest.main()
