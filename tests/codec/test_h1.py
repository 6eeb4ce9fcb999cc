"""HTTP/1.x message tracking (RFC 9112 framing): a corpus replayed in every split, refusals, Hypothesis properties.

Each corpus case is a byte stream and the events it must give, with Data
spans replaced by the bytes they cover and adjacent spans joined.  A case is
replayed whole, byte by byte, and cut at points Hypothesis picks; the events
must not depend on the cuts, and the bytes the events carry (the heads' raw
bytes and Data) must be the input minus what the tracker is meant to drop:
blank lines before a request, and whatever follows a request that closes the
connection.
"""

import contextlib
import random
import signal
import string
import time
from typing import NamedTuple

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from gostgev.codec.h1 import (
    END,
    MAX_CHUNK_LINE,
    MAX_RESPONSE_HEAD_BYTES,
    UPGRADED,
    Data,
    Interim,
    Request,
    RequestTracker,
    Response,
    ResponseTracker,
)
from gostgev.codec.http import MAX_HEADERS, MAX_REQUEST_HEAD_BYTES, parse_request_head
from gostgev.errors import RemoteProtocolError

# -- replaying a stream ---------------------------------------------------------------------

class Req(NamedTuple):
    """A Request event as the corpus writes it."""

    method: str
    target: str
    raw: bytes


def req(raw):
    """The Req for a head whose bytes are ``raw`` (method and target from its request line)."""
    method, target = raw.split(b" ", 2)[:2]
    return Req(method.decode(), target.decode(), raw)


def collect(out, events, data):
    """Append ``events`` from feeding ``data`` to ``out``, Data spans as bytes, adjacent spans joined."""
    for event in events:
        if type(event) is Data:
            assert 0 <= event.start < event.end <= len(data), (event, len(data))
            piece = bytes(data[event.start:event.end])
            if out and type(out[-1]) is bytes:
                out[-1] += piece
            else:
                out.append(piece)
        elif type(event) is Request:
            assert event.raw == event.raw.lstrip(b"\r\n") and len(event.raw) <= event.head.length
            out.append(Req(event.head.method, event.head.target, event.raw))
        else:
            assert event in (END, UPGRADED) or type(event) in (Response, Interim), event
            out.append(event)
    return out


def carried(out):
    """The bytes a normalised event list passes on: heads (``raw``) and data, in order."""
    return b"".join(item if type(item) is bytes else getattr(item, "raw", b"") for item in out)


def replay_requests(pieces, eof=False):
    tracker, out = RequestTracker(), []
    for piece in pieces:
        collect(out, tracker.feed(piece), piece)
    if eof:
        collect(out, tracker.feed(b""), b"")
    return out, tracker


def replay_responses(pieces, expects, eof=False):
    tracker, out = ResponseTracker(), []
    for expect in expects:      # a method, or (method, upgrade)
        if isinstance(expect, tuple):
            tracker.expect(*expect)
        else:
            tracker.expect(expect)
    for piece in pieces:
        collect(out, tracker.feed(piece), piece)
    if eof:
        collect(out, tracker.feed(b""), b"")
    return out, tracker


def cut(data, points):
    points = sorted(set(p for p in points if 0 < p < len(data)))
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


def bytewise(data):
    return [data[i:i + 1] for i in range(len(data))]


def seeded_pieces(data, seed):
    """``data`` in random pieces of 1 to ``1 + seed * 7`` bytes, the same for the same seed."""
    rng, pos, out = random.Random(seed), 0, []
    while pos < len(data):
        step = rng.randint(1, 1 + seed * 7)
        out.append(data[pos:pos + step])
        pos += step
    return out


def drawn_pieces(data, wire, max_cuts=24):
    """``wire`` cut where Hypothesis says."""
    if len(wire) < 2:
        return [wire]
    points = data.draw(st.lists(st.integers(1, len(wire) - 1), max_size=max_cuts), label="cuts")
    return cut(wire, points)


SPLITS = ["whole", "bytewise", "seed1", "seed2", "seed5", "seed40"]


def split(wire, how):
    if how == "whole":
        return [wire]
    if how == "bytewise":
        return bytewise(wire)
    return seeded_pieces(wire, int(how[4:]))


def splits(wire):
    """The standard replays of ``wire``; byte by byte only while that stays cheap (heads are rescanned)."""
    if len(wire) < 4096:
        return [(how, split(wire, how)) for how in SPLITS]
    return [(how, split(wire, how)) for how in ("whole", "seed40", "seed300")]


def test_helpers_see_what_they_should():
    """The harness itself: spans are joined, heads and data carried, bad spans caught."""
    out = collect([], [Data(0, 2), Data(2, 3), END, Data(3, 4)], b"abcd")
    assert out == [b"abc", END, b"d"] and carried(out) == b"abcd"
    with pytest.raises(AssertionError):
        collect([], [Data(2, 2)], b"abcd")
    with pytest.raises(AssertionError):
        collect([], [Data(3, 5)], b"abcd")
    assert cut(b"abcdef", [4, 2, 2, 0, 6]) == [b"ab", b"cd", b"ef"]
    assert b"".join(seeded_pieces(b"x" * 100, 3)) == b"x" * 100 and len(seeded_pieces(b"x" * 100, 3)) > 4


# -- the request corpus ---------------------------------------------------------------------

GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"
POST = b"POST /form HTTP/1.1\r\nHost: example.com\r\nContent-Length: 11\r\n\r\n"
PUT_CHUNKED = b"PUT /up HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n"
CHUNKED_BODY = (b"5;name=value\r\nhello\r\n6 ; x ; y=\"q\"\r\n world\r\n0\r\n"
                b"X-Checksum: abc\r\nX-Other:1\r\n\r\n")
DELETE = b"DELETE /item/7 HTTP/1.1\nHost: a.example\n\n"
GET10 = b"GET /old HTTP/1.0\r\nUser-Agent: x\r\n\r\n"
GET10_KEEP = b"GET /old HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"
CLOSING_POST = b"POST /last HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, close\r\nContent-Length: 3\r\n\r\n"
HUNDRED = b"GET /h HTTP/1.1\r\n" + b"".join(b"X-%d: %d\r\n" % (i, i) for i in range(MAX_HEADERS)) + b"\r\n"
GZIP_CHUNKED = b"POST /z HTTP/1.1\r\nTransfer-Encoding: gzip\r\ntransfer-encoding: CHUNKED\r\n\r\n"
ABSOLUTE = b"GET http://Example.COM:8080/x?y=1 HTTP/1.1\r\nHost: example.com.:8080\r\n\r\n"
CONTINUE = b"POST /big HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\ncontent-length: 4000\r\n\r\n"
BIG_BODY = bytes(range(256)) * 15 + b"\r\n\r\n" + b"GET / HTTP/1.1\r\n\r\n" + b"z" * 138

