"""Stands in for ``depthcast serve`` in tests: listens on --host/--port until terminated."""
import socket
import sys
import time

args = sys.argv[1:]
assert args[0] == "serve", args
host = args[args.index("--host") + 1]
port = int(args[args.index("--port") + 1])
print("fake serve", " ".join(args), flush=True)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port))
s.listen()
while True:
    time.sleep(0.1)
