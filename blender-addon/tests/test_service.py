import os
import shlex
import sys
import tempfile
import time
import unittest

import _path  # noqa: F401
from core import service as SV

FAKE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_serve.py")


class ServiceTest(unittest.TestCase):
    def test_build_command(self):
        argv = SV.build_command("node '/opt/my dir/bin/depthcast.js'", 7000, models_dir="/m", model="tiny",
                                token="t", extra="--device cpu")
        self.assertEqual(argv, ["node", "/opt/my dir/bin/depthcast.js", "serve", "--host", "127.0.0.1", "--port",
                                "7000", "--models-dir", "/m", "--model", "tiny", "--token", "t", "--device", "cpu"])
        with self.assertRaises(ValueError):
            SV.build_command("", 1)

    def test_start_ready_stop(self):
        port = SV.free_port()
        with tempfile.TemporaryDirectory() as tmp:
            log = os.path.join(tmp, "service.log")
            argv = SV.build_command("%s %s" % (shlex.quote(sys.executable), shlex.quote(FAKE)), port)
            svc = SV.LocalService(argv, "127.0.0.1", port, log_path=log).start()
            try:
                self.assertTrue(svc.wait_ready(10))
                self.assertTrue(svc.running)
                self.assertEqual(svc.url, "ws://127.0.0.1:%d/v1/ws" % port)
            finally:
                t0 = time.monotonic()
                svc.stop()
            self.assertLess(time.monotonic() - t0, 5)
            self.assertFalse(svc.running)
            self.assertIn("fake serve serve --host 127.0.0.1", open(log).read())

    def test_missing_command(self):
        svc = SV.LocalService(["/nonexistent/depthcast"], "127.0.0.1", 1)
        with self.assertRaises(RuntimeError) as cm:
            svc.start()
        self.assertIn("could not start", str(cm.exception))

    def test_exits_early(self):
        svc = SV.LocalService([sys.executable, "-c", "import sys; sys.exit(3)"], "127.0.0.1", SV.free_port()).start()
        self.assertFalse(svc.wait_ready(5))
        self.assertEqual(svc.returncode, 3)
        svc.stop()


if __name__ == "__main__":
    unittest.main()
