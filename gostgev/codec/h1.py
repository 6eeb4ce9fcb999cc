"""Follow HTTP/1.x messages through a proxy, in both directions, without copying bodies.

A proxy that routes each request needs to know where every message starts
and ends, nothing more: bodies pass through untouched.  Two trackers do
that, one per direction of one client connection (RFC 9112 framing)::

    client bytes ─▶ RequestTracker.feed()  ─▶ Request(head, raw)  a complete head, held back
                                              Data(start, end)    body bytes of this feed
                                              END                 the request is complete
    server bytes ─▶ ResponseTracker.feed() ─▶ Response(status, keep_alive, length, raw, until_close)
                                              Interim(status, raw)  1xx before the final answer
                                              Data(start, end) / END
                                              UPGRADED            raw bytes both ways from here

``Data(start, end)`` names a slice of the bytes just fed: the caller sends
``view[start:end]`` on, no copy made.  Heads are held back until complete
and handed over whole (``raw``): the caller routes on a request's, and may
drop a hop-by-hop ``Connection: close`` from either.  A body's framing bytes
(chunk-size lines, trailers) are reported as data, since they travel as they
came.

Every ``feed`` returns a list of events, possibly empty ("need more data"),
or raises :class:`~gostgev.errors.RemoteProtocolError`.  ``feed(b"")`` is EOF.

Framing (RFC 9112 6.1-6.3, 7.1):

* a request has a body only with ``Transfer-Encoding: chunked`` or
  ``Content-Length``; a message with both, a request whose transfer coding
  is not ``chunked``, several or malformed ``Content-Length`` values, and a
  chunk line ended by a bare LF are refused: they can be read two ways,
  which is how requests are smuggled past a proxy;
* a response to ``HEAD``, a 1xx, 204 and 304 have no body; a response with
  neither header runs until the server closes;
* ``101`` after a request with ``Upgrade``, or a 2xx to ``CONNECT``, turns
  the connection into a raw byte pipe.  The client's bytes after such a
  request are held until the answer says which way to read them
  (:meth:`RequestTracker.upgrade_answered`).
"""

import re
from typing import NamedTuple

from gostgev.addr import host_without_port, normalize_host
from gostgev.codec.http import HEADER_PAIRS, MAX_HEADERS, MAX_REQUEST_HEAD_BYTES, RequestHead, parse_request_head
from gostgev.errors import RemoteProtocolError

__all__ = [
    "Request", "Response", "Interim", "Data", "END", "UPGRADED", "RequestTracker", "ResponseTracker",
    "MAX_CHUNK_LINE", "MAX_RESPONSE_HEAD_BYTES", "parse_response_head", "ResponseHead",
]

#: A chunk-size line is hex digits plus optional extensions, which nothing
#: we know of uses; 4 KiB is far beyond any real one and bounds what a
#: hostile client makes us scan per line.
MAX_CHUNK_LINE = 4096

#: Response heads: Set-Cookie lists and CSP headers make them bigger than
#: request heads; nginx's proxy_buffer_size default is 4-8 KiB and HAProxy's
#: tune.bufsize 16 KiB, so 64 KiB leaves room without being unbounded.
MAX_RESPONSE_HEAD_BYTES = 64 * 1024

#: Trailers follow the head's limit: they are header lines too.
MAX_TRAILER_BYTES = MAX_REQUEST_HEAD_BYTES

# How much of a feed a head parse looks at (the head limit plus the h2 preface tail).
_HEAD_WINDOW = MAX_REQUEST_HEAD_BYTES + 8


class Request(NamedTuple):
    """A complete request head; ``raw`` is its bytes as the client sent them."""

    head: RequestHead
    raw: bytes


class Response(NamedTuple):
    """The head of a final response (status >= 200, or 101); ``raw`` is its bytes."""

    status: int
    keep_alive: bool    #: False: the server will close after this response
    length: int         #: bytes of the head
    raw: bytes
    until_close: bool   #: the body runs until the server closes (no length, not chunked)


