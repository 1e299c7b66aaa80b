import json
import os
import struct
import unittest

import _path  # noqa: F401
from core import framing, messages as M
from core.depth import DepthImage


def depth(w=4, h=2):
    return DepthImage([float(i + 1) for i in range(w * h)], w, h, 0.5, 20.0)


class MessagesTest(unittest.TestCase):
    def test_params(self):
        p = M.build_params("a house", "blurry", model="tiny", width=512, height=384, steps=20, guidance=7.5,
                           strength=0.6, seed=42, scheduler="euler-a", controlnet_scale=1.0, depth_range="fixed",
                           preview_every=2, preview_format="rgb8", result_format="rgb8", compose_from_labels=True, feather=2)
        self.assertEqual(p, {"prompt": "a house", "negativePrompt": "blurry", "model": "tiny", "width": 512,
                             "height": 384, "steps": 20, "guidance": 7.5, "strength": 0.6, "seed": 42,
                             "scheduler": "euler-a", "controlnetScale": 1.0, "depthRange": "fixed",
                             "previewEvery": 2, "previewFormat": "rgb8", "resultFormat": "rgb8", "regions": {"composeFromLabels": True, "feather": 2.0}})
        self.assertEqual(M.build_params("x"), {"prompt": "x", "negativePrompt": ""})

    def test_param_errors_name_the_field(self):
        cases = [dict(steps=0), dict(steps=2.5), dict(guidance=51), dict(strength=0), dict(seed=-1),
                 dict(seed=2 ** 32), dict(scheduler="bogus"), dict(controlnet_scale=5), dict(depth_range="x"),
                 dict(preview_every=-1), dict(preview_format="png"), dict(result_format="jpeg"), dict(width=0), dict(steps=True)]
        for kwargs in cases:
            with self.assertRaises(M.MessageError, msg=str(kwargs)) as cm:
                M.build_params("x", **kwargs)
            self.assertTrue(str(cm.exception).startswith("params."), str(cm.exception))
        with self.assertRaises(M.MessageError):
            M.build_params("x" * 4001)

    def test_limits_are_the_services_from_the_generated_json(self):
        # protocol_limits.json is written from src/protocol/limits.ts (test/protocol-limits.test.ts
        # keeps it current): the service's default limits, not the looser schema bounds.
        with open(os.path.join(os.path.dirname(M.__file__), "protocol_limits.json"), encoding="utf-8") as f:
            limits = json.load(f)["limits"]
        n, steps = limits["maxPromptChars"], limits["maxSteps"]
        self.assertEqual(M.build_params("x" * n, "y" * n, steps=steps)["steps"], steps)
        for kwargs in (dict(prompt="x" * (n + 1)), dict(prompt="x", negative_prompt="y" * (n + 1)),
                       dict(prompt="x", steps=steps + 1)):
            with self.assertRaises(M.MessageError, msg=str(kwargs)):
                M.build_params(**kwargs)

    def test_frame_header_and_payload_order(self):
        params = M.build_params("p", steps=2, strength=0.5)
        png = b"\x89PNG\r\n\x1a\n" + b"rest"
        layout_bytes = struct.pack("<8H", 0, 1, 1, 0, 0, 0, 2, 2)
        objects = [{"id": 1, "label": "Cube", "weight": 1.0, "bbox": [1, 0, 3, 1], "area": 2},
                   {"id": 2, "label": "Plane", "prompt": "grass", "weight": 0.5, "bbox": [2, 1, 4, 2], "area": 2}]
        header, payloads = M.build_frame("job-1", depth(), params, stream="blender", mode="batch", init_png=png,
                                         layout=(layout_bytes, 4, 2, objects))
        self.assertEqual(header["type"], "frame")
        self.assertEqual(header["protocol"], 1)
        self.assertEqual(header["depth"], {"width": 4, "height": 2, "dtype": "f32", "kind": "zdepth", "near": 0.5,
                                           "far": 20.0, "byteLength": 32})
        self.assertEqual(header["init"], {"format": "png", "byteLength": 12})
        self.assertEqual(header["layout"]["byteLength"], 16)
        self.assertNotIn("area", header["layout"]["objects"][0])
        self.assertEqual(header["layout"]["objects"][1]["prompt"], "grass")
        self.assertEqual(header["params"]["strength"], 0.5)
        data = M.encode_frame(header, payloads)
        h, payload = framing.decode_binary_message(data)
        self.assertEqual(h, json.loads(json.dumps(header)))
        payload = bytes(payload)
        self.assertEqual(payload[:32], struct.pack("<8f", *[float(i + 1) for i in range(8)]))
        self.assertEqual(payload[32:44], png)
        self.assertEqual(payload[44:], layout_bytes)

    def test_frame_without_init_drops_strength(self):
        header, payloads = M.build_frame("j", depth(), M.build_params("p", strength=0.5))
        self.assertNotIn("strength", header["params"])
        self.assertNotIn("init", header)
        self.assertEqual(len(payloads), 1)
        self.assertEqual(header["mode"], "live")

    def test_frame_errors(self):
        with self.assertRaises(M.MessageError):
            M.build_frame("bad id!", depth(), M.build_params("p"))
        with self.assertRaises(M.MessageError):
            M.build_frame("j", depth(), M.build_params("p"), mode="stream")
        with self.assertRaises(M.MessageError):
            M.build_frame("j", depth(), M.build_params("p"), init_png=b"JFIF")
        with self.assertRaises(M.MessageError):
            M.build_frame("j", depth(), M.build_params("p"), layout=(b"\x00" * 3, 4, 2, []))

    def test_job_ids(self):
        a, b = M.new_job_id(), M.new_job_id("anim-f0001")
        self.assertNotEqual(a, M.new_job_id())
        M.check_id("jobId", a)
        M.check_id("jobId", b)

    def test_cancel_and_hello(self):
        self.assertEqual(json.loads(M.cancel_message(job_id="j1")), {"type": "cancel", "jobId": "j1"})
        self.assertEqual(json.loads(M.cancel_message(stream="live")), {"type": "cancel", "stream": "live"})
        with self.assertRaises(M.MessageError):
            M.cancel_message()
        hello = json.loads(M.client_hello("0.1.0"))
        self.assertEqual(hello, {"type": "hello", "protocol": 1, "client": "depthcast-blender/0.1.0"})

    def test_parse_server(self):
        self.assertEqual(M.parse_server_text('{"type":"progress","jobId":"j","step":1,"total":2,"timestep":900}')["step"], 1)
        with self.assertRaises(ValueError):
            M.parse_server_text('{"type":"nope"}')
        with self.assertRaises(ValueError):
            M.parse_server_text("not json")
        msg = framing.encode_binary_message({"type": "result", "jobId": "j", "seed": 7}, b"\x89PNGdata")
        header, payload = M.parse_server_binary(msg)
        self.assertEqual((header["seed"], payload), (7, b"\x89PNGdata"))
        with self.assertRaises(ValueError):
            M.parse_server_binary(framing.encode_binary_message({"type": "frame"}))

    def test_sidecar(self):
        header, _ = M.build_frame("j", depth(), M.build_params("p", seed=3))
        result = {"type": "result", "jobId": "j", "seed": 3, "width": 8, "height": 8, "params": {"prompt": "p"},
                  "model": {"name": "tiny", "hash": "abc"}, "timings": {"total": 12.5}}
        doc = json.loads(M.sidecar_json(result, header, frame=4, camera="Cam"))
        self.assertEqual(doc["seed"], 3)
        self.assertEqual(doc["model"]["name"], "tiny")
        self.assertEqual(doc["request"]["depth"]["near"], 0.5)
        self.assertEqual((doc["frame"], doc["camera"]), (4, "Cam"))


if __name__ == "__main__":
    unittest.main()
