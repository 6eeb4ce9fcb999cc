"""Reaching a tunnel: what the entrypoints, relay visitors and other workers use.

A :class:`Router` owns the :class:`~gostgev.tunnel.TunnelRegistry` of one
tunnel service.  Whoever has a client for a tunnel asks it to:

* ``open(tunnel_id, network)`` a stream on one of the tunnel's connections;
* ``relay(...)`` a whole connection: open a stream (or pass the client to
  the worker that holds the tunnel), write the stream header (client
  address, ``host:port``) and the bytes already read, pipe, log one line;
* ``serve_http(...)`` an HTTP client, routing each request by its own host
  through an ingress (requests in a row for one tunnel and host share a
  stream);
* ``visit(...)``: check a relay visitor's CONNECT against the ingress, then
  relay it;
* ``authorize(request)`` a relay request against the handler's auth.

With a service discovery (``sd``), a tunnel held by another node of the
cluster is reached through that node (:mod:`.remote`).
"""

import time

from gostgev.addr import host_without_port, split_host_port
from gostgev.auth import authorized
from gostgev.codec import relay
from gostgev.codec.sniff import RELAY
from gostgev.connection import DONE, relay_refused
from gostgev.discovery import DiscoveryUnavailable
from gostgev.handler.http1 import Refused, Route, request_reporter, serve_http
from gostgev.handler.http1.routes import UpstreamPool
from gostgev.handler.tunnel.handoff import hand_off, handed_over
from gostgev.handler.tunnel.remote import relay_remote, remote_http_route
from gostgev.metrics import OFF
from gostgev.netio.relayio import reply
from gostgev.tunnel import NoConnector, TunnelRegistry

__all__ = ["Router", "lookup", "NO_LIVE_CONNECTION"]

NO_LIVE_CONNECTION = "no live tunnel connection for host %s"