class Interim(NamedTuple):
    """A 1xx response other than 101 (``100 Continue``); the final one follows."""

    status: int
    raw: bytes


class Data(NamedTuple):
    """``data[start:end]`` of the last feed belongs to the current message (or the raw pipe)."""

    start: int
    end: int


class _Marker:
    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return self.name


#: the current message is complete
END = _Marker("END")
#: the connection is now a raw pipe in both directions
UPGRADED = _Marker("UPGRADED")

# Tracker states
_HEAD, _LENGTH, _CHUNK_LINE, _CHUNK_DATA, _CHUNK_CRLF, _TRAILERS, _UNTIL_CLOSE, _HOLD, _RAW, _DONE = range(10)

_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r\n")
_DIGITS = re.compile(r"[0-9]{1,18}")
_END_OF_HEAD = re.compile(rb"\n\r?\n")
_STATUS_LINE = re.compile(r"HTTP/1\.([01]) ([0-9]{3})(?: [^\x00-\x08\x0a-\x1f\x7f]*)?")
_HEADER_LINE = re.compile(r"([-!#$%&'*+.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*")
_BAD_VALUE_CHAR = re.compile(r"[\x00\r\n]")
# A CRLF-terminated head with well-formed lines, in one match (the line-by-line
# parser below handles, and names the faults of, everything else).
_FAST_RESPONSE = re.compile(r"HTTP/1\.([01]) ([0-9]{3})(?: [^\x00-\x08\x0a-\x1f\x7f]*)?\r\n"
                            r"((?:[-!#$%&'*+.^_`|~0-9A-Za-z]+:[^\x00\r\n]*\r\n)*)\r\n")


def _connection_tokens(headers):
    """The lower-case tokens of every ``Connection`` header."""
    tokens = set()
    for name, value in headers:
        if name.lower() == "connection":
            tokens.update(t.strip().lower() for t in value.split(","))
    return tokens


def _framing(headers, what, request):
    """``(chunked, length)`` from Transfer-Encoding and Content-Length (RFC 9112 6).

    ``length`` is None when no Content-Length was given.  Anything that
    could be read two ways raises.
    """
    encodings, lengths = [], []
    for name, value in headers:
        lower = name.lower()
        if lower == "transfer-encoding":
            encodings.extend(e.strip().lower() for e in value.split(","))
        elif lower == "content-length":
            lengths.append(value)
    if encodings and lengths:
        raise RemoteProtocolError("%s with both Transfer-Encoding and Content-Length" % what)
    if encodings:
        if encodings[-1] != "chunked" or encodings.count("chunked") != 1:
            if request:
                raise RemoteProtocolError("request with Transfer-Encoding %r, not chunked last"
                                          % ", ".join(encodings)[:100])
            return False, None   # a response: read until the server closes
        return True, None
    if not lengths:
        return False, None
    if len(lengths) > 1:
        raise RemoteProtocolError("%s with %d Content-Length headers" % (what, len(lengths)))
    if not _DIGITS.fullmatch(lengths[0]):
        raise RemoteProtocolError("%s with invalid Content-Length %r" % (what, lengths[0][:40]))
    return False, int(lengths[0])


_LEADING_BLANK_LINES = re.compile(rb"(?:\r?\n)*")


def _window(data, pos, size, limit):
    """At most ``limit`` bytes of ``data`` from ``pos``, without copying them."""
    if pos == 0 and size <= limit:
        return data
    return memoryview(data)[pos:min(size, pos + limit)]


def _still_partial(seen, buffered, limit, what):
    """True when ``buffered``, whose first ``seen`` bytes held no whole head, still holds none.

    Only the new bytes (and the two before them) are searched for the blank
    line that ends a head, so a head sent a byte at a time costs linear work,
    not quadratic.
    """
    if _END_OF_HEAD.search(buffered, max(0, seen - 2)) is not None:
        return False
    if len(buffered) >= limit:
        raise RemoteProtocolError("%s head larger than %d bytes" % (what, limit))
    return True


