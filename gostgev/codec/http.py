"""Sniff an HTTP/1.x request head for its routing host; build tiny replies.

Wire layout (RFC 7230 3, 3.2, 5.3, 5.4 and RFC 7540 3.5)::

    head          *(blank line)  request-line  *(header-line)  blank line
                  every line ends in CRLF; a bare LF is accepted too
    request-line  method SP target SP HTTP/1.0 | HTTP/1.1
    header-line   name ":" OWS value OWS     (name is a token, no space before ":")
    routing host  absolute-form target   GET http://host[:port]/path
                  or CONNECT's target    CONNECT host:port
                  else the one Host header
    h2 preface    PRI * HTTP/2.0 CRLF CRLF  SM CRLF CRLF   (prior knowledge)

:func:`parse_request_head` has the three outcomes of every parser in
:mod:`gostgev.codec`: a :class:`RequestHead`, ``None`` for "need more data",
or :class:`~gostgev.errors.RemoteProtocolError`.  It is a pure function of the
buffered bytes, so callers simply call it again after each read.  The body,
if any, is neither parsed nor consumed: the whole buffer is replayed upstream.
"""

import functools
import ipaddress
import re
from dataclasses import dataclass
from http import HTTPStatus
from typing import NamedTuple

from gostgev.addr import host_without_port, normalize_host, split_host_port
from gostgev.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "METHODS", "MAX_REQUEST_HEAD_BYTES", "MAX_HEADERS", "RequestHead",
    "looks_like_http", "parse_request_head", "simple_response", "MAX_RESPONSE_HEAD_BYTES", "ResponseHead",
    "parse_response_head",
]

METHODS = frozenset({
    "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH", "CONNECT", "TRACE",
    "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK",  # WebDAV, RFC 4918
    "PRI",  # the HTTP/2 prior-knowledge preface, "PRI * HTTP/2.0"
})

# nginx reads a head into a 1 KiB buffer plus up to four 8 KiB
# large_client_header_buffers, so ~33 KiB is what real sites already accept;
# fat cookie jars are what gets near it.  The bound is also the most one
# sniffing connection can make us buffer and rescan before we give up.
MAX_REQUEST_HEAD_BYTES = 32 * 1024

# Apache's LimitRequestFields default.  Browsers send 10-30; hundreds of
# tiny headers only serve to make us allocate a tuple each.
MAX_HEADERS = 100

# Errors quote the offending text, cut short so a hostile head cannot flood the log.
_QUOTE_CHARS = 100

_SNIFF_MATCHES = tuple(m.encode("ascii") + b" " for m in METHODS)
_SNIFF_PREFIXES = frozenset(p[:i] for p in _SNIFF_MATCHES for i in range(len(p)))
_SNIFF_BYTES = max(map(len, _SNIFF_MATCHES))

_TOKEN = r"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
# The target may carry obs-text (raw UTF-8 paths are common), never CTLs or SP.
_REQUEST_LINE = re.compile(r"(%s) ([^\x00-\x20\x7f]+) (HTTP/[0-9]\.[0-9])" % _TOKEN)
_HEADER_LINE = re.compile(r"(%s):(.*)" % _TOKEN, re.DOTALL)
_BAD_VALUE_CHAR = re.compile(r"[\x00\r\n]")
_HOST_CHARS = re.compile(r"[-._~:\[\]0-9A-Za-z]*")
_ABSOLUTE_FORM = re.compile(r"[A-Za-z][-+.0-9A-Za-z]*://([^/?#]*)")
_LEADING_BLANK_LINES = re.compile(rb"(?:\r?\n)*")
_END_OF_HEAD = re.compile(rb"\n\r?\n")
_VERSIONS = frozenset({"HTTP/1.0", "HTTP/1.1"})
_PREFACE_TAIL = b"SM\r\n\r\n"
_LINE_BREAKS = re.compile(r"[\r\n]+")

# The common case in one match: an HTTP/1.x head with CRLF line ends, no
# leading blank lines and well-formed header lines.  Anything else, valid or
# not, goes through the line-by-line parser, which says what is wrong.
_FAST_REQUEST = re.compile(r"(%s) ([^\x00-\x20\x7f]+) (HTTP/1\.[01])\r\n((?:%s:[^\x00\r\n]*\r\n)*)\r\n"
                           % (_TOKEN, _TOKEN))
#: header lines of a head that matched: (name, value without surrounding blanks)
HEADER_PAIRS = re.compile(r"(%s):[ \t]*([^\x00\r\n]*?)[ \t]*\r\n" % _TOKEN)
# The same pairs when no value ends in blanks, the common case: a greedy value
# scans once, where the lazy one above tries the line's end after every character.
_PLAIN_PAIRS = re.compile(r"(%s):[ \t]*([^\x00\r\n]*)\r\n" % _TOKEN)


def header_pairs(block):
    """``(name, value)`` of every ``name: value CRLF`` line of ``block``, values without the
    blanks around them."""
    if " \r\n" in block or "\t\r\n" in block:
        return tuple(HEADER_PAIRS.findall(block))
    return tuple(_PLAIN_PAIRS.findall(block))


def looks_like_http(data):
    """Cheap first-bytes test: does ``data`` start with a known ``METHOD SP``?

    True once it does, False as soon as it cannot, None while ``data`` is a
    proper prefix of one.  Decides within ``len("PROPPATCH ")`` bytes.
    """
    data = bytes(data[:_SNIFF_BYTES])
    if data.startswith(_SNIFF_MATCHES):
        return True
    return None if data in _SNIFF_PREFIXES else False


@dataclass(frozen=True, slots=True)
class RequestHead:
    """A parsed request head; ``length`` counts its bytes up to and including the blank line."""

    method: str
    target: str
    version: str
    headers: tuple[tuple[str, str], ...]  #: names as sent, values stripped of OWS
    host: str | None                      #: routing host, normalised, no port
    length: int

    def header(self, name):
        """The first value of header ``name`` (case-insensitive), or None."""
        name = name.lower()
        for key, value in self.headers:
            if key.lower() == name:
                return value
        return None


def parse_request_head(data):
    """Parse the request head at the start of ``data``.

    Returns a :class:`RequestHead` once the blank line ending the head is
    buffered, ``None`` while more bytes are needed, and raises
    :class:`RemoteProtocolError` if the bytes cannot be a valid head.  A bad
    request line is rejected as soon as it is complete, without waiting for
    the rest.  For the h2 preface the answer waits for ``SM CRLF CRLF`` too,
    though ``length`` covers only its first head.  At least
    :data:`MAX_REQUEST_HEAD_BYTES` of input never yields ``None``.  Bytes
    after the head (a body, pipelining) are ignored.
    """
    if not isinstance(data, bytes):
        data = bytes(data[:MAX_REQUEST_HEAD_BYTES + len(_PREFACE_TAIL)])
    end = data.find(b"\r\n\r\n", 0, MAX_REQUEST_HEAD_BYTES)
    if end > 0:
        text = data[:end + 4].decode("latin-1")
        match = _FAST_REQUEST.fullmatch(text)
        if match is not None and match[2] != "*":
            method, target, version, block = match.groups()
            headers = header_pairs(block)
            if len(headers) <= MAX_HEADERS:
                return RequestHead(method, target, version, headers, _routing_host(method, target, headers),
                                   end + 4)
    # Nothing past the limit (and the preface tail) is ever looked at.
    data = bytes(data[:MAX_REQUEST_HEAD_BYTES + len(_PREFACE_TAIL)])
    start = _LEADING_BLANK_LINES.match(data).end()  # RFC 7230 3.5: tolerate stray CRLFs
    end = _END_OF_HEAD.search(data, start, MAX_REQUEST_HEAD_BYTES)
    if end is None:
        if len(data) >= MAX_REQUEST_HEAD_BYTES:
            raise RemoteProtocolError("request head larger than %d bytes" % MAX_REQUEST_HEAD_BYTES)
        first_line_end = data.find(b"\n", start)
        if first_line_end >= 0:
            _request_line(_chop_cr(data[start:first_line_end].decode("latin-1")))
        return None
    length = end.end()
    lines = [_chop_cr(line) for line in data[start:end.start()].decode("latin-1").split("\n")]
    method, target, version = _request_line(lines[0])
    if len(lines) - 1 > MAX_HEADERS:
        raise RemoteProtocolError("more than %d header lines" % MAX_HEADERS)
    headers = tuple(_header_line(line) for line in lines[1:])
    if version == "HTTP/2.0":
        if headers or start:
            raise RemoteProtocolError("HTTP/2 preface with header lines or after blank lines")
        # Wait for the whole 24-byte preface (clients send it in one go) so
        # that an answer, once given, never turns into an error on more data.
        tail = data[length:length + len(_PREFACE_TAIL)]
        if not _PREFACE_TAIL.startswith(tail):
            raise RemoteProtocolError("invalid HTTP/2 preface %r" % data[:length + len(_PREFACE_TAIL)])
        if len(tail) < len(_PREFACE_TAIL):
            return None
        return RequestHead(method, target, version, headers, None, length)
    return RequestHead(method, target, version, headers, _routing_host(method, target, headers), length)


def _chop_cr(line):
    return line[:-1] if line.endswith("\r") else line


def _request_line(line):
    match = _REQUEST_LINE.fullmatch(line)
    if not match:
        raise RemoteProtocolError("invalid request line %r" % line[:_QUOTE_CHARS])
    method, target, version = match.groups()
    if version == "HTTP/2.0":
        if (method, target) != ("PRI", "*"):
            raise RemoteProtocolError("HTTP/2.0 outside the PRI * preface: %r" % line[:_QUOTE_CHARS])
    elif version not in _VERSIONS:
        raise RemoteProtocolError("unsupported HTTP version %r" % version)
    return method, target, version


