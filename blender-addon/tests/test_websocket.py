import os
import socket
import struct
import threading
import time
import unittest

import _path  # noqa: F401
from core import websocket as W
from wsserver import TestServer, echo_app


class FrameCodecTest(unittest.TestCase):
    def test_mask_roundtrip_and_known_vector(self):
        # RFC 6455 section 5.7: masked "Hello" with key 37 fa 21 3d
        frame = W.encode_frame(W.OP_TEXT, b"Hello", mask=True, mask_key=bytes.fromhex("37fa213d"))
        self.assertEqual(frame, bytes.fromhex("818537fa213d7f9f4d5158"))
        self.assertEqual(W.apply_mask(W.apply_mask(b"abcdefg", b"\x01\x02\x03\x04"), b"\x01\x02\x03\x04"), b"abcdefg")

    def test_unmasked_vectors_and_lengths(self):
        self.assertEqual(W.encode_frame(W.OP_TEXT, b"Hello", mask=False), bytes.fromhex("810548656c6c6f"))
        # fragmented "Hel" + "lo"
        self.assertEqual(W.encode_frame(W.OP_TEXT, b"Hel", fin=False, mask=False), bytes.fromhex("010348656c"))
        self.assertEqual(W.encode_frame(W.OP_CONTINUATION, b"lo", mask=False), bytes.fromhex("80026c6f"))
        f = W.encode_frame(W.OP_BINARY, b"x" * 256, mask=False)
        self.assertEqual(f[:4], bytes.fromhex("827e0100"))
        f = W.encode_frame(W.OP_BINARY, b"x" * 65536, mask=False)
        self.assertEqual(f[:10], bytes.fromhex("827f0000000000010000"))

    def test_parse_frame_incremental(self):
        data = W.encode_frame(W.OP_BINARY, bytes(range(200)), mask=True)
        for cut in range(len(data)):
            frame, used = W.parse_frame(bytearray(data[:cut]), 1 << 20)
            self.assertIsNone(frame)
        frame, used = W.parse_frame(bytearray(data + b"extra"), 1 << 20)
        self.assertEqual(used, len(data))
        self.assertTrue(frame.masked)
        self.assertEqual(frame.payload, bytes(range(200)))

    def test_parse_frame_limit(self):
        data = W.encode_frame(W.OP_BINARY, b"x" * 1000, mask=False)
        with self.assertRaises(W.ProtocolError) as cm:
            W.parse_frame(bytearray(data), 999)
        self.assertEqual(cm.exception.code, W.CLOSE_TOO_BIG)

    def test_accept_key_rfc_example(self):
        self.assertEqual(W.accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")

    def test_parse_url(self):
        self.assertEqual(W.parse_ws_url("ws://127.0.0.1:7860/v1/ws?token=a"), (False, "127.0.0.1", 7860, "/v1/ws?token=a"))
        self.assertEqual(W.parse_ws_url("wss://example.org"), (True, "example.org", 443, "/"))
        with self.assertRaises(ValueError):
            W.parse_ws_url("ftp://x")


class LiveServerTest(unittest.TestCase):
    def test_echo_text_and_binary_masked(self):
        with TestServer(echo_app) as srv:
            ws = W.WebSocket.connect(srv.url, headers={"Authorization": "Bearer t0k"})
            ws.send("héllo")
            self.assertEqual(ws.recv(timeout=5).data, "héllo")
            blob = os.urandom(70000)
            ws.send(blob)
            msg = ws.recv(timeout=5)
            self.assertFalse(msg.is_text)
            self.assertEqual(msg.data, blob)
            ws.close()
            conn = srv.connections[0]
            self.assertTrue(conn.frames, "server saw frames")
            self.assertTrue(all(f.masked for f in conn.frames), "every client frame is masked")
            path, headers = srv.requests[0]
            self.assertEqual(path, "/v1/ws")
            self.assertEqual(headers["authorization"], "Bearer t0k")
            self.assertNotIn("origin", headers, "no Origin header is sent")
            self.assertEqual(headers["sec-websocket-version"], "13")
            self.assertEqual(conn.frames[-1].opcode, W.OP_CLOSE)

    def test_outgoing_fragmentation(self):
        with TestServer(echo_app) as srv:
            ws = W.WebSocket.connect(srv.url, fragment_size=1000)
            blob = bytes(range(256)) * 10  # 2560 bytes -> 3 frames
            ws.send(blob)
            self.assertEqual(ws.recv(timeout=5).data, blob)
            ws.close()
            frames = srv.connections[0].frames
            data_frames = [f for f in frames if f.opcode in (0, 2)]
            self.assertEqual([(f.opcode, f.fin, len(f.payload)) for f in data_frames[:3]],
                             [(2, False, 1000), (0, False, 1000), (0, True, 560)])
            self.assertTrue(all(f.masked for f in frames))

    def test_incoming_fragmentation_with_interleaved_ping(self):
        def app(conn):
            conn.read_message()
            payload = "fragmented message".encode()
            conn.send_frame(1, payload[:5], fin=False)
            conn.send_frame(9, b"mid")  # control frame between fragments
            conn.send_frame(0, payload[5:10], fin=False)
            conn.send_frame(0, payload[10:], fin=True)
            f = conn.read_frame()  # the pong for "mid"
            conn.pong_seen = (f.opcode, f.payload, f.masked)
            conn.read_message()
        with TestServer(app) as srv:
            ws = W.WebSocket.connect(srv.url)
            ws.send("go")
            self.assertEqual(ws.recv(timeout=5).data, "fragmented message")
            time.sleep(0.2)
            self.assertEqual(srv.connections[0].pong_seen, (W.OP_PONG, b"mid", True))
            ws.close(timeout=0.5)

    def test_server_fragmentation_via_echo(self):
        with TestServer(echo_app) as srv:
            ws = W.WebSocket.connect(srv.url)
            ws.send("fragment:abcdefghij")
            self.assertEqual(ws.recv(timeout=5).data, "fragment:abcdefghij")
            ws.close()

    def test_client_ping_gets_pong(self):
        with TestServer(echo_app) as srv:
            ws = W.WebSocket.connect(srv.url)
            pongs = []
            ws.on_pong = pongs.append
            ws.ping(b"p1")
            self.assertIsNone(ws.recv(timeout=0.5))  # pong is not a message
            self.assertEqual(pongs, [b"p1"])
            self.assertEqual(ws.last_pong_data, b"p1")
            ws.close()

    def test_server_ping_answered(self):
        with TestServer(echo_app) as srv:
            ws = W.WebSocket.connect(srv.url)
            ws.send("ping-me")
            self.assertIsNone(ws.recv(timeout=0.5))
            ws.close()
            pongs = [f for f in srv.connections[0].frames if f.opcode == W.OP_PONG]
            self.assertEqual([(p.payload, p.masked) for p in pongs], [(b"srv-ping", True)])

    def test_server_close_is_answered(self):
        def app(conn):
            conn.read_message()
            conn.close(4001, "bye")
            conn.read_frame()
        with TestServer(app) as srv:
            ws = W.WebSocket.connect(srv.url)
            ws.send("x")
            with self.assertRaises(W.ConnectionClosed) as cm:
                ws.recv(timeout=5)
            self.assertEqual((cm.exception.code, cm.exception.reason), (4001, "bye"))
            time.sleep(0.1)
            last = srv.connections[0].frames[-1]
            self.assertEqual(last.opcode, W.OP_CLOSE)
            self.assertEqual(struct.unpack("!H", last.payload[:2])[0], 4001)

    def test_masked_server_frame_is_protocol_error(self):
        def app(conn):
            conn.send_frame(1, b"bad", mask=True)
            conn.read_frame()
        with TestServer(app) as srv:
            ws = W.WebSocket.connect(srv.url)
            with self.assertRaises(W.ProtocolError):
                ws.recv(timeout=5)
            self.assertTrue(ws.closed)

    def test_recv_timeout_keeps_partial_frame(self):
        def app(conn):
            frame = bytes([0x82, 0x7E]) + struct.pack("!H", 300) + b"a" * 300
            conn.sock.sendall(frame[:100])
            time.sleep(0.4)
            conn.sock.sendall(frame[100:])
            conn.read_message()
        with TestServer(app) as srv:
            ws = W.WebSocket.connect(srv.url)
            self.assertIsNone(ws.recv(timeout=0.1))
            msg = ws.recv(timeout=5)
            self.assertEqual(msg.data, b"a" * 300)
            ws.close(timeout=0.5)

    def test_dropped_connection(self):
        def app(conn):
            conn.sock.shutdown(socket.SHUT_RDWR)
        with TestServer(app) as srv:
            ws = W.WebSocket.connect(srv.url)
            with self.assertRaises(W.ConnectionClosed) as cm:
                ws.recv(timeout=5)
            self.assertEqual(cm.exception.code, W.CLOSE_ABNORMAL)

    def test_handshake_refused_and_bad_accept(self):
        with TestServer(echo_app, refuse_status=401) as srv:
            with self.assertRaises(W.HandshakeError) as cm:
                W.WebSocket.connect(srv.url)
            self.assertEqual(cm.exception.status, 401)
            self.assertIn("bad token", cm.exception.body)
        with TestServer(echo_app, bad_accept=True) as srv:
            with self.assertRaises(W.HandshakeError):
                W.WebSocket.connect(srv.url)

    def test_concurrent_senders_do_not_interleave(self):
        with TestServer(echo_app) as srv:
            ws = W.WebSocket.connect(srv.url, fragment_size=512)
            blobs = [bytes([i]) * 5000 for i in range(8)]
            threads = [threading.Thread(target=ws.send, args=(b,)) for b in blobs]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            got = sorted(ws.recv(timeout=5).data for _ in blobs)
            self.assertEqual(got, sorted(blobs))
            ws.close()

    def test_large_send_to_slow_reader_while_reading_with_short_timeouts(self):
        # The reader polls with millisecond timeouts on its own thread; those must not limit the
        # writer: a 4 MiB message to a peer that reads nothing for a while must arrive whole.
        def app(conn):
            time.sleep(1.0)
            op, data = conn.read_message()
            conn.send_message("%d:%d" % (len(data), sum(data[::4096])))
            conn.read_message()
        with TestServer(app, rcvbuf=32 * 1024) as srv:
            ws = W.WebSocket.connect(srv.url, fragment_size=4 * 1024 * 1024)
            ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
            got, stop = [], threading.Event()

            def reader():
                while not stop.is_set():
                    try:
                        msg = ws.recv(timeout=0.005)
                    except W.WebSocketError as err:
                        got.append(err)
                        return
                    if msg is not None:
                        got.append(msg.data)
                        return
            t = threading.Thread(target=reader)
            t.start()
            blob = bytes(range(256)) * (4 * 1024 * 1024 // 256)
            try:
                ws.send(blob)
            finally:
                t.join(timeout=20)
                stop.set()
            self.assertEqual(got, ["%d:%d" % (len(blob), sum(blob[::4096]))])
            ws.close(timeout=0.5)

    def test_refused_port(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        with self.assertRaises(ConnectionRefusedError):
            W.WebSocket.connect("ws://127.0.0.1:%d/v1/ws" % port, timeout=2)


if __name__ == "__main__":
    unittest.main()
