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

import errno
import os
import socket as _stdsocket

import gevent
import gevent.pool
from gevent import socket
from gevent.server import StreamServer

from gostgev import metrics
from gostgev.addr import Addr
from gostgev.codec import relay
from gostgev.errors import ProtocolError
from gostgev.limits import RateLimitedLog
from gostgev.logsetup import get_logger
from gostgev.netio.peek import PeerClosed, read_head, with_prefix
from gostgev.registry import Registry

__all__ = ["LISTENERS", "TcpListener", "RtcpListener", "AcceptServer", "BACKLOG", "EXHAUSTED_ERRNOS", "listen_tcp",
           "serve_tcp", "format_address", "listen_key", "dup_socket"]

LISTENERS = Registry("listener")

#: listen(2) backlog; the kernel caps it at net.core.somaxconn
BACKLOG = 4096
#: set by ``--workers``: every worker binds the same ports and the kernel
#: spreads new connections across them
REUSE_PORT = False
#: reconnect delays of the rtcp client: first wait, and the cap of the doubling
RECONNECT_FIRST = 1.0
RECONNECT_MAX = 5.0
#: seconds a stream may take to deliver its header
STREAM_HEADER_TIMEOUT = 10.0
#: errors that mean "this process or host is out of file descriptors or memory
#: for now": on accept() the connection stays queued, so accepting again at once
#: only fails again; on a dial they say nothing about the node dialed
EXHAUSTED_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
#: how long accepting pauses after such an error: first, and the cap of the doubling
ACCEPT_PAUSE_FIRST = 0.05
ACCEPT_PAUSE_MAX = 1.0
#: at most one "cannot accept" line per this many seconds per listener
ACCEPT_LOG_INTERVAL = 5.0


@LISTENERS.register("tcp")
class TcpListener:
    accepts_chain = False

    @classmethod
    def parse_options(cls, md):
        """Typed options from ``listener.metadata``, parsed at config load; ``ValueError`` on bad values."""
        return None

    def __init__(self, service_config, log, addr=None):
        self.service_config = service_config
        self.addr = addr or service_config.addr
        self.log = log
        self.server = None
        self._sock = None   # bound, not yet served

    def bind(self, inherit=None):
        """Take the listening socket: from ``inherit(addr)`` (a service being
        replaced on the same address) or a new bind.  Everything that can
        fail at start-up fails here, before anything serves."""
        if self._sock is None:
            self._sock = (inherit(self.addr) if inherit is not None else None) or listen_tcp(self.addr)

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

    def __init__(self, service_config, log, addr=None):
        super().__init__(service_config, log, addr)
        from gostgev.limits import RateLimitedLog

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

    def __init__(self, service_config, log, addr=None):
        super().__init__(service_config, log, addr)
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

    def __init__(self, service_config, log):
        super().__init__(service_config, log)
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


def format_address(address):
    host, port = address[:2]
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)


class AcceptServer(StreamServer):
    """A StreamServer that rides out file-descriptor and memory exhaustion.

    gevent hands every failed accept() to the hub, which prints a traceback,
    and retries within milliseconds: when the process is out of descriptors
    that is a traceback flood.  Here such an error pauses accepting for a
    short delay that doubles up to ``ACCEPT_PAUSE_MAX``, and is logged as one
    line at most every ``ACCEPT_LOG_INTERVAL`` seconds; the first accept that
    works again resets the delay and logs that accepting resumed.  Queued
    connections wait in the kernel's backlog meanwhile.  Other errors are
    left to gevent.
    """

    def __init__(self, listening, handle, log):
        super().__init__(listening, handle)
        self.log = log
        self._warn = RateLimitedLog(log, interval=ACCEPT_LOG_INTERVAL)
        self._pause = ACCEPT_PAUSE_FIRST
        self._failures = 0
        self._failing_since = 0.0

    def do_read(self):
        try:
            accepted = super().do_read()
        except OSError as exc:
            if exc.errno not in EXHAUSTED_ERRNOS:
                raise
            self._pause_accepting(exc)
            return None   # gevent's accept loop stops on a false value
        if accepted and self._failures:
            self.log.info("accepting connections on %s again after %d failed attempts in %.1fs",
                          format_address(self.address), self._failures, self.loop.now() - self._failing_since)
            self._failures = 0
            self._pause = ACCEPT_PAUSE_FIRST
        return accepted

    def _pause_accepting(self, exc):
        if not self._failures:
            self._failing_since = self.loop.now()
        self._failures += 1
        self._warn.warning("accept", "cannot accept connections on %s: %s; retrying at most %gs apart",
                           format_address(self.address), exc.strerror or exc, ACCEPT_PAUSE_MAX)
        # Without a pause the listening socket stays readable and the loop spins.
        self.stop_accepting()
        self._timer = self.loop.timer(self._pause)   # stop_accepting() and close() cancel it
        self._timer.start(self._start_accepting_if_started)
        self._pause = min(self._pause * 2, ACCEPT_PAUSE_MAX)


def serve_tcp(listening, handle, log=None):
    """A started server on a listening socket, calling ``handle(sock, address)``."""

    def accepted(sock, address):
        # Proxied traffic is request/response: never let Nagle hold a small write
        # until the peer's delayed ACK (40 ms on Linux).
        sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
        handle(sock, address)

    server = AcceptServer(listening, accepted, log if log is not None else get_logger("gostgev.listener"))
    server.start()
    return server


def dup_socket(sock):
    """A second descriptor of the same listening socket (see ``dup(2)``): the
    socket stays open, with its queued connections, until both are closed."""
    return socket.socket(fileno=os.dup(sock.fileno()))


def listen_key(addr):
    """What makes two listening addresses the same socket; None for port 0 (any free port)."""
    return (addr.host.lower(), addr.port) if addr.port else None


def listen_tcp(addr):
    """A listening socket for ``addr``; an empty host means every interface, IPv4 and IPv6."""
    host = addr.host
    if not host:
        return _bind_any(addr.port)
    family = _stdsocket.AF_INET6 if ":" in host else _stdsocket.AF_INET
    infos = socket.getaddrinfo(host, addr.port, family, _stdsocket.SOCK_STREAM)
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
        if REUSE_PORT:
            sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEPORT, 1)
        if dual_stack:
            sock.setsockopt(_stdsocket.IPPROTO_IPV6, _stdsocket.IPV6_V6ONLY, 0)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock
