"""The client side of a tunnel: BIND sessions kept alive through a chain.

An ``rtcp`` listener with a chain asks :class:`BindSessions` for
``tunnel.connections`` sessions (default 1).  Each one is a *slot* with a
greenlet of its own that binds, serves the session until it dies, and
binds again::

    slot 0 ── bind ── serve ── (session died) ── bind ── serve ...
    slot 1 ── bind ── (failed) ── bind another node ── serve ...

Where a slot binds (:meth:`gostgev.chain.Chain.route`):

* nodes the slot has seen fail since its last good bind go last, so when a
  hop lists several servers the next attempt goes to one not tried yet, at
  once;
* then the nodes marked failed (a failed dial, or a session that died: the
  node's ``failTimeout``, so a server that comes back is used again);
* then the nodes carrying fewest of this listener's sessions: with several
  slots, the sessions spread over the hop's nodes, several to a node when
  there are more slots than nodes;
* the hop's selector breaks the remaining ties.

The back-off (1 s doubling to 5 s, as GOST's) is waited only once every
node of the chain has failed in a row; with a single server that is after
each failure, as in GOST.
"""

import gevent
import gevent.pool

from gostgev.errors import ProtocolError

__all__ = ["BindSessions", "RECONNECT_FIRST", "RECONNECT_MAX"]

#: reconnect delays of the rtcp client: first wait, and the cap of the doubling
RECONNECT_FIRST = 1.0
RECONNECT_MAX = 5.0


class BindSessions:
    """``count`` BIND sessions of ``addr`` through ``chain``, each served by ``serve(bound)``
    (which returns when the session dies) and bound again, until :meth:`close`."""

    def __init__(self, chain, addr, serve, log, count=1, on_reconnect=None, network="tcp"):
        self.chain = chain
        self.addr = addr
        self.network = network
        self.serve = serve
        self.log = log
        self.count = count
        self.on_reconnect = on_reconnect or (lambda: None)
        self.bound = {}     #: slot -> live Bound
        self._load = {}     #: node -> slots bound or binding through it
        self._loops = gevent.pool.Group()
        self._stopping = False

    @property
    def running(self):
        """How many slot greenlets are alive."""
        return len(self._loops)

    def start(self):
        for slot in range(self.count):
            self._loops.spawn(self._keep, slot)

    def close(self):
        """Stop every slot and close every session; returns at once."""
        self._stopping = True
        for bound in list(self.bound.values()):
            bound.session.close()
        self._loops.kill(block=False)

    def join(self, timeout=None):
        self._loops.join(timeout=timeout)
        self._loops.kill(block=True, timeout=1)

    # -- one slot ---------------------------------------------------------------------

    def _fields(self, slot, node, **more):
        fields = {"server": node.config.addr, "node": node.name, **more}
        if self.count > 1:
            fields["session"] = slot
        return fields

    def _untried(self, tried):
        """Whether some hop still has a node the slot has not seen fail."""
        return any(node not in tried for hop in self.chain.hops for node in hop.nodes)

    def _reserve(self, nodes, step):
        for node in nodes:
            self._load[node] = self._load.get(node, 0) + step

    def _keep(self, slot):
        delay = RECONNECT_FIRST
        tried = set()    # nodes that failed, or whose session died, since the slot's last good bind
        while not self._stopping:
            route = self.chain.route(avoid=tried, load=self._load)
            nodes = [node for _, node in route]
            server = nodes[-1]
            self._reserve(nodes, 1)
            try:
                try:
                    bound = self.chain.bind(self.addr, network=self.network, route=route)
                except (OSError, ProtocolError) as exc:
                    tried.update(nodes)
                    again = self._untried(tried)
                    self.log.warning("connect to %s failed: %s; %s", self.chain.name, exc,
                                     "trying another node" if again else "retrying in %gs" % delay,
                                     fields=self._fields(slot, server))
                else:
                    delay = RECONNECT_FIRST
                    tried.clear()
                    self._serve(slot, bound, server)
                    if self._stopping:
                        return
                    # Maybe the server is gone: its node goes last, for this slot and the others.
                    server.mark_failed()
                    tried.update(nodes)
                    again = self._untried(tried)
                    self.log.warning("tunnel disconnected: %s; %s", bound.session.close_reason or "connection closed",
                                     "reconnecting to another node" if again else "reconnecting in %gs" % delay,
                                     fields=self._fields(slot, server))
                    self.on_reconnect()
            finally:
                self._reserve(nodes, -1)
            if not again:
                gevent.sleep(delay)
                delay = min(delay * 2, RECONNECT_MAX)
                tried.clear()

    def _serve(self, slot, bound, server):
        self.bound[slot] = bound
        try:
            self.log.info("tunnel connected", fields=self._fields(
                slot, server, endpoint=bound.endpoint,
                connector=bound.connector_id.text if bound.connector_id else None))
            self.serve(bound)
        finally:
            del self.bound[slot]
            bound.session.close()
