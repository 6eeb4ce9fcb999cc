"""The ``tcp`` (alias ``forward``) handler: port forwarding and reverse proxy.

Flow of one connection::

    handle()
    ├── sniffing off ─────────────────────────────┐
    └── sniffing on: sniff() within sniffing.timeout
        ├── TLS  ClientHello -> host = SNI         │
        ├── HTTP request head ─────────────────────│── every request routed by its own host and
        │                                          │   path (gostgev.handler.http1), upstream
        │                                          │   connections kept for reuse
        ├── other bytes -> host unknown            │
        └── timeout, EOF, malformed: close (400)  ─┴── forwarder.route(host, protocol, path)
                                                       ├── no node: HTTP 502 / close
                                                       └── dial nodes in order
                                                           ├── all failed: HTTP 503 / close
                                                           └── replay sniffed bytes, pipe()

TLS is routed once per connection, by SNI, and never terminated.
"""

import functools
import logging
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from gostgev.addr import host_without_port, parse_addr, split_host_port
from gostgev.codec.sniff import HTTP, TLS
from gostgev.connection import DONE, failed
from gostgev.dialer import DEFAULT_DIAL_TIMEOUT, dial_tcp
from gostgev.errors import EXHAUSTED_ERRNOS, ProtocolError
from gostgev.forwarder import Forwarder
from gostgev.handler.base import HANDLERS, Handler
from gostgev.handler.http1 import (
    FORWARDED_STYLES,
    Forwarding,
    Refused,
    Route,
    UpstreamPool,
    forwarded_style,
    request_reporter,
    serve_http,
)
from gostgev.metrics import OFF
from gostgev.netio.proxyproto import proxy_header
from gostgev.settings import BOOL, CHOICE, DURATION, INT, ZERO, setting

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
    sniffing: bool = setting("sniffing", BOOL, False, "route each connection by its HTTP Host or TLS SNI")
    # 0 means "none" in GOST; we never allow an unbounded sniff.
    sniffing_timeout: float = setting("sniffing.timeout", DURATION, DEFAULT_SNIFF_TIMEOUT,
                                      "deadline for the whole request head when sniffing (GOST: none)", unset=ZERO)
    idle_timeout: float = setting("idleTimeout", DURATION, 0.0,
                                  "close a connection silent this long both ways; 0 = never")
    dial_timeout: float = setting("dialTimeout", DURATION, DEFAULT_DIAL_TIMEOUT, "TCP connect timeout per node",
                                  unset=ZERO)
    proxy_protocol: int = setting("proxyProtocol", INT, 0,
                                  "send a PROXY header (1: v1, 2: v2, 0: none) to the nodes; node metadata wins",
                                  minimum=0, maximum=2)
    forwarded: str | None = setting("http.forwarded", CHOICE, None,
                                    "add X-Forwarded-* (x-forwarded) or Forwarded (forwarded) headers to HTTP "
                                    "requests; off: pass them as sent", choices=FORWARDED_STYLES + ("off",),
                                    parse=lambda md, spec, context, got: forwarded_style(md, spec.key))


