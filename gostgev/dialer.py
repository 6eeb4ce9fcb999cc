"""Dialers: open the transport to a node.

``tcp`` is a plain connection; ``tls`` adds TLS (pyOpenSSL); ``ws`` speaks
WebSocket over TCP and ``wss`` WebSocket over TLS, as GOST v3's dialers do, so
a tunnel can cross HTTP-only proxies and CDNs.  A dialer object is made once
per chain node (it holds the parsed TLS context) and ``dial`` is called per
connection.
"""

import ipaddress
import socket as _stdsocket
from dataclasses import dataclass

from gevent import socket

from gostgev.registry import Registry
from gostgev.settings import STR, component_options, setting

__all__ = ["DIALERS", "dial_tcp", "DEFAULT_DIAL_TIMEOUT", "TcpDialer"]

DIALERS = Registry("dialer")

#: seconds to wait for a TCP handshake (GOST's service ``dialTimeout``)
DEFAULT_DIAL_TIMEOUT = 10.0
#: GOST's default WebSocket path
DEFAULT_WS_PATH = "/ws"


def dial_tcp(host, port, timeout=DEFAULT_DIAL_TIMEOUT):
    """Connect to ``host:port``; the returned socket is in blocking mode."""
    family = _ip_family(host)
    if family is None:
        sock = socket.create_connection((host, port), timeout=timeout)
    else:
        # An IP literal needs no resolver: gevent's default one hands every
        # getaddrinfo to a thread, which doubled the cost of a dial.
        sock = socket.socket(family, _stdsocket.SOCK_STREAM)
        try:
            sock.settimeout(timeout)
            sock.connect((host, port))
        except BaseException:
            sock.close()
            raise
    sock.settimeout(None)
    # Proxied request/response traffic must not wait for Nagle's algorithm.
    sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
    return sock


def _ip_family(host):
    try:
        return _stdsocket.AF_INET6 if ipaddress.ip_address(host).version == 6 else _stdsocket.AF_INET
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class WsDialerOptions:
    path: str = setting("path", STR, DEFAULT_WS_PATH, "the WebSocket request path")
    host: str | None = setting("host", STR, None, "the Host header; default: the node's address")


@DIALERS.register("tcp")
class TcpDialer:
    """Plain TCP; subclasses add a handshake over the connection.

    The handshake is separate from the TCP connect so that a chain can run
    it over a connection that an earlier hop already relayed.
    """

    #: the dataclass of ``dialer.metadata``'s settings (gostgev.settings), None for none
    options_class = None

    @classmethod
    def parse_options(cls, md):
        """Typed options from ``dialer.metadata``; ``ValueError`` names the bad key."""
        return component_options(cls, md)

    def __init__(self, config):
        self.config = config

    def dial(self, host, port, timeout=DEFAULT_DIAL_TIMEOUT):
        sock = dial_tcp(host, port, timeout)
        try:
            return self.handshake(sock, host, port, timeout)
        except BaseException:
            sock.close()
            raise

    def handshake(self, conn, host, port, timeout=DEFAULT_DIAL_TIMEOUT):
        return conn


def _server_name(config, host):
    """``serverName`` from the dialer's tls block, else the node's host (GOST's default)."""
    return (config.tls.server_name if config.tls is not None else None) or host


def client_tls(config):
    from gostgev.netio.tlscontext import TLSClientConfig, client_context

    tls = config.tls
    return client_context(TLSClientConfig(
        server_name=tls.server_name if tls else None, secure=tls.secure if tls else False,
        ca_file=tls.ca_file if tls else None, cert_file=tls.cert_file if tls else None,
        key_file=tls.key_file if tls else None))


@DIALERS.register("tls")
class TlsDialer(TcpDialer):
    def __init__(self, config):
        super().__init__(config)
        self.tls = client_tls(config)

    def handshake(self, conn, host, port, timeout=DEFAULT_DIAL_TIMEOUT):
        from gostgev.netio.tls import connect_tls

        return connect_tls(conn, self.tls, server_name=_server_name(self.config, host), timeout=timeout)


@DIALERS.register("ws")
class WsDialer(TcpDialer):
    options_class = WsDialerOptions

    def __init__(self, config):
        super().__init__(config)
        self.path = config.options.path
        self.host = config.options.host

    def handshake(self, conn, host, port, timeout=DEFAULT_DIAL_TIMEOUT):
        from gostgev.netio.ws import ws_connect

        return ws_connect(conn, self.host or "%s:%d" % (host, port), self.path, timeout)


@DIALERS.register("wss")
class WssDialer(WsDialer):
    def __init__(self, config):
        super().__init__(config)
        self.tls = client_tls(config)

    def handshake(self, conn, host, port, timeout=DEFAULT_DIAL_TIMEOUT):
        from gostgev.netio.tls import connect_tls

        conn = connect_tls(conn, self.tls, server_name=_server_name(self.config, host), timeout=timeout)
        return super().handshake(conn, host, port, timeout)
