"""One HTTP request at a time, on gevent sockets, for the control plane.

The service discovery plugin (and live sources) ask small questions over
HTTP.  The standard library's ``http.client`` does the protocol; it is
given gevent's sockets and TLS, so that a call waits in gevent and not in
the kernel, without monkey-patching anything.
"""

import http.client
from urllib.parse import urlsplit

from gevent import socket, ssl

__all__ = ["HttpError", "request", "MAX_BODY"]

#: the largest answer read (a rules file, a list of records)
MAX_BODY = 4 << 20


class HttpError(Exception):
    """A request that failed (connection, timeout, a bad URL or answer)."""


def request(method, url, body=None, timeout=5.0, headers=None):
    """``(status, body bytes)``; HttpError when the request could not be made."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError("not an http(s) URL: %r" % url)
    if parts.scheme == "https":
        conn = http.client.HTTPSConnection(parts.hostname, parts.port, timeout=timeout,
                                           context=ssl.create_default_context())
    else:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    conn._create_connection = socket.create_connection   # gevent's: the call waits cooperatively
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    sent = dict(headers or {})
    if body is not None:
        sent.setdefault("Content-Type", "application/json")
    try:
        conn.request(method, target, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read(MAX_BODY + 1)
        if len(data) > MAX_BODY:
            raise HttpError("%s %s: answer longer than %d bytes" % (method, url, MAX_BODY))
        return response.status, data
    except (OSError, http.client.HTTPException) as exc:
        raise HttpError("%s %s: %s" % (method, url, exc or type(exc).__name__)) from None
    finally:
        conn.close()
