"""Listeners: turn a service address into a bound, listening socket.

A listener only makes the socket; the service wraps it in a gevent
``StreamServer`` which runs one greenlet per accepted connection.
"""

import socket as _stdsocket

from gevent import socket

from gostgev.registry import Registry

__all__ = ["LISTENERS", "TcpListener", "BACKLOG"]

LISTENERS = Registry("listener")

#: listen(2) backlog; the kernel caps it at net.core.somaxconn
BACKLOG = 4096


@LISTENERS.register("tcp")
class TcpListener:
    def __init__(self, service_config):
        self.addr = service_config.addr

    def listen(self):
        """Bind and listen; an empty host means every interface, IPv4 and IPv6."""
        host = self.addr.host
        if not host:
            return _bind_any(self.addr.port)
        family = _stdsocket.AF_INET6 if ":" in host else _stdsocket.AF_INET
        infos = socket.getaddrinfo(host, self.addr.port, family, _stdsocket.SOCK_STREAM)
        return _bind(infos[0][0], infos[0][4])


def _bind_any(port):
    if _stdsocket.has_ipv6:
        try:
            return _bind(_stdsocket.AF_INET6, ("::", port), dual_stack=True)
        except OSError:
            pass  # IPv6 disabled in this kernel or namespace
    return _bind(_stdsocket.AF_INET, ("0.0.0.0", port))


def _bind(family, sockaddr, dual_stack=False):
    sock = socket.socket(family, _stdsocket.SOCK_STREAM)
    try:
        sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEADDR, 1)
        if dual_stack:
            sock.setsockopt(_stdsocket.IPPROTO_IPV6, _stdsocket.IPV6_V6ONLY, 0)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock
