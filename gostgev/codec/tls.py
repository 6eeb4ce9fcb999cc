"""Sniff a TLS ClientHello for its SNI and ALPN without terminating TLS.

Wire layout (RFC 8446 5.1 and 4.1.2, RFC 6066 3, RFC 7301 3.1)::

    record     type(1)=0x16  version(2)  length(2)  fragment[length]
               one handshake message may span several records, and the
               fragments concatenate into:
    handshake  msg_type(1)=1  length(3)  body[length]
    body       legacy_version(2)  random(32)
               session_id       len(1) <= 32    bytes
               cipher_suites    len(2) even, >= 2
               compression      len(1) >= 1
               [extensions      len(2) = rest of body
                   type(2)  len(2)  data[len]  ...]
    server_name (type 0)   list len(2), entries: name_type(1) len(2) name
    alpn        (type 16)  list len(2), entries: len(1) name

:func:`parse_client_hello` has the three outcomes of every parser in
:mod:`gostgev.codec`: a :class:`ClientHello`, ``None`` for "need more data",
or :class:`~gostgev.errors.RemoteProtocolError`.  It is a pure function of the
buffered bytes, so callers simply call it again after each read.
"""

import re
from dataclasses import dataclass

from gostgev.addr import normalize_host
from gostgev.errors import RemoteProtocolError

__all__ = ["MAX_CLIENT_HELLO_BYTES", "ClientHello", "looks_like_tls", "parse_client_hello"]

# Bounds the bytes buffered per sniffing connection: records carrying the
# hello, headers included.  Real hellos are ~0.5-2 KB even with post-quantum
# key shares, and GOST itself reads only a single record, so 64 KiB accepts
# any plausible client while keeping a stalled sniff cheap.
MAX_CLIENT_HELLO_BYTES = 64 * 1024

# RFC 8446 5.1: a plaintext fragment is at most 2^14 bytes; "MUST NOT" exceed it.
MAX_RECORD_BYTES = 2**14

# RFC 1035 2.3.4 caps a name at 255 octets.
MAX_HOST_NAME_BYTES = 255

RECORD_HEADER_BYTES = 5
HANDSHAKE_HEADER_BYTES = 4
CONTENT_HANDSHAKE = 0x16
HANDSHAKE_CLIENT_HELLO = 1
EXT_SERVER_NAME = 0
EXT_ALPN = 16
NAME_TYPE_HOST_NAME = 0

# Underscore is not legal in host names but is common in real ones; anything
# else outside this set cannot be a name we would route on.
_HOST_NAME = re.compile(rb"[A-Za-z0-9._-]+")


def looks_like_tls(data):
    """Cheap first-bytes test: True, False, or None while fewer than 3 bytes decide.

    SSLv3 (record version 0x0300) is deliberately False: nothing we proxy to
    speaks it, and treating it as TLS would only feed the full parser garbage.
    """
    if not data:
        return None
    if data[0] != CONTENT_HANDSHAKE:
        return False
    if len(data) < 2:
        return None
    if data[1] != 0x03:
        return False
    if len(data) < 3:
        return None
    return 0x01 <= data[2] <= 0x04


@dataclass(frozen=True, slots=True)
class ClientHello:
    """What a ClientHello tells a router; ``length`` counts the records that carried it."""

    sni: str | None
    alpn: tuple[str, ...]
    length: int


def parse_client_hello(data):
    """Parse the ClientHello at the start of ``data``.

    Returns a :class:`ClientHello` once every record carrying it is buffered,
    ``None`` while more bytes are needed, and raises
    :class:`RemoteProtocolError` if the bytes cannot be a ClientHello.  Bytes
    after those records (pipelined data) are ignored.  At least
    :data:`MAX_CLIENT_HELLO_BYTES` of input never yields ``None``.
    """
    # Nothing past the limit is ever read; slicing first bounds the copy.
    data = bytes(data[:MAX_CLIENT_HELLO_BYTES])
    handshake = bytearray()
    pos = 0
    while True:
        if pos + RECORD_HEADER_BYTES > MAX_CLIENT_HELLO_BYTES:
            raise RemoteProtocolError(f"ClientHello exceeds {MAX_CLIENT_HELLO_BYTES} bytes")
        header = data[pos:pos + RECORD_HEADER_BYTES]
        if header and header[0] != CONTENT_HANDSHAKE:
            raise RemoteProtocolError(f"expected a TLS handshake record, got content type {header[0]}")
        if len(header) < RECORD_HEADER_BYTES:
            return None
        size = int.from_bytes(header[3:5], "big")
        if not 0 < size <= MAX_RECORD_BYTES:
            raise RemoteProtocolError(f"bad TLS handshake record length {size}")
        end = pos + RECORD_HEADER_BYTES + size
        if end > MAX_CLIENT_HELLO_BYTES:
            raise RemoteProtocolError(f"ClientHello exceeds {MAX_CLIENT_HELLO_BYTES} bytes")
        handshake += data[pos + RECORD_HEADER_BYTES:end]
        body_len = _check_handshake_header(handshake)
        if end > len(data):
            return None
        pos = end
        if body_len is not None and len(handshake) >= HANDSHAKE_HEADER_BYTES + body_len:
            body = bytes(handshake[HANDSHAKE_HEADER_BYTES:HANDSHAKE_HEADER_BYTES + body_len])
            sni, alpn = _parse_body(body)
            return ClientHello(sni=sni, alpn=alpn, length=pos)


