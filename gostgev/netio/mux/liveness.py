"""Liveness of a :class:`~gostgev.netio.mux.session.MuxSession`: keepalive and stalls.

The keepalive greenlet sends a NOP every ``keepalive_interval``; a hub
timer (the watchdog) closes the session once nothing has been received for
``keepalive_timeout``.  Another hub timer watches the streams we open for
their first answer.

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

import logging
import time

import gevent

from gostgev.codec import mux as wire

#: one logger for the package, named as the module was before it became one
log = logging.getLogger("gostgev.netio.mux")


def _after(delay, callback):
    """A one-shot hub timer: ``callback()`` runs in the hub in ``delay`` seconds."""
    timer = gevent.get_hub().loop.timer(max(delay, 0.0))
    timer.start(callback)
    return timer


class SessionLiveness:
    """Keepalive and stall timers for :class:`MuxSession`, whose ``__init__`` sets up their state."""

    @property
    def stalled(self):
        """A stream we opened got no answer for ``stall_timeout``, and nothing has arrived since."""
        mark = self._stall_mark
        return mark is not None and self.last_rx < mark

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
