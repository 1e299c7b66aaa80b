"""A tiny WebSocket server for tests, on ``socketserver`` (127.0.0.1, ephemeral port).

It is deliberately independent of the add-on's client code: its own handshake and frame parser,
so the tests check our client against a second reading of RFC 6455. Every frame it reads is
recorded with its ``masked`` flag so tests can assert the client masks.
"""
import base64
import hashlib
import json
import os
import socket
import socketserver
import struct
import sys
import threading

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "depthcast"))


class RawFrame:
    def __init__(self, fin, opcode, masked, payload):
        self.fin = fin
        self.opcode = opcode
        self.masked = masked
        self.payload = payload

    def __repr__(self):
        return "RawFrame(fin=%s, op=%d, masked=%s, %d bytes)" % (self.fin, self.opcode, self.masked, len(self.payload))


class ServerConn:
    """The server side of one accepted connection."""

    def __init__(self, sock, request_headers, path):
        self.sock = sock
        self.headers = request_headers
        self.path = path
        self.frames = []  # every frame received, in order

    def _read_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise EOFError("client closed")
            buf += chunk
        return buf

    def read_frame(self):
        b0, b1 = self._read_exact(2)
        fin, opcode = bool(b0 & 0x80), b0 & 0x0F
        masked, n = bool(b1 & 0x80), b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._read_exact(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._read_exact(8))
        key = self._read_exact(4) if masked else None
        data = self._read_exact(n)
        if masked:
            data = bytes(b ^ key[i % 4] for i, b in enumerate(data))
        frame = RawFrame(fin, opcode, masked, data)
        self.frames.append(frame)
        return frame

    def read_message(self):
        """Reassembles fragments; answers pings. Returns (opcode, bytes); opcode 8 for close."""
        parts, first = [], None
        while True:
            f = self.read_frame()
            if f.opcode == 9:
                self.send_frame(10, f.payload)
                continue
            if f.opcode == 10:
                continue
            if f.opcode == 8:
                return 8, f.payload
            if f.opcode != 0:
                first = f.opcode
            parts.append(f.payload)
            if f.fin:
                return first, b"".join(parts)

    def send_frame(self, opcode, payload, fin=True, mask=False):
        payload = bytes(payload)
        n = len(payload)
        head = bytes([(0x80 if fin else 0) | opcode])
        mbit = 0x80 if mask else 0
        if n < 126:
            head += bytes([mbit | n])
        elif n < 65536:
            head += bytes([mbit | 126]) + struct.pack("!H", n)
        else:
            head += bytes([mbit | 127]) + struct.pack("!Q", n)
        if mask:
            key = os.urandom(4)
            payload = key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + payload)

    def send_message(self, data, fragment=None):
        opcode = 1 if isinstance(data, str) else 2
        payload = data.encode("utf-8") if isinstance(data, str) else bytes(data)
        if not fragment or len(payload) <= fragment:
            self.send_frame(opcode, payload)
            return
        chunks = [payload[i:i + fragment] for i in range(0, len(payload), fragment)]
        for i, chunk in enumerate(chunks):
            self.send_frame(opcode if i == 0 else 0, chunk, fin=(i == len(chunks) - 1))

    def send_json(self, obj):
        self.send_message(json.dumps(obj))

    def send_binary_message(self, header, payload=b""):
        h = json.dumps(header).encode("utf-8")
        self.send_message(struct.pack("<I", len(h)) + h + payload)

    def close(self, code=1000, reason=""):
        try:
            self.send_frame(8, struct.pack("!H", code) + reason.encode())
        except OSError:
            pass


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        server = self.server
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = self.request.recv(4096)
            if not chunk:
                return
            data += chunk
        head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        path = head[0].split(" ")[1]
        headers = {}
        for line in head[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        server.requests.append((path, headers))
        if server.refuse_status:
            body = json.dumps({"code": "UNAUTHORIZED", "message": "bad token"}).encode()
            self.request.sendall(b"HTTP/1.1 %d Refused\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                                 b"Connection: close\r\n\r\n" % (server.refuse_status, len(body)) + body)
            return
        key = headers["sec-websocket-key"].encode()
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        if server.bad_accept:
            accept = base64.b64encode(b"x" * 20).decode()
        self.request.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                              "Sec-WebSocket-Accept: %s\r\n\r\n" % accept).encode())
        conn = ServerConn(self.request, headers, path)
        server.connections.append(conn)
        try:
            server.app(conn)
        except (EOFError, OSError):
            pass


class TestServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, app, refuse_status=0, bad_accept=False, rcvbuf=0):
        super().__init__(("127.0.0.1", 0), _Handler, bind_and_activate=False)
        if rcvbuf:
            # set before listen() so accepted sockets inherit it (a slow reader's small window)
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.server_bind()
        self.server_activate()
        self.app = app
        self.refuse_status = refuse_status
        self.bad_accept = bad_accept
        self.requests = []
        self.connections = []
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self):
        return "ws://127.0.0.1:%d/v1/ws" % self.server_address[1]

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self.shutdown()
        self.server_close()
        for c in self.connections:
            try:
                c.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def echo_app(conn):
    """Echoes every data message back; replies to close; sends fragmented when asked by a text
    message starting with 'fragment:'."""
    while True:
        op, data = conn.read_message()
        if op == 8:
            conn.send_frame(8, data[:2] if len(data) >= 2 else b"")
            return
        if op == 1 and data.startswith(b"fragment:"):
            conn.send_message(data.decode(), fragment=3)
        elif op == 1 and data == b"ping-me":
            conn.send_frame(9, b"srv-ping")
        else:
            conn.send_message(data.decode() if op == 1 else data)
