"""HTTP request-head sniffing: a gunicorn-style corpus fed in every chunking, limits, replies, fuzzing."""

import http.client
import io
import json
import pathlib
import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gostgev.codec.http import (
    HEADER_PAIRS,
    MAX_HEADERS,
    MAX_REQUEST_HEAD_BYTES,
    METHODS,
    RequestHead,
    header_pairs,
    looks_like_http,
    parse_request_head,
    simple_response,
)
from gostgev.errors import LocalProtocolError, RemoteProtocolError

DATA = pathlib.Path(__file__).resolve().parent.parent / "data" / "http"
VALID = sorted((DATA / "valid").glob("*.http"))
INVALID = sorted((DATA / "invalid").glob("*.http"))

_ESCAPE = re.compile(rb"\\(x[0-9a-fA-F]{2}|[rnt0\\])")
_ESCAPES = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\0", b"\\": b"\\"}


def load_http(path):
    """A corpus file's wire bytes: literal newlines dropped, escapes decoded (see data/http/README.md)."""
    def unescape(match):
        code = match[1]
        return bytes([int(code[1:], 16)]) if code.startswith(b"x") else _ESCAPES[code]

    return _ESCAPE.sub(unescape, path.read_bytes().replace(b"\n", b""))


def load_valid(path):
    expected = json.loads(path.with_suffix(".json").read_text())
    return load_http(path), expected


def load_invalid(path):
    return load_http(path), path.with_suffix(".error").read_text().strip()


def check(head, data, expected):
    """``head`` matches a corpus expectation for ``data``."""
    assert isinstance(head, RequestHead)
    assert (head.method, head.target, head.version, head.host) == (
        expected["method"], expected["target"], expected["version"], expected["host"])
    assert len(head.headers) == expected["headers"]
    assert head.length == len(data) - expected.get("trailing", 0)
    for name, value in expected.get("values", {}).items():
        assert head.header(name) == value, name


# -- chunkings, as gunicorn's treq.py replays each file --------------------------

def whole(data):
    return [data]


def byte_by_byte(data):
    return [data[i:i + 1] for i in range(len(data))]


def line_by_line(data):
    return re.findall(rb"[^\n]*\n|[^\n]+", data)


def random_chunks(data, seed=0):
    rng, pos, out = random.Random(seed), 0, []
    while pos < len(data):
        step = rng.randint(1, 16)
        out.append(data[pos:pos + step])
        pos += step
    return out


CHUNKINGS = {
    "whole": whole,
    "bytes": byte_by_byte,
    "lines": line_by_line,
    **{"random%d" % seed: (lambda data, seed=seed: random_chunks(data, seed)) for seed in range(5)},
}


def valid_params():
    for path in VALID:
        for name, chunking in CHUNKINGS.items():
            yield pytest.param(path, chunking, id="%s-%s" % (path.stem, name))


def invalid_params():
    for path in INVALID:
        for name, chunking in CHUNKINGS.items():
            yield pytest.param(path, chunking, id="%s-%s" % (path.stem, name))


def test_corpus_is_present():
    """The corpus ships with the tests and every file has its expectation."""
    assert len(VALID) >= 15 and len(INVALID) >= 15
    assert all(p.with_suffix(".json").exists() for p in VALID)
    assert all(p.with_suffix(".error").exists() for p in INVALID)


@pytest.mark.parametrize("path, chunking", list(valid_params()))
def test_valid_corpus(path, chunking):
    """Reads of any size answer None until the blank line arrives, then the same head for good."""
    data, expected = load_valid(path)
    full = parse_request_head(data)
    check(full, data, expected)
    ready = expected.get("ready", full.length)
    buf = b""
    for chunk in chunking(data):
        buf += chunk
        result = parse_request_head(buf)
        if len(buf) < ready:
            assert result is None, len(buf)
        else:
            assert result == full, len(buf)
    assert buf == data


