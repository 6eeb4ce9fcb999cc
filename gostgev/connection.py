"""One client connection while a handler serves it, and what serving it came to.

A :class:`Connection` is built per accepted connection (in the manner of
pywsgi's handler object) and handed to ``Handler.handle``.  It holds what
every handler needs about its client, and owns the three things they all
do with one:

* :meth:`Connection.sniff`: read the first request head (HTTP Host, TLS
  SNI, relay), or log one line why not and tell a malformed HTTP client so;
* :meth:`Connection.refuse`: log one line and tell an HTTP client why, in
  its own protocol (anything else is just closed);
* :meth:`Connection.relay_to`: send what must go first, pipe both ways,
  close the upstream, log one line and count the bytes.

A handler returns an :class:`Outcome`: :data:`DONE`, or :func:`failed`
with the reason.  The service counts every failed outcome in
``gost_service_handler_errors_total``.
"""

import time

from gostgev.addr import format_address
from gostgev.codec import relay
from gostgev.codec.http import simple_response
from gostgev.codec.sniff import HTTP
from gostgev.metrics import OFF
from gostgev.netio.close import close_gently
from gostgev.netio.peek import MalformedHead, PeerClosed, SniffTimeout, sniff
from gostgev.netio.pipe import pipe
from gostgev.netio.relayio import reply

__all__ = ["Connection", "Outcome", "DONE", "failed", "relay_refused", "HTTP_PROBE_SECONDS"]

#: seconds a connection refused before anything was read is watched for an
#: HTTP request, so that an HTTP client gets a status line instead of a bare close
HTTP_PROBE_SECONDS = 0.5


class Outcome:
    """How serving a connection ended: ``ok``, or failed with a ``reason``."""

    __slots__ = ("ok", "reason")

    def __init__(self, ok, reason=None):
        self.ok = ok
        self.reason = reason

    def __repr__(self):
        return "DONE" if self.ok else "failed(%r)" % self.reason


#: the connection was served (whatever the client or upstream did in it)
DONE = Outcome(True)


def failed(reason):
    """The connection was refused or could not be served; ``reason`` in words."""
    return Outcome(False, reason)


def relay_refused(sock, status):
    """Answer a relay request with ``status``; the failed outcome naming it."""
    reply(sock, status)
    return failed("relay %s" % relay.STATUS_NAMES.get(status, status))


class Connection:
    __slots__ = ("sock", "address", "peer", "target", "log", "service", "metrics", "started", "sniffed", "sent",
                 "received", "forwarded_by")

    def __init__(self, sock, address, log, service, target=None, metrics=OFF):
        self.sock = sock          #: the client's socket (or TLS/WebSocket/mux stream)
        self.address = address    #: the client's (host, port), from a PROXY header if one came
        self.peer = format_address(address)
        self.target = target      #: a tunnel stream header's host:port, else None
        self.log = log.bind(remote=self.peer)
        self.service = service    #: the service's name, for metrics
        self.metrics = metrics    #: the process's metrics (gostgev.metrics), OFF when there are none
        self.started = time.monotonic()
        self.sniffed = None       #: what sniff() read, once it has
        self.sent = self.received = 0   #: client bytes sent upstream, and answered, by relay_to
        self.forwarded_by = None  #: the cluster node that forwarded this connection here, if one did

    def sniff(self, timeout):
        """The client's first head (:class:`gostgev.netio.peek.Sniffed`), or None after one log line."""
        try:
            self.sniffed = sniff(self.sock, timeout)
            return self.sniffed
        except SniffTimeout:
            self.log.info("no complete request head within %gs, closing", timeout)
        except PeerClosed:
            self.log.debug("client closed before sending a request head")
        except MalformedHead as exc:
            self.log.warning("%s", exc)
            # An HTTP client is told why; a TLS client cannot read plain text.
            if exc.protocol == HTTP:
                close_gently(self.sock, simple_response(400, "gostgev: bad request"))
        except OSError as exc:
            self.log.debug("client error while sniffing: %s", exc)
        return None

    def refuse(self, status, message, detail=None, probe=0.0):
        """Log why (``detail``, else ``message``) and tell an HTTP client ``status`` and ``message``.

        ``probe``: seconds a connection that was never sniffed is watched
        for an HTTP request first.  Returns the failed outcome.
        """
        self.log.warning("%s", detail or message)
        self.tell(status, message, probe)
        return failed(message)

    def tell(self, status, message, probe=0.0):
        """Tell an HTTP client ``status`` and ``message`` (nothing logged); others are just closed."""
        sniffed = self.sniffed
        if sniffed is None and probe:
            try:
                sniffed = sniff(self.sock, probe)
            except (SniffTimeout, PeerClosed, MalformedHead, OSError):
                sniffed = None
        if sniffed is not None and sniffed.protocol == HTTP:
            close_gently(self.sock, simple_response(status, "gostgev: " + message))

    def relay_to(self, upstream, header=b"", replay=b"", idle_timeout=None, fields=None):
        """Carry the connection to ``upstream`` until either side ends; the outcome.

        ``header`` (ours, e.g. a PROXY or stream header) and ``replay`` (the
        client's bytes already read) go first.  The upstream is closed
        after; one line is logged (with ``fields``) and the bytes counted.
        """
        up = down = 0
        error = None
        try:
            if header or replay:
                upstream.sendall(header + replay)
            up, down = pipe(self.sock, upstream, idle_timeout)
        except OSError as exc:
            error = exc.strerror or str(exc)
        finally:
            upstream.close()
        self.sent, self.received = len(replay) + up, down
        self.log.info("connection closed" if error is None else "connection failed", fields={
            **(fields or {}), "inputBytes": self.sent, "outputBytes": down,
            "duration": "%.3fs" % (time.monotonic() - self.started), "error": error})
        self.metrics.transfer(self.service, self.sent, down)
        return DONE if error is None else failed(error)
