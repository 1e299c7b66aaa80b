"""A fake depthcast service speaking protocol 1 over tests/wsserver.py, for session tests."""
import json
import struct
import time
import zlib

from wsserver import TestServer

HELLO = {"type": "hello", "protocol": 1, "server": {"name": "depthcast", "version": "test"},
         "models": [{"name": "tiny", "family": "depth2img", "loaded": True, "default": True}],
         "schedulers": ["ddim", "euler"], "devices": ["cpu"], "device": "cpu",
         "limits": {"maxMessageBytes": 1 << 26, "maxDepthPixels": 1 << 22, "maxOutputPixels": 1 << 22,
                    "maxPromptChars": 4000, "maxSteps": 1000, "maxQueuedJobs": 16, "maxRegions": 16}}

def make_png(width, height, seed=0):
    """A valid RGB PNG with a gradient (stdlib only)."""
    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    rows = b"".join(b"\x00" + bytes(((x * 255 // max(1, width - 1)) ^ seed) & 255 for x in range(width)
                                     for _ in range(3)) for _y in range(height))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


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
            w = header["params"].get("width", 8)
            h = header["params"].get("height", 8)
            # Previews are JPEG on the real service; a PNG decodes the same way in Blender.
            conn.send_binary_message({"type": "preview", "jobId": jid, "step": 1, "total": self.steps, "width": w,
                                      "height": h, "format": "jpeg"}, make_png(w, h, 1))
            raw = header["params"].get("resultFormat") == "rgb8"
            conn.send_binary_message({"type": "result", "jobId": jid, "stream": header["stream"],
                                      "format": "rgb8" if raw else "png",
                                      "width": w, "height": h, "seed": header["params"].get("seed", 1234),
                                      "finishReason": "SUCCESS", "params": header["params"],
                                      "model": {"name": "tiny", "hash": "h"}, "timings": {"total": 1.0}},
                                     bytes((7 * i) % 256 for i in range(3 * w * h)) if raw else make_png(w, h))
