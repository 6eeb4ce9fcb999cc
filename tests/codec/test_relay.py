"""Relay protocol v1: the spec's vectors and GOST captures both ways, every feeding, bad input, fuzzing."""

import ipaddress
import json
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gostgev.codec import relay
from gostgev.codec.relay import Request, Response, TunnelID, decode_addr, encode_addr, parse_request, parse_response
from gostgev.errors import LocalProtocolError, RemoteProtocolError

VECTORS = json.loads((pathlib.Path(__file__).resolve().parent.parent / "data" / "relay" / "vectors.json").read_text())
MESSAGES = {v["name"]: v for v in VECTORS["messages"]}
TUNNEL_TEXT = "4d21094e-b74c-4916-86c1-d9fa36ea677b"
TUNNEL_BYTES = bytes.fromhex("4d21094eb74c491686c1d9fa36ea677b")
PAYLOAD = b"\x01\x02GET / HTTP/1.1\r\n"


def expected(vector):
    """The message a vector's ``fields`` describe, plus the parser for its kind."""
    fields = dict(vector["fields"])
    fields["addrs"] = tuple(fields["addrs"])
    if fields["tunnel_id"] is not None:
        fields["tunnel_id"] = TunnelID.from_bytes(bytes.fromhex(fields["tunnel_id"]))
    if vector["kind"] == "request":
        return Request(**fields), parse_request
    return Response(**fields), parse_response


def header(byte1, body):
    return bytes((1, byte1)) + len(body).to_bytes(2, "big") + body


def tlv(kind, data):
    return bytes((kind,)) + len(data).to_bytes(2, "big") + data


# -- vectors -------------------------------------------------------------------


@pytest.mark.parametrize("name", MESSAGES)
def test_vector_decodes(name):
    """Each vector decodes to its fields, consuming every byte."""
    vector = MESSAGES[name]
    message, parse = expected(vector)
    wire = bytes.fromhex(vector["hex"])
    assert parse(wire) == (message, len(wire))


@pytest.mark.parametrize("name", MESSAGES)
def test_vector_encodes(name):
    """Encoding a vector's fields gives its bytes exactly."""
    vector = MESSAGES[name]
    message, _ = expected(vector)
    assert message.encode().hex() == vector["hex"]


@pytest.mark.parametrize("name", MESSAGES)
def test_vector_fed_byte_by_byte(name):
    """Every proper prefix needs more; the complete message parses at its last byte."""
    vector = MESSAGES[name]
    message, parse = expected(vector)
    wire = bytes.fromhex(vector["hex"])
    buf = b""
    for i in range(len(wire)):
        assert parse(buf) is None
        buf += wire[i:i + 1]
    assert parse(buf) == (message, len(wire))


@pytest.mark.parametrize("name", MESSAGES)
def test_vector_with_payload(name):
    """Bytes after the head are payload: not consumed, not looked at."""
    vector = MESSAGES[name]
    message, parse = expected(vector)
    wire = bytes.fromhex(vector["hex"])
    for payload in (b"\x00", PAYLOAD, wire, b"\xff" * 70000):
        assert parse(wire + payload) == (message, len(wire))
    assert parse(bytearray(wire + PAYLOAD)) == (message, len(wire))


@pytest.mark.parametrize("name", ["V3b", "C2"])
def test_endpoint_name_in_bind_reply(name):
    """The reply's host is the MD5 endpoint name of the requested tunnel."""
    vector = MESSAGES[name]
    message, _ = expected(vector)
    name = TunnelID.parse(vector["endpoint_of"]).endpoint_name()
    assert name == "a6265c6d9847a4be"
    assert message.addrs[0] == name + ":0"


def test_empty_and_ipv4_bind_addresses():
    """C1's ":0" is an empty domain; V1b's "0.0.0.0:0" is IPv4: both encode as captured."""
    tid = TunnelID(TUNNEL_BYTES)
    c1 = Request(relay.BIND, addrs=("127.0.0.1:36300", ":0"), tunnel_id=tid)
    assert c1.encode().hex() == MESSAGES["C1"]["hex"]
    v1b = Request(relay.BIND, addrs=("192.168.1.100:54321", "0.0.0.0:0"), tunnel_id=tid)
    assert v1b.encode().hex() == MESSAGES["V1b"]["hex"]