REQUESTS = [
    # name, wire, events, carried (None: all of wire)
    ("get", GET, [req(GET), END], None),
    ("bare-lf-head", DELETE, [req(DELETE), END], None),
    ("leading-blank-lines", b"\r\n\n\r\n" + GET, [req(GET), END], GET),
    ("content-length", POST + b"hello world", [req(POST), b"hello world", END], None),
    ("content-length-zero", b"POST /e HTTP/1.1\r\nContent-Length: 000\r\n\r\n",
     [req(b"POST /e HTTP/1.1\r\nContent-Length: 000\r\n\r\n"), END], None),
    ("body-looks-like-requests", CONTINUE + BIG_BODY, [req(CONTINUE), BIG_BODY, END], None),
    ("chunked-extensions-trailers", PUT_CHUNKED + CHUNKED_BODY, [req(PUT_CHUNKED), CHUNKED_BODY, END], None),
    ("chunked-last-of-codings", GZIP_CHUNKED + b"A\r\n0123456789\r\n0000\r\n\r\n",
     [req(GZIP_CHUNKED), b"A\r\n0123456789\r\n0000\r\n\r\n", END], None),
    ("chunked-empty", PUT_CHUNKED + b"0\r\n\r\n", [req(PUT_CHUNKED), b"0\r\n\r\n", END], None),
    ("pipelined", GET + POST + b"hello world" + b"\r\n" + PUT_CHUNKED + CHUNKED_BODY + DELETE + GET,
     [req(GET), END, req(POST), b"hello world", END, req(PUT_CHUNKED), CHUNKED_BODY, END,
      req(DELETE), END, req(GET), END],
     GET + POST + b"hello world" + PUT_CHUNKED + CHUNKED_BODY + DELETE + GET),
    ("http10-closes", GET10 + GET, [req(GET10), END], GET10),
    ("http10-keep-alive", GET10_KEEP + GET, [req(GET10_KEEP), END, req(GET), END], None),
    ("connection-close", CLOSING_POST + b"abc" + GET + b"not even HTTP\r\n\r\n",
     [req(CLOSING_POST), b"abc", END], CLOSING_POST + b"abc"),
    ("absolute-form-same-host", ABSOLUTE + GET, [req(ABSOLUTE), END, req(GET), END], None),
    ("hundred-headers", HUNDRED, [req(HUNDRED), END], None),
]


def _case_ids(cases):
    return [case[0] for case in cases]


@pytest.mark.parametrize("name, wire, expected, kept", REQUESTS, ids=_case_ids(REQUESTS))
def test_request_corpus_carries_its_bytes(name, wire, expected, kept):
    """The expectation itself obeys the invariant: heads and data are the input minus dropped bytes."""
    assert carried(expected) == (wire if kept is None else kept)


@pytest.mark.parametrize("name, wire, expected, kept", REQUESTS, ids=_case_ids(REQUESTS))
def test_request_corpus(name, wire, expected, kept):
    for how, pieces in splits(wire):
        out, tracker = replay_requests(pieces)
        assert out == expected, how
        assert carried(out) == (wire if kept is None else kept)
        assert tracker.idle or tracker.closing, how     # between requests, unless one asked to close
        assert tracker.feed(b"") == []                  # EOF between requests is no error


@settings(max_examples=200, deadline=None)
@given(data=st.data(), case=st.sampled_from(REQUESTS))
def test_request_corpus_in_random_pieces(data, case):
    name, wire, expected, kept = case
    out, _ = replay_requests(drawn_pieces(data, wire))
    assert out == expected


def test_request_head_is_held_until_complete():
    """Nothing of a head is reported before its blank line; then the whole head at once, body after."""
    tracker = RequestTracker()
    assert tracker.feed(POST[:10]) == [] and not tracker.idle
    assert tracker.feed(POST[10:-1]) == []
    events = tracker.feed(POST[-1:] + b"hello")
    assert [type(e) for e in events] == [Request, Data] and events[0].raw == POST and events[1] == Data(1, 6)
    head = events[0].head
    assert (head.method, head.target, head.host, head.header("content-length")) == ("POST", "/form",
                                                                                     "example.com", "11")
    assert tracker.feed(b" world") == [Data(0, 6), END] and tracker.idle


def test_connection_close_reads_nothing_after():
    tracker = RequestTracker()
    assert collect([], tracker.feed(CLOSING_POST), CLOSING_POST) == [req(CLOSING_POST)]
    assert tracker.closing and not tracker.idle and not tracker.finished
    assert tracker.feed(b"abc" + GET) == [Data(0, 3), END]
    assert tracker.finished
    assert tracker.feed(GET) == [] and tracker.feed(b"\x00garbage") == [] and tracker.feed(b"") == []


def test_http10_request_closes_unless_keep_alive():
    tracker = RequestTracker()
    tracker.feed(GET10)
    assert tracker.closing
    tracker = RequestTracker()
    tracker.feed(GET10_KEEP)
    assert not tracker.closing and tracker.idle
    tracker.feed(GET)
    assert not tracker.closing


def test_blank_lines_before_eof_are_no_request():
    """An old client's CRLF after a body, then EOF: not a request cut short."""
    out, tracker = replay_requests([POST + b"hello world\r\n", b"\n"], eof=True)
    assert out == [req(POST), b"hello world", END]


# -- upgrades and CONNECT: held bytes ---------------------------------------------------------

