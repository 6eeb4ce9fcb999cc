"""WebSocket frames and handshake: RFC 6455 byte vectors, every chunking, every error, fuzzing."""

import base64
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gostgev.codec.http import parse_request_head
from gostgev.codec.ws import (
    MAX_RESPONSE_HEAD_BYTES,
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    Frame,
    FrameParser,
    HandshakeRefused,
    accept_key,
    check_client_handshake,
    check_server_handshake,
    client_handshake,
    close_payload,
    encode_frame,
    mask_payload,
    new_key,
    parse_close_payload,
    path_matches,
    response_head_end,
    server_handshake_response,
)
from gostgev.errors import LocalProtocolError, RemoteProtocolError

MASK = bytes.fromhex("37fa213d")  # the key of RFC 6455 5.7's masked examples

# RFC 6455 5.7: (wire bytes, frames, sent by a client?)
RFC_5_7 = [
    ("81 05 48656c6c6f", [Frame(True, OP_TEXT, b"Hello")], False),
    ("81 85 37fa213d 7f9f4d5158", [Frame(True, OP_TEXT, b"Hello")], True),
    ("01 03 48656c 80 02 6c6f", [Frame(False, OP_TEXT, b"Hel"), Frame(True, OP_CONTINUATION, b"lo")], False),
    ("89 05 48656c6c6f", [Frame(True, OP_PING, b"Hello")], False),
    ("8a 85 37fa213d 7f9f4d5158", [Frame(True, OP_PONG, b"Hello")], True),
]


def unhex(text):
    return bytes.fromhex("".join(text.split()))


def parse(data, chunks=None, masked=False, max_payload=1 << 20):
    """Feed ``data`` in the given chunk sizes (all at once by default); return every frame."""
    parser = FrameParser(max_payload, expect_masked=masked)
    frames, pos = [], 0
    for size in chunks or [len(data)]:
        parser.add_data(data[pos:pos + size])
        pos += size
        frames += list(parser)
    parser.add_data(data[pos:])
    frames += list(parser)
    assert parser.pending == 0
    return frames


def random_chunks(length, seed):
    rng, sizes = random.Random(seed), []
    while sum(sizes) < length:
        sizes.append(rng.randint(1, 4096))
    return sizes


@pytest.mark.parametrize("hexdata, frames, masked", RFC_5_7)
def test_rfc_examples_parse_whole_and_byte_by_byte(hexdata, frames, masked):
    data = unhex(hexdata)
    assert parse(data, masked=masked) == frames
    assert parse(data, [1] * len(data), masked=masked) == frames


@pytest.mark.parametrize("hexdata, frames, masked", RFC_5_7)
def test_rfc_examples_encode(hexdata, frames, masked):
    encoded = b"".join(encode_frame(f.opcode, f.payload, MASK if masked else None, f.fin) for f in frames)
    assert encoded == unhex(hexdata)


def test_rfc_length_headers():
    """RFC 6455 5.7: 256 bytes and 64 KiB of unmasked binary data in one frame."""
    assert encode_frame(OP_BINARY, bytes(256))[:4] == unhex("82 7e 0100")
    assert encode_frame(OP_BINARY, bytes(65536))[:10] == unhex("82 7f 0000000000010000")


