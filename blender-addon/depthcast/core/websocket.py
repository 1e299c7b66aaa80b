"""A small RFC 6455 WebSocket client on the standard library (Blender's Python has no pip).

Covers what the depthcast service needs: the opening handshake (with ``Sec-WebSocket-Accept``
checked), masked client frames, fragmentation both ways (outgoing messages larger than
``fragment_size`` are split; incoming continuation frames are reassembled, with control frames
allowed in between), automatic pong replies to pings, client pings, and the closing handshake.
No extensions (no permessage-deflate) and no subprotocols.

Thread use: one thread reads (``recv``); any thread may send. Sends are serialized by a lock
so an automatic pong never interleaves with a fragmented message. After the handshake the socket
is non-blocking and every wait is a ``select()`` with its own deadline: the reader's short polls
never limit a writer, and a writer fails only when the peer accepts no byte for
``send_stall_timeout`` seconds (never half a frame left behind by a reader's timeout).
"""
import base64
import collections
import hashlib
import os
import select
import socket
import ssl
import struct
import threading
import time
from urllib.parse import urlsplit

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONTINUATION = 0x0
OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

CONTROL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)
DATA_OPCODES = (OP_TEXT, OP_BINARY)

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_PROTOCOL_ERROR = 1002
CLOSE_UNSUPPORTED = 1003
CLOSE_NO_STATUS = 1005
CLOSE_ABNORMAL = 1006
CLOSE_INVALID_DATA = 1007
CLOSE_TOO_BIG = 1009

#: Largest reassembled message accepted by default (results are PNGs; 64 MiB is plenty).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Outgoing messages larger than this are sent as fragments.
DEFAULT_FRAGMENT_SIZE = 1024 * 1024
#: A send fails when the peer takes no byte at all for this long (a slow reader is fine).
DEFAULT_SEND_STALL_TIMEOUT = 30.0

_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class WebSocketError(Exception):
    """Any failure of the WebSocket connection."""


class HandshakeError(WebSocketError):
    """The server did not upgrade the connection. ``status`` is the HTTP status (0 if none)."""

    def __init__(self, message, status=0, body=""):
        super().__init__(message)
        self.status = status
        self.body = body


class ProtocolError(WebSocketError):
    """The peer broke RFC 6455; the connection is failed with close code ``code``."""

    def __init__(self, message, code=CLOSE_PROTOCOL_ERROR):
        super().__init__(message)
        self.code = code


class ConnectionClosed(WebSocketError):
    """The connection is closed (``code`` 1006 when it dropped without a close frame)."""

    def __init__(self, code=CLOSE_ABNORMAL, reason=""):
        super().__init__("connection closed (%d%s)" % (code, ": " + reason if reason else ""))
        self.code = code
        self.reason = reason


class Message:
    """One complete data message: ``opcode`` is OP_TEXT (``data`` is ``str``) or OP_BINARY (``bytes``)."""

    __slots__ = ("opcode", "data")

    def __init__(self, opcode, data):
        self.opcode = opcode
        self.data = data

    @property
    def is_text(self):
        return self.opcode == OP_TEXT

    def __repr__(self):
        kind = "text" if self.is_text else "binary"
        return "Message(%s, %d %s)" % (kind, len(self.data), "chars" if self.is_text else "bytes")