class Router:
    def __init__(self, name, log, metrics=OFF):
        self.name = name               #: the service's, for metrics and hand-offs
        self.log = log
        self.metrics = metrics
        self.registry = TunnelRegistry()
        self.options = None            #: the handler's TunnelOptions, replaced on reload
        self.ingress = None            #: the handler's own ingress (tunnel-port visitors, hand-offs)
        self.cluster = None            #: the --workers cluster member while serving, or None
        self.discovery = None          #: gostgev.discovery.Discovery of a cluster node (sd), or None
        self.remote_turn = 0           #: rotates the nodes tried first for a remote tunnel
        self._node_pool = None

    def node_pool(self):
        """Idle keep-alive connections to the other nodes' entrypoints."""
        if self._node_pool is None:
            self._node_pool = UpstreamPool()
        return self._node_pool

    def close_node_pool(self):
        if self._node_pool is not None:
            self._node_pool.close()
            self._node_pool = None

    def open(self, tunnel_id, network="tcp"):
        """``(stream, connector)`` on a live connection of the tunnel; NoConnector if none."""
        return self.registry.open_stream(tunnel_id, network)

    def holds(self, tunnel_id):
        """Whether a connection of the tunnel is registered in this process."""
        return self.registry.has_connector(tunnel_id)

    def authorize(self, request):
        """The authenticated user, True when no auth is configured, or None."""
        return authorized(self.options.auther, request.username, request.password)

    def hand_off(self, conn, tunnel_id, kind, src, dst, data, log):
        """Pass ``conn`` to the worker holding ``tunnel_id``; False if none could take it."""
        return hand_off(self, conn, tunnel_id, kind, src, dst, data, log)

    def handed_over(self, conn, header, data):
        """A connection another worker accepted, for a tunnel connection held here."""
        return handed_over(self, conn, header, data)

    # -- whole connections ----------------------------------------------------------------

    def visit(self, conn, request, leftover, ingress):
        """CONNECT with a tunnel ID on :class:`~gostgev.connection.Connection` ``conn``:
        a visitor, or an external entrypoint.

        The client address written into the stream header (and from there
        into logs and PROXY headers at the backend) is the peer's own.  Only
        an external entrypoint, which presents ``entrypoint.id``, may name
        the client it relays for; from anyone else a source address would be
        a forgery, so it is ignored.
        """
        options = self.options
        entrypoint_id = options.entrypoint_id
        external = entrypoint_id is not None and request.tunnel_id.key == entrypoint_id.key
        src = request.addrs[0] if external and len(request.addrs) > 1 else conn.peer
        dst = request.addrs[-1] if request.addrs else ""
        host = host_without_port(dst)
        rule = ingress.lookup(host) if ingress is not None and host else None
        tunnel_id = rule.endpoint if rule else None
        log = conn.log = conn.log.bind(host=host or None)
        if external:
            if tunnel_id is None:
                log.warning("no ingress rule for host")
                return relay_refused(conn.sock, relay.NETWORK_UNREACHABLE)
            if tunnel_id.private:
                log.warning("host is routed to a private tunnel")
                return relay_refused(conn.sock, relay.HOST_UNREACHABLE)
        else:
            if options.direct:
                tunnel_id = request.tunnel_id
            if tunnel_id is None or tunnel_id.key != request.tunnel_id.key:
                log.warning("visitor's tunnel ID does not own the host", fields={"tunnel": request.tunnel_id.text})
                return relay_refused(conn.sock, relay.HOST_UNREACHABLE)
        conn.log = log.bind(tunnel=tunnel_id.text)
        return self.relay(conn, tunnel_id, RELAY, dst, leftover, src=src, network=request.network or "tcp",
                          request=request)

    def relay(self, conn, tunnel_id, kind, dst, data, src=None, network="tcp", may_hand_off=True, request=None):
        """Carry the whole :class:`~gostgev.connection.Connection` ``conn`` to the tunnel; the outcome.

        ``kind``: RELAY, TLS...; ``data``: the client's bytes already read;
        ``src``: the client address for the stream header (the peer's by
        default).  A relay visitor is answered OK once a stream is open.
        With no live connection here, a TCP client goes to the worker that
        holds one, else to the cluster node that holds one (unless another
        node sent it here: it is never passed on twice; ``request``: a relay
        visitor's, replayed there); otherwise it is refused (a relay status
        to a visitor, 503 to an HTTP client, a close to TLS).
        """
        src = src or conn.peer
        try:
            stream, connector = self.open(tunnel_id, network)
        except NoConnector as exc:
            if may_hand_off and network == "tcp" and self.hand_off(conn.sock, tunnel_id, kind, src, dst, data,
                                                                   conn.log):
                return DONE
            detail = str(exc)
            if self.discovery is not None and conn.forwarded_by is None:
                try:
                    outcome = relay_remote(self, conn, tunnel_id, kind, dst, data, request, network)
                except DiscoveryUnavailable as unavailable:
                    detail = str(unavailable)
                else:
                    if outcome is not None:
                        return outcome
            if kind == RELAY:
                conn.log.warning("%s", detail)
                return relay_refused(conn.sock, relay.SERVICE_UNAVAILABLE)
            return conn.refuse(503, NO_LIVE_CONNECTION % host_without_port(dst), detail=detail)
        if kind == RELAY:
            reply(conn.sock, relay.OK)
        self.metrics.tunnel_stream(self.name, connector.tunnel_id.text)
        outcome = conn.relay_to(stream, relay.Response(relay.OK, addrs=(src, dst)).encode(), data,
                                fields={"connector": connector.id.text})
        connector.streams += 1
        connector.bytes_in += conn.sent
        connector.bytes_out += conn.received
        return outcome

    # -- HTTP, request by request ---------------------------------------------------------

    def serve_http(self, conn, data, ingress):
        """Route each request of an HTTP client by its own host through ``ingress``.

        Requests in a row for one tunnel and host share a stream; a new
        host opens a new one, whose header names it for the client.
        """
        client, log = conn.peer, conn.log
        routes = {}

        def route_for(head, current):
            tunnel_id, dst = lookup(ingress, head.host, head)
            if self.discovery is not None and not self.registry.has_connector(tunnel_id):
                route = remote_http_route(self, routes, tunnel_id, dst, head, NO_LIVE_CONNECTION % head.host)
                if route is not None:
                    return route
            route = routes.get((tunnel_id.key, dst))
            if route is None:
                route = routes[(tunnel_id.key, dst)] = self._http_route(tunnel_id, dst, head.host, client)
            return route

        options = self.options
        on_request = request_reporter(log, self.name, self.metrics)
        sniffed = conn.sniffed
        up, down = serve_http(conn.sock, conn.address[0], data, route_for, log, on_request,
                              forwarding=options.forwarding, plain=True, head_timeout=options.header_timeout,
                              head=sniffed.head if sniffed is not None and sniffed.data is data else None)
        self.metrics.transfer(self.name, up, down)
        log.debug("connection closed", fields={"inputBytes": up, "outputBytes": down,
                                               "duration": "%.3fs" % (time.monotonic() - conn.started)})
        return DONE

    def _http_route(self, tunnel_id, dst, host, client):
        """The route to ``tunnel_id`` for requests to ``dst``: a stream, with its header, per run."""
        registry = self.registry
        name, metrics = self.name, self.metrics
        opened = {}

        def open_():
            try:
                stream, connector = registry.open_stream(tunnel_id)
            except NoConnector as exc:
                raise Refused(503, NO_LIVE_CONNECTION % host, detail=str(exc)) from None
            metrics.tunnel_stream(name, connector.tunnel_id.text)
            try:
                stream.sendall(relay.Response(relay.OK, addrs=(client, dst)).encode())
            except OSError as exc:
                stream.close()
                raise Refused(503, NO_LIVE_CONNECTION % host, detail=str(exc)) from None
            opened[stream] = connector
            return stream, {"tunnel": tunnel_id.text, "connector": connector.id.text}, False

        def release(stream, _reusable, sent, received):
            stream.close()
            connector = opened.pop(stream, None)
            if connector is not None:
                connector.streams += 1
                connector.bytes_in += sent
                connector.bytes_out += received

        def reroute():
            # Only where a connection answers: selection passes stalled ones over then.
            tunnel = registry.get(tunnel_id)
            if tunnel is None or not tunnel.answering():
                raise Refused(503, NO_LIVE_CONNECTION % host, detail="no other tunnel connection answers")
            stream, fields, _ = open_()
            return stream, fields

        return Route((tunnel_id.key, dst), open_, release, reroute=reroute)


def lookup(ingress, host, head=None):
    """``(tunnel ID, dst)`` for a host (an HTTP request's, or TLS's SNI when ``head`` is None).

    :class:`Refused` (502) when no public rule names the host.
    """
    rule = ingress.lookup(host) if ingress is not None and host else None
    if rule is None or rule.endpoint.private:
        raise Refused(502, "no tunnel for host %s" % (host or "(none)"))
    if head is None:
        return rule.endpoint, "%s:443" % host
    _, port = split_host_port(head.header("host") or "")
    return rule.endpoint, "%s:%s" % (host, port if port.isdigit() else "80")
