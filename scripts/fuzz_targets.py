"""Fuzz targets: one checker per entry point that untrusted bytes reach.

A checker takes bytes and returns what the entry point made of them:
:data:`VALUE`, :data:`MORE` ("need more data") or :data:`ERROR` (the entry
point's own error type).  Everything else escapes the checker and is a
finding: an exception the entry point does not own, or an ``AssertionError``
for a broken invariant (an answer that changes when the same bytes arrive
in other pieces, a buffer grown past the codec's named limit, a "need more"
on input already past that limit).

``scripts/fuzz.py`` runs these under atheris; ``tests/test_fuzz_corpus.py``
replays the seed corpus through them and the Hypothesis properties reuse
them, so all three agree on what counts as a bug.  This module imports
gostgev and nothing from the test suite; the tests find it on ``sys.path``
(``tests/__init__.py`` adds ``scripts/``).  Parameters that are not
part of the wire (smux version, masking side, how the stream is chunked) come
from the first input bytes, so a crash file alone reproduces the run.
"""

import os
import random
import tempfile
import types
from dataclasses import dataclass

from gostgev.cli import load as load_cli
from gostgev.codec import mux, ws
from gostgev.codec.http import MAX_REQUEST_HEAD_BYTES, METHODS, RequestHead, parse_request_head
from gostgev.codec.proxyproto import MAX_V1_BYTES, MAX_V2_BYTES, ProxyHeader, parse_proxy_header
from gostgev.codec.relay import HEADER_BYTES, MAX_FEATURES_BYTES, Request, Response, parse_request, parse_response
from gostgev.codec.sniff import HTTP, RAW, RELAY, TLS, detect
from gostgev.codec.tls import MAX_CLIENT_HELLO_BYTES, MAX_HOST_NAME_BYTES, ClientHello, parse_client_hello
from gostgev.components import build_config, load_file
from gostgev.config.model import Config
from gostgev.errors import ConfigError, RemoteProtocolError

__all__ = ["VALUE", "MORE", "ERROR", "OUTCOMES", "Target", "TARGETS", "chunks", "check_config_raw"]

VALUE, MORE, ERROR = "value", "more", "error"
OUTCOMES = (VALUE, MORE, ERROR)

# Every prefix of a short input is tried; longer ones get this many cuts, so
# one run stays linear in the input size.
_ALL_PREFIXES_UP_TO = 64
_SAMPLED_CUTS = 12

# A -L/-F input is one URL per line; more lines only repeat the same code.
_MAX_URLS = 8

# detect() decides once a method and its space could have arrived.
_SNIFF_DECIDED = max(map(len, METHODS)) + 1

# The one key every handshake seed uses, so a seed's accept value matches.
WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="


@dataclass(frozen=True)
class Target:
    name: str
    check: object   #: bytes -> VALUE | MORE | ERROR
    about: str


def chunks(data, seed):
    """``data`` cut into pieces by a seeded PRNG; seed 0 is byte by byte."""
    rng, pos, out = random.Random(seed), 0, []
    longest = 1 + seed % 97
    while pos < len(data):
        step = rng.randint(1, longest)
        out.append(data[pos:pos + step])
        pos += step
    return out


