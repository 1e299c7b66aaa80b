"""Object layout of a frame: a u16 index map (0 = background) plus, per object id, its label,
optional prompt, weight and screen-space bounding box (protocol ``LayoutPart``)."""
import array
import math

from .protocol_limits import BOUNDS, LAYOUT_OBJECT, MAX_PROMPT_CHARS

#: The protocol allows at most this many objects in a layout.
MAX_OBJECTS = BOUNDS["layoutObjects"]
MAX_LABEL_CHARS = BOUNDS["labelChars"]
_WEIGHT = LAYOUT_OBJECT["weight"]


class LayoutEntry:
    """What the capture knows about one object before looking at the pixels."""

    __slots__ = ("id", "label", "prompt", "weight")

    def __init__(self, id, label, prompt=None, weight=1.0):
        self.id = int(id)
        self.label = label
        self.prompt = prompt
        self.weight = weight


def clean_label(name):
    label = (name or "").strip()[:MAX_LABEL_CHARS]
    return label or "object"


def clean_prompt(value):
    """A custom-property prompt as the protocol wants it: a non-empty string or None."""
    if value is None:
        return None
    text = str(value).strip()
    return text[:MAX_PROMPT_CHARS] if text else None


def clean_weight(value, default=1.0):
    """A custom-property weight clamped to the protocol's range ([0, 10]); junk becomes ``default``."""
    try:
        w = float(value)
    except (TypeError, ValueError):
        return default
    if not math.isfinite(w):
        return default
    return min(float(_WEIGHT["maximum"]), max(float(_WEIGHT["minimum"]), w))


def build_layout(index_values, width, height, entries, max_objects=MAX_OBJECTS):
    """Turns a top-down per-pixel object id buffer (floats or ints; 0 = background) into
    ``(index_map, objects)``.

    ``entries`` maps id -> :class:`LayoutEntry`. Only objects with at least one pixel are kept;
    when more than ``max_objects`` are visible, the largest ones are kept and the rest become
    background. ``index_map`` is an ``array('H')``; each object dict has id, label, optional
    prompt, weight, bbox ``[x0, y0, x1, y1]`` (pixel edges: x1/y1 exclusive, y down) and the
    informational pixel ``area`` (not sent).
    """
    if len(index_values) != width * height:
        raise ValueError("index buffer holds %d values, expected %dx%d" % (len(index_values), width, height))
    known = {int(k): v for k, v in entries.items()}
    index = array.array("H", bytes(2 * width * height))
    boxes = {}
    for y in range(height):
        base = y * width
        row = index_values[base:base + width]
        for x, v in enumerate(row):
            if not v:
                continue
            i = int(v + 0.5)
            if i not in known:
                continue
            index[base + x] = i
            box = boxes.get(i)
            if box is None:
                boxes[i] = [x, y, x, y, 1]
            else:
                if x < box[0]:
                    box[0] = x
                if x > box[2]:
                    box[2] = x
                box[3] = y
                box[4] += 1
    ids = sorted(boxes, key=lambda i: (-boxes[i][4], i))
    dropped = set(ids[max_objects:])
    if dropped:
        for p, v in enumerate(index):
            if v in dropped:
                index[p] = 0
    objects = []
    for i in sorted(ids[:max_objects]):
        entry = known[i]
        x0, y0, x1, y1, area = boxes[i]
        obj = {"id": i, "label": clean_label(entry.label), "weight": clean_weight(entry.weight),
               "bbox": [x0, y0, x1 + 1, y1 + 1], "area": area}
        prompt = clean_prompt(entry.prompt)
        if prompt is not None:
            obj["prompt"] = prompt
        objects.append(obj)
    return index, objects


def wire_objects(objects):
    """The layout objects as sent (drops local-only keys such as ``area``)."""
    keep = ("id", "label", "prompt", "weight", "bbox")
    return [{k: o[k] for k in keep if k in o} for o in objects]
