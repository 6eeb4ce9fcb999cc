"""A WebSocket connection used as a byte stream: GOST v3's ``ws`` transport.

``wss`` is the same over a TLS socket-like object.  Wire rules live in
:mod:`gostgev.codec.ws`; this module does the I/O::

    ws_accept(sock, path)     server: read the GET (bounded, timed), 404/400 or 101
    ws_connect(sock, host)    client: send the GET, read and check the 101
    WsSocket                  recv / recv_into / sendall / shutdown / close
    ├── recv: binary and text payloads in order, fragments joined into the
    │   stream; pings queued for a pong, pongs ignored; close frame or EOF -> b""
    ├── sendall: binary frames of at most FRAME_SIZE, masked by a client
    ├── one write lock; the reader never waits for it: pongs go to a queue
    │   that a short-lived flusher greenlet or the next sendall frame drains
    └── keepalive greenlet (only if enabled): a ping every interval

Half-close.  ``shutdown(SHUT_WR)`` sends one close frame (1000); after it
``sendall`` raises BrokenPipeError while ``recv`` keeps returning the peer's
data until its close frame.  A received close frame makes ``recv`` return
b"" but is answered only when we shut down writing (``shutdown(SHUT_WR)`` or
``close()``), so the reverse direction can finish, as a TCP half-close
would.  GOST's gorilla peer never starts a close handshake (its Close drops
TCP) and answers ours at once, so against GOST a close ends both ways.
``shutdown(SHUT_RDWR)`` is an abort: no close frame, the socket is shut.
"""

import logging
import os
import socket as _stdsocket
import time

import gevent
from gevent.lock import Semaphore

from gostgev.addr import format_address
from gostgev.codec import ws as wire
from gostgev.codec.http import parse_request_head, simple_response
from gostgev.errors import RemoteProtocolError
from gostgev.netio.close import close_gently
from gostgev.netio.peek import PeerClosed, read_head, with_prefix
from gostgev.netio.wrapped import Wrapped

__all__ = ["DEFAULT_PATH", "FRAME_SIZE", "WsSocket", "WsHandshakeError", "WsProtocolError", "ws_accept",
           "ws_connect"]

log = logging.getLogger(__name__)

#: GOST's default for both the ws listener and dialer
DEFAULT_PATH = "/ws"
#: payload bytes per frame we send.  A peer has to buffer a whole frame
#: before it can pass any of it on, and pongs wait for the frame in flight;
#: 64 KiB matches GOST's copy buffer and the 14-byte header is noise at it.
FRAME_SIZE = 64 * 1024
#: bytes asked of the kernel per read
RECV_SIZE = 256 * 1024
#: the most close() waits to get a courtesy close frame out
CLOSE_WAIT = 1.0


