"""A connection to a depthcast service that never blocks its caller.

A :class:`Session` owns two threads: a reader (connect, handshake, receive, reconnect with
backoff, keepalive pings) and a writer (sends queued messages in order). Everything the server
says arrives as :class:`Event` objects on a ``queue.Queue`` that the caller drains when it likes
(inside Blender: a ``bpy.app.timers`` function on the main thread; in the batch script: a loop).
Sending only enqueues, so the caller never waits on the network.
"""
import collections
import json
import queue
import random
import threading
import time
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from . import costs, messages, pixels
from .websocket import ConnectionClosed, HandshakeError, Message, WebSocket, WebSocketError

# Connection states
DISCONNECTED = "disconnected"
CONNECTING = "connecting"
CONNECTED = "connected"
RECONNECTING = "reconnecting"
STOPPED = "stopped"


class Backoff:
    """Exponential backoff with jitter: initial, initial*factor, ... capped at ``maximum``."""

    def __init__(self, initial=0.5, factor=2.0, maximum=30.0, jitter=0.2, rng=None):
        self.initial = initial
        self.factor = factor
        self.maximum = maximum
        self.jitter = jitter
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self):
        base = min(self.maximum, self.initial * (self.factor ** self.attempt))
        self.attempt += 1
        if self.jitter:
            base *= 1.0 + self._rng.uniform(-self.jitter, self.jitter)
        return max(0.0, min(base, self.maximum))

    def reset(self):
        self.attempt = 0


class Event:
    """Something that happened on the connection.

    kind: 'state' (data: {state, message, retryIn?, attempt?}), 'hello', 'accepted', 'progress',
    'cancelled', 'error' (data: the server's JSON message), 'preview' / 'result' (data: the
    binary header, payload: JPEG / PNG / raw rgb8 bytes). ``pixels``: a raw rgb8 payload already
    as Blender's bottom-up RGBA floats, converted on the connection's reader thread (None
    otherwise, or when it did not match its header: the main thread then says why).
    """

    __slots__ = ("kind", "data", "payload", "time", "pixels")

    def __init__(self, kind, data=None, payload=None):
        self.kind = kind
        self.data = data if data is not None else {}
        self.payload = payload
        self.time = time.time()
        self.pixels = None

    @property
    def job_id(self):
        return self.data.get("jobId")

    def __repr__(self):
        return "Event(%s, %s%s)" % (self.kind, json.dumps(self.data, default=str)[:200],
                                   ", %d bytes" % len(self.payload) if self.payload is not None else "")


