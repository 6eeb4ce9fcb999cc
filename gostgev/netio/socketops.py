"""What the copy loops of :mod:`gostgev.netio.pipe` share: the read size, a
gevent socket's own watchers, the idle watchdog, and ending a connection
(a quiet shutdown, or a reset that its peer sees as an error).
"""

import _socket
import socket as _stdsocket
import struct
import time

import gevent
from gevent.socket import socket as GeventSocket

__all__ = ["CHUNK", "socket_watchers", "watch_idle", "shutdown_quietly", "reset"]

#: bytes read per recv(); large enough that bulk copies are cheap per byte
CHUNK = 128 * 1024


class _Activity:
    __slots__ = ("last",)

    def __init__(self):
        self.last = time.monotonic()


def socket_watchers(sock):
    """The read and write watchers of the gevent socket ``sock``, for callbacks.

    gevent waits on these same two in its blocking calls (``recv``,
    ``sendall``), and closes them with the socket; a callback started on
    one must be stopped before the socket is used in blocking style or
    closed.  Using them saves two watchers per connection, and the
    ``fcntl`` that libev makes for each.
    """
    return sock._read_event, sock._write_event


def watch_idle(idle_timeout, a, b):
    """``(activity, watchdog timer)`` cutting ``a`` and ``b`` when idle, or ``(None, None)`` without a timeout."""
    if not idle_timeout:
        return None, None
    activity = _Activity()
    watchdog = gevent.get_hub().loop.timer(idle_timeout / 2, idle_timeout / 2)
    watchdog.start(_check_idle, activity, idle_timeout, a, b)
    return activity, watchdog


def _check_idle(activity, idle_timeout, a, b):
    if time.monotonic() - activity.last >= idle_timeout:
        shutdown_quietly(a, _stdsocket.SHUT_RDWR)
        shutdown_quietly(b, _stdsocket.SHUT_RDWR)


def shutdown_quietly(sock, how):
    """``sock.shutdown(how)``, ignoring a socket that is gone already."""
    try:
        sock.shutdown(how)
    except OSError:
        pass


_LINGER_RESET = struct.pack("ii", 1, 0)


def reset(sock):
    """End a connection whose other half failed, so that its peer sees an error.

    A FIN would tell the peer the transfer was complete: a download cut
    short by a reset backend or a dead tunnel would look whole to any
    protocol that ends at EOF.  A TCP socket gets SO_LINGER 0, so that
    closing it sends RST, and SHUT_RD, which sends nothing but wakes its
    readers.  A mux stream cannot be reset on the wire (smux has no RST):
    it gets its FIN.
    """
    if isinstance(sock, (GeventSocket, _socket.socket)):   # _socket: also gevent's raw sockets
        try:
            sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_LINGER, _LINGER_RESET)
        except OSError:
            pass
        shutdown_quietly(sock, _stdsocket.SHUT_RD)
    else:
        shutdown_quietly(sock, _stdsocket.SHUT_RDWR)
