"""Handlers: what a service does with each accepted connection.

A handler class is registered under GOST's type names and is instantiated
once per service.  ``handle(sock, address)`` runs in the connection's own
greenlet and owns the socket until it returns; the server then closes it.
Options come from ``handler.metadata`` and are parsed once, at config load,
by ``parse_options`` so that a bad value is reported before anything starts.
"""

from gostgev.registry import Registry

__all__ = ["HANDLERS", "Handler"]

HANDLERS = Registry("handler")


class Handler:
    #: whether ``handler.chain`` makes sense for this handler
    accepts_chain = False

    @classmethod
    def parse_options(cls, metadata, context):
        """Return this handler's typed options; ``ValueError`` on bad values."""
        return None

    @classmethod
    def needs_nodes(cls, options, chain):
        """Whether the config must give ``forwarder.nodes`` (with these options and this chain)."""
        return False

    def __init__(self, service_config, log):
        self.config = service_config
        self.options = service_config.handler.options
        self.log = log

    def reconfigure(self, service_config):
        """Take a reloaded config; connections already running keep what they had."""
        self.config = service_config
        self.options = service_config.handler.options

    def start(self, service):
        """Called before the service listens; handlers with listeners of their own open them here."""

    def close(self):
        """Stop accepting on the handler's own listeners, if any."""

    def stop(self, timeout=None):
        """Called when the service stops, after ``close``."""

    def handle(self, conn, address, target=None):
        """Serve one connection.  ``target`` is the ``host:port`` a tunnel
        stream header asked for, when the connection is such a stream."""
        raise NotImplementedError


# Importing the modules registers their handlers.
from gostgev.handler import file, forward, relay, tunnel  # noqa: E402,F401
