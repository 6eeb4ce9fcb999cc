"""gostgev.accept: listening sockets and the accept loop."""

import socket as _stdsocket

import gevent.event
from gevent import socket

from gostgev.accept import Workers, listen_tcp, serve_tcp
from gostgev.addr import Addr
from tests.conftest import wait_until


def test_accepted_connections_have_nodelay_from_the_listening_socket():
    got = gevent.event.AsyncResult()
    server = serve_tcp(listen_tcp(Addr("127.0.0.1", 0)),
                       lambda sock, _address: got.set(sock.getsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY)))
    try:
        with socket.create_connection(("127.0.0.1", server.address[1]), timeout=5):
            assert got.get(timeout=5) != 0
    finally:
        server.stop()


def test_a_connection_is_served_by_a_greenlet_that_served_an_earlier_one():
    served = []
    server = serve_tcp(listen_tcp(Addr("127.0.0.1", 0)), lambda sock, _address: served.append(gevent.getcurrent()))
    try:
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", server.address[1]), timeout=5):
                count = len(served)
                assert wait_until(lambda c=count: len(served) == c + 1, 5)
        assert len(set(map(id, served))) == 1, "each connection started a greenlet of its own"
        assert server.workers.idle == 1
    finally:
        server.stop()
    assert wait_until(lambda: served[0].dead, 5), "an idle greenlet outlived its server"


def test_concurrent_connections_get_greenlets_of_their_own():
    release = gevent.event.Event()
    busy = []

    def handle(sock, _address):
        busy.append(gevent.getcurrent())
        release.wait(5)

    server = serve_tcp(listen_tcp(Addr("127.0.0.1", 0)), handle)
    try:
        clients = [socket.create_connection(("127.0.0.1", server.address[1]), timeout=5) for _ in range(4)]
        assert wait_until(lambda: len(busy) == 4, 5)
        assert len(set(map(id, busy))) == 4
        release.set()
        for client in clients:
            client.close()
    finally:
        server.stop()


def test_workers_join_waits_for_busy_greenlets_and_kill_ends_them():
    workers = Workers()
    finish = gevent.event.Event()
    done = []
    workers.spawn(lambda: (finish.wait(5), done.append(1)))
    workers.spawn(lambda: gevent.sleep(30))
    assert wait_until(lambda: workers.busy == 2, 5)
    assert not workers.join(0.05)
    finish.set()
    assert wait_until(lambda: done == [1] and workers.busy == 1, 5)
    workers.kill(timeout=1)
    assert workers.join(1) and workers.busy == 0
    workers.close()