@pytest.mark.parametrize("vector", VECTORS["tunnel_ids"], ids=lambda v: v["name"])
def test_tunnel_id_vectors(vector):
    tid = TunnelID(bytes.fromhex(vector["text"].replace("-", "")), vector["flag"], vector["weight"])
    assert tid.to_bytes().hex() == vector["hex"]
    assert TunnelID.from_bytes(bytes.fromhex(vector["hex"])) == tid
    assert tid.text == vector["text"]
    if vector["parse"]:
        assert TunnelID.parse(vector["parse"]) == tid


@pytest.mark.parametrize("vector", VECTORS["addrs"], ids=lambda v: v["name"])
def test_addr_vectors(vector):
    assert encode_addr(vector["addr"]).hex() == vector["hex"]
    assert decode_addr(bytes.fromhex(vector["hex"])) == vector["addr"]
    assert Response(0, addrs=(vector["addr"],)).encode()[4:].hex() == vector["tlv"]


def test_constants_pinned():
    assert (relay.VERSION, relay.CONNECT, relay.BIND, relay.ASSOCIATE, relay.FLAG_UDP) == (1, 1, 2, 3, 0x80)
    assert relay.STATUS_NAMES[relay.UNAUTHORIZED] == "Unauthorized"
    assert relay.STATUS_NAMES[relay.INTERNAL_SERVER_ERROR] == "Internal Server Error"
    assert sorted(relay.STATUS_NAMES) == list(range(9))
    assert relay.NETWORKS == {0: "tcp", 1: "udp", 2: "ip", 0x10: "unix", 0x11: "serial"}


# -- decoding details and errors -----------------------------------------------


@pytest.mark.parametrize("data, message", [
    (b"\x05", "bad version"),
    (b"\x00\x01\x00\x00", "bad version"),
    (b"\x52\x01\x00\x00", "bad version"),
    (header(1, b"\x02\x00\x07\x01\x7f\x00"), "past the feature list"),
    (header(1, b"\x02\x00"), "truncated feature header"),
    (header(1, tlv(1, b"")), "UserAuth"),
    (header(1, tlv(1, b"\x05ab")), "UserAuth"),
    (header(1, tlv(1, b"\x01a\x03b")), "UserAuth"),
    (header(1, tlv(2, b"\x01\x7f\x00")), "at least 4 bytes"),
    (header(1, tlv(2, b"\x01\x7f\x00\x00\x01\x00")), "needs 7 bytes"),
    (header(1, tlv(2, b"\x04" + bytes(16) + b"\x00")), "needs 19 bytes"),
    (header(1, tlv(2, b"\x03\x05abc\x00")), "needs 9 bytes"),
    (header(1, tlv(2, b"\x02\x00\x00\x00")), "unknown address type 2"),
    (header(1, tlv(3, TUNNEL_BYTES[:15])), "Tunnel feature needs 16 bytes"),
    (header(1, tlv(3, TUNNEL_BYTES + bytes(4)) + tlv(3, b"\x00")), "Tunnel feature needs 16 bytes"),
    (header(1, tlv(4, b"\x01")), "Network feature needs 2 bytes"),
])
def test_bad_input(data, message):
    with pytest.raises(RemoteProtocolError, match=message):
        parse_request(data)
    if b"UserAuth" not in message.encode():  # only requests interpret UserAuth
        with pytest.raises(RemoteProtocolError, match=message):
            parse_response(data)


def test_declared_length_beyond_data_needs_more():
    """A FEALEN longer than what arrived is a short read, never an error."""
    assert parse_request(b"\x01\x01\xff\xff" + bytes(100)) is None
    assert parse_response(b"\x01\x00\x00\x0a\x02\x00\x07") is None
    assert parse_request(b"") is None
    assert parse_request(b"\x01\x01\x00") is None


