"""A service = listener + handler.

A listener delivers raw connections (a StreamServer's accepted sockets, or
a tunnel client's streams, with what their stream header said) and knows
nothing of policy; :func:`gostgev.pipeline.accept_pipeline` puts the
PROXY header, admission and limits and the transport upgrade in front of
the handler, in wire order.  The handler gets a
:class:`gostgev.connection.Connection` and returns an outcome, which is
counted here.  Handler exceptions are logged here, once, so that one bad
connection never takes the service down.
"""

from dataclasses import dataclass, field

from gostgev.addr import format_address
from gostgev.auth import AutherStore
from gostgev.connection import Connection
from gostgev.handler import HANDLERS, Change
from gostgev.ingress import IngressStore
from gostgev.listener import LISTENERS
from gostgev.logsetup import get_logger
from gostgev.metrics import OFF
from gostgev.pipeline import Gate, accept_pipeline

__all__ = ["Service", "ServiceContext", "ServiceError", "Change"]


class ServiceError(Exception):
    """A service could not start (address in use, permission...)."""


@dataclass
class ServiceContext:
    """What the services of one process share, given to each service (no module globals)."""

    #: the live ingress of each name
    ingresses: IngressStore = field(default_factory=IngressStore)
    #: the live users of each named auther with sources
    authers: AutherStore = field(default_factory=AutherStore)
    #: this process's member of the ``--workers`` cluster, or None
    cluster: object = None
    #: bind listening sockets with SO_REUSEPORT (``--workers``)
    reuse_port: bool = False
    #: where the services record metrics (gostgev.metrics.Metrics), OFF when the process collects none
    metrics: object = OFF


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
        self.log = get_logger("gostgev.service", service=config.name,
                              handler=config.handler.type, listener=config.listener.type)
        context = self.context
        self.handler = HANDLERS.get(config.handler.type)(config, self.log, context.metrics)
        self.listener = LISTENERS.get(config.listener.type)(config, self.log, reuse_port=context.reuse_port,
                                                            metrics=context.metrics)
        self.gate = Gate(config, self.log, context.metrics)

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
            self.close()
            raise _cannot_listen(self.config, exc) from None

    def serve(self):
        self.handler.start(self)
        listener = self.listener
        self.listener.start(accept_pipeline(
            self._handle, self.log, proxy=listener.takes_proxy_header and self.config.proxy_protocol > 0,
            gate=self.gate, upgrade=listener.upgrade))

    def listening(self):
        """``{address key: socket}`` of every listening socket, for a successor to take over."""
        return {**self.handler.listening(), **self.listener.listening()}

    def _handle(self, conn, address, meta=None):
        name = self.config.name
        recorder = self.context.metrics
        token = recorder.request_started(name)
        ok = False
        try:
            outcome = self.handler.handle(Connection(conn, address, self.log, name, meta and meta.get("target"),
                                                     recorder))
            ok = outcome is not None and outcome.ok
        except Exception:
            # A handler bug must cost one connection, not the service.
            self.log.exception("handler error", fields={"remote": format_address(address)})
        finally:
            recorder.request_finished(token, not ok)

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
            raise _cannot_listen(config, exc) from None

        def commit():
            self.config = config
            self.gate.update(config)
            change.commit()

        return Change(commit, change.abort)

    def reconfigure(self, config):
        """Apply a reloaded config in place: the listener and live connections stay."""
        self.prepare(config).commit()

    def close(self):
        """Stop accepting (or give up what :meth:`bind` took); live connections go on."""
        self.listener.close()
        self.handler.close()

    def stop(self, timeout=None):
        """Stop accepting, then wait up to ``timeout`` for connections to end."""
        self.close()
        self.handler.stop(timeout)
        self.listener.stop(timeout)
        self.log.debug("stopped")


def _cannot_listen(config, exc):
    """The ServiceError for a socket (or certificate) ``config`` could not have."""
    return ServiceError("service %s: cannot listen on %s: %s" % (
        config.name, getattr(exc, "where", config.addr), getattr(exc, "strerror", None) or exc))
