#!/usr/bin/env python3
"""cutproxy.py -- a TCP proxy whose link the tests cut and mend.

    cutproxy.py LISTEN_PORT TARGET_PORT PIDFILE

Forwards every connection to 127.0.0.1:LISTEN_PORT on to
127.0.0.1:TARGET_PORT.  SIGUSR1 cuts the link as a cable pulled out
would: nothing passes either way any more and new connections wait in
the backlog, but no connection is closed.  SIGUSR2 mends it: what was
held goes through.  Writes its pid to PIDFILE once it listens, and
PIDFILE.cut exists while the link is cut.
"""
import os
import selectors
import signal
import socket
import sys
import time

listen_port, target_port, pidfile = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
cut = False
pairs = {}  # socket -> its peer


def on_cut(*_):
    global cut
    cut = True


def on_mend(*_):
    global cut
    cut = False


signal.signal(signal.SIGUSR1, on_cut)
signal.signal(signal.SIGUSR2, on_mend)
sel = selectors.DefaultSelector()
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", listen_port))
server.listen(64)
sel.register(server, selectors.EVENT_READ)
with open(pidfile + ".tmp", "w") as f:
    f.write(str(os.getpid()))
os.rename(pidfile + ".tmp", pidfile)

registered = True  # are the sockets watched (the link up)?
while True:
    if cut == registered:  # the link changed: watch the sockets, or stop
        for s in [server] + list(pairs):
            if registered:
                sel.unregister(s)
            else:
                sel.register(s, selectors.EVENT_READ)
        registered = not cut
        if cut:
            open(pidfile + ".cut", "w").close()
        else:
            os.unlink(pidfile + ".cut")
    try:
        events = sel.select(timeout=0.05) if registered else []
    except InterruptedError:
        continue
    if not registered:
        time.sleep(0.05)
        continue
    for key, _ in events:
        s = key.fileobj
        if s is server:
            conn, _ = server.accept()
            try:
                up = socket.create_connection(("127.0.0.1", target_port))
            except OSError:
                conn.close()
                continue
            pairs[conn], pairs[up] = up, conn
            sel.register(conn, selectors.EVENT_READ)
            sel.register(up, selectors.EVENT_READ)
            continue
        if s not in pairs:
            continue
        try:
            data = s.recv(65536)
        except OSError:
            data = b""
        peer = pairs[s]
        if data:
            try:
                peer.sendall(data)
                continue
            except OSError:
                pass
        for x in (s, peer):
            pairs.pop(x, None)
            try:
                sel.unregister(x)
            except (KeyError, ValueError):
                pass
            x.close()
