"""A tunnel server's public listener: sniff, look the host up in the ingress, reach the tunnel.

::

    Entrypoint.handle(): sniff within entrypoint.headerTimeout
    ├── HTTP Host -> ingress rule -> Router.serve_http (each request by its own host)
    ├── TLS SNI   -> ingress rule -> Router.relay (the ClientHello replayed, then a pipe)
    ├── relay CONNECT (first byte 0x01) -> auth -> Router.visit (as on the tunnel port)
    └── anything else: closed

Only tunnels that an ingress rule names are reached, never private (``$``)
ones.  GOST's entrypoint relay branch skips every check; here it gets the
visitor checks and the handler's auth.
"""

from gostgev.addr import format_address
from gostgev.codec import relay
from gostgev.codec.proxyproto import looks_like_proxy
from gostgev.codec.sniff import HTTP, RAW, RELAY, TLS
from gostgev.connection import DONE, Connection, failed, relay_refused
from gostgev.errors import ProtocolError
from gostgev.handler.http1 import Refused
from gostgev.handler.tunnel.remote import read_node_header
from gostgev.handler.tunnel.router import lookup
from gostgev.listener import TcpListener
from gostgev.netio.relayio import read_request
from gostgev.pipeline import accept_pipeline

__all__ = ["Entrypoint"]


class Entrypoint:
    def __init__(self, router, addr, ingress, reuse_port=False):
        self.router = router
        self.addr = addr
        self.ingress = ingress
        self.log = router.log.bind(entrypoint=str(addr))
        self.listener = TcpListener(None, self.log, addr=addr, reuse_port=reuse_port)

    @property
    def address(self):
        return self.listener.address

    def bind(self, inherit=None):
        self.listener.bind(inherit)

    def start(self, gate):
        """Listen; the service's admission and connection limits apply here too."""
        self.listener.start(accept_pipeline(self._guarded, self.log, proxy=self.router.options.entrypoint_proxy,
                                            gate=gate))

    def _guarded(self, sock, address, meta=None):
        # As Service._handle does for the tunnel port: a bug costs one
        # connection and one log line, never a dead greenlet on stderr.
        try:
            self.handle(Connection(sock, address, self.log, self.router.name, metrics=self.router.metrics))
        except Exception:
            self.log.exception("handler error", fields={"remote": format_address(address)})

    def close(self):
        self.listener.close()

    def stop(self, timeout=None):
        self.listener.stop(timeout)

    def handle(self, conn):
        """Serve one :class:`~gostgev.connection.Connection`; the outcome."""
        timeout = self.router.options.header_timeout
        sniffed = conn.sniff(timeout)
        if sniffed is not None and sniffed.protocol == RAW and self.router.discovery is not None:
            sniffed = self._from_node(conn, sniffed, timeout)
        if sniffed is None:
            return failed("no request head")
        if sniffed.protocol == RELAY:
            return self._visitor(conn, sniffed.data, timeout)
        if sniffed.protocol not in (HTTP, TLS):
            conn.log.warning("neither HTTP, TLS nor relay, closing")
            return failed("not HTTP, TLS or relay")
        return self._route(conn, sniffed)

    def _from_node(self, conn, sniffed, timeout):
        """A connection another node of the cluster forwarded: its marker read, then sniffed anew."""
        if looks_like_proxy(sniffed.data) is False:
            return sniffed
        try:
            node, conn.sock = read_node_header(conn.sock, sniffed.data)
        except (OSError, ProtocolError) as exc:
            conn.log.warning("bad PROXY header from a node: %s", exc)
            return None
        if node is None:
            conn.log.warning("PROXY header without a node; entrypoint.proxyProtocol is off, closing")
            return None
        conn.forwarded_by = node
        conn.log = conn.log.bind(node=node)
        return conn.sniff(timeout)

    def _visitor(self, conn, data, timeout):
        request, leftover = read_request(conn.sock, timeout, conn.log, data)
        if request is None:
            return failed("no relay request")
        if request.tunnel_id is None or request.tunnel_id.is_zero or request.cmd != relay.CONNECT:
            return relay_refused(conn.sock, relay.BAD_REQUEST)
        if not self.router.authorize(request):
            conn.log.warning("unauthorized", fields={"user": request.username})
            return relay_refused(conn.sock, relay.UNAUTHORIZED)
        return self.router.visit(conn, request, leftover, self.ingress)

    def _route(self, conn, sniffed):
        host = sniffed.host
        conn.log = conn.log.bind(host=host, protocol=sniffed.protocol)
        try:
            tunnel_id, dst = lookup(self.ingress, host, sniffed.head if sniffed.protocol == HTTP else None)
        except Refused as exc:
            return conn.refuse(exc.status, exc.message)
        router = self.router
        if sniffed.protocol == HTTP and sniffed.head.version != "HTTP/2.0":
            # A tunnel held only by another worker: the whole client connection goes there.
            if not router.holds(tunnel_id) and router.hand_off(conn.sock, tunnel_id, HTTP, conn.peer, dst,
                                                               sniffed.data, conn.log):
                return DONE
            return router.serve_http(conn, sniffed.data, self.ingress)
        conn.log = conn.log.bind(tunnel=tunnel_id.text)
        return router.relay(conn, tunnel_id, sniffed.protocol, dst, sniffed.data)
