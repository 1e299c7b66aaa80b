"""core.warp_plot: the request it builds and the limits it keeps (the service's WarpPlotRequest).
The round trip to a real service runs in the Blender end-to-end test and test/motion-addon.test.ts."""
import json
import unittest

import _path  # noqa: F401
from core import warp_plot as W


class PlotRequestTest(unittest.TestCase):
    def test_sends_frame_and_error_of_each_pair(self):
        pairs = [{"frame": 2, "error": 0.03, "validFraction": 0.9, "disoccludedDifference": 0.1}, {"frame": 3, "error": 0.01}]
        body = json.loads(W.plot_request("Cam: warp", [("consistent", pairs)]))
        self.assertEqual(body, {"title": "Cam: warp", "series": [{"label": "consistent", "pairs": [
            {"frame": 2, "error": 0.03}, {"frame": 3, "error": 0.01}]}]})

    def test_keeps_the_service_limits(self):
        with self.assertRaises(W.PlotError):
            W.plot_request("t", [])
        with self.assertRaises(W.PlotError):
            W.plot_request("t", [("a", [])] * 5)
        with self.assertRaises(W.PlotError):
            W.plot_request("t", [("a", [{"frame": i, "error": 0.1} for i in range(W.MAX_PAIRS + 1)])])
        body = json.loads(W.plot_request("t" * 300, [("l" * 300, [])]))
        self.assertEqual((len(body["title"]), len(body["series"][0]["label"])), (200, 100))

    def test_endpoint_of_a_service_url(self):
        self.assertEqual(W.plot_endpoint("ws://127.0.0.1:7860/v1/ws"), (False, "127.0.0.1:7860"))
        self.assertEqual(W.plot_endpoint("wss://render.example/v1/ws?x=1"), (True, "render.example"))
        with self.assertRaises(W.PlotError):
            W.plot_endpoint("http://127.0.0.1:7860")

    def test_an_unreachable_service_is_a_reason_not_an_exception(self):
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        reason = W.write_warp_plot("/nonexistent/x.png", "ws://127.0.0.1:%d/v1/ws" % port, "", "t", [("a", [])], timeout=2)
        self.assertIn("did not answer", reason)


if __name__ == "__main__":
    unittest.main()
