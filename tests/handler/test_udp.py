"""UDP services: a plain forwarder, and a UDP visitor reaching an rudp tunnel client, with a DNS-like echo."""

import gevent
import pytest
from gevent import socket

from gostgev.config.spec import apply_cli
from tests.conftest import wait_until
from tests.handler.test_tunnel import TUNNEL_B, Deployment


@pytest.fixture
def echo():
    """A UDP server answering every datagram with b"re:" + it."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))

    def serve():
        for _ in range(100000):
            data, peer = sock.recvfrom(65535)
            sock.sendto(b"re:" + data, peer)

    server = gevent.spawn(serve)
    yield "127.0.0.1:%d" % sock.getsockname()[1]
    server.kill()
    sock.close()


def exchange(port, datagrams, timeout=5):
    """Send each datagram from one client socket; the answers, one per datagram."""
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.settimeout(timeout)
    try:
        answers = []
        for datagram in datagrams:
            client.sendto(datagram, ("127.0.0.1", port))
            answers.append(client.recvfrom(65535)[0])
        return answers
    finally:
        client.close()


DATAGRAMS = [b"\x12\x34query-1", b"", b"x" * 1400, b"\x00" * 9000]


def test_a_udp_forwarder_keeps_each_datagram_whole(start_services, echo):
    service = start_services(apply_cli({}, ["udp://127.0.0.1:0/" + echo], []))["service-0"]
    port = service.address[1]
    assert exchange(port, DATAGRAMS) == [b"re:" + d for d in DATAGRAMS]
    # Two clients at once: each gets its own association and its own answers.
    results = gevent.pool.Group().map(lambda i: exchange(port, [b"client-%d" % i] * 3), range(2))
    assert results == [[b"re:client-0"] * 3, [b"re:client-1"] * 3]


def test_associations_end_after_their_ttl_and_are_bounded(start_services, echo):
    raw = apply_cli({}, ["udp://127.0.0.1:0/%s?ttl=0.3s&backlog=1" % echo], [])
    service = start_services(raw)["service-0"]
    port = service.address[1]
    first = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    second = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    second.settimeout(0.5)
    try:
        first.sendto(b"one", ("127.0.0.1", port))
        assert wait_until(lambda: len(service.listener.associations) == 1, 2)
        second.sendto(b"two", ("127.0.0.1", port))            # the backlog is full: dropped
        with pytest.raises(socket.timeout):
            second.recvfrom(100)
        assert wait_until(lambda: not service.listener.associations, 3)   # idle for its ttl: gone
        second.sendto(b"three", ("127.0.0.1", port))
        assert second.recvfrom(100)[0] == b"re:three"
    finally:
        first.close()
        second.close()


def test_a_udp_visitor_reaches_an_rudp_tunnel_client(start_services, echo):
    dep = Deployment(start_services, [("dns.local", "$" + TUNNEL_B)])
    start_services(apply_cli({}, ["rudp://:0/" + echo],
                             ["tunnel://127.0.0.1:%d?tunnel.id=%s" % (dep.port, TUNNEL_B)]))
    assert wait_until(lambda: any(c.udp for t in dep.registry.tunnels() for c in t.connectors), 10)
    visitor = start_services(apply_cli({}, ["udp://127.0.0.1:0/dns.local:53"],
                                       ["tunnel://127.0.0.1:%d?tunnel.id=%s" % (dep.port, TUNNEL_B)]))["service-0"]
    assert exchange(visitor.address[1], DATAGRAMS) == [b"re:" + d for d in DATAGRAMS]
