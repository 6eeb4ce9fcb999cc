"""The pipe on its own: back-pressure, byte counts, and being killed mid-transfer."""

import hashlib
import os

import gevent
import pytest

from gostgev.netio.pipe import pipe


@pytest.fixture
def two_pairs(socket_pair):
    """outside <-> (a | b) <-> inside, with pipe() joining a and b."""
    outside, a = socket_pair()
    b, inside = socket_pair()
    return outside, a, b, inside


def test_slow_reader_gets_everything_in_order(two_pairs):
    """The writer outruns the reader many times over: back-pressure, not loss or growth."""
    outside, a, b, inside = two_pairs
    payload = os.urandom(16 << 20)
    piping = gevent.spawn(pipe, a, b)
    writer = gevent.spawn(lambda: (outside.sendall(payload), outside.shutdown(1)))
    received = bytearray()
    for _ in range(100000):
        chunk = inside.recv(32768)
        if not chunk:
            break
        received += chunk
        if len(received) % (1 << 20) < 32768:
            gevent.sleep(0.01)        # read slowly now and then
    writer.get(timeout=10)
    inside.shutdown(1)
    assert piping.get(timeout=10) == (len(payload), 0)
    assert hashlib.sha256(received).digest() == hashlib.sha256(payload).digest()


def test_killing_the_pipe_shuts_both_sides(two_pairs):
    outside, a, b, inside = two_pairs
    piping = gevent.spawn(pipe, a, b)
    outside.sendall(b"hello")
    assert inside.recv(5) == b"hello"
    piping.kill(timeout=2)
    outside.settimeout(2)
    inside.settimeout(2)
    assert outside.recv(10) == b""
    assert inside.recv(10) == b""


def test_bytes_read_ahead_are_not_skipped(two_pairs):
    """A wrapper replaying bytes already read must not be bypassed by the fast path."""
    from gostgev.netio.peek import with_prefix

    outside, a, b, inside = two_pairs
    piping = gevent.spawn(pipe, with_prefix(a, b"early "), b)
    outside.sendall(b"late")
    outside.shutdown(1)
    received = b""
    for _ in range(100):
        chunk = inside.recv(100)
        if not chunk:
            break
        received += chunk
        if received == b"early late":
            break
    assert received == b"early late"
    inside.shutdown(1)
    piping.get(timeout=5)
