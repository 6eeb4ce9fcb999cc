"""One HTTP request at a time, on gevent sockets, for the control plane.

The service-discovery plugin and live sources ask small questions over
HTTP.  The standard library's ``http.client`` does the protocol; its
connections are opened with gevent's sockets and TLS, so that a call waits
in gevent and not in the kernel, without monkey-patching anything.
"""

import http.client
from urllib.parse import urlsplit

import gevent
from gevent import socket, ssl

__all__ = ["HttpError", "request", "client_context", "MAX_BODY"]

#: the largest answer read unless the caller says otherwise
MAX_BODY = 4 << 20


class HttpError(Exception):
    """A request that failed (connection, timeout, a bad URL or answer)."""


class _HTTPConnection(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.create_connection((self.host, self.port), self.timeout, self.source_address)


class _HTTPSConnection(http.client.HTTPSConnection):
    def connect(self):
        self.sock = socket.create_connection((self.host, self.port), self.timeout, self.source_address)
        self.sock = self._context.wrap_socket(self.sock, server_hostname=self.host)


def client_context():
    """A verifying TLS client context of gevent's own: ``ssl.create_default_context()``
    gives the standard library's, whose handshake would block the hub."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_default_certs()
    return context


def request(method, url, body=None, timeout=5.0, headers=None, max_body=MAX_BODY):
    """``(status, reason, body bytes)`` within ``timeout`` seconds in all; HttpError when the
    request could not be made or the answer is longer than ``max_body``."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise HttpError("not an http(s) URL: %r" % url)
    if parts.scheme == "https":
        conn = _HTTPSConnection(parts.hostname, parts.port, timeout=timeout, context=client_context())
    else:
        conn = _HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    target = (parts.path or "/") + ("?" + parts.query if parts.query else "")
    sent = {"User-Agent": "gostgev", **(headers or {})}
    if body is not None:
        sent.setdefault("Content-Type", "application/json")
    timer = gevent.Timeout(timeout)
    timer.start()
    try:
        conn.request(method, target, body=body, headers=sent)
        response = conn.getresponse()
        data = response.read(max_body + 1)
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        raise HttpError("%s: no answer within %gs" % (url, timeout)) from None
    except (OSError, http.client.HTTPException) as exc:
        raise HttpError("%s: %s" % (url, exc or type(exc).__name__)) from None
    finally:
        timer.close()
        conn.close()
    if len(data) > max_body:
        raise HttpError("%s: answer longer than %d bytes" % (url, max_body))
    return response.status, response.reason, data
