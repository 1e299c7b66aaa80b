"""The protocol's limits and parameter bounds, read from protocol_limits.json: the service writes
that file from its own protocol module (tools/build-protocol-json.ts, run by ``npm run
addon:zip``), and its tests fail when the committed copy is stale, so there is no hand copy here.

``LIMITS`` are what a service enforces unless configured otherwise (announced in ``hello``);
``PARAMS`` holds each generation parameter's JSON Schema (bounds, enums)."""
import json
import os

with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "protocol_limits.json"), encoding="utf-8") as _f:
    _DATA = json.load(_f)

PROTOCOL_VERSION = _DATA["protocol"]
LIMITS = _DATA["limits"]
BOUNDS = _DATA["bounds"]
PARAMS = _DATA["params"]
LAYOUT_OBJECT = _DATA["layoutObject"]

MAX_PROMPT_CHARS = LIMITS["maxPromptChars"]
MAX_STEPS = LIMITS["maxSteps"]


def param_range(schema):
    """``(lo, hi, integer, lo_open)`` of a numeric JSON Schema (None where unbounded)."""
    lo_open = "exclusiveMinimum" in schema
    lo = schema["exclusiveMinimum"] if lo_open else schema.get("minimum")
    return lo, schema.get("maximum"), schema.get("type") == "integer", lo_open


def choices(schema):
    """The allowed strings of an enum schema (the first alternative of a union: the short names)."""
    while "enum" not in schema:
        schema = schema["anyOf"][0]
    return tuple(schema["enum"])
