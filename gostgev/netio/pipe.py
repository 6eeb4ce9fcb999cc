"""Copy bytes both ways between two sockets until both directions end.

Design points, each for a reason:

* One direction runs in the calling greenlet and one in a child, and the
  caller joins the child before returning, because the server closes the
  client socket as soon as the handler returns.
* EOF on one side becomes ``shutdown(SHUT_WR)`` on the other (a half-close),
  and the opposite direction keeps flowing: ``nc -N``-style clients, HTTP/1.0
  uploads and many RPC protocols rely on this.
* An error on either side (reset, timeout) aborts both directions at once,
  and the other side's peer gets a reset, not a FIN that would pass a cut
  transfer off as complete (see ``socketops.reset``).  An idle timeout or a server
  stop ends both sides with FIN.
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
from gevent.socket import socket as GeventSocket

from gostgev.netio.callbackpipe import CallbackPipe, StreamPipe
from gostgev.netio.mux import MuxStream
from gostgev.netio.peek import unwrap_prefix
from gostgev.netio.socketops import CHUNK, reset, shutdown_quietly, watch_idle

__all__ = ["pipe"]

# Two fast paths avoid a greenlet per direction (gostgev.netio.callbackpipe):
# two plain sockets are driven entirely from libev callbacks, and a plain
# socket with a mux stream from the socket's and the stream's callbacks.
# Anything else (TLS, WebSocket) uses the greenlet pair, which only needs
# recv/sendall.


def pipe(a, b, idle_timeout=None):
    """Pipe ``a`` <-> ``b``; return ``(bytes a->b, bytes b->a)``.

    Neither socket is closed here; the caller owns both.
    """
    # Bytes read ahead (a sniffed head, the rest of a stream header's chunk)
    # go out first, so the fast paths below see the bare connections.
    a, ahead_a = unwrap_prefix(a)
    b, ahead_b = unwrap_prefix(b)
    if ahead_a:
        b.sendall(ahead_a)
    if ahead_b:
        a.sendall(ahead_b)
    up, down = _pipe(a, b, idle_timeout)
    return up + len(ahead_a), down + len(ahead_b)


def _pipe(a, b, idle_timeout):
    # Only real gevent sockets: a wrapper (TLS, WebSocket) must keep seeing its own recv calls.
    kinds = type(a), type(b)
    if kinds == (GeventSocket, GeventSocket):
        return CallbackPipe(a, b, idle_timeout).run()
    if kinds == (GeventSocket, MuxStream):
        return StreamPipe(a, b, idle_timeout).run()
    if kinds == (MuxStream, GeventSocket):
        down, up = StreamPipe(b, a, idle_timeout).run()
        return up, down
    return _greenlet_pipe(a, b, idle_timeout)


def _greenlet_pipe(a, b, idle_timeout):
    activity, watchdog = watch_idle(idle_timeout, a, b)
    child = gevent.spawn(_copy, b, a, activity)
    try:
        up = _copy(a, b, activity)
        child.join()
    except BaseException:
        # Killed (server stop): end the other direction too before leaving.
        shutdown_quietly(a, _stdsocket.SHUT_RDWR)
        shutdown_quietly(b, _stdsocket.SHUT_RDWR)
        child.kill()
        raise
    finally:
        if watchdog is not None:
            watchdog.close()
    return up, child.value or 0


def _copy(src, dst, activity):
    sent = 0
    try:
        while True:
            data = src.recv(CHUNK)
            if not data:
                shutdown_quietly(dst, _stdsocket.SHUT_WR)
                return sent
            if activity is not None:
                activity.last = time.monotonic()
            dst.sendall(data)
            sent += len(data)
    except OSError:
        # Either side failed: stop both directions now.
        reset(src)
        reset(dst)
        return sent
