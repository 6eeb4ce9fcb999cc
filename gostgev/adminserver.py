"""The admin plane's HTTP server: a small HTTP/1.1 WSGI server for the web API and /metrics.

It replaces pywsgi on a ``Pool(32)``, where a pool slot was taken at accept
and kept while the head trickled in: 32 clients sending a byte now and then
locked both endpoints out, with no credentials.  Here a connection is in one
of two phases:

* **reading a request** -- in a cheap greenlet outside any bounded pool.  The
  whole head must arrive within ``head_timeout`` of the moment we start
  waiting for it (the accept, or the end of the previous answer on a
  keep-alive connection), however the bytes are spread; the body then gets
  ``body_timeout``.  Connections are capped per client IP (``max_per_ip``:
  over it a new one is closed at once) and in total (``max_connections``:
  the connection that has waited longest for its request makes room);
* **being answered** -- the WSGI app runs holding one of ``max_serving``
  slots; its answer is collected whole (both apps answer small bodies), the
  slot is released and the answer is written within ``write_timeout``.

Request framing is read by :class:`gostgev.codec.h1.RequestTracker`, the
proxy's own parser, so the limits and the refusal of ambiguous framing are
the proxy's.  Accepting is :class:`gostgev.accept.AcceptServer`, which
rides out descriptor exhaustion.  A bad peer costs one rate-limited log line
and its connection; never a traceback.
"""

import collections
import email.utils
import io
import logging
import socket as _stdsocket
import sys
import time
from urllib.parse import unquote_to_bytes

from gevent.lock import BoundedSemaphore
from gevent.pool import Pool

from gostgev.accept import AcceptServer, listen_tcp
from gostgev.addr import Addr
from gostgev.codec.h1 import END, Request, RequestTracker
from gostgev.errors import RemoteProtocolError
from gostgev.limits import ConnLimiter, RateLimitedLog

__all__ = ["AdminServer"]

#: bytes asked of the kernel per read
READ_SIZE = 16 * 1024
#: a chunked body may carry this many bytes of chunk framing on top of ``max_body``
CHUNK_FRAMING_ALLOWANCE = 16 * 1024
#: reads made while lingering before a close (so at most this many READ_SIZE bytes dropped)
LINGER_READS = 64
#: hop-by-hop headers an app may set: the server frames the answer itself
_FRAMING_HEADERS = frozenset({"connection", "content-length", "keep-alive", "transfer-encoding"})
#: statuses whose answers never have a body (RFC 9110 6.4.1)
_NO_BODY = ("1", "204", "304")

_REASONS = {400: "Bad Request", 413: "Content Too Large", 500: "Internal Server Error"}


class _Deadline(Exception):
    """The peer did not send the head or the body (``args[0]``: "head" or "body") in time."""


class _PeerGone(Exception):
    """The peer closed (or the server shut the connection down to make room)."""


class _TooLarge(Exception):
    """The request body is over ``max_body``."""


