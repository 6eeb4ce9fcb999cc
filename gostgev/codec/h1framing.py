"""HTTP/1.x framing for the trackers of :mod:`gostgev.codec.h1`: the events they
report, how a message's body is delimited (RFC 9112 6-7), and the body reader
both directions share.  Sans-IO: bytes in, events out.
"""

import re
from typing import NamedTuple

from gostgev.codec.http import MAX_REQUEST_HEAD_BYTES, RequestHead
from gostgev.errors import RemoteProtocolError

__all__ = ["Request", "Response", "Interim", "Data", "END", "UPGRADED", "MAX_CHUNK_LINE", "MAX_TRAILER_BYTES"]

#: A chunk-size line is hex digits plus optional extensions, which nothing
#: we know of uses; 4 KiB is far beyond any real one and bounds what a
#: hostile client makes us scan per line.
MAX_CHUNK_LINE = 4096

#: Trailers follow the head's limit: they are header lines too.
MAX_TRAILER_BYTES = MAX_REQUEST_HEAD_BYTES


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


_NO_TOKENS = frozenset()
#: the lengths of "connection", "content-length" and "transfer-encoding": other names are not lowered
_FRAMING_NAME_LENGTHS = frozenset((10, 14, 17))


def _scan_headers(headers):
    """``(Connection tokens, Transfer-Encoding codings, Content-Length values)`` in one pass.

    The tokens and codings are lower case.  Only names of the right length
    are compared, so a typical head costs a few ``lower()`` calls, not one
    per header and question.
    """
    tokens, encodings, lengths = _NO_TOKENS, [], []
    for name, value in headers:
        if len(name) not in _FRAMING_NAME_LENGTHS:
            continue
        lower = name.lower()
        if lower == "connection":
            if tokens is _NO_TOKENS:
                tokens = set()
            tokens.update(t.strip().lower() for t in value.split(","))
        elif lower == "content-length":
            lengths.append(value)
        elif lower == "transfer-encoding":
            encodings.extend(e.strip().lower() for e in value.split(","))
    return tokens, encodings, lengths


def _framing(encodings, lengths, what, request):
    """``(chunked, length)`` from Transfer-Encoding and Content-Length (RFC 9112 6).

    ``length`` is None when no Content-Length was given.  Anything that
    could be read two ways raises.
    """
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
