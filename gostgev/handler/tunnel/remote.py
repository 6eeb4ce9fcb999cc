"""Reaching a tunnel that another node of the cluster holds (``sd``).

A node with no connection of a tunnel looks it up in the service
discovery and sends the visitor to the entrypoint of a node that holds
one:

* an HTTP request goes as an HTTP request, on a pooled keep-alive
  connection to that node, carrying ``Gost-Forwarded-Node`` (this node's
  ID; the session adds it).  A request that already names another node is
  never forwarded again, and one that names this node is a loop (508);
* a TLS client's ClientHello, and a relay visitor's request, are replayed
  on a new connection, behind a PROXY v2 header whose TLV names this node.
  The receiving entrypoint takes that TLV as "forwarded, do not forward
  again"; the addresses in the header are not trusted (anyone can send
  one), so the other node sees this node as the client.
"""

import socket as _stdsocket

import gevent
from gevent import socket

from gostgev.addr import parse_addr
from gostgev.codec.proxyproto import encode_v2, parse_proxy_header
from gostgev.codec.sniff import RELAY
from gostgev.discovery import DiscoveryUnavailable
from gostgev.handler.http1 import Refused, Route, WouldBlock, may_block
from gostgev.netio.peek import read_head, with_prefix

__all__ = ["NODE_TLV", "relay_remote", "remote_http_route", "forwarded_node", "read_node_header"]

#: PROXY v2 TLV type (the range 0xE0-0xEF is for applications) naming the node that forwarded
NODE_TLV = 0xE7
#: seconds to connect to another node (GOST: 15)
NODE_DIAL_TIMEOUT = 5.0
#: seconds a forwarded connection may take to deliver its PROXY header
NODE_HEADER_TIMEOUT = 10.0


def _records(router, tunnel_id, network, wait=True):
    """Other nodes' records of the tunnel, in the order to try them (rotated per call).

    ``wait=False`` (an event-loop callback): :class:`WouldBlock` unless the answer is cached.
    """
    records = router.discovery.lookup(tunnel_id.text, network, wait)
    if records is None:
        raise WouldBlock
    if len(records) > 1:
        router.remote_turn = (router.remote_turn + 1) % len(records)
        records = records[router.remote_turn:] + records[:router.remote_turn]
    return records


def _dial(record):
    addr = parse_addr(record.address)
    sock = socket.create_connection((addr.host, addr.port), timeout=NODE_DIAL_TIMEOUT)
    sock.settimeout(None)
    # Requests and answers are small writes: Nagle must not hold one for the peer's delayed ACK.
    sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
    return sock


def relay_remote(router, conn, tunnel_id, kind, dst, data, request=None, network="tcp"):
    """Carry ``conn`` to a node holding ``tunnel_id``; the outcome, or None when no node holds it.

    DiscoveryUnavailable when the service discovery cannot be asked.
    """
    for record in _records(router, tunnel_id, network):
        try:
            sock = _dial(record)
        except OSError as exc:
            conn.log.warning("cannot reach node %s at %s: %s", record.node, record.address, exc)
            router.discovery.forget(tunnel_id.text)
            continue
        router.metrics.cluster_forward(router.name, record.node)
        marker = encode_v2(None, None, tlvs=((NODE_TLV, router.discovery.node.encode()),))
        if kind == RELAY:
            marker += request.encode()
        return conn.relay_to(sock, marker, data, fields={"node": record.node, "nodeAddress": record.address})
    return None


def forwarded_node(head):
    """The nodes a request's ``Gost-Forwarded-Node`` names (before this node adds itself)."""
    value = head.header("gost-forwarded-node")
    return [n.strip() for n in value.split(",") if n.strip()] if value else []


def remote_http_route(router, routes, tunnel_id, dst, head, no_live):
    """The route for a request to ``tunnel_id`` when no connection of it is here, or None
    when no other node holds one either.

    :class:`Refused` (503, ``no_live``) when the request was forwarded by
    another node already (it is not passed on twice), or when the service
    discovery cannot be asked.  ``routes`` caches the route per client.
    """
    came_from = forwarded_node(head)
    if came_from:
        raise Refused(503, no_live, detail="no connection of tunnel %s here, and the request was forwarded "
                      "by node %s" % (tunnel_id.text, came_from[-1]))
    try:
        if not _records(router, tunnel_id, "tcp", wait=may_block()):
            return None
    except DiscoveryUnavailable as exc:
        raise Refused(503, no_live, detail=str(exc)) from None
    key = ("node", tunnel_id.key, dst)
    route = routes.get(key)
    if route is None:
        route = routes[key] = _node_route(router, key, tunnel_id, no_live)
    return route


def _node_route(router, key, tunnel_id, no_live):
    pool, metrics, name = router.node_pool(), router.metrics, router.name
    where = {}

    def dial(use_pool):
        try:
            records = _records(router, tunnel_id, "tcp")
        except DiscoveryUnavailable as exc:
            raise Refused(503, no_live, detail=str(exc)) from None
        for record in records:
            sock = pool.take(record.address) if use_pool else None
            if sock is not None:
                return sock, record, True
            try:
                return _dial(record), record, False
            except OSError:
                router.discovery.forget(tunnel_id.text)
        raise Refused(503, no_live, detail="no node holding tunnel %s answers" % tunnel_id.text)

    def open_():
        sock, record, reused = dial(True)
        where[sock] = record
        metrics.cluster_forward(name, record.node)
        return sock, {"tunnel": tunnel_id.text, "node": record.node}, reused

    def release(sock, reusable, _sent, _received):
        record = where.pop(sock, None)
        if reusable and record is not None:
            pool.put(record.address, sock)
        else:
            sock.close()

    def retry():
        sock, record, _ = dial(False)
        where[sock] = record
        return sock

    return Route(key, open_, release, retry, pooled=True)


def read_node_header(sock, data):
    """A forwarded connection's PROXY v2 header: ``(node or None, socket after it)``."""
    with gevent.Timeout(NODE_HEADER_TIMEOUT, OSError("no whole PROXY header")):
        header, data = read_head(sock, parse_proxy_header, data)
    node = None
    for kind, value in header.tlvs:
        if kind == NODE_TLV:
            node = value.decode("utf-8", "replace")
    return node, with_prefix(sock, data[header.length:])

