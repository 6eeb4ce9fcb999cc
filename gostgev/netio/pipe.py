"""Copy bytes both ways between two sockets until both directions end.

Design points, each for a reason:

* One direction runs in the calling greenlet and one in a child, and the
  caller joins the child before returning, because the server closes the
  client socket as soon as the handler returns.
* EOF on one side becomes ``shutdown(SHUT_WR)`` on the other (a half-close),
  and the opposite direction keeps flowing: ``nc -N``-style clients, HTTP/1.0
  uploads and many RPC protocols rely on this.
* An error on either side (reset, timeout) aborts both directions at once by
  shutting both sockets down, which wakes the other greenlet.
* Buffers are not held while idle: ``recv(CHUNK)`` allocates only once data
  is ready and the bytes object is released after ``sendall``.  An idle
  connection costs two greenlets and two sockets, no buffer.
* ``CHUNK`` is large so bulk transfers cost few Python-level iterations.
* The idle timeout is per connection, not per direction: a long download
  with a silent upload side is not idle.  One periodic libev timer per
  connection (only when a timeout is set) checks a timestamp that the copy
  loops bump; socket timeouts are not used because a slow reader stalling a
  large ``sendall`` is backpressure, not idleness.  A silent connection is cut
  between 1 and 1.5 idle timeouts after its last byte.
"""

import socket as _stdsocket
import time

import gevent

__all__ = ["pipe", "CHUNK"]

#: bytes read per recv(); large enough that bulk copies are cheap per byte
CHUNK = 128 * 1024


class _Activity:
    __slots__ = ("last",)

    def __init__(self):
        self.last = time.monotonic()


def pipe(a, b, idle_timeout=None):
    """Pipe ``a`` <-> ``b``; return ``(bytes a->b, bytes b->a)``.

    Neither socket is closed here; the caller owns both.
    """
    activity = watchdog = None
    if idle_timeout:
        activity = _Activity()
        watchdog = gevent.get_hub().loop.timer(idle_timeout / 2, idle_timeout / 2)
        watchdog.start(_check_idle, activity, idle_timeout, a, b)
    child = gevent.spawn(_copy, b, a, activity)
    try:
        up = _copy(a, b, activity)
        child.join()
    except BaseException:
        # Killed (server stop): end the other direction too before leaving.
        _shutdown(a, _stdsocket.SHUT_RDWR)
        _shutdown(b, _stdsocket.SHUT_RDWR)
        child.kill()
        raise
    finally:
        if watchdog is not None:
            watchdog.close()
    return up, child.value or 0


def _check_idle(activity, idle_timeout, a, b):
    if time.monotonic() - activity.last >= idle_timeout:
        _shutdown(a, _stdsocket.SHUT_RDWR)
        _shutdown(b, _stdsocket.SHUT_RDWR)


def _copy(src, dst, activity):
    sent = 0
    try:
        while True:
            data = src.recv(CHUNK)
            if not data:
                _shutdown(dst, _stdsocket.SHUT_WR)
                return sent
            if activity is not None:
                activity.last = time.monotonic()
            dst.sendall(data)
            sent += len(data)
    except OSError:
        # Either side failed: stop both directions now.
        _shutdown(src, _stdsocket.SHUT_RDWR)
        _shutdown(dst, _stdsocket.SHUT_RDWR)
        return sent


def _shutdown(sock, how):
    try:
        sock.shutdown(how)
    except OSError:
        pass
