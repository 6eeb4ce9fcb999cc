"""One client's HTTP/1.x connection, routed request by request.

The forwarder (``tcp`` with sniffing) and the tunnel entrypoint both serve
plain HTTP this way.  Bytes pass through unchanged; the trackers of
:mod:`gostgev.codec.h1` only say where each message starts and ends::

    client ──recv──▶ RequestTracker ──Request──▶ route(head) ─┬─ same route: send on the open upstream
                                                              ├─ new route: wait until the open upstream
                                                              │  has answered everything, then open (or
                                                              │  take from the pool) the new one
                                                              └─ refused: wait likewise, answer 502/503
    upstream ──recv──▶ ResponseTracker ──▶ client  (END counts a response off)

Responses therefore reach the client in request order, and pipelined
requests to one route keep flowing without waiting.  A 101 (or a 2xx to
CONNECT) turns the connection into a plain pipe.

A route may offer ``reroute`` (the tunnel's do): when the mux session
under a stream stalls (its client stopped answering, see
:mod:`gostgev.netio.mux`) while the one request in flight has had no byte
of answer, that request is sent once more on another connection, and the
stalled stream is let go.  Only a request that may be repeated goes: a
``GET``, ``HEAD`` or ``OPTIONS``, or any request whose stream the client
has not acknowledged reading at all, kept whole (up to ``REPLAY_LIMIT``
bytes) and sent whole.  A request whose answer has begun waits, as do
pipelined ones.  A frozen client that later wakes up before its connection
is dropped still reads what it had been sent, so a resent ``POST`` may
then reach the service twice; the alternative is waiting for the keepalive
timeout.  A stream kept for later requests is not reused once its session
stalls: the next request opens one elsewhere.

Two engines run this: :class:`_CallbackSession`, where the client is a
plain socket or a mux stream and every route opens plain sockets or mux
streams (the forwarder without a chain, the tunnel client, the
entrypoints): bytes move in event-loop callbacks, and the greenlet wakes
only for what has to wait.  :class:`_Session` serves the rest (a TLS or
WebSocket client, a chain) with a greenlet per upstream.
"""

import logging
import re
import socket as _stdsocket
import time

import gevent
import gevent.event
from gevent.socket import socket as GeventSocket

from gostgev import metrics
from gostgev.codec.h1 import END, UPGRADED, Data, Interim, Request, RequestTracker, Response, ResponseTracker
from gostgev.codec.http import simple_response
from gostgev.errors import RemoteProtocolError
from gostgev.netio.close import close_gently
from gostgev.netio.mux import MuxStream
from gostgev.netio.peek import unwrap_prefix
from gostgev.netio.pipe import CHUNK, pipe, reset, watch_idle

__all__ = ["Refused", "Route", "serve_http", "UpstreamPool", "Forwarding", "forwarded_style", "request_reporter"]

#: values of the ``http.forwarded`` / ``entrypoint.forwarded`` options
FORWARDED_STYLES = ("x-forwarded", "forwarded")


def forwarded_style(md, key):
    """Option ``key``: ``x-forwarded``, ``forwarded``, or None (off, the default: requests pass as sent)."""
    style = (md.str(key) or "").lower()
    if style in ("", "off", "false", "none"):
        return None
    if style not in FORWARDED_STYLES:
        raise ValueError("%s: unknown style %r (x-forwarded, forwarded or off)" % (key, style))
    return style

#: methods sent again whatever the peer read of them (RFC 9110 9.2.1's safe methods)
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
#: the most bytes of a request kept to send it again should its connection stall
REPLAY_LIMIT = 64 * 1024

# A request's own "Connection: close" line (nothing else in the header).
_CONNECTION_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close[ \t]*\r\n", re.IGNORECASE)


def request_reporter(log, service):
    """The ``on_request`` of a session: one log line and one count per request.

    None when neither the log (below info) nor the metrics would take them,
    so that the session does not build the fields at all.
    """
    if not log.isEnabledFor(logging.INFO) and metrics.current is None:
        return None

    def on_request(fields):
        log.info("request", fields=fields)
        metrics.http_request(service, fields.get("status", 0))

    return on_request


