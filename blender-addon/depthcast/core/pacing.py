"""When live mode sends a frame: debounced, yet never silent while the view keeps moving."""


class LivePacer:
    """Changes call :meth:`changed`; the live timer asks :meth:`due` and calls :meth:`sent`.

    A frame is due ``debounce`` seconds after the last change (a drag that pauses sends once),
    and, while changes keep coming, at most ``2 * debounce`` seconds after the first unsent
    change: a continuous orbit sends at least one frame every two debounce periods, and never
    more than one per debounce period. Times are passed in (``time.monotonic()`` in Blender) so
    the rule is testable without waiting.
    """

    def __init__(self):
        self.last_change = None  # last change not yet sent
        self.first_change = None  # first change not yet sent
        self.last_sent = None

    @property
    def dirty(self):
        return self.last_change is not None

    def changed(self, now):
        if self.first_change is None:
            self.first_change = now
        self.last_change = now

    def due(self, now, debounce):
        if self.last_change is None:
            return False
        if self.last_sent is not None and now - self.last_sent < debounce - 1e-9:
            return False
        eps = 1e-9  # float sums of tick times
        return now - self.last_change >= debounce - eps or now - self.first_change >= 2 * debounce - eps

    def sent(self, now):
        """A frame of the current state went out: changes after ``now`` make the next one."""
        self.last_sent = now
        self.last_change = None
        self.first_change = None

    def reset(self):
        self.__init__()
