"""core.motion: the Vector pass as flow planes, intrinsics, motion on a frame message, the score summary."""
import array
import unittest

import _path  # noqa: F401
from core import motion as M
from core import messages
from core.depth import DepthImage


def vector_pass_2x2():
    """2x2 RGBA, bottom row first: pixel (x, row-from-bottom) has R = 10*x + row, G = 100 + R."""
    px = []
    for row in range(2):
        for x in range(2):
            r = 10 * x + row
            px += [r, 100 + r, 0, 0]
    return array.array("f", px)


class VectorPassTest(unittest.TestCase):
    def test_rows_flip_and_y_is_negated(self):
        flow = M.flow_from_vector_pass(vector_pass_2x2(), 2, 2)
        # Top row first: the top row is Blender's row 1.
        self.assertEqual(list(flow[:4]), [1, 11, 0, 10])
        self.assertEqual(list(flow[4:]), [-101, -111, -100, -110])

    def test_channels_read_top_down_give_the_same_planes(self):
        # The same pass, as core.exr hands its R and G channels back: top row first.
        from_pass = M.flow_from_vector_pass(vector_pass_2x2(), 2, 2)
        dx = array.array("f", [1, 11, 0, 10])
        dy_up = array.array("f", [101, 111, 100, 110])
        self.assertEqual(M.flow_from_channels(dx, dy_up), from_pass)
        with self.assertRaises(ValueError):
            M.flow_from_channels(dx, dy_up[:3])

    def test_intrinsics_follow_the_sensor_fit(self):
        k = M.pinhole_intrinsics(35, 36, 24, "HORIZONTAL", 96, 64)
        self.assertAlmostEqual(k["fx"], 35 / 36 * 96)
        self.assertEqual((k["cx"], k["cy"]), (48, 32))
        self.assertAlmostEqual(M.pinhole_intrinsics(35, 36, 24, "VERTICAL", 96, 64)["fy"], 35 / 24 * 64)
        self.assertAlmostEqual(M.pinhole_intrinsics(35, 36, 24, "AUTO", 64, 96)["fx"], 35 / 36 * 96)


class AttachMotionTest(unittest.TestCase):
    def frame(self):
        depth = DepthImage(array.array("f", [2.0] * 6), 3, 2, 1.0, 10.0)
        return messages.build_frame("j2", depth, {"prompt": "x"}, mode="batch")

    def test_flow_for_the_frame_before_poses_otherwise(self):
        header, payloads = self.frame()
        pose = [1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]
        k = {"fx": 3, "fy": 3, "cx": 1.5, "cy": 1}
        self.assertEqual(M.attach_motion(header, payloads, 5, [0.5] * 12, pose, k, ("j1", 4, pose)), "flow")
        self.assertEqual(header["motion"], {"kind": "flow", "dtype": "f32", "width": 3, "height": 2, "byteLength": 48, "previousJobId": "j1"})
        self.assertEqual(payloads[-1], array.array("f", [0.5] * 12).tobytes())
        header, payloads = self.frame()
        self.assertEqual(M.attach_motion(header, payloads, 6, [0.5] * 12, pose, k, ("j1", 4, pose)), "pose")
        self.assertEqual(header["motion"]["kind"], "pose")
        self.assertEqual(len(payloads), 1)
        header, payloads = self.frame()
        self.assertIsNone(M.attach_motion(header, payloads, 6, None, pose, None, ("j1", 4, pose)))
        self.assertIsNone(M.attach_motion(header, payloads, 5, [0.5] * 12, pose, k, None))
        self.assertNotIn("motion", header)

    def test_summary_has_mean_worst_and_fallbacks(self):
        s = M.warp_summary({
            1: {"mode": "per-frame", "fallback": "no previous frame"},
            2: {"mode": "consistent", "score": {"error": 0.02, "validFraction": 0.9, "disoccludedDifference": 0.1}},
            3: {"mode": "consistent", "score": {"error": 0.04, "validFraction": 0.8, "disoccludedDifference": 0.1}},
        })
        self.assertAlmostEqual(s["meanError"], 0.03)
        self.assertEqual(s["worst"]["frame"], 3)
        self.assertEqual([p["frame"] for p in s["pairs"]], [2, 3])
        self.assertEqual(s["fallbacks"], [{"frame": 1, "reason": "no previous frame"}])


if __name__ == "__main__":
    unittest.main()
