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
  transfer off as complete (see ``_reset``).  An idle timeout or a server
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

import _socket
import logging
import socket as _stdsocket
import struct
import time

import gevent
import gevent.event
from gevent.hub import Waiter
from gevent.socket import socket as GeventSocket

from gostgev.netio.mux import MuxStream
from gostgev.netio.peek import unwrap_prefix

__all__ = ["pipe", "CHUNK", "watch_idle", "reset", "socket_watchers"]

log = logging.getLogger(__name__)

# Two fast paths avoid a greenlet per direction: two plain sockets are driven
# entirely from libev callbacks, and a plain socket with a mux stream gets the
# stream's data written from the stream's own arrival callback.  Anything else
# (TLS, WebSocket) uses the greenlet pair, which only needs recv/sendall.

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
        return _CallbackPipe(a, b, idle_timeout).run()
    if kinds == (GeventSocket, MuxStream):
        return _StreamPipe(a, b, idle_timeout).run()
    if kinds == (MuxStream, GeventSocket):
        down, up = _StreamPipe(b, a, idle_timeout).run()
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
        _shutdown(a, _stdsocket.SHUT_RDWR)
        _shutdown(b, _stdsocket.SHUT_RDWR)
        child.kill()
        raise
    finally:
        if watchdog is not None:
            watchdog.close()
    return up, child.value or 0


def socket_watchers(sock):
    """The read and write watchers of the gevent socket ``sock``, for callbacks.

    gevent waits on these same two in its blocking calls (``recv``,
    ``sendall``), and closes them with the socket; a callback started on
    one must be stopped before the socket is used in blocking style or
    closed.  Using them saves two watchers per connection, and the
    ``fcntl`` that libev makes for each.
    """
    return sock._read_event, sock._write_event


def watch_idle(idle_timeout, a, b):
    """``(activity, watchdog timer)`` cutting ``a`` and ``b`` when idle, or ``(None, None)`` without a timeout."""
    if not idle_timeout:
        return None, None
    activity = _Activity()
    watchdog = gevent.get_hub().loop.timer(idle_timeout / 2, idle_timeout / 2)
    watchdog.start(_check_idle, activity, idle_timeout, a, b)
    return activity, watchdog


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
        reset(src)
        reset(dst)
        return sent


def _shutdown(sock, how):
    try:
        sock.shutdown(how)
    except OSError:
        pass


_LINGER_RESET = struct.pack("ii", 1, 0)


def reset(sock):
    """End a connection whose other half failed, so that its peer sees an error.

    A FIN would tell the peer the transfer was complete: a download cut
    short by a reset backend or a dead tunnel would look whole to any
    protocol that ends at EOF.  A TCP socket gets SO_LINGER 0, so that
    closing it sends RST, and SHUT_RD, which sends nothing but wakes its
    readers.  A mux stream cannot be reset on the wire (smux has no RST):
    it gets its FIN.
    """
    if isinstance(sock, (GeventSocket, _socket.socket)):   # _socket: also gevent's raw sockets
        try:
            sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
        _shutdown(sock, _stdsocket.SHUT_RD)
    else:
        _shutdown(sock, _stdsocket.SHUT_RDWR)


class _CallbackPipe:
    """Both directions as libev callbacks; the calling greenlet just waits.

    Each direction reads when its source is readable and writes at once; if
    the destination cannot take everything, reading stops until the rest is
    written (back-pressure), so at most one chunk per direction is held.
    """

    def __init__(self, a, b, idle_timeout):
        self.done = gevent.event.Event()
        self.activity, self.watchdog = watch_idle(idle_timeout, a._sock, b._sock)
        self.up = _Direction(self, a, b)
        self.down = _Direction(self, b, a)

    def run(self):
        self.up.read_more()
        self.down.read_more()
        try:
            self.done.wait()
        finally:
            # Also when this greenlet is killed (server stop): no callback may outlive it.
            if not self.done.is_set():
                self.abort(failed=False)
            if self.watchdog is not None:
                self.watchdog.close()
        return self.up.sent, self.down.sent

    def finished(self):
        if self.up.over and self.down.over:
            self.done.set()

    def abort(self, failed=True):
        for direction in (self.up, self.down):
            direction.stop()
        for sock in (self.up.src, self.down.src):
            if failed:
                reset(sock)
            else:
                _shutdown(sock, _stdsocket.SHUT_RDWR)
        self.done.set()