class _Body:
    """The body reader shared by both directions: counts, never copies."""

    __slots__ = ("state", "remaining", "line", "trailer_bytes")

    def __init__(self):
        self.state = _HEAD
        self.remaining = 0
        self.line = b""           # a partial chunk-size or trailer line
        self.trailer_bytes = 0

    def start(self, chunked, length):
        """Enter the body of a message; True when it has none."""
        if chunked:
            self.state, self.line = _CHUNK_LINE, b""
            return False
        if length:
            self.state, self.remaining = _LENGTH, length
            return False
        return True

    def read(self, data, pos, size, events):
        """:meth:`consume`, reporting the bytes it took as one ``Data`` event."""
        new, finished = self.consume(data, pos, size)
        if new > pos:
            events.append(Data(pos, new))
        return new, finished

    def consume(self, data, pos, size):
        """Read body bytes from ``pos``; ``(new pos, finished)``."""
        while pos < size:
            state = self.state
            if state == _LENGTH:
                take = min(self.remaining, size - pos)
                self.remaining -= take
                pos += take
                if not self.remaining:
                    return pos, True
            elif state == _CHUNK_DATA:
                take = min(self.remaining, size - pos)
                self.remaining -= take
                pos += take
                if not self.remaining:
                    self.state, self.line = _CHUNK_CRLF, b""
            elif state == _CHUNK_LINE or state == _CHUNK_CRLF or state == _TRAILERS:
                end = data.find(b"\n", pos, size)
                stop = size if end < 0 else end + 1
                line = self.line + bytes(data[pos:stop])
                pos = stop
                if end < 0:
                    if state == _CHUNK_CRLF and not b"\r\n".startswith(line):
                        # Refused at the first byte too many, before it is passed on.
                        raise RemoteProtocolError("chunk data longer than its size: %r" % line[:40])
                    # (+1 for trailers: the CR of the blank line that ends them, which is not counted)
                    limit = MAX_CHUNK_LINE if state != _TRAILERS else MAX_TRAILER_BYTES - self.trailer_bytes + 1
                    if len(line) > limit:
                        raise RemoteProtocolError("chunk line or trailer longer than %d bytes" % limit)
                    self.line = line
                    return pos, False
                self.line = b""
                if not line.endswith(b"\r\n"):
                    raise RemoteProtocolError("chunked body line ends in a bare LF: %r" % line[:40])
                if state == _CHUNK_CRLF:
                    if line != b"\r\n":
                        raise RemoteProtocolError("chunk data longer than its size: %r" % line[:40])
                    self.state = _CHUNK_LINE
                elif state == _CHUNK_LINE:
                    if len(line) > MAX_CHUNK_LINE:
                        raise RemoteProtocolError("chunk-size line longer than %d bytes" % MAX_CHUNK_LINE)
                    match = _CHUNK_SIZE.fullmatch(line)
                    if match is None:
                        raise RemoteProtocolError("invalid chunk-size line %r" % line[:40])
                    self.remaining = int(match[1], 16)
                    if self.remaining:
                        self.state = _CHUNK_DATA
                    else:
                        self.state, self.trailer_bytes = _TRAILERS, 0
                else:   # a trailer line, or the blank line that ends the message
                    if line == b"\r\n":
                        return pos, True
                    self.trailer_bytes += len(line)
                    if self.trailer_bytes > MAX_TRAILER_BYTES:
                        raise RemoteProtocolError("trailers larger than %d bytes" % MAX_TRAILER_BYTES)
                    if line[:1] in (b" ", b"\t") or b":" not in line:
                        raise RemoteProtocolError("invalid trailer line %r" % line[:40])
            else:
                raise AssertionError("body state %d" % state)
        return pos, False


