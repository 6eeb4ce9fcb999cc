"""An open upstream connection of a session, and what comes back on it.

:class:`_Upstream` holds one connection's state for either engine;
:class:`_UpstreamSide` (a base of the shared session) parses what the node
sends, passes it to the client in order, counts answered requests off,
sends a request again on a fresh connection when a reused one turns out
dead, and cuts the client when the node fails mid-answer.
"""

import time

import gevent.event

from gostgev.codec.h1 import END, UPGRADED, Data, Interim, Response, ResponseTracker
from gostgev.errors import RemoteProtocolError
from gostgev.handler.http1.routes import Refused
from gostgev.netio.socketops import reset


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



class _UpstreamSide:
    """What both engines do with an upstream's bytes; the state is the session's and the :class:`_Upstream`'s."""

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
        if not _resendable(up):
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


def _resendable(up):
    """A reused connection that died before its first answer, on a route that can open a fresh one."""
    return up.first_raw and not up.received and up.route.retry is not None