class Refused(Exception):
    """This request cannot be routed: answer ``status`` with ``message``."""

    def __init__(self, status, message, detail=None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.detail = detail


class Route:
    """Where a request goes: ``key`` compares routes; ``open()`` gives a connection there.

    ``open()`` returns ``(sock, fields, reused)`` or raises :class:`Refused`;
    ``fields`` go into the request's log line.  ``release(sock, reusable,
    bytes sent, bytes received)`` takes the connection back when the
    client's session is done with it.
    """

    __slots__ = ("key", "open", "release", "retry", "pooled", "reroute")

    def __init__(self, key, open, release=None, retry=None, pooled=False, reroute=None):
        self.key = key
        self.open = open
        self.release = release
        self.retry = retry    #: callable() -> sock for a fresh connection when a reused one died unused
        #: connections outlive the client's: a client's ``Connection: close`` (hop-by-hop,
        #: RFC 9110 7.6.1) is not passed on, and the client's connection closes after its answer
        self.pooled = pooled
        #: callable() -> (sock, fields) on another connection, for a request whose mux
        #: stream stalled unanswered; :class:`Refused` when no other connection answers
        self.reroute = reroute


class _Upstream:
    """An open connection of the session, and the greenlet relaying its responses."""

    __slots__ = ("route", "sock", "fields", "reused", "tracker", "idle", "pump", "failed", "upgraded",
                 "sent", "received", "first_raw", "asked", "answer_bytes", "closes_client",
                 "raw", "reading", "writing", "out", "writer", "scheduled", "paused",
                 "stall_watch", "replay", "replay_at", "replay_safe")

    def __init__(self, route, sock, fields, reused):
        self.route = route
        self.sock = sock
        self.fields = fields
        self.reused = reused
        self.tracker = ResponseTracker()
        self.idle = gevent.event.Event()   # set while every request sent here is answered
        self.idle.set()
        self.pump = None
        self.failed = None        # why the connection ended early, if it did
        self.upgraded = None      # Event: set once the answer to an upgrade request is known
        self.sent = 0
        self.received = 0
        self.first_raw = None     # a reused connection's first, bodiless request: resent if the node had closed
        self.asked = []           # [started, method, host, path, bytes in] per request awaiting its answer
        self.answer_bytes = 0
        self.closes_client = False   # an answer told the client its connection ends
        self.raw = self.reading = self.writing = None   # the callback session's socket and watchers
        self.out = []                # bytes for this connection that it could not take yet
        self.writer = None           # a mux stream's: the greenlet writing ``out``
        self.scheduled = self.paused = False
        self.stall_watch = False     # a mux stream whose route can reroute a request if its session stalls
        self.replay = None           # the request in flight, kept to send it again (chunks)
        self.replay_at = 0           # ``received`` when it went out
        self.replay_safe = False     # its method may be repeated whatever the peer read of it


class Forwarding:
    """What a proxy adds to each request it passes on (all opt-in).

    * ``style`` ``x-forwarded``: ``X-Forwarded-For`` (the client's address),
      ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` (the Host it asked for);
      ``forwarded``: the same as one RFC 7239 ``Forwarded`` header.  A
      client's own headers of that name stay: ours is added after them, so
      a list reads oldest hop first.
    * ``node``: the loop guard.  A request whose ``Gost-Forwarded-Node``
      already names this node has gone round in a circle and is refused
      with 508; otherwise this node is added to the header (GOST replaces
      the value, which sees a loop of two nodes only).
    """

    __slots__ = ("style", "proto", "node")

    def __init__(self, style=None, proto="http", node=None):
        self.style = style
        self.proto = proto
        self.node = node

    def __bool__(self):
        return bool(self.style or self.node)

    def apply(self, head, raw, client_ip):
        """``raw`` with our headers added; :class:`Refused` for a request caught in a loop."""
        lines = []
        if self.node:
            seen = [value for name, value in head.headers if name.lower() == "gost-forwarded-node"]
            nodes = [n.strip() for value in seen for n in value.split(",") if n.strip()]
            if self.node in nodes:
                raise Refused(508, "request loop: it has passed node %s before" % self.node)
            if seen:
                raw = _FORWARDED_NODE.sub(b"", raw)
            lines.append("Gost-Forwarded-Node: %s" % ", ".join(nodes + [self.node]))
        if self.style:
            host = head.header("host") or head.host or ""
            if self.style == "forwarded":
                who = '"[%s]"' % client_ip if ":" in client_ip else client_ip
                lines.append("Forwarded: for=%s;host=%s;proto=%s" % (who, _quoted(host), self.proto))
            else:
                lines.append("X-Forwarded-For: %s" % client_ip)
                lines.append("X-Forwarded-Proto: %s" % self.proto)
                if host:
                    lines.append("X-Forwarded-Host: %s" % host)
        extra = "".join(line + "\r\n" for line in lines).encode("latin-1")
        cut = len(raw) - (2 if raw.endswith(b"\r\n\r\n") else 1)
        return raw[:cut] + extra + raw[cut:]


def _quoted(value):
    """An RFC 7239 value: a token as it is, anything else (a port's colon) quoted."""
    if value and all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in value):
        return value
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')


# The header a loop guard rewrites, line and all (a folded value was refused earlier).
_FORWARDED_NODE = re.compile(rb"\r?\ngost-forwarded-node:[^\r\n]*(?=\r?\n)", re.IGNORECASE)


def serve_http(client, client_ip, data, route_for, log, on_request=None, idle_timeout=None, forwarding=None,
               plain=False, head_timeout=None):
    """Serve ``client`` until it closes; ``data`` holds bytes already read from it.

    ``route_for(head, current_key)`` returns a :class:`Route` (the current
    one, when it still fits, keeps the open connection) or raises :class:`Refused`.
    ``on_request(fields)`` is called with each answered request's log fields.
    ``forwarding`` (a :class:`Forwarding`) adds headers to every request.
    ``plain``: every route opens plain TCP sockets or mux streams, so that,
    with a plain client socket too, the bytes can move in event-loop callbacks.
    ``head_timeout``: there, a request head begun must be complete within
    this many seconds, or the connection is closed (a client that trickles
    a head holds nothing for long).
    Returns ``(bytes in, bytes out)``.
    """
    if plain:
        client, ahead = unwrap_prefix(client)
        data += ahead
    kind = _CallbackSession if plain and type(client) in (GeventSocket, MuxStream) else _Session
    session = kind(client, client_ip, route_for, log, on_request)
    session.head_timeout = head_timeout
    session.forwarding = forwarding or None
    activity, watchdog = watch_idle(idle_timeout, client, client)
    session.activity = activity
    try:
        return session.run(data)
    finally:
        if watchdog is not None:
            watchdog.close()


