"""The two copy loops of :func:`gostgev.netio.pipe.pipe` that need no greenlet per direction.

Two plain sockets are driven entirely from libev callbacks
(:class:`CallbackPipe`); a plain socket and a mux stream
(:class:`StreamPipe`) get the stream's data written from the stream's own
arrival callback, and the socket's data framed from its read callback.
Both use the gevent sockets' own watchers.
"""

import logging
import socket as _stdsocket
import time

import gevent
import gevent.event
from gevent.hub import Waiter

from gostgev.netio.socketops import CHUNK, reset, shutdown_quietly, socket_watchers, watch_idle

__all__ = ["CallbackPipe", "StreamPipe"]

log = logging.getLogger("gostgev.netio.pipe")


class CallbackPipe:
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
                shutdown_quietly(sock, _stdsocket.SHUT_RDWR)
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
            shutdown_quietly(self.dst, _stdsocket.SHUT_WR)
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


class StreamPipe:
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
        """socket -> stream, until the socket's EOF or an error on either side.

        Once a write had to wait here, what the socket holds already is sent
        from this greenlet too (a bulk upload stays here, with no switch per
        read); the callback takes over when the socket runs dry.
        """
        while True:
            self.waiter = Waiter()
            self.reading.start(self._on_sock_readable)
            try:
                data = self.waiter.get()   # only a write that must wait, or the end, wakes us
            finally:
                self.reading.stop()
                self.waiter = None
            try:
                while True:
                    if data is None:
                        raise OSError("socket failed")
                    if not data:
                        shutdown_quietly(self.stream, _stdsocket.SHUT_WR)
                        return
                    self.stream.sendall(data)
                    self.up += len(data)
                    try:
                        data = self.raw.recv(CHUNK)
                    except BlockingIOError:
                        break
                    except OSError:
                        data = None
                    if data and self.activity is not None:
                        self.activity.last = time.monotonic()
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
            except Exception:
                # This runs in the hub: a bug here must end this connection, not hang it.
                log.exception("stream pipe failed")
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
                    shutdown_quietly(raw, _stdsocket.SHUT_WR)
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
            shutdown_quietly(self.raw, _stdsocket.SHUT_RDWR)
        gevent.spawn(shutdown_quietly, self.stream, _stdsocket.SHUT_RDWR)
        self.done.set()
