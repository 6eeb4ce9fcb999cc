"""The engine of event-loop callbacks: its client side.

:class:`_CallbackSession` serves a plain client socket or a mux stream
whose routes open plain sockets or mux streams.  This module holds the
session's greenlet and its jobs, reading the client, and writing to it;
the upstream connections' side is :class:`_CallbackUpstreams`
(:mod:`.callback_upstreams`).
"""

import time

import gevent
import gevent.event

from gostgev.errors import RemoteProtocolError
from gostgev.handler.http1.callback_upstreams import _CallbackUpstreams, _flush, _send_each, _send_queued
from gostgev.handler.http1.session import HANDOVER, _SessionBase, _shutdown
from gostgev.netio.mux import MuxStream
from gostgev.netio.socketops import CHUNK, reset, socket_watchers


class _CallbackSession(_CallbackUpstreams, _SessionBase):
    """A plain client socket: bytes move in event-loop callbacks.

    Routes open plain sockets (driven by watchers like the client's) or mux
    streams (read from the stream's arrival callback; written by a greenlet
    started for each burst, since a stream write may wait for the peer's
    window).

    The session's greenlet sleeps while requests keep their route; it wakes
    for what has to wait (opening a connection, a route change or a refusal
    that waits for earlier answers, an upgrade, the end) and goes back to
    sleep once that is done.  No greenlet runs per request, which is what a
    keep-alive connection costs otherwise.
    """

    def run(self, data):
        self.stream = type(self.client) is MuxStream   # the tunnel client's side: a stream from the server
        if self.stream:
            self.raw = None
            self.reading = self.writing = _NoWatcher()
            self.writer = None
            self.scheduled = False
        else:
            self.raw = self.client._sock
            self.reading, self.writing = socket_watchers(self.client)
        self.out = []             # answer bytes the client could not take yet
        self.idle_after_flush = None
        self.close_after_flush = False
        self.head_timer = None    # made when a head first stays incomplete after a read
        self.wake = gevent.event.Event()
        self.job = None
        self.pending = None
        try:
            self.bytes_in += len(data)
            if self._client_data(data) and not self.broken:
                self._sleep_between_jobs()
        finally:
            self.blocking = True
            self._pause_client()
            self.reading.stop()
            self.writing.stop()
            if self.stream and self.writer is not None:
                self.writer.kill(block=True)
            if self.head_timer is not None:
                self.head_timer.close()
            self._finish()
        return self.bytes_in, self.bytes_out

    def _sleep_between_jobs(self):
        while True:
            self.blocking = False
            self._resume_client()
            self.wake.wait()
            self.wake.clear()
            self._pause_client()
            self.blocking = True
            job, self.job = self.job, None
            if job is None or self.broken:
                return
            kind = job[0]
            if kind == "events":
                data, events, index = job[1]
                if self._events(data, events, index) is False or self.broken:
                    return
                if self.tracker.finished:
                    self._drain()
                    return
            elif kind == "eof":
                self._client_eof()
                return
            elif kind == "bad":
                self._bad_request(job[1], job[2])
                return
            else:                 # "drain", "end"
                if kind == "drain":
                    self._drain()
                return

    def _hand_over(self, *job):
        self.job = job
        self._pause_client()
        self.wake.set()

    def _pause_client(self):
        if self.stream:
            self.client.on_readable = None
        else:
            self.reading.stop()

    def _resume_client(self):
        if not self.blocking and not self.broken and (self.up is None or not self.up.out):
            if self.stream:
                self.client.on_readable = self._schedule_client
                self._schedule_client()      # bytes may be waiting already
            else:
                self.reading.start(self._on_client_readable)

    def _schedule_client(self):
        if not self.scheduled:
            self.scheduled = True
            gevent.get_hub().loop.run_callback(self._on_client_scheduled)

    def _on_client_scheduled(self):
        # A stream says once that data came, however much: read while it has some.
        self.scheduled = False
        while self.client.on_readable is not None and self._on_client_readable():
            pass

    def _on_client_readable(self):
        """Take what the client sent; True when something was taken and the callbacks go on."""
        try:
            data = self.client.recv_nowait(CHUNK) if self.stream else self.raw.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data is None:
            return                # a stream with nothing more for now
        if not data:
            return self._hand_over("eof")
        if self.activity is not None:
            self.activity.last = time.monotonic()
        self.bytes_in += len(data)
        answerable = self.tracker.idle
        try:
            events = self.tracker.feed(data)
        except RemoteProtocolError as exc:
            return self._hand_over("bad", exc, answerable)
        try:
            result = self._events(data, events)
        except Exception:
            # This runs in the event loop: a bug must end this connection, not the loop.
            self.log.exception("HTTP session failed")
            self.broken = True
            return self._hand_over("end")
        if result is HANDOVER:
            return self._hand_over("events", self.pending)
        if result is False or self.broken:
            return self._hand_over("end")
        if self.tracker.finished:
            return self._hand_over("drain")
        if self.head_timeout:
            timer = self.head_timer
            if self.tracker.in_head:
                if timer is None:
                    timer = self.head_timer = gevent.get_hub().loop.timer(self.head_timeout)
                if not timer.active:
                    timer.start(self._head_too_slow)
            elif timer is not None:
                timer.stop()
        return True

    def _head_too_slow(self):
        if self.tracker.in_head and not self.broken:
            self.log.info("no complete request head within %gs, closing", self.head_timeout)
            self.broken = True
            reset(self.client)
            self._hand_over("end")

    # -- to the client ------------------------------------------------------------------

    def _to_client(self, up, chunks):
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        up.answer_bytes += len(data)
        if self.stream:
            if self.writer is None:
                try:
                    if self.client.send_nowait(data):
                        return True
                except OSError:
                    self._upstream_failed(up, None)
                    return False
            self.out.append(bytes(data))
            if self.writer is None:
                self._pause_upstream(up)   # the node waits until the stream took it
                self.writer = gevent.spawn(self._write_client_stream)
            return True
        try:
            waiting = _send_queued(self.raw, self.out, data)
        except OSError:
            self._upstream_failed(up, None)
            return False
        if waiting and not self.writing.active:
            self._pause_upstream(up)   # the node waits until the client takes what it has
            self.writing.start(self._on_client_writable)
        return True

    def _write_client_stream(self):
        """Send the answers queued for a stream client, in order; may wait for the peer's window."""
        try:
            _send_each(self.client, self.out)
        except OSError:
            if self.up is not None:
                self._upstream_failed(self.up, None)
            return
        finally:
            self.writer = None
        self._client_drained()

    def _on_client_writable(self):
        try:
            if not _flush(self.raw, self.out):
                return
        except OSError:
            self.out.clear()
            self.writing.stop()
            if self.up is not None:
                self._upstream_failed(self.up, None)
            return
        self.writing.stop()
        self._client_drained()

    def _client_drained(self):
        if self.close_after_flush:
            _shutdown(self.client)
        up = self.up
        if up is not None and up.paused and not up.failed and not up.tracker.raw:
            self._resume_upstream(up)
        waiting, self.idle_after_flush = self.idle_after_flush, None
        if waiting is not None:
            waiting.idle.set()

    def _set_idle(self, up):
        if self.out:
            self.idle_after_flush = up      # "answered" means: and passed on to the client
        else:
            up.idle.set()

    def _close_client(self):
        if self.out:
            self.close_after_flush = True   # not before the answer is out
        else:
            _shutdown(self.client)

    # -- ends ---------------------------------------------------------------------------

    def _before_pipe(self, up):
        self._stop_pump(up)
        if up.writer is not None:
            up.writer.join()      # what the client sent before the switch goes first
        if self.stream and self.writer is not None:
            self.writer.join()
        self.writing.stop()
        if self.out:
            self.client.sendall(b"".join(self.out))
            self.out.clear()


class _NoWatcher:
    """Stands in for the socket watchers of a client that is a mux stream."""

    active = False

    def start(self, *args):
        pass

    stop = close = start