def test_unknown_features_are_skipped_and_kept():
    """Unknown types (e.g. GOST's metadata) pass through in order; known ones still decode."""
    body = tlv(5, b"record.mode") + tlv(2, encode_addr("example.com:80")) + tlv(0xEE, b"")
    request, used = parse_request(header(1, body))
    assert request.addrs == ("example.com:80",)
    assert request.unknown == ((5, b"record.mode"), (0xEE, b""))
    assert used == 4 + len(body)
    assert request.encode() == header(1, tlv(2, encode_addr("example.com:80")) + tlv(5, b"record.mode")
                                      + tlv(0xEE, b""))


def test_user_auth_in_a_response_is_not_interpreted():
    response, _ = parse_response(header(0, tlv(1, b"\x01u\x01p")))
    assert response.unknown == ((1, b"\x01u\x01p"),)


def test_repeats_keep_the_first_and_trailing_data_is_ignored():
    other = bytes(range(16))
    body = (tlv(3, TUNNEL_BYTES + b"\x00\x00\x00\x07\xff") + tlv(3, other + bytes(4))
            + tlv(4, b"\x00\x01\xff") + tlv(4, b"\x00\x00")
            + tlv(1, b"\x01a\x01bEXTRA") + tlv(1, b"\x01c\x01d"))
    request, _ = parse_request(header(relay.CONNECT | relay.FLAG_UDP, body))
    assert request.tunnel_id == TunnelID(TUNNEL_BYTES, 0, 7)
    assert (request.network, request.username, request.password) == ("udp", "a", "b")
    assert (request.cmd, request.flags) == (relay.CONNECT, relay.FLAG_UDP)


def test_network_ids():
    for code, name in [(0, "tcp"), (1, "udp"), (2, "ip"), (0x10, "unix"), (0x11, "serial"), (0x99, "tcp")]:
        request, _ = parse_request(header(1, tlv(4, code.to_bytes(2, "big"))))
        assert request.network == name
    assert parse_request(header(1, b""))[0].network is None


def test_user_auth_edge_cases():
    """Empty fields are legal; non-UTF-8 bytes are replaced, not fatal."""
    request, _ = parse_request(header(2, tlv(1, b"\x00\x00")))
    assert (request.username, request.password) == ("", "")
    request, _ = parse_request(header(2, tlv(1, b"\x02\xff\xfe\x00")))
    assert request.username == "\ufffd\ufffd"
    assert Request(2, username="u").encode() == header(2, tlv(1, b"\x01u\x00"))
    assert Request(2, username="ü", password="p").encode() == header(2, tlv(1, b"\x02\xc3\xbc\x01p"))


# -- addresses -----------------------------------------------------------------


@pytest.mark.parametrize("text, data", [
    ("1.2.3.4:80", "01010203040050"),
    ("[::ffff:1.2.3.4]:80", "01010203040050"),
    ("[2001:db8::1]:443", "0420010db800000000000000000000000101bb"),
    ("[::]:0", "04" + "00" * 16 + "0000"),
    ("::1", "04" + "00" * 15 + "01" + "0000"),
    ("example.com", "030b6578616d706c652e636f6d0000"),
    ("example.com:http", "030b6578616d706c652e636f6d0000"),
    ("Example.COM:8080", "030b4578616d706c652e434f4d1f90"),
    ("01.2.3.4:1", "030830312e322e332e340001"),
    ("[fe80::1%eth0]:22", "030c666538303a3a312565746830" + "0016"),
    ("[a:b]:1", "0303613a620001"),
    (":65535", "0300ffff"),
])
def test_encode_addr(text, data):
    assert encode_addr(text).hex() == data


@pytest.mark.parametrize("text", ["", ":", "host:", "[::1]:", "[::1", "[::1]x", "h:70000", "x" * 256 + ":1"])
def test_encode_addr_refuses(text):
    with pytest.raises(LocalProtocolError):
        encode_addr(text)