@pytest.mark.parametrize("path, chunking", list(invalid_params()))
def test_invalid_corpus(path, chunking):
    """Reads of any size answer None until the error shows, and it is the expected one."""
    data, message = load_invalid(path)
    buf = b""
    for chunk in chunking(data):
        buf += chunk
        try:
            assert parse_request_head(buf) is None, len(buf)
        except RemoteProtocolError as exc:
            assert message in str(exc)
            return
    pytest.fail("no error for %s" % path.name)


@pytest.mark.parametrize("path", VALID, ids=lambda p: p.stem)
def test_bare_lf_heads_parse_alike(path):
    """Turning every CRLF of a head into LF changes its length and nothing else."""
    data, _ = load_valid(path)
    crlf = parse_request_head(data)
    lf_head = data[:crlf.length].replace(b"\r\n", b"\n")
    lf = parse_request_head(lf_head + data[crlf.length:])
    assert (lf.method, lf.target, lf.version, lf.headers, lf.host) == (
        crlf.method, crlf.target, crlf.version, crlf.headers, crlf.host)
    assert lf.length == len(lf_head)


def test_accepts_any_bytes_like():
    """Callers may hand over their bytearray or a memoryview of it."""
    data = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n"
    head = parse_request_head(data)
    assert parse_request_head(bytearray(data)) == head == parse_request_head(memoryview(data))


def test_header_lookup():
    """header() ignores case and returns the first of repeated values, None when absent."""
    head = parse_request_head(b"GET / HTTP/1.1\r\nX-A: 1\r\nx-a: 2\r\n\r\n")
    assert head.header("X-A") == "1"
    assert head.header("x-b") is None
    assert head.headers == (("X-A", "1"), ("x-a", "2"))


# -- limits ---------------------------------------------------------------------

def padded_head(total, terminator=b"\r\n\r\n"):
    """A head of exactly ``total`` bytes, made long by one fat cookie."""
    start = b"GET / HTTP/1.1\r\nHost: big.example\r\nCookie: "
    return start + b"a" * (total - len(start) - len(terminator)) + terminator


def test_head_exactly_at_limit_parses():
    """A head of MAX_REQUEST_HEAD_BYTES is accepted, body bytes after it or not."""
    data = padded_head(MAX_REQUEST_HEAD_BYTES)
    head = parse_request_head(data)
    assert head.length == MAX_REQUEST_HEAD_BYTES
    assert head.host == "big.example"
    assert parse_request_head(data + b"body") == head


def test_head_one_byte_over_limit_raises():
    """One byte more and the same head is refused, with the limit in the message."""
    with pytest.raises(RemoteProtocolError, match="request head larger than %d bytes" % MAX_REQUEST_HEAD_BYTES):
        parse_request_head(padded_head(MAX_REQUEST_HEAD_BYTES + 1))


def test_unterminated_head_raises_at_limit():
    """Without a blank line, None up to one byte short of the limit, an error from the limit on."""
    data = padded_head(MAX_REQUEST_HEAD_BYTES, terminator=b"")
    assert parse_request_head(data[:-1]) is None
    for extra in (b"", b"\r\n\r\n", b"x" * 100_000):
        with pytest.raises(RemoteProtocolError, match="larger than"):
            parse_request_head(data + extra)


