"""Listening sockets and the accept loop every TCP listener shares.

:func:`listen_tcp` binds (an empty host: every interface, IPv4 and IPv6);
:func:`serve_tcp` accepts on a bound socket with :class:`AcceptServer`,
which rides out descriptor and memory exhaustion instead of spinning.  The
admin plane's server uses the same accept loop.
"""

import os
import socket as _stdsocket

import gevent
from gevent import GreenletExit, get_hub, getcurrent, socket
from gevent.event import Event
from gevent.greenlet import Greenlet
from gevent.hub import Waiter
from gevent.server import StreamServer

from gostgev.addr import format_address
from gostgev.errors import EXHAUSTED_ERRNOS
from gostgev.limits import RateLimitedLog
from gostgev.logsetup import get_logger

__all__ = ["AcceptServer", "BACKLOG", "Workers", "serve_tcp", "listen_tcp", "listen_key", "dup_socket"]

#: listen(2) backlog; the kernel caps it at net.core.somaxconn
BACKLOG = 4096
#: how long accepting pauses after such an error: first, and the cap of the doubling
ACCEPT_PAUSE_FIRST = 0.05
ACCEPT_PAUSE_MAX = 1.0
#: at most one "cannot accept" line per this many seconds per listener
ACCEPT_LOG_INTERVAL = 5.0


class Workers:
    """Greenlets that serve one connection after another.

    Each accepted connection is served by one greenlet, in blocking style,
    as with a greenlet spawned for it; but a greenlet whose connection has
    ended waits for the next one instead of exiting.  Starting a greenlet
    costs more than handing it work: the greenlet object, its first switch,
    and the 16 KiB stack of Python frames that CPython maps for it (an
    ``mmap`` and a ``munmap`` per connection).  At most ``max_idle`` wait;
    the others exit.
    """

    #: idle greenlets kept for the next connections
    max_idle = 256

    def __init__(self):
        self._idle = []
        self._busy = set()
        self._quiet = Event()       # set while no greenlet is busy
        self._quiet.set()

    @property
    def idle(self):
        """Greenlets waiting for a connection."""
        return len(self._idle)

    def spawn(self, func, *args):
        """Run ``func(*args)`` in an idle greenlet, or a new one (from the accept loop's callback)."""
        if self._idle:
            waiter = self._idle.pop()
            # As Greenlet.spawn: started when this turn of the loop ends, so that a burst of
            # accepts is taken first.
            get_hub().loop.run_callback(waiter.switch, (func, args))
        else:
            Greenlet.spawn(self._serve, func, args)

    @property
    def busy(self):
        """Greenlets serving a connection now."""
        return len(self._busy)

    def _serve(self, func, args):
        idle, busy, me = self._idle, self._busy, getcurrent()
        while True:
            busy.add(me)
            self._quiet.clear()
            try:
                func(*args)
            finally:
                busy.discard(me)
                if not busy:
                    self._quiet.set()
            func = args = None
            if len(idle) >= self.max_idle:
                return
            waiter = Waiter()
            idle.append(waiter)
            func, args = waiter.get()

    def join(self, timeout=None):
        """Wait up to ``timeout`` seconds for every busy greenlet to finish its connection."""
        return self._quiet.wait(timeout)

    def kill(self, timeout=1):
        """Kill the greenlets still serving a connection."""
        gevent.killall(list(self._busy), block=True, timeout=timeout)

    def close(self):
        """Let the idle greenlets exit (busy ones finish their connection and exit then)."""
        idle, self._idle = self._idle, []
        self.max_idle = 0
        loop = get_hub().loop
        for waiter in idle:
            loop.run_callback(waiter.throw, GreenletExit)   # a Waiter is woken from the hub only


