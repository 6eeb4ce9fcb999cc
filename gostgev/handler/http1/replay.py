"""A request sent again when the mux session under its stream stalls.

A route may offer ``reroute`` (the tunnel's do): when the mux session
under a stream stalls (its client stopped answering, see
:mod:`gostgev.netio.mux`) while the one request in flight has had no byte
of answer, that request is sent once more on another connection, and the
stalled stream is let go.  Only a request that may be repeated goes: a
``GET``, ``HEAD`` or ``OPTIONS``, or any request whose stream the client
has not acknowledged reading at all, kept whole (up to ``REPLAY_LIMIT``
bytes) and sent whole.  A request whose answer has begun waits, as do
pipelined ones.  A frozen client that later wakes up before its connection
is dropped still reads what it had been sent, so a resent ``POST`` may
then reach the service twice; the alternative is waiting for the keepalive
timeout.  A stream kept for later requests is not reused once its session
stalls: the next request opens one elsewhere.

:class:`_Replay` is a base of the shared session: it keeps the request in
flight while it may go again, and resends it from the stream's ``on_stall``.
"""

import gevent

from gostgev.handler.http1.routes import Refused, hand_back
from gostgev.netio.mux import MuxStream

#: methods sent again whatever the peer read of them (RFC 9110 9.2.1's safe methods)
SAFE_METHODS = frozenset(("GET", "HEAD", "OPTIONS"))
#: the most bytes of a request kept to send it again should its connection stall
REPLAY_LIMIT = 64 * 1024


class _Replay:
    """Rerouting a request whose mux stream stalled; the state is the session's and the upstream's."""

    def _watch_stall(self, up):
        if up.route.reroute is not None and type(up.sock) is MuxStream:
            up.stall_watch = True
            up.sock.on_stall = lambda: self._on_stall(up)

    def _keep_body(self, up, chunk):
        """Keep a body chunk of the request in flight, while the whole request stays small."""
        if up.asked[-1][4] > REPLAY_LIMIT:
            up.replay = None
        else:
            up.replay.append(bytes(chunk))

    def _on_stall(self, up):
        """``up``'s mux session stalled (a hub callback): resend the request if it may go again."""
        if up.replay is not None and self._unanswered(up, up.replay_at):
            gevent.spawn(self._replay, up, up.replay, up.replay_at, up.replay_safe)
            up.replay = None      # once

    def _unanswered(self, up, at):
        """The one request in flight on ``up`` (sent when ``up.received`` was ``at``) is
        whole, all sent, unanswered, and its stream's session is still stalled."""
        stream = up.sock
        return (up is self.up and not up.failed and not self.broken and up.received == at
                and up.tracker.pending == 1 and self.tracker.idle and not up.out and up.writer is None
                and type(stream) is MuxStream and stream.session.stalled)

    def _replay(self, up, replay, at, safe):
        """Send the request again on a connection that answers; the stalled stream is let go."""
        try:
            sock, fields = up.route.reroute()
        except Refused:
            return                # no other connection answers: wait on this one
        old = up.sock
        if not (self._unanswered(up, at) and (safe or old.unacknowledged)):
            return hand_back(up.route, sock)    # something moved while the new stream opened
        self._stop_pump(up)
        old.on_stall = None
        up.sock, up.fields = sock, fields
        up.paused = False
        self.log.info("request sent again: its tunnel connection stalled", fields=fields)
        try:
            sock.sendall(b"".join(replay))
        except OSError as exc:
            self._upstream_failed(up, "send failed: %s" % (exc.strerror or exc))
        else:
            self._watch_stall(up)
            self._start_pump(up)
        hand_back(up.route, old)
