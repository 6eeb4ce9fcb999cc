"""Workers passing tunnel visitors to each other (gostgev.cluster), in one process."""

import gevent
import pytest

from gostgev import cluster
from tests.conftest import wait_until

KEY = bytes(range(16))


@pytest.fixture
def pair():
    members = cluster.create(2)
    started = [m.start() for m in members]
    yield started
    for member in started:
        member.close()


def test_announced_tunnels_route_a_handed_off_socket(pair, socket_pair):
    first, second = pair
    got = []

    def receive(conn, header, data):
        got.append((header["tunnel"], header["from"], data, conn.recv(100)))
        conn.sendall(b"served by the second worker")

    second.serve("server", receive)
    second.announce("server", [KEY])
    assert wait_until(lambda: first.owners("server", KEY) == [1])
    assert first.owners("server", b"\x00" * 16) == [] and first.owners("other", KEY) == []
    client, accepted = socket_pair()
    with client:
        assert first.hand_off(1, accepted, {"service": "server", "tunnel": "t"}, b"already read")
        accepted.close()                       # the first worker lets go; the second still has it
        client.sendall(b"more")
        client.settimeout(5)
        assert client.recv(100) == b"served by the second worker"
        assert client.recv(100) == b""         # closed by the second worker when done
    assert got == [("t", 0, b"already read", b"more")]


def test_withdrawn_tunnels_and_dead_workers_are_forgotten(pair, socket_pair):
    first, second = pair
    second.announce("server", [KEY])
    assert wait_until(lambda: first.owners("server", KEY) == [1])
    second.announce("server", [])
    assert wait_until(lambda: first.owners("server", KEY) == [])
    second.announce("server", [KEY])
    assert wait_until(lambda: first.owners("server", KEY) == [1])
    second.close()
    client, accepted = socket_pair()
    with client, accepted:
        assert not first.hand_off(1, accepted, {"service": "server", "tunnel": "t"}, b"")
    assert first.owners("server", KEY) == []


def test_hand_off_for_an_unknown_service_is_dropped_and_closed(pair, socket_pair):
    first, _second = pair
    client, accepted = socket_pair()
    with client:
        assert first.hand_off(1, accepted, {"service": "nobody", "tunnel": "t"}, b"")
        accepted.close()
        client.settimeout(5)
        assert client.recv(100) == b""         # no descriptor leaks on the receiving side


def test_a_burst_of_hand_offs_waits_for_a_slow_sibling_and_loses_none(pair, socket_pair):
    """The kernel queues only a few datagrams per socket (net.unix.max_dgram_qlen);
    senders must wait for room, not drop what does not fit."""
    first, second = pair
    got = []

    def receive(conn, header, data):
        got.append(header["n"])
        conn.sendall(b"%d" % header["n"])

    second.serve("server", receive)
    peers = []

    def hand_one(n):
        mine, theirs = socket_pair(tcp=False)
        peers.append((n, mine, first.hand_off(1, theirs, {"service": "server", "n": n}, b"")))
        theirs.close()

    count = 300
    gevent.joinall([gevent.spawn(hand_one, n) for n in range(count)], timeout=20)
    assert sorted(n for n, _, ok in peers if ok) == list(range(count))
    for n, mine, _ in peers:
        with mine:
            mine.settimeout(5)
            assert mine.recv(16) == b"%d" % n
    assert sorted(got) == list(range(count))
