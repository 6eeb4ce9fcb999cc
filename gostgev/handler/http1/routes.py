"""What a caller of :func:`~gostgev.handler.http1.serve_http` provides.

:class:`Route` (where a request goes, and how to open a connection there)
and :class:`Refused` (a request with nowhere to go), which ``route_for``
returns or raises; the :class:`UpstreamPool` of idle keep-alive connections
that routes take from and give back to; and :func:`request_reporter`, the
usual ``on_request``.
"""

import logging
import select
import time

import gevent

from gostgev.metrics import OFF


def request_reporter(log, service, metrics=OFF):
    """The ``on_request`` of a session: one log line and one count per request.

    None when neither the log (below info) nor the metrics would take them,
    so that the session does not build the fields at all.
    """
    if not log.isEnabledFor(logging.INFO) and metrics is OFF:
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


class WouldBlock(Exception):
    """Raised by a ``route_for`` that must wait (a lookup) while it runs in an event-loop
    callback, where nothing may wait: the session calls it again from its greenlet."""


def may_block():
    """Whether the caller runs in a greenlet that may wait (not in the hub's callbacks)."""
    return gevent.getcurrent() is not gevent.get_hub()


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


def hand_back(route, sock, reusable=False, sent=0, received=0):
    """Give ``sock`` back to ``route`` (its ``release``), or close it when the route takes none back.

    The defaults are for a connection no request of the session uses any more.
    """
    if route.release is not None:
        route.release(sock, reusable, sent, received)
    else:
        sock.close()


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

    def __len__(self):
        """Idle connections held."""
        return self._count

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


#: one poll object for every health check (a zero timeout never waits, so one is never shared)
_POLL = select.poll()


def _healthy(sock):
    """No EOF, no error and no unsolicited bytes waiting: the node still holds this connection open.

    One ``poll`` with a zero timeout: an idle kept-alive connection has
    nothing to read, and anything else (EOF, bytes nobody asked for, an
    error) makes it unusable.  It costs a third of a ``MSG_PEEK`` read,
    which raises for every healthy connection.
    """
    fd = sock.fileno()
    if fd < 0:
        return False
    _POLL.register(fd, select.POLLIN)
    try:
        return not _POLL.poll(0)
    finally:
        _POLL.unregister(fd)
