"""The ``tcp`` (alias ``forward``) handler: port forwarding and reverse proxy.

Flow of one connection::

    handle()
    ├── sniffing off ─────────────────────────────┐
    └── sniffing on: sniff() within sniffing.timeout
        ├── TLS  ClientHello -> host = SNI         │
        ├── HTTP request head -> host = Host       ├── forwarder.route(host, protocol, path)
        ├── other bytes -> host unknown            │   ├── no node: HTTP 502 / close
        └── timeout, EOF, malformed: close (400)  ─┘   └── dial nodes in order
                                                           ├── all failed: HTTP 503 / close
                                                           └── replay sniffed bytes, pipe()

Routing is decided once per connection, like an SNI proxy or HAProxy in TCP
mode: later requests on a kept-alive HTTP connection go to the same node.
"""

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from gostgev import metrics
from gostgev.addr import host_without_port, parse_addr, split_host_port
from gostgev.codec.http import simple_response
from gostgev.codec.sniff import HTTP, TLS
from gostgev.dialer import DEFAULT_DIAL_TIMEOUT, dial_tcp
from gostgev.errors import ProtocolError
from gostgev.forwarder import Forwarder
from gostgev.handler import HANDLERS, Handler
from gostgev.listener import EXHAUSTED_ERRNOS, format_address
from gostgev.netio.close import close_gently
from gostgev.netio.peek import MalformedHead, PeerClosed, SniffTimeout, sniff
from gostgev.netio.pipe import pipe
from gostgev.netio.proxyproto import proxy_header

__all__ = ["ForwardHandler", "ForwardOptions"]

#: default for ``sniffing.timeout``; GOST has none, which lets a silent client
#: hold a connection forever
DEFAULT_SNIFF_TIMEOUT = 10.0

#: seconds a failed, unsniffed connection is watched for an HTTP request, so
#: that an HTTP client can be sent a 502 instead of a bare close
HTTP_PROBE_TIMEOUT = 2.0

#: default port by sniffed protocol, for node addresses written without one
_DEFAULT_PORTS = {HTTP: 80, TLS: 443}


@dataclass(frozen=True, slots=True)
class ForwardOptions:
    sniffing: bool = False                       #: route by HTTP Host / TLS SNI
    sniffing_timeout: float = DEFAULT_SNIFF_TIMEOUT  #: deadline for the whole head
    idle_timeout: float = 0.0                    #: close after this long without traffic; 0 = never
    dial_timeout: float = DEFAULT_DIAL_TIMEOUT   #: TCP connect timeout per node
    proxy_protocol: int = 0                      #: send a PROXY v1/v2 header to the node; 0 = no


