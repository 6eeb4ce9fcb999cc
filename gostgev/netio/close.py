"""Ending a connection so that the peer actually reads our last words."""

import socket as _stdsocket

import gevent

__all__ = ["close_gently"]

#: how long and how much we keep draining a client after an error response;
#: closing with unread input makes the kernel send RST, and the client may
#: then lose the response it has not read yet
LINGER_SECONDS = 2.0
LINGER_BYTES = 256 * 1024


def close_gently(sock, last_words=b""):
    """Send ``last_words``, half-close, and drain the peer for a short while.

    The socket is left open for the owner to close.
    """
    try:
        if last_words:
            sock.sendall(last_words)
        sock.shutdown(_stdsocket.SHUT_WR)
        drained = 0
        with gevent.Timeout(LINGER_SECONDS, False):
            while drained < LINGER_BYTES:
                chunk = sock.recv(64 * 1024)
                if not chunk:
                    break
                drained += len(chunk)
    except OSError:
        pass
