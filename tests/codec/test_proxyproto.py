"""PROXY protocol v1/v2: byte vectors from the spec, truncation, bad input, encoders, fuzzing."""

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gostgev.codec.proxyproto import (
    MAX_V1_BYTES,
    MAX_V2_BYTES,
    PP2_TYPE_ALPN,
    SIGNATURE_V2,
    ProxyHeader,
    encode_v1,
    encode_v2,
    looks_like_proxy,
    parse_proxy_header,
)
from gostgev.errors import LocalProtocolError, RemoteProtocolError

SIG = "0d0a0d0a000d0a515549540a"  # "\r\n\r\n\0\r\nQUIT\n"

V1_TCP4 = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
V1_TCP6_MAX = (b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
               b" 65535 65535\r\n")
V1_UNKNOWN = b"PROXY UNKNOWN\r\n"
# The spec's worst case: UNKNOWN followed by a maximal TCP6 tail, 107 bytes in all.
V1_UNKNOWN_MAX = (b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
                  b" 65535 65535\r\n")

V2_TCP4 = bytes.fromhex(
    SIG + "21"          # version 2, PROXY
    "11"                # INET, STREAM
    "000c"              # 12 bytes follow
    "7f000001 7f000001"  # 127.0.0.1 -> 127.0.0.1
    "9c40 0050")        # 40000 -> 80
V2_TCP6 = bytes.fromhex(
    SIG + "21" "21" "0024"
    "20010db8000000000000000000000001"  # 2001:db8::1
    "20010db8000000000000000000000011"  # 2001:db8::11
    "dc04 01bb")                        # 56324 -> 443
V2_LOCAL = bytes.fromhex(SIG + "20" "00" "0000")
V2_ALPN = bytes.fromhex(
    SIG + "21" "11" "0011"  # 12 address bytes + one 5-byte TLV
    "c0a80001 c0a8000b dc04 01bb"
    "01 0002 6832")         # PP2_TYPE_ALPN "h2"

VECTORS = [
    (V1_TCP4, ProxyHeader(1, "PROXY", "tcp4", ("192.168.0.1", 56324), ("192.168.0.11", 443), 47)),
    (V1_TCP6_MAX, ProxyHeader(1, "PROXY", "tcp6", ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
                              ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535), 104)),
    (V1_UNKNOWN, ProxyHeader(1, "LOCAL", "unspec", None, None, 15)),
    (V1_UNKNOWN_MAX, ProxyHeader(1, "LOCAL", "unspec", None, None, 107)),
    (V2_TCP4, ProxyHeader(2, "PROXY", "tcp4", ("127.0.0.1", 40000), ("127.0.0.1", 80), 28)),
    (V2_TCP6, ProxyHeader(2, "PROXY", "tcp6", ("2001:db8::1", 56324), ("2001:db8::11", 443), 52)),
    (V2_LOCAL, ProxyHeader(2, "LOCAL", "unspec", None, None, 16)),
    (V2_ALPN, ProxyHeader(2, "PROXY", "tcp4", ("192.168.0.1", 56324), ("192.168.0.11", 443), 33,
                          ((PP2_TYPE_ALPN, b"h2"),))),
]
IDS = ["v1-tcp4", "v1-tcp6-max", "v1-unknown", "v1-unknown-max", "v2-tcp4", "v2-tcp6", "v2-local", "v2-alpn"]


def test_constants():
    """The signature and v1 limit are the spec's."""
    assert SIGNATURE_V2 == bytes.fromhex(SIG)
    assert MAX_V1_BYTES == 107 == len(V1_UNKNOWN_MAX)
    assert len(V1_TCP6_MAX) == 104
    assert MAX_V2_BYTES < 16 + 0xFFFF


@pytest.mark.parametrize("data,expected", VECTORS, ids=IDS)
def test_vector_parses(data, expected):
    """Each vector parses to its header, and payload after it is left alone."""
    assert parse_proxy_header(data) == expected
    assert parse_proxy_header(data + b"GET / HTTP/1.1\r\n\r\n") == expected
    assert parse_proxy_header(bytearray(data)) == expected
    assert parse_proxy_header(memoryview(data + b"\x16\x03\x01")) == expected


