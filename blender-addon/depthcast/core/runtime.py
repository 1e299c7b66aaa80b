"""Runtime state of the add-on, kept in memory and never in the saved .blend.

Status text, the last error, progress, the running job and whether live mode or an animation
render runs belong to this Blender session: saved as properties they reopened stale ("step
7 / 101" with Cancel enabled). They live here, one :class:`SceneRuntime` per scene name, and
are dropped on file load, Disconnect and disable.
"""

#: Largest seed the service takes (an unsigned 32-bit integer).
SEED_MAX = 0xFFFFFFFF


class SceneRuntime:
    """What one scene is doing now."""

    __slots__ = ("status", "error", "progress", "job_id", "live_running", "animation_running", "last_seed",
                 "sizes")

    def __init__(self):
        self.reset()

    def reset(self):
        self.status = ""
        self.error = ""
        self.progress = 0.0
        self.job_id = ""
        self.live_running = False
        self.animation_running = False
        self.last_seed = None  # int, full 32 bits (None: no result yet)
        self.sizes = ""  # "generated at WxH, upscaled to WxH" when the service says so

    def job_ended(self, status):
        """The scene's job is over (done, failed, cancelled, or the connection went away)."""
        self.status = status
        self.job_id = ""
        self.progress = 0.0


_scenes = {}


def of(scene_or_name):
    """The runtime state of a scene (a bpy Scene or its name), created on first use."""
    name = scene_or_name if isinstance(scene_or_name, str) else scene_or_name.name
    rt = _scenes.get(name)
    if rt is None:
        rt = _scenes[name] = SceneRuntime()
    return rt


def all_states():
    return list(_scenes.values())


def end_all_jobs(status="disconnected"):
    """Every scene's job is gone (Disconnect, disable): the panels stop showing progress."""
    for rt in _scenes.values():
        if rt.job_id:
            rt.job_ended(status)
        rt.progress = 0.0


def clear():
    _scenes.clear()


def parse_seed(text):
    """A seed typed by the user (digits, 0..2**32-1) as an int; raises ValueError saying why."""
    t = str(text).strip()
    if not t.isdigit():
        raise ValueError("seed must be a whole number from 0 to %d (got %r)" % (SEED_MAX, t))
    value = int(t)
    if value > SEED_MAX:
        raise ValueError("seed must be at most %d (got %d)" % (SEED_MAX, value))
    return value


def size_note(header):
    """"generated at WxH, upscaled to WxH" when a result says it was generated smaller than
    delivered; '' otherwise. Reads the result header's ``generated`` {width, height} (or
    ``generatedWidth``/``generatedHeight``) against its ``width``/``height``."""
    gen = header.get("generated") if isinstance(header.get("generated"), dict) else None
    gw = (gen or {}).get("width", header.get("generatedWidth"))
    gh = (gen or {}).get("height", header.get("generatedHeight"))
    w, h = header.get("width"), header.get("height")
    if not all(isinstance(v, int) for v in (gw, gh, w, h)) or (gw, gh) == (w, h):
        return ""
    return "generated at %dx%d, upscaled to %dx%d" % (gw, gh, w, h)
