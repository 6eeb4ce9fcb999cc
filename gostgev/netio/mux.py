"""Multiplexed streams over one connection: smux v1/v2 as GOST v3 uses it.

Architecture (wire rules, windows and config live in :mod:`gostgev.codec.mux`)::

    MuxSession(sock, config, client=...)         one per tunnel connection
    ├── reader greenlet: sock.recv -> FrameBuffer -> _dispatch; never writes
    │     SYN  new MuxStream -> accept queue; reading pauses while the queue is
    │          full (as smux does); past max_streams: refused with FIN
    │     PSH  stream's ChunkQueue; v2: a peer overrunning the window resets that stream;
    │          v1: reading pauses while max_receive_buffer bytes sit unread (TCP back-pressure)
    │     FIN  EOF once the stream's data is drained
    │     UPD  the peer's consumed/window -> wakes that stream's blocked sendall
    ├── keepalive greenlet: a NOP every keepalive_interval
    ├── watchdog timer: nothing received for keepalive_timeout -> close("keepalive timeout")
    ├── stall timer: a stream we opened, then nothing received for stall_timeout -> stalled
    ├── control flusher (short-lived greenlet): FINs the reader had to queue
    └── _write(): one lock, a batch of whole frames per turn, never interleaved
    MuxStream: socket-like recv / sendall / shutdown / close / settimeout

Half-close.  smux has none: a Go peer that receives FIN fails its own writes
and discards data for ids it has closed.  We allow both halves anyway: after
our FIN (``shutdown(SHUT_WR)``) the stream stays readable, and after the
peer's FIN our writes still go out, because a gostgev peer keeps reading
after its own FIN (a Go peer just drops them).  So ``sendall`` raises
BrokenPipeError only once we sent FIN or the stream or session is closed.
A writer whose peer sent FIN and then spent the window waits at most
``HALF_CLOSED_WINDOW_WAIT`` for more, then gets BrokenPipeError, unless the
peer has sent a window update since its FIN (only a gostgev peer does).

Teardown.  EOF, a socket error, a bad frame or a keepalive timeout closes
the session: recv raises ConnectionResetError (unread data is dropped),
sendall raises BrokenPipeError, accept_stream raises SessionClosed, and each
``link_closed`` callback runs once in a greenlet of its own.  The keepalive
timeout counts from the last bytes received, so a silent peer is dropped
``keepalive_timeout`` after it fell silent (smux checks at fixed periods,
which lets it linger up to twice that).

Stalls.  A peer whose process is frozen (SIGSTOP, a hung host) keeps its
TCP connection up and answers nothing.  GOST goes on opening streams on it
until the keepalive timeout (30 s by default), and every visitor sent there
hangs that long.  Yet a live smux v2 peer answers a new stream at once,
however slow the service behind it: its first read of a stream sends a
window update (smux ``tryReadv2``; :class:`MuxStream` does the same).  So
a session on which we opened a stream and then received nothing at all for
``stall_timeout`` (1 s) is *stalled*: :attr:`MuxSession.stalled` holds
until any frame arrives, and the tunnel registry passes the connection over
while another one answers.  On v2, each stream's ``on_stall`` callback, if
set, runs when the session becomes stalled (the HTTP entrypoint sends a
request nothing has answered again elsewhere).  A v1 peer says nothing
until the service behind it answers, so there a stall only steers new
streams elsewhere.  A stall closes nothing: that stays the keepalive's job.
The cost is a timestamp per read of the connection and one per stream we
open, and a hub timer while such streams wait for their first answer.
"""

import errno
import logging
import socket as _stdsocket
import time
from collections import deque

import gevent
from gevent.event import Event
from gevent.lock import Semaphore

from gostgev.codec import mux as wire
from gostgev.codec.mux import MuxConfig
from gostgev.errors import RemoteProtocolError

__all__ = ["MuxConfig", "MuxSession", "MuxStream", "SessionClosed", "StreamLimitError"]

log = logging.getLogger(__name__)