@HANDLERS.register("tcp", "forward")
class ForwardHandler(Handler):
    accepts_chain = True
    options_class = ForwardOptions

    @classmethod
    def needs_nodes(cls, options, chain):
        # A sniffing visitor of a tunnel (GOST's `-L tcp://:8000?sniffing=true
        # -F tunnel://...`) sends each connection to the host it asked for,
        # through the chain; the server's ingress decides where that goes.
        return chain is None or not options.sniffing

    def __init__(self, service_config, log, metrics=OFF):
        super().__init__(service_config, log, metrics)
        self._build(service_config)

    def reconfigure(self, service_config):
        super().reconfigure(service_config)
        self._build(service_config)

    def stop(self, timeout=None):
        self.pool.close()

    def _build(self, service_config):
        forwarder = service_config.forwarder
        self.forwarder = Forwarder(forwarder) if forwarder is not None and forwarder.nodes else None
        old = getattr(self, "pool", None)
        if old is not None:
            old.close()           # the nodes may have changed: start afresh
        self.pool = UpstreamPool()
        # A tunnel stream's header names the host, and every request on the stream goes by it
        # (it wins over the request's own Host): unless a node filters by path or requests get
        # forwarding headers, the stream is piped to its node with no request parsed.
        self._pinned_by_target = not self.options.forwarded and (
            self.forwarder is None or not any(node.path for node in forwarder.nodes))
        self.chain = None
        if service_config.handler.chain is not None:
            from gostgev.chain import Chain  # only visitors need the relay/mux stack

            self.chain = Chain(service_config.handler.chain, self.options.dial_timeout, self.metrics)

    def handle(self, conn):
        sniffed = None
        if self.options.sniffing:
            sniffed = conn.sniff(self.options.sniffing_timeout)
            if sniffed is None:
                return failed("no request head")
        protocol = sniffed.protocol if sniffed else None
        target, address = conn.target, conn.address
        if protocol == HTTP and sniffed.head.version != "HTTP/2.0" and not (target and self._pinned_by_target):
            return self._serve_http(conn, sniffed)
        # A tunnel stream header names the host the public client asked for;
        # it wins over what we sniff (GOST's fixed behaviour, issue #898).
        host = host_without_port(target) if target else (sniffed.host if sniffed else None)
        path = _request_path(sniffed.head.target) if protocol == HTTP else None
        conn.log = conn.log.bind(host=host, protocol=protocol or None)

        if self.forwarder is not None:
            nodes = self.forwarder.route(host, protocol, path, client_ip=address[0])
        else:
            # No forwarder: the stream header's target, or through the chain, the sniffed host.
            nodes = [None] if target or (sniffed is not None and self.chain is not None) else []
        if not nodes:
            return conn.refuse(502, "no route for host %s" % (host or "(none)"), probe=HTTP_PROBE_TIMEOUT)
        upstream, node = self._dial(nodes, sniffed, target, conn.peer, conn.log)
        if upstream is None:
            return conn.refuse(self.dial_failure_status, "no node reachable for host %s" % (host or "(none)"),
                               probe=HTTP_PROBE_TIMEOUT)
        version = self._proxy_version(node)
        header = proxy_header(version, address[:2], _local_address(conn.sock)) if version else b""
        return conn.relay_to(upstream, header, sniffed.data if sniffed else b"", self.options.idle_timeout,
                             {"node": node.name if node is not None else "direct"})

    #: HTTP status when every node failed to dial
    dial_failure_status = 503

    # -- HTTP, request by request ------------------------------------------------------

    def _serve_http(self, connection, sniffed):
        conn, address, client, target, log = (connection.sock, connection.address, connection.peer,
                                              connection.target, connection.log)
        forwarder, routes = self.forwarder, {}
        # Through a chain, or with PROXY headers naming one client, a
        # connection is this client's alone: nothing is pooled.
        pooled = self.chain is None

        def route_for(head, current):
            # A tunnel stream header names the host the public client asked
            # for; it wins over what the request says (GOST's fixed behaviour, issue #898).
            host = host_without_port(target) if target else head.host
            if forwarder is None:
                nodes = [None] if target or (head.host and self.chain is not None) else []
            else:
                nodes = forwarder.candidates(host, HTTP, _request_path(head.target))
            if not nodes:
                raise Refused(502, "no route for host %s" % (host or "(none)"))
            request = _HttpRequest(head)
            if current is not None:
                node, where = current
                # The open connection keeps serving while its node fits and is healthy (a node
                # with an address of its own goes there whatever the request's host).
                if node in nodes and (node is None or not node.is_failed(time.monotonic())) and (
                        (node is not None and node.config.addr)
                        or _target(node, request, target, self.chain is not None) == where):
                    return routes[current]
            if forwarder is not None:
                nodes = forwarder.selector.order(nodes, address[0])
            key = (nodes[0], _target(nodes[0], request, target, self.chain is not None))
            route = routes.get(key)
            if route is None:
                route = routes[key] = self._http_route(key, nodes, request, target, client, address, conn,
                                                       pooled and self._proxy_version(nodes[0]) == 0, log)
            return route

        on_request = request_reporter(log, self.config.name, self.metrics)
        forwarding = None
        if self.options.forwarded:
            proto = "https" if self.config.listener.type in ("tls", "wss", "mtls", "mwss") else "http"
            forwarding = Forwarding(self.options.forwarded, proto)
        up, down = serve_http(conn, address[0], sniffed.data, route_for, log, on_request, self.options.idle_timeout,
                              forwarding, plain=self.chain is None, head_timeout=self.options.sniffing_timeout,
                              head=sniffed.head)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("connection closed", fields={"inputBytes": up, "outputBytes": down,
                                                   "duration": "%.3fs" % (time.monotonic() - connection.started)})
        self.metrics.transfer(self.config.name, up, down)
        return DONE

    def _http_route(self, key, nodes, sniffed_like, target, client, address, conn, pooled, log):
        """The route to ``key`` (the first of ``nodes``), falling back on the others when a dial fails."""
        head = sniffed_like.head

        def dial(use_pool):
            for node in nodes:
                where = _target(node, sniffed_like, target, allow_port_zero=self.chain is not None)
                if where is None:
                    continue
                name = node.name if node is not None else "direct"
                version = self._proxy_version(node)
                if use_pool and not version:
                    sock = self.pool.take(where)
                    if sock is not None:
                        return sock, {"node": name}, True, where
                upstream, _ = self._dial([node], sniffed_like, target, client, log)
                if upstream is None:
                    continue
                if version:
                    # Its PROXY header names this client: the connection is never pooled.
                    upstream.sendall(proxy_header(version, address[:2], _local_address(conn)))
                    where = None
                return upstream, {"node": name}, False, where
            raise Refused(self.dial_failure_status, "no node reachable for host %s" % (head.host or "(none)"))

        state = {}

        def open_():
            sock, fields, reused, where = dial(pooled)
            state["where"] = where
            return sock, fields, reused

        def release(sock, reusable, _sent, _received):
            if pooled and reusable and state.get("where") is not None:
                self.pool.put(state["where"], sock)
            else:
                sock.close()

        def retry():
            return dial(False)[0]

        return Route(key, open_, release, retry, pooled=pooled)

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


class _HttpRequest:
    """What ``_target`` reads of a sniffed head, for one request of a session."""

    __slots__ = ("head", "host")
    protocol = HTTP

    def __init__(self, head):
        self.head = head
        self.host = head.host


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


@functools.lru_cache(maxsize=1024)
def _node_addr(text):
    """A node's address, parsed once (it is asked for on every request)."""
    return parse_addr(text, default_port=0)


def _target(node, sniffed, target, allow_port_zero=False):
    """``(host, port)`` to dial, or None if ``node`` cannot serve this request.

    ``node`` None means the stream header's ``target`` itself.  A node
    address without a port gets the protocol's port (80, 443); an empty node
    address dials the requested host (SNI-proxy style).
    """
    protocol = sniffed.protocol if sniffed else None
    default_port = _DEFAULT_PORTS.get(protocol, 0)
    if node is not None and node.config.addr:
        addr = _node_addr(node.config.addr)
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
