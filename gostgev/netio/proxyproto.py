"""PROXY protocol on live connections: take one from a load balancer, send one to a backend.

Accepting is optional per connection, as GOST does it: a connection that
does not start with a header is served as it is.  That means a client
reaching the port directly can claim any address, so enable it only where
every connection comes through a trusted balancer.
"""

import gevent

from gostgev.codec.proxyproto import encode_v1, encode_v2, looks_like_proxy, parse_proxy_header
from gostgev.netio.peek import PeerClosed, read_head, with_prefix

__all__ = ["accept_proxy_header", "proxy_header", "HEADER_TIMEOUT"]

#: seconds to wait for a PROXY header (GOST's entrypoint uses 10 s too)
HEADER_TIMEOUT = 10.0


def accept_proxy_header(conn, address, timeout=HEADER_TIMEOUT):
    """Consume a leading PROXY header; ``(conn, client address)``.

    Raises PeerClosed (also on timeout) or RemoteProtocolError.
    """
    with gevent.Timeout(timeout, PeerClosed):
        present, data = read_head(conn, looks_like_proxy)
        if not present:
            return with_prefix(conn, data), address
        header, data = read_head(conn, parse_proxy_header, data)
    rest = data[header.length:]
    return with_prefix(conn, rest), (header.src if header.src else address)


def proxy_header(version, src, dst):
    """The header to send upstream; non-IP hosts become 0.0.0.0 (GOST's rule)."""
    return encode_v1(src, dst) if version == 1 else encode_v2(src, dst)