class RequestTracker:
    """The client's side: request heads, held back until complete, and body boundaries.

    After a request that asks for a protocol switch (``Upgrade`` or
    ``CONNECT``), further bytes are held until :meth:`upgrade_answered`.
    """

    def __init__(self):
        self._body = _Body()
        self._head = b""          # a partial head
        self._line_checked = False  # its request line was complete, and checked, already
        self._held = b""          # bytes after an upgrade request, until it is answered
        self.closing = False      #: the last request asked to close the connection
        self.upgrading = False    #: waiting for the answer to an upgrade or CONNECT request
        self.raw = False          #: the connection became a raw pipe

    @property
    def idle(self):
        """Between requests: no head or body is half read."""
        return self._body.state in (_HEAD, _DONE) and not self._head

    @property
    def in_head(self):
        """Part of a request head is here and the rest is not."""
        return self._body.state == _HEAD and bool(self._head)

    @property
    def finished(self):
        """A request asked to close the connection and is complete: nothing more is read."""
        return self._body.state == _DONE

    def feed(self, data):
        """Events for the bytes ``data`` (as ``recv`` returns them); ``b""`` is EOF."""
        body = self._body
        state = body.state
        if state == _RAW:
            return [Data(0, len(data))] if data else []
        if state == _HOLD:
            self._hold(data)
            return []
        if state == _DONE:
            return []    # after Connection: close nothing more is read as requests
        if not data:
            if state != _HEAD or self._head.strip(b"\r\n"):   # blank lines alone are no request
                raise RemoteProtocolError("client closed in the middle of a request")
            return []
        return self._feed(data, len(data))

    def _feed(self, data, size):
        events = []
        body = self._body
        pos = 0
        while pos < size:
            state = body.state
            if state == _HEAD:
                pos = self._read_head(data, pos, size, events)
                if pos < 0:
                    break
            elif state == _HOLD:
                self._hold(data[pos:size])
                break
            elif state == _DONE:
                break
            else:
                pos, finished = body.read(data, pos, size, events)
                if finished:
                    events.append(END)
                    self._after_message()
        return events

    def _read_head(self, data, pos, size, events):
        """Read a head from ``pos``; the position after it, or -1 when it is not complete."""
        if self._head:
            offset = len(self._head)
            buffered = self._head + bytes(data[pos:min(size, pos + _HEAD_WINDOW)])
            if _still_partial(offset, buffered, MAX_REQUEST_HEAD_BYTES, "request"):
                if not self._line_checked and buffered.find(b"\n", offset) >= 0:
                    self._line_checked = True
                    parse_request_head(buffered)   # a bad request line is refused once it is complete
                self._head = buffered
                return -1
        else:
            # Blank lines before a request (RFC 9112 2.2) belong to no message: dropped here,
            # so that a client sending nothing else cannot make us buffer them.
            start = _LEADING_BLANK_LINES.match(data, pos).end()
            if start == size:
                return -1
            pos = start
            buffered = _window(data, pos, size, _HEAD_WINDOW)
            offset = 0
        head = parse_request_head(buffered)
        if head is None:
            self._head = bytes(buffered)
            self._line_checked = self._head.find(b"\n") >= 0
            return -1
        if head.version == "HTTP/2.0":
            raise RemoteProtocolError("HTTP/2 preface on an HTTP/1.x connection")
        self._head = b""
        _check_target(head)
        raw = bytes(buffered[:head.length])
        if raw[:1] in (b"\r", b"\n"):
            raw = raw.lstrip(b"\r\n")   # leading blank lines (RFC 9112 2.2) belong to no message
        events.append(Request(head, raw))
        pos += head.length - offset
        chunked, length = _framing(head.headers, "request", True)
        if chunked and head.version == "HTTP/1.0":
            # RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing
            raise RemoteProtocolError("HTTP/1.0 request with Transfer-Encoding")
        tokens = _connection_tokens(head.headers)
        self.closing = "close" in tokens or (head.version == "HTTP/1.0" and "keep-alive" not in tokens)
        self.upgrading = head.method == "CONNECT" or ("upgrade" in tokens and head.header("upgrade") is not None)
        if self._body.start(chunked, length):
            events.append(END)
            self._after_message()
        return pos

    def _after_message(self):
        """After a complete request: hold what follows an upgrade, stop after a close, else read on."""
        if self.upgrading:
            self._body.state = _HOLD
        elif self.closing:
            self._body.state = _DONE
        else:
            self._body.state = _HEAD

    def _hold(self, data):
        if len(self._held) + len(data) > MAX_REQUEST_HEAD_BYTES:
            raise RemoteProtocolError("more than %d bytes sent before the upgrade was answered"
                                      % MAX_REQUEST_HEAD_BYTES)
        self._held += bytes(data)

    def upgrade_answered(self, accepted):
        """The server answered the upgrade or CONNECT request.

        Returns ``(data, events)``: the bytes held since, and their events
        (raw data if ``accepted``, else the requests they hold).
        """
        held, self._held = self._held, b""
        self.upgrading = False
        if accepted:
            self._body.state = _RAW
            self.raw = True
            return held, ([Data(0, len(held))] if held else [])
        self._body.state = _DONE if self.closing else _HEAD
        return held, self._feed(held, len(held))


