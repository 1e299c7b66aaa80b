"""What the add-on costs Blender's main thread: every timer, handler and draw callback of live
mode records its duration here, so "Live adds at most x % to a redraw" can be measured from
the work itself rather than from a noisy machine's frame times."""
import collections
import functools
import time

#: (time.monotonic() at the end, seconds, name), newest last
entries = collections.deque(maxlen=4096)


def timed(name):
    """Decorator: records each call's duration under ``name``."""

    def wrap(fn):
        @functools.wraps(fn)
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = time.perf_counter() - t0
                entries.append((time.monotonic(), dt, name))

        return run

    return wrap


def since(t0):
    """Entries recorded after monotonic time ``t0``."""
    return [e for e in entries if e[0] >= t0]
