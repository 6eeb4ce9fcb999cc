"""smux frames, windows and config: captured byte vectors, every chunking, every error, fuzzing."""

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gostgev.codec.mux import (
    CMD_FIN,
    CMD_NOP,
    CMD_PSH,
    CMD_SYN,
    CMD_UPD,
    HEADER_SIZE,
    INITIAL_PEER_WINDOW,
    MAX_PAYLOAD,
    UPD_SIZE,
    ChunkQueue,
    Frame,
    FrameBuffer,
    MuxConfig,
    ReceiveWindow,
    SendWindow,
    decode_upd,
    encode_data,
    encode_frame,
    encode_header,
    encode_upd,
)
from gostgev.config.section import Metadata
from gostgev.errors import LocalProtocolError, RemoteProtocolError

# tunnel.md 10.5: one exchange captured from xtaci/smux with GOST's tunnel
# parameters; the "server" is the tunnel server, i.e. the smux client.
SPEC_10_5 = [
    ("02 00 0000 03000000", Frame(2, CMD_SYN, 3)),
    ("02 02 0500 03000000 68656c6c6f", Frame(2, CMD_PSH, 3, b"hello")),
    ("02 04 0800 03000000 05000000 00001000", Frame(2, CMD_UPD, 3, (5).to_bytes(4, "little")
                                                       + (1048576).to_bytes(4, "little"))),
    ("02 02 0500 03000000 776f726c64", Frame(2, CMD_PSH, 3, b"world")),
    ("02 04 0800 03000000 05000000 00001000", Frame(2, CMD_UPD, 3, bytes.fromhex("0500000000001000"))),
    ("02 01 0000 03000000", Frame(2, CMD_FIN, 3)),
    ("02 01 0000 03000000", Frame(2, CMD_FIN, 3)),
    ("02 00 0000 05000000", Frame(2, CMD_SYN, 5)),
    ("02 03 0000 00000000", Frame(2, CMD_NOP, 0)),
]

# tunnel.md Appendix: what a BINDed client receives from GOST v3.2.6 for one
# HTTP request; the relay header travels in its own PSH frame.
APPENDIX_RELAY_HEADER = bytes.fromhex("0100001c 020007017f00000184ec 02000f030b7372762d302e6c6f63616c0050")
APPENDIX = [
    ("02 00 0000 03000000", Frame(2, CMD_SYN, 3)),
    ("02 02 2000 03000000 0100001c 020007017f00000184ec 02000f030b7372762d302e6c6f63616c0050",
     Frame(2, CMD_PSH, 3, APPENDIX_RELAY_HEADER)),
]
# The third captured frame's payload is elided in the capture; only its
# header (PSH, 0xb3 = 179 bytes, stream 3) and first bytes are known.
APPENDIX_HTTP_HEADER = "02 02 b300 03000000"
APPENDIX_HTTP_START = b"GET / HTTP/1.1\r\nHost: srv-0.local\r\n"

VECTORS = SPEC_10_5 + APPENDIX


def unhex(text):
    return bytes.fromhex("".join(text.split()))


def wire():
    return b"".join(unhex(h) for h, _ in VECTORS)


def drain(buf):
    return list(buf)


def feed_chunks(data, sizes, version=2, max_frame_size=MAX_PAYLOAD):
    buf = FrameBuffer(version, max_frame_size)
    frames, pos = [], 0
    for size in sizes:
        buf.add_data(data[pos:pos + size])
        pos += size
        frames += drain(buf)
        assert buf.pending < HEADER_SIZE + max_frame_size
    buf.add_data(data[pos:])
    frames += drain(buf)
    return frames, buf


# -- vectors -------------------------------------------------------------------------

@pytest.mark.parametrize("hexed, frame", VECTORS, ids=[f"{i}:{f!r}" for i, (_, f) in enumerate(VECTORS)])
def test_vector_encodes(hexed, frame):
    assert encode_frame(frame.version, frame.cmd, frame.sid, frame.payload) == unhex(hexed)
    if frame.cmd == CMD_UPD:
        consumed, window = decode_upd(frame.payload)
        assert encode_upd(2, frame.sid, consumed, window) == unhex(hexed)


