"""Listeners: where a service's connections come from.

* ``tcp``: a bound socket served by a gevent ``StreamServer``, one greenlet
  per accepted connection.
* ``rtcp`` with a chain: connections come *from a remote server*.  The
  listener keeps BIND sessions alive through the chain (tunnel registrations
  or a relay remote-port bind; one unless ``tunnel.connections`` says more,
  failing over between a hop's nodes: :mod:`gostgev.tunnelclient`), accepts
  the streams the server opens, reads each stream's header and hands the
  stream to the handler.  Without a chain it is a plain local ``tcp``
  listener, as in GOST.

Either way a listener calls ``accepted(conn, address, meta)`` for each
connection (``meta``: what a stream header said, e.g. the target), in a
greenlet of its own, and applies no policy: the service's accept pipeline
(:mod:`gostgev.pipeline`) does, calling the listener's ``upgrade`` for the
transport handshake.  The rtcp stream header is read by the connector's
bound side (:meth:`gostgev.connector.Bound.read_stream_header`).
"""

from dataclasses import dataclass

from gostgev.accept import Workers, listen_key, listen_tcp, serve_tcp
from gostgev.addr import Addr, format_address
from gostgev.errors import ProtocolError
from gostgev.limits import RateLimitedLog
from gostgev.metrics import OFF
from gostgev.netio.peek import PeerClosed
from gostgev.registry import Registry
from gostgev.settings import STR, component_options, setting
from gostgev.tunnelclient import RECONNECT_FIRST, RECONNECT_MAX, BindSessions

# format_address and the reconnect delays are re-exported for the modules that still import them from here.
__all__ = ["LISTENERS", "Listener", "TcpListener", "RtcpListener", "format_address", "RECONNECT_FIRST", "RECONNECT_MAX"]

LISTENERS = Registry("listener")

#: seconds a stream may take to deliver its header
STREAM_HEADER_TIMEOUT = 10.0


class Listener:
    """What every listener shares: its options, parsed at config load, and its service's config."""

    accepts_chain = False

    #: the dataclass of ``listener.metadata``'s settings (gostgev.settings), None for none
    options_class = None

    @classmethod
    def parse_options(cls, md):
        """Typed options from ``listener.metadata``, parsed at config load; ``ValueError`` on bad values."""
        return component_options(cls, md)

    def __init__(self, service_config, log, addr=None, reuse_port=False, metrics=OFF):
        self.service_config = service_config
        self.addr = addr or service_config.addr
        self.log = log
        self.reuse_port = reuse_port
        self.metrics = metrics


@LISTENERS.register("tcp")
class TcpListener(Listener):
    def __init__(self, service_config, log, addr=None, reuse_port=False, metrics=OFF):
        super().__init__(service_config, log, addr, reuse_port, metrics)
        self.server = None
        self._sock = None   # bound, not yet served

    def bind(self, inherit=None):
        """Take the listening socket: from ``inherit(addr)`` (a service being
        replaced on the same address) or a new bind.  Everything that can
        fail at start-up fails here, before anything serves."""
        if self._sock is None:
            self._sock = (inherit(self.addr) if inherit is not None else None) or listen_tcp(self.addr, self.reuse_port)

    def listening(self):
        """``{address key: socket}`` of what this listener could hand to a successor."""
        sock = self.server.socket if self.server is not None else self._sock
        if sock is None or sock.fileno() < 0:
            return {}
        # By the port actually bound: a config that asked for port 0 and is
        # rewritten with the port it got still names the same socket.
        return {listen_key(Addr(self.addr.host, sock.getsockname()[1])): sock}

    def start(self, accepted):
        """Accept connections: ``accepted(conn, address)`` for each, in a greenlet of its own.

        The listener applies no policy: the service's accept pipeline
        (:func:`gostgev.service.accept_pipeline`) does, calling
        :attr:`upgrade` for the transport handshake.
        """
        self.bind()
        sock, self._sock = self._sock, None
        self.server = serve_tcp(sock, accepted, self.log)
        self.log.info("listening on %s", format_address(self.server.address))

    #: whether a PROXY header may precede this listener's connections
    takes_proxy_header = True
    #: ``upgrade(conn, address)`` -> the connection after the transport
    #: handshake, or None when it failed; None for plain TCP
    upgrade = None

    @property
    def address(self):
        return self.server.address if self.server else None

    def close(self):
        """Stop accepting (or give up the bound socket); live connections go on."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self.server is not None:
            self.server.close()

    def stop(self, timeout=None):
        if self._sock is not None:
            self.close()
        if self.server is not None:
            self.server.stop(timeout=timeout)


class _Upgrading(TcpListener):
    """A TCP listener whose connections start with a transport handshake."""

    #: seconds a client gets to finish the TLS or WebSocket handshake
    HANDSHAKE_TIMEOUT = 10.0

    def __init__(self, service_config, log, addr=None, reuse_port=False, metrics=OFF):
        super().__init__(service_config, log, addr, reuse_port, metrics)
        self.warn = RateLimitedLog(log)

    def upgrade(self, sock, address):
        """The connection after this listener's handshake, or None (one line logged, at most one a second)."""
        try:
            return self.handshake(sock)
        except (OSError, ProtocolError) as exc:
            # A scanner must not flood the log.
            self.warn.warning("handshake", "%s handshake with %s failed: %s", self.kind, address[0],
                              exc or "timeout")
            return None