class _Session:
    def __init__(self, client, client_ip, route_for, log, on_request):
        self.client = client
        self.client_ip = client_ip
        self.route_for = route_for
        self.log = log
        self.on_request = on_request
        self.activity = None
        self.forwarding = None
        self.tracker = RequestTracker()
        self.up = None            # the current _Upstream
        self.bytes_in = 0
        self.bytes_out = 0
        self.skipping = False     # the body of a refused request is read and dropped
        self.broken = False       # the client connection must end now (an upstream failed mid-answer)

    def run(self, data):
        try:
            while data:
                self.bytes_in += len(data)
                if not self._client_data(data) or self.broken:
                    break
                data = self._recv_client()
            else:
                self._client_eof()
        finally:
            self._finish()
        return self.bytes_in, self.bytes_out

    def _recv_client(self):
        try:
            data = self.client.recv(CHUNK)
        except OSError:
            return b""
        if self.activity is not None:
            self.activity.last = time.monotonic()
        return data

    # -- the client's bytes --------------------------------------------------------------

    def _client_data(self, data):
        """Route and send what ``data`` holds; False once the session must end."""
        answerable = self.tracker.idle   # every request so far went out whole
        try:
            events = self.tracker.feed(data)
        except RemoteProtocolError as exc:
            return self._bad_request(exc, answerable)
        if not self._events(data, events):
            return False
        return not self.tracker.finished or self._drain()

    #: True while this code may block (it runs in the session's greenlet)
    blocking = True

    def _events(self, data, events, start=0):
        """Act on ``events`` from ``start``; False once the session must end.

        Outside the greenlet (``blocking`` false), whatever would have to
        wait stops the walk: it returns :data:`HANDOVER`, with the place to
        go on from in ``self.pending``.
        """
        view = None
        for index in range(start, len(events)):
            event = events[index]
            kind = type(event)
            if kind is Data:
                if self.skipping:
                    continue
                if view is None:
                    view = memoryview(data)
                up = self.up
                up.asked[-1][4] += event.end - event.start
                if up.replay is not None:
                    self._keep_body(up, view[event.start:event.end])
                if not self._send_up(view[event.start:event.end]):
                    return False
            elif kind is Request:
                try:
                    done = self._request(event)
                except _Handover:
                    self.pending = (data, events, index)
                    return HANDOVER
                self.skipping = False if done != "refused" else True
                if not done:
                    return False
            elif event is END and self.tracker.upgrading:
                if not self.blocking:
                    self.pending = (data, events, index)
                    return HANDOVER
                if self.skipping:     # refused: nothing will switch; what was held is more requests
                    held, more = self.tracker.upgrade_answered(False)
                    if not self._events(held, more):
                        return False
                elif not self._await_upgrade():
                    return False
        return True

    def _request(self, event):
        """Send a request on its way: True; False when the session must end; "refused" when answered here."""
        head = event.head
        up = self.up
        raw = event.raw
        try:
            if self.forwarding is not None:
                raw = self.forwarding.apply(head, raw, self.client_ip)
            route = self.route_for(head, up.route.key if up is not None and not up.failed else None)
        except Refused as exc:
            return self._refuse(head, exc)
        if up is None or up.route.key != route.key or up.failed or not up.tracker.keep_alive \
                or (up.stall_watch and up.sock.session.stalled):
            if not self.blocking:
                raise _Handover
            if up is not None:
                up.idle.wait()
                if self.broken:
                    return False
                self._release(up)
                self.up = None
            try:
                sock, fields, reused = route.open()
            except Refused as exc:
                return self._refuse(head, exc)
            up = self.up = _Upstream(route, sock, fields, reused)
            self._watch_stall(up)
            self._start_pump(up)
        up.idle.clear()
        upgrade = self.tracker.upgrading
        up.tracker.expect(head.method, upgrade=upgrade)
        if upgrade:
            up.upgraded = gevent.event.Event()
        kept = False              # the client's Connection: close stays with us, not the node
        if route.pooled and self.tracker.closing and head.version == "HTTP/1.1":
            raw, kept = _CONNECTION_CLOSE.subn(b"\r\n", raw, count=1)
        up.asked.append([time.monotonic(), head.method, head.host, head.target, len(raw), kept])
        if up.stall_watch:
            # Only the one request in flight can go again: later ones would pass it.
            if up.tracker.pending == 1 and not upgrade:
                up.replay, up.replay_at, up.replay_safe = [raw], up.received, head.method in SAFE_METHODS
            else:
                up.replay = None
        if up.tracker.pending > 1:
            up.first_raw = b""    # several requests in flight: none is ever resent
        elif up.reused and up.first_raw is None and _bodiless(head):
            up.first_raw = raw
        return self._send_up(raw)

    def _send_up(self, view):
        up = self.up
        try:
            send_all(up.sock, view)
            up.sent += len(view)
            return True
        except OSError as exc:
            if up.first_raw and not up.received:
                return True       # the pump finds the connection dead and resends on a fresh one
            self._upstream_failed(up, "send failed: %s" % (exc.strerror or exc))
            return False

    def _refuse(self, head, exc):
        """Answer a request that has no route, in its turn, and read past its body."""
        if not self.blocking:
            raise _Handover
        if self.up is not None:
            self.up.idle.wait()
            if self.broken:
                return False
        self.log.warning("%s", exc.detail or exc.message, fields={"host": head.host, "path": head.target})
        keep = not self.tracker.closing
        try:
            self.client.sendall(simple_response(exc.status, "gostgev: " + exc.message, keep_alive=keep))
        except OSError:
            return False
        if self.on_request is not None:
            self.on_request({"method": head.method, "host": head.host, "path": head.target, "status": exc.status})
        return "refused" if keep else False

    def _bad_request(self, exc, answerable):
        """Bytes that are not HTTP, or that could be read two ways: 400, once earlier answers are out.

        When they cut short a request already on its way upstream, that
        request cannot be answered, so the client is cut off instead.
        """
        self.log.warning("bad request: %s", exc)
        if not answerable:
            if self.up is not None:
                self._upstream_failed(self.up, None)
            reset(self.client)
            self.broken = True
            return False
        if self.up is not None:
            self.up.idle.wait()
        if not self.broken:
            close_gently(self.client, simple_response(400, "gostgev: bad request"))
        return False

    def _await_upgrade(self):
        """Wait for the answer to an upgrade request; after a 101, the connection is a plain pipe."""
        up = self.up
        up.upgraded.wait()
        if self.broken:
            return False
        accepted = up.tracker.raw
        held, events = self.tracker.upgrade_answered(accepted)
        if not accepted:
            return self._events(held, events)
        self._before_pipe(up)
        try:
            if held:
                up.sock.sendall(held)
            upload, download = pipe(self.client, up.sock)
        except OSError:
            upload = download = 0
        self.bytes_in += upload
        self.bytes_out += download
        return False

    def _drain(self):
        """The client asked to close: let the answers out, then end."""
        if self.up is not None:
            self.up.idle.wait()
        return False

    def _client_eof(self):
        """The client closed its sending side: answer what it asked, then end."""
        up = self.up
        if up is None:
            return
        if not self.tracker.idle:
            self._upstream_failed(up, None)
            return
        up.idle.wait()

    # -- the upstream's bytes ------------------------------------------------------------

    def _start_pump(self, up):
        up.pump = gevent.spawn(self._pump, up)

    def _before_pipe(self, up):
        up.pump.join()            # it stops right after relaying the switch

    def _pump(self, up):
        """Relay ``up``'s responses to the client, counting them off."""
        while True:
            try:
                data = up.sock.recv(CHUNK)
            except OSError as exc:
                if self._resend(up):
                    continue
                return self._upstream_failed(up, exc.strerror or str(exc))
            if not data and not up.received and self._resend(up):
                continue
            if not self._upstream_data(up, data):
                return

    def _upstream_data(self, up, data):
        """Pass on what ``up`` sent; False once nothing more is read from it."""
        if self.activity is not None:
            self.activity.last = time.monotonic()
        up.received += len(data)
        try:
            events = up.tracker.feed(data)
        except RemoteProtocolError as exc:
            self._upstream_failed(up, str(exc))
            return False
        switched = False
        view = None
        out = []              # what goes to the client, sent in one call per read
        for event in events:
            kind = type(event)
            if kind is Data:
                if view is None:
                    view = memoryview(data)
                out.append(view[event.start:event.end])
            elif kind is Response:
                out.append(self._response_head(up, event))
            elif kind is Interim:
                out.append(event.raw)
            elif event is END:
                if out and not self._to_client(up, out):
                    return False
                out = []
                self._answered(up)
            elif event is UPGRADED:
                switched = True
        if out and not self._to_client(up, out):
            return False
        if switched:
            up.upgraded.set()
            return False          # the session pipes from here
        if not data:
            up.failed = up.failed or "closed"
            self._set_idle(up)
            return False
        return True

    def _set_idle(self, up):
        up.idle.set()

    def _close_client(self):
        _shutdown(self.client)

    def _to_client(self, up, chunks):
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            send_all(self.client, data)
        except OSError:
            self._upstream_failed(up, None)
            return False
        up.answer_bytes += len(data)
        return True

    def _response_head(self, up, response):
        """The head to pass on, as the node sent it: an answer that says the connection
        closes is followed by the close.  One exception: a client's ``Connection: close``
        that was kept from a pooled node is said for the node."""
        raw = response.raw
        if up.asked and up.asked[0][5]:
            if response.keep_alive and raw.endswith(b"\r\n\r\n"):
                raw = raw[:-2] + b"Connection: close\r\n\r\n"
            return raw
        if not response.keep_alive:
            up.closes_client = True
        return raw

    def _answered(self, up):
        tracker = up.tracker
        started, method, host, path, size, _ = up.asked.pop(0)
        self.bytes_out += up.answer_bytes
        if self.on_request is not None:
            self.on_request({**up.fields, "method": method, "host": host, "path": path, "status": tracker.status,
                             "inputBytes": size, "outputBytes": up.answer_bytes,
                             "duration": "%.3fs" % (time.monotonic() - started)})
        up.answer_bytes = 0
        up.first_raw = b""
        up.replay = None
        if up.upgraded is not None and not tracker.raw:
            up.upgraded.set()     # declined: the bytes held after the request are read as requests
        if up.closes_client:
            # The answer told the client its connection closes after it, so it does.
            self._close_client()
        if not tracker.pending:
            self._set_idle(up)

    def _resend(self, up):
        """A reused connection died before its first answer: send that request on a fresh one."""
        if not up.first_raw or up.received or up.route.retry is None:
            return False
        raw, up.first_raw = up.first_raw, b""
        try:
            up.sock.close()
            up.sock = up.route.retry()
            up.reused = False
            up.sock.sendall(raw)
        except (OSError, Refused) as exc:
            self.log.warning("resend failed: %s", getattr(exc, "message", None) or exc, fields=up.fields)
            return False
        return True

    # -- a stalled mux session under the upstream --------------------------------------------------

    def _watch_stall(self, up):
        if up.route.reroute is not None and type(up.sock) is MuxStream:
            up.stall_watch = True
            up.sock.on_stall = lambda: self._on_stall(up)

    def _keep_body(self, up, chunk):
        """Keep a body chunk of the request in flight, while the whole request stays small."""
        if up.asked[-1][4] > REPLAY_LIMIT:
            up.replay = None
        else:
            up.replay.append(bytes(chunk))

    def _on_stall(self, up):
        """``up``'s mux session stalled (a hub callback): resend the request if it may go again."""
        if up.replay is not None and self._unanswered(up, up.replay_at):
            gevent.spawn(self._replay, up, up.replay, up.replay_at, up.replay_safe)
            up.replay = None      # once

    def _unanswered(self, up, at):
        """The one request in flight on ``up`` (sent when ``up.received`` was ``at``) is
        whole, all sent, unanswered, and its stream's session is still stalled."""
        stream = up.sock
        return (up is self.up and not up.failed and not self.broken and up.received == at
                and up.tracker.pending == 1 and self.tracker.idle and not up.out and up.writer is None
                and type(stream) is MuxStream and stream.session.stalled)

    def _replay(self, up, replay, at, safe):
        """Send the request again on a connection that answers; the stalled stream is let go."""
        try:
            sock, fields = up.route.reroute()
        except Refused:
            return                # no other connection answers: wait on this one
        old = up.sock
        if not (self._unanswered(up, at) and (safe or old.unacknowledged)):
            return _let_go(up.route, sock)    # something moved while the new stream opened
        self._stop_pump(up)
        old.on_stall = None
        up.sock, up.fields = sock, fields
        up.paused = False
        self.log.info("request sent again: its tunnel connection stalled", fields=fields)
        try:
            sock.sendall(b"".join(replay))
        except OSError as exc:
            self._upstream_failed(up, "send failed: %s" % (exc.strerror or exc))
        else:
            self._watch_stall(up)
            self._start_pump(up)
        _let_go(up.route, old)

    def _stop_pump(self, up):
        if up.pump is not None:
            up.pump.kill(block=True)

    def _upstream_failed(self, up, why):
        """The upstream ended while answering: the client cannot be told cleanly, so it is cut too."""
        if why:
            self.log.warning("upstream failed: %s", why, fields=up.fields)
        up.failed = why or "failed"
        if up.tracker.pending or not self.tracker.idle:
            self.broken = True
            reset(self.client)
        up.idle.set()
        if up.upgraded is not None:
            up.upgraded.set()

    def _release(self, up):
        reusable = not up.failed and up.tracker.keep_alive and not up.tracker.pending and not up.tracker.raw
        if up.pump is not None:
            if not reusable:
                _shutdown(up.sock)
            up.pump.kill(block=True)
        if up.route.release is not None:
            up.route.release(up.sock, reusable, up.sent, up.received)
        else:
            up.sock.close()

    def _finish(self):
        up, self.up = self.up, None
        if up is not None:
            if self.broken or not self.tracker.idle:
                up.failed = up.failed or "client gone"
            self._release(up)