@pytest.mark.parametrize("hexed, frame", VECTORS, ids=[f"{i}:{f!r}" for i, (_, f) in enumerate(VECTORS)])
def test_vector_decodes(hexed, frame):
    buf = FrameBuffer(2)
    buf.add_data(unhex(hexed))
    assert drain(buf) == [frame]
    assert buf.pending == 0


def test_upd_vector_fields():
    assert decode_upd(unhex("05000000 00001000")) == (5, 1048576)


def test_appendix_http_frame_header():
    """The elided frame: its header is checked before its body and the body then completes it."""
    body = APPENDIX_HTTP_START + b"x" * (0xb3 - len(APPENDIX_HTTP_START))
    assert encode_header(2, CMD_PSH, 3, len(body)) == unhex(APPENDIX_HTTP_HEADER)
    buf = FrameBuffer(2)
    buf.add_data(unhex(APPENDIX_HTTP_HEADER) + body[:100])
    assert drain(buf) == []
    buf.add_data(body[100:])
    assert drain(buf) == [Frame(2, CMD_PSH, 3, body)]


def test_whole_stream_whole():
    frames, buf = feed_chunks(wire(), [])
    assert frames == [f for _, f in VECTORS]
    assert buf.pending == 0


def test_whole_stream_byte_by_byte():
    data = wire()
    frames, _ = feed_chunks(data, [1] * len(data))
    assert frames == [f for _, f in VECTORS]


