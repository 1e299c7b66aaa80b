import unittest

import _path  # noqa: F401
from core.pacing import LivePacer


def simulate(pacer, debounce, change_until, end, tick=0.1, change_every=0.02):
    """Changes every ``change_every`` s until ``change_until``; a live timer every ``tick`` s.
    Returns the send times."""
    sends, t, next_change = [], 0.0, 0.0
    while t <= end + 1e-9:
        while next_change <= min(t, change_until) + 1e-9:
            pacer.changed(next_change)
            next_change += change_every
        if pacer.due(t, debounce):
            pacer.sent(t)
            sends.append(round(t, 3))
        t += tick / 10
    return sends


class LivePacerTest(unittest.TestCase):
    def test_continuous_orbit_sends_every_two_debounce_periods(self):
        sends = simulate(LivePacer(), 0.4, change_until=10.0, end=10.0)
        gaps = [b - a for a, b in zip([0.0] + sends, sends)]
        self.assertGreaterEqual(len(sends), 12)  # 10 s / 0.8 s
        # 2 debounce periods after the first unsent change (changes every 0.02 s, timer every 0.01 s)
        self.assertLessEqual(max(gaps), 0.8 + 0.02 + 0.01 + 1e-9)
        self.assertGreaterEqual(min(gaps[1:]), 0.4 - 1e-9)  # bounded rate: not more than 1 per debounce

    def test_a_pause_sends_once_after_the_debounce(self):
        p = LivePacer()
        p.changed(1.0)
        self.assertFalse(p.due(1.3, 0.4))
        self.assertTrue(p.due(1.4, 0.4))
        p.sent(1.4)
        self.assertFalse(p.due(5.0, 0.4))  # nothing changed since

    def test_change_during_send_makes_the_next_frame(self):
        p = LivePacer()
        p.changed(0.0)
        p.sent(0.5)
        p.changed(0.6)
        self.assertFalse(p.due(0.8, 0.4))
        self.assertTrue(p.due(1.0, 0.4))


if __name__ == "__main__":
    unittest.main()
