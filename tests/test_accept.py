"""gostgev.accept: listening sockets and the accept loop."""

import socket as _stdsocket

import gevent.event
from gevent import socket

from gostgev.accept import listen_tcp, serve_tcp
from gostgev.addr import Addr


def test_accepted_connections_have_nodelay_from_the_listening_socket():
    got = gevent.event.AsyncResult()
    server = serve_tcp(listen_tcp(Addr("127.0.0.1", 0)),
                       lambda sock, _address: got.set(sock.getsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY)))
    try:
        with socket.create_connection(("127.0.0.1", server.address[1]), timeout=5):
            assert got.get(timeout=5) != 0
    finally:
        server.stop()