@pytest.mark.parametrize("seed", range(20))
def test_whole_stream_random_chunks(seed):
    rng = random.Random(seed)
    data = wire() * 3
    sizes = [rng.randint(1, 40) for _ in range(len(data) // 10)]
    frames, _ = feed_chunks(data, sizes)
    assert frames == [f for _, f in VECTORS] * 3


def test_big_frames_and_compaction():
    """Many maximal frames through one buffer: the consumed prefix is dropped as it goes."""
    payloads = [bytes([i]) * MAX_PAYLOAD for i in range(12)]
    data = b"".join(encode_frame(2, CMD_PSH, 7, p) for p in payloads)
    frames, buf = feed_chunks(data, [100_000] * (len(data) // 100_000))
    assert [f.payload for f in frames] == payloads
    assert buf.held < 2 * 100_000 + 256 * 1024


def test_empty_psh_and_version_1():
    buf = FrameBuffer(1)
    buf.add_data(encode_frame(1, CMD_PSH, 3) + encode_frame(1, CMD_SYN, 5) + encode_frame(1, CMD_NOP, 0))
    assert drain(buf) == [Frame(1, CMD_PSH, 3), Frame(1, CMD_SYN, 5), Frame(1, CMD_NOP, 0)]


# -- errors ----------------------------------------------------------------------------

@pytest.mark.parametrize("version, data, match", [
    (2, "01 00 0000 03000000", "version 1 frame"),
    (1, "02 00 0000 03000000", "version 2 frame"),
    (2, "00 03 0000 00000000", "version 0 frame"),
    (2, "02 05 0000 03000000", "unknown smux command 5"),
    (2, "02 ff 0000 03000000", "unknown smux command 255"),
    (1, "01 04 0800 03000000", "UPD frame in a version 1"),
    (2, "02 04 0400 03000000", "UPD with a 4-byte"),
    (2, "02 04 0000 03000000", "UPD with a 0-byte"),
    (2, "02 00 0100 03000000", "SYN with a 1-byte"),
    (2, "02 01 0200 03000000", "FIN with a 2-byte"),
    (2, "02 03 ffff 00000000", "NOP with a 65535-byte"),
])
def test_bad_header(version, data, match):
    """Refused from the header alone, before any body arrives."""
    buf = FrameBuffer(version)
    buf.add_data(unhex(data))
    with pytest.raises(RemoteProtocolError, match=match):
        next(buf)


def test_psh_over_max_frame_size():
    buf = FrameBuffer(2, max_frame_size=32768)
    buf.add_data(encode_header(2, CMD_PSH, 3, 32768) + b"x" * 32768)
    assert drain(buf)[0].payload == b"x" * 32768
    buf.add_data(encode_header(2, CMD_PSH, 3, 32769))
    with pytest.raises(RemoteProtocolError, match="exceeds 32768"):
        next(buf)


def test_small_max_frame_size_still_buffers_a_whole_upd():
    buf = FrameBuffer(2, max_frame_size=1)
    buf.add_data(encode_upd(2, 3, 1, 2)[:-1])
    assert drain(buf) == [] and buf.pending == HEADER_SIZE + UPD_SIZE - 1
    buf.add_data(b"\0")
    assert [decode_upd(f.payload) for f in buf] == [(1, 2)]


def test_error_after_good_frames():
    buf = FrameBuffer(2)
    buf.add_data(encode_frame(2, CMD_SYN, 3) + unhex("02 07 0000 03000000"))
    assert next(buf) == Frame(2, CMD_SYN, 3)
    with pytest.raises(RemoteProtocolError):
        next(buf)


@pytest.mark.parametrize("args", [
    (2, CMD_PSH, 3, b"x" * (MAX_PAYLOAD + 1)),
    (2, 5, 3, b""),
    (2, -1, 3, b""),
    (3, CMD_SYN, 3, b""),
    (0, CMD_SYN, 3, b""),
    (1, CMD_UPD, 3, b"\0" * 8),
    (2, CMD_SYN, -1, b""),
    (2, CMD_SYN, 2**32, b""),
])
def test_encode_refuses(args):
    with pytest.raises(LocalProtocolError):
        encode_frame(*args)


@pytest.mark.parametrize("size, frame_size, lengths", [
    (0, 10, []), (1, 10, [1]), (10, 10, [10]), (25, 10, [10, 10, 5]), (70000, MAX_PAYLOAD, [MAX_PAYLOAD, 4465]),
])
def test_encode_data_splits(size, frame_size, lengths):
    data = bytes(range(256)) * (size // 256 + 1)
    data = data[:size]
    buf = FrameBuffer(2)
    buf.add_data(encode_data(2, 9, memoryview(data), frame_size))
    frames = drain(buf)
    assert [len(f.payload) for f in frames] == lengths
    assert all(f.cmd == CMD_PSH and f.sid == 9 for f in frames)
    assert b"".join(f.payload for f in frames) == data
    with pytest.raises(LocalProtocolError):
        encode_data(2, 9, data, 0)


def test_encode_upd_wraps_and_checks():
    assert encode_upd(2, 3, 2**32 + 5, 10) == encode_upd(2, 3, 5, 10)
    with pytest.raises(LocalProtocolError):
        encode_upd(1, 3, 0, 10)
    with pytest.raises(LocalProtocolError):
        encode_upd(2, 3, 0, 2**32)


def test_framebuffer_arguments():
    for args in [(3,), (2, 0), (2, MAX_PAYLOAD + 1)]:
        with pytest.raises(ValueError):
            FrameBuffer(*args)


# -- fuzzing ---------------------------------------------------------------------------

@settings(max_examples=400, deadline=None)
@given(st.sampled_from([1, 2]), st.integers(1, MAX_PAYLOAD), st.binary(max_size=2048),
       st.lists(st.integers(1, 300), max_size=20))
def test_any_bytes_give_frames_or_our_error(version, max_frame_size, data, sizes):
    """Arbitrary input yields Frames or RemoteProtocolError, and never buffers more than one frame."""
    buf = FrameBuffer(version, max_frame_size)
    pos = 0
    try:
        for size in [*sizes, len(data)]:
            buf.add_data(data[pos:pos + size])
            pos += size
            for frame in buf:
                assert isinstance(frame, Frame) and frame.version == version
            assert buf.pending < HEADER_SIZE + max(max_frame_size, UPD_SIZE)
    except RemoteProtocolError:
        pass


frames_strategy = st.lists(st.one_of(
    st.builds(lambda cmd, sid: Frame(2, cmd, sid), st.sampled_from([CMD_SYN, CMD_FIN, CMD_NOP]),
              st.integers(0, 2**32 - 1)),
    st.builds(lambda sid, p: Frame(2, CMD_PSH, sid, p), st.integers(0, 2**32 - 1), st.binary(max_size=3000)),
    st.builds(lambda sid, c, w: Frame(2, CMD_UPD, sid, c.to_bytes(4, "little") + w.to_bytes(4, "little")),
              st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)),
), max_size=20)


@settings(max_examples=200, deadline=None)
@given(frames_strategy, st.randoms(use_true_random=False))
def test_valid_frames_round_trip_in_any_chunking(frames, rng):
    data = b"".join(encode_frame(f.version, f.cmd, f.sid, f.payload) for f in frames)
    sizes = [rng.randint(1, 500) for _ in range(len(data) // 100)]
    assert feed_chunks(data, sizes)[0] == frames


# -- flow-control arithmetic -------------------------------------------------------------

def test_send_window():
    w = SendWindow()
    assert w.available() == INITIAL_PEER_WINDOW
    w.written += INITIAL_PEER_WINDOW
    assert w.available() == 0
    assert w.update(5, 1048576)
    assert w.available() == 1048576 - (INITIAL_PEER_WINDOW - 5)
    assert not w.update(INITIAL_PEER_WINDOW + 1, 1048576)   # more consumed than written
    assert w.consumed == 5


def test_send_window_wraps():
    w = SendWindow()
    w.written = 2**32 + 100        # 100 modulo 2**32
    assert w.update(2**32 - 50, 1000)   # the peer's counter has not wrapped yet
    assert w.available() == 1000 - 150
    assert w.update(100, 1000) and w.available() == 1000


def test_receive_window_updates_like_smux():
    r = ReceiveWindow(1048576)
    assert r.on_data(5) and r.on_read(5) == 5              # first read: report at once
    assert r.on_data(600000)
    assert r.on_read(500000) is None                       # below half the window
    assert r.on_read(24288) == 524293                      # half the window since the last report
    assert r.on_read(1) is None


def test_receive_window_overrun():
    r = ReceiveWindow(1048576)
    assert r.on_data(1048576 + MAX_PAYLOAD)
    assert not r.on_data(1)
    small = ReceiveWindow(65536)   # before our first UPD the peer may use the initial 256 KiB
    assert small.on_data(INITIAL_PEER_WINDOW + MAX_PAYLOAD)
    assert not small.on_data(1)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=50), max_size=30), st.lists(st.integers(0, 80), max_size=60))
def test_chunk_queue_matches_a_flat_buffer(chunks, takes):
    q, flat = ChunkQueue(), b"".join(chunks)
    for chunk in chunks:
        q.append(chunk)
    out = b""
    for n in takes:
        part = q.take(n)
        assert len(part) == min(n, len(flat) - len(out))
        out += part
        assert len(q) == len(flat) - len(out)
    assert out == flat[:len(out)]
    assert q.clear() == len(flat) - len(out) and len(q) == 0 and q.take(10) == b""


# -- config --------------------------------------------------------------------------------

def test_config_defaults_are_gost_tunnel_defaults():
    c = MuxConfig()
    assert (c.version, c.keepalive_interval, c.keepalive_timeout, c.max_frame_size, c.max_receive_buffer,
            c.max_stream_buffer, c.accept_backlog) == (2, 10.0, 30.0, 32768, 4194304, 1048576, 1024)
    assert MuxConfig.from_metadata(Metadata({})) == c


def test_config_from_metadata():
    md = Metadata({"mux.version": "1", "mux.keepaliveInterval": "5s", "mux.keepaliveTimeout": "1m",
                   "mux.keepalivedisabled": True, "mux.maxFrameSize": 65535, "mux.maxReceiveBuffer": 1 << 20,
                   "MUX.MAXSTREAMBUFFER": 65536, "mux.maxStreams": 20000})
    c = MuxConfig.from_metadata(md)
    assert (c.version, c.keepalive_interval, c.keepalive_timeout, c.keepalive_disabled, c.max_frame_size,
            c.max_receive_buffer, c.max_stream_buffer, c.max_streams) == (1, 5.0, 60.0, True, 65535, 1 << 20,
                                                                           65536, 20000)
    assert MuxConfig.from_metadata(Metadata({"mux.version": 0, "mux.maxFrameSize": 0})) == MuxConfig()


@pytest.mark.parametrize("key, value", [
    ("mux.version", 3), ("mux.version", -1), ("mux.maxFrameSize", 65536), ("mux.maxFrameSize", -5),
    ("mux.maxReceiveBuffer", -1), ("mux.maxStreamBuffer", 2**31), ("mux.keepaliveTimeout", "1s"),
    ("mux.maxStreams", -1),
])
def test_config_rejects(key, value):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        MuxConfig.from_metadata(Metadata({key: value}))


def test_config_rejects_own_bounds():
    for field, key in (("max_streams", "mux.maxStreams"), ("accept_backlog", "accept_backlog")):
        with pytest.raises(ValueError, match=key):
            MuxConfig(**{field: 0})