class _Handover(Exception):
    """Raised where the callbacks would have to wait: the session's greenlet takes over."""


#: what ``_events`` returns when the greenlet must go on from ``pending``
HANDOVER = "handover"


class _CallbackSession(_Session):
    """A plain client socket: bytes move in event-loop callbacks.

    Routes open plain sockets (driven by watchers like the client's) or mux
    streams (read from the stream's arrival callback; written by a greenlet
    started for each burst, since a stream write may wait for the peer's
    window).

    The session's greenlet sleeps while requests keep their route; it wakes
    for what has to wait (opening a connection, a route change or a refusal
    that waits for earlier answers, an upgrade, the end) and goes back to
    sleep once that is done.  No greenlet runs per request, which is what a
    keep-alive connection costs otherwise.
    """

    def run(self, data):
        loop = gevent.get_hub().loop
        self.stream = type(self.client) is MuxStream   # the tunnel client's side: a stream from the server
        if self.stream:
            self.raw = None
            self.reading = self.writing = _NoWatcher()
            self.writer = None
            self.scheduled = False
        else:
            self.raw = self.client._sock
            self.reading = loop.io(self.raw.fileno(), 1)
            self.writing = loop.io(self.raw.fileno(), 2)
        self.out = []             # answer bytes the client could not take yet
        self.idle_after_flush = None
        self.close_after_flush = False
        self.head_timer = loop.timer(self.head_timeout) if self.head_timeout else None
        self.wake = gevent.event.Event()
        self.job = None
        self.pending = None
        try:
            self.bytes_in += len(data)
            if self._client_data(data) and not self.broken:
                self._sleep_between_jobs()
        finally:
            self.blocking = True
            self._pause_client()
            self.reading.close()
            self.writing.close()
            if self.stream and self.writer is not None:
                self.writer.kill(block=True)
            if self.head_timer is not None:
                self.head_timer.close()
            self._finish()
        return self.bytes_in, self.bytes_out

    def _sleep_between_jobs(self):
        while True:
            self.blocking = False
            self._resume_client()
            self.wake.wait()
            self.wake.clear()
            self._pause_client()
            self.blocking = True
            job, self.job = self.job, None
            if job is None or self.broken:
                return
            kind = job[0]
            if kind == "events":
                data, events, index = job[1]
                if self._events(data, events, index) is False or self.broken:
                    return
                if self.tracker.finished:
                    self._drain()
                    return
            elif kind == "eof":
                self._client_eof()
                return
            elif kind == "bad":
                self._bad_request(job[1], job[2])
                return
            else:                 # "drain", "end"
                if kind == "drain":
                    self._drain()
                return

    def _hand_over(self, *job):
        self.job = job
        self._pause_client()
        self.wake.set()

    def _pause_client(self):
        if self.stream:
            self.client.on_readable = None
        else:
            self.reading.stop()

    def _resume_client(self):
        if not self.blocking and not self.broken and (self.up is None or not self.up.out):
            if self.stream:
                self.client.on_readable = self._schedule_client
                self._schedule_client()      # bytes may be waiting already
            else:
                self.reading.start(self._on_client_readable)

    def _schedule_client(self):
        if not self.scheduled:
            self.scheduled = True
            gevent.get_hub().loop.run_callback(self._on_client_scheduled)

    def _on_client_scheduled(self):
        # A stream says once that data came, however much: read while it has some.
        self.scheduled = False
        while self.client.on_readable is not None and self._on_client_readable():
            pass

    def _on_client_readable(self):
        """Take what the client sent; True when something was taken and the callbacks go on."""
        try:
            data = self.client.recv_nowait(CHUNK) if self.stream else self.raw.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data is None:
            return                # a stream with nothing more for now
        if not data:
            return self._hand_over("eof")
        if self.activity is not None:
            self.activity.last = time.monotonic()
        self.bytes_in += len(data)
        answerable = self.tracker.idle
        try:
            events = self.tracker.feed(data)
        except RemoteProtocolError as exc:
            return self._hand_over("bad", exc, answerable)
        try:
            result = self._events(data, events)
        except Exception:
            # This runs in the event loop: a bug must end this connection, not the loop.
            self.log.exception("HTTP session failed")
            self.broken = True
            return self._hand_over("end")
        if result is HANDOVER:
            return self._hand_over("events", self.pending)
        if result is False or self.broken:
            return self._hand_over("end")
        if self.tracker.finished:
            return self._hand_over("drain")
        timer = self.head_timer
        if timer is not None:
            if not self.tracker.in_head:
                timer.stop()
            elif not timer.active:
                timer.start(self._head_too_slow)
        return True

    def _head_too_slow(self):
        if self.tracker.in_head and not self.broken:
            self.log.info("no complete request head within %gs, closing", self.head_timeout)
            self.broken = True
            reset(self.client)
            self._hand_over("end")

    # -- to the upstream ----------------------------------------------------------------

    def _start_pump(self, up):
        if type(up.sock) is MuxStream:
            up.sock.on_readable = lambda: self._schedule_stream(up)
            self._schedule_stream(up)
            return
        loop = gevent.get_hub().loop
        up.raw = up.sock._sock
        up.reading = loop.io(up.raw.fileno(), 1)
        up.writing = loop.io(up.raw.fileno(), 2)
        up.reading.start(self._on_upstream_readable, up)

    def _stop_pump(self, up):
        if up.reading is not None:
            up.reading.close()
            up.writing.close()
            up.reading = up.writing = None
        elif type(up.sock) is MuxStream:
            up.sock.on_readable = None
            up.paused = True

    def _pause_upstream(self, up):
        if up.reading is not None:
            up.reading.stop()
        up.paused = True

    def _resume_upstream(self, up):
        up.paused = False
        if up.reading is not None:
            up.reading.start(self._on_upstream_readable, up)
        elif type(up.sock) is MuxStream and up.sock.on_readable is not None:
            self._schedule_stream(up)

    # -- a mux stream route ---------------------------------------------------------------

    def _schedule_stream(self, up):
        """Read once the mux reader has dispatched the frames of its last read."""
        if not up.scheduled:
            up.scheduled = True
            gevent.get_hub().loop.run_callback(self._on_stream_readable, up)

    def _on_stream_readable(self, up):
        up.scheduled = False
        stream = up.sock
        while not up.paused and stream.on_readable is not None:
            try:
                data = stream.recv_nowait(CHUNK)
            except OSError as exc:
                stream.on_readable = None
                return self._upstream_failed(up, exc.strerror or str(exc))
            if data is None:
                return
            if not self._pass_on(up, data):
                stream.on_readable = None
                return

    def _write_stream(self, up):
        """Send what the session queued for a stream, in order; may wait for the peer's window."""
        try:
            _send_each(up.sock, up.out)
        except OSError as exc:
            self._upstream_failed(up, "send failed: %s" % (exc.strerror or exc))
        finally:
            up.writer = None
        if up is self.up:
            self._resume_client()

    def _send_up(self, view):
        up = self.up
        up.sent += len(view)
        if type(up.sock) is MuxStream:
            up.out.append(bytes(view))
            if up.writer is None:
                self._pause_client()   # the client waits until the stream took it
                up.writer = gevent.spawn(self._write_stream, up)
            return True
        try:
            waiting = _send_queued(up.raw, up.out, view)
        except OSError as exc:
            if up.first_raw and not up.received:
                return True       # found dead on reading, and resent on a fresh connection
            self._upstream_failed(up, "send failed: %s" % (exc.strerror or exc))
            return False
        if waiting and up.writing is not None and not up.writing.active:
            self._pause_client()   # the client waits until the node takes what it has
            up.writing.start(self._on_upstream_writable, up)
        return True

    def _on_upstream_writable(self, up):
        try:
            if not _flush(up.raw, up.out):
                return
        except OSError as exc:
            up.out.clear()
            up.writing.stop()
            return self._upstream_failed(up, "send failed: %s" % (exc.strerror or exc))
        up.writing.stop()
        if up is self.up:
            self._resume_client()

    def _on_upstream_readable(self, up):
        try:
            data = up.raw.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError as exc:
            if self._resend_later(up):
                return
            up.reading.stop()
            return self._upstream_failed(up, exc.strerror or str(exc))
        if not data and not up.received and self._resend_later(up):
            return
        if not self._pass_on(up, data) and up.reading is not None:
            up.reading.stop()

    def _pass_on(self, up, data):
        """:meth:`_upstream_data` from a callback: a bug ends this connection, not the event loop."""
        try:
            return self._upstream_data(up, data)
        except Exception:
            self.log.exception("HTTP session failed")
            self._upstream_failed(up, "internal error")
            return False

    def _resend_later(self, up):
        """A reused connection found dead before its first answer: resend from a greenlet of its own."""
        if not up.first_raw or up.received or up.route.retry is None:
            return False
        self._stop_pump(up)

        def resend():
            if self._resend(up):
                self._start_pump(up)
            else:
                self._upstream_failed(up, "resend failed")

        gevent.spawn(resend)
        return True

    # -- to the client ------------------------------------------------------------------

    def _to_client(self, up, chunks):
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        up.answer_bytes += len(data)
        if self.stream:
            self.out.append(bytes(data))
            if self.writer is None:
                self._pause_upstream(up)   # the node waits until the stream took it
                self.writer = gevent.spawn(self._write_client_stream)
            return True
        try:
            waiting = _send_queued(self.raw, self.out, data)
        except OSError:
            self._upstream_failed(up, None)
            return False
        if waiting and not self.writing.active:
            self._pause_upstream(up)   # the node waits until the client takes what it has
            self.writing.start(self._on_client_writable)
        return True

    def _write_client_stream(self):
        """Send the answers queued for a stream client, in order; may wait for the peer's window."""
        try:
            _send_each(self.client, self.out)
        except OSError:
            if self.up is not None:
                self._upstream_failed(self.up, None)
            return
        finally:
            self.writer = None
        self._client_drained()

    def _on_client_writable(self):
        try:
            if not _flush(self.raw, self.out):
                return
        except OSError:
            self.out.clear()
            self.writing.stop()
            if self.up is not None:
                self._upstream_failed(self.up, None)
            return
        self.writing.stop()
        self._client_drained()

    def _client_drained(self):
        if self.close_after_flush:
            _shutdown(self.client)
        up = self.up
        if up is not None and up.paused and not up.failed and not up.tracker.raw:
            self._resume_upstream(up)
        waiting, self.idle_after_flush = self.idle_after_flush, None
        if waiting is not None:
            waiting.idle.set()

    def _set_idle(self, up):
        if self.out:
            self.idle_after_flush = up      # "answered" means: and passed on to the client
        else:
            up.idle.set()

    def _close_client(self):
        if self.out:
            self.close_after_flush = True   # not before the answer is out
        else:
            _shutdown(self.client)

    # -- ends ---------------------------------------------------------------------------

    def _before_pipe(self, up):
        self._stop_pump(up)
        if up.writer is not None:
            up.writer.join()      # what the client sent before the switch goes first
        if self.stream and self.writer is not None:
            self.writer.join()
        self.writing.stop()
        if self.out:
            self.client.sendall(b"".join(self.out))
            self.out.clear()

    def _upstream_failed(self, up, why):
        super()._upstream_failed(up, why)
        self._stop_pump(up)
        if self.broken and not self.blocking:
            self._hand_over("end")

    def _release(self, up):
        self._stop_pump(up)
        if up.writer is not None:
            up.writer.kill(block=True)
        reusable = (not up.failed and up.tracker.keep_alive and not up.tracker.pending and not up.tracker.raw
                    and not up.out)
        if up.route.release is not None:
            up.route.release(up.sock, reusable, up.sent, up.received)
        else:
            up.sock.close()