@HANDLERS.register("tcp", "forward")
class ForwardHandler(Handler):
    accepts_chain = True

    @classmethod
    def needs_nodes(cls, options, chain):
        # A sniffing visitor of a tunnel (GOST's `-L tcp://:8000?sniffing=true
        # -F tunnel://...`) sends each connection to the host it asked for,
        # through the chain; the server's ingress decides where that goes.
        return chain is None or not options.sniffing

    @classmethod
    def parse_options(cls, md, context):
        sniff_timeout = md.duration("sniffing.timeout", default=DEFAULT_SNIFF_TIMEOUT)
        return ForwardOptions(
            sniffing=md.bool("sniffing"),
            # 0 means "none" in GOST; we never allow an unbounded sniff.
            sniffing_timeout=sniff_timeout or DEFAULT_SNIFF_TIMEOUT,
            idle_timeout=md.duration("idletimeout"),
            dial_timeout=md.duration("dialtimeout", default=DEFAULT_DIAL_TIMEOUT) or DEFAULT_DIAL_TIMEOUT,
            proxy_protocol=md.int("proxyprotocol", default=0, minimum=0, maximum=2),
        )

    def __init__(self, service_config, log):
        super().__init__(service_config, log)
        self._build(service_config)

    def reconfigure(self, service_config):
        super().reconfigure(service_config)
        self._build(service_config)

    def _build(self, service_config):
        forwarder = service_config.forwarder
        self.forwarder = Forwarder(forwarder) if forwarder is not None and forwarder.nodes else None
        self.chain = None
        if service_config.handler.chain is not None:
            from gostgev.chain import Chain  # only visitors need the relay/mux stack

            self.chain = Chain(service_config.handler.chain, self.options.dial_timeout)

    def handle(self, conn, address, target=None):
        started = time.monotonic()
        client = format_address(address)
        log = self.log.bind(remote=client)
        sniffed = None
        if self.options.sniffing:
            sniffed = self._sniff(conn, log)
            if sniffed is None:
                return "no request head"
        protocol = sniffed.protocol if sniffed else None
        # A tunnel stream header names the host the public client asked for;
        # it wins over what we sniff (GOST's fixed behaviour, issue #898).
        host = host_without_port(target) if target else (sniffed.host if sniffed else None)
        path = _request_path(sniffed.head.target) if protocol == HTTP else None
        log = log.bind(host=host, protocol=protocol or None)

        if self.forwarder is not None:
            nodes = self.forwarder.route(host, protocol, path, client_ip=address[0])
        else:
            # No forwarder: the stream header's target, or through the chain, the sniffed host.
            nodes = [None] if target or (sniffed is not None and self.chain is not None) else []
        if not nodes:
            return self._refuse(conn, sniffed, 502, "no route for host %s" % (host or "(none)"), log)
        upstream, node = self._dial(nodes, sniffed, target, client, log)
        if upstream is None:
            return self._refuse(conn, sniffed, self.dial_failure_status,
                                "no node reachable for host %s" % (host or "(none)"), log)
        log = log.bind(node=node.name if node is not None else "direct")
        data = sniffed.data if sniffed else b""
        version = self._proxy_version(node)
        prefix = proxy_header(version, address[:2], _local_address(conn)) if version else b""
        up = down = 0
        error = None
        try:
            if prefix or data:
                upstream.sendall(prefix + data)
            up, down = pipe(conn, upstream, self.options.idle_timeout)
        except OSError as exc:
            error = exc.strerror or str(exc)
        finally:
            upstream.close()
        log.info("%s closed", "connection" if error is None else "connection failed",
                 fields={"inputBytes": len(data) + up, "outputBytes": down,
                         "duration": "%.3fs" % (time.monotonic() - started), "error": error})
        metrics.transfer(self.config.name, len(data) + up, down)
        return error

    #: HTTP status when every node failed to dial
    dial_failure_status = 503

    def _sniff(self, sock, log):
        try:
            return sniff(sock, self.options.sniffing_timeout)
        except SniffTimeout:
            log.info("no complete request head within %gs, closing", self.options.sniffing_timeout)
        except PeerClosed:
            log.debug("client closed before sending a request head")
        except MalformedHead as exc:
            log.warning("%s", exc)
            # An HTTP client is told why; a TLS client cannot read plain text.
            if exc.protocol == HTTP:
                close_gently(sock, simple_response(400, "gostgev: bad request"))
        except OSError as exc:
            log.debug("client error while sniffing: %s", exc)
        return None

    def _proxy_version(self, node):
        """PROXY header version for this node: node metadata wins over the handler's."""
        if node is not None and node.config.proxy_protocol is not None:
            return node.config.proxy_protocol
        return self.options.proxy_protocol

    def _dial(self, nodes, sniffed, target, client, log):
        """Dial the nodes in order; ``(connection, node or None)`` or ``(None, None)``."""
        for node in nodes:
            where = _target(node, sniffed, target, allow_port_zero=self.chain is not None)
            if where is None:
                continue
            name = node.name if node is not None else "direct"
            try:
                if self.chain is not None:
                    upstream = self.chain.dial("%s:%d" % where, src=client)
                else:
                    upstream = dial_tcp(where[0], where[1], self.options.dial_timeout)
            except (OSError, ProtocolError) as exc:
                # Running out of descriptors or memory here is no fault of the node.
                if node is not None and getattr(exc, "errno", None) not in EXHAUSTED_ERRNOS:
                    node.mark_failed()
                log.warning("dial %s (%s:%d) failed: %s", name, where[0], where[1],
                            getattr(exc, "strerror", None) or exc)
                continue
            if node is not None:
                node.mark_ok()
            return upstream, node
        return None, None

    def _refuse(self, conn, sniffed, status, message, log):
        """Log why, and tell an HTTP client in its own protocol; others are just closed."""
        log.warning("%s", message)
        if sniffed is None:
            sniffed = _probe_http(conn)
        if sniffed is not None and sniffed.protocol == HTTP:
            close_gently(conn, simple_response(status, "gostgev: " + message))
        return message


@HANDLERS.register("rtcp")
class RemoteForwardHandler(ForwardHandler):
    """``rtcp``: the same forwarding, for connections arriving through a tunnel.

    With no forwarder nodes the stream header's target is dialed as is.
    A failed dial answers HTTP clients with 502, the gateway's own word.
    """

    dial_failure_status = 502

    @classmethod
    def needs_nodes(cls, options, chain):
        return False


def _probe_http(conn):
    """After a failure without sniffing: briefly look whether the client speaks HTTP."""
    try:
        return sniff(conn, HTTP_PROBE_TIMEOUT)
    except (SniffTimeout, PeerClosed, MalformedHead, OSError):
        return None


def _local_address(conn):
    """Where the client reached us; a tunnel stream has no such address (GOST: 0.0.0.0:0)."""
    try:
        return conn.getsockname()[:2]
    except (OSError, AttributeError, TypeError):
        return ("0.0.0.0", 0)


def _request_path(target):
    """The path of an origin-form (``/a``) or absolute-form (``http://h/a``) target."""
    if target.startswith("/"):
        return target
    return urlsplit(target).path or "/"


def _target(node, sniffed, target, allow_port_zero=False):
    """``(host, port)`` to dial, or None if ``node`` cannot serve this request.

    ``node`` None means the stream header's ``target`` itself.  A node
    address without a port gets the protocol's port (80, 443); an empty node
    address dials the requested host (SNI-proxy style).
    """
    protocol = sniffed.protocol if sniffed else None
    default_port = _DEFAULT_PORTS.get(protocol, 0)
    if node is not None and node.config.addr:
        addr = parse_addr(node.config.addr, default_port=0)
        host, port = addr.host, addr.port or default_port
    elif target:
        addr = parse_addr(target, default_port=default_port)
        host, port = addr.host, addr.port
    elif sniffed is not None and sniffed.host:
        host, port = sniffed.host, default_port
        if protocol == HTTP:
            _, port_text = split_host_port(sniffed.head.header("host") or "")
            if port_text.isdigit():
                port = int(port_text)
    else:
        return None
    if not host or (port == 0 and not allow_port_zero):
        return None
    return host, port