class WsHandshakeError(ConnectionError):
    """The opening handshake failed; ``status`` is the HTTP status involved, if any."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class WsProtocolError(ConnectionError):
    """The peer sent bytes that are not valid WebSocket frames."""


class WsSocket(Wrapped):
    """Socket-like stream over an upgraded connection; see the module docstring.

    ``keepalive`` (seconds) pings the peer that often, and drops the
    connection when a read has waited 2 intervals with nothing arriving
    (GOST's dialer waits 2 intervals for a pong).
    """

    def __init__(self, sock, *, client, max_payload=wire.MAX_FRAME_PAYLOAD, keepalive=None):
        self._sock = sock
        self._client = client
        self._parser = wire.FrameParser(max_payload, expect_masked=not client)
        self._pending = None       # memoryview: the unreturned tail of a data frame
        self._read_done = False    # close frame or EOF seen
        self._close_sent = False
        self._error = None         # why the connection was aborted
        self._control = {}         # opcode -> encoded frame waiting for the writer
        self._flusher = None
        self._write_lock = Semaphore()
        self._waiting_since = None  # when the pending sock.recv began, for keepalive
        self._keepalive = gevent.spawn(self._keepalive_loop, keepalive) if keepalive else None

    def _frame(self, opcode, payload):
        # RFC 6455 10.3: a fresh unpredictable mask per client frame.
        return wire.encode_frame(opcode, payload, mask=os.urandom(4) if self._client else None)

    # -- reading ---------------------------------------------------------------

    def recv(self, n):
        """Up to ``n`` bytes of the stream; b"" after the peer's close frame or EOF."""
        if self._pending:
            data, self._pending = bytes(self._pending[:n]), self._pending[n:]
            return data
        parts, size = [], 0
        while size < n and not self._read_done:
            frame = self._next_frame()
            if frame is None:
                if parts:  # return what is here rather than wait for more
                    break
                self._fill()
            elif frame.opcode in (wire.OP_BINARY, wire.OP_TEXT, wire.OP_CONTINUATION):
                payload = frame.payload
                if size + len(payload) > n:
                    # A view, so small reads of a big frame copy each byte once.
                    payload, self._pending = payload[:n - size], memoryview(payload)[n - size:]
                parts.append(payload)
                size += len(payload)
            elif frame.opcode == wire.OP_PING:
                self._queue_control(wire.OP_PONG, self._frame(wire.OP_PONG, frame.payload))
            elif frame.opcode == wire.OP_CLOSE:
                self._read_done = True
                self._peer_close(frame.payload)
        return b"".join(parts)

    def recv_into(self, buffer, nbytes=0):
        data = self.recv(nbytes or len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def _next_frame(self):
        try:
            return next(self._parser, None)
        except RemoteProtocolError as exc:
            self._protocol_error(exc)

    def _peer_close(self, payload):
        try:
            wire.parse_close_payload(payload)
        except RemoteProtocolError as exc:
            self._protocol_error(exc)

    def _protocol_error(self, exc):
        log.debug("websocket protocol error from %s: %s", _peer(self._sock), exc)
        self._read_done = True
        self._queue_control(wire.OP_CLOSE, self._frame(wire.OP_CLOSE, wire.close_payload(
            wire.CLOSE_PROTOCOL_ERROR)))
        raise WsProtocolError("websocket: %s" % exc) from exc

    def _fill(self):
        self._waiting_since = time.monotonic()
        try:
            data = self._sock.recv(RECV_SIZE)
        except OSError:
            if self._error:  # gevent's shutdown() cancels the wait with EBADF: say why instead
                raise ConnectionResetError(self._error) from None
            raise
        finally:
            self._waiting_since = None
        if self._error:
            raise ConnectionResetError(self._error)
        if not data:
            self._read_done = True
            if self._parser.pending:
                raise ConnectionResetError("websocket: connection closed inside a frame")
            return
        self._parser.add_data(data)

    # -- writing ---------------------------------------------------------------

    def send(self, data, flags=0):
        """All of ``data`` or an error: WebSocket frames cannot be half sent."""
        self.sendall(data)
        return len(memoryview(data).cast("B"))

    def sendall(self, data):
        view = memoryview(data).cast("B")
        with self._write_lock:
            if not view:
                self._check_writable()
            for start in range(0, len(view), FRAME_SIZE):
                self._check_writable()  # a close may have gone out with the last pong
                self._sock.sendall(self._frame(wire.OP_BINARY, view[start:start + FRAME_SIZE]))
                if self._control:  # a pong waits at most one frame
                    self._send_control_locked()

    def _check_writable(self):
        if self._error:
            raise BrokenPipeError(self._error)
        if self._close_sent:
            raise BrokenPipeError("websocket: close frame already sent")

    def _queue_control(self, opcode, frame):
        # Only the latest pong matters (RFC 6455 5.5.3), so a dict coalesces.
        self._control[opcode] = frame
        if self._flusher is None:
            self._flusher = gevent.spawn(self._flush_control)

    def _flush_control(self):
        try:
            while self._control and not self._close_sent and not self._error:
                with self._write_lock:
                    self._send_control_locked()
        except OSError as exc:
            # A frame may be cut: the stream is unusable; recv and sendall say why.
            self._error = self._error or "websocket: write failed: %s" % exc
        finally:
            if self._error or self._close_sent:
                self._control.clear()  # nothing may follow a close frame
            self._flusher = None

    def _send_control_locked(self):
        while self._control and not self._close_sent:
            opcode = next(iter(self._control))
            self._sock.sendall(self._control.pop(opcode))
            self._close_sent = opcode == wire.OP_CLOSE

    def _send_close_locked(self):
        if not self._close_sent and not self._error:
            self._sock.sendall(self._frame(wire.OP_CLOSE, wire.close_payload(wire.CLOSE_NORMAL)))
            self._close_sent = True

    def _keepalive_loop(self, interval):
        while not self._close_sent and not self._error:
            gevent.sleep(interval)
            since = self._waiting_since
            if since is not None and time.monotonic() - since > 2 * interval:
                log.debug("websocket keepalive: nothing from %s in %.1fs", _peer(self._sock), 2 * interval)
                self._abort("websocket: keepalive timeout")
                return
            self._queue_control(wire.OP_PING, self._frame(wire.OP_PING, b""))

    def _abort(self, reason):
        self._error = self._error or reason
        try:
            self._sock.shutdown(_stdsocket.SHUT_RDWR)  # wakes a blocked recv or sendall
        except OSError:
            pass

    # -- socket API --------------------------------------------------------------

    def shutdown(self, how):
        if how == _stdsocket.SHUT_RD:
            self._read_done = True
            return
        if how == _stdsocket.SHUT_RDWR:
            self._abort("websocket: shut down")
            return
        with self._write_lock:
            self._send_close_locked()

    def close(self):
        for greenlet in (self._keepalive, self._flusher):
            if greenlet is not None:
                greenlet.kill(block=False)
        if not self._close_sent and not self._error and not self._write_lock.locked():
            try:
                with gevent.Timeout(CLOSE_WAIT, False), self._write_lock:
                    self._send_close_locked()
            except OSError:
                pass
        self._error = self._error or "websocket: closed"
        self._sock.close()


def _peer(sock):
    try:
        return format_address(sock.getpeername())
    except (OSError, TypeError, ValueError):
        return "?"


def ws_accept(sock, path=DEFAULT_PATH, timeout=10.0, extra_headers=(), **options):
    """Server side of the handshake; returns a :class:`WsSocket` or raises WsHandshakeError.

    A request for another path gets 404, anything but a valid upgrade gets
    400; either is sent and the socket drained briefly (the caller closes it).
    ``options`` go to WsSocket (``keepalive``, ``max_payload``).
    """
    with gevent.Timeout(timeout, WsHandshakeError("no websocket upgrade request within %ss" % timeout)):
        try:
            head, data = read_head(sock, parse_request_head, trigger=b"\n")
        except PeerClosed:
            raise WsHandshakeError("peer closed before sending a websocket upgrade request") from None
        except RemoteProtocolError as exc:
            status, reason = 400, str(exc)
        else:
            if not wire.path_matches(path, head.target):
                status, reason = 404, "404 page not found"  # what GOST's Go ServeMux answers
            else:
                try:
                    key = wire.check_client_handshake(head)
                except RemoteProtocolError as exc:
                    status, reason = 400, str(exc)
                else:
                    sock.sendall(wire.server_handshake_response(key, extra_headers))
                    # Frames the client sent right behind its request are kept.
                    return WsSocket(with_prefix(sock, data[head.length:]), client=False, **options)
    close_gently(sock, simple_response(status, reason))
    raise WsHandshakeError(reason, status)


def ws_connect(sock, host, path=DEFAULT_PATH, timeout=10.0, extra_headers=(), **options):
    """Client side of the handshake on a connected ``sock``; ``host`` is the Host header."""
    key = wire.new_key()
    request = wire.client_handshake(host, path, key, extra_headers)
    with gevent.Timeout(timeout, WsHandshakeError("no websocket upgrade response within %ss" % timeout)):
        sock.sendall(request)
        try:
            length, data = read_head(sock, wire.response_head_end, trigger=b"\n")
            wire.check_server_handshake(data[:length], key)
        except PeerClosed:
            raise WsHandshakeError("server closed the connection during the websocket handshake") from None
        except RemoteProtocolError as exc:
            raise WsHandshakeError(str(exc), getattr(exc, "status", None)) from None
    return WsSocket(with_prefix(sock, data[length:]), client=True, **options)