def _cuts(size):
    if size <= _ALL_PREFIXES_UP_TO:
        return range(size)
    rng = random.Random(size)
    return sorted({0, 1, size // 2, size - 1, *(rng.randrange(size) for _ in range(_SAMPLED_CUTS))})


def _params(data, count):
    """Split ``count`` parameter bytes off the front (zero-padded) from the payload."""
    head = bytes(data[:count]).ljust(count, b"\0")
    return head, bytes(data[count:])


def _error_prints(exc):
    # Errors end up in one log line; one that cannot be printed is a crash of its own.
    assert isinstance(str(exc), str)


# -- pure "call again with more bytes" parsers ------------------------------------

def _whole_and_prefixes(parse, data, check_value, more_below):
    """Parse ``data`` and prefixes of it: an answer for a prefix must be the answer for the whole."""
    def outcome(chunk):
        try:
            result = parse(chunk)
        except RemoteProtocolError as exc:
            _error_prints(exc)
            return ERROR, None
        if result is None:
            assert len(chunk) < more_below(chunk), "need-more on %d bytes, past the limit" % len(chunk)
            return MORE, None
        check_value(result, chunk)
        return VALUE, result

    final = outcome(data)
    for cut in _cuts(len(data)):
        earlier = outcome(data[:cut])
        if earlier[0] != MORE:
            assert earlier == final, "answer for %d bytes %r became %r with %d" % (cut, earlier, final, len(data))
    return final[0]


def check_http_request(data):
    def value(head, chunk):
        assert isinstance(head, RequestHead)
        assert 0 < head.length <= min(len(chunk), MAX_REQUEST_HEAD_BYTES)
        assert head.host is None or isinstance(head.host, str)

    return _whole_and_prefixes(parse_request_head, data, value, lambda _: MAX_REQUEST_HEAD_BYTES)


def check_tls_client_hello(data):
    def value(hello, chunk):
        assert isinstance(hello, ClientHello)
        assert 0 < hello.length <= min(len(chunk), MAX_CLIENT_HELLO_BYTES)
        assert hello.sni is None or (isinstance(hello.sni, str) and len(hello.sni) <= MAX_HOST_NAME_BYTES)
        assert all(isinstance(name, str) for name in hello.alpn)

    return _whole_and_prefixes(parse_client_hello, data, value, lambda _: MAX_CLIENT_HELLO_BYTES)


def _relay_checker(parse, kind):
    def value(result, chunk):
        message, used = result
        assert isinstance(message, kind)
        assert HEADER_BYTES <= used <= len(chunk)

    # FEALEN is 16 bits: a head longer than that can never still be incomplete.
    return lambda data: _whole_and_prefixes(parse, data, value, lambda _: HEADER_BYTES + MAX_FEATURES_BYTES + 1)


check_relay_request = _relay_checker(parse_request, Request)
check_relay_response = _relay_checker(parse_response, Response)


def check_proxy_header(data):
    def value(header, chunk):
        assert isinstance(header, ProxyHeader)
        assert 0 < header.length <= min(len(chunk), MAX_V2_BYTES)

    def limit(chunk):
        return MAX_V1_BYTES if chunk[:1] == b"P" else MAX_V2_BYTES

    return _whole_and_prefixes(parse_proxy_header, data, value, limit)


def check_sniff(data):
    answers = (TLS, HTTP, RELAY, RAW)
    final = detect(data)
    assert final in answers or (final is None and len(data) < _SNIFF_DECIDED), (final, len(data))
    for cut in _cuts(len(data)):
        earlier = detect(data[:cut])
        assert earlier is None or earlier == final, (cut, earlier, final)
    return MORE if final is None else VALUE


# -- frame buffers: same frames whatever the chunking -----------------------------

def _drain(buffer, pieces, check_frame, max_pending):
    """Feed ``pieces``; the frames in order and how it ended (MORE, VALUE or ERROR)."""
    frames = []
    try:
        for piece in pieces:
            buffer.add_data(piece)
            for frame in buffer:
                frames.append(check_frame(frame))
            assert buffer.pending < max_pending, "%d bytes pending, limit %d" % (buffer.pending, max_pending)
    except RemoteProtocolError as exc:
        _error_prints(exc)
        return frames, ERROR
    return frames, VALUE if frames else MORE


def _same_in_any_chunking(make_buffer, stream, seed, check_frame, max_pending):
    whole = _drain(make_buffer(), [stream], check_frame, max_pending)
    pieces = _drain(make_buffer(), chunks(stream, seed), check_frame, max_pending)
    assert whole == pieces, "whole gave %r, chunks (seed %d) gave %r" % (whole[1], seed, pieces[1])
    return whole


_MUX_FRAME_SIZES = (mux.MAX_PAYLOAD, 32768, 1024, 1)


def check_mux_frames(data):
    """Input: options byte (bit 0: smux v2, bits 1-2: max frame size), chunk seed byte, then the stream."""
    (options, seed), stream = _params(data, 2)
    version, max_frame = 1 + (options & 1), _MUX_FRAME_SIZES[(options >> 1) & 3]

    def frame_ok(frame):
        assert isinstance(frame, mux.Frame) and frame.version == version
        assert len(frame.payload) <= (max_frame if frame.cmd == mux.CMD_PSH else mux.UPD_SIZE)
        return frame

    frames, end = _same_in_any_chunking(lambda: mux.FrameBuffer(version, max_frame), stream, seed, frame_ok,
                                        mux.HEADER_SIZE + max(max_frame, mux.UPD_SIZE))
    # Every accepted frame is exactly what we would have sent: nothing was skipped or reinterpreted.
    wire = b"".join(mux.encode_frame(f.version, f.cmd, f.sid, f.payload) for f in frames)
    assert stream.startswith(wire)
    return end


_WS_PAYLOAD_LIMITS = (ws.MAX_FRAME_PAYLOAD, ws.MAX_CONTROL_PAYLOAD, 1000, 0)


def check_ws_frames(data):
    """Input: options byte (bit 0: server side, masked frames; bits 1-2: payload limit), chunk seed, stream."""
    (options, seed), stream = _params(data, 2)
    masked, limit = bool(options & 1), _WS_PAYLOAD_LIMITS[(options >> 1) & 3]

    def frame_ok(frame):
        assert isinstance(frame, ws.Frame) and len(frame.payload) <= limit
        if frame.opcode >= ws.OP_CLOSE:
            assert frame.fin and len(frame.payload) <= ws.MAX_CONTROL_PAYLOAD
        if frame.opcode == ws.OP_CLOSE:
            try:
                return frame, ws.parse_close_payload(frame.payload)
            except RemoteProtocolError as exc:
                _error_prints(exc)
                return frame, ERROR
        return frame, None

    # Longest header: 2 bytes, 8 of extended length, 4 of mask.
    _, end = _same_in_any_chunking(lambda: ws.FrameParser(limit, expect_masked=masked), stream, seed, frame_ok,
                                   14 + limit)
    return end


def check_ws_handshake(data):
    """Input: side byte (odd: we are the server reading an upgrade request), then the head."""
    (side,), head = _params(data, 1)
    try:
        if side & 1:
            request = parse_request_head(head)
            if request is None:
                assert len(head) < MAX_REQUEST_HEAD_BYTES
                return MORE
            assert isinstance(ws.check_client_handshake(request), str)
            return VALUE
        end = ws.response_head_end(head)
        if end is None:
            assert len(head) < ws.MAX_RESPONSE_HEAD_BYTES
            return MORE
        assert 0 < end <= min(len(head), ws.MAX_RESPONSE_HEAD_BYTES)
        assert isinstance(ws.check_server_handshake(head[:end], WS_KEY), tuple)
        return VALUE
    except RemoteProtocolError as exc:
        _error_prints(exc)
        return ERROR


# -- configuration ----------------------------------------------------------------

def check_urls(data):
    """-L/-F through the command line's own loader: one URL per line, ``-F `` marks a node."""
    text = bytes(data).decode("utf-8", "surrogateescape")  # how Python hands us argv
    services, nodes = [], []
    for line in text.split("\n")[:_MAX_URLS]:
        if line.startswith("-F "):
            nodes.append(line[3:])
        else:
            services.append(line[3:] if line.startswith("-L ") else line)
    args = types.SimpleNamespace(config=None, service=services, node=nodes, start_dir=_scratch_dir(),
                                 metrics=None, api=None)
    try:
        config = load_cli(args, [])
    except ConfigError as exc:
        _error_prints(exc)
        return ERROR
    assert isinstance(config, Config) and config.services
    return VALUE


def check_config_raw(raw, base_dir=None):
    """build_config on already-parsed data: a Config or ConfigError."""
    warnings = []
    try:
        config = build_config(raw, warnings, base_dir=base_dir or _scratch_dir())
    except ConfigError as exc:
        _error_prints(exc)
        return ERROR
    assert isinstance(config, Config)
    assert all(isinstance(w, str) for w in warnings)
    return VALUE


def check_config_yaml(data):
    """The YAML text as a config file: read, parsed and built by the loader the CLI uses."""
    path = os.path.join(_scratch_dir(), "fuzz.yaml")
    with open(path, "wb") as fh:
        fh.write(data)
    try:
        config = load_file(path, [])
    except ConfigError as exc:
        _error_prints(exc)
        return ERROR
    assert isinstance(config, Config)
    return VALUE


_scratch = []


def _scratch_dir():
    """An empty private directory: relative paths in fuzzed configs resolve to nothing real."""
    if not _scratch:
        _scratch.append(tempfile.TemporaryDirectory(prefix="gostgev-fuzz-"))
    return _scratch[0].name


TARGETS = {t.name: t for t in (
    Target("http-request", check_http_request, "HTTP request head parser (codec.http.parse_request_head)"),
    Target("tls-client-hello", check_tls_client_hello, "TLS ClientHello parser (codec.tls.parse_client_hello)"),
    Target("sniff", check_sniff, "first-bytes protocol detection (codec.sniff.detect)"),
    Target("relay-request", check_relay_request, "relay request head (codec.relay.parse_request)"),
    Target("relay-response", check_relay_response, "relay response head (codec.relay.parse_response)"),
    Target("mux-frames", check_mux_frames, "smux FrameBuffer fed in arbitrary chunks (codec.mux)"),
    Target("ws-frames", check_ws_frames, "WebSocket FrameParser fed in arbitrary chunks (codec.ws)"),
    Target("ws-handshake", check_ws_handshake, "WebSocket upgrade request/response checks (codec.ws)"),
    Target("proxy-header", check_proxy_header, "PROXY protocol v1/v2 header (codec.proxyproto)"),
    Target("url", check_urls, "-L/-F URLs through the CLI loader (config.spec + build_config)"),
    Target("config-yaml", check_config_yaml, "a YAML config file through load_file (read_file + build_config)"),
)}
