"""First-bytes protocol detection."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gostgev.codec.sniff import HTTP, RAW, RELAY, TLS, detect


@pytest.mark.parametrize("data, expected", [
    (b"", None), (b"\x16", None), (b"\x16\x03", None), (b"\x16\x03\x01", TLS), (b"\x16\x03\x05", RAW),
    (b"G", None), (b"GET", None), (b"GET ", HTTP), (b"PROPFIND /", HTTP), (b"PRI * HTTP/2.0", HTTP),
    (b"SSH-2.0-OpenSSH", RAW), (b"*1\r\n$4\r\nPING", RAW), (b"\x00", RAW), (b"GETX", RAW),
    (b"\x01", RELAY), (b"\x01\x02\x00", RELAY),
])
def test_detect(data, expected):
    assert detect(data) == expected


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=64))
def test_detect_is_total_and_stable(data):
    """Any bytes give an answer or "need more"; an answer never changes with more bytes."""
    first = detect(data)
    assert first in (None, TLS, HTTP, RELAY, RAW)
    if first is not None:
        assert detect(data + b"more bytes") == first
    if len(data) >= 16:
        assert first is not None
