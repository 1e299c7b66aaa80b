import unittest

import _path  # noqa: F401
from core import runtime


class RuntimeTest(unittest.TestCase):
    def setUp(self):
        runtime.clear()

    def test_seeds_keep_all_32_bits(self):
        self.assertEqual(runtime.parse_seed("3089542005"), 3089542005)
        self.assertEqual(runtime.parse_seed(" 4294967295 "), 0xFFFFFFFF)
        for bad in ("4294967296", "-1", "12a", ""):
            with self.assertRaises(ValueError):
                runtime.parse_seed(bad)

    def test_disconnect_ends_every_job(self):
        a, b = runtime.of("A"), runtime.of("B")
        a.job_id, a.progress, a.status = "live-1", 7 / 101 * 100, "step 7 / 101"
        b.status = "done"
        runtime.end_all_jobs("disconnected")
        self.assertEqual((a.job_id, a.progress, a.status), ("", 0.0, "disconnected"))
        self.assertEqual(b.status, "done")
        self.assertIs(runtime.of("A"), a)

    def test_size_note(self):
        self.assertEqual(runtime.size_note({"width": 1920, "height": 1080,
                                            "generated": {"width": 680, "height": 384}}),
                         "generated at 680x384, upscaled to 1920x1080")
        self.assertEqual(runtime.size_note({"width": 512, "height": 512}), "")
        self.assertEqual(runtime.size_note({"width": 512, "height": 512, "generatedWidth": 512, "generatedHeight": 512}), "")


if __name__ == "__main__":
    unittest.main()