def _check_target(head):
    """RFC 9112 3.2.2: an absolute-form target and a Host header must name the same host."""
    target = head.target
    if "://" in target[:16]:
        host_header = head.header("host")
        if host_header is not None and normalize_host(host_without_port(host_header)) != head.host:
            raise RemoteProtocolError("request target %r and Host %r disagree"
                                      % (target[:100], host_header[:100]))


class ResponseHead(NamedTuple):
    status: int
    version: str
    headers: tuple
    length: int


def parse_response_head(data):
    """A :class:`ResponseHead`, None for "need more data", or :class:`RemoteProtocolError`."""
    if not isinstance(data, bytes):
        data = bytes(data[:MAX_RESPONSE_HEAD_BYTES])
    end = data.find(b"\r\n\r\n", 0, MAX_RESPONSE_HEAD_BYTES)
    if end > 0:
        match = _FAST_RESPONSE.fullmatch(data[:end + 4].decode("latin-1"))
        if match is not None:
            headers = tuple(HEADER_PAIRS.findall(match[3]))
            if len(headers) <= MAX_HEADERS:
                return ResponseHead(int(match[2]), "HTTP/1." + match[1], headers, end + 4)
    end = _END_OF_HEAD.search(data, 0, MAX_RESPONSE_HEAD_BYTES)
    if end is None:
        if len(data) >= MAX_RESPONSE_HEAD_BYTES:
            raise RemoteProtocolError("response head larger than %d bytes" % MAX_RESPONSE_HEAD_BYTES)
        if len(data) >= 12 and bytes(data[:7]) != b"HTTP/1.":
            raise RemoteProtocolError("not an HTTP/1.x response: %r" % bytes(data[:40]))
        return None
    length = end.end()
    lines = bytes(data[:end.start()]).decode("latin-1").split("\n")
    status_line = lines[0][:-1] if lines[0].endswith("\r") else lines[0]
    match = _STATUS_LINE.fullmatch(status_line)
    if match is None:
        raise RemoteProtocolError("invalid status line %r" % status_line[:100])
    if len(lines) - 1 > MAX_HEADERS:
        raise RemoteProtocolError("response with more than %d header lines" % MAX_HEADERS)
    headers = []
    for line in lines[1:]:
        if line.endswith("\r"):
            line = line[:-1]
        header = _HEADER_LINE.fullmatch(line)
        if header is None or _BAD_VALUE_CHAR.search(header[2]):
            raise RemoteProtocolError("invalid response header line %r" % line[:100])
        headers.append((header[1], header[2]))
    return ResponseHead(int(match[2]), "HTTP/1." + match[1], tuple(headers), length)