def test_growing_head_raises_once_past_limit():
    """A client trickling header lines forever is cut off as soon as the limit is crossed."""
    buf, line = b"GET / HTTP/1.1\r\n", b"X-Pad: " + b"p" * 1000 + b"\r\n"
    for _ in range(MAX_REQUEST_HEAD_BYTES // len(line) + 2):
        buf += line
        if len(buf) < MAX_REQUEST_HEAD_BYTES:
            assert parse_request_head(buf) is None
        else:
            with pytest.raises(RemoteProtocolError, match="larger than"):
                parse_request_head(buf)
            return
    pytest.fail("never reached the limit")


def test_header_count_limit():
    """MAX_HEADERS header lines pass; one more is refused."""
    def head(count):
        return b"GET / HTTP/1.1\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(count)) + b"\r\n"

    assert len(parse_request_head(head(MAX_HEADERS)).headers) == MAX_HEADERS
    with pytest.raises(RemoteProtocolError, match="more than %d header lines" % MAX_HEADERS):
        parse_request_head(head(MAX_HEADERS + 1))


def test_bad_request_line_fails_before_the_head_completes():
    """A broken first line is refused at its newline, not after buffering up to the limit."""
    assert parse_request_head(b"GET / HTTP/1.7") is None
    with pytest.raises(RemoteProtocolError, match="unsupported HTTP version"):
        parse_request_head(b"GET / HTTP/1.7\r\nHost: a")
    with pytest.raises(RemoteProtocolError, match="invalid request line"):
        parse_request_head(b"\x16\x03\x01\x02\x00\x01\n")


def test_pri_preface_waits_for_its_tail():
    """The h2 preface is answered once all 24 bytes are in, with the length of its first head only."""
    first = b"PRI * HTTP/2.0\r\n\r\n"
    for tail in (b"", b"S", b"SM\r\n\r"):
        assert parse_request_head(first + tail) is None
    for tail in (b"SM\r\n\r\n", b"SM\r\n\r\n\x00\x00\x12\x04"):
        head = parse_request_head(first + tail)
        assert (head.method, head.version, head.host, head.length) == ("PRI", "HTTP/2.0", None, len(first))
    with pytest.raises(RemoteProtocolError, match="invalid HTTP/2 preface"):
        parse_request_head(first + b"SX")


# -- looks_like_http -------------------------------------------------------------

@pytest.mark.parametrize("data, expected", [
    (b"", None), (b"G", None), (b"GE", None), (b"GET", None), (b"GET ", True), (b"GET /x", True),
    (b"GETX", False), (b"get ", False), (b"\x16\x03\x01", False), (b"PRI ", True), (b"PRI", None),
    (b"SSH-2", False), (b"PROPPATC", None), (b"PROPPATCH ", True), (b"PROPPATCHX", False),
    (b" GET ", False), (b"\r\nGET ", False), (b"BREW ", False),
])
def test_looks_like_http(data, expected):
    assert looks_like_http(data) is expected


def test_every_method_is_recognised():
    """Each of METHODS with its space is True, and each shorter prefix of that is undecided."""
    for method in METHODS:
        wire = method.encode() + b" "
        assert looks_like_http(wire) is True
        assert all(looks_like_http(wire[:i]) is None for i in range(len(wire)))


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=len("PROPPATCH "), max_size=40))
def test_looks_like_http_decides_in_ten_bytes(data):
    """Ten bytes always decide, and more bytes never change the answer."""
    answer = looks_like_http(data)
    assert answer is not None
    assert looks_like_http(data[:len("PROPPATCH ")]) is answer


# -- simple_response --------------------------------------------------------------

class _ReplaySocket:
    """Just enough of a socket for http.client to read a canned response."""

    def __init__(self, data):
        self._data = data

    def makefile(self, *_args, **_kwargs):
        return io.BytesIO(self._data)


def read_back(data):
    response = http.client.HTTPResponse(_ReplaySocket(data))
    response.begin()
    return response, response.read()


def test_simple_response_parses_back():
    """The stdlib client reads status, reason, headers and a body of Content-Length bytes."""
    data = simple_response(404, "not found")
    response, body = read_back(data)
    assert data.startswith(b"HTTP/1.1 404 Not Found\r\n")
    assert (response.status, response.reason, body) == (404, "Not Found", b"not found\n")
    assert response.getheader("Content-Type") == "text/plain; charset=utf-8"
    assert response.getheader("Server") == "gostgev"
    assert int(response.getheader("Content-Length")) == len(body) == len(data.partition(b"\r\n\r\n")[2])
    assert response.getheader("Connection") == "close" and response.will_close


