"""A service = listener + handler.

The listener delivers connections (a StreamServer's accepted sockets, or a
tunnel client's streams), one greenlet each, to ``_handle``.  Handler
exceptions are logged here, once, so that one bad connection never takes the
service down.
"""

from gostgev.handler import HANDLERS
from gostgev.listener import LISTENERS, format_address
from gostgev.logsetup import get_logger

__all__ = ["Service", "ServiceError"]


class ServiceError(Exception):
    """A service could not start (address in use, permission...)."""


class Service:
    def __init__(self, config):
        self.config = config
        self.log = get_logger("gostgev.service", service=config.name,
                              handler=config.handler.type, listener=config.listener.type)
        self.handler = HANDLERS.get(config.handler.type)(config, self.log)
        self.listener = LISTENERS.get(config.listener.type)(config, self.log)

    @property
    def address(self):
        """The bound ``(host, port, ...)``; useful when the config asked for port 0."""
        return self.listener.address

    def start(self):
        try:
            self.handler.start(self)
            self.listener.start(self._handle)
        except OSError as exc:
            self.handler.stop(0)
            raise ServiceError("service %s: cannot listen on %s: %s"
                               % (self.config.name, getattr(exc, "where", self.config.addr),
                                  exc.strerror or exc)) from None

    def _handle(self, conn, address, target=None):
        try:
            self.handler.handle(conn, address, target)
        except Exception:
            # A handler bug must cost one connection, not the service.
            self.log.exception("handler error", fields={"remote": format_address(address)})

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
