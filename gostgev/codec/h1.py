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

The events and the body reader are in :mod:`gostgev.codec.h1framing`, head
parsing in :mod:`gostgev.codec.http`; this module ties them together.
"""

import re

from gostgev.addr import host_without_port, normalize_host
from gostgev.codec.h1framing import (
    _DONE,
    _HEAD,
    _HOLD,
    _RAW,
    _UNTIL_CLOSE,
    END,
    MAX_CHUNK_LINE,
    UPGRADED,
    Data,
    Interim,
    Request,
    Response,
    _Body,
    _framing,
    _scan_headers,
    _still_partial,
    _window,
)
from gostgev.codec.http import (
    MAX_REQUEST_HEAD_BYTES,
    MAX_RESPONSE_HEAD_BYTES,
    ResponseHead,
    parse_request_head,
    parse_response_head,
)
from gostgev.errors import RemoteProtocolError

__all__ = [
    "Request", "Response", "Interim", "Data", "END", "UPGRADED", "RequestTracker", "ResponseTracker",
    "MAX_CHUNK_LINE", "MAX_RESPONSE_HEAD_BYTES", "parse_response_head", "ResponseHead",
]

# How much of a feed a head parse looks at (the head limit plus the h2 preface tail).
_HEAD_WINDOW = MAX_REQUEST_HEAD_BYTES + 8

_LEADING_BLANK_LINES = re.compile(rb"(?:\r?\n)*")


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

    def feed(self, data, known=None):
        """Events for the bytes ``data`` (as ``recv`` returns them); ``b""`` is EOF.

        ``known``: the head that ``parse_request_head(data)`` already gave
        (a sniffer's), taken instead of parsing it again when ``data``
        starts a request.
        """
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
        return self._feed(data, len(data), known)

    def _feed(self, data, size, known=None):
        events = []
        body = self._body
        pos = 0
        while pos < size:
            state = body.state
            if state == _HEAD:
                pos = self._read_head(data, pos, size, events, known if pos == 0 else None)
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

    def _read_head(self, data, pos, size, events, known=None):
        """Read a head from ``pos``; the position after it, or -1 when it is not complete."""
        if self._head:
            offset = len(self._head)
            buffered = self._head + bytes(data[pos:min(size, pos + _HEAD_WINDOW)])
            # An h2 preface's head is complete before its "SM" tail arrives:
            # parsed again on every byte (six at most), never taken as partial.
            if not buffered.startswith(b"PRI ") and \
                    _still_partial(offset, buffered, MAX_REQUEST_HEAD_BYTES, "request"):
                # A bad request line is refused once it is complete; blank lines
                # before it (RFC 9112 2.2), which a first feed of a lone CR left
                # here, are no request line.
                if not self._line_checked and buffered.find(b"\n", offset) >= 0 \
                        and b"\n" in buffered.lstrip(b"\r\n"):
                    self._line_checked = True
                    parse_request_head(buffered)
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
            if start or (known is not None and known.length > len(buffered)):
                known = None
        head = known if known is not None and not offset else parse_request_head(buffered)
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
        tokens, encodings, lengths = _scan_headers(head.headers)
        chunked, length = _framing(encodings, lengths, "request", True)
        if chunked and head.version == "HTTP/1.0":
            # RFC 9112 6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing
            raise RemoteProtocolError("HTTP/1.0 request with Transfer-Encoding")
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
        tokens, encodings, lengths = _scan_headers(head.headers)
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
        chunked, length = (False, 0) if bodiless else _framing(encodings, lengths, "response", False)
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
