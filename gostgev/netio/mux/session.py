"""The mux session: one connection carrying many streams.

Opening, accepting and closing streams, and the reader greenlet with its
dispatch of frames and its back-pressure (see the package docstring for the
whole picture).  The write side (:mod:`.writer`) and the keepalive and
stall timers (:mod:`.liveness`) are base classes of :class:`MuxSession`.

Teardown.  EOF, a socket error, a bad frame or a keepalive timeout closes
the session: recv raises ConnectionResetError (unread data is dropped),
sendall raises BrokenPipeError, accept_stream raises SessionClosed, and each
``link_closed`` callback runs once in a greenlet of its own.  The keepalive
timeout counts from the last bytes received, so a silent peer is dropped
``keepalive_timeout`` after it fell silent (smux checks at fixed periods,
which lets it linger up to twice that).
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
from gostgev.netio.mux.liveness import SessionLiveness, _after
from gostgev.netio.mux.stream import MuxStream, _remaining
from gostgev.netio.mux.writer import SessionWrites

#: one logger for the package, named as the module was before it became one
log = logging.getLogger("gostgev.netio.mux")

#: bytes asked of the kernel per read of the shared connection
RECV_SIZE = 256 * 1024


class SessionClosed(ConnectionError):
    """The mux session is closed; no stream can be opened or accepted."""


class StreamLimitError(ConnectionError):
    """Too many open streams on this session (or its stream ids ran out)."""


class MuxSession(SessionWrites, SessionLiveness):
    """One connection carrying many streams; see the package docstring."""

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
        self._init_writes(sock)
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
    def buffered(self):
        """Bytes received on all streams and not read yet."""
        return self._buffered

    @property
    def paused(self):
        """The reader has stopped taking frames off the connection (v1 receive buffer or accept queue full)."""
        return self._paused

    @property
    def waiting(self):
        """Greenlets queued to write to the connection."""
        return self._waiting

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
        self._flush_on_close()
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
