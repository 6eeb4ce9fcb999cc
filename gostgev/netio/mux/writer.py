"""The write side of a :class:`~gostgev.netio.mux.session.MuxSession`.

Every frame goes out through :meth:`SessionWrites._write`: one lock, a
batch of whole frames per turn, never interleaved.  The reader never
writes: the frames it has to send (FINs of refused or reset streams, and
window updates reported from code that must not block) are queued here,
and a short-lived flusher greenlet sends them.
"""

import errno

import gevent

from gostgev.codec import mux as wire

#: FINs the reader may queue (refusals, resets) before dropping more; only
#: a peer flooding SYNs while not reading our side could reach it
MAX_PENDING_CONTROL = 1024


class SessionWrites:
    """Writing for :class:`MuxSession`, whose ``__init__`` sets up the state used here."""

    def _write(self, data):
        """Send whole frames under the write lock; BrokenPipeError if the session is gone."""
        if self._closed:
            raise BrokenPipeError(errno.EPIPE, "mux session closed: %s" % self.close_reason)
        self._waiting += 1
        try:
            self._wlock.acquire()
        finally:
            self._waiting -= 1
        view = memoryview(data)
        try:
            while view:
                view = view[self.sock.send(view):]
        except OSError as exc:
            self._wlock.release()
            self.close("write error: %s" % (exc.strerror or exc))
            raise BrokenPipeError(errno.EPIPE, "mux session closed: %s" % self.close_reason) from exc
        except BaseException:
            # Interrupted between two sends (gevent.Timeout, kill): the peer
            # has part of a frame, so the rest must follow or the session is
            # garbage.  A helper sends it and then releases the lock.
            if view:
                gevent.spawn(self._finish_write, view)
            else:
                self._wlock.release()
            raise
        self._wlock.release()

    def _finish_write(self, view):
        try:
            while view:
                view = view[self.sock.send(view):]
        except OSError as exc:
            self.close("write error: %s" % (exc.strerror or exc))
        finally:
            self._wlock.release()

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
