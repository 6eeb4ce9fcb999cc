"""A service = listener + handler, served by a gevent ``StreamServer``.

The StreamServer gives one greenlet per accepted connection and closes the
client socket when the handler returns.  Handler exceptions are logged here,
once, so that one bad connection never takes the service down.
"""

import logging

from gevent.server import StreamServer

from gostgev.handler import HANDLERS
from gostgev.listener import LISTENERS
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
        self.listener = LISTENERS.get(config.listener.type)(config)
        self.server = None

    @property
    def address(self):
        """The bound ``(host, port, ...)``; useful when the config asked for port 0."""
        return self.server.address if self.server else None

    def start(self):
        try:
            sock = self.listener.listen()
        except OSError as exc:
            raise ServiceError("service %s: cannot listen on %s: %s"
                               % (self.config.name, self.config.addr, exc.strerror or exc)) from None
        self.server = StreamServer(sock, self._handle)
        self.server.start()
        self.log.info("listening on %s", _format(self.server.address))

    def _handle(self, sock, address):
        try:
            self.handler.handle(sock, address)
        except Exception:
            # A handler bug must cost one connection, not the service.
            self.log.exception("handler error", fields={"remote": _format(address)})

    def stop(self, timeout=None):
        """Stop accepting, then wait up to ``timeout`` for connections to end."""
        if self.server is not None:
            self.server.stop(timeout=timeout)
            logging.getLogger("gostgev.service").debug("service %s stopped", self.config.name)


def _format(address):
    host, port = address[:2]
    return "[%s]:%d" % (host, port) if ":" in host else "%s:%d" % (host, port)
