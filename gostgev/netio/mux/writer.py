"""The write side of a :class:`~gostgev.netio.mux.session.MuxSession`.

Every frame goes out through :meth:`SessionWrites._write`, in order, whole,
never interleaved.  On a plain TCP connection the frames written during
one turn of the event loop (the SYN, stream header and request of a new
visitor; the answers of many streams at once) are held and go out in one
``send`` when the turn ends: one system call where there were several,
and no added wait, since the flush runs before the loop sleeps.  A writer
that finds more than ``CORK_LIMIT`` bytes held sends them itself, under
the write lock, and waits for the socket as an unheld write would: that
is the back-pressure.  TLS and WebSocket connections are written at once.

The reader never writes: the frames it has to send (FINs of refused or
reset streams, and window updates reported from code that must not block)
are queued here, and a short-lived flusher greenlet sends them.
"""

import errno

import gevent

from gostgev.codec import mux as wire
from gostgev.netio.peek import write_socket

#: FINs the reader may queue (refusals, resets) before dropping more; only
#: a peer flooding SYNs while not reading our side could reach it
MAX_PENDING_CONTROL = 1024
#: bytes of frames held for the end of the loop's turn; a writer that would
#: hold more sends them itself and waits for the socket
CORK_LIMIT = 64 * 1024


class SessionWrites:
    """Writing for :class:`MuxSession`, whose ``__init__`` calls :meth:`_init_writes`."""

    def _init_writes(self, sock):
        plain = write_socket(sock)
        self._raw = plain._sock if plain is not None else None   # non-blocking, for the loop's flush
        self._out = []                 # frames held for the flush, in order
        self._out_bytes = 0
        self._flush_due = False
        self._loop = gevent.get_hub().loop

    def _write(self, data):
        """Send whole frames (held until the loop's turn ends, on plain TCP); BrokenPipeError if
        the session is gone.  A failed send closes the session."""
        if self._closed:
            raise BrokenPipeError(errno.EPIPE, "mux session closed: %s" % self.close_reason)
        if self._raw is None:
            self._out.append(data)
            self._drain()
            return
        self._out.append(data)
        self._out_bytes += len(data)
        if self._out_bytes >= CORK_LIMIT:
            self._drain()
        elif not self._flush_due:
            self._flush_due = True
            self._loop.run_callback(self._flush_held)

    def _corks(self, size):
        """True when ``size`` more bytes of frames would be held for the loop's flush (no wait)."""
        return self._raw is not None and not self._closed and self._out_bytes + size < CORK_LIMIT

    def _drain(self):
        """Send every held frame from this greenlet, under the write lock (may wait)."""
        self._waiting += 1
        try:
            self._wlock.acquire()
        except BaseException:
            self._schedule_flush()   # what this writer held still goes, in its turn
            raise
        finally:
            self._waiting -= 1
        try:
            self._send_held()
        finally:
            self._wlock.release()

    def _send_held(self):
        # Under the write lock.  What others hold meanwhile goes out before it is released.
        while self._out and not self._closed:
            data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
            self._out, self._out_bytes = [], 0
            view = memoryview(data)
            try:
                while view:
                    view = view[self.sock.send(view):]
            except OSError as exc:
                self.close("write error: %s" % (exc.strerror or exc))
                raise BrokenPipeError(errno.EPIPE, "mux session closed: %s" % self.close_reason) from exc
            except BaseException:
                # Interrupted between two sends (gevent.Timeout, kill): the peer has part of a
                # frame, so the rest goes first, before anything else, at the next flush.
                if view:
                    self._out.insert(0, bytes(view))
                    self._out_bytes += len(view)
                    self._schedule_flush()
                raise

    def _schedule_flush(self):
        if not self._flush_due and not self._closed:
            self._flush_due = True
            self._loop.run_callback(self._flush_held)

    def _flush_held(self):
        """End of the loop's turn: one non-blocking send of what is held (an event-loop callback)."""
        self._flush_due = False
        if not self._out or self._closed or self._wlock.locked():
            return   # the lock's holder sends what is held before it lets go
        data = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out, self._out_bytes = [], 0
        try:
            sent = self._raw.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self.close("write error: %s" % (exc.strerror or exc))
            return
        if sent < len(data):
            # The socket is full: a greenlet waits for it (the rest first, in order).
            self._out.insert(0, data[sent:])
            self._out_bytes += len(data) - sent
            gevent.spawn(self._drain_quietly)

    def _drain_quietly(self):
        try:
            self._drain()
        except OSError:
            pass   # the session is closed, and says why

    def _flush_on_close(self):
        """Last words before the socket closes: what is held, if the socket takes it now."""
        if self._out and self._raw is not None and not self._wlock.locked():
            try:
                self._raw.send(b"".join(self._out))
            except OSError:
                pass
        self._out, self._out_bytes = [], 0

    def _queue_control(self, frame):
        """Send a frame on behalf of the reader without blocking it on the socket."""
        if self._closed or len(self._ctrl) >= MAX_PENDING_CONTROL:
            return
        self._ctrl.append(frame)
        self._start_flusher()

    def _queue_update(self, sid, consumed):
        """Report a stream's consumed count later, from code that must not block.

        Only the newest count of a stream matters (UPD carries totals), so
        pending updates are bounded by the number of streams, never dropped.
        """
        if not self._closed:
            self._updates[sid] = consumed
            self._start_flusher()

    def _start_flusher(self):
        if self._flusher is None:
            self._flusher = gevent.spawn(self._flush_control)

    def _flush_control(self):
        try:
            while (self._ctrl or self._updates) and not self._closed:
                frames, self._ctrl = self._ctrl, []
                if self._updates:
                    updates, self._updates = self._updates, {}
                    window = self.config.max_stream_buffer
                    frames.extend(wire.encode_upd(2, sid, consumed, window) for sid, consumed in updates.items())
                self._write(b"".join(frames))
        except OSError:
            pass
        finally:
            self._flusher = None