def parse_ws_url(url):
    """Returns ``(secure, host, port, resource)`` for a ws:// or wss:// URL (http(s) accepted too)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in ("ws", "http"):
        secure = False
    elif scheme in ("wss", "https"):
        secure = True
    else:
        raise ValueError("not a WebSocket URL (want ws:// or wss://): %r" % url)
    if not parts.hostname:
        raise ValueError("WebSocket URL has no host: %r" % url)
    port = parts.port or (443 if secure else 80)
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    return secure, parts.hostname, port, resource


def accept_key(key):
    """The ``Sec-WebSocket-Accept`` value a server must answer for ``key``."""
    digest = hashlib.sha1((key + GUID).encode("ascii")).digest()
    return base64.b64encode(digest).decode("ascii")


def apply_mask(data, mask_key):
    """XORs ``data`` with the 4-byte ``mask_key`` (masking and unmasking are the same)."""
    if not data:
        return b""
    # XOR as one big integer: much faster in pure Python than a per-byte loop.
    n = len(data)
    key = (mask_key * (n // 4 + 1))[:n]
    value = int.from_bytes(data, "little") ^ int.from_bytes(key, "little")
    return value.to_bytes(n, "little")


def encode_frame(opcode, payload, fin=True, mask=True, mask_key=None, rsv=0):
    """One frame's bytes. Clients must mask (``mask=True``); servers must not."""
    payload = bytes(payload)
    first = (0x80 if fin else 0) | ((rsv & 0x7) << 4) | (opcode & 0x0F)
    n = len(payload)
    mask_bit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", first, mask_bit | n)
    elif n < 1 << 16:
        head = struct.pack("!BBH", first, mask_bit | 126, n)
    else:
        head = struct.pack("!BBQ", first, mask_bit | 127, n)
    if not mask:
        return head + payload
    if mask_key is None:
        mask_key = os.urandom(4)
    return head + mask_key + apply_mask(payload, mask_key)


#: One parsed frame; its payload unmasked.
Frame = collections.namedtuple("Frame", "fin rsv opcode masked payload")


def parse_frame(buf, max_payload):
    """Parses one frame from the start of ``buf`` (bytearray). Returns ``(frame, consumed)`` or
    ``(None, 0)`` when ``buf`` does not hold a whole frame yet. Payloads come back unmasked."""
    if len(buf) < 2:
        return None, 0
    b0, b1 = buf[0], buf[1]
    fin = bool(b0 & 0x80)
    rsv = (b0 >> 4) & 0x7
    opcode = b0 & 0x0F
    masked = bool(b1 & 0x80)
    n = b1 & 0x7F
    pos = 2
    if n == 126:
        if len(buf) < 4:
            return None, 0
        (n,) = struct.unpack_from("!H", buf, 2)
        pos = 4
    elif n == 127:
        if len(buf) < 10:
            return None, 0
        (n,) = struct.unpack_from("!Q", buf, 2)
        if n >> 63:
            raise ProtocolError("frame length has its most significant bit set")
        pos = 10
    if n > max_payload:
        raise ProtocolError("frame of %d bytes exceeds the %d-byte limit" % (n, max_payload), CLOSE_TOO_BIG)
    mask_key = None
    if masked:
        if len(buf) < pos + 4:
            return None, 0
        mask_key = bytes(buf[pos:pos + 4])
        pos += 4
    if len(buf) < pos + n:
        return None, 0
    payload = bytes(buf[pos:pos + n])
    if masked:
        payload = apply_mask(payload, mask_key)
    return Frame(fin, rsv, opcode, masked, payload), pos + n