class AdminServer:
    """A WSGI app served over HTTP/1.1 on ``addr``; shared by the metrics and API servers.

    The tunables are class attributes, so a subclass or a test may change
    them on one server before ``start()``.
    """

    name = "admin"
    #: seconds for a whole request head, from accept or from the previous answer
    head_timeout = 5.0
    #: seconds for a request body, from the end of its head
    body_timeout = 10.0
    #: seconds to write an answer
    write_timeout = 10.0
    #: seconds spent reading (and dropping) what a client still sends after an
    #: answer that closes the connection early, so the close does not reset the answer away
    linger_timeout = 1.0
    #: open connections from one client IP; more are closed at once
    max_per_ip = 8
    #: open connections in all; over it, the one waiting longest for its request is dropped
    max_connections = 256
    #: requests answered at once (apps running); others wait for a slot
    max_serving = 32
    #: largest request body read
    max_body = 64 * 1024
    #: at most one refusal line per reason per this many seconds
    log_interval = 5.0

    def __init__(self, addr, app):
        self.addr = tuple(addr)
        self.app = app
        self.log = logging.getLogger("gostgev." + self.name)
        self.server = None
        self._warn = None
        self._per_ip = None
        self._serving = None
        #: connections waiting for a request, oldest wait first (a dict keeps insertion order)
        self._waiting = {}
        self._open = 0

    @property
    def address(self):
        """The bound ``(host, port)`` once started, the configured one before."""
        sock = getattr(self.server, "socket", None)
        return sock.getsockname()[:2] if sock is not None else self.addr

    def start(self):
        self._warn = RateLimitedLog(self.log, interval=self.log_interval)
        self._per_ip = ConnLimiter(per_ip=self.max_per_ip)
        self._serving = BoundedSemaphore(self.max_serving)
        self.server = AcceptServer(listen_tcp(Addr(*self.addr)), self._handle, self.log)
        # An unbounded pool: no slot is taken at accept, and stop() can end what is left.
        self.server.set_spawn(Pool())
        self.server.start()
        host, port = self.address
        self.log.info("%s listening on %s:%d", self.name, "[%s]" % host if ":" in host else host, port)

    def stop(self, timeout=1):
        if self.server is None:
            return
        self.server.close()
        for connection in list(self._waiting):   # idle keep-alives would only delay the stop
            connection.shut_down()
        self.server.stop(timeout=timeout)

    def error_response(self, status, message):
        """``(headers, body)`` of an answer the server gives itself (400, 413); subclasses may restyle it."""
        return [("Content-Type", "text/plain")], message.encode() + b"\n"

    # -- connections ----------------------------------------------------------------

    def _handle(self, sock, address):
        """One accepted connection, in its own greenlet; gevent closes ``sock`` when this returns."""
        ip = address[0]
        refused = self._per_ip.acquire(ip)
        if refused:
            self._warn.warning("per-ip", "%s: closing a connection from %s: %s", self.name, ip, refused)
            return
        try:
            if self._open >= self.max_connections and not self._make_room():
                self._warn.warning("total", "%s: closing a connection from %s: %d connections open, "
                                   "none of them waiting", self.name, ip, self._open)
                return
            self._open += 1
            try:
                _Connection(self, sock, address).serve()
            finally:
                self._open -= 1
        finally:
            self._per_ip.release(ip)

    def _make_room(self):
        """Drop the connection that has waited longest for its request; False if none is waiting."""
        connection = next(iter(self._waiting), None)
        if connection is None:
            return False
        self._warn.warning("evict", "%s: %d connections open: dropping the one from %s that has waited "
                           "longest for its request", self.name, self._open, connection.address[0])
        connection.shut_down()
        return True

    def _answer(self, environ):
        """Run the app; ``(status, headers, body)``.  Its failures are ours, so they get a traceback."""
        started, chunks = [], []

        def start_response(status, headers, exc_info=None):
            if exc_info is not None and started:
                raise exc_info[1].with_traceback(exc_info[2])
            started[:] = [status, list(headers)]
            return chunks.append

        try:
            with self._serving:
                result = self.app(environ, start_response)
                try:
                    chunks.extend(result)
                finally:
                    if hasattr(result, "close"):
                        result.close()
            if not started:
                raise RuntimeError("the app never called start_response")
        except Exception:
            self.log.exception("%s: %s %s failed", self.name, environ["REQUEST_METHOD"], environ["PATH_INFO"])
            return "500 Internal Server Error", [("Content-Type", "text/plain")], b"internal error\n"
        return started[0], started[1], b"".join(chunks)


