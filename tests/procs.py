"""Helpers for tests that run gostgev as a separate process (blocking sockets, no gevent)."""

import socket
import time

__all__ = ["free_port", "fetch", "eventually"]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def fetch(port, host="x", timeout=3):
    """One GET / with ``Connection: close``; the whole response, or b"" if the connection failed."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host.encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data
    except OSError:
        return b""


def eventually(predicate, seconds=10, step=0.05):
    """Poll until ``predicate()`` is true or ``seconds`` pass (bounded in time)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()