class _NoWatcher:
    """Stands in for the socket watchers of a client that is a mux stream."""

    active = False

    def start(self, *args):
        pass

    stop = close = start


def _let_go(route, sock):
    """Hand back a connection no request of the session uses any more."""
    if route.release is not None:
        route.release(sock, False, 0, 0)
    else:
        sock.close()


def _send_queued(raw, out, data):
    """Send ``data`` on the non-blocking socket ``raw``, behind what ``out`` holds.

    What the socket cannot take now is kept in ``out``; True when ``out``
    holds anything after.  ``OSError`` passes.
    """
    if not out:
        try:
            sent = raw.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return False
        data = memoryview(data)[sent:]
    out.append(bytes(data))
    return True


def _send_each(stream, out):
    """Send the chunks queued in ``out`` on a mux stream, in order, waiting as it must.

    On ``OSError`` the rest are dropped and the error passes.
    """
    try:
        while out:
            stream.sendall(out[0])
            out.pop(0)
    except OSError:
        out.clear()
        raise


def _flush(raw, out):
    """Send what ``out`` holds on ``raw``; True once all of it went.  ``OSError`` passes."""
    while out:
        chunk = out[0]
        try:
            sent = raw.send(chunk)
        except BlockingIOError:
            return False
        if sent < len(chunk):
            out[0] = chunk[sent:]
            return False
        out.pop(0)
    return True