def test_rfc_accept_key():
    """RFC 6455 1.3's example key and answer."""
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert accept_key(b"dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("length", [0, 1, 125, 126, 127, 65535, 65536, 70000])
@pytest.mark.parametrize("masked", [False, True])
def test_round_trip_every_length_class(length, masked):
    payload = random.Random(length).randbytes(length)
    data = encode_frame(OP_BINARY, payload, MASK if masked else None)
    header = 2 + (0 if length < 126 else 2 if length < 65536 else 8) + (4 if masked else 0)
    assert len(data) == header + length
    expected = [Frame(True, OP_BINARY, payload)]
    assert parse(data, masked=masked) == expected
    assert parse(data, random_chunks(len(data), length), masked=masked) == expected
    if length <= 126:
        assert parse(data, [1] * len(data), masked=masked) == expected


def test_stream_of_mixed_frames_in_any_chunking():
    frames = [Frame(False, OP_BINARY, b"a" * 300), Frame(True, OP_PING, b"p"),
              Frame(False, OP_CONTINUATION, b""), Frame(True, OP_CONTINUATION, b"b" * 70000),
              Frame(True, OP_TEXT, "é".encode()), Frame(True, OP_PONG, b""),
              Frame(True, OP_CLOSE, close_payload(1000, "bye"))]
    data = b"".join(encode_frame(f.opcode, f.payload, random.randbytes(4), f.fin) for f in frames)
    assert parse(data, masked=True) == frames
    for seed in range(5):
        assert parse(data, random_chunks(len(data), seed), masked=True) == frames


def test_mask_payload_is_an_involution_and_matches_a_slow_xor():
    payload = random.Random(1).randbytes(1001)
    slow = bytes(b ^ MASK[i % 4] for i, b in enumerate(payload))
    assert mask_payload(MASK, payload) == slow
    assert mask_payload(MASK, slow) == payload
    assert mask_payload(MASK, memoryview(payload)[1:]) == bytes(b ^ MASK[i % 4] for i, b in enumerate(payload[1:]))
    assert mask_payload(MASK, b"") == b""


# -- errors --------------------------------------------------------------------

ERRORS = [
    ("c2 00", False, "reserved bits"),           # RSV1
    ("a2 00", False, "reserved bits"),           # RSV2
    ("92 00", False, "reserved bits"),           # RSV3
    *[("%02x 00" % (0x80 | op), False, "unknown websocket opcode") for op in (3, 4, 5, 6, 7, 11, 12, 13, 14, 15)],
    ("89 7e 007e", False, "longer than 125"),    # ping with a 16-bit length
    ("88 7f", False, "longer than 125"),         # refused on the first 2 bytes
    ("09 00", False, "fragmented"),              # ping without FIN
    ("08 00", False, "fragmented"),
    ("82 81 00000000 00", False, "masked"),      # masked frame sent to a client
    ("82 01 00", True, "masked"),                # unmasked frame sent to a server
    ("80 00", False, "continuation frame outside"),
    ("02 00 82 00", False, "inside a fragmented"),
    ("82 7f 8000000000000000", False, "top bit"),
    ("82 7f 0000000000100001", False, "exceeds"),  # 1 MiB + 1, no body needed
]


@pytest.mark.parametrize("hexdata, masked, message", ERRORS)
def test_invalid_headers_are_refused_before_the_body(hexdata, masked, message):
    data = unhex(hexdata)
    with pytest.raises(RemoteProtocolError, match=message):
        parse(data, masked=masked)
    with pytest.raises(RemoteProtocolError, match=message):
        parse(data, [1] * len(data), masked=masked)


def test_max_payload_is_checked_on_every_length_form():
    for data in (unhex("82 0b"), unhex("82 7e 000b"), unhex("82 7f 000000000000000b")):
        with pytest.raises(RemoteProtocolError, match="11 bytes exceeds the 10-byte limit"):
            parse(data, max_payload=10)
    assert parse(encode_frame(OP_BINARY, bytes(10)), max_payload=10) == [Frame(True, OP_BINARY, bytes(10))]


def test_incomplete_frames_wait_without_error():
    data = encode_frame(OP_BINARY, bytes(70000), MASK)
    for end in (1, 2, 5, 9, 10, 13, 14, len(data) - 1):
        parser = FrameParser(expect_masked=True)
        parser.add_data(data[:end])
        assert list(parser) == []
        assert parser.pending == end


def test_encode_refuses_what_the_wire_cannot_carry():
    for args in [(OP_PING, bytes(126)), (OP_CLOSE, b"", None, False), (3, b""), (OP_BINARY, b"x", b"abc")]:
        with pytest.raises(LocalProtocolError):
            encode_frame(*args)


def test_close_payloads():
    assert close_payload() == b"\x03\xe8"
    assert parse_close_payload(close_payload(1001, "gone")) == (1001, "gone")
    assert parse_close_payload(b"") == (None, "")
    assert parse_close_payload(close_payload(4000)) == (4000, "")
    for bad in (b"\x03", b"\x03\xed", b"\x00\x00", b"\x03\xe8\xff"):  # 1 byte, 1005, 0, bad UTF-8
        with pytest.raises(RemoteProtocolError):
            parse_close_payload(bad)
    with pytest.raises(LocalProtocolError):
        close_payload(1000, "x" * 124)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=300), masked=st.booleans(), cut=st.integers(0, 300))
