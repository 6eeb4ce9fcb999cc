"""Handlers: what a service does with each accepted connection.

A handler class is registered under GOST's type names and is instantiated
once per service.  ``handle(conn)`` runs in the connection's own greenlet
and owns the :class:`gostgev.connection.Connection` until it returns; the
server then closes it.
Options come from ``handler.metadata`` and are parsed once, at config load,
by ``parse_options`` so that a bad value is reported before anything starts.
"""

from gostgev.handler.base import HANDLERS, Change, Handler

__all__ = ["HANDLERS", "Handler", "Change"]

# Importing the modules registers their handlers.
from gostgev.handler import file, forward, relay, tunnel  # noqa: E402,F401
