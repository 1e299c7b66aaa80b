"""Prints frames built by the add-on's core as JSON lines of base64, so the TypeScript tests can
check them against the service's own schema (src/protocol/schemas.ts) and framing."""
import base64
import json
import sys

import _path  # noqa: F401
from core import depth as D, messages as M
from core.layout import LayoutEntry, build_layout
from fakeservice import make_png

w, h = 16, 8
values = D.float_array([5.0 + (x % 4) for y in range(h) for x in range(w)])
values[0] = 1e10  # background
img = D.DepthImage(D.clean_background(values, 20.0), w, h, 0.5, 20.0)
index_vals = [1 if (x < 8 and y < 4) else (2 if y >= 6 else 0) for y in range(h) for x in range(w)]
index, objects = build_layout(index_vals, w, h, {1: LayoutEntry(1, "Box", "a red box", 1.5), 2: LayoutEntry(2, "Ground")})
params = M.build_params("a test", "blurry", model="tiny", width=16, height=8, steps=2, guidance=7.0, strength=0.6,
                        seed=9, scheduler="ddim", controlnet_scale=1.0, depth_range="fixed", preview_every=1,
                        compose_from_labels=True)
out = []
header, payloads = M.build_frame("bl-1", img, params, stream="blender", mode="batch", init_png=make_png(16, 8),
                                 layout=(D.u16le_bytes(index), w, h, objects))
out.append(M.encode_frame(header, payloads))
header, payloads = M.build_frame("live-2", img, M.build_params("live"), stream="blender-live", mode="live")
out.append(M.encode_frame(header, payloads))
for data in out:
    sys.stdout.write(json.dumps({"frame": base64.b64encode(data).decode()}) + "\n")
sys.stdout.write(json.dumps({"cancel": json.loads(M.cancel_message(job_id="bl-1")),
                             "cancelStream": json.loads(M.cancel_message(stream="blender-live")),
                             "hello": json.loads(M.client_hello("0.1.0"))}) + "\n")
