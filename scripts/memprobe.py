#!/usr/bin/env python3
"""Where the memory of an idle proxied connection goes (tracemalloc, in-process).

    python3 scripts/memprobe.py [N]

Opens N keep-alive connections through a sniffing ``tcp`` forwarder to a
local backend, all in this process, and prints the Python-heap growth per
connection and the allocation sites that grew most.  Client and backend live
in the same process, so their sockets and greenlets are counted too; the
allocation sites tell which side each cost belongs to.
"""

import gc
import logging
import os
import sys
import tracemalloc

import gevent
from gevent import socket
from gevent.server import StreamServer

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gostgev.config.load import build_config  # noqa: E402
from gostgev.service import Service  # noqa: E402

RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


def backend(sock, _address):
    sock.recv(4096)
    sock.sendall(RESPONSE)
    gevent.sleep(3600)   # keep the connection idle


def main():
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    logging.disable(logging.CRITICAL)
    server = StreamServer(("127.0.0.1", 0), backend)
    server.start()
    config = build_config({"services": [{
        "name": "f", "addr": "127.0.0.1:0", "handler": {"type": "tcp", "metadata": {"sniffing": True}},
        "forwarder": {"nodes": [{"name": "n", "addr": "127.0.0.1:%d" % server.address[1]}]}}]}, [])
    service = Service(config.services[0])
    service.start()
    port = service.address[1]
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