class _Direction:
    __slots__ = ("pipe", "src", "dst", "reading", "writing", "pending", "sent", "over")

    def __init__(self, pipe, src, dst):
        # The raw sockets are read and written; the gevent sockets' own watchers drive it.
        self.pipe = pipe
        self.src = src._sock
        self.dst = dst._sock
        self.reading = socket_watchers(src)[0]
        self.writing = socket_watchers(dst)[1]
        self.pending = None
        self.sent = 0
        self.over = False

    def read_more(self):
        self.reading.start(self.on_readable)

    def stop(self):
        self.reading.stop()
        self.writing.stop()
        self.over = True

    def on_readable(self):
        try:
            self._on_readable()
        except Exception:
            # Callbacks run in the hub: a bug here must end this pipe, not hang it.
            self.pipe.abort()
            raise

    def _on_readable(self):
        try:
            data = self.src.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            return self.pipe.abort()
        if not data:
            self.stop()
            _shutdown(self.dst, _stdsocket.SHUT_WR)
            return self.pipe.finished()
        if self.pipe.activity is not None:
            self.pipe.activity.last = time.monotonic()
        self._send(memoryview(data))

    def on_writable(self):
        try:
            view, self.pending = self.pending, None
            self.writing.stop()
            self._send(view)
        except Exception:
            self.pipe.abort()
            raise

    def _send(self, view):
        try:
            n = self.dst.send(view)
        except BlockingIOError:
            n = 0
        except OSError:
            return self.pipe.abort()
        self.sent += n
        if n < len(view):
            self.pending = view[n:]
            self.reading.stop()
            self.writing.start(self.on_writable)
        elif not self.reading.active:
            self.reading.start(self.on_readable)


class _StreamPipe:
    """A plain socket and a mux stream, with one greenlet instead of two.

    socket -> stream is read in the socket's read callback, and each read is
    framed at once while the peer's window and the session allow it
    (``send_nowait``); the calling greenlet only waits, and takes over the
    writes that must wait (for the window or the session's write lock) and
    the end.  stream -> socket runs from a loop callback scheduled by the
    stream's arrival callback, once per batch of frames the session's reader
    dispatched, and from the socket's write watcher: what the socket cannot
    take waits for the watcher while the stream keeps the rest (unread data
    holds back the window, so the peer slows down).
    """

    def __init__(self, sock, stream, idle_timeout):
        self.sock = sock
        self.raw = sock._sock
        self.stream = stream
        self.loop = gevent.get_hub().loop
        self.reading, self.writing = socket_watchers(sock)
        self.waiter = None
        self.scheduled = False
        self.pending = None
        self.sent = self.up = 0
        self.over = False
        self.done = gevent.event.Event()
        self.activity, self.watchdog = watch_idle(idle_timeout, sock, stream)

    def run(self):
        self.stream.on_readable = self.schedule
        try:
            self.pump()
            self._copy_up()
            self.done.wait()
        except BaseException:
            self.abort(failed=False)
            raise
        finally:
            self.stream.on_readable = None
            self.writing.stop()
            self.reading.stop()
            if self.watchdog is not None:
                self.watchdog.close()
        return self.up, self.sent

    def _copy_up(self):
        """socket -> stream, until the socket's EOF or an error on either side."""
        while True:
            self.waiter = Waiter()
            self.reading.start(self._on_sock_readable)
            try:
                data = self.waiter.get()   # only a write that must wait, or the end, wakes us
            finally:
                self.reading.stop()
                self.waiter = None
            try:
                if data is None:
                    raise OSError("socket failed")
                if not data:
                    _shutdown(self.stream, _stdsocket.SHUT_WR)
                    return
                self.stream.sendall(data)
                self.up += len(data)
            except OSError:
                reset(self.sock)
                reset(self.stream)
                return

    def _on_sock_readable(self):
        try:
            data = self.raw.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = None
        if data:
            if self.activity is not None:
                self.activity.last = time.monotonic()
            try:
                if self.stream.send_nowait(data):
                    self.up += len(data)
                    return
            except OSError:
                data = None
        self.reading.stop()
        self.waiter.switch(data)

    def schedule(self):
        """Pump once the session's reader has dispatched the frames of its last read.

        One read holds several frames of this stream; sending each as it is
        dispatched would cost a system call per frame.
        """
        if not self.scheduled:
            self.scheduled = True
            self.loop.run_callback(self._scheduled)

    def _scheduled(self):
        self.scheduled = False
        self.pump()

    def pump(self):
        """Move what the stream holds to the socket; never blocks."""
        if self.over or self.writing.active:
            return   # the write watcher goes on once the socket drains
        try:
            self._pump()
        except Exception:
            # This runs in the session's reader or the hub: a bug here must
            # end this connection, not the tunnel connection or the loop.
            log.exception("stream pipe failed")
            self.abort()

    def on_writable(self):
        self.writing.stop()
        self.pump()

    def _pump(self):
        stream, raw = self.stream, self.raw
        while True:
            view = self.pending
            if view is None:
                try:
                    data = stream.recv_nowait(CHUNK)
                except OSError:
                    return self.abort()
                if data is None:
                    return
                if not data:
                    self.over = True
                    _shutdown(raw, _stdsocket.SHUT_WR)
                    return self.done.set()
                if self.activity is not None:
                    self.activity.last = time.monotonic()
                view = memoryview(data)
            try:
                n = raw.send(view)
            except BlockingIOError:
                n = 0
            except OSError:
                return self.abort()
            self.sent += n
            if n < len(view):
                self.pending = view[n:]
                return self.writing.start(self.on_writable)
            self.pending = None

    def abort(self, failed=True):
        """Stop both directions: the socket at once, the stream from a greenlet
        of its own (its FIN is a write, which may not happen in the hub)."""
        self.over = True
        self.pending = None
        self.writing.stop()
        if failed:
            reset(self.raw)
        else:
            _shutdown(self.raw, _stdsocket.SHUT_RDWR)
        gevent.spawn(_shutdown, self.stream, _stdsocket.SHUT_RDWR)
        self.done.set()
