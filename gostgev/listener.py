"""Listeners: where a service's connections come from.

* ``tcp``: a bound socket served by a gevent ``StreamServer``, one greenlet
  per accepted connection.
* ``rtcp`` with a chain: connections come *from a remote server*.  The
  listener keeps one BIND alive through the chain (a tunnel registration or
  a relay remote-port bind), accepts the streams the server opens, reads each
  stream's header and hands the stream to the handler.  Without a chain it is
  a plain local ``tcp`` listener, as in GOST.

Either way the handler is called as ``handle(conn, address, target=None)``
and owns ``conn`` until it returns.
"""

import gevent
import gevent.pool

from gostgev import metrics
from gostgev.accept import listen_key, listen_tcp, serve_tcp
from gostgev.addr import Addr, format_address
from gostgev.codec import relay
from gostgev.errors import ProtocolError
from gostgev.limits import RateLimitedLog
from gostgev.netio.peek import PeerClosed, read_head, with_prefix
from gostgev.registry import Registry

# format_address is re-exported for the modules that still import it from here.
__all__ = ["LISTENERS", "TcpListener", "RtcpListener", "format_address"]

LISTENERS = Registry("listener")

#: reconnect delays of the rtcp client: first wait, and the cap of the doubling
RECONNECT_FIRST = 1.0
RECONNECT_MAX = 5.0
#: seconds a stream may take to deliver its header
STREAM_HEADER_TIMEOUT = 10.0


@LISTENERS.register("tcp")
class TcpListener:
    accepts_chain = False

    @classmethod
    def parse_options(cls, md):
        """Typed options from ``listener.metadata``, parsed at config load; ``ValueError`` on bad values."""
        return None

    def __init__(self, service_config, log, addr=None, reuse_port=False):
        self.service_config = service_config
        self.addr = addr or service_config.addr
        self.log = log
        self.reuse_port = reuse_port
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

    def start(self, handle, gate=None, accept_proxy=False):
        """Serve connections: [PROXY header] -> admission and limits -> [upgrade] -> handle.

        A PROXY header precedes everything else on the wire and names the
        real client, so it is read first; admission runs before any costly
        TLS handshake; the transport upgrade (TLS, WebSocket) comes last.
        """
        self.bind()
        serve = self.upgrading(handle)
        if gate is not None:
            serve = gate.wrap(serve)
        if accept_proxy:
            from gostgev.netio.proxyproto import accepting_proxy_headers

            serve = accepting_proxy_headers(serve, self.log)
        sock, self._sock = self._sock, None
        self.server = serve_tcp(sock, serve, self.log)
        self.log.info("listening on %s", format_address(self.server.address))

    def upgrading(self, handle):
        """``handle`` behind this listener's transport handshake (none for plain TCP)."""
        return handle

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

    def __init__(self, service_config, log, addr=None, reuse_port=False):
        super().__init__(service_config, log, addr, reuse_port)
        self.warn = RateLimitedLog(log)

    def upgrading(self, handle):
        def upgraded(sock, address, *args):
            try:
                conn = self.upgrade(sock)
            except (OSError, ProtocolError) as exc:
                # One line per second at most: a scanner must not flood the log.
                self.warn.warning("handshake", "%s handshake with %s failed: %s", self.kind, address[0],
                                  exc or "timeout")
                return
            try:
                return handle(conn, address, *args)
            finally:
                conn.close()

        return upgraded


def _server_tls(config, log):
    """The listener's TLS context; a self-signed certificate when none is configured."""
    from gostgev.netio.tlscontext import TLSServerConfig, server_context

    tls = config.listener.tls if config is not None else None
    return server_context(TLSServerConfig(cert_file=tls.cert_file if tls else None,
                                          key_file=tls.key_file if tls else None,
                                          ca_file=tls.ca_file if tls else None), log)


@LISTENERS.register("tls")
class TlsListener(_Upgrading):
    kind = "TLS"

    def bind(self, inherit=None):
        # Built here, not in __init__: a bad certificate is a start-up error of this service.
        if self._sock is None:
            self.tls = _server_tls(self.service_config, self.log)
        super().bind(inherit)

    def upgrade(self, sock):
        from gostgev.netio.tls import accept_tls

        return accept_tls(sock, self.tls, self.HANDSHAKE_TIMEOUT)