class ResponseTracker:
    """The server's side: one response per request :meth:`expect`-ed, in order."""

    def __init__(self):
        self._body = _Body()
        self._head = b""
        self._expected = []       # (method, upgrade) of requests not yet answered
        self.keep_alive = True    #: False once a response said the server closes
        self.raw = False          #: the connection became a raw pipe
        self.status = 0           #: of the last final response

    @property
    def pending(self):
        """Requests sent that have no complete response yet."""
        return len(self._expected)

    def expect(self, method, upgrade=False):
        """A request went to this server; its response comes after the earlier ones."""
        self._expected.append((method, upgrade))

    def feed(self, data):
        """Events for ``data`` from the server; ``b""`` is EOF."""
        body = self._body
        if body.state == _RAW:
            return [Data(0, len(data))] if data else []
        if not data:
            if body.state == _UNTIL_CLOSE:
                body.state = _DONE
                self._expected.pop(0)
                return [END]
            if body.state == _DONE or (body.state == _HEAD and not self._head):
                return []
            raise RemoteProtocolError("server closed in the middle of a response")
        if body.state == _DONE:
            raise RemoteProtocolError("server sent %d bytes after its last response" % len(data))
        events = []
        pos, size = 0, len(data)
        while pos < size:
            if body.state == _HEAD:
                pos = self._read_head(data, pos, size, events)
                if pos < 0:
                    break
            elif body.state == _UNTIL_CLOSE:
                events.append(Data(pos, size))
                break
            elif body.state == _DONE:
                raise RemoteProtocolError("server sent bytes after its last response")
            else:
                pos, finished = body.read(data, pos, size, events)
                if finished:
                    self._finished(events)
                    if body.state == _DONE and pos < size:
                        raise RemoteProtocolError("server sent bytes after its last response")
            if body.state == _RAW and pos < size:
                events.append(Data(pos, size))
                break
        return events

    def _read_head(self, data, pos, size, events):
        if not self._expected:
            raise RemoteProtocolError("server sent a response nobody asked for: %r" % bytes(data[pos:pos + 40]))
        if self._head:
            offset = len(self._head)
            buffered = self._head + bytes(data[pos:min(size, pos + MAX_RESPONSE_HEAD_BYTES)])
            if _still_partial(offset, buffered, MAX_RESPONSE_HEAD_BYTES, "response"):
                if len(buffered) >= 12 and not buffered.startswith(b"HTTP/1."):
                    raise RemoteProtocolError("not an HTTP/1.x response: %r" % buffered[:40])
                self._head = buffered
                return -1
        else:
            buffered = _window(data, pos, size, MAX_RESPONSE_HEAD_BYTES)
            offset = 0
        head = parse_response_head(buffered)
        if head is None:
            self._head = bytes(buffered)
            return -1
        self._head = b""
        raw = bytes(buffered[:head.length])
        pos += head.length - offset
        method, upgrade = self._expected[0]
        status = head.status
        if 100 <= status < 200 and status != 101:
            events.append(Interim(status, raw))
            return pos
        tokens = _connection_tokens(head.headers)
        keep_alive = "close" not in tokens and (head.version == "HTTP/1.1" or "keep-alive" in tokens)
        self.status = status
        if (status == 101 and upgrade) or (method == "CONNECT" and 200 <= status < 300):
            events.append(Response(status, keep_alive, head.length, raw, False))
            self._expected.pop(0)
            self._body.state = _RAW
            self.raw = True
            events.append(END)
            events.append(UPGRADED)
            return pos
        if status == 101:
            raise RemoteProtocolError("101 Switching Protocols without an upgrade request")
        bodiless = method == "HEAD" or status in (204, 304)
        chunked, length = (False, 0) if bodiless else _framing(head.headers, "response", False)
        until_close = not chunked and length is None
        if until_close:
            keep_alive = False    # the body runs until the server closes
        events.append(Response(status, keep_alive, head.length, raw, until_close))
        if not keep_alive:
            self.keep_alive = False
        if bodiless:
            self._finished(events)
            return pos
        if not chunked and length is None:
            self._body.state = _UNTIL_CLOSE
            return pos
        if self._body.start(chunked, length):
            self._finished(events)
        return pos

    def _finished(self, events):
        events.append(END)
        self._expected.pop(0)
        self._body.state = _HEAD if self.keep_alive else _DONE
