"""Read a protocol head off a socket before deciding where it goes.

The bytes read are kept and handed back, so the caller can replay them to
the chosen upstream: nothing is consumed from the client's point of view.
Each read is bounded in size (by the parser's own limit) and in time (one
deadline for the whole head, so a client trickling a byte at a time cannot
hold the connection longer than a client that sends nothing).
"""

from dataclasses import dataclass

import gevent
from gevent.socket import socket as GeventSocket

from gostgev.codec import sniff as detect_mod
from gostgev.codec.http import parse_request_head
from gostgev.codec.tls import parse_client_hello
from gostgev.errors import RemoteProtocolError

__all__ = ["SniffTimeout", "PeerClosed", "MalformedHead", "Sniffed", "sniff", "read_head", "with_prefix",
           "unwrap_prefix", "bare_socket"]

#: bytes asked of the kernel per read while sniffing; a typical head fits
READ_SIZE = 16 * 1024


class SniffTimeout(Exception):
    """The client did not send a complete head in time."""


class PeerClosed(Exception):
    """The client closed the connection before a complete head."""


class MalformedHead(Exception):
    """The client's HTTP request head or TLS ClientHello is invalid."""

    def __init__(self, protocol, error):
        super().__init__("malformed %s head: %s" % (protocol, error))
        self.protocol = protocol
        self.error = error


@dataclass(frozen=True, slots=True)
class Sniffed:
    protocol: str       #: "http", "tls" or "" (anything else)
    host: str | None    #: HTTP Host / TLS SNI, normalised, no port
    head: object        #: RequestHead, ClientHello or None
    data: bytes         #: every byte read so far, to replay upstream


def read_head(sock, parse, data=b"", trigger=None):
    """Read until ``parse(data)`` gives a value; return ``(value, data)``.

    ``parse`` raises ``RemoteProtocolError`` on bad or oversized input, so
    this loop is bounded by the parser's limit.  ``trigger``, if given, is a
    byte string that must appear in a new chunk before parsing is retried
    (an HTTP head can only complete on a newline).
    """
    buf = bytearray(data)
    value = parse(bytes(buf)) if buf else None
    while value is None:
        chunk = sock.recv(READ_SIZE)
        if not chunk:
            raise PeerClosed()
        buf += chunk
        if trigger is None or trigger in chunk:
            value = parse(bytes(buf))
    return value, bytes(buf)


def sniff(sock, timeout):
    """Detect the protocol and read its head, within ``timeout`` seconds.

    Raises :class:`SniffTimeout`, :class:`PeerClosed` or
    :class:`MalformedHead`.  A head that is already there when the
    connection is accepted (the common case) is parsed without arming a
    timer.
    """
    data = _read_ready(sock)
    if data:
        sniffed = _sniffed(data)
        if sniffed is not None:
            return sniffed
    with gevent.Timeout(timeout, SniffTimeout):
        buf = bytearray(data)
        while True:
            chunk = sock.recv(READ_SIZE)
            if not chunk:
                raise PeerClosed()
            buf += chunk
            # An HTTP head can only complete on a newline: a trickling client costs no parse per byte.
            if b"\n" in chunk or detect_mod.detect(buf) != detect_mod.HTTP:
                sniffed = _sniffed(bytes(buf))
                if sniffed is not None:
                    return sniffed


def _read_ready(sock):
    """What a plain socket holds already, without waiting (b"" when nothing yet)."""
    if type(sock) is not GeventSocket:
        return b""
    try:
        data = sock._sock.recv(READ_SIZE)
    except BlockingIOError:
        return b""
    if not data:
        raise PeerClosed()
    return data


def _sniffed(data):
    """The :class:`Sniffed` head at the start of ``data``, or None while it is incomplete."""
    protocol = detect_mod.detect(data)
    if protocol is None:
        return None
    try:
        if protocol == detect_mod.TLS:
            head = parse_client_hello(data)
            return None if head is None else Sniffed(protocol, head.sni, head, data)
        if protocol == detect_mod.HTTP:
            head = parse_request_head(data)
            return None if head is None else Sniffed(protocol, head.host, head, data)
    except RemoteProtocolError as exc:
        raise MalformedHead(protocol, exc) from None
    return Sniffed(protocol, None, None, data)


class _Prefixed:
    """A connection whose first reads return bytes that were already read."""

    def __init__(self, conn, data):
        self._conn = conn
        self._data = data

    def recv(self, n):
        if self._data:
            data, self._data = self._data[:n], self._data[n:]
            return data
        return self._conn.recv(n)

    def recv_into(self, buffer, nbytes=0):
        if self._data:
            n = min(len(self._data), nbytes or len(buffer))
            buffer[:n] = self._data[:n]
            self._data = self._data[n:]
            return n
        return self._conn.recv_into(buffer, nbytes)

    def __getattr__(self, name):
        return getattr(self._conn, name)


def with_prefix(conn, data):
    """``conn``, or a wrapper replaying ``data`` before reading ``conn`` again."""
    return _Prefixed(conn, data) if data else conn


def unwrap_prefix(conn):
    """``(bare connection, bytes it still had to replay)``."""
    data = b""
    while type(conn) is _Prefixed:
        data, conn._data = data + conn._data, b""
        conn = conn._conn
    return conn, data


def write_socket(conn):
    """The plain gevent socket that writes to ``conn`` go to (replayed bytes are only read), or None."""
    while type(conn) is _Prefixed:
        conn = conn._conn
    return conn if type(conn) is GeventSocket else None


def bare_socket(conn):
    """The plain gevent socket under ``conn`` if nothing is left to replay, else None."""
    while type(conn) is _Prefixed and not conn._data:
        conn = conn._conn
    return conn if type(conn) is GeventSocket else None
