import queue
import socket
import time
import unittest

import _path  # noqa: F401
from core import messages as M
from core import pixels as P
from core import session as S
from core.depth import DepthImage
from fakeservice import FakeService
from wsserver import TestServer


def frame(job_id, mode="batch", stream="default"):
    d = DepthImage([1.0] * 16, 4, 4, 0.5, 10.0)
    return M.build_frame(job_id, d, M.build_params("a test", seed=5), mode=mode, stream=stream)


def wait_state(events, state, timeout=5.0):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        try:
            ev = events.get(timeout=0.1)
        except queue.Empty:
            continue
        seen.append(ev)
        if ev.kind == "state" and ev.data["state"] == state:
            return ev, seen
    raise AssertionError("state %s not reached; saw %r" % (state, seen))


class UrlTest(unittest.TestCase):
    def test_normalize(self):
        self.assertEqual(S.normalize_url("127.0.0.1:7860"), "ws://127.0.0.1:7860/v1/ws")
        self.assertEqual(S.normalize_url("http://h:1/"), "ws://h:1/v1/ws")
        self.assertEqual(S.normalize_url("https://h/x/ws"), "wss://h/x/ws")
        with self.assertRaises(ValueError):
            S.normalize_url("")
        with self.assertRaises(ValueError):
            S.normalize_url("ftp://h")
        self.assertEqual(S.with_token("ws://h/v1/ws?a=1&token=old", "t k"), "ws://h/v1/ws?a=1&token=t+k")
        self.assertTrue(S.is_loopback_url("ws://127.0.0.1:1/v1/ws"))
        self.assertFalse(S.is_loopback_url("ws://example.org/v1/ws"))

    def test_backoff(self):
        b = S.Backoff(initial=0.5, factor=2, maximum=4, jitter=0)
        self.assertEqual([b.next_delay() for _ in range(6)], [0.5, 1.0, 2.0, 4.0, 4.0, 4.0])
        b.reset()
        self.assertEqual(b.next_delay(), 0.5)
        j = S.Backoff(initial=1, jitter=0.2)
        self.assertTrue(all(0.8 <= j.next_delay() / (2 ** i) <= 1.2 for i in range(3)))


