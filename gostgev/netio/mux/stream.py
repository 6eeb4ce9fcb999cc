"""One stream of a mux session, usable where a socket is.

Its data arrives from the session's reader (:meth:`MuxStream._feed` and
friends); what it sends goes through the session's write side, within the
peer's window on v2.

Half-close.  smux has none: a Go peer that receives FIN fails its own writes
and discards data for ids it has closed.  We allow both halves anyway: after
our FIN (``shutdown(SHUT_WR)``) the stream stays readable, and after the
peer's FIN our writes still go out, because a gostgev peer keeps reading
after its own FIN (a Go peer just drops them).  So ``sendall`` raises
BrokenPipeError only once we sent FIN or the stream or session is closed.
A writer whose peer sent FIN and then spent the window waits at most
``HALF_CLOSED_WINDOW_WAIT`` for more, then gets BrokenPipeError, unless the
peer has sent a window update since its FIN (only a gostgev peer does).
"""

import errno
import logging
import socket as _stdsocket
import time

import gevent
from gevent.event import Event

from gostgev.codec import mux as wire

#: one logger for the package, named as the module was before it became one
log = logging.getLogger("gostgev.netio.mux")

#: most payload bytes one sendall writes per turn of the write lock, so
#: other streams and window updates get a turn during a bulk transfer
WRITE_BATCH = 256 * 1024
#: seconds a writer waits for window after the peer's FIN before giving up
HALF_CLOSED_WINDOW_WAIT = 10.0