def send_all(sock, data):
    """``sock.sendall(data)``, with one plain ``send`` first on a gevent socket.

    gevent's ``sendall`` asks the kernel for the send buffer size on every
    call (a system call); a request or an answer almost always fits in one
    ``send``, so only what is left goes through ``sendall``.
    """
    if type(sock) is GeventSocket:
        try:
            sent = sock._sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        data = memoryview(data)[sent:]
    sock.sendall(data)


def _bodiless(head):
    for name, _ in head.headers:
        lower = name.lower()
        if lower == "content-length" or lower == "transfer-encoding":
            return False
    return True


def _shutdown(sock):
    try:
        sock.shutdown(_stdsocket.SHUT_RDWR)
    except OSError:
        pass


class UpstreamPool:
    """Idle keep-alive connections to nodes, for later requests of any client.

    Bounded per node and in total; a connection idle longer than
    ``idle_timeout`` is closed, and one that the node closed (or that has
    bytes nobody asked for) is never handed out.
    """

    #: idle connections kept per node
    per_node = 64
    #: idle connections kept in all
    total = 1024
    #: seconds an idle connection is kept (nginx's keepalive_timeout is 60 s, so 30 s stays below
    #: what most backends allow)
    idle_timeout = 30.0

    def __init__(self):
        self._idle = {}           # key -> list of (sock, since)
        self._count = 0
        self._sweeper = None

    def take(self, key):
        """A healthy idle connection to ``key``, or None."""
        stack = self._idle.get(key)
        now = time.monotonic()
        while stack:
            sock, since = stack.pop()
            self._count -= 1
            if now - since < self.idle_timeout and _healthy(sock):
                return sock
            sock.close()
        return None

    def put(self, key, sock):
        stack = self._idle.setdefault(key, [])
        if len(stack) >= self.per_node or self._count >= self.total:
            sock.close()
            return
        stack.append((sock, time.monotonic()))
        self._count += 1
        if self._sweeper is None:
            self._sweeper = gevent.spawn(self._sweep)

    def _sweep(self):
        try:
            while self._count:
                gevent.sleep(self.idle_timeout / 2)
                now = time.monotonic()
                for key, stack in list(self._idle.items()):
                    keep = [(s, t) for s, t in stack if now - t < self.idle_timeout]
                    for sock, since in stack:
                        if now - since >= self.idle_timeout:
                            sock.close()
                    self._count -= len(stack) - len(keep)
                    if keep:
                        self._idle[key] = keep
                    else:
                        del self._idle[key]
        finally:
            self._sweeper = None

    def close(self):
        for stack in self._idle.values():
            for sock, _ in stack:
                sock.close()
        self._idle.clear()
        self._count = 0
        if self._sweeper is not None:
            self._sweeper.kill(block=False)


def _healthy(sock):
    """No EOF and no unsolicited bytes waiting: the node still holds this connection open."""
    try:
        # The raw socket: gevent's own would wait for the byte instead of saying there is none.
        getattr(sock, "_sock", sock).recv(1, _stdsocket.MSG_PEEK | _stdsocket.MSG_DONTWAIT)
    except BlockingIOError:
        return True
    except OSError:
        return False
    return False                # EOF, or bytes nobody asked for: either way not reusable
