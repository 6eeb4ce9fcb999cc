"""Dialers: open the transport to a node.  Only plain TCP so far."""

import socket as _stdsocket

from gevent import socket

from gostgev.registry import Registry

__all__ = ["DIALERS", "dial_tcp", "DEFAULT_DIAL_TIMEOUT"]

DIALERS = Registry("dialer")

#: seconds to wait for a TCP handshake (GOST's service ``dialTimeout``)
DEFAULT_DIAL_TIMEOUT = 10.0


def dial_tcp(host, port, timeout=DEFAULT_DIAL_TIMEOUT):
    """Connect to ``host:port``; the returned socket is in blocking mode."""
    sock = socket.create_connection((host, port), timeout=timeout)
    sock.settimeout(None)
    # Proxied request/response traffic must not wait for Nagle's algorithm.
    sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
    return sock


DIALERS.register("tcp")(dial_tcp)