def test_arbitrary_bytes_give_frames_or_a_protocol_error(data, masked, cut):
    """Invariant: any input yields frames, waits, or raises RemoteProtocolError; nothing else."""
    for chunks in ([len(data)], [cut, len(data)]):
        parser = FrameParser(200, expect_masked=masked)
        try:
            pos = 0
            for size in chunks:
                parser.add_data(data[pos:pos + size])
                pos += size
                for frame in parser:
                    assert isinstance(frame, Frame) and len(frame.payload) <= 200
        except RemoteProtocolError:
            pass


@settings(max_examples=100, deadline=None)
@given(payloads=st.lists(st.binary(max_size=600), max_size=6), seed=st.integers(0, 1000))
def test_valid_streams_survive_any_chunking(payloads, seed):
    frames = [Frame(True, OP_BINARY, p) for p in payloads]
    data = b"".join(encode_frame(f.opcode, f.payload, MASK) for f in frames)
    assert parse(data, random_chunks(len(data), seed), masked=True) == frames


# -- handshake -------------------------------------------------------------------

KEY = "dGhlIHNhbXBsZSBub25jZQ=="
# What GOST's dialer (gorilla Dialer -> Go's Request.Write) sends: request line,
# Host, User-Agent, then the other headers sorted by name.
GORILLA_REQUEST = (b"GET /ws HTTP/1.1\r\nHost: example.com:443\r\nUser-Agent: Go-http-client/1.1\r\n"
                   b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   b"Sec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n\r\n")
# What GOST's listener (gorilla Upgrader) answers.
GORILLA_RESPONSE = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n")


def test_client_handshake_is_byte_identical_to_gorilla():
    assert client_handshake("example.com:443", "/ws", KEY) == GORILLA_REQUEST


def test_client_handshake_extra_headers_sort_in_and_override_host_and_agent():
    request = client_handshake("a", "/p?x=1", KEY, [("x-token", "t"), ("Host", "cdn.example"),
                                                    ("user-agent", "ua"), ("Accept", "*/*")])
    lines = request.decode().split("\r\n")
    assert lines[:3] == ["GET /p?x=1 HTTP/1.1", "Host: cdn.example", "User-Agent: ua"]
    assert lines[3:9] == ["Accept: */*", "Connection: Upgrade", "Sec-WebSocket-Key: " + KEY,
                          "Sec-WebSocket-Version: 13", "Upgrade: websocket", "X-Token: t"]
    for bad in ([("Upgrade", "h2c")], [("X-A", "a\r\nb")], [("Bad Name", "v")]):
        with pytest.raises(LocalProtocolError):
            client_handshake("a", "/ws", KEY, bad)
    with pytest.raises(LocalProtocolError):
        client_handshake("a", "ws", KEY)


def test_server_response_is_byte_identical_to_gorilla():
    assert server_handshake_response(KEY) == GORILLA_RESPONSE
    extra = server_handshake_response(KEY, [("X-Served-By", "gostgev")])
    assert extra == GORILLA_RESPONSE[:-2] + b"X-Served-By: gostgev\r\n\r\n"
    with pytest.raises(LocalProtocolError):
        server_handshake_response(KEY, [("Sec-WebSocket-Extensions", "permessage-deflate")])