class _Connection:
    """One client connection: requests read under deadlines, answered in order."""

    def __init__(self, server, sock, address):
        self.server = server
        self.sock = sock
        self.address = address
        self.tracker = RequestTracker()
        self.events = collections.deque()   # (event, the chunk it slices) parsed but not yet used
        self.answered = 0

    def shut_down(self):
        """End the connection from another greenlet: a blocked read returns EOF."""
        self.server._waiting.pop(self, None)
        try:
            self.sock.shutdown(_stdsocket.SHUT_RDWR)
        except OSError:
            pass

    def serve(self):
        server, ip = self.server, self.address[0]
        try:
            while self._serve_one():
                pass
        except _PeerGone:
            pass
        except _Deadline as exc:
            body = exc.args[0] == "body"
            # An idle keep-alive connection simply expires; a first head, a started one or a body is worth a line.
            if body or self.answered == 0 or self.tracker.in_head:
                server._warn.warning("deadline", "%s: closing the connection from %s: request %s not complete "
                                     "within %gs", server.name, ip, exc.args[0],
                                     server.body_timeout if body else server.head_timeout)
        except RemoteProtocolError as exc:
            server._warn.warning("bad", "%s: bad request from %s: %s", server.name, ip, exc)
            self._refuse(400, "bad request: %s" % exc)
        except _TooLarge:
            self._refuse(413, "request body over %d bytes" % server.max_body)
        except TimeoutError:
            server._warn.warning("write", "%s: answer to %s not sent within %gs", server.name, ip,
                                 server.write_timeout)
        except OSError:
            pass   # reset or broken pipe: the client is gone

    def _serve_one(self):
        """Read and answer one request; False when the connection is to close."""
        server = self.server
        server._waiting[self] = None
        try:
            head, body = self._read_request()
        finally:
            server._waiting.pop(self, None)
        tokens = _connection_tokens(head.headers)
        # An upgrade's later bytes are held by the tracker, never answered: close after it.
        close = ("close" in tokens or (head.version == "HTTP/1.0" and "keep-alive" not in tokens)
                 or head.method == "CONNECT" or "upgrade" in tokens)
        status, headers, data = server._answer(self._environ(head, body))
        self._send(head, status, headers, data, close)
        self.answered += 1
        return not close

    def _read_request(self):
        """The next request's head and whole body, each within its deadline."""
        server = self.server
        event, _ = self._next(time.monotonic() + server.head_timeout, "head")
        assert isinstance(event, Request), event   # the tracker yields a head before any body
        head = event.head
        length = head.header("content-length")
        if length is not None and int(length) > server.max_body:
            raise _TooLarge()
        expect = head.header("expect")
        if expect and expect.lower() == "100-continue" and head.version == "HTTP/1.1" and not self.events:
            self.sock.settimeout(server.write_timeout)
            self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        chunked = head.header("transfer-encoding") is not None
        deadline = time.monotonic() + server.body_timeout
        body = bytearray()
        while True:
            event, chunk = self._next(deadline, "body")
            if event is END:
                break
            body += chunk[event.start:event.end]
            if len(body) > server.max_body + (CHUNK_FRAMING_ALLOWANCE if chunked else 0):
                raise _TooLarge()
        if chunked:
            body = _dechunk(body)
            if len(body) > server.max_body:
                raise _TooLarge()
        return head, bytes(body)

    def _next(self, deadline, what):
        """The next parsed event, reading until there is one or ``deadline`` passes."""
        while not self.events:
            left = deadline - time.monotonic()
            if left <= 0:
                raise _Deadline(what)
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(READ_SIZE)
            except TimeoutError:
                raise _Deadline(what) from None
            if not chunk:
                raise _PeerGone()
            self.events.extend((event, chunk) for event in self.tracker.feed(chunk))
        return self.events.popleft()

    def _environ(self, head, body):
        target = head.target
        if "://" in target[:16]:   # absolute-form: keep the path and query
            target = "/" + target.split("://", 1)[1].partition("/")[2]
        path, _, query = target.partition("?")
        host, port = self.server.address
        environ = {
            "REQUEST_METHOD": head.method, "SCRIPT_NAME": "",
            # PEP 3333: the path percent-decoded, its bytes as latin-1 characters
            "PATH_INFO": unquote_to_bytes(path).decode("latin-1"), "QUERY_STRING": query,
            "SERVER_NAME": host, "SERVER_PORT": str(port), "SERVER_PROTOCOL": head.version,
            "REMOTE_ADDR": self.address[0], "REMOTE_PORT": str(self.address[1]),
            "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body),
            "wsgi.errors": sys.stderr, "wsgi.multithread": False, "wsgi.multiprocess": False,
            "wsgi.run_once": False,
        }
        for name, value in head.headers:
            if "_" in name:
                continue   # "X_Auth" would pass for "X-Auth" once both became HTTP_X_AUTH
            key = name.upper().replace("-", "_")
            if key in ("TRANSFER_ENCODING", "CONTENT_LENGTH"):
                continue   # the body is read whole: its length is set below
            if key != "CONTENT_TYPE":
                key = "HTTP_" + key
            environ[key] = environ[key] + "," + value if key in environ else value
        if body or head.header("content-length") is not None:
            environ["CONTENT_LENGTH"] = str(len(body))
        return environ

    def _send(self, head, status, headers, data, close):
        lines = ["HTTP/1.1 " + status, "Date: " + email.utils.formatdate(usegmt=True)]
        lines += ["%s: %s" % (name, value) for name, value in headers if name.lower() not in _FRAMING_HEADERS]
        if not status.startswith(_NO_BODY):
            lines.append("Content-Length: %d" % len(data))
        if close:
            lines.append("Connection: close")
        elif head.version == "HTTP/1.0":
            lines.append("Connection: keep-alive")
        payload = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if head.method != "HEAD" and not status.startswith(_NO_BODY):
            payload += data
        self.sock.settimeout(self.server.write_timeout)
        self.sock.sendall(payload)

    def _refuse(self, status, message):
        """Answer an unreadable request with ``status`` and close, without losing the answer."""
        headers, data = self.server.error_response(status, message)
        lines = ["HTTP/1.1 %d %s" % (status, _REASONS[status]), "Content-Length: %d" % len(data),
                 "Connection: close"] + ["%s: %s" % h for h in headers]
        try:
            self.sock.settimeout(self.server.write_timeout)
            self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data)
            self._linger()
        except OSError:
            pass

    def _linger(self):
        """Read and drop what the client still sends, briefly, before the close.

        Closing with unread bytes makes the kernel send a reset, which can
        destroy the answer before the client has read it.
        """
        self.sock.shutdown(_stdsocket.SHUT_WR)
        deadline = time.monotonic() + self.server.linger_timeout
        for _ in range(LINGER_READS):
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self.sock.settimeout(left)
            if not self.sock.recv(READ_SIZE):
                return


def _connection_tokens(headers):
    """The lower-case tokens of every ``Connection`` header."""
    return {token.strip().lower() for name, value in headers if name.lower() == "connection"
            for token in value.split(",")}


def _dechunk(raw):
    """The data of a chunked body that the tracker has already checked (sizes, CRLFs, trailers)."""
    data, pos = bytearray(), 0
    while True:
        eol = raw.index(b"\r\n", pos)
        size = int(bytes(raw[pos:eol]).split(b";", 1)[0].strip(b" \t"), 16)
        if not size:
            return data
        data += raw[eol + 2:eol + 2 + size]
        pos = eol + 2 + size + 2
