"""What both engines of :func:`~gostgev.handler.http1.serve_http` share.

:class:`_SessionBase` takes the client's bytes apart into requests, routes
each (keeping, changing or refusing the upstream connection), and ends the
session; what comes back is handled by its base :class:`_UpstreamSide`
(:mod:`.upstream`), and a stalled mux stream by :class:`_Replay`
(:mod:`.replay`).  Moving bytes is each engine's own: it provides
``run``, ``_send_up``, ``_to_client``, ``_start_pump``, ``_stop_pump``,
``_before_pipe``, ``_set_idle``, ``_close_client`` and ``_release``.

Code that may block runs only with ``blocking`` true (in the session's
greenlet); the callback engine, which runs the same code from event-loop
callbacks, gets :data:`HANDOVER` (or :class:`_Handover`) where it would
have to wait, and hands the rest to its greenlet.
"""

import re
import socket as _stdsocket
import time

import gevent.event

from gostgev.codec.h1 import END, Data, Request, RequestTracker
from gostgev.codec.http import simple_response
from gostgev.errors import RemoteProtocolError
from gostgev.handler.http1.replay import SAFE_METHODS, _Replay
from gostgev.handler.http1.routes import Refused, WouldBlock
from gostgev.handler.http1.upstream import _Upstream, _UpstreamSide
from gostgev.netio.close import close_gently
from gostgev.netio.pipe import pipe
from gostgev.netio.socketops import reset

# A request's own "Connection: close" line (nothing else in the header).
_CONNECTION_CLOSE = re.compile(rb"\r\nconnection:[ \t]*close[ \t]*\r\n", re.IGNORECASE)


class _Handover(Exception):
    """Raised where the callbacks would have to wait: the session's greenlet takes over."""


#: what ``_events`` returns when the greenlet must go on from ``pending``
HANDOVER = "handover"


class _SessionBase(_UpstreamSide, _Replay):
    """One client's connection, routed request by request; an engine moves the bytes."""

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

    # -- the client's bytes --------------------------------------------------------------

    #: the first request's head, already parsed by the sniffer (taken by the first feed)
    known_head = None

    def _client_data(self, data):
        """Route and send what ``data`` holds; False once the session must end."""
        answerable = self.tracker.idle   # every request so far went out whole
        try:
            known, self.known_head = self.known_head, None
            events = self.tracker.feed(data, known)
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
        except WouldBlock:
            raise _Handover from None
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

    def _finish(self):
        up, self.up = self.up, None
        if up is not None:
            if self.broken or not self.tracker.idle:
                up.failed = up.failed or "client gone"
            self._release(up)


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
