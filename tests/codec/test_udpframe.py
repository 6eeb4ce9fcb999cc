"""GOST's UDP framing on a stream: 2-byte big-endian length, then the datagram."""

import random

import pytest

from gostgev.codec.udpframe import MAX_DATAGRAM, Deframer, encode
from gostgev.errors import LocalProtocolError


def test_the_wire_bytes():
    # A DNS-like query of 29 bytes goes out as 00 1d + the datagram.
    query = bytes.fromhex("1234010000010000000000000364e7730565786d706c6503636f6d0000010001")[:29]
    assert encode(query) == b"\x00\x1d" + query
    assert encode(b"") == b"\x00\x00"


def test_datagrams_are_never_split_or_merged_however_the_bytes_arrive():
    rng = random.Random(5)
    datagrams = [rng.randbytes(rng.choice([0, 1, 2, 511, 1500, 65535])) for _ in range(40)]
    stream = b"".join(encode(d) for d in datagrams)
    deframer, out, pos = Deframer(), [], 0
    for _ in range(10000):
        if pos >= len(stream):
            break
        step = rng.randint(1, 9000)
        out += deframer.feed(stream[pos:pos + step])
        pos += step
    assert out == datagrams


def test_a_datagram_over_the_limit_is_refused():
    with pytest.raises(LocalProtocolError):
        encode(b"x" * (MAX_DATAGRAM + 1))
