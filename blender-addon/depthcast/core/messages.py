"""Messages of the depthcast wire protocol, built and checked on the client side
(src/protocol/schemas.ts; its bounds and limits come from protocol_limits.json). Checking here
lets the panel say which field is wrong before anything is sent; the service checks again."""
import json
import os
import re
import time

from . import framing
from .depth import DepthImage
from .layout import wire_objects
from .protocol_limits import MAX_PROMPT_CHARS, MAX_STEPS, PARAMS, PROTOCOL_VERSION, choices, param_range

CLIENT_NAME = "depthcast-blender"

SCHEDULERS = choices(PARAMS["scheduler"])
DEPTH_RANGES = choices(PARAMS["depthRange"])
#: rgb8 previews are raw bytes: nothing for the service to encode or for Blender to decode.
PREVIEW_FORMATS = choices(PARAMS["previewFormat"])
#: Live results can come raw too (rgb8); "png" (the default) is what gets saved.
RESULT_FORMATS = choices(PARAMS["resultFormat"])
MODES = ("live", "batch")
ID_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_SEED = PARAMS["seed"]["maximum"]


class MessageError(ValueError):
    """A message that would be refused by the service; ``field`` says which part."""

    def __init__(self, field, message):
        super().__init__("%s: %s" % (field, message))
        self.field = field


def new_job_id(prefix="bl"):
    """A fresh job id: prefix, milliseconds, random suffix (protocol JobId charset)."""
    return "%s-%d-%s" % (prefix, int(time.time() * 1000), os.urandom(3).hex())


def check_id(field, value):
    if not isinstance(value, str) or not ID_RE.match(value):
        raise MessageError(field, "1-64 characters of A-Z a-z 0-9 _ . : - (got %r)" % (value,))
    return value


def _num(field, value, lo=None, hi=None, integer=False, lo_open=False):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MessageError(field, "must be a number (got %r)" % (value,))
    if value != value or value in (float("inf"), float("-inf")):
        raise MessageError(field, "must be finite")
    if integer and int(value) != value:
        raise MessageError(field, "must be a whole number (got %r)" % (value,))
    if lo is not None and (value <= lo if lo_open else value < lo):
        raise MessageError(field, "must be %s %g (got %g)" % (">" if lo_open else ">=", lo, value))
    if hi is not None and value > hi:
        raise MessageError(field, "must be <= %g (got %g)" % (hi, value))
    return int(value) if integer else float(value)


def _param(name, value, schema=None, hi=None):
    """A numeric parameter checked against its protocol schema (``hi`` lowers the schema's maximum to a limit)."""
    lo, schema_hi, integer, lo_open = param_range(schema or PARAMS[name])
    return _num("params." + name, value, lo, schema_hi if hi is None else hi, integer=integer, lo_open=lo_open)


def _choice(name, value, allowed):
    if value not in allowed:
        raise MessageError("params." + name, "one of %s (got %r)" % (", ".join(allowed), value))
    return value


def build_params(prompt, negative_prompt="", *, model=None, width=None, height=None, steps=None, guidance=None,
                 strength=None, seed=None, scheduler=None, controlnet_scale=None, depth_range=None,
                 preview_every=None, preview_format=None, result_format=None, compose_from_labels=None, feather=None):
    """``GenerationParams`` as a dict with only the fields given (None = leave to the service)."""
    if not isinstance(prompt, str):
        raise MessageError("params.prompt", "must be text")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise MessageError("params.prompt", "at most %d characters (got %d)" % (MAX_PROMPT_CHARS, len(prompt)))
    if len(negative_prompt or "") > MAX_PROMPT_CHARS:
        raise MessageError("params.negativePrompt", "at most %d characters" % MAX_PROMPT_CHARS)
    params = {"prompt": prompt, "negativePrompt": negative_prompt or ""}
    if model:
        if len(model) > PARAMS["model"]["maxLength"]:
            raise MessageError("params.model", "at most %d characters" % PARAMS["model"]["maxLength"])
        params["model"] = model
    if width is not None:
        params["width"] = _param("width", width)
    if height is not None:
        params["height"] = _param("height", height)
    if steps is not None:
        params["steps"] = _param("steps", steps, hi=MAX_STEPS)
    if guidance is not None:
        params["guidance"] = _param("guidance", guidance)
    if strength is not None:
        params["strength"] = _param("strength", strength)
    if seed is not None:
        params["seed"] = _param("seed", seed)
    if scheduler:
        params["scheduler"] = _choice("scheduler", scheduler, SCHEDULERS)
    if controlnet_scale is not None:
        params["controlnetScale"] = _param("controlnetScale", controlnet_scale)
    if depth_range is not None:
        params["depthRange"] = _choice("depthRange", depth_range, DEPTH_RANGES)
    if preview_every is not None:
        params["previewEvery"] = _param("previewEvery", preview_every)
    if preview_format is not None:
        params["previewFormat"] = _choice("previewFormat", preview_format, PREVIEW_FORMATS)
    if result_format is not None:
        params["resultFormat"] = _choice("resultFormat", result_format, RESULT_FORMATS)
    if compose_from_labels is not None or feather is not None:
        regions = {}
        if compose_from_labels is not None:
            regions["composeFromLabels"] = bool(compose_from_labels)
        if feather is not None:
            regions["feather"] = _param("regions.feather", feather, PARAMS["regions"]["properties"]["feather"])
        params["regions"] = regions
    return params


