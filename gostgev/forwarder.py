"""A service's forwarder: which nodes may serve a request, in dial order.

Eligibility, in order (this is where gostgev departs from GOST on purpose):

1. The request host picks one tier of nodes through :class:`HostRouter`:
   exact name, else the most specific wildcard, else the nodes without a
   host.  Nodes without a host are a true fallback: they never share traffic
   for a host that a host-specific node claims.  GOST lets them share it,
   which surprises everyone who writes a catch-all node.
2. Within the tier, a node's ``protocol`` and ``path`` filters must accept
   the request; if no node of a tier does, the next tier is tried.
3. The selector orders the survivors; ``backup`` nodes come last.

Failover never crosses tiers: if every ``api.example.com`` node is down, the
``*.example.com`` nodes are not silently used instead.
"""

from gostgev.hostmatch import HostRouter
from gostgev.selector import Node, Selector

__all__ = ["Forwarder"]


class Forwarder:
    def __init__(self, config):
        self.nodes = [Node(node, config.selector, weight=node.weight, backup=node.backup,
                           max_fails=node.max_fails, fail_timeout=node.fail_timeout)
                      for node in config.nodes]
        self.selector = Selector(config.selector)
        self._router = HostRouter()
        for node in self.nodes:
            self._router.add(node.config.host, node)

    def candidates(self, host=None, protocol=None, path=None):
        for tier in self._router.tiers(host):
            eligible = [n for n in tier if _accepts(n.config, protocol, path)]
            if eligible:
                return eligible
        return []

    def route(self, host=None, protocol=None, path=None, client_ip=None):
        """The nodes to dial for a request, best first; empty if none match."""
        return self.selector.order(self.candidates(host, protocol, path), client_ip)


def _accepts(node, protocol, path):
    if node.protocol and node.protocol != protocol:
        return False
    if node.path and not (path or "").startswith(node.path):
        return False
    return True