@pytest.mark.parametrize("data, text", [
    ("0400000000000000000000ffff0102030400ff", "1.2.3.4:255"),
    ("030561623a63640001", "[ab:cd]:1"),
    ("0300000000", ":0"),
    ("01c0a80164d431ffff", "192.168.1.100:54321"),
])
def test_decode_addr(data, text):
    assert decode_addr(bytes.fromhex(data)) == text


def test_encode_limits():
    with pytest.raises(LocalProtocolError):
        Request(1, username="u" * 256).encode()
    with pytest.raises(LocalProtocolError):
        Request(1, username="u", password="ü" * 128).encode()
    with pytest.raises(LocalProtocolError, match="FEALEN"):
        Request(1, addrs=("x" * 255 + ":1",) * 300).encode()
    with pytest.raises(LocalProtocolError):
        Request(1, network="sctp").encode()
    with pytest.raises(LocalProtocolError):
        Request(0x10).encode()
    with pytest.raises(LocalProtocolError):
        Request(1, flags=0x01).encode()
    with pytest.raises(LocalProtocolError):
        Response(256).encode()
    assert Request(1, network="tcp").encode() == header(1, tlv(4, b"\x00\x00"))


# -- tunnel IDs ----------------------------------------------------------------


@pytest.mark.parametrize("text", [
    TUNNEL_TEXT,
    TUNNEL_TEXT.upper(),
    TUNNEL_TEXT.replace("-", ""),
    "{%s}" % TUNNEL_TEXT,
    "urn:uuid:" + TUNNEL_TEXT,
    "URN:UUID:" + TUNNEL_TEXT.upper(),
])
def test_tunnel_id_parse_forms(text):
    tid = TunnelID.parse(text)
    assert tid == TunnelID(TUNNEL_BYTES)
    assert (tid.text, tid.private, tid.key, str(tid)) == (TUNNEL_TEXT, False, TUNNEL_BYTES, TUNNEL_TEXT)
    private = TunnelID.parse("$" + text)
    assert (private.flag, private.private, private.key) == (0x80, True, TUNNEL_BYTES)
    assert str(private) == "$" + TUNNEL_TEXT and TunnelID.parse(str(private)) == private


@pytest.mark.parametrize("text", [
    "", "$", "$$" + TUNNEL_TEXT, TUNNEL_TEXT[:-1], TUNNEL_TEXT + "0", TUNNEL_TEXT + "\n", " " + TUNNEL_TEXT,
    TUNNEL_TEXT.replace("-", "_"), TUNNEL_TEXT.replace("d", "g"), "{%s" % TUNNEL_TEXT, "(%s)" % TUNNEL_TEXT,
    "urn:uuid:" + TUNNEL_TEXT.replace("-", ""), "{%s}" % TUNNEL_TEXT.replace("-", ""),
    "4d21094e-b74c4916-86c1-d9fa36ea677b-",
    None, 42, TUNNEL_BYTES,
])
def test_tunnel_id_parse_refuses(text):
    with pytest.raises(ValueError):
        TunnelID.parse(text)


def test_tunnel_id_identity_and_zero():
    """Flag and weight never change which tunnel is meant."""
    a, b = TunnelID(TUNNEL_BYTES, 0x80, 3), TunnelID(TUNNEL_BYTES, 0, 255)
    assert a.key == b.key and a != b
    assert TunnelID(bytes(16), 0x80, 9).is_zero
    assert not TunnelID(bytes(15) + b"\x01").is_zero
    assert TunnelID.parse("0" * 32).is_zero
    assert TunnelID(bytearray(TUNNEL_BYTES)).uuid == TUNNEL_BYTES
    assert len(TunnelID(TUNNEL_BYTES).to_bytes()) == 20


