"""The tunnel registry: live client connections, pooled by tunnel ID.

::

    TunnelRegistry ─┬─ Tunnel 4d21094e-… ─┬─ connector (one client connection = one mux session)
                    │                     └─ connector
                    └─ Tunnel ac74d9dd-… ─── connector

No I/O here: a connector is anything with ``closed``, ``stalled``,
``weight``, ``udp`` and ``open_stream()``, so the registry is tested with fakes.

Selection is **smooth weighted round-robin** (nginx's algorithm): with equal
weights it is plain round-robin, with weights 3:1 the pattern is a a b a,
never a a a b.  GOST picks by weighted random, which gives uneven runs on
small request counts.  As in GOST, weight 0 counts as 1, and if any live
connector has weight 255, only weight-255 connectors are used ("exclusive").
With several connectors, only those bound for the request's network (TCP or
UDP) qualify; GOST skips that check when the tunnel has one connector, which
hands UDP requests to TCP-bound clients, and that quirk is not kept.

A stalled connector (a stream opened on it has had no answer for
``mux.stallTimeout``, see :mod:`gostgev.netio.mux`) is passed over while
another one for the network answers, exclusive or not, and comes back
with the first frame its client sends.  When every connector is stalled,
selection goes on as if none were: a slow client is never refused.

Closed connectors are skipped and pruned on every selection and whenever a
session reports its own death, so a dead client stops receiving traffic at
once rather than at the next sweep.

A tunnel leaves the registry by identity, never by key alone: a visitor
that fetched a ``Tunnel`` and then blocked (opening a stream on a full
connection) may find, when it wakes, that the tunnel was removed, or that a
reconnecting client has registered a new ``Tunnel`` under the same key.
Neither may raise, and the newer tunnel must stay.
"""

__all__ = ["Tunnel", "TunnelRegistry", "NoConnector", "EXCLUSIVE_WEIGHT", "OPEN_ATTEMPTS"]

#: a connector with this weight takes all traffic while it lives
EXCLUSIVE_WEIGHT = 255
#: connectors tried per request before giving up (GOST also tries 3)
OPEN_ATTEMPTS = 3


class NoConnector(LookupError):
    """The tunnel has no live connection able to carry the request."""


class Tunnel:
    def __init__(self, tunnel_id):
        self.id = tunnel_id
        self.connectors = []
        self._current = {}   # connector -> smooth-WRR running weight

    def add(self, connector):
        self.connectors.append(connector)

    def remove(self, connector):
        if connector in self.connectors:
            self.connectors.remove(connector)
        self._current.pop(connector, None)

    def prune(self):
        for connector in [c for c in self.connectors if c.closed]:
            self.remove(connector)

    def answering(self, network="tcp"):
        """Whether a live connector for ``network`` is not stalled."""
        udp = network == "udp"
        return any(not c.closed and c.udp == udp and not c.stalled for c in self.connectors)

    def pick(self, network="tcp"):
        """The next connector for a request, or None."""
        self.prune()
        udp = network == "udp"
        candidates = [c for c in self.connectors if c.udp == udp]
        if len(candidates) > 1:
            candidates = [c for c in candidates if not c.stalled] or candidates
        if any(c.weight == EXCLUSIVE_WEIGHT for c in candidates):
            candidates = [c for c in candidates if c.weight == EXCLUSIVE_WEIGHT]
        if not candidates:
            return None
        if len(candidates) == 1:
            return candidates[0]
        total = 0
        best = None
        for connector in candidates:
            weight = connector.weight or 1
            total += weight
            current = self._current.get(connector, 0) + weight
            self._current[connector] = current
            if best is None or current > self._current[best]:
                best = connector
        self._current[best] -= total
        return best


class TunnelRegistry:
    def __init__(self):
        self._tunnels = {}

    def add(self, tunnel_id, connector):
        tunnel = self._tunnels.get(tunnel_id.key)
        if tunnel is None:
            tunnel = self._tunnels[tunnel_id.key] = Tunnel(tunnel_id)
        tunnel.add(connector)

    def remove(self, tunnel_id, connector):
        tunnel = self._tunnels.get(tunnel_id.key)
        if tunnel is not None:
            tunnel.remove(connector)
            self._discard_if_empty(tunnel)

    def _discard_if_empty(self, tunnel):
        """Forget ``tunnel`` when it has no connector left, if it is still the registered one."""
        if not tunnel.connectors and self._tunnels.get(tunnel.id.key) is tunnel:
            del self._tunnels[tunnel.id.key]

    def get(self, tunnel_id):
        return self._tunnels.get(tunnel_id.key)

    def tunnels(self):
        return list(self._tunnels.values())

    def has_connector(self, tunnel_id, network="tcp"):
        """Whether the tunnel has a live connection here for ``network``."""
        tunnel = self._tunnels.get(tunnel_id.key)
        udp = network == "udp"
        return tunnel is not None and any(not c.closed and c.udp == udp for c in tunnel.connectors)

    def open_stream(self, tunnel_id, network="tcp"):
        """Open a stream on a live connection of the tunnel; ``(stream, connector)``.

        Raises :class:`NoConnector` when no connection could open one.
        """
        last_error = None
        for _ in range(OPEN_ATTEMPTS):
            # Looked up again on each attempt: a failed attempt may have
            # blocked while the client reconnected under the same key.
            tunnel = self._tunnels.get(tunnel_id.key)
            connector = tunnel.pick(network) if tunnel is not None else None
            if connector is None:
                if tunnel is not None:
                    self._discard_if_empty(tunnel)   # its last connectors were pruned as closed
                break
            try:
                return connector.open_stream(), connector
            except OSError as exc:
                last_error = exc
                tunnel.prune()
                self._discard_if_empty(tunnel)
        raise NoConnector("tunnel %s has no usable connection%s"
                          % (tunnel_id.text, " (%s)" % last_error if last_error else ""))
