"""Chains: the path from this process to a remote server, hop by hop.

::

    Chain ── hop 0 (selector) ── node: dialer (tcp) + connector (relay/tunnel)
          └─ hop 1 (selector) ── node ...

``dial(target)`` picks one node per hop, dials the first, then asks each
node's connector to CONNECT to the next node and the last one to the
target.  ``bind(addr)`` does the same but ends with the last connector's
BIND, which gives a multiplexed session (the tunnel client's connection).
A failed dial or handshake marks the node failed for its hop's selector,
so the next attempt tries another server when a hop lists several.

A caller that keeps BIND sessions (:mod:`gostgev.tunnelclient`) plans the
route itself with :meth:`Chain.route`: nodes it has just seen fail go last,
then nodes marked failed, then the nodes carrying fewest of its sessions;
the hop's selector breaks the ties.
"""

import logging
import time

from gostgev.addr import parse_addr
from gostgev.connector import CONNECTORS
from gostgev.dialer import DEFAULT_DIAL_TIMEOUT, DIALERS
from gostgev.errors import EXHAUSTED_ERRNOS
from gostgev.metrics import OFF
from gostgev.selector import Node, Selector

__all__ = ["Chain"]

log = logging.getLogger(__name__)


class _Hop:
    def __init__(self, config):
        self.config = config
        self.selector = Selector(config.selector)
        self.nodes = []
        for node in config.nodes:
            self.nodes.append(Node(node, config.selector, max_fails=node.max_fails, fail_timeout=node.fail_timeout))
        # One connector and one dialer object per node: they hold parsed
        # options (tunnel ID, TLS context...).
        self.connectors = {id(n): CONNECTORS.get(n.config.connector.type)(n.config.connector)
                           for n in self.nodes}
        self.dialers = {id(n): DIALERS.get(n.config.dialer.type)(n.config.dialer) for n in self.nodes}


class Chain:
    def __init__(self, config, dial_timeout=DEFAULT_DIAL_TIMEOUT, metrics=OFF):
        self.name = config.name
        self.metrics = metrics
        self.hops = [_Hop(hop) for hop in config.hops]
        self.dial_timeout = dial_timeout

    @property
    def connections(self):
        """How many BIND sessions a listener keeps through this chain: the last hop's
        connectors say (``tunnel.connections``), the largest value when they differ."""
        last = self.hops[-1]
        return max(last.connectors[id(node)].connections for node in last.nodes)

    def route(self, avoid=(), load=None):
        """``[(hop, node)]``, one node per hop.

        Without arguments, each hop's selector decides (the healthy nodes,
        its strategy first).  ``avoid``: nodes to take only when a hop has no
        other; ``load``: ``{node: sessions}``, the less loaded first.  Nodes
        marked failed come after the healthy ones but are never left out.
        """
        if not avoid and not load:
            return [(hop, hop.selector.order(hop.nodes)[0]) for hop in self.hops]
        now = time.monotonic()
        load = load or {}
        route = []
        for hop in self.hops:
            ordered = hop.selector.order(hop.nodes)
            ordered += [node for node in hop.nodes if node not in ordered]
            ordered.sort(key=lambda node: (node in avoid, node.is_failed(now), load.get(node, 0)))
            route.append((hop, ordered[0]))
        return route

    def _through(self, route):
        """Dial the first node and CONNECT hop by hop to the last; return the connection."""
        hop, node = route[0]
        addr = parse_addr(node.config.addr)
        conn = hop.dialers[id(node)].dial(addr.host, addr.port, self.dial_timeout)
        try:
            for (hop, node), (next_hop, next_node) in zip(route, route[1:], strict=False):
                conn = hop.connectors[id(node)].connect(conn, next_node.config.addr)
                # The next node's transport (TLS, WebSocket) runs inside the relayed connection.
                next_addr = parse_addr(next_node.config.addr)
                conn = next_hop.dialers[id(next_node)].handshake(conn, next_addr.host, next_addr.port,
                                                                 self.dial_timeout)
        except BaseException:
            conn.close()
            raise
        return conn

    def _attempt(self, route, finish):
        started = time.monotonic()
        try:
            conn = self._through(route)
        except OSError as exc:
            # Out of descriptors or memory here is our own shortage, not the node's fault.
            if exc.errno not in EXHAUSTED_ERRNOS:
                route[0][1].mark_failed()
                self.metrics.chain_error(self.name, route[0][1].name)
            raise
        try:
            result = finish(conn)
        except BaseException:
            conn.close()
            route[-1][1].mark_failed()
            self.metrics.chain_error(self.name, route[-1][1].name)
            raise
        for _, node in route:
            node.mark_ok()
        # GOST's gost_chain_node_connect_duration_seconds: from the dial to the connector's answer.
        self.metrics.node_connect(self.name, route[-1][1].name, time.monotonic() - started)
        return result

    def dial(self, target, network="tcp", src=None):
        """A connection to ``target`` ("host:port") through the chain."""
        route = self.route()
        hop, node = route[-1]
        return self._attempt(route, lambda conn: hop.connectors[id(node)].connect(conn, target, network, src))

    def bind(self, addr, network="tcp", route=None):
        """BIND ``addr`` on the last node of ``route`` (default: :meth:`route`'s);
        returns the connector's ``Bound``."""
        route = route or self.route()
        hop, node = route[-1]
        return self._attempt(route, lambda conn: hop.connectors[id(node)].bind(conn, addr, network))
