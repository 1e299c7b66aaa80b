"""core.exr against an independent writer: ImageMagick's OpenEXR coder (skipped without it).
Blender's own 32-bit passes are read by the end-to-end captures (e2e_blender.py, the window test)."""
import array
import os
import shutil
import subprocess
import tempfile
import unittest

import _path  # noqa: F401
from core import exr


@unittest.skipIf(shutil.which("convert") is None, "no ImageMagick convert")
class ExrTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="depthcast-exr-")

    def tearDown(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def write(self, values, w, h, *options):
        raw = os.path.join(self.dir, "in.raw")
        with open(raw, "wb") as f:
            f.write(array.array("f", values).tobytes())
        path = os.path.join(self.dir, "out.exr")
        subprocess.run(["convert", "-size", "%dx%d" % (w, h), "-depth", "32", "-define", "quantum:format=floating-point",
                        "-endian", "LSB", "gray:" + raw, *options, "-define", "exr:color-type=RGB", path],
                       check=True, capture_output=True)
        return path

    def test_values_and_rows_top_down(self):
        w, h = 7, 5
        values = [(x + 7 * y) / 40.0 + 0.01 for y in range(h) for x in range(w)]  # row 0 = top
        got, gw, gh = exr.read_channel(self.write(values, w, h, "-compress", "None"))
        self.assertEqual((gw, gh), (w, h))
        # ImageMagick writes HALF channels: 11 significant bits.
        for a, b in zip(got, values):
            self.assertAlmostEqual(a, b, delta=b / 1024.0)

    def test_refuses_what_it_does_not_read(self):
        with self.assertRaises(exr.ExrError):
            exr.read_channel(self.write([0.5] * 6, 3, 2, "-compress", "Zip"))
        path = os.path.join(self.dir, "not.exr")
        with open(path, "wb") as f:
            f.write(b"\x89PNG....")
        with self.assertRaises(exr.ExrError):
            exr.read_channel(path)


if __name__ == "__main__":
    unittest.main()
