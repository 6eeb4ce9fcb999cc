#!/usr/bin/env python3
"""Where the memory of an idle proxied connection goes (tracemalloc, in-process).

    python3 scripts/memprobe.py [--tunnel] [N]
    python3 scripts/memprobe.py --greenlet [N]

Opens N keep-alive connections through a sniffing ``tcp`` forwarder (or,
with ``--tunnel``, through a tunnel entrypoint, tunnel server and rtcp
client) to a local backend, all in this process, and prints the Python-heap
growth per connection and the allocation sites that grew most.  Client and backend live
in the same process, so their sockets and greenlets are counted too; the
allocation sites tell which side each cost belongs to.

``--greenlet`` prints the floor under those figures instead: the resident
memory (RSS, not just the Python heap) of one greenlet waiting on an event,
as every idle connection's handler greenlet does.  CPython gives each
greenlet its own stack of Python frames, and greenlet keeps the part of the
C stack a waiting greenlet used.
"""

import gc
import logging
import os
import sys
import tracemalloc

import gevent
import gevent.event
from gevent import socket
from gevent.server import StreamServer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gostgev.components import build_config  # noqa: E402
from gostgev.service import Service  # noqa: E402

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def backend(sock, _address):
    sock.recv(4096)
    sock.sendall(RESPONSE)
    gevent.sleep(3600)   # keep the connection idle


TUNNEL_ID = "4d21094e-b74c-4916-86c1-d9fa36ea677b"


def forwarder_config(backend_port):
    return {"services": [{
        "name": "f", "addr": "127.0.0.1:0", "handler": {"type": "tcp", "metadata": {"sniffing": True}},
        "forwarder": {"nodes": [{"name": "n", "addr": "127.0.0.1:%d" % backend_port}]}}]}


def tunnel_server_config():
    return {"services": [{
        "name": "server", "addr": "127.0.0.1:0", "handler": {"type": "tunnel", "metadata": {
            "entrypoint": "127.0.0.1:0", "ingress": "in"}}}],
        "ingresses": [{"name": "in", "rules": [{"hostname": "x", "endpoint": TUNNEL_ID}]}]}


def tunnel_client_config(server_port, backend_port):
    return {"services": [{
        "name": "client", "addr": ":0", "handler": {"type": "rtcp"}, "listener": {"type": "rtcp", "chain": "c"},
        "forwarder": {"nodes": [{"name": "n", "addr": "127.0.0.1:%d" % backend_port}]}}],
        "chains": [{"name": "c", "hops": [{"name": "h", "nodes": [{
            "name": "s", "addr": "127.0.0.1:%d" % server_port,
            "connector": {"type": "tunnel", "metadata": {"tunnel.id": TUNNEL_ID}}}]}]}]}


def start(raw):
    service = Service(build_config(raw, []).services[0])
    service.start()
    return service


def proxy_port(tunnel, backend_port):
    """The port clients connect to, with everything behind it started."""
    if not tunnel:
        return start(forwarder_config(backend_port)).address[1]
    server = start(tunnel_server_config())
    start(tunnel_client_config(server.address[1], backend_port))
    registry = server.handler.registry
    for _ in range(100):
        if any(not c.closed for t in registry.tunnels() for c in t.connectors):
            break
        gevent.sleep(0.05)
    return server.handler.entrypoints[0].address[1]


def rss_kib():
    with open("/proc/self/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))


def greenlet_floor(count):
    """KiB of RSS per greenlet waiting on an event, a few calls deep (as a handler waits)."""
    event = gevent.event.Event()
    started = []

    def wait(depth):
        if depth:
            return wait(depth - 1)
        started.append(True)
        event.wait()

    gevent.sleep(0)
    before = rss_kib()
    waiting = [gevent.spawn(wait, 10) for _ in range(count)]
    for _ in range(600):          # gevent starts a burst of greenlets over several loop turns
        if len(started) == count:
            break
        gevent.sleep(0.05)
    grown = rss_kib() - before
    event.set()
    gevent.joinall(waiting)
    return grown / count


def main():
    if "--greenlet" in sys.argv:
        args = [a for a in sys.argv[1:] if a != "--greenlet"]
        print("RSS per waiting greenlet: %.1f KiB" % greenlet_floor(int(args[0]) if args else 5000))
        return
    args = [a for a in sys.argv[1:] if a != "--tunnel"]
    count = int(args[0]) if args else 1000
    logging.disable(logging.CRITICAL)
    server = StreamServer(("127.0.0.1", 0), backend)
    server.start()
    port = proxy_port("--tunnel" in sys.argv, server.address[1])
    clients = []

    def connect():
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(100)
        clients.append(sock)

    gevent.joinall([gevent.spawn(connect) for _ in range(50)])   # warm up pools and caches
    gevent.sleep(0.5)
    gc.collect()
    tracemalloc.start(25)
    before = tracemalloc.take_snapshot()
    gevent.joinall([gevent.spawn(connect) for _ in range(count)])
    gevent.sleep(1)
    gc.collect()
    stats = tracemalloc.take_snapshot().compare_to(before, "lineno")
    print("Python heap per idle proxied connection (client, proxy and backend sides): %.1f KiB"
          % (sum(s.size_diff for s in stats) / count / 1024))
    for stat in stats[:12]:
        print("%8.0f B/conn  %s" % (stat.size_diff / count, stat.traceback[0]))


if __name__ == "__main__":
    main()