def with_token(url, token):
    """``url`` with ``?token=`` set (kept for servers behind proxies that drop headers)."""
    if not token:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "token"]
    query.append(("token", token))
    return urlunsplit((parts.scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def normalize_url(url):
    """Accepts ``host:port``, ``http://host:port`` or a full ws URL; returns a ws(s) URL ending in
    ``/v1/ws`` when no path was given."""
    url = (url or "").strip()
    if not url:
        raise ValueError("no server URL set")
    if "://" not in url:
        url = "ws://" + url
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme.lower(), parts.scheme.lower())
    if scheme not in ("ws", "wss"):
        raise ValueError("server URL must start with ws://, wss://, http:// or https:// (got %r)" % url)
    path = parts.path if parts.path not in ("", "/") else "/v1/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def is_loopback_url(url):
    host = (urlsplit(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.")


class Session:
    """See the module docstring. ``events`` may be any object with ``put``."""

    def __init__(self, url, token="", *, events=None, reconnect=True, backoff=None, connect_timeout=5.0,
                 ping_interval=15.0, pong_timeout=30.0, client_version="0", token_in_query=False):
        self.url = normalize_url(url)
        self.token = token or ""
        self.events = events if events is not None else queue.Queue()
        self.reconnect = reconnect
        self.backoff = backoff or Backoff()
        self.connect_timeout = connect_timeout
        self.ping_interval = ping_interval
        self.pong_timeout = pong_timeout
        self.client_version = client_version
        self.token_in_query = token_in_query
        self.state = DISCONNECTED
        self.state_message = ""
        self.hello = None
        self.last_error = ""
        self._ws = None
        self._ws_lock = threading.Lock()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._outbox = collections.deque()
        self._out_cv = threading.Condition()
        self._pending = {}  # jobId -> stream, for jobs sent but not finished
        self._pending_lock = threading.Lock()
        self._reader = None
        self._writer = None

    # ---- lifecycle ----
    def start(self):
        if self._reader is not None:
            return self
        self._stop.clear()
        self.state = CONNECTING
        self.last_error = ""
        self._reader = threading.Thread(target=self._read_loop, name="depthcast-reader", daemon=True)
        self._writer = threading.Thread(target=self._write_loop, name="depthcast-writer", daemon=True)
        self._reader.start()
        self._writer.start()
        return self

    def stop(self, timeout=2.0):
        """Closes the connection and joins the threads (bounded by ``timeout``)."""
        self._stop.set()
        self._wake.set()
        with self._out_cv:
            self._out_cv.notify_all()
        ws = self._ws
        if ws is not None:
            threading.Thread(target=ws.close, kwargs={"timeout": min(1.0, timeout)}, daemon=True).start()
        deadline = time.monotonic() + timeout
        for t in (self._writer, self._reader):
            if t is not None and t is not threading.current_thread():
                t.join(max(0.0, deadline - time.monotonic()))
        if ws is not None:
            ws.abort()
        self._fail_pending("disconnect", "connection closed by the client")
        self._set_state(STOPPED, "stopped")
        self._reader = self._writer = None

    def retry_now(self):
        """Skips the current backoff wait."""
        self.backoff.reset()
        self._wake.set()

    @property
    def connected(self):
        return self.state == CONNECTED

    # ---- sending ----
    def send_frame(self, header, payloads):
        """Queues a depth frame. Live frames replace a not-yet-sent live frame of the same stream
        (newest wins here too). Returns False (and posts an error event) when not connected."""
        first_attempt = self.state == CONNECTING and self._reader is not None and not self.last_error
        if not self.connected and not first_attempt:
            # While the very first connection attempt runs, frames wait for it; once the service
            # is known to be unreachable, fail at once rather than sit through the backoff.
            self._post_job_error(header["jobId"], "OFFLINE", "not connected to %s%s" % (
                self.url, " (" + self.last_error + ")" if self.last_error else ""))
            return False
        data = messages.encode_frame(header, payloads)
        job_id, stream, mode = header["jobId"], header.get("stream", "default"), header.get("mode", "live")
        with self._pending_lock:
            self._pending[job_id] = stream
        with self._out_cv:
            if mode == "live":
                for i, item in enumerate(self._outbox):
                    if item[0] == "live" and item[1] == stream:
                        replaced = item[2]
                        self._outbox[i] = ("live", stream, job_id, data)
                        with self._pending_lock:
                            self._pending.pop(replaced, None)
                        self.events.put(Event("cancelled", {"type": "cancelled", "jobId": replaced,
                                                            "reason": "superseded", "local": True}))
                        self._out_cv.notify()
                        return True
            self._outbox.append((mode, stream, job_id, data))
            self._out_cv.notify()
        return True

    def send_json(self, text):
        with self._out_cv:
            self._outbox.append(("json", None, None, text))
            self._out_cv.notify()

    def cancel(self, job_id=None, stream=None):
        """Cancels a job (or everything on a stream). Frames still waiting here are dropped."""
        dropped = []
        with self._out_cv:
            keep = collections.deque()
            for item in self._outbox:
                if item[2] is not None and ((job_id and item[2] == job_id) or (stream and item[1] == stream)):
                    dropped.append(item[2])
                else:
                    keep.append(item)
            self._outbox = keep
        for jid in dropped:
            with self._pending_lock:
                self._pending.pop(jid, None)
            self.events.put(Event("cancelled", {"type": "cancelled", "jobId": jid, "reason": "client", "local": True}))
        if self.connected:
            self.send_json(messages.cancel_message(job_id=job_id, stream=stream))

    def pending_jobs(self):
        with self._pending_lock:
            return dict(self._pending)

    # ---- internals ----
    def _set_state(self, state, message="", **extra):
        self.state = state
        self.state_message = message
        data = {"state": state, "message": message}
        data.update(extra)
        self.events.put(Event("state", data))

    def _post_job_error(self, job_id, code, message):
        with self._pending_lock:
            self._pending.pop(job_id, None)
        self.events.put(Event("error", {"type": "error", "jobId": job_id, "code": code, "message": message,
                                        "local": True}))

    def _fail_pending(self, code, message):
        with self._pending_lock:
            jobs = list(self._pending)
            self._pending.clear()
        with self._out_cv:
            self._outbox = collections.deque(i for i in self._outbox if i[0] == "json")
        for jid in jobs:
            self.events.put(Event("error", {"type": "error", "jobId": jid, "code": "OFFLINE" if code == "disconnect"
                                            else code, "message": message, "local": True}))

    def _connect_once(self):
        headers = {}
        url = self.url
        if self.token:
            headers["Authorization"] = "Bearer " + self.token
            if self.token_in_query:
                url = with_token(url, self.token)
        ws = WebSocket.connect(url, headers=headers, timeout=self.connect_timeout)
        ws.send(messages.client_hello(self.client_version))
        # The service greets first; wait for its hello so 'connected' means usable.
        deadline = time.monotonic() + self.connect_timeout
        while True:
            msg = ws.recv(timeout=max(0.0, deadline - time.monotonic()))
            if msg is None:
                ws.abort()
                raise WebSocketError("no hello from the service within %.0f s" % self.connect_timeout)
            if msg.is_text:
                parsed = messages.parse_server_text(msg.data)
                if parsed["type"] == "hello":
                    if parsed.get("protocol") != messages.PROTOCOL_VERSION:
                        ws.close()
                        raise WebSocketError("service speaks protocol %r, this add-on speaks %d"
                                             % (parsed.get("protocol"), messages.PROTOCOL_VERSION))
                    return ws, parsed
                if parsed["type"] == "error":
                    ws.close()
                    raise WebSocketError("%s: %s" % (parsed.get("code"), parsed.get("message")))

    def _read_loop(self):
        while not self._stop.is_set():
            self._set_state(CONNECTING if self.backoff.attempt == 0 else RECONNECTING, "connecting to " + self.url)
            try:
                ws, hello = self._connect_once()
            except (OSError, WebSocketError, ValueError) as err:
                self.last_error = describe_connect_error(err, self.url)
                self._fail_pending("OFFLINE", "could not connect: " + self.last_error)
                refused = isinstance(err, HandshakeError) and err.status in (401, 403)
                if not self.reconnect or refused:
                    # Retrying a refused token only spams the service: wait for the user to fix it.
                    self._set_state(DISCONNECTED, self.last_error)
                    return
                self._back_off()
                continue
            with self._ws_lock:
                self._ws = ws
            self.backoff.reset()
            self.hello = hello
            self.last_error = ""
            self._set_state(CONNECTED, "connected to " + self.url)
            self.events.put(Event("hello", hello))
            with self._out_cv:
                self._out_cv.notify_all()
            reason = self._receive(ws)
            with self._ws_lock:
                self._ws = None
            ws.abort()
            self._fail_pending("disconnect", "connection to the service was lost: " + reason)
            if self._stop.is_set():
                break
            self.last_error = "connection lost: " + reason
            if not self.reconnect:
                self._set_state(DISCONNECTED, self.last_error)
                return
            self._back_off()

    def _back_off(self):
        """Says when the next attempt comes, then waits for it (or for a wake-up: stop, send)."""
        delay = self.backoff.next_delay()
        self._set_state(RECONNECTING, self.last_error, retryIn=round(delay, 1), attempt=self.backoff.attempt)
        self._wake.clear()
        self._wake.wait(delay)

    def _receive(self, ws):
        last_ping = time.monotonic()
        ws.last_pong = time.monotonic()
        while not self._stop.is_set():
            now = time.monotonic()
            if self.ping_interval and now - last_ping >= self.ping_interval:
                try:
                    ws.ping(b"dc")
                except WebSocketError as err:
                    return str(err)
                last_ping = now
            if self.pong_timeout and now - ws.last_pong > self.pong_timeout:
                return "no pong for %.0f s" % self.pong_timeout
            try:
                msg = ws.recv(timeout=min(1.0, self.ping_interval or 1.0))
            except ConnectionClosed as err:
                return "closed (%d%s)" % (err.code, ": " + err.reason if err.reason else "")
            except WebSocketError as err:
                return str(err)
            if msg is None:
                continue
            self._dispatch(msg)
        return "stopped"

    def _dispatch(self, msg):
        try:
            if msg.is_text:
                data = messages.parse_server_text(msg.data)
                kind, payload = data["type"], None
            else:
                data, payload = messages.parse_server_binary(msg.data)
                kind = data["type"]
        except ValueError as err:
            self.events.put(Event("error", {"type": "error", "code": "BAD_FRAME", "message": str(err), "local": True}))
            return
        if kind in ("result", "cancelled") or (kind == "error" and data.get("jobId")):
            with self._pending_lock:
                self._pending.pop(data.get("jobId"), None)
        ev = Event(kind, data, payload)
        if kind in ("preview", "result") and data.get("format") == "rgb8":
            # Without numpy this is a pure-Python loop (~0.2 s at 512x328 on a loaded machine):
            # here, not in the main thread's event processing.
            try:
                with costs.short_gil_slices():
                    ev.pixels = pixels.rgb8_to_pixels(payload, int(data.get("width", 0)), int(data.get("height", 0)))
            except (ValueError, TypeError):
                ev.pixels = None
        self.events.put(ev)

    def _write_loop(self):
        while not self._stop.is_set():
            with self._out_cv:
                while not self._stop.is_set() and (not self._outbox or self._ws is None):
                    self._out_cv.wait(0.5)
                if self._stop.is_set():
                    return
                item = self._outbox.popleft()
            ws = self._ws
            if ws is None:
                continue
            kind, _stream, job_id, data = item
            try:
                ws.send(data)
            except WebSocketError as err:
                if job_id is not None:
                    self._post_job_error(job_id, "OFFLINE", "could not send: %s" % err)


def describe_connect_error(err, url):
    """A sentence a user can act on."""
    if isinstance(err, HandshakeError):
        if err.status == 401:
            return "the service at %s refused the token (401): set the token in the add-on preferences" % url
        if err.status == 403:
            return "the service at %s refused the connection (403): %s" % (url, err.body.strip()[:200] or "forbidden")
        if err.status == 404:
            return "no WebSocket endpoint at %s (404): check the server URL (it ends in /v1/ws)" % url
        return str(err)
    if isinstance(err, ConnectionRefusedError):
        return "nothing is listening at %s: start the service (depthcast serve) or fix the URL" % url
    if isinstance(err, OSError):
        return "cannot reach %s: %s" % (url, err.strerror or err)
    return str(err)


def wait_for_job(events, job_id, timeout, on_event=None):
    """Drains ``events`` (a queue.Queue) until ``job_id`` finishes. Returns the final Event
    ('result', 'error' or 'cancelled'), or None on timeout. Other events go to ``on_event``."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        try:
            ev = events.get(timeout=min(remaining, 0.5))
        except queue.Empty:
            continue
        if on_event is not None:
            on_event(ev)
        if ev.data.get("jobId") == job_id and ev.kind in ("result", "error", "cancelled"):
            return ev


__all__ = ["Session", "Event", "Backoff", "normalize_url", "with_token", "wait_for_job", "is_loopback_url",
           "Message"]