@LISTENERS.register("ws")
class WsListener(_Upgrading):
    kind = "WebSocket"

    @classmethod
    def parse_options(cls, md):
        return md.str("path", default="/ws")    # the WebSocket request path

    def __init__(self, service_config, log, addr=None, reuse_port=False):
        super().__init__(service_config, log, addr, reuse_port)
        self.path = service_config.listener.options

    def upgrade(self, sock):
        from gostgev.netio.ws import ws_accept

        return ws_accept(sock, self.path, self.HANDSHAKE_TIMEOUT)


@LISTENERS.register("wss")
class WssListener(WsListener):
    kind = "WebSocket over TLS"

    def bind(self, inherit=None):
        # Built here, not in __init__: a bad certificate is a start-up error of this service.
        if self._sock is None:
            self.tls = _server_tls(self.service_config, self.log)
        super().bind(inherit)

    def upgrade(self, sock):
        from gostgev.netio.tls import accept_tls

        return super().upgrade(accept_tls(sock, self.tls, self.HANDSHAKE_TIMEOUT))


@LISTENERS.register("rtcp")
class RtcpListener(TcpListener):
    accepts_chain = True

    def __init__(self, service_config, log, reuse_port=False):
        super().__init__(service_config, log, reuse_port=reuse_port)
        chain_config = service_config.listener.chain
        self.chain = None
        if chain_config is not None:
            from gostgev.chain import Chain  # chain -> connector -> mux: only tunnel clients need it

            self.chain = Chain(chain_config)
        self.bound = None
        self._loop = None
        self._streams = gevent.pool.Group()
        self._stopping = False

    def bind(self, inherit=None):
        if self.chain is None:   # a plain local listener, as in GOST
            super().bind(inherit)

    def start(self, handle, gate=None, accept_proxy=False):
        if self.chain is None:
            return super().start(handle, gate, accept_proxy)
        self._loop = gevent.spawn(self._run, gate.wrap(handle) if gate is not None else handle)

    @property
    def address(self):
        if self.chain is None:
            return super().address
        return (self.addr.host, self.addr.port)

    def _run(self, handle):
        delay = RECONNECT_FIRST
        bind_addr = str(self.addr)
        while not self._stopping:
            try:
                bound = self.chain.bind(bind_addr)
            except (OSError, ProtocolError) as exc:
                self.log.warning("connect to %s failed: %s; retrying in %gs", self.chain.name, exc, delay)
                gevent.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                continue
            self.bound = bound
            delay = RECONNECT_FIRST
            remote = bound.session.remote_address
            self.log.info("tunnel connected", fields={
                "server": format_address(remote) if remote else None, "endpoint": bound.endpoint,
                "connector": bound.connector_id.text if bound.connector_id else None})
            self._accept(bound, handle)
            self.bound = None
            if self._stopping:
                break
            self.log.warning("tunnel disconnected: %s; reconnecting in %gs",
                             bound.session.close_reason or "connection closed", delay)
            metrics.tunnel_reconnect(self.service_config.name)
            gevent.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX)

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
            self._streams.spawn(self._serve_stream, stream, bound.header_has_target, handle)

    def _serve_stream(self, stream, has_target, handle):
        try:
            try:
                with gevent.Timeout(STREAM_HEADER_TIMEOUT, PeerClosed):
                    (header, used), data = read_head(stream, relay.parse_response)
            except (PeerClosed, ProtocolError, OSError) as exc:
                # GOST drops the whole connection here; one bad stream is not worth that.
                self.log.warning("bad stream header, closing the stream: %s", exc or "timeout")
                return
            if header.status != relay.OK or not header.addrs:
                self.log.warning("stream header without OK status and source address, closing the stream")
                return
            address = _split(header.addrs[0])
            target = header.addrs[1] if has_target and len(header.addrs) > 1 else None
            handle(with_prefix(stream, data[used:]), address, target)
        finally:
            stream.close()

    def close(self):
        self._stopping = True
        if self.chain is None:
            return super().close()
        if self._loop is not None:
            self._loop.kill(block=False)
        if self.bound is not None:
            self.bound.session.close()

    def stop(self, timeout=None):
        if self.chain is None:
            return super().stop(timeout)
        self.close()
        self._streams.join(timeout=timeout)
        self._streams.kill(block=True, timeout=1)


def _split(text):
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port) if port.isdigit() else 0
