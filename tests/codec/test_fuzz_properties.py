"""Every codec fuzz target under Hypothesis, plus "pieces parse like the whole" for the relay and PROXY heads.

The checkers (scripts/fuzz_targets.py) already compare whole-input and
chunked results; here they get both arbitrary bytes and valid streams cut
at random, so the comparison is made where it matters.
"""


from fuzz_targets import ERROR, MORE, OUTCOMES, TARGETS, VALUE, chunks
from hypothesis import given, settings
from hypothesis import strategies as st

from gostgev.codec import mux, ws
from gostgev.codec.proxyproto import encode_v1, encode_v2, parse_proxy_header
from gostgev.codec.relay import Request, Response, TunnelID, parse_request, parse_response
from tests.codec.test_relay import _is_ip

CODEC_TARGETS = sorted(set(TARGETS) - {"url", "config-yaml"})
SETTINGS = settings(max_examples=150, deadline=None)


@SETTINGS
@given(st.sampled_from(CODEC_TARGETS), st.binary(max_size=400))
def test_arbitrary_bytes_give_value_more_or_our_error(name, data):
    assert TARGETS[name].check(data) in OUTCOMES


def feed(parse, data, seed):
    """Call ``parse`` on a growing buffer, as a reader does after each recv; the first answer and the buffer size."""
    buffered = b""
    for piece in chunks(data, seed):
        buffered += piece
        result = parse(buffered)
        if result is not None:
            return result, len(buffered), len(piece)
    return None, len(buffered), 0


_addrs = st.one_of(
    st.builds("{}:{}".format, st.ip_addresses(v=4), st.integers(0, 65535)),
    st.builds("[{}]:{}".format, st.ip_addresses(v=6).filter(lambda ip: ip.ipv4_mapped is None),
              st.integers(0, 65535)),
    st.builds("{}:{}".format, st.text("abcdefghijklmnopqrstuvwxyz0123456789-.", min_size=1, max_size=30).filter(
        lambda s: not _is_ip(s)), st.integers(0, 65535)))
_tunnels = st.none() | st.builds(TunnelID, st.binary(min_size=16, max_size=16), st.integers(0, 255),
                                 st.integers(0, 255))
_auth = st.none() | st.tuples(st.text(max_size=10), st.text(max_size=10))
_requests = st.builds(lambda cmd, flags, auth, addrs, tunnel_id, network: Request(
    cmd, flags, auth and auth[0], auth and auth[1], addrs, tunnel_id, network),
    st.integers(0, 15), st.sampled_from([0, 0x80]), _auth, st.lists(_addrs, max_size=2).map(tuple), _tunnels,
    st.none() | st.sampled_from(["tcp", "udp"]))
_responses = st.builds(Response, status=st.integers(0, 255), addrs=st.lists(_addrs, max_size=2).map(tuple),
                       tunnel_id=_tunnels)


@SETTINGS
@given(st.one_of(_requests.map(lambda m: (m, parse_request)), _responses.map(lambda m: (m, parse_response))),
       st.binary(max_size=30), st.integers(0, 300))
def test_relay_head_in_pieces_parses_like_the_whole(message_and_parse, payload, seed):
    message, parse = message_and_parse
    wire = message.encode()
    whole = parse(wire + payload)
    result, buffered, last = feed(parse, wire + payload, seed)
    assert result == whole and whole[1] == len(wire)
    assert buffered - last < len(wire) <= buffered  # answered by the piece that completed the head


@SETTINGS
@given(st.ip_addresses(), st.ip_addresses(), st.integers(0, 65535), st.integers(0, 65535),
       st.sampled_from([encode_v1, encode_v2]), st.binary(max_size=30), st.integers(0, 300))
def test_proxy_header_in_pieces_parses_like_the_whole(src, dst, sport, dport, encode, payload, seed):
    wire = encode((str(src), sport), (str(dst), dport))
    whole = parse_proxy_header(wire + payload)
    result, buffered, last = feed(parse_proxy_header, wire + payload, seed)
    assert result == whole and whole.length == len(wire)
    assert buffered - last < len(wire) <= buffered


# -- valid streams through the frame-buffer targets: any chunk seed, same frames -------------

_mux_frames = st.lists(st.one_of(
    st.tuples(st.sampled_from([mux.CMD_SYN, mux.CMD_FIN, mux.CMD_NOP]), st.just(b"")),
    st.tuples(st.just(mux.CMD_PSH), st.binary(max_size=1500)),
    st.tuples(st.just(mux.CMD_UPD), st.binary(min_size=8, max_size=8))), max_size=8)


@SETTINGS
@given(_mux_frames, st.integers(1, 2), st.integers(0, 255), st.integers(0, 2**32 - 1))
def test_valid_smux_streams_in_any_chunking(frames, version, seed, sid):
    frames = [(cmd, payload) for cmd, payload in frames if not (version == 1 and cmd == mux.CMD_UPD)]
    stream = b"".join(mux.encode_frame(version, cmd, sid, payload) for cmd, payload in frames)
    options = version - 1  # bit 0: v2; max frame size 65535
    assert TARGETS["mux-frames"].check(bytes((options, seed)) + stream) == (VALUE if frames else MORE)


@SETTINGS
@given(st.lists(st.tuples(st.sampled_from([ws.OP_BINARY, ws.OP_TEXT, ws.OP_PING, ws.OP_PONG]),
                          st.binary(max_size=700)), max_size=6),
       st.booleans(), st.integers(0, 255), st.binary(min_size=4, max_size=4))
def test_valid_websocket_streams_in_any_chunking(frames, from_client, seed, mask):
    frames = [(op, payload[:ws.MAX_CONTROL_PAYLOAD] if op >= ws.OP_CLOSE else payload) for op, payload in frames]
    stream = b"".join(ws.encode_frame(op, payload, mask if from_client else None) for op, payload in frames)
    options = 1 if from_client else 0  # bit 0: we are the server, frames arrive masked
    assert TARGETS["ws-frames"].check(bytes((options, seed)) + stream) == (VALUE if frames else MORE)


@SETTINGS
@given(st.binary(min_size=6, max_size=300), st.integers(0, 255))
def test_a_damaged_smux_stream_fails_alike_in_any_chunking(noise, seed):
    """Bad bytes after good frames: the same frames, then the same error, however they arrive."""
    stream = mux.encode_frame(2, mux.CMD_SYN, 3) + b"\x02\x09" + noise
    assert TARGETS["mux-frames"].check(bytes((1, seed)) + stream) == ERROR
