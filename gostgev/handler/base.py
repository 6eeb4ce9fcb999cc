"""The handler base class, the handler registry, and prepared reconfigurations.

Apart from the package ``__init__``, so that the handler modules import
this and the package imports them, with no import cycle.
"""

from gostgev.metrics import OFF
from gostgev.registry import Registry
from gostgev.settings import component_options

__all__ = ["HANDLERS", "Handler", "Change", "service_auther"]

HANDLERS = Registry("handler")


class Change:
    """A prepared reconfiguration: ``commit()`` applies it, ``abort()`` gives back what it took."""

    __slots__ = ("commit", "abort")

    def __init__(self, commit, abort=None):
        self.commit = commit
        self.abort = abort or (lambda: None)


def service_auther(md, context, got):
    """For a :func:`gostgev.settings.computed` field: the handler's auther (``auth``/``auther``), or None."""
    return context.auther if context is not None else None


class Handler:
    #: whether ``handler.chain`` makes sense for this handler
    accepts_chain = False
    #: the dataclass of ``handler.metadata``'s settings (gostgev.settings), None for none
    options_class = None

    @classmethod
    def parse_options(cls, metadata, context):
        """Return this handler's typed options (a LoadContext is the ``context``); ``ValueError`` on bad values."""
        return component_options(cls, metadata, context)

    @classmethod
    def needs_nodes(cls, options, chain):
        """Whether the config must give ``forwarder.nodes`` (with these options and this chain)."""
        return False

    def __init__(self, service_config, log, metrics=OFF):
        self.config = service_config
        self.options = service_config.handler.options
        self.log = log
        self.metrics = metrics   #: the process's metrics (gostgev.metrics), OFF when there are none

    def reconfigure(self, service_config):
        """Take a reloaded config; connections already running keep what they had."""
        self.config = service_config
        self.options = service_config.handler.options

    def prepare(self, service_config, inherit=None):
        """Everything :meth:`reconfigure` needs that can fail, done now; a :class:`Change`.

        Handlers with listeners of their own bind the new ones here.
        """
        return Change(lambda: self.reconfigure(service_config))

    def bind(self, service, inherit=None):
        """Before the service binds: handlers with listeners of their own bind them here.

        ``inherit(addr)`` returns a listening socket a retiring service
        hands over for that address, or None.
        """

    def listening(self):
        """``{address key: socket}`` of the handler's own listeners."""
        return {}

    def start(self, service):
        """After :meth:`bind`: start serving the handler's own listeners."""

    def close(self):
        """Stop accepting on the handler's own listeners, if any."""

    def stop(self, timeout=None):
        """Called when the service stops, after ``close``."""

    def handle(self, conn):
        """Serve one :class:`gostgev.connection.Connection` (its ``target`` is the
        ``host:port`` a tunnel stream header asked for, if any); return an
        :class:`gostgev.connection.Outcome` (``DONE`` or ``failed(reason)``)."""
        raise NotImplementedError