def _remaining(deadline):
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class MuxStream:
    """One stream of a :class:`MuxSession`, usable where a socket is."""

    __slots__ = ("id", "session", "_data", "_readable", "_writable", "_timeout", "_fin_received", "_fin_sent",
                 "_read_shut", "_closed", "_error", "_rwin", "_swin", "on_readable", "_reads_after_fin", "on_stall")

    def __init__(self, session, sid):
        self.id = sid
        self.session = session
        self._data = wire.ChunkQueue()
        self._readable = Event()
        self._writable = Event()
        self._timeout = None
        self._fin_received = self._fin_sent = self._read_shut = self._closed = False
        self._reads_after_fin = False   # the peer sent a window update after its FIN
        self._error = None          # why the stream died: reset, or the session closed
        self._rwin = wire.ReceiveWindow(session.config.max_stream_buffer) if session._v2 else None
        self._swin = wire.SendWindow() if session._v2 else None
        #: called, in the session's reader or a hub callback, whenever recv_nowait
        #: may have something new (data, EOF or an error); it must not block
        self.on_readable = None
        #: called, in a hub callback, when the session becomes stalled (v2
        #: only; see :mod:`gostgev.netio.mux.liveness`); it must not block
        self.on_stall = None

    def __repr__(self):
        return "<MuxStream %d of %s>" % (self.id, self.session.name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    @property
    def closed(self):
        return self._closed or self._error is not None

    @property
    def buffered(self):
        """Bytes received on this stream and not read yet."""
        return self._data.size

    @property
    def unacknowledged(self):
        """Nothing has come back on this stream: no data, no FIN, no window update.

        So the peer has read none of what we sent.  Always False on v1,
        where a peer reports nothing of what it reads.
        """
        return (self._swin is not None and self._swin.consumed == 0 and self._rwin.received == 0
                and not self._fin_received)

    def settimeout(self, timeout):
        self._timeout = timeout

    def gettimeout(self):
        return self._timeout

    def getpeername(self):
        if self.session.remote_address is None:
            raise OSError(errno.ENOTCONN, "peer address unknown")
        return self.session.remote_address

    def recv(self, n, flags=0):
        """Up to ``n`` bytes; b"" after the peer's FIN once drained, or after SHUT_RD."""
        while True:
            data = self._take(n, self._send_update)
            if data is not None:
                return data
            self._readable.clear()
            if not self._readable.wait(self._timeout):
                raise TimeoutError("timed out")

    def recv_nowait(self, n):
        """As :meth:`recv`, but None instead of waiting.

        Never blocks or switches greenlets (the window update is queued, not
        written), so it may run in the session's reader or a hub callback.
        """
        return self._take(n, self._queue_update)

    def _take(self, n, report):
        if not self._data.size:
            if self._error is not None:
                raise ConnectionResetError(errno.ECONNRESET, self._error)
            if self._closed:
                raise OSError(errno.EBADF, "stream closed")
            if self._fin_received or self._read_shut or n <= 0:
                return b""
            return None
        data = self._data.take(n)
        if data:
            self.session._consumed(len(data))
            if self._rwin is not None:
                consumed = self._rwin.on_read(len(data))
                if consumed is not None:
                    report(consumed)
        return data

    def _queue_update(self, consumed):
        self.session._queue_update(self.id, consumed)

    def recv_into(self, buffer, nbytes=0):
        data = self.recv(nbytes or len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def _send_update(self, consumed):
        session = self.session
        session._updates.pop(self.id, None)  # superseded: a queued older total must not follow this one
        try:
            session._write(wire.encode_upd(2, self.id, consumed, session.config.max_stream_buffer))
        except OSError:
            pass  # the session is closing; the data already read stays valid

    def sendall(self, data, flags=0):
        """Send everything, in frames of at most max_frame_size, within the peer's window.

        The stream timeout bounds the wait for window updates; a connection
        that stops draining is the keepalive's business.
        """
        view = memoryview(data)
        if view.ndim != 1 or view.itemsize != 1:
            view = view.cast("B")
        session, total, pos = self.session, len(view), 0
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        version, frame_size, swin = session.config.version, session.config.max_frame_size, self._swin
        while True:
            self._check_writable()
            if pos >= total:
                return
            n = min(total - pos, WRITE_BATCH)
            if swin is not None:
                window = swin.available()
                if window <= 0:
                    self._writable.clear()
                    wait = _remaining(deadline)
                    if self._fin_received and not self._reads_after_fin:
                        # A Go peer that sent FIN drops our data and never
                        # opens its window again; a gostgev peer still reads,
                        # and once it has shown that, it may pause as long as
                        # it likes (back-pressure, not a dead stream).
                        wait = HALF_CLOSED_WINDOW_WAIT if wait is None else min(wait, HALF_CLOSED_WINDOW_WAIT)
                    if not self._writable.wait(wait):
                        if self._fin_received:
                            raise BrokenPipeError(errno.EPIPE, "peer closed the stream and stopped reading")
                        raise TimeoutError("timed out")
                    continue
                n = min(n, window)      # exactly up to the window, as smux does
                swin.written += n       # before yielding, so a concurrent sender sees it
            session._write(wire.encode_data(version, self.id, view[pos:pos + n], frame_size))
            pos += n
            if session._waiting:
                gevent.sleep(0)  # gevent's lock is not fair: let queued writers have a turn

    def send_nowait(self, data):
        """Send all of ``data`` if that needs no wait, else nothing; True when sent.

        It needs none when the peer's window holds all of it and the session
        holds its frames for the end of the loop's turn (plain TCP, under
        the cork limit).  Never blocks or switches greenlets, so it may run
        in a hub callback; ``OSError`` as :meth:`sendall`.
        """
        self._check_writable()
        size = len(data)
        session = self.session
        config = session.config
        frames = -(-size // config.max_frame_size) or 1
        if not session._corks(size + frames * wire.HEADER_SIZE):
            return False
        swin = self._swin
        if swin is not None:
            if swin.available() < size:
                return False
            swin.written += size
        session._write(wire.encode_data(config.version, self.id, data, config.max_frame_size))
        return True

    def send(self, data, flags=0):
        self.sendall(data)
        return memoryview(data).nbytes

    def _check_writable(self):
        if self._error is not None:
            raise BrokenPipeError(errno.EPIPE, self._error)
        if self._fin_sent or self._closed:
            raise BrokenPipeError(errno.EPIPE, "stream closed for writing")

    def shutdown(self, how):
        if how in (_stdsocket.SHUT_RD, _stdsocket.SHUT_RDWR):
            self._read_shut = True
            self.session._consumed(self._data.clear())
            self._wake_reader()
        if how in (_stdsocket.SHUT_WR, _stdsocket.SHUT_RDWR) and not self.closed and not self._fin_sent:
            self._fin_sent = True
            self._writable.set()
            try:
                self.session._write(wire.encode_header(self.session.config.version, wire.CMD_FIN, self.id))
            except OSError:
                pass

    def close(self):
        """FIN unless sent, drop unread data, and leave the session."""
        if self._closed:
            return
        self.shutdown(_stdsocket.SHUT_RDWR)
        self._closed = True
        self.session._forget(self)
        self._wake()

    # -- called by the session's reader ----------------------------------------------

    def _feed(self, payload):
        if self._read_shut:
            return
        if self._rwin is not None and not self._rwin.on_data(len(payload)):
            return self._reset("peer overran the stream window")
        self._data.append(payload)
        self.session._buffered += len(payload)
        self._wake_reader()

    def _on_update(self, consumed, window):
        if not self._swin.update(consumed, window):
            return self._reset("peer consumed more than was sent")
        if self._fin_received:
            self._reads_after_fin = True
        self._writable.set()

    def _die(self, reason):
        """The session closed under this stream."""
        self._error = reason
        self._data.clear()
        self._wake()

    def _reset(self, reason):
        """A protocol violation confined to this stream: FIN, drop it, fail its users."""
        log.debug("%s: stream %d reset: %s", self.session.name, self.id, reason)
        session = self.session
        if not self._fin_sent:
            self._fin_sent = True
            session._queue_control(wire.encode_header(session.config.version, wire.CMD_FIN, self.id))
        session._consumed(self._data.clear())
        self._error = "stream reset: %s" % reason
        session._forget(self)
        self._wake()

    def _wake(self):
        self._writable.set()
        self._wake_reader()

    def _wake_reader(self):
        self._readable.set()
        if self.on_readable is not None:
            self.on_readable()
