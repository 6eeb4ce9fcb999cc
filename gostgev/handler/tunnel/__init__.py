"""The tunnel server (handler ``tunnel``), as a package:

* :mod:`.options`    -- ``handler.metadata`` parsed at load (:class:`TunnelOptions`);
* :mod:`.server`     -- the handler: its port (BIND registrations, relay visitors) and lifecycle;
* :mod:`.entrypoint` -- public listeners: sniff, ingress lookup, reach the tunnel;
* :mod:`.router`     -- reaching a tunnel: streams, stream headers, HTTP request by request;
* :mod:`.handoff`    -- visitors passed between ``--workers`` processes.
"""

from gostgev.handler.base import HANDLERS
from gostgev.handler.tunnel.options import DEFAULT_HEADER_TIMEOUT, TunnelOptions
from gostgev.handler.tunnel.server import ServerConnector, TunnelHandler

__all__ = ["TunnelHandler", "TunnelOptions", "ServerConnector", "DEFAULT_HEADER_TIMEOUT"]

HANDLERS.register("tunnel")(TunnelHandler)