@pytest.mark.parametrize("data,expected", VECTORS, ids=IDS)
def test_every_proper_prefix_needs_more(data, expected):
    """Fed one byte at a time, the parser asks for more until the last byte."""
    for n in range(len(data)):
        assert parse_proxy_header(data[:n]) is None, n
    assert parse_proxy_header(data).length == len(data)


def test_encoders_match_vectors():
    """The encoders emit the spec's bytes exactly."""
    assert encode_v1(("192.168.0.1", 56324), ("192.168.0.11", 443)) == V1_TCP4
    ffff = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"
    assert encode_v1((ffff, 65535), (ffff, 65535)) == V1_TCP6_MAX
    assert encode_v1(None, None) == V1_UNKNOWN
    assert encode_v1(None, ("1.2.3.4", 1)) == V1_UNKNOWN
    assert encode_v2(("127.0.0.1", 40000), ("127.0.0.1", 80)) == V2_TCP4
    assert encode_v2(("2001:db8::1", 56324), ("2001:DB8:0::11", 443)) == V2_TCP6
    assert encode_v2(None, None, command="LOCAL") == V2_LOCAL
    assert encode_v2(("1.2.3.4", 1), ("5.6.7.8", 2), command="LOCAL") == V2_LOCAL
    assert encode_v2(("192.168.0.1", 56324), ("192.168.0.11", 443), tlvs=[(PP2_TYPE_ALPN, b"h2")]) == V2_ALPN
    assert encode_v2(None, None) == bytes.fromhex(SIG + "21" "00" "0000")


def test_non_ip_hosts_become_unspecified():
    """GOST's rule: a host that is not an IP literal is sent as 0.0.0.0, then the family is chosen."""
    assert encode_v1(("example.com", 1234), ("10.0.0.1", 80)) == b"PROXY TCP4 0.0.0.0 10.0.0.1 1234 80\r\n"
    assert encode_v1(("203.0.113.7", 5555), ("", 0)) == b"PROXY TCP4 203.0.113.7 0.0.0.0 5555 0\r\n"
    assert encode_v1((None, 1), ("[::1]", 2)) == b"PROXY TCP6 ::ffff:0.0.0.0 ::1 1 2\r\n"
    assert encode_v2(("203.0.113.7", 5555), ("tunnel.local", 0)) == bytes.fromhex(
        SIG + "21" "11" "000c" "cb007107 00000000 15b3 0000")


def test_family_choice():
    """Mixed families go out as TCP6 with IPv4-mapped addresses; mapped inputs count as IPv4."""
    assert encode_v1(("1.2.3.4", 1), ("::1", 2)) == b"PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n"
    assert encode_v2(("1.2.3.4", 1), ("::1", 2)) == bytes.fromhex(
        SIG + "21" "21" "0024" "00000000000000000000ffff01020304" "00000000000000000000000000000001" "0001 0002")
    assert encode_v1(("::ffff:1.2.3.4", 1), ("5.6.7.8", 2)) == b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"
    assert encode_v1(("[fe80::1%eth0]", 1), ("fe80::2", 2)) == b"PROXY TCP6 fe80::1 fe80::2 1 2\r\n"


def test_mapped_addresses_decode_as_ipv4():
    """A TCP6 header carrying IPv4-mapped addresses reports them in IPv4 form, as Go does."""
    header = parse_proxy_header(b"PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n")
    assert header.family == "tcp6" and header.src == ("1.2.3.4", 1) and header.dst == ("::1", 2)
    assert parse_proxy_header(encode_v2(("1.2.3.4", 1), ("::1", 2))).src == ("1.2.3.4", 1)


def test_v1_unknown_ignores_the_rest_of_the_line():
    assert parse_proxy_header(b"PROXY UNKNOWN whatever \xff\r\nx") == ProxyHeader(1, "LOCAL", "unspec", None, None, 26)


