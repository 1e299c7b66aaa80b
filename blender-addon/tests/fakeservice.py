"""A fake depthcast service speaking protocol 1 over tests/wsserver.py, for session tests."""
import json
import struct
import threading
import time

from wsserver import TestServer

HELLO = {"type": "hello", "protocol": 1, "server": {"name": "depthcast", "version": "test"},
         "models": [{"name": "tiny", "family": "depth2img", "loaded": True, "default": True}],
         "schedulers": ["ddim", "euler"], "devices": ["cpu"], "device": "cpu",
         "limits": {"maxMessageBytes": 1 << 26, "maxDepthPixels": 1 << 22, "maxOutputPixels": 1 << 22,
                    "maxPromptChars": 4000, "maxSteps": 1000, "maxQueuedJobs": 16, "maxRegions": 16}}

PNG_1x1 = bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                        "1f15c4890000000d4944415478da63f8cfc0f01f0005000201a5d7c1d30000000049454e44ae426082")


def decode(data):
    (n,) = struct.unpack_from("<I", data)
    return json.loads(data[4:4 + n]), data[4 + n:]


class FakeService:
    """Accepts frames; for each: accepted, progress x steps, a preview, a result. ``hold`` makes
    jobs wait until cancelled."""

    def __init__(self, steps=2, hold=False, delay=0.0):
        self.steps = steps
        self.hold = hold
        self.delay = delay
        self.frames = []
        self.client_messages = []
        self.server = TestServer(self.app)

    def __enter__(self):
        self.server.__enter__()
        return self

    def __exit__(self, *exc):
        self.server.__exit__(*exc)

    @property
    def url(self):
        return self.server.url

    def app(self, conn):
        conn.send_json(HELLO)
        held = {}
        while True:
            op, data = conn.read_message()
            if op == 8:
                conn.close()
                return
            if op == 1:
                msg = json.loads(data)
                self.client_messages.append(msg)
                if msg["type"] == "cancel":
                    jid = msg.get("jobId")
                    conn.send_json({"type": "cancelled", "jobId": jid or "?", "reason": "client"})
                continue
            header, payload = decode(data)
            self.frames.append((header, payload))
            jid = header["jobId"]
            conn.send_json({"type": "accepted", "jobId": jid, "stream": header["stream"], "position": 0})
            if self.hold:
                held[jid] = True
                continue
            if self.delay:
                time.sleep(self.delay)
            for step in range(1, self.steps + 1):
                conn.send_json({"type": "progress", "jobId": jid, "step": step, "total": self.steps, "timestep": 999 - step})
            conn.send_binary_message({"type": "preview", "jobId": jid, "step": 1, "total": self.steps, "width": 8,
                                      "height": 8, "format": "jpeg"}, b"\xff\xd8fakejpeg")
            conn.send_binary_message({"type": "result", "jobId": jid, "stream": header["stream"], "format": "png",
                                      "width": 1, "height": 1, "seed": header["params"].get("seed", 1234),
                                      "finishReason": "SUCCESS", "params": header["params"],
                                      "model": {"name": "tiny", "hash": "h"}, "timings": {"total": 1.0}}, PNG_1x1)