def _server_tls(config, log):
    """The listener's TLS context; a self-signed certificate when none is configured."""
    from gostgev.netio.tlscontext import TLSServerConfig, server_context

    tls = config.listener.tls if config is not None else None
    return server_context(TLSServerConfig(cert_file=tls.cert_file if tls else None,
                                          key_file=tls.key_file if tls else None,
                                          ca_file=tls.ca_file if tls else None), log)


class _ServerTls:
    """For listeners whose connections start with TLS: the context is built when
    the socket is bound, not in __init__, so a bad certificate is a start-up
    error of the service (and a reload that brings one is refused)."""

    def bind(self, inherit=None):
        if self._sock is None:
            self.tls = _server_tls(self.service_config, self.log)
        super().bind(inherit)


@LISTENERS.register("tls")
class TlsListener(_ServerTls, _Upgrading):
    kind = "TLS"

    def handshake(self, sock):
        from gostgev.netio.tls import accept_tls

        return accept_tls(sock, self.tls, self.HANDSHAKE_TIMEOUT)


@dataclass(frozen=True, slots=True)
class WsListenerOptions:
    path: str = setting("path", STR, "/ws", "the WebSocket request path; other paths are refused")


@LISTENERS.register("ws")
class WsListener(_Upgrading):
    kind = "WebSocket"
    options_class = WsListenerOptions

    def __init__(self, service_config, log, addr=None, reuse_port=False, metrics=OFF):
        super().__init__(service_config, log, addr, reuse_port, metrics)
        self.path = service_config.listener.options.path

    def handshake(self, sock):
        from gostgev.netio.ws import ws_accept

        return ws_accept(sock, self.path, self.HANDSHAKE_TIMEOUT)


@LISTENERS.register("wss")
class WssListener(_ServerTls, WsListener):
    kind = "WebSocket over TLS"

    def handshake(self, sock):
        from gostgev.netio.tls import accept_tls

        return super().handshake(accept_tls(sock, self.tls, self.HANDSHAKE_TIMEOUT))


@LISTENERS.register("rtcp")
class RtcpListener(TcpListener):
    accepts_chain = True
    #: what the BIND asks for (``rudp`` binds for ``udp``)
    network = "tcp"

    def __init__(self, service_config, log, reuse_port=False, metrics=OFF):
        super().__init__(service_config, log, reuse_port=reuse_port, metrics=metrics)
        chain_config = service_config.listener.chain
        self.chain = None
        if chain_config is not None:
            from gostgev.chain import Chain  # chain -> connector -> mux: only tunnel clients need it

            self.chain = Chain(chain_config, metrics=metrics)
        self.sessions = None     #: the BindSessions, once started
        self._streams = Workers()   # a greenlet per stream, reused for the next one

    def bind(self, inherit=None):
        if self.chain is None:   # a plain local listener, as in GOST
            super().bind(inherit)

    def start(self, accepted):
        """Without a chain, a local TCP listener; with one, ``accepted(stream, client address,
        {"target": host:port or None})`` for each stream the server opens, on each of the
        ``tunnel.connections`` sessions kept through the chain (:mod:`gostgev.tunnelclient`)."""
        if self.chain is None:
            return super().start(accepted)
        name = self.service_config.name
        self.sessions = BindSessions(self.chain, str(self.addr), lambda bound: self._accept(bound, accepted),
                                     self.log, count=self.chain.connections,
                                     on_reconnect=lambda: self.metrics.tunnel_reconnect(name), network=self.network)
        self.sessions.start()

    @property
    def bound(self):
        """The live BIND of the lowest session slot, None while there is none."""
        live = self.sessions.bound if self.sessions is not None else {}
        return live[min(live)] if live else None

    @property
    def takes_proxy_header(self):
        return self.chain is None   # a tunnel's streams name their client in the stream header

    @property
    def address(self):
        if self.chain is None:
            return super().address
        return (self.addr.host, self.addr.port)

    def _accept(self, bound, handle):
        """Serve streams until the session dies."""
        from gostgev.netio.mux import SessionClosed

        while True:
            try:
                stream = bound.session.accept_stream()
            except SessionClosed:
                return
            if stream is None:
                continue
            self._streams.spawn(self._serve_stream, bound, stream, handle)

    def _serve_stream(self, bound, stream, accepted):
        try:
            try:
                conn, address, target = bound.read_stream_header(stream, STREAM_HEADER_TIMEOUT)
            except (PeerClosed, ProtocolError, OSError) as exc:
                # GOST drops the whole connection here; one bad stream is not worth that.
                self.log.warning("bad stream header, closing the stream: %s", exc or "timeout")
                return
            accepted(conn, address, {"target": target})
        finally:
            stream.close()

    def close(self):
        if self.chain is None:
            return super().close()
        if self.sessions is not None:
            self.sessions.close()

    def stop(self, timeout=None):
        if self.chain is None:
            return super().stop(timeout)
        self.close()
        if self.sessions is not None:
            self.sessions.join(timeout=1)
        self._streams.join(timeout=timeout)
        self._streams.kill(timeout=1)
        self._streams.close()