def _header_line(line):
    if line[:1] in (" ", "\t"):
        # RFC 7230 3.2.4: obs-fold, or whitespace before the first header;
        # proxies that disagree on unfolding are a request-smuggling vector.
        raise RemoteProtocolError("obsolete line folding in %r" % line[:_QUOTE_CHARS])
    match = _HEADER_LINE.fullmatch(line)
    if not match:
        name, colon, _ = line.partition(":")
        if colon and name != name.rstrip(" \t") and _HEADER_LINE.fullmatch(name.rstrip(" \t") + ":"):
            # RFC 7230 3.2.4 requires a 400: upstreams disagree on what it means.
            raise RemoteProtocolError("whitespace before colon in header %r" % name[:_QUOTE_CHARS])
        raise RemoteProtocolError("invalid header line %r" % line[:_QUOTE_CHARS])
    name, value = match[1], match[2].strip(" \t")
    if _BAD_VALUE_CHAR.search(value):
        raise RemoteProtocolError("invalid character in header value of %s: %r" % (name, value[:_QUOTE_CHARS]))
    return name, value


def _routing_host(method, target, headers):
    """Where the request is addressed, as GOST's ``http.ReadRequest`` sees it."""
    hosts = [value for name, value in headers if name.lower() == "host"]
    if len(hosts) > 1:
        # RFC 7230 5.4 demands a 400: which one an upstream picks is anyone's guess.
        raise RemoteProtocolError("multiple Host headers: %r" % hosts[:4])
    host = _checked_host(hosts[0], "Host header") if hosts else None
    match = _ABSOLUTE_FORM.match(target)
    if match:
        authority = match[1].rpartition("@")[2]  # drop userinfo
    elif method == "CONNECT" and not target.startswith("/"):
        authority = target
    else:
        return host
    # RFC 7230 5.4: the target's authority wins over the Host header.
    return _checked_host(authority, "request target") if authority else host


@functools.lru_cache(maxsize=4096)
def _checked_host(text, where):
    """Validate ``host[:port]`` / ``[v6][:port]``; return the folded host or None if empty.

    Remembered: a site's requests name the same few hosts over and over.
    """
    def bad():
        return RemoteProtocolError("invalid host in %s: %r" % (where, text[:_QUOTE_CHARS]))

    if not _HOST_CHARS.fullmatch(text):
        raise bad()
    try:
        name, port = split_host_port(text)
    except ValueError:
        raise bad() from None
    if port and not port.isdigit():
        raise bad()
    if ":" in name:
        try:
            ipaddress.IPv6Address(name)
        except ValueError:
            raise bad() from None
    elif "[" in name or "]" in name or text.startswith("["):
        raise bad()
    return normalize_host(host_without_port(text)) or None


def simple_response(status, message, *, keep_alive=False):
    """A complete plain-text HTTP/1.1 response whose body is ``message`` and a newline.

    ``message`` may quote client input (a Host value, a path), so line breaks
    are flattened to spaces: the body stays one line whatever was sent.
    """
    if not 200 <= status <= 599 or status in (204, 304):
        raise LocalProtocolError("status %r cannot carry a body" % (status,))
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = ""  # RFC 7230 3.1.2: the reason phrase may be empty
    body = (_LINE_BREAKS.sub(" ", message) + "\n").encode("utf-8", "backslashreplace")
    lines = [
        "HTTP/1.1 %d %s" % (status, reason),
        "Server: gostgev",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Length: %d" % len(body),
    ]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("ascii") + body


#: Response heads: Set-Cookie lists and CSP headers make them bigger than
#: request heads; nginx's proxy_buffer_size default is 4-8 KiB and HAProxy's
#: tune.bufsize 16 KiB, so 64 KiB leaves room without being unbounded.
MAX_RESPONSE_HEAD_BYTES = 64 * 1024

_STATUS_LINE = re.compile(r"HTTP/1\.([01]) ([0-9]{3})(?: [^\x00-\x08\x0a-\x1f\x7f]*)?")
_HEADER_LINE = re.compile(r"([-!#$%&'*+.^_`|~0-9A-Za-z]+):[ \t]*(.*?)[ \t]*")
_BAD_VALUE_CHAR = re.compile(r"[\x00\r\n]")
# A CRLF-terminated head with well-formed lines, in one match (the line-by-line
# parser below handles, and names the faults of, everything else).
_FAST_RESPONSE = re.compile(r"HTTP/1\.([01]) ([0-9]{3})(?: [^\x00-\x08\x0a-\x1f\x7f]*)?\r\n"
                            r"((?:[-!#$%&'*+.^_`|~0-9A-Za-z]+:[^\x00\r\n]*\r\n)*)\r\n")


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
            headers = header_pairs(match[3])
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