def test_tunnel_id_short_forms():
    """relay v0.5 sends the bare 16 bytes; less than that is an error."""
    assert TunnelID.from_bytes(TUNNEL_BYTES) == TunnelID(TUNNEL_BYTES, 0, 0)
    assert TunnelID.from_bytes(TUNNEL_BYTES + b"\x80") == TunnelID(TUNNEL_BYTES, 0x80, 0)
    request, used = parse_request(header(2, tlv(3, TUNNEL_BYTES)))
    assert request.tunnel_id == TunnelID(TUNNEL_BYTES) and used == 23
    with pytest.raises(RemoteProtocolError):
        TunnelID.from_bytes(TUNNEL_BYTES[:15])


@pytest.mark.parametrize("args", [
    (b"\x00" * 15,), (b"\x00" * 20,), (TUNNEL_TEXT,), (TUNNEL_BYTES, 256), (TUNNEL_BYTES, 0, -1),
])
def test_tunnel_id_construction_refuses(args):
    with pytest.raises(ValueError):
        TunnelID(*args)


def test_endpoint_name():
    assert TunnelID.parse(TUNNEL_TEXT).endpoint_name() == "a6265c6d9847a4be"
    assert TunnelID.parse("$" + TUNNEL_TEXT.upper()).endpoint_name() == "a6265c6d9847a4be"


# -- properties ----------------------------------------------------------------

_names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=40).filter(
    lambda s: not _is_ip(s))
_ipv4 = st.builds(ipaddress.IPv4Address, st.integers(0, 2**32 - 1)).map(str)
_ipv6 = st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1)).filter(
    lambda ip: ip.ipv4_mapped is None).map(lambda ip: "[%s]" % ip)
_ports = st.integers(0, 65535)
_addrs = st.builds(lambda host, port: "%s:%d" % (host, port), st.one_of(_names, _ipv4, _ipv6, st.just("")), _ports)
_tunnel_ids = st.builds(TunnelID, st.binary(min_size=16, max_size=16), st.integers(0, 255), st.integers(0, 255))
_networks = st.none() | st.sampled_from(sorted(relay.NETWORKS.values()))
_unknown = st.lists(st.tuples(st.integers(5, 255), st.binary(max_size=20)), max_size=2).map(tuple)
_auth = st.none() | st.tuples(st.text(max_size=20), st.text(max_size=20))


def _is_ip(text):
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@st.composite
def _requests(draw):
    auth = draw(_auth)
    return Request(
        cmd=draw(st.integers(0, 15)), flags=draw(st.sampled_from([0, relay.FLAG_UDP, 0xF0])),
        username=auth and auth[0], password=auth and auth[1],
        addrs=tuple(draw(st.lists(_addrs, max_size=3))), tunnel_id=draw(st.none() | _tunnel_ids),
        network=draw(_networks), unknown=draw(_unknown))


_responses = st.builds(Response, st.integers(0, 255), st.lists(_addrs, max_size=3).map(tuple),
                       st.none() | _tunnel_ids, _networks, _unknown)


@settings(max_examples=300, deadline=None)
@given(_requests(), _responses, st.binary(max_size=8))
def test_round_trip(request, response, payload):
    """Encoding then parsing gives the same message back, payload untouched."""
    wire = request.encode()
    assert parse_request(wire + payload) == (request, len(wire))
    wire = response.encode()
    assert parse_response(wire + payload) == (response, len(wire))


def _answers(data):
    for parse, kind in ((parse_request, Request), (parse_response, Response)):
        try:
            result = parse(data)
        except RemoteProtocolError:
            continue
        if result is not None:
            message, used = result
            assert isinstance(message, kind) and 4 <= used <= len(data)


_features = st.lists(st.tuples(st.integers(0, 6), st.binary(max_size=24)), max_size=4)


@st.composite
def _plausible(draw):
    """Well-framed TLVs of random content, with FEALEN nudged off the truth."""
    body = b"".join(tlv(kind, data) for kind, data in draw(_features))
    size = max(0, min(0xFFFF, len(body) + draw(st.integers(-3, 3))))
    return bytes((1, draw(st.integers(0, 255)))) + size.to_bytes(2, "big") + body + draw(st.binary(max_size=4))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | _plausible())
def test_arbitrary_bytes(data):
    """Any bytes give a message, None or RemoteProtocolError, never anything else."""
    _answers(data)