@pytest.mark.parametrize("fam,size", [("12", 12), ("22", 36), ("31", 216), ("32", 216), ("10", 12), ("01", 0)])
def test_v2_other_families_are_consumed_without_addresses(fam, size):
    """UDP, UNIX and UNSPEC-protocol blocks are skipped; TLVs after them still decode."""
    data = SIGNATURE_V2 + bytes.fromhex("21" + fam) + (size + 4).to_bytes(2, "big") + bytes(size) + b"\x04\x00\x01z"
    assert parse_proxy_header(data + b"payload") == ProxyHeader(
        2, "PROXY", "unspec", None, None, 16 + size + 4, ((0x04, b"z"),))


def test_v2_local_discards_block():
    """LOCAL ignores whatever family and bytes follow, as the spec requires."""
    data = bytes.fromhex(SIG + "20" "11" "0005" "0102030405")
    assert parse_proxy_header(data) == ProxyHeader(2, "LOCAL", "unspec", None, None, 21)


BAD = {
    "not-proxy-http": b"GET / HTTP/1.1\r\n",
    "not-proxy-tls": bytes.fromhex("160301"),
    "lowercase": b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "v1-no-crlf": b"PROXY UNKNOWN " + b"x" * (MAX_V1_BYTES - 14),
    "v1-too-long": b"PROXY UNKNOWN " + b"x" * (MAX_V1_BYTES - 15) + b"\r\n",
    "v1-bad-family": b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    "v1-udp": b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "v1-bare-lf": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    "v1-unknown-bare-lf": b"PROXY UNKNOWN\n",
    "v1-v6-in-tcp4": b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
    "v1-v4-in-tcp6": b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
    "v1-octet-range": b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n",
    "v1-octet-zero": b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
    "v1-zone": b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
    "v1-hostname": b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n",
    "v1-port-leading-zero": b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
    "v1-port-range": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
    "v1-port-sign": b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
    "v1-port-hex": b"PROXY TCP4 1.2.3.4 5.6.7.8 0x1 2\r\n",
    "v1-double-space": b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
    "v1-missing-port": b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    "v1-extra-field": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
    "v1-trailing-space": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
    "v1-non-ascii": "PROXY TCP4 1.2.3.\u0664 5.6.7.8 1 2\r\n".encode(),
    "v2-version-1": bytes.fromhex(SIG + "11" "11" "000c") + bytes(12),
    "v2-version-3": bytes.fromhex(SIG + "31" "11" "000c") + bytes(12),
    "v2-command-2": bytes.fromhex(SIG + "22" "11" "000c") + bytes(12),
    "v2-family-4": bytes.fromhex(SIG + "21" "41" "000c") + bytes(12),
    "v2-protocol-3": bytes.fromhex(SIG + "21" "13" "000c") + bytes(12),
    "v2-over-cap": bytes.fromhex(SIG + "21" "11" "ffff"),
    "v2-short-tcp4": bytes.fromhex(SIG + "21" "11" "0008") + bytes(8),
    "v2-short-tcp6": bytes.fromhex(SIG + "21" "21" "000c") + bytes(12),
    "v2-short-unix": bytes.fromhex(SIG + "21" "31" "0024") + bytes(36),
    "v2-tlv-header-cut": bytes.fromhex(SIG + "21" "11" "000e") + bytes(12) + b"\x01\x00",
    "v2-tlv-overrun": bytes.fromhex(SIG + "21" "11" "0011") + bytes(12) + b"\x01\x00\x03ab",
}


@pytest.mark.parametrize("data", BAD.values(), ids=BAD.keys())
def test_bad_input_raises(data):
    with pytest.raises(RemoteProtocolError):
        parse_proxy_header(data)


@pytest.mark.parametrize("data", [
    b"PROXY TCP5", b"PROXY UNKNOWNX", b"PROXY \r", SIGNATURE_V2 + b"\x11", SIGNATURE_V2 + b"\x21\x41",
    SIGNATURE_V2 + b"\x21\x11\x10\x00", b"G", b"\r\n\r\n\x01",
])
def test_errors_are_reported_before_the_header_is_complete(data):
    """A bad fixed field fails at once instead of waiting for more bytes."""
    with pytest.raises(RemoteProtocolError):
        parse_proxy_header(data)