class SessionTest(unittest.TestCase):
    def test_full_job(self):
        with FakeService(steps=3) as svc:
            s = S.Session(svc.url, token="secret").start()
            try:
                wait_state(s.events, S.CONNECTED)
                header, payloads = frame("job-a")
                self.assertTrue(s.send_frame(header, payloads))
                kinds = []
                final = S.wait_for_job(s.events, "job-a", 10, on_event=lambda e: kinds.append(e.kind))
                self.assertEqual(final.kind, "result")
                self.assertEqual(final.data["seed"], 5)
                self.assertTrue(final.payload.startswith(b"\x89PNG"))
                self.assertIn("hello", kinds)
                self.assertEqual(kinds.count("progress"), 3)
                self.assertIn("preview", kinds)
                self.assertEqual(s.hello["models"][0]["name"], "tiny")
                self.assertEqual(s.pending_jobs(), {})
                sent_header, sent_payload = svc.frames[0]
                self.assertEqual(sent_header["jobId"], "job-a")
                self.assertEqual(len(sent_payload), 64)
                self.assertEqual(svc.client_messages[0]["type"], "hello")
                self.assertEqual(svc.server.requests[0][1]["authorization"], "Bearer secret")
            finally:
                s.stop()

    def test_raw_results_arrive_as_pixels(self):
        # The reader thread converts raw rgb8 results, so Blender's main thread only copies them.
        with FakeService(steps=1) as svc:
            s = S.Session(svc.url).start()
            try:
                wait_state(s.events, S.CONNECTED)
                d = DepthImage([1.0] * 12, 4, 3, 0.5, 10.0)
                params = M.build_params("a test", seed=5, width=4, height=3, result_format="rgb8")
                self.assertTrue(s.send_frame(*M.build_frame("job-raw", d, params)))
                final = S.wait_for_job(s.events, "job-raw", 10)
                self.assertEqual((final.kind, final.data["format"]), ("result", "rgb8"))
                self.assertIsNotNone(final.pixels)
                self.assertEqual(list(final.pixels), list(P.rgb8_to_pixels(final.payload, 4, 3, use_numpy=False)))
            finally:
                s.stop()

    def test_frame_sent_while_first_connect_runs_waits_for_it(self):
        with FakeService() as svc:
            s = S.Session(svc.url).start()
            try:
                self.assertTrue(s.send_frame(*frame("job-early")))
                final = S.wait_for_job(s.events, "job-early", 10)
                self.assertEqual(final.kind, "result")
            finally:
                s.stop()

    def test_frame_queued_during_failed_first_connect_fails(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        s = S.Session("ws://127.0.0.1:%d/v1/ws" % port, backoff=S.Backoff(initial=5)).start()
        try:
            s.send_frame(*frame("job-q"))
            final = S.wait_for_job(s.events, "job-q", 3)
            self.assertEqual((final.kind, final.data["code"]), ("error", "OFFLINE"))
            self.assertIn("nothing is listening", final.data["message"])
        finally:
            s.stop()

    def test_cancel(self):
        with FakeService(hold=True) as svc:
            s = S.Session(svc.url).start()
            try:
                wait_state(s.events, S.CONNECTED)
                s.send_frame(*frame("job-c"))
                time.sleep(0.3)
                s.cancel(job_id="job-c")
                final = S.wait_for_job(s.events, "job-c", 5)
                self.assertEqual(final.kind, "cancelled")
                self.assertIn({"type": "cancel", "jobId": "job-c"}, svc.client_messages)
            finally:
                s.stop()

    def test_offline_send_is_an_error_event(self):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        s = S.Session("ws://127.0.0.1:%d/v1/ws" % port, backoff=S.Backoff(initial=0.05, maximum=0.1)).start()
        try:
            ev, _ = wait_state(s.events, S.RECONNECTING)
            self.assertIn("nothing is listening", ev.data["message"])
            self.assertFalse(s.send_frame(*frame("job-o")))
            final = S.wait_for_job(s.events, "job-o", 2)
            self.assertEqual((final.kind, final.data["code"]), ("error", "OFFLINE"))
        finally:
            s.stop()

    def test_reconnects_after_drop_and_fails_pending(self):
        drops = {"n": 0}

        def app(conn):
            from fakeservice import HELLO
            conn.send_json(HELLO)
            conn.read_message()  # client hello
            if drops["n"] == 0:
                drops["n"] += 1
                conn.read_message()  # a frame
                conn.sock.shutdown(socket.SHUT_RDWR)
                return
            while True:
                op, _ = conn.read_message()
                if op == 8:
                    return
        with TestServer(app) as srv:
            s = S.Session(srv.url, backoff=S.Backoff(initial=0.05, jitter=0)).start()
            try:
                wait_state(s.events, S.CONNECTED)
                s.send_frame(*frame("job-d"))
                final = S.wait_for_job(s.events, "job-d", 5)
                self.assertEqual((final.kind, final.data["code"]), ("error", "OFFLINE"))
                self.assertIn("lost", final.data["message"])
                wait_state(s.events, S.CONNECTED)
                self.assertEqual(len(srv.connections), 2)
            finally:
                s.stop()

    def test_refused_token_stops_retrying(self):
        with TestServer(lambda c: None, refuse_status=401) as srv:
            s = S.Session(srv.url, token="wrong", backoff=S.Backoff(initial=0.05)).start()
            try:
                ev, _ = wait_state(s.events, S.DISCONNECTED)
                self.assertIn("refused the token", ev.data["message"])
                time.sleep(0.3)
                self.assertEqual(len(srv.requests), 1)
            finally:
                s.stop()

    def test_live_frames_coalesce_before_sending(self):
        with FakeService(hold=True) as svc:
            s = S.Session(svc.url).start()
            try:
                wait_state(s.events, S.CONNECTED)
                # Stall the writer by holding the outbox lock while queuing three live frames.
                with s._out_cv:
                    s._ws, real = None, s._ws
                for i in range(3):
                    s.state = S.CONNECTED
                    s.send_frame(*frame("live-%d" % i, mode="live", stream="viewport"))
                superseded = []
                while True:
                    try:
                        ev = s.events.get(timeout=0.2)
                    except queue.Empty:
                        break
                    if ev.kind == "cancelled":
                        superseded.append(ev.data["jobId"])
                self.assertEqual(superseded, ["live-0", "live-1"])
                with s._out_cv:
                    s._ws = real
                    s._out_cv.notify_all()
                deadline = time.monotonic() + 3
                while not svc.frames and time.monotonic() < deadline:
                    time.sleep(0.05)
                self.assertEqual([h["jobId"] for h, _ in svc.frames], ["live-2"])
            finally:
                s.stop()

    def test_stop_is_prompt(self):
        with FakeService() as svc:
            s = S.Session(svc.url).start()
            wait_state(s.events, S.CONNECTED)
            t0 = time.monotonic()
            s.stop()
            self.assertLess(time.monotonic() - t0, 2.5)
            self.assertEqual(s.state, S.STOPPED)


if __name__ == "__main__":
    unittest.main()
