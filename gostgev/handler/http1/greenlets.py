"""The engine with a greenlet per upstream (TLS or WebSocket clients, chains).

:class:`_Session` reads the client in the session's greenlet and each
upstream connection in a greenlet of its own (the pump), with blocking
sends both ways.
"""

import time

import gevent
from gevent.socket import socket as GeventSocket

from gostgev.handler.http1.routes import hand_back
from gostgev.handler.http1.session import _SessionBase, _shutdown
from gostgev.netio.socketops import CHUNK


class _Session(_SessionBase):
    """A client of any kind; each upstream is read by a greenlet of its own."""

    def run(self, data):
        try:
            while data:
                self.bytes_in += len(data)
                if not self._client_data(data) or self.broken:
                    break
                data = self._recv_client()
            else:
                self._client_eof()
        finally:
            self._finish()
        return self.bytes_in, self.bytes_out

    def _recv_client(self):
        try:
            data = self.client.recv(CHUNK)
        except OSError:
            return b""
        if self.activity is not None:
            self.activity.last = time.monotonic()
        return data

    def _send_up(self, view):
        up = self.up
        try:
            send_all(up.sock, view)
            up.sent += len(view)
            return True
        except OSError as exc:
            if up.first_raw and not up.received:
                return True       # the pump finds the connection dead and resends on a fresh one
            self._upstream_failed(up, "send failed: %s" % (exc.strerror or exc))
            return False

    # -- the upstream's bytes ------------------------------------------------------------

    def _start_pump(self, up):
        up.pump = gevent.spawn(self._pump, up)

    def _before_pipe(self, up):
        up.pump.join()            # it stops right after relaying the switch

    def _pump(self, up):
        """Relay ``up``'s responses to the client, counting them off."""
        while True:
            try:
                data = up.sock.recv(CHUNK)
            except OSError as exc:
                if self._resend(up):
                    continue
                return self._upstream_failed(up, exc.strerror or str(exc))
            if not data and not up.received and self._resend(up):
                continue
            if not self._upstream_data(up, data):
                return

    def _set_idle(self, up):
        up.idle.set()

    def _close_client(self):
        _shutdown(self.client)

    def _to_client(self, up, chunks):
        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        try:
            send_all(self.client, data)
        except OSError:
            self._upstream_failed(up, None)
            return False
        up.answer_bytes += len(data)
        return True

    def _stop_pump(self, up):
        if up.pump is not None:
            up.pump.kill(block=True)

    def _release(self, up):
        reusable = not up.failed and up.tracker.keep_alive and not up.tracker.pending and not up.tracker.raw
        if up.pump is not None:
            if not reusable:
                _shutdown(up.sock)
            up.pump.kill(block=True)
        hand_back(up.route, up.sock, reusable, up.sent, up.received)


def send_all(sock, data):
    """``sock.sendall(data)``, with one plain ``send`` first on a gevent socket.

    gevent's ``sendall`` asks the kernel for the send buffer size on every
    call (a system call); a request or an answer almost always fits in one
    ``send``, so only what is left goes through ``sendall``.
    """
    if type(sock) is GeventSocket:
        try:
            sent = sock._sock.send(data)
        except BlockingIOError:
            sent = 0
        if sent == len(data):
            return
        data = memoryview(data)[sent:]
    sock.sendall(data)