def build_frame(job_id, depth, params, *, stream="default", mode="live", init_png=None, layout=None):
    """One depth frame: ``(header, payloads)`` where payloads is the list of byte strings in wire
    order (depth, init, layout). ``depth`` is a :class:`DepthImage`; ``layout`` is ``None`` or
    ``(index_map_bytes, width, height, objects)``."""
    check_id("jobId", job_id)
    check_id("stream", stream)
    if mode not in MODES:
        raise MessageError("mode", "'live' or 'batch' (got %r)" % (mode,))
    if not isinstance(depth, DepthImage):
        raise MessageError("depth", "must be a DepthImage")
    depth_bytes = depth.to_bytes()
    header = {
        "type": "frame",
        "protocol": PROTOCOL_VERSION,
        "jobId": job_id,
        "stream": stream,
        "mode": mode,
        "depth": {
            "width": depth.width,
            "height": depth.height,
            "dtype": "f32",
            "kind": depth.kind,
            "near": depth.near,
            "far": depth.far,
            "byteLength": len(depth_bytes),
        },
        "params": dict(params),
    }
    payloads = [depth_bytes]
    if init_png is not None:
        init_png = bytes(init_png)
        if init_png[:8] != b"\x89PNG\r\n\x1a\n":
            raise MessageError("init", "init image must be PNG bytes")
        header["init"] = {"format": "png", "byteLength": len(init_png)}
        payloads.append(init_png)
    if layout is not None:
        index_bytes, lw, lh, objects = layout
        if len(index_bytes) != lw * lh * 2:
            raise MessageError("layout", "index map holds %d bytes, expected %dx%dx2" % (len(index_bytes), lw, lh))
        if len(objects) > 256:
            raise MessageError("layout.objects", "at most 256 objects (got %d)" % len(objects))
        header["layout"] = {"width": lw, "height": lh, "byteLength": len(index_bytes),
                            "objects": wire_objects(objects)}
        payloads.append(bytes(index_bytes))
    if "strength" in header["params"] and init_png is None:
        # Strength only means something with an init image; the service would ignore it.
        del header["params"]["strength"]
    return header, payloads


def encode_frame(header, payloads):
    """The binary WebSocket message of a frame."""
    return framing.encode_binary_message(header, *payloads)


def cancel_message(job_id=None, stream=None):
    if job_id is None and stream is None:
        raise MessageError("cancel", "needs jobId or stream")
    msg = {"type": "cancel"}
    if job_id is not None:
        msg["jobId"] = check_id("jobId", job_id)
    if stream is not None:
        msg["stream"] = check_id("stream", stream)
    return json.dumps(msg)


def client_hello(version="0"):
    return json.dumps({"type": "hello", "protocol": PROTOCOL_VERSION, "client": "%s/%s" % (CLIENT_NAME, version)})


SERVER_TEXT_TYPES = ("hello", "accepted", "progress", "cancelled", "error")
SERVER_BINARY_TYPES = ("preview", "result")


def parse_server_text(text):
    """A server JSON message as a dict with a known ``type``; raises ValueError otherwise."""
    try:
        msg = json.loads(text)
    except ValueError as err:
        raise ValueError("server sent text that is not JSON: %s" % err) from None
    if not isinstance(msg, dict) or msg.get("type") not in SERVER_TEXT_TYPES:
        raise ValueError("server sent an unknown message: %.200s" % text)
    return msg


def parse_server_binary(data):
    """``(header, payload_bytes)`` of a server binary message (preview JPEG or result PNG)."""
    header, payload = framing.decode_binary_message(data)
    if header.get("type") not in SERVER_BINARY_TYPES:
        raise ValueError("server sent an unknown binary message type %r" % header.get("type"))
    return header, bytes(payload)


def sidecar(result_header, frame_header=None, **extra):
    """The JSON sidecar written next to a saved result: what was asked and what was done."""
    doc = {
        "depthcast": {"client": CLIENT_NAME, "protocol": PROTOCOL_VERSION},
        "jobId": result_header.get("jobId"),
        "seed": result_header.get("seed"),
        "width": result_header.get("width"),
        "height": result_header.get("height"),
        "model": result_header.get("model"),
        "params": result_header.get("params"),
        "timings": result_header.get("timings"),
    }
    if result_header.get("reusedFrom"):
        doc["reusedFrom"] = result_header["reusedFrom"]
    if result_header.get("consistency"):
        doc["consistency"] = result_header["consistency"]
    if frame_header is not None:
        doc["request"] = {
            "params": frame_header.get("params"),
            "depth": {k: v for k, v in frame_header.get("depth", {}).items() if k != "byteLength"},
            "layout": ({"width": frame_header["layout"]["width"], "height": frame_header["layout"]["height"],
                        "objects": frame_header["layout"]["objects"]} if "layout" in frame_header else None),
            "init": "init" in frame_header,
            "mode": frame_header.get("mode"),
            "stream": frame_header.get("stream"),
        }
    doc.update(extra)
    return doc


def sidecar_json(result_header, frame_header=None, **extra):
    return json.dumps(sidecar(result_header, frame_header, **extra), indent=2, sort_keys=True, default=str)