class AcceptServer(StreamServer):
    """A StreamServer that rides out file-descriptor and memory exhaustion.

    gevent hands every failed accept() to the hub, which prints a traceback,
    and retries within milliseconds: when the process is out of descriptors
    that is a traceback flood.  Here such an error pauses accepting for a
    short delay that doubles up to ``ACCEPT_PAUSE_MAX``, and is logged as one
    line at most every ``ACCEPT_LOG_INTERVAL`` seconds; the first accept that
    works again resets the delay and logs that accepting resumed.  Queued
    connections wait in the kernel's backlog meanwhile.  Other errors are
    left to gevent.
    """

    def __init__(self, listening, handle, log):
        self.workers = Workers()
        super().__init__(listening, handle, spawn=self.workers.spawn)
        self.log = log
        self._warn = RateLimitedLog(log, interval=ACCEPT_LOG_INTERVAL)
        self._pause = ACCEPT_PAUSE_FIRST
        self._failures = 0
        self._failing_since = 0.0

    def close(self):
        super().close()
        self.workers.close()

    def do_read(self):
        try:
            accepted = super().do_read()
        except OSError as exc:
            if exc.errno not in EXHAUSTED_ERRNOS:
                raise
            self._pause_accepting(exc)
            return None   # gevent's accept loop stops on a false value
        if accepted and self._failures:
            self.log.info("accepting connections on %s again after %d failed attempts in %.1fs",
                          format_address(self.address), self._failures, self.loop.now() - self._failing_since)
            self._failures = 0
            self._pause = ACCEPT_PAUSE_FIRST
        return accepted

    def _pause_accepting(self, exc):
        if not self._failures:
            self._failing_since = self.loop.now()
        self._failures += 1
        self._warn.warning("accept", "cannot accept connections on %s: %s; retrying at most %gs apart",
                           format_address(self.address), exc.strerror or exc, ACCEPT_PAUSE_MAX)
        # Without a pause the listening socket stays readable and the loop spins.
        self.stop_accepting()
        self._timer = self.loop.timer(self._pause)   # stop_accepting() and close() cancel it
        self._timer.start(self._start_accepting_if_started)
        self._pause = min(self._pause * 2, ACCEPT_PAUSE_MAX)


def serve_tcp(listening, handle, log=None):
    """A started server on a listening socket, calling ``handle(sock, address)``.

    Accepted sockets have ``TCP_NODELAY`` from the listening socket (Linux
    copies it to every connection the socket accepts; :func:`listen_tcp`
    sets it), which saves a system call per connection.
    """
    server = AcceptServer(listening, handle, log if log is not None else get_logger("gostgev.listener"))
    server.start()
    return server


def dup_socket(sock):
    """A second descriptor of the same listening socket (see ``dup(2)``): the
    socket stays open, with its queued connections, until both are closed."""
    return socket.socket(fileno=os.dup(sock.fileno()))


def listen_key(addr):
    """What makes two listening addresses the same socket; None for port 0 (any free port)."""
    return (addr.host.lower(), addr.port) if addr.port else None


def listen_tcp(addr, reuse_port=False):
    """A listening socket for ``addr``; an empty host means every interface, IPv4 and IPv6.

    ``reuse_port`` (``--workers``): every worker binds the same ports and the
    kernel spreads new connections across them.
    """
    host = addr.host
    if not host:
        return _bind_any(addr.port, reuse_port)
    family = _stdsocket.AF_INET6 if ":" in host else _stdsocket.AF_INET
    infos = socket.getaddrinfo(host, addr.port, family, _stdsocket.SOCK_STREAM)
    return _bind(infos[0][0], infos[0][4], reuse_port=reuse_port)


def _bind_any(port, reuse_port):
    if _stdsocket.has_ipv6:
        try:
            return _bind(_stdsocket.AF_INET6, ("::", port), dual_stack=True, reuse_port=reuse_port)
        except OSError:
            pass  # IPv6 disabled in this kernel or namespace
    return _bind(_stdsocket.AF_INET, ("0.0.0.0", port), reuse_port=reuse_port)


def _bind(family, sockaddr, dual_stack=False, reuse_port=False):
    sock = socket.socket(family, _stdsocket.SOCK_STREAM)
    try:
        sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_REUSEPORT, 1)
        # Proxied traffic is request/response: Nagle must never hold a small write until the
        # peer's delayed ACK (40 ms on Linux).  Accepted connections inherit it.
        sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
        if dual_stack:
            sock.setsockopt(_stdsocket.IPPROTO_IPV6, _stdsocket.IPV6_V6ONLY, 0)
        sock.bind(sockaddr)
        sock.listen(BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock
