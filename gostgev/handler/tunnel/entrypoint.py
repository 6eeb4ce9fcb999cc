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
from gostgev.codec.http import simple_response
from gostgev.codec.sniff import HTTP, RELAY, TLS
from gostgev.errors import ProtocolError
from gostgev.handler.http1 import Refused
from gostgev.handler.tunnel.router import lookup, refuse
from gostgev.listener import TcpListener
from gostgev.netio.close import close_gently
from gostgev.netio.peek import MalformedHead, PeerClosed, SniffTimeout, sniff
from gostgev.netio.relayio import read_request, reply

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
        self.listener.start(self._guarded, gate=gate, accept_proxy=self.router.options.entrypoint_proxy)

    def _guarded(self, conn, address, target=None):
        # As Service._handle does for the tunnel port: a bug costs one
        # connection and one log line, never a dead greenlet on stderr.
        try:
            self.handle(conn, address)
        except Exception:
            self.log.exception("handler error", fields={"remote": format_address(address)})

    def close(self):
        self.listener.close()

    def stop(self, timeout=None):
        self.listener.stop(timeout)

    def handle(self, conn, address):
        client = format_address(address)
        log = self.log.bind(remote=client)
        timeout = self.router.options.header_timeout
        try:
            sniffed = sniff(conn, timeout)
        except SniffTimeout:
            log.info("no complete request head within %gs, closing", timeout)
            return
        except MalformedHead as exc:
            log.warning("%s", exc)
            if exc.protocol == HTTP:
                close_gently(conn, simple_response(400, "gostgev: bad request"))
            return
        except (PeerClosed, ProtocolError, OSError) as exc:
            log.debug("closed before routing: %s", exc or "peer closed")
            return
        if sniffed.protocol == RELAY:
            return self._visitor(conn, address, sniffed.data, timeout, log)
        if sniffed.protocol not in (HTTP, TLS):
            log.warning("neither HTTP, TLS nor relay, closing")
            return
        self._route(conn, client, sniffed, log)

    def _visitor(self, conn, address, data, timeout, log):
        request, leftover = read_request(conn, timeout, log, data)
        if request is None:
            return
        if request.tunnel_id is None or request.tunnel_id.is_zero or request.cmd != relay.CONNECT:
            return reply(conn, relay.BAD_REQUEST)
        if not self.router.authorize(request):
            log.warning("unauthorized", fields={"user": request.username})
            return reply(conn, relay.UNAUTHORIZED)
        self.router.visit(conn, address, request, leftover, self.ingress, log)

    def _route(self, conn, client, sniffed, log):
        host = sniffed.host
        log = log.bind(host=host, protocol=sniffed.protocol)
        try:
            tunnel_id, dst = lookup(self.ingress, host, sniffed.head if sniffed.protocol == HTTP else None)
        except Refused as exc:
            return refuse(conn, sniffed.protocol, exc.status, exc.message, log)
        router = self.router
        if sniffed.protocol == HTTP and sniffed.head.version != "HTTP/2.0":
            # A tunnel held only by another worker: the whole client connection goes there.
            if not router.holds(tunnel_id) and router.hand_off(conn, tunnel_id, HTTP, client, dst, sniffed.data, log):
                return
            return router.serve_http(conn, client, sniffed.data, self.ingress, log)
        router.relay(conn, tunnel_id, sniffed.protocol, client, dst, sniffed.data, log.bind(tunnel=tunnel_id.text))