def test_cap_boundary():
    """A v2 header of exactly MAX_V2_BYTES parses; one byte more is refused."""
    fill = MAX_V2_BYTES - 16 - 12 - 3
    data = encode_v2(("1.2.3.4", 1), ("5.6.7.8", 2), tlvs=[(0x04, bytes(fill))])
    assert len(data) == MAX_V2_BYTES and parse_proxy_header(data).length == MAX_V2_BYTES
    with pytest.raises(LocalProtocolError):
        encode_v2(("1.2.3.4", 1), ("5.6.7.8", 2), tlvs=[(0x04, bytes(fill + 1))])
    too_big = SIGNATURE_V2 + b"\x21\x11" + (MAX_V2_BYTES - 15).to_bytes(2, "big")
    with pytest.raises(RemoteProtocolError):
        parse_proxy_header(too_big)


@pytest.mark.parametrize("call", [
    lambda: encode_v1(("1.2.3.4", 65536), ("5.6.7.8", 1)),
    lambda: encode_v1(("1.2.3.4", -1), ("5.6.7.8", 1)),
    lambda: encode_v1(("1.2.3.4", "80"), ("5.6.7.8", 1)),
    lambda: encode_v2(("1.2.3.4", True), ("5.6.7.8", 1)),
    lambda: encode_v2(("1.2.3.4", 1), ("5.6.7.8", None)),
    lambda: encode_v2(None, None, command="HEALTH"),
    lambda: encode_v2(None, None, tlvs=[(0x100, b"")]),
])
def test_encode_refuses_what_the_wire_cannot_carry(call):
    with pytest.raises(LocalProtocolError):
        call()


@pytest.mark.parametrize("data,expected", [
    (b"", None), (b"P", None), (b"PROXY", None), (b"PROXY ", True), (b"PROXY TCP4 1", True),
    (b"\r", None), (SIGNATURE_V2[:11], None), (SIGNATURE_V2, True), (SIGNATURE_V2 + b"\x21", True),
    (b"PROXY\t", False), (b"PROXYX", False), (b"\r\n\r\n\x01", False), (b"GET / HTTP/1.1\r\n", False),
    (b"PRI * HTTP/2.0", False), (b"POST", False), (bytes.fromhex("16030100"), False), (b"SSH-2.0", False),
    (bytearray(b"PROXY "), True), (memoryview(SIGNATURE_V2), True),
])
def test_looks_like_proxy(data, expected):
    assert looks_like_proxy(data) is expected


def _expected_host(ip):
    ip = getattr(ip, "ipv4_mapped", None) or ip
    return ip, str(ip)


hosts = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6))
ports = st.integers(0, 0xFFFF)


@settings(max_examples=300, deadline=None)
@given(src=hosts, dst=hosts, sport=ports, dport=ports, version=st.sampled_from([1, 2]))
def test_round_trip(src, dst, sport, dport, version):
    """encode -> parse gives back both endpoints, in Go's spelling of mapped addresses."""
    encode = encode_v1 if version == 1 else encode_v2
    data = encode((str(src), sport), (str(dst), dport))
    header = parse_proxy_header(data + b"payload")
    (a, a_text), (b, b_text) = _expected_host(src), _expected_host(dst)
    assert header == ProxyHeader(version, "PROXY", "tcp4" if a.version == b.version == 4 else "tcp6",
                                 (a_text, sport), (b_text, dport), len(data))
    assert ipaddress.ip_address(a_text) == a


starts = st.sampled_from([b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN", SIGNATURE_V2,
                          SIGNATURE_V2 + b"\x21\x11", SIGNATURE_V2 + b"\x21\x21\x00\x24", SIGNATURE_V2 + b"\x20"])


@settings(max_examples=300, deadline=None)
@given(start=starts, tail=st.binary(max_size=200), extra=st.binary(max_size=20))
def test_arbitrary_bytes(start, tail, extra):
    """Any input gives a header, None or RemoteProtocolError; a header is stable under more input."""
    data = start + tail
    try:
        header = parse_proxy_header(data)
    except RemoteProtocolError:
        return
    if header is None:  # the caps bound how long a peer can keep the parser waiting
        assert len(data) < (MAX_V1_BYTES if data[:1] == b"P" else MAX_V2_BYTES)
        return
    assert isinstance(header, ProxyHeader) and 0 < header.length <= len(data)
    assert parse_proxy_header(data + extra) == header
