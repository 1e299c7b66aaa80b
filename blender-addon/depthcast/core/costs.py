"""What the add-on costs Blender's main thread: every timer, handler and draw callback of live
mode records its duration here, so "Live adds at most x % to a redraw" can be measured from
the work itself rather than from a noisy machine's frame times."""
import collections
import contextlib
import functools
import sys
import threading
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


_slices = {"depth": 0, "saved": None}
_slices_lock = threading.Lock()


@contextlib.contextmanager
def short_gil_slices(interval=0.0005):
    """For pure-Python work on a worker thread. Such a thread keeps the interpreter lock for the
    switch interval (5 ms) at a time, and Blender's main thread waits that long for each of the
    many Python callbacks of one redraw: a one-second conversion stalled the UI for over a
    second. The interval is shortened while any such work runs."""
    with _slices_lock:
        if _slices["depth"] == 0:
            _slices["saved"] = sys.getswitchinterval()
            sys.setswitchinterval(interval)
        _slices["depth"] += 1
    try:
        yield
    finally:
        with _slices_lock:
            _slices["depth"] -= 1
            if _slices["depth"] == 0:
                sys.setswitchinterval(_slices["saved"])