def test_check_server_handshake():
    assert ("Upgrade", "websocket") in check_server_handshake(GORILLA_RESPONSE, KEY)
    lenient = b"HTTP/1.1 101 OK\nupgrade: WebSocket\nconnection: keep-alive, upgrade\nsec-websocket-accept: %s\n\n"
    check_server_handshake(lenient % accept_key(KEY).encode(), KEY)
    with pytest.raises(HandshakeRefused) as refused:
        check_server_handshake(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", KEY)
    assert refused.value.status == 404
    bad = [GORILLA_RESPONSE.replace(b"s3pP", b"AAAA"), GORILLA_RESPONSE.replace(b"Upgrade: websocket", b"X: y"),
           GORILLA_RESPONSE.replace(b"Connection: Upgrade", b"Connection: close"),
           GORILLA_RESPONSE[:-2] + b"Sec-WebSocket-Extensions: permessage-deflate\r\n\r\n",
           b"SSH-2.0-OpenSSH\r\n\r\n", GORILLA_RESPONSE.replace(b"Connection:", b"Connection :")]
    for response in bad:
        with pytest.raises(RemoteProtocolError):
            check_server_handshake(response, KEY)


def test_response_head_end():
    assert response_head_end(GORILLA_RESPONSE + b"\x82\x00") == len(GORILLA_RESPONSE)
    assert response_head_end(GORILLA_RESPONSE[:-1]) is None
    assert response_head_end(b"HTTP/1.1 101 x\n\n") == 16
    with pytest.raises(RemoteProtocolError):
        response_head_end(b"X" * MAX_RESPONSE_HEAD_BYTES)


def request(text):
    return parse_request_head(text.replace("\n", "\r\n").encode() + b"\r\n")


def test_check_client_handshake_accepts_gorilla_and_browsers():
    assert check_client_handshake(parse_request_head(GORILLA_REQUEST)) == KEY
    browser = ("GET /ws?x HTTP/1.1\nHost: h\nConnection: keep-alive, Upgrade\nUpgrade: WebSocket\n"
               "Sec-WebSocket-Version: 13\nsec-websocket-key: %s\nOrigin: https://elsewhere\n" % KEY)
    assert check_client_handshake(request(browser)) == KEY


@pytest.mark.parametrize("change", [
    ("GET /ws", "POST /ws"), ("HTTP/1.1\n", "HTTP/1.0\n"), ("Upgrade: websocket", "Upgrade: h2c"),
    ("Connection: Upgrade", "Connection: close"), ("Version: 13", "Version: 8"),
    (KEY, "short"), (KEY, base64.b64encode(bytes(15)).decode()), (KEY, "!!!!" + KEY[4:]),
    ("Sec-WebSocket-Key: " + KEY + "\n", ""),
])
def test_check_client_handshake_refuses(change):
    text = GORILLA_REQUEST.decode().replace("\r\n", "\n").rstrip("\n") + "\n"
    with pytest.raises(RemoteProtocolError):
        check_client_handshake(request(text.replace(*change)))


def test_new_key_is_16_random_bytes():
    keys = {new_key() for _ in range(10)}
    assert len(keys) == 10 and all(len(base64.b64decode(k)) == 16 for k in keys)


@pytest.mark.parametrize("pattern, target, expected", [
    ("/ws", "/ws", True), ("/ws", "/ws?ed=2048", True), ("/ws", "/ws/", False), ("/ws", "/wss", False),
    ("/ws", "/", False), ("/ws", "http://host:80/ws?x", True), ("/t/", "/t/abc", True), ("/t/", "/t", False),
])
def test_path_matches_like_go_servemux(pattern, target, expected):
    assert path_matches(pattern, target) is expected