def test_simple_response_keep_alive():
    """keep_alive leaves the connection open for the next request."""
    response, body = read_back(simple_response(405, "method not allowed", keep_alive=True))
    assert response.getheader("Connection") is None and not response.will_close
    assert body == b"method not allowed\n"


def test_simple_response_cannot_be_split():
    """A hostile Host echoed in the message stays on the body's one line."""
    data = simple_response(502, "no route for evil.example\r\nSet-Cookie: pwned=1\r\n\r\n<script>")
    response, body = read_back(data)
    assert response.getheader("Set-Cookie") is None
    assert b"pwned" not in data.partition(b"\r\n\r\n")[0]
    assert body.count(b"\n") == 1 and body.endswith(b"\n") and b"\r" not in body


def test_simple_response_text_and_odd_statuses():
    """UTF-8 bodies are counted in bytes; an unknown status gets an empty reason; bodiless statuses are refused."""
    response, body = read_back(simple_response(400, "caf\u00e9 \udcff"))
    assert int(response.getheader("Content-Length")) == len(body)
    assert body.startswith("caf\u00e9".encode())
    assert simple_response(599, "odd").startswith(b"HTTP/1.1 599 \r\n")
    for status in (101, 204, 304, 600):
        with pytest.raises(LocalProtocolError):
            simple_response(status, "x")


# -- fuzzing: any bytes give a RequestHead, None or RemoteProtocolError ------------

def outcome(data):
    """Parse and check the invariant; returns the head, None, or "error"."""
    try:
        result = parse_request_head(data)
    except RemoteProtocolError:
        return "error"
    if result is None:
        assert len(data) < MAX_REQUEST_HEAD_BYTES
    else:
        assert isinstance(result, RequestHead)
        assert 0 < result.length <= min(len(data), MAX_REQUEST_HEAD_BYTES)
        ready = result.length + (6 if result.version == "HTTP/2.0" else 0)  # the preface's SM tail
        assert parse_request_head(data[:ready]) == result
    return result


VALID_DATA = [load_http(p) for p in VALID]
PIECES = [b"GET ", b"PRI * HTTP/2.0", b"CONNECT ", b"/", b"*", b"http://", b"a.example", b" HTTP/1.1", b" HTTP/1.0",
          b"\r\n", b"\n", b"\r", b"Host:", b"X-A: ", b":", b" ", b"\t", b"@", b"[", b"]", b"::1", b"80",
          b"\0", b"\xe9", b"SM\r\n\r\n"]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes(data):
    outcome(data)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=40).map(b"".join), st.integers(min_value=0))
def test_fuzz_http_shaped_bytes(data, cut):
    """HTTP-looking fragments reach the deep paths; an answer, once given, holds for every longer input."""
    prefix = data[:cut % (len(data) + 1)]
    earlier, later = outcome(prefix), outcome(data)
    if earlier is not None:
        assert later == earlier


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID_DATA), st.integers(min_value=0), st.binary(max_size=200))
def test_fuzz_valid_prefix_plus_noise(data, cut, noise):
    outcome(data[:cut % (len(data) + 1)] + noise)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(VALID_DATA), st.binary(max_size=200))
def test_fuzz_bytes_after_a_complete_sample_are_ignored(data, noise):
    assert parse_request_head(data + noise) == parse_request_head(data)


_LINE_PARTS = st.sampled_from(["Host", "X-A", "b", ":", " ", "\t", "v", "a b", "\r\n", "é", "\x00", "", "x:y"])


@settings(max_examples=300)
@given(st.lists(st.lists(_LINE_PARTS, max_size=6).map("".join), max_size=8))
def test_header_pairs_fast_path_agrees_with_the_exact_pattern(lines):
    block = "".join(line + "\r\n" for line in lines)
    assert header_pairs(block) == tuple(HEADER_PAIRS.findall(block))
