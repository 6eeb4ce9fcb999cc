"""The engine of event-loop callbacks: its upstream side.

A plain socket route is read and written by libev watchers on its raw
socket; a mux stream route is read from the stream's ``on_readable``
callback and written by a greenlet started for each burst (a stream write
may wait for the peer's window).  :class:`_CallbackUpstreams` is a base of
:class:`~gostgev.handler.http1.callbacks._CallbackSession`; the
non-blocking send helpers here serve both of its sides.
"""

import gevent

from gostgev.handler.http1.routes import hand_back
from gostgev.handler.http1.upstream import _resendable
from gostgev.netio.mux import MuxStream
from gostgev.netio.socketops import CHUNK, socket_watchers


class _CallbackUpstreams:
    """The upstream side of :class:`_CallbackSession`, whose state it uses."""

    # -- to the upstream ----------------------------------------------------------------

    def _start_pump(self, up):
        if type(up.sock) is MuxStream:
            up.sock.on_readable = lambda: self._schedule_stream(up)
            self._schedule_stream(up)
            return
        up.raw = up.sock._sock
        up.reading, up.writing = socket_watchers(up.sock)
        up.reading.start(self._on_upstream_readable, up)

    def _stop_pump(self, up):
        if up.reading is not None:
            up.reading.stop()
            up.writing.stop()
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
            if up.writer is None:
                try:
                    if up.sock.send_nowait(view):
                        return True   # within the window: framed now, no writer needed
                except OSError as exc:
                    self._upstream_failed(up, "send failed: %s" % (exc.strerror or exc))
                    return False
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
        if not _resendable(up):
            return False
        self._stop_pump(up)

        def resend():
            if self._resend(up):
                self._start_pump(up)
            else:
                self._upstream_failed(up, "resend failed")

        gevent.spawn(resend)
        return True

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
        hand_back(up.route, up.sock, reusable, up.sent, up.received)


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
