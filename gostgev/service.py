"""A service = listener + handler.

The listener delivers connections (a StreamServer's accepted sockets, or a
tunnel client's streams), one greenlet each, to ``_handle``.  Handler
exceptions are logged here, once, so that one bad connection never takes the
service down.
"""

from dataclasses import dataclass, field

from gostgev import metrics
from gostgev.addr import format_address
from gostgev.codec.http import simple_response
from gostgev.codec.sniff import HTTP
from gostgev.handler import HANDLERS, Change
from gostgev.ingress import IngressStore
from gostgev.limits import ConnLimiter, RateLimitedLog
from gostgev.listener import LISTENERS
from gostgev.logsetup import get_logger
from gostgev.netio.close import close_gently
from gostgev.netio.peek import MalformedHead, PeerClosed, SniffTimeout, sniff

__all__ = ["Service", "ServiceContext", "ServiceError", "Gate", "Change"]

#: seconds a refused connection is watched for an HTTP request, so that an
#: HTTP client over a limit gets a 429 instead of a bare close
REFUSAL_PROBE_SECONDS = 0.5


class Gate:
    """Admission and connection limits in front of a handler."""

    def __init__(self, config, log):
        self.warn = RateLimitedLog(log)
        self.climits = None
        self.limiter = None
        self.update(config)

    def update(self, config):
        """New admission and limits for new connections (a reload)."""
        self.admission = config.admission
        if config.climits != self.climits:
            # Live connections release on the limiter that counted them.
            self.climits = config.climits
            self.limiter = ConnLimiter.parse(config.climits) if config.climits else None

    def wrap(self, handle):
        def gated(conn, address, *args):
            ip = address[0]
            if self.admission is not None and not self.admission.allows(ip):
                self.warn.warning("admission", "client %s refused by admission, closing", ip)
                return
            limiter = self.limiter
            if limiter is None:
                return handle(conn, address, *args)
            reason = limiter.acquire(ip)
            if reason is not None:
                self.warn.warning("climiter", "%s, refusing %s", reason, ip)
                _tell_http_client(conn, 429, "too many connections")
                return
            try:
                return handle(conn, address, *args)
            finally:
                limiter.release(ip)

        return gated


def _tell_http_client(conn, status, message):
    try:
        sniffed = sniff(conn, REFUSAL_PROBE_SECONDS)
    except (SniffTimeout, PeerClosed, MalformedHead, OSError):
        return
    if sniffed.protocol == HTTP:
        close_gently(conn, simple_response(status, "gostgev: " + message))


class ServiceError(Exception):
    """A service could not start (address in use, permission...)."""


@dataclass
class ServiceContext:
    """What the services of one process share, given to each service (no module globals)."""

    #: the live ingress of each name
    ingresses: IngressStore = field(default_factory=IngressStore)
    #: this process's member of the ``--workers`` cluster, or None
    cluster: object = None
    #: bind listening sockets with SO_REUSEPORT (``--workers``)
    reuse_port: bool = False


class Service:
    """A listener and a handler.

    Starting has two steps, so that a reload can build every new service
    before it retires any old one: :meth:`bind` does everything that can
    fail (sockets, certificates); :meth:`serve` starts accepting and cannot
    fail for a reason of the configuration.  :meth:`start` is both.
    """

    def __init__(self, config, context=None):
        self.config = config
        self.context = context if context is not None else ServiceContext()
        #: the live ingresses, shared with the other services of the process
        self.ingresses = self.context.ingresses
        self.log = get_logger("gostgev.service", service=config.name,
                              handler=config.handler.type, listener=config.listener.type)
        self.handler = HANDLERS.get(config.handler.type)(config, self.log)
        self.listener = LISTENERS.get(config.listener.type)(config, self.log, reuse_port=self.context.reuse_port)
        self.gate = Gate(config, self.log)

    @property
    def address(self):
        """The bound ``(host, port, ...)``; useful when the config asked for port 0."""
        return self.listener.address

    def start(self, inherit=None):
        self.bind(inherit)
        self.serve()

    def bind(self, inherit=None):
        """Bind every socket (or take it over through ``inherit``); ServiceError if one cannot be."""
        try:
            self.handler.bind(self, inherit)
            self.listener.bind(inherit)
        except (OSError, ValueError) as exc:
            self.unbind()
            raise ServiceError("service %s: cannot listen on %s: %s"
                               % (self.config.name, getattr(exc, "where", self.config.addr),
                                  getattr(exc, "strerror", None) or exc)) from None

    def unbind(self):
        """Give up what :meth:`bind` took, for a service that will never serve."""
        self.listener.close()
        self.handler.close()

    def serve(self):
        self.handler.start(self)
        self.listener.start(self._handle, gate=self.gate, accept_proxy=self.config.proxy_protocol > 0)

    def listening(self):
        """``{address key: socket}`` of every listening socket, for a successor to take over."""
        return {**self.handler.listening(), **self.listener.listening()}

    def _handle(self, conn, address, target=None):
        token = metrics.request_started(self.config.name)
        failed = True
        try:
            # A handler returns something (the reason) when the connection failed.
            failed = bool(self.handler.handle(conn, address, target))
        except Exception:
            # A handler bug must cost one connection, not the service.
            self.log.exception("handler error", fields={"remote": format_address(address)})
        finally:
            metrics.request_finished(token, failed)

    def can_reconfigure(self, config):
        """Whether ``config`` can be applied without a new listener."""
        old = self.config
        return (config.addr == old.addr and config.handler.type == old.handler.type
                and config.listener == old.listener
                and config.proxy_protocol == old.proxy_protocol)

    def prepare(self, config, inherit=None):
        """Get ready to take ``config`` in place; a :class:`Change` to commit or abort.

        ServiceError when something it needs (a new entrypoint's socket)
        cannot be had; nothing has changed then.
        """
        try:
            change = self.handler.prepare(config, inherit)
        except (OSError, ValueError) as exc:
            raise ServiceError("service %s: cannot listen on %s: %s"
                               % (config.name, getattr(exc, "where", config.addr),
                                  getattr(exc, "strerror", None) or exc)) from None

        def commit():
            self.config = config
            self.gate.update(config)
            change.commit()

        return Change(commit, change.abort)

    def reconfigure(self, config):
        """Apply a reloaded config in place: the listener and live connections stay."""
        self.prepare(config).commit()

    def close(self):
        """Stop accepting; live connections go on."""
        self.listener.close()
        self.handler.close()

    def stop(self, timeout=None):
        """Stop accepting, then wait up to ``timeout`` for connections to end."""
        self.close()
        self.handler.stop(timeout)
        self.listener.stop(timeout)
        self.log.debug("stopped")