class WebSocket:
    """A connected client WebSocket. Use :meth:`connect` to open one."""

    def __init__(self, sock, *, max_message_bytes=DEFAULT_MAX_MESSAGE_BYTES, fragment_size=DEFAULT_FRAGMENT_SIZE,
                 initial_data=b"", send_stall_timeout=DEFAULT_SEND_STALL_TIMEOUT):
        self.sock = sock
        sock.setblocking(False)
        self.send_stall_timeout = send_stall_timeout
        self.max_message_bytes = max_message_bytes
        self.fragment_size = fragment_size
        self._buf = bytearray(initial_data)
        self._send_lock = threading.Lock()
        self._frag_opcode = None
        self._frag_parts = []
        self._frag_size = 0
        self._close_sent = False
        self.closed = False
        self.close_code = None
        self.close_reason = ""
        #: time.monotonic() of the last pong received, and its payload
        self.last_pong = None
        self.last_pong_data = b""
        self.on_pong = None

    # ---- opening ----
    @classmethod
    def connect(cls, url, *, headers=None, timeout=10.0, ssl_context=None, **options):
        """Opens a TCP (or TLS) connection to ``url`` and performs the opening handshake.
        ``headers`` is a dict of extra request headers (for example ``Authorization``).
        No ``Origin`` header is sent unless given."""
        secure, host, port, resource = parse_ws_url(url)
        sock = socket.create_connection((host, port), timeout=timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if secure:
                context = ssl_context or ssl.create_default_context()
                sock = context.wrap_socket(sock, server_hostname=host)
            key = base64.b64encode(os.urandom(16)).decode("ascii")
            host_header = host if ":" not in host else "[%s]" % host
            if port != (443 if secure else 80):
                host_header += ":%d" % port
            lines = [
                "GET %s HTTP/1.1" % resource,
                "Host: %s" % host_header,
                "Upgrade: websocket",
                "Connection: Upgrade",
                "Sec-WebSocket-Key: %s" % key,
                "Sec-WebSocket-Version: 13",
                "User-Agent: depthcast-blender",
            ]
            for name, value in (headers or {}).items():
                if "\r" in str(value) or "\n" in str(value) or "\r" in name or "\n" in name:
                    raise ValueError("header %r contains a line break" % name)
                lines.append("%s: %s" % (name, value))
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            status, response_headers, rest = _read_http_response(sock, deadline=time.monotonic() + timeout)
            if status != 101:
                body = rest[:400].decode("utf-8", "replace")
                raise HandshakeError("server answered HTTP %d instead of upgrading to WebSocket%s"
                                     % (status, (": " + body.strip()) if body.strip() else ""), status, body)
            if response_headers.get("upgrade", "").lower() != "websocket":
                raise HandshakeError("server upgraded to %r, not websocket" % response_headers.get("upgrade"), status)
            if "upgrade" not in response_headers.get("connection", "").lower():
                raise HandshakeError("handshake response lacks 'Connection: Upgrade'", status)
            if response_headers.get("sec-websocket-accept") != accept_key(key):
                raise HandshakeError("Sec-WebSocket-Accept does not match the key sent", status)
            if response_headers.get("sec-websocket-extensions"):
                raise HandshakeError("server negotiated extensions that were not offered: %s"
                                     % response_headers["sec-websocket-extensions"], status)
            sock.settimeout(None)
            return cls(sock, initial_data=rest, **options)
        except BaseException:
            sock.close()
            raise

    # ---- sending ----
    def _send_frames(self, frames):
        with self._send_lock:
            if self.closed or self._close_sent and frames and frames[0][0] != OP_CLOSE:
                raise ConnectionClosed(self.close_code or CLOSE_ABNORMAL, self.close_reason)
            try:
                for opcode, payload, fin in frames:
                    self._send_all(encode_frame(opcode, payload, fin=fin, mask=True))
            except OSError as err:
                self._mark_closed(CLOSE_ABNORMAL, str(err))
                raise ConnectionClosed(CLOSE_ABNORMAL, str(err)) from None

    def _send_all(self, data, stall_timeout=None):
        """Writes all of ``data`` on the non-blocking socket, waiting in ``select()`` while the
        peer's window is full. Raises ``socket.timeout`` after ``send_stall_timeout`` seconds
        without progress. Callers hold the send lock."""
        stall = self.send_stall_timeout if stall_timeout is None else stall_timeout
        view = memoryview(data).cast("B")
        stall_deadline = time.monotonic() + stall
        while len(view):
            try:
                n = self.sock.send(view)
            except _WOULD_BLOCK:
                n = 0
            if n:
                view = view[n:]
                stall_deadline = time.monotonic() + stall
                continue
            remaining = stall_deadline - time.monotonic()
            if remaining <= 0:
                raise socket.timeout("the peer took no data for %.1f s" % stall)
            select.select([], [self.sock], [], min(remaining, 1.0))

    def send(self, data):
        """Sends ``str`` as a text message or bytes-like as a binary message, fragmented when
        larger than ``fragment_size``."""
        if isinstance(data, str):
            opcode, payload = OP_TEXT, data.encode("utf-8")
        else:
            opcode, payload = OP_BINARY, memoryview(data).cast("B")
        size = self.fragment_size or len(payload) or 1
        if len(payload) <= size:
            self._send_frames([(opcode, payload, True)])
            return
        frames = []
        for start in range(0, len(payload), size):
            chunk = payload[start:start + size]
            last = start + size >= len(payload)
            frames.append((opcode if start == 0 else OP_CONTINUATION, chunk, last))
        self._send_frames(frames)

    def send_text(self, text):
        self.send(str(text))

    def send_binary(self, data):
        self.send(bytes(data) if isinstance(data, str) else data)

    def ping(self, data=b""):
        if len(data) > 125:
            raise ValueError("ping payload over 125 bytes")
        self._send_frames([(OP_PING, data, True)])

    def pong(self, data=b""):
        self._send_frames([(OP_PONG, data, True)])

    # ---- receiving ----
    def _fill(self, deadline):
        """Reads more bytes into the buffer. Returns False on timeout. Waits in ``select()``
        (the socket's own timeout is never set: a writer shares it)."""
        while True:
            pending = self.sock.pending() if hasattr(self.sock, "pending") else 0
            if not pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                try:
                    readable, _, _ = select.select([self.sock], [], [], remaining)
                except (OSError, ValueError) as err:  # closed by another thread
                    self._mark_closed(CLOSE_ABNORMAL, str(err))
                    raise ConnectionClosed(CLOSE_ABNORMAL, str(err)) from None
                if not readable:
                    return False
            try:
                chunk = self.sock.recv(256 * 1024)
            except _WOULD_BLOCK:
                continue
            except OSError as err:
                self._mark_closed(CLOSE_ABNORMAL, str(err))
                raise ConnectionClosed(CLOSE_ABNORMAL, str(err)) from None
            break
        if not chunk:
            self._mark_closed(self.close_code or CLOSE_ABNORMAL, self.close_reason or "connection dropped")
            raise ConnectionClosed(self.close_code or CLOSE_ABNORMAL, self.close_reason or "connection dropped")
        self._buf.extend(chunk)
        return True

    def recv(self, timeout=None):
        """Returns the next complete :class:`Message`, or ``None`` when ``timeout`` seconds pass
        first. Answers pings, records pongs, and raises :class:`ConnectionClosed` on close."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.closed:
                raise ConnectionClosed(self.close_code or CLOSE_ABNORMAL, self.close_reason)
            try:
                frame, used = parse_frame(self._buf, self.max_message_bytes)
            except ProtocolError as err:
                self._fail(err.code, str(err))
                raise
            if frame is None:
                if not self._fill(deadline):
                    return None
                continue
            del self._buf[:used]
            message = self._handle_frame(frame)
            if message is not None:
                return message

    def _handle_frame(self, frame):
        if frame.masked:
            self._fail(CLOSE_PROTOCOL_ERROR, "server frames must not be masked")
        if frame.rsv:
            self._fail(CLOSE_PROTOCOL_ERROR, "reserved bits set without a negotiated extension")
        op = frame.opcode
        if op in CONTROL_OPCODES:
            if not frame.fin or len(frame.payload) > 125:
                self._fail(CLOSE_PROTOCOL_ERROR, "control frames must be unfragmented and at most 125 bytes")
            if op == OP_PING:
                try:
                    self.pong(frame.payload)
                except ConnectionClosed:
                    pass
                return None
            if op == OP_PONG:
                self.last_pong = time.monotonic()
                self.last_pong_data = frame.payload
                if self.on_pong:
                    self.on_pong(frame.payload)
                return None
            self._on_close_frame(frame.payload)
            return None  # _on_close_frame raises
        if op == OP_CONTINUATION:
            if self._frag_opcode is None:
                self._fail(CLOSE_PROTOCOL_ERROR, "continuation frame without a message to continue")
            self._append_fragment(frame.payload)
            if not frame.fin:
                return None
            opcode, data = self._frag_opcode, b"".join(self._frag_parts)
            self._frag_opcode, self._frag_parts, self._frag_size = None, [], 0
            return self._make_message(opcode, data)
        if op in DATA_OPCODES:
            if self._frag_opcode is not None:
                self._fail(CLOSE_PROTOCOL_ERROR, "new data frame while a fragmented message is unfinished")
            if frame.fin:
                return self._make_message(op, frame.payload)
            self._frag_opcode = op
            self._append_fragment(frame.payload)
            return None
        self._fail(CLOSE_PROTOCOL_ERROR, "unknown opcode 0x%x" % op)

    def _append_fragment(self, payload):
        self._frag_size += len(payload)
        if self._frag_size > self.max_message_bytes:
            self._fail(CLOSE_TOO_BIG, "message exceeds the %d-byte limit" % self.max_message_bytes)
        self._frag_parts.append(payload)

    def _make_message(self, opcode, data):
        if opcode == OP_TEXT:
            try:
                return Message(OP_TEXT, data.decode("utf-8"))
            except UnicodeDecodeError:
                self._fail(CLOSE_INVALID_DATA, "text message is not valid UTF-8")
        return Message(OP_BINARY, data)

    def _on_close_frame(self, payload):
        code, reason = CLOSE_NO_STATUS, ""
        if len(payload) == 1:
            self._fail(CLOSE_PROTOCOL_ERROR, "close frame with a 1-byte payload")
        if len(payload) >= 2:
            (code,) = struct.unpack("!H", payload[:2])
            reason = payload[2:].decode("utf-8", "replace")
        if not self._close_sent:
            try:
                self._send_close(code if code != CLOSE_NO_STATUS else CLOSE_NORMAL, "")
            except ConnectionClosed:
                pass
        self._mark_closed(code, reason)
        raise ConnectionClosed(code, reason)

    def _send_close(self, code, reason):
        payload = struct.pack("!H", code) + reason.encode("utf-8")[:123]
        with self._send_lock:
            if self._close_sent or self.closed:
                return
            self._close_sent = True
            try:
                # a close is a courtesy: never wait long on a peer that stopped reading
                self._send_all(encode_frame(OP_CLOSE, payload, mask=True), stall_timeout=2.0)
            except OSError:
                pass

    def _fail(self, code, message):
        self._send_close(code, message[:100])
        self._mark_closed(code, message)
        raise ProtocolError(message, code)

    def _mark_closed(self, code, reason):
        if self.closed:
            return
        self.closed = True
        self.close_code = code
        self.close_reason = reason
        try:
            self.sock.close()
        except OSError:
            pass

    # ---- closing ----
    def close(self, code=CLOSE_NORMAL, reason="", timeout=2.0):
        """Closing handshake: sends a close frame and waits up to ``timeout`` seconds for the
        server's close reply (data messages arriving meanwhile are dropped). Never raises."""
        if self.closed:
            return
        self._send_close(code, reason)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                self.recv(timeout=max(0.0, deadline - time.monotonic()))
        except WebSocketError:
            pass
        self._mark_closed(code, reason)

    def abort(self):
        """Drops the connection without a closing handshake (unblocks a reader thread)."""
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._mark_closed(CLOSE_ABNORMAL, "aborted")


def _read_http_response(sock, deadline, limit=64 * 1024):
    data = bytearray()
    while b"\r\n\r\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise HandshakeError("timed out waiting for the handshake response")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            raise HandshakeError("timed out waiting for the handshake response") from None
        if not chunk:
            raise HandshakeError("connection closed during the handshake")
        data.extend(chunk)
        if len(data) > limit:
            raise HandshakeError("handshake response headers exceed %d bytes" % limit)
    head, _, rest = bytes(data).partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0].split(" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith("HTTP/") or not status_line[1].isdigit():
        raise HandshakeError("not an HTTP response: %r" % lines[0][:80])
    status = int(status_line[1])
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            key = name.strip().lower()
            headers[key] = (headers[key] + ", " if key in headers else "") + value.strip()
    if status != 101:
        # Read a little of the body so the error can say why (e.g. a JSON error from the service).
        length = int(headers.get("content-length", "0") or 0)
        while len(rest) < min(length, 4096) and time.monotonic() < deadline:
            sock.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                chunk = sock.recv(4096)
            except (socket.timeout, OSError):
                break
            if not chunk:
                break
            rest += chunk
    return status, headers, rest