#: bytes asked of the kernel per read of the shared connection
RECV_SIZE = 256 * 1024
#: most payload bytes one sendall writes per turn of the write lock, so
#: other streams and window updates get a turn during a bulk transfer
WRITE_BATCH = 256 * 1024
#: seconds a writer waits for window after the peer's FIN before giving up
HALF_CLOSED_WINDOW_WAIT = 10.0
#: FINs the reader may queue (refusals, resets) before dropping more; only
#: a peer flooding SYNs while not reading our side could reach it
MAX_PENDING_CONTROL = 1024


class SessionClosed(ConnectionError):
    """The mux session is closed; no stream can be opened or accepted."""


class StreamLimitError(ConnectionError):
    """Too many open streams on this session (or its stream ids ran out)."""


def _remaining(deadline):
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _after(delay, callback):
    """A one-shot hub timer: ``callback()`` runs in the hub in ``delay`` seconds."""
    timer = gevent.get_hub().loop.timer(max(delay, 0.0))
    timer.start(callback)
    return timer


class MuxSession:
    """One connection carrying many streams; see the module docstring."""

    def __init__(self, sock, config=None, *, client, name=""):
        self.sock = sock
        self.config = config = config or MuxConfig()
        self.client = client
        self.name = name or ("mux client" if client else "mux server")
        self.close_reason = None
        self._v2 = config.version == 2
        self._next_id = 1 if client else 0  # smux adds 2 before use: 3, 5, ... or 2, 4, ...
        self._streams, self._accepts, self._callbacks = {}, deque(), []
        self._accept_ready, self._closed_event = Event(), Event()
        self._closed = False
        self._wlock = Semaphore()
        self._waiting = 0                   # greenlets queued on _wlock
        self._ctrl, self._flusher = [], None  # frames queued by the reader, and their sender
        self._updates = {}                  # stream id -> consumed count still to report (UPD)
        self._buffered = 0                  # unread bytes across all streams
        # the reader stopped: v1 receive buffer full, or the accept queue full
        self._paused, self._resume = False, Event()
        self._refused = 0                   # SYNs refused at max_streams
        self.last_rx = time.monotonic()     #: when bytes last came from the peer
        self._stall_timeout = config.stall_timeout
        self._unanswered = deque()          # when we opened streams that nothing arrived after
        self._stall_mark = None             # the first of those that waited stall_timeout
        self._stall_timer = None
        try:
            self.remote_address = sock.getpeername() or None
        except (OSError, AttributeError):
            self.remote_address = None
        try:
            sock.settimeout(None)  # liveness is the keepalive's job, not a socket timeout's
        except (OSError, AttributeError):
            pass
        self._reader = gevent.spawn(self._read_loop)
        self._keepalive = self._watchdog = None
        if not config.keepalive_disabled:
            self._keepalive = gevent.spawn(self._ping_loop)
            self._watchdog = _after(config.keepalive_timeout, self._check_alive)

    def __repr__(self):
        return "<MuxSession %s v%d streams=%d%s>" % (
            self.name, self.config.version, len(self._streams), " closed" if self._closed else "")

    @property
    def closed(self):
        return self._closed

    @property
    def num_streams(self):
        return len(self._streams)

    @property
    def stalled(self):
        """A stream we opened got no answer for ``stall_timeout``, and nothing has arrived since."""
        mark = self._stall_mark
        return mark is not None and self.last_rx < mark

    def _gone(self):
        return SessionClosed(errno.EPIPE, "mux session closed: %s" % self.close_reason)

    def open_stream(self):
        """Open a stream (SYN); SessionClosed or StreamLimitError if impossible."""
        if self._closed:
            raise self._gone()
        if len(self._streams) >= self.config.max_streams:
            raise StreamLimitError(errno.EAGAIN, "%d streams open" % len(self._streams))
        if self._next_id + 2 > 0xFFFFFFFF:
            raise StreamLimitError(errno.EAGAIN, "stream ids exhausted")
        self._next_id += 2
        stream = self._streams[self._next_id] = MuxStream(self, self._next_id)
        if self._stall_timeout:
            self._expect_answer()
        try:
            self._write(wire.encode_header(self.config.version, wire.CMD_SYN, stream.id))
        except BrokenPipeError:
            raise self._gone() from None
        return stream

    def accept_stream(self, timeout=None):
        """The next stream the peer opened; None after ``timeout`` seconds."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self._closed:
                raise self._gone()
            if self._accepts:
                if self._paused:
                    self._resume.set()   # the reader may be waiting for room in the queue
                return self._accepts.popleft()
            self._accept_ready.clear()
            if not self._accept_ready.wait(_remaining(deadline)):
                return None

    def close(self, reason=None):
        """Close the connection and fail every stream; idempotent."""
        if self._closed:
            return
        self._closed = True
        self.close_reason = reason or "closed"
        log.debug("%s: session closed: %s", self.name, self.close_reason)
        streams = list(self._streams.values())
        self._streams.clear()
        self._accepts.clear()
        self._buffered = 0
        for stream in streams:
            stream._die("mux session closed: %s" % self.close_reason)
        self._accept_ready.set()
        self._resume.set()
        self._unanswered.clear()
        for timer in (self._watchdog, self._stall_timer):
            if timer is not None:
                timer.close()
        # shutdown first: EOF for the peer even if someone else holds the fd
        for step in (lambda: self.sock.shutdown(_stdsocket.SHUT_RDWR), self.sock.close):
            try:
                step()
            except OSError:
                pass
        current = gevent.getcurrent()
        for glet in (self._reader, self._keepalive):
            if glet is not None and glet is not current:
                glet.kill(block=False)
        self._closed_event.set()
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            gevent.spawn(callback, self)

    def refuse_streams_until_closed(self):
        """For the side that only opens streams: close any the peer opens,
        until the session ends; the session is closed on return."""
        try:
            while True:
                stream = self.accept_stream()
                if stream is not None:
                    stream.close()
        except SessionClosed:
            pass
        finally:
            self.close()

    def wait_closed(self, timeout=None):
        return self._closed_event.wait(timeout)

    def link_closed(self, callback):
        """Call ``callback(session)`` once, in a new greenlet, when the session closes."""
        if self._closed:
            gevent.spawn(callback, self)
        else:
            self._callbacks.append(callback)

    # -- reading --------------------------------------------------------------------

    def _read_loop(self):
        # Frames of any size the wire allows are accepted, as smux does:
        # max_frame_size only limits what we send.
        frames = wire.FrameBuffer(self.config.version)
        limit = self.config.max_receive_buffer
        clock = time.monotonic
        try:
            while True:
                if not self._v2 and self._buffered > limit:
                    self._paused = True
                    while self._buffered > limit and not self._closed:
                        self._resume.clear()
                        self._resume.wait()
                    self._paused = False
                    self.last_rx = clock()    # the pause was ours: the peer's silence meanwhile counts for nothing
                data = self.sock.recv(RECV_SIZE)
                if not data:
                    reason = "connection closed by peer"
                    break
                self.last_rx = clock()
                frames.add_data(data)
                for frame in frames:
                    self._dispatch(frame)
        except RemoteProtocolError as exc:
            reason = "protocol error: %s" % exc
        except OSError as exc:
            reason = "read error: %s" % (exc.strerror or exc)
        self.close(reason)

    def _dispatch(self, frame):
        cmd, sid = frame.cmd, frame.sid
        if cmd == wire.CMD_SYN:
            if sid in self._streams:
                pass  # a repeated SYN is ignored, as in smux
            elif len(self._streams) >= self.config.max_streams:
                self._refused += 1
                # once per session at warning level: a peer flooding SYNs must not flood the log
                log.log(logging.WARNING if self._refused == 1 else logging.DEBUG,
                        "%s: stream %d refused: %d streams open (mux.maxStreams)", self.name, sid, len(self._streams))
                self._queue_control(wire.encode_header(self.config.version, wire.CMD_FIN, sid))
            elif self._wait_for_accept_room():
                self._streams[sid] = stream = MuxStream(self, sid)
                self._accepts.append(stream)
                self._accept_ready.set()
            return
        stream = self._streams.get(sid)
        if stream is None:
            return  # NOP, or a stream that is closed or never existed: discarded
        if cmd == wire.CMD_PSH:
            if frame.payload:
                stream._feed(frame.payload)
        elif cmd == wire.CMD_UPD:
            stream._on_update(*wire.decode_upd(frame.payload))
        elif cmd == wire.CMD_FIN:
            stream._fin_received = True
            stream._writable.set()   # a writer waiting for window must start its half-closed grace
            stream._wake_reader()

    def _wait_for_accept_room(self):
        """Stop reading while the accept queue is full; False if the session closed meanwhile.

        A burst of SYNs (thousands of visitors at once) must wait for the
        acceptor, not be refused: smux blocks its reader the same way.
        """
        backlog = self.config.accept_backlog
        if len(self._accepts) < backlog:
            return True
        self._paused = True
        try:
            while len(self._accepts) >= backlog and not self._closed:
                self._resume.clear()
                self._resume.wait()
        finally:
            self._paused = False
            self.last_rx = time.monotonic()
        return not self._closed

    def _consumed(self, n):
        """``n`` unread bytes left a stream; let a paused v1 reader go on."""
        self._buffered -= n
        if self._paused and self._buffered <= self.config.max_receive_buffer:
            self._resume.set()

    def _forget(self, stream):
        if self._streams.get(stream.id) is stream:
            del self._streams[stream.id]

    # -- writing --------------------------------------------------------------------

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

    def _ping_loop(self):
        nop = wire.encode_frame(self.config.version, wire.CMD_NOP, 0)
        while not self._closed:
            gevent.sleep(self.config.keepalive_interval)
            try:
                self._write(nop)
            except OSError:
                return

    def _check_alive(self):
        # Runs in the hub, so a NOP stuck behind a full socket cannot delay
        # it; due keepalive_timeout after the last bytes received.  A reader
        # paused by a full buffer or accept queue cannot see frames: silence
        # then is not the peer's fault (smux's rule).
        if self._closed:
            return
        now = time.monotonic()
        if self._paused:
            self.last_rx = now
        left = self.last_rx + self.config.keepalive_timeout - now
        if left > 0:
            self._watchdog = _after(left, self._check_alive)
        else:
            gevent.spawn(self.close, "keepalive timeout")

    # -- stalls -----------------------------------------------------------------------

    def _expect_answer(self):
        """A stream was just opened: the peer should show life within stall_timeout."""
        if self.stalled:
            return      # whatever ends the stall answers this stream as well
        self._unanswered.append(time.monotonic())
        if self._stall_timer is None:
            self._stall_timer = _after(self._stall_timeout, self._check_stall)

    def _check_stall(self):
        # Runs in the hub.  Anything received answers every stream opened before it.
        self._stall_timer = None
        waiting, heard = self._unanswered, self.last_rx
        if self._closed or self._paused:
            waiting.clear()     # a paused reader hears nothing: not the peer's fault
            return
        while waiting and waiting[0] <= heard:
            waiting.popleft()
        if not waiting:
            return
        now = time.monotonic()
        left = waiting[0] + self._stall_timeout - now
        if left > 0:
            self._stall_timer = _after(left, self._check_stall)
            return
        self._stall_mark = waiting[0]
        waiting.clear()
        # On v1 a slow service behind the peer looks the same: not worth more than a debug line.
        log.log(logging.INFO if self._v2 else logging.DEBUG, "%s: stalled: a new stream has had no answer for %.1fs",
                self.name, now - self._stall_mark)
        if self._v2:
            for stream in list(self._streams.values()):
                if stream.on_stall is not None:
                    stream.on_stall()


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
        #: only; see the module docstring); it must not block
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
