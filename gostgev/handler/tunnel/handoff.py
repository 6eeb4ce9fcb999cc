"""Tunnel visitors between ``--workers`` processes.

Each worker holds the tunnel connections its own accept() got.  A visitor
accepted by a worker without a connection for its tunnel is passed to one
that has one (:mod:`gostgev.cluster` says which): a plain socket itself
moves there; a connection whose transport lives in this process (TLS,
WebSocket) cannot, so the worker gets one end of a socket pair and this
side pipes the other.
"""

from gevent import socket

from gostgev.addr import address_tuple, host_without_port
from gostgev.codec import relay
from gostgev.codec.sniff import HTTP
from gostgev.connection import Connection
from gostgev.netio.peek import bare_socket
from gostgev.netio.pipe import pipe

__all__ = ["hand_off", "handed_over"]


def hand_off(router, conn, tunnel_id, kind, src, dst, data, log):
    """Pass ``conn`` to a worker holding ``tunnel_id``; False if none could take it."""
    member = router.cluster
    if member is None:
        return False
    owners = member.owners(router.name, tunnel_id.key)
    if not owners:
        return False
    header = {"service": router.name, "tunnel": tunnel_id.text, "kind": kind, "src": src, "dst": dst}
    sock = bare_socket(conn)
    ours = None
    if sock is None:
        ours, sock = socket.socketpair()
    try:
        for index in owners:
            if member.hand_off(index, sock, header, data):
                log.debug("handed to worker %d", index)
                if ours is not None:
                    pipe(conn, ours)
                return True
        return False
    finally:
        if ours is not None:
            ours.close()
            sock.close()


def handed_over(router, sock, header, data):
    """Serve a connection another worker passed here, as that worker would have."""
    kind, src, dst = header["kind"], header["src"], header["dst"]
    conn = Connection(sock, address_tuple(src), router.log.bind(worker=header.get("from")), router.name,
                      metrics=router.metrics)
    if kind == HTTP:
        # Routed request by request here as well (through the handler's ingress).
        return router.serve_http(conn, data, router.ingress)
    tunnel_id = relay.TunnelID.parse(header["tunnel"])
    conn.log = conn.log.bind(host=host_without_port(dst), tunnel=tunnel_id.text)
    # Gone since the other worker looked: refused as it would have been; never passed on again.
    return router.relay(conn, tunnel_id, kind, dst, data, src=src, may_hand_off=False)