def _check_handshake_header(handshake):
    """Fail fast on a wrong type or oversized length; return the body length once known."""
    if handshake and handshake[0] != HANDSHAKE_CLIENT_HELLO:
        raise RemoteProtocolError(f"expected a ClientHello, got handshake type {handshake[0]}")
    if len(handshake) < HANDSHAKE_HEADER_BYTES:
        return None
    body_len = int.from_bytes(handshake[1:4], "big")
    if RECORD_HEADER_BYTES + HANDSHAKE_HEADER_BYTES + body_len > MAX_CLIENT_HELLO_BYTES:
        raise RemoteProtocolError(
            f"ClientHello body of {body_len} bytes cannot fit in {MAX_CLIENT_HELLO_BYTES} bytes of records")
    return body_len


class _Reader:
    """A cursor over a complete message: running short is an error, not "need more"."""

    __slots__ = ("buf", "pos", "where")

    def __init__(self, buf, where):
        self.buf, self.pos, self.where = buf, 0, where

    def take(self, n, what):
        if n > len(self.buf) - self.pos:
            raise RemoteProtocolError(f"{self.where}: {what} needs {n} bytes, {self.left} left")
        chunk = self.buf[self.pos:self.pos + n]
        self.pos += n
        return chunk

    def uint(self, n, what):
        return int.from_bytes(self.take(n, what), "big")

    def vector(self, len_bytes, what):
        return self.take(self.uint(len_bytes, what + " length"), what)

    @property
    def left(self):
        return len(self.buf) - self.pos


def _parse_body(body):
    r = _Reader(body, "ClientHello")
    r.take(2 + 32, "legacy_version and random")
    if len(r.vector(1, "session_id")) > 32:
        raise RemoteProtocolError("ClientHello: session_id longer than 32 bytes")
    suites = r.vector(2, "cipher_suites")
    if not suites or len(suites) % 2:
        raise RemoteProtocolError(f"ClientHello: cipher_suites length {len(suites)} is not a positive even number")
    if not r.vector(1, "compression_methods"):
        raise RemoteProtocolError("ClientHello: no compression_methods")
    sni, alpn = None, ()
    if not r.left:
        return sni, alpn  # extensions are optional before TLS 1.3
    block = r.vector(2, "extensions")
    if r.left:
        raise RemoteProtocolError(f"ClientHello: {r.left} bytes after the extensions")
    exts = _Reader(block, "ClientHello extensions")
    seen = set()
    while exts.left:
        ext_type = exts.uint(2, "extension type")
        ext_data = exts.vector(2, f"extension {ext_type}")
        if ext_type in seen:
            raise RemoteProtocolError(f"ClientHello: duplicate extension {ext_type}")
        seen.add(ext_type)
        if ext_type == EXT_SERVER_NAME:
            sni = _parse_server_name(ext_data)
        elif ext_type == EXT_ALPN:
            alpn = _parse_alpn(ext_data)
    return sni, alpn


def _parse_server_name(ext_data):
    if not ext_data:
        return None  # the empty form servers echo back; tolerate it from clients too
    r = _Reader(_whole_list(ext_data, "server_name"), "server_name")
    while r.left:
        name_type = r.uint(1, "name_type")
        name = r.vector(2, "name")
        if name_type != NAME_TYPE_HOST_NAME:
            continue
        if len(name) > MAX_HOST_NAME_BYTES:
            raise RemoteProtocolError(f"server_name: host name longer than {MAX_HOST_NAME_BYTES} bytes")
        if name and not _HOST_NAME.fullmatch(name):
            raise RemoteProtocolError(f"server_name: invalid host name {name[:64]!r}")
        return normalize_host(name.decode("ascii")) or None
    return None


def _parse_alpn(ext_data):
    r = _Reader(_whole_list(ext_data, "alpn"), "alpn")
    names = []
    while r.left:
        name = r.vector(1, "protocol name")
        if not name:
            raise RemoteProtocolError("alpn: empty protocol name")
        # Names are opaque bytes (RFC 7301 3.1) and GREASE values (RFC 8701)
        # are not ASCII; escape rather than reject a hello a server accepts.
        names.append(name.decode("ascii", "backslashreplace"))
    return tuple(names)


def _whole_list(ext_data, where):
    """Unwrap a 2-byte-length list that must exactly fill its extension."""
    r = _Reader(ext_data, where)
    items = r.vector(2, "list")
    if r.left:
        raise RemoteProtocolError(f"{where}: {r.left} bytes after the list")
    return items
