"""Reading the relay request that opens a connection, and answering it.

Shared by the servers that speak the relay protocol (the ``relay`` and
``tunnel`` handlers, and the tunnel entrypoint's relay branch).
"""

import gevent

from gostgev.codec import relay
from gostgev.errors import ProtocolError
from gostgev.netio.peek import PeerClosed, read_head

__all__ = ["read_request", "reply", "DEFAULT_REQUEST_TIMEOUT"]

#: default deadline for a relay request (GOST has none)
DEFAULT_REQUEST_TIMEOUT = 10.0


def read_request(conn, timeout, log, data=b""):
    """The relay request that opens ``conn`` and the bytes after it, or ``(None, b"")``.

    ``data``: bytes of it already read.  A malformed request is closed
    without a reply, as GOST does.
    """
    try:
        with gevent.Timeout(timeout, PeerClosed):
            (request, used), data = read_head(conn, relay.parse_request, data)
    except (PeerClosed, OSError):
        log.debug("no relay request, closing")
        return None, b""
    except ProtocolError as exc:
        log.warning("bad relay request, closing: %s", exc)
        return None, b""
    return request, data[used:]


def reply(conn, status):
    """Answer a relay request with ``status`` (no address); a peer already gone is ignored."""
    try:
        conn.sendall(relay.Response(status).encode())
    except OSError:
        pass