UPGRADE = (b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n"
           b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\n\r\n")
H2C = (b"POST /x HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
       b"HTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\nContent-Length: 3\r\n\r\n")
CONNECT = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
CONNECT10 = b"CONNECT example.com:443 HTTP/1.0\r\n\r\n"
FRAME = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"
CLIENT_HELLO = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03" + bytes(range(32))


@pytest.mark.parametrize("head, body, after", [
    (UPGRADE, b"", FRAME), (H2C, b"abc", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), (CONNECT, b"", CLIENT_HELLO),
    (CONNECT10, b"", CLIENT_HELLO)], ids=["websocket", "h2c-with-body", "connect", "connect-http10"])
def test_switch_accepted_gives_held_bytes_then_raw(head, body, after):
    for how, pieces in splits(head + body + after):
        out, tracker = replay_requests(pieces)
        assert out == [req(head), *([body] if body else []), END], how
        assert tracker.upgrading and not tracker.idle and not tracker.raw
        assert tracker.feed(b"more") == [] and tracker.feed(b"") == []
        held, events = tracker.upgrade_answered(True)
        assert held == after + b"more" and events == [Data(0, len(held))]
        assert tracker.raw and not tracker.upgrading
        assert tracker.feed(b"\r\n\r\nGET / HTTP/1.1\r\n") == [Data(0, 20)]
        assert tracker.feed(b"") == []


def test_switch_accepted_with_nothing_held():
    tracker = RequestTracker()
    tracker.feed(UPGRADE)
    assert tracker.upgrade_answered(True) == (b"", [])
    assert tracker.feed(FRAME) == [Data(0, len(FRAME))]


def test_switch_declined_reads_held_bytes_as_requests():
    for how, pieces in splits(UPGRADE + GET + UPGRADE + POST + b"hello"):
        out, tracker = replay_requests(pieces)
        assert out == [req(UPGRADE), END] and tracker.upgrading, how
        held, events = tracker.upgrade_answered(False)
        assert held == GET + UPGRADE + POST + b"hello"
        # the held bytes hold a second upgrade request: what follows it is held again
        assert collect([], events, held) == [req(GET), END, req(UPGRADE), END] and tracker.upgrading
        held, events = tracker.upgrade_answered(False)
        assert held == POST + b"hello" and collect([], events, held) == [req(POST), b"hello"]
        assert not tracker.upgrading and not tracker.raw and not tracker.idle
        assert tracker.feed(b" world") == [Data(0, 6), END] and tracker.idle


def test_switch_declined_after_closing_request_reads_nothing():
    tracker = RequestTracker()
    assert [type(e) for e in tracker.feed(CONNECT10 + GET)] == [Request, type(END)]
    assert tracker.closing and tracker.upgrading
    held, events = tracker.upgrade_answered(False)
    assert held == GET and events == []
    assert tracker.feed(GET) == []


def test_upgrade_header_alone_is_no_switch():
    """Without the ``upgrade`` Connection token the Upgrade header means nothing (RFC 9110 7.8)."""
    plain = b"GET /chat HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n"
    out, tracker = replay_requests([plain + GET])
    assert out == [req(plain), END, req(GET), END] and not tracker.upgrading


def test_held_bytes_are_bounded():
    tracker = RequestTracker()
    tracker.feed(UPGRADE + b"x" * MAX_REQUEST_HEAD_BYTES)
    with pytest.raises(RemoteProtocolError, match="before the upgrade was answered"):
        tracker.feed(b"x")


# -- the response corpus --------------------------------------------------------------------

OK5 = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
OK_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
CONTINUE100 = b"HTTP/1.1 100 Continue\r\n\r\n"
HINTS103 = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
HEAD_REPLY = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
HEAD_CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
NO_CONTENT = b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n"
NOT_MODIFIED = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 123\r\nETag: \"x\"\r\n\r\n"
UNTIL_CLOSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n"
GZIP_UNTIL_CLOSE = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"
CLOSE5 = b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\n"
OLD = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n"
OLD_KEEP = b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n"
SWITCHING = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
DENIED = b"HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 4\r\n\r\n"
TERSE = b"HTTP/1.1 200\nContent-Length: 2\n\n"
EMPTY_REASON = b"HTTP/1.1 404 \r\nContent-Length: 0\r\n\r\n"


def resp(head, status, keep_alive=True, until_close=False):
    return Response(status, keep_alive, len(head), head, until_close)


RESPONSES = [
    # name, expected requests, wire, events, EOF at the end
    ("content-length", ["GET"], OK5 + b"hello", [resp(OK5, 200), b"hello", END], False),
    ("chunked-trailers", ["GET"], OK_CHUNKED + CHUNKED_BODY, [resp(OK_CHUNKED, 200), CHUNKED_BODY, END], False),
    ("head-has-no-body", ["HEAD", "HEAD", "GET"], HEAD_REPLY + HEAD_CHUNKED + OK5 + b"hello",
     [resp(HEAD_REPLY, 200), END, resp(HEAD_CHUNKED, 200), END, resp(OK5, 200), b"hello", END], False),
    ("interim-then-final", ["POST"], CONTINUE100 + HINTS103 + OK5 + b"hello",
     [Interim(100, CONTINUE100), Interim(103, HINTS103), resp(OK5, 200), b"hello", END], False),
    ("204-304-no-body", ["DELETE", "GET", "GET"], NO_CONTENT + NOT_MODIFIED + OK5 + b"hello",
     [resp(NO_CONTENT, 204), END, resp(NOT_MODIFIED, 304), END, resp(OK5, 200), b"hello", END], False),
    ("until-close", ["GET"], UNTIL_CLOSE + b"all of this\r\n\r\nHTTP/1.1 200 OK\r\n\r\nis body",
     [resp(UNTIL_CLOSE, 200, False, True), b"all of this\r\n\r\nHTTP/1.1 200 OK\r\n\r\nis body", END], True),
    ("until-close-empty", ["GET"], UNTIL_CLOSE, [resp(UNTIL_CLOSE, 200, False, True), END], True),
    ("not-chunked-until-close", ["GET"], GZIP_UNTIL_CLOSE + b"\x1f\x8b\x08\x00",
     [resp(GZIP_UNTIL_CLOSE, 200, False, True), b"\x1f\x8b\x08\x00", END], True),
    ("connection-close", ["GET", "GET"], CLOSE5 + b"hello", [resp(CLOSE5, 200, False), b"hello", END], True),
    ("http10-closes", ["GET"], OLD + b"hi", [resp(OLD, 200, False), b"hi", END], True),
    ("http10-keep-alive", ["GET", "GET"], OLD_KEEP + b"hi" + OK5 + b"hello",
     [resp(OLD_KEEP, 200), b"hi", END, resp(OK5, 200), b"hello", END], True),
    ("switching-protocols", [("GET", True)], SWITCHING + FRAME + b"HTTP/1.1 200 OK\r\n\r\n",
     [resp(SWITCHING, 101), END, UPGRADED, FRAME + b"HTTP/1.1 200 OK\r\n\r\n"], True),
    ("connect-established", ["CONNECT"], CONTINUE100 + ESTABLISHED + CLIENT_HELLO,
     [Interim(100, CONTINUE100), resp(ESTABLISHED, 200), END, UPGRADED, CLIENT_HELLO], True),
    ("connect-denied-then-established", ["CONNECT", "CONNECT"], DENIED + b"deny" + ESTABLISHED,
     [resp(DENIED, 407), b"deny", END, resp(ESTABLISHED, 200), END, UPGRADED], False),
    ("upgrade-declined", [("GET", True), "GET"], OK5 + b"hello" + OK5 + b"world",
     [resp(OK5, 200), b"hello", END, resp(OK5, 200), b"world", END], False),
    ("terse-heads", ["GET", "GET"], TERSE + b"hi" + EMPTY_REASON,
     [resp(TERSE, 200), b"hi", END, resp(EMPTY_REASON, 404), END], True),
]


@pytest.mark.parametrize("name, expects, wire, expected, eof", RESPONSES, ids=_case_ids(RESPONSES))
def test_response_corpus_carries_its_bytes(name, expects, wire, expected, eof):
    assert carried(expected) == wire


@pytest.mark.parametrize("name, expects, wire, expected, eof", RESPONSES, ids=_case_ids(RESPONSES))
def test_response_corpus(name, expects, wire, expected, eof):
    finals = [e for e in expected if type(e) is Response]
    for how, pieces in splits(wire):
        out, tracker = replay_responses(pieces, expects, eof)
        assert out == expected, how
        assert carried(out) == wire
        assert tracker.pending == len(expects) - len(finals)
        assert tracker.keep_alive == all(r.keep_alive for r in finals)
        assert tracker.raw == (UPGRADED in expected) and tracker.status == finals[-1].status


@settings(max_examples=200, deadline=None)
@given(data=st.data(), case=st.sampled_from(RESPONSES))
def test_response_corpus_in_random_pieces(data, case):
    name, expects, wire, expected, eof = case
    out, _ = replay_responses(drawn_pieces(data, wire), expects, eof)
    assert out == expected


def test_expect_queue_answers_in_order():
    """Each final response answers the oldest request; pending drops exactly at its END."""
    tracker = ResponseTracker()
    assert tracker.pending == 0
    tracker.expect("GET")
    tracker.expect("HEAD")
    assert tracker.pending == 2
    stream = CONTINUE100 + OK5 + b"hello" + HEAD_REPLY
    assert tracker.feed(stream[:len(CONTINUE100)]) == [Interim(100, CONTINUE100)]
    assert tracker.pending == 2 and tracker.status == 0      # an interim answer answers nothing
    events = tracker.feed(stream[len(CONTINUE100):-len(HEAD_REPLY) - 1])
    assert END not in events and tracker.pending == 2 and tracker.status == 200
    assert tracker.feed(stream[-len(HEAD_REPLY) - 1:-len(HEAD_REPLY)]) == [Data(0, 1), END]
    assert tracker.pending == 1
    tracker.expect("GET")     # a request sent while the answers stream in
    assert tracker.feed(HEAD_REPLY + OK5 + b"hello")[-1] is END   # HEAD: no 1000 bytes expected
    assert tracker.pending == 0


def test_response_head_is_held_until_complete():
    """A response head comes whole, as ``raw``: nothing of it before its blank line."""
    tracker = ResponseTracker()
    tracker.expect("GET")
    assert tracker.feed(b"HTTP/1.1 200 OK\r\nConte") == []
    assert tracker.feed(b"nt-") == [] and tracker.pending == 1
    rest = b"Length: 2\r\n\r\nhi"
    head = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
    assert tracker.feed(rest) == [Response(200, True, len(head), head, False), Data(13, 15), END]
    tracker.expect("GET")
    assert tracker.feed(head[:-1]) == []
    with pytest.raises(RemoteProtocolError, match="closed in the middle"):
        tracker.feed(b"")


def test_close_delimited_body_ends_at_eof():
    tracker = ResponseTracker()
    tracker.expect("GET")
    tracker.feed(UNTIL_CLOSE)
    assert not tracker.keep_alive and tracker.pending == 1
    assert tracker.feed(b"x" * 100000) == [Data(0, 100000)]
    assert tracker.feed(b"") == [END] and tracker.pending == 0
    assert tracker.feed(b"") == []


def test_raw_after_switch_passes_everything():
    tracker = ResponseTracker()
    tracker.expect("GET", upgrade=True)
    tracker.feed(SWITCHING)
    assert tracker.raw and tracker.pending == 0
    assert tracker.feed(b"HTTP/1.1 400 Bad\r\n\r\n") == [Data(0, 20)]
    assert tracker.feed(b"") == []


# -- refusals -------------------------------------------------------------------------------

P = b"POST / HTTP/1.1\r\nHost: a\r\n"
CH = P + b"Transfer-Encoding: chunked\r\n\r\n"
RP = b"HTTP/1.1 200 OK\r\n"
RCH = RP + b"Transfer-Encoding: chunked\r\n\r\n"
BIG_TRAILERS = b"".join(b"X-T%d: %s\r\n" % (i, b"v" * 1000) for i in range(MAX_REQUEST_HEAD_BYTES // 1000 + 1))

REQUEST_REFUSALS = [
    # name, wire, EOF at the end, error message pattern
    ("cl-and-te", P + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", False, "both"),
    ("te-and-cl", P + b"Transfer-Encoding: chunked\r\nContent-Length: 0\r\n\r\n", False, "both"),
    ("two-content-lengths", P + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", False, "2 Content-Length"),
    ("content-length-list", P + b"Content-Length: 5, 5\r\n\r\nhello", False, "invalid Content-Length"),
    ("content-length-word", P + b"Content-Length: five\r\n\r\nhello", False, "invalid Content-Length"),
    ("content-length-signed", P + b"Content-Length: +5\r\n\r\nhello", False, "invalid Content-Length"),
    ("content-length-negative", P + b"Content-Length: -1\r\n\r\n", False, "invalid Content-Length"),
    ("content-length-hex", P + b"Content-Length: 0x10\r\n\r\n", False, "invalid Content-Length"),
    ("content-length-empty", P + b"Content-Length:\r\n\r\n", False, "invalid Content-Length"),
    ("content-length-huge", P + b"Content-Length: 1" + b"0" * 18 + b"\r\n\r\n", False, "invalid Content-Length"),
    ("te-gzip", P + b"Transfer-Encoding: gzip\r\n\r\nxyz", False, "not chunked last"),
    ("te-chunked-then-gzip", P + b"Transfer-Encoding: chunked, gzip\r\n\r\n", False, "not chunked last"),
    ("te-chunked-twice", P + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", False,
     "not chunked last"),
    ("te-identity", P + b"Transfer-Encoding: identity\r\n\r\n", False, "not chunked last"),
    ("te-in-http10", b"POST / HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"0\r\n\r\n", False, "HTTP/1.0 request with Transfer-Encoding"),
    ("chunk-size-bare-lf", CH + b"5\nhello\r\n0\r\n\r\n", False, "bare LF"),
    ("chunk-data-bare-lf", CH + b"5\r\nhello\n0\r\n\r\n", False, "bare LF"),
    ("last-chunk-bare-lf", CH + b"0\n\r\n", False, "bare LF"),
    ("final-blank-bare-lf", CH + b"0\r\n\n", False, "bare LF"),
    ("trailer-bare-lf", CH + b"0\r\nX: y\n\r\n", False, "bare LF"),
    ("chunk-size-not-hex", CH + b"g\r\nhello\r\n0\r\n\r\n", False, "invalid chunk-size"),
    ("chunk-size-0x", CH + b"0x5\r\nhello\r\n0\r\n\r\n", False, "invalid chunk-size"),
    ("chunk-size-negative", CH + b"-5\r\nhello\r\n0\r\n\r\n", False, "invalid chunk-size"),
    ("chunk-size-leading-space", CH + b" 5\r\nhello\r\n0\r\n\r\n", False, "invalid chunk-size"),
    ("chunk-size-empty", CH + b"\r\nhello\r\n0\r\n\r\n", False, "invalid chunk-size"),
    ("chunk-size-17-digits", CH + b"1" + b"0" * 16 + b"\r\n", False, "invalid chunk-size"),
    ("chunk-data-too-long", CH + b"5\r\nhello world\r\n0\r\n\r\n", False, "longer than its size"),
    ("chunk-without-crlf", CH + b"5\r\nhello0\r\n\r\n", False, "longer than its size"),
    ("chunk-line-too-long", CH + b"5;" + b"x" * MAX_CHUNK_LINE + b"\r\nhello\r\n0\r\n\r\n", False, "longer than"),
    ("chunk-line-endless", CH + b"5;" + b"x" * MAX_CHUNK_LINE, False, "longer than"),
    ("trailers-too-big", CH + b"0\r\n" + BIG_TRAILERS + b"\r\n", False, "trailer"),
    ("trailer-no-colon", CH + b"0\r\nnot a header\r\n\r\n", False, "invalid trailer"),
    ("trailer-folded", CH + b"0\r\nX: a\r\n b\r\n\r\n", False, "invalid trailer"),
    ("head-too-big", b"GET / HTTP/1.1\r\nCookie: " + b"c" * MAX_REQUEST_HEAD_BYTES, False, "larger than"),
    ("head-too-big-complete", b"GET / HTTP/1.1\r\nCookie: " + b"c" * MAX_REQUEST_HEAD_BYTES + b"\r\n\r\n", False,
     "larger than"),
    ("too-many-headers", b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * (MAX_HEADERS + 1) + b"\r\n", False,
     "more than %d header" % MAX_HEADERS),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: a\r\n b\r\n\r\n", False, "folding"),
    ("absolute-form-other-host", b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\r\n", False, "disagree"),
    ("absolute-form-other-host-later", GET + b"GET http://a.example:80/ HTTP/1.1\r\nHost: b.example:80\r\n\r\n",
     False, "disagree"),
    ("bad-request-line", GET + b"GET /\r\n\r\n", False, "invalid request line"),
    ("http2-preface", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", False, "HTTP/2"),
    ("eof-in-head", b"GET / HTTP/1.1\r\nHost: a\r\n", True, "closed in the middle"),
    ("eof-in-body", POST + b"hello", True, "closed in the middle"),
    ("eof-in-chunk-size", CH + b"5", True, "closed in the middle"),
    ("eof-in-chunk-data", CH + b"5\r\nhel", True, "closed in the middle"),
    ("eof-before-last-chunk", CH + b"5\r\nhello\r\n", True, "closed in the middle"),
    ("eof-in-trailers", CH + b"0\r\nX: y\r\n", True, "closed in the middle"),
    ("eof-in-second-request", GET + b"G", True, "closed in the middle"),
]

RESPONSE_REFUSALS = [
    # name, expected requests, wire, EOF at the end, error message pattern
    ("cl-and-te", ["GET"], RP + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", False, "both"),
    ("two-content-lengths", ["GET"], RP + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\n", False,
     "2 Content-Length"),
    ("content-length-word", ["GET"], RP + b"Content-Length: many\r\n\r\n", False, "invalid Content-Length"),
    ("chunk-size-bare-lf", ["GET"], RCH + b"5\nhello\r\n0\r\n\r\n", False, "bare LF"),
    ("chunk-size-not-hex", ["GET"], RCH + b"five\r\nhello\r\n0\r\n\r\n", False, "invalid chunk-size"),
    ("chunk-data-too-long", ["GET"], RCH + b"2\r\nhello\r\n0\r\n\r\n", False, "longer than its size"),
    ("nobody-asked", [], OK5 + b"hello", False, "nobody asked"),
    ("one-too-many", ["GET"], OK5 + b"hello" + OK5 + b"hello", False, "nobody asked"),
    ("after-connection-close", ["GET", "GET"], CLOSE5 + b"hello" + OK5 + b"hello", False, "after its last"),
    ("after-connection-close-no-body", ["GET", "GET"],
     b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n" + OK5, False, "after its last"),
    ("after-http10-empty-body", ["GET", "GET"], b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\nX", False,
     "after its last"),
    ("after-head-close", ["HEAD", "GET"], b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 9\r\n\r\n"
     b"123456789", False, "after its last"),
    ("switching-unasked", ["GET"], SWITCHING + FRAME, False, "without an upgrade request"),
    ("not-http", ["GET"], b"SSH-2.0-OpenSSH_9.6\r\n", False, "not an HTTP/1.x response"),
    ("bad-status-line", ["GET"], b"HTTP/1.1 2000 OK\r\n\r\n", False, "invalid status line"),
    ("http2-status-line", ["GET"], b"HTTP/2 200\r\n\r\n", False, "status line|not an HTTP/1"),
    ("bad-header", ["GET"], RP + b"Bad Header: x\r\n\r\n", False, "invalid response header"),
    ("folded-header", ["GET"], RP + b"X: a\r\n b\r\n\r\n", False, "invalid response header"),
    ("too-many-headers", ["GET"], RP + b"X: y\r\n" * (MAX_HEADERS + 1) + b"\r\n", False, "more than"),
    ("head-too-big", ["GET"], RP + b"Set-Cookie: " + b"c" * MAX_RESPONSE_HEAD_BYTES, False, "larger than"),
    ("eof-in-head", ["GET"], b"HTTP/1.1 200 OK\r\nContent-Le", True, "closed in the middle"),
    ("eof-in-body", ["GET"], OK5 + b"hell", True, "closed in the middle"),
    ("eof-in-chunked", ["GET"], RCH + b"5\r\nhello\r\n", True, "closed in the middle"),
    ("eof-in-trailers", ["GET"], RCH + b"0\r\nX-Sum: 1\r\n", True, "closed in the middle"),
]


@pytest.mark.parametrize("name, wire, eof, match", REQUEST_REFUSALS, ids=_case_ids(REQUEST_REFUSALS))
def test_request_refusals(name, wire, eof, match):
    for _how, pieces in splits(wire):
        with pytest.raises(RemoteProtocolError, match=match):
            replay_requests(pieces, eof)


@pytest.mark.parametrize("name, expects, wire, eof, match", RESPONSE_REFUSALS, ids=_case_ids(RESPONSE_REFUSALS))
def test_response_refusals(name, expects, wire, eof, match):
    for _how, pieces in splits(wire):
        with pytest.raises(RemoteProtocolError, match=match):
            replay_responses(pieces, expects, eof)


def test_refusals_are_about_their_defect():
    """Just inside each limit the same streams are accepted: the refusals above are not for something else."""
    ok_chunk_line = CH + b"5;" + b"x" * (MAX_CHUNK_LINE - 4) + b"\r\nhello\r\n0\r\n\r\n"
    trailer = b"X: " + b"v" * (MAX_REQUEST_HEAD_BYTES - 5) + b"\r\n"
    ok_trailers = CH + b"0\r\n" + trailer + b"\r\n"
    ok_head = b"GET / HTTP/1.1\r\nCookie: " + b"c" * (MAX_REQUEST_HEAD_BYTES - 28) + b"\r\n\r\n"
    assert len(ok_head) == MAX_REQUEST_HEAD_BYTES
    ok_response_head = RP + b"Set-Cookie: " + b"c" * (MAX_RESPONSE_HEAD_BYTES - 33) + b"\r\n\r\n"
    assert len(ok_response_head) == MAX_RESPONSE_HEAD_BYTES
    for wire in (ok_chunk_line, ok_trailers, ok_head, CH + b"0005\r\nhello\r\n0;last\r\n\r\n",
                 b"GET / HTTP/1.1\r\n" + b"X: y\r\n" * MAX_HEADERS + b"\r\n"):
        for how, pieces in splits(wire):
            out, tracker = replay_requests(pieces, eof=True)
            assert out[-1] is END and carried(out) == wire and tracker.idle, how
    for how, pieces in splits(ok_response_head):
        out, tracker = replay_responses(pieces, ["GET"], eof=True)
        assert out == [resp(ok_response_head, 200, False, True), END], how
    # the CR ending trailers that fill the limit exactly may come alone
    out, _ = replay_requests([ok_trailers[:-1], ok_trailers[-1:]])
    assert out[-1] is END


# -- Hypothesis: anything in, RemoteProtocolError at worst, whatever the split ---------------

REQUEST_LINES = [b"GET / HTTP/1.1\r\n", b"POST /p HTTP/1.0\r\n", b"PUT /p HTTP/1.1\n", b"CONNECT a:443 HTTP/1.1\r\n",
                 b"GET http://b/ HTTP/1.1\r\n", b"PRI * HTTP/2.0\r\n", b"SM\r\n", b"\r\n"]
REQUEST_HEADERS = [b"Host: a\r\n", b"Content-Length: 3\r\n", b"Content-Length: 0\r\n", b"Content-Length: x\r\n",
                   b"Transfer-Encoding: chunked\r\n", b"Transfer-Encoding: gzip\r\n", b"Connection: close\r\n",
                   b"Connection: keep-alive, upgrade\r\n", b"Upgrade: websocket\r\n", b"X: y\r\n", b" folded\r\n"]
STATUS_LINES = [b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 100 Continue\r\n", b"HTTP/1.1 101 Switching\r\n",
                b"HTTP/1.0 204 No\r\n", b"HTTP/1.1 304 Not Modified\r\n", b"HTTP/1.1 200\n", b"HTTP/1.0 200 OK\r\n"]
RESPONSE_HEADERS = [b"Content-Length: 3\r\n", b"Content-Length: 0\r\n", b"Transfer-Encoding: chunked\r\n",
                    b"Transfer-Encoding: gzip\r\n", b"Connection: close\r\n", b"Connection: keep-alive\r\n",
                    b"X: y\r\n"]
# a framing header and a body for it, mostly right
FRAMED = [(b"", b""), (b"Content-Length: 3\r\n", b"abc"), (b"Content-Length: 0\r\n", b""),
          (b"Transfer-Encoding: chunked\r\n", b"3\r\nabc\r\n0\r\n\r\n"),
          (b"Transfer-Encoding: chunked\r\n", b"3;x=y\r\nabc\r\n0\r\nX: y\r\n\r\n"),
          (b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n"), (b"Transfer-Encoding: chunked\r\n", b"3\r\nabcd\r\n"),
          (b"Transfer-Encoding: chunked\r\n", b"ffffffffffffffff\r\nabc")]
EXTRA_PARTS = [b"\r\n", b"\n", b"\r", b"abc", b"0\r\n", b"X: y\r\n"]


def soup(lines, headers):
    """Streams of message-like pieces and noise: deeper into the state machine than random bytes."""
    message = st.tuples(
        st.sampled_from(lines),
        st.lists(st.sampled_from(headers), max_size=2, unique=True),
        st.sampled_from(FRAMED),
        st.sampled_from([b"\r\n", b"\r\n", b"\n", b""]),
        st.lists(st.sampled_from(EXTRA_PARTS), max_size=2) | st.binary(max_size=6).map(lambda b: [b]),
    ).map(lambda m: m[0] + b"".join(m[1]) + m[2][0] + m[3] + m[2][1] + b"".join(m[4]))
    return st.binary(max_size=200) | st.lists(message, min_size=1, max_size=4).map(b"".join)


class Hang(BaseException):
    """Not an Exception, so Hypothesis does not replay (and shrink) an input that never returns."""


@contextlib.contextmanager
def no_hang(pieces, seconds=5):
    """Fail, naming the input, if the block runs longer than ``seconds``; the test's own timeout is kept."""
    def expired(signum, frame):
        raise Hang("no answer within %d s for %r in %d pieces" % (seconds, b"".join(pieces)[:300], len(pieces)))

    previous = signal.signal(signal.SIGALRM, expired)
    outer, _ = signal.setitimer(signal.ITIMER_REAL, seconds)   # pytest-timeout's alarm, if armed
    started = time.monotonic()
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - started), 0.001))


def assert_carried_from(wire, out):
    """What ``out`` carries is ``wire`` in order, with nothing but blank lines left out between."""
    pos = 0
    for item in out:
        if type(item) in (Req, bytes):
            piece = item.raw if type(item) is Req else item
            found = wire.find(piece, pos)
            assert found >= 0 and not wire[pos:found].strip(b"\r\n"), (item, wire[pos:])
            pos = found + len(piece)


def request_outcome(pieces, eof, accept):
    """The normalised events of a replay, answering every switch with ``accept`` at the end; or "refused"."""
    tracker, out = RequestTracker(), []
    try:
        with no_hang(pieces):
            for piece in pieces:
                collect(out, tracker.feed(piece), piece)
            while tracker.upgrading:
                held, events = tracker.upgrade_answered(accept)
                collect(out, events, held)
            if eof:
                collect(out, tracker.feed(b""), b"")
    except RemoteProtocolError:
        return "refused"
    return out


def response_outcome(pieces, expects, eof):
    tracker, out = ResponseTracker(), []
    for method, upgrade in expects:
        tracker.expect(method, upgrade)
    try:
        with no_hang(pieces):
            for piece in pieces:
                collect(out, tracker.feed(piece), piece)
            if eof:
                collect(out, tracker.feed(b""), b"")
    except RemoteProtocolError:
        return "refused"
    assert tracker.pending == len(expects) - sum(1 for e in out if e is END)
    return out


@settings(max_examples=150, deadline=None)
@given(data=st.data(), wire=soup(REQUEST_LINES, REQUEST_HEADERS), eof=st.booleans(), accept=st.booleans())
def test_any_client_bytes_split_anyhow_give_the_same_answer(data, wire, eof, accept):
    whole = request_outcome([wire], eof, accept)
    assert request_outcome(drawn_pieces(data, wire), eof, accept) == whole
    if whole != "refused":
        assert_carried_from(wire, whole)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), wire=soup(STATUS_LINES, RESPONSE_HEADERS), eof=st.booleans(),
       expects=st.lists(st.tuples(st.sampled_from(["GET", "HEAD", "POST", "CONNECT"]), st.booleans()), max_size=4))
def test_any_server_bytes_split_anyhow_give_the_same_answer(data, wire, eof, expects):
    whole = response_outcome([wire], expects, eof)
    assert response_outcome(drawn_pieces(data, wire), expects, eof) == whole
    if whole != "refused":      # every byte is reported, but for a head still incomplete
        assert wire.startswith(carried(whole)) and (carried(whole) == wire or not eof)


@settings(max_examples=60, deadline=None)
@given(wire=soup(REQUEST_LINES, REQUEST_HEADERS), eof=st.booleans())
@example(wire=b"PRI * HTTP/2.0\r\n\r\n\r", eof=False)   # a preface whose tail goes wrong
@example(wire=b"\r\nContent-Length: 3\r\nabc", eof=False)   # a blank line, then a bad request line
def test_any_client_bytes_byte_by_byte(wire, eof):
    assert request_outcome(bytewise(wire), eof, False) == request_outcome([wire], eof, False)


@settings(max_examples=60, deadline=None)
@given(wire=soup(STATUS_LINES, RESPONSE_HEADERS), eof=st.booleans())
def test_any_server_bytes_byte_by_byte(wire, eof):
    expects = [("GET", False), ("HEAD", False), ("GET", True)]
    assert response_outcome(bytewise(wire), expects, eof) == response_outcome([wire], expects, eof)


# -- Hypothesis: valid streams round-trip -------------------------------------------------

_NAME_CHARS = string.ascii_lowercase + string.digits
_PATH_CHARS = string.ascii_letters + string.digits + "-._~%!$&'()*+,;=:@/?"
_VALUE_CHARS = string.ascii_letters + string.digits + " -_.,;=/\"()"
_hosts = st.one_of(
    st.lists(st.text(_NAME_CHARS, min_size=1, max_size=8), min_size=1, max_size=3).map(".".join),
    st.ip_addresses(v=4).map(str))
_methods = st.sampled_from(["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "PROPFIND", "PURGE"])
_extra_headers = st.lists(st.tuples(st.sampled_from(["Accept", "User-Agent", "X-Trace", "Cookie", "Via"]),
                                    st.text(_VALUE_CHARS, max_size=20)), max_size=3)


def _any_case(draw, name):
    return draw(st.sampled_from([name, name.lower(), name.upper()]))


def _chunked(draw):
    """A chunked body with random sizes' spelling, extensions and trailers; its wire bytes."""
    wire = b""
    for chunk in draw(st.lists(st.binary(min_size=1, max_size=24), max_size=4)):
        size = draw(st.sampled_from(["%x", "%X", "%04x"])) % len(chunk)
        ext = draw(st.sampled_from(["", ";a", ";a=b", " ;a=\"c d\"", "\t;x"]))
        wire += ("%s%s\r\n" % (size, ext)).encode() + chunk + b"\r\n"
    wire += b"0\r\n"
    for name, value in draw(st.lists(st.tuples(st.sampled_from(["X-Sum", "Expires"]),
                                               st.text(_VALUE_CHARS, max_size=10)), max_size=2)):
        wire += ("%s: %s\r\n" % (name, value)).encode()
    return wire + b"\r\n"


@st.composite
def request_streams(draw):
    """(wire, events, carried bytes) of 1-4 valid pipelined requests, the last possibly closing."""
    wire, events, kept = b"", [], b""
    count = draw(st.integers(1, 4))
    for index in range(count):
        last = index == count - 1
        method = draw(_methods)
        path = "/" + draw(st.text(_PATH_CHARS, max_size=16))
        host = draw(_hosts)
        port = draw(st.none() | st.integers(1, 65535))
        authority = host if port is None else "%s:%d" % (host, port)
        target = draw(st.sampled_from([path, "http://%s%s" % (authority, path)]))
        version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]))
        framing = draw(st.sampled_from(["none", "length", "chunked"] if version == "HTTP/1.1" else ["none", "length"]))
        close = last and draw(st.booleans())
        headers = [("Host", draw(st.sampled_from([authority, authority.upper()])))]
        headers += draw(_extra_headers)
        body = b""
        if framing == "length":
            body = draw(st.binary(max_size=40))
            headers.append((_any_case(draw, "Content-Length"), str(len(body))))
        elif framing == "chunked":
            body = _chunked(draw)
            headers.append((_any_case(draw, "Transfer-Encoding"), draw(st.sampled_from(["chunked", "gzip, chunked"]))))
        if version == "HTTP/1.0" and not close:
            headers.append(("Connection", draw(st.sampled_from(["keep-alive", "Keep-Alive"]))))
        elif close and (version == "HTTP/1.1" or draw(st.booleans())):
            headers.append(("Connection", draw(st.sampled_from(["close", "Close", "keep-alive, close"]))))
        headers = draw(st.permutations(headers))
        eol = draw(st.sampled_from(["\r\n", "\r\n", "\n"]))
        head = (eol.join(["%s %s %s" % (method, target, version)] + ["%s: %s" % h for h in headers])
                + eol + eol).encode("latin-1")
        blank = draw(st.sampled_from([b"", b"", b"\r\n", b"\n", b"\r\n\r\n"]))
        wire += blank + head + body
        kept += head + body
        events += [Req(method, target, head), *([body] if body else []), END]
        if close:
            wire += draw(st.binary(max_size=30))   # never read
    return wire, events, kept


@settings(max_examples=80, deadline=None)
@given(data=st.data(), stream=request_streams())
def test_valid_request_streams_round_trip(data, stream):
    wire, expected, kept = stream
    for pieces in ([wire], drawn_pieces(data, wire), bytewise(wire) if len(wire) < 400 else [wire]):
        out, tracker = replay_requests(pieces, eof=True)
        assert out == expected
        assert carried(out) == kept


@st.composite
def response_streams(draw):
    """(expect() calls, wire, events) of 1-4 valid responses, the last possibly closing or switching."""
    expects, wire, events = [], b"", []
    count = draw(st.integers(1, 4))
    for index in range(count):
        last = index == count - 1
        method = draw(st.sampled_from(["GET", "HEAD", "POST", "DELETE"]))
        switch = last and draw(st.sampled_from([None, None, None, "upgrade", "connect"]))
        if switch == "connect":
            method = "CONNECT"
        expects.append((method, switch == "upgrade"))
        for status in draw(st.lists(st.sampled_from([100, 102, 103]), max_size=2)):
            head = b"HTTP/1.1 %d Info\r\n%s\r\n" % (status, draw(st.sampled_from([b"", b"Link: </a>\r\n"])))
            wire += head
            events.append(Interim(status, head))
        if switch:
            status = 101 if switch == "upgrade" else draw(st.sampled_from([200, 204]))
            head = b"HTTP/1.1 %d Switched\r\n\r\n" % status
            raw = draw(st.binary(max_size=30))
            wire += head + raw
            events += [Response(status, True, len(head), head, False), END, UPGRADED, *([raw] if raw else [])]
            break
        status = draw(st.sampled_from([200, 201, 204, 206, 301, 304, 404, 500]))
        bodiless = method == "HEAD" or status in (204, 304)
        version = draw(st.sampled_from(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]))
        framings = ["length", "chunked", "close"] if last else ["length", "chunked"]
        framing = draw(st.sampled_from(framings if version == "HTTP/1.1" else [f for f in framings if f != "chunked"]))
        close = last and draw(st.booleans())
        headers = [("Server", "x")]
        body = b""
        if framing == "length":
            body = draw(st.binary(max_size=40))
            headers.append((_any_case(draw, "Content-Length"), str(len(body))))
        elif framing == "chunked":
            body = _chunked(draw)
            headers.append(("Transfer-Encoding", "chunked"))
        else:
            body = draw(st.binary(max_size=40))
        if version == "HTTP/1.0" and not close:
            headers.append(("Connection", "keep-alive"))
        elif close and (version == "HTTP/1.1" or draw(st.booleans())):
            headers.append(("Connection", "close"))
        until_close = framing == "close" and not bodiless
        keep_alive = not close and not until_close
        head = ("%s %d Whatever\r\n" % (version, status)).encode() + b"".join(
            ("%s: %s\r\n" % h).encode() for h in draw(st.permutations(headers))) + b"\r\n"
        if bodiless:
            body = b""
        wire += head + body
        events += [Response(status, keep_alive, len(head), head, until_close), *([body] if body else []), END]
    return expects, wire, events


@settings(max_examples=80, deadline=None)
@given(data=st.data(), stream=response_streams())
def test_valid_response_streams_answer_every_request(data, stream):
    expects, wire, expected = stream
    for pieces in ([wire], drawn_pieces(data, wire), bytewise(wire) if len(wire) < 400 else [wire]):
        out, tracker = replay_responses(pieces, expects, eof=True)
        assert out == expected
        assert carried(out) == wire
        assert tracker.pending == 0
        assert tracker.keep_alive == all(e.keep_alive for e in expected if type(e) is Response)


def test_chunk_data_past_its_size_is_refused_at_the_first_extra_byte():
    tracker = RequestTracker()
    tracker.feed(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc")
    with pytest.raises(RemoteProtocolError, match="longer than its size"):
        tracker.feed(b"X")


@pytest.mark.parametrize("which", ["request", "response"])
def test_a_head_sent_a_byte_at_a_time_is_parsed_once_it_ends(monkeypatch, which):
    """Only new bytes are searched for the end of a head: a slow sender costs linear work,
    and the head parser runs when the head can be complete, not for every byte."""
    import gostgev.codec.h1 as h1

    name = "parse_request_head" if which == "request" else "parse_response_head"
    calls = []
    real = getattr(h1, name)
    monkeypatch.setattr(h1, name, lambda data: calls.append(len(data)) or real(data))
    if which == "request":
        tracker, start = RequestTracker(), b"GET / HTTP/1.1\r\nX-Long: "
    else:
        tracker, start = ResponseTracker(), b"HTTP/1.1 200 OK\r\nX-Long: "
        tracker.expect("GET")
    tracker.feed(start)
    for _ in range(2000):
        assert tracker.feed(b"v") == []
    events = tracker.feed(b"\r\nContent-Length: 0\r\n\r\n")
    assert type(events[0]).__name__ == ("Request" if which == "request" else "Response")
    assert len(calls) <= 3, calls


@pytest.mark.parametrize("data", [
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: b\r\n\r\n",
    b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
])
def test_a_head_parsed_by_the_sniffer_gives_the_same_events(data):
    known = parse_request_head(data)
    assert known is not None
    plain, reused = RequestTracker(), RequestTracker()
    assert _described(reused.feed(data, known)) == _described(plain.feed(data))
    assert (reused.closing, reused.finished) == (plain.closing, plain.finished)


def test_a_known_head_is_not_taken_after_leading_blank_lines():
    data = b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"
    wrong = parse_request_head(b"GET /other HTTP/1.1\r\nHost: z\r\n\r\n")
    [request, *_] = RequestTracker().feed(data, wrong)
    assert request.head.target == "/" and request.head.host == "a"


def _described(events):
    return [(type(e).__name__, getattr(e, "raw", None), getattr(getattr(e, "head", None), "target", None),
             getattr(e, "start", None), getattr(e, "end", None)) for e in events]
