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

    def test_resolve_command_finds_the_package_the_zip_was_built_from(self):
        with tempfile.TemporaryDirectory() as tmp:
            root = os.path.join(tmp, "my depthcast")
            os.makedirs(os.path.join(root, "bin"))
            open(os.path.join(root, "bin", "depthcast.js"), "w").close()
            addon = os.path.join(tmp, "addon")
            os.makedirs(addon)
            self.assertEqual(SV.shipped_package_root(addon), "")
            with open(os.path.join(addon, SV.PACKAGE_ROOT_FILE), "w") as f:
                f.write(root + "\n")
            self.assertEqual(SV.shipped_package_root(addon), root)
            which = {"node": "/usr/bin/node"}.get
            cmd = SV.resolve_command(SV.DEFAULT_COMMAND, root, which=which)
            self.assertEqual(SV.build_command(cmd, 1)[:2], ["/usr/bin/node", os.path.join(root, "bin", "depthcast.js")])
            self.assertEqual(SV.resolve_command("depthcast", root, which=which), cmd)
            # A folder that lost its CLI is not offered.
            os.remove(os.path.join(root, "bin", "depthcast.js"))
            self.assertEqual(SV.shipped_package_root(addon), "")
        # Without a package folder: a linked `depthcast` on PATH, else a clear error, never npx's registry lookup.
        self.assertEqual(SV.resolve_command("npx depthcast", "", which={"depthcast": "/usr/local/bin/depthcast"}.get),
                         "depthcast")
        with self.assertRaisesRegex(RuntimeError, "Command preference"):
            SV.resolve_command("npx depthcast", "", which=lambda name: None)
        # Anything else is used as written.
        self.assertEqual(SV.resolve_command("node /x/bin/depthcast.js", "", which=lambda n: None), "node /x/bin/depthcast.js")

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
