"""The accept pipeline: what happens to a connection between a listener and a handler.

In wire order::

    [PROXY header] -> admission and connection limits -> [transport upgrade] -> [bandwidth limits] -> handle

A PROXY header precedes everything else on the wire and names the real
client, so it is read first; admission runs before any costly TLS
handshake; the transport upgrade (TLS, WebSocket) comes last.  Listeners
apply no policy: services and tunnel entrypoints put this in front of them.
"""

from gostgev.connection import HTTP_PROBE_SECONDS, Connection
from gostgev.errors import ProtocolError
from gostgev.limits import BandwidthLimiter, ConnLimiter, RateLimitedLog, RateLimiter
from gostgev.metrics import OFF
from gostgev.netio.peek import PeerClosed
from gostgev.netio.proxyproto import accept_proxy_header
from gostgev.netio.throttle import Throttled

__all__ = ["Gate", "accept_pipeline"]


class Gate:
    """Admission, the connection rate (``rlimiter``) and connection limits in front of a handler."""

    def __init__(self, config, log, metrics=OFF):
        self.warn = RateLimitedLog(log)
        self.metrics = metrics
        self.service = config.name
        self.climits = self.rlimits = self.limits = None
        self.limiter = self.rate = self.bandwidth = None
        self.update(config)

    def update(self, config):
        """New admission and limits for new connections (a reload)."""
        self.admission = config.admission
        if config.climits != self.climits:
            # Live connections release on the limiter that counted them.
            self.climits = config.climits
            self.limiter = ConnLimiter.parse(config.climits) if config.climits else None
        if config.rlimits != self.rlimits:
            self.rlimits = config.rlimits
            self.rate = RateLimiter.parse(config.rlimits) if config.rlimits else None
        if config.limits != self.limits:
            # Live connections keep the buckets they were given.
            self.limits = config.limits
            self.bandwidth = BandwidthLimiter.parse(config.limits) if config.limits else None

    def admit(self, conn, ip, log):
        """The limiter that counted this client (release it when done), True, or None when refused."""
        if self.admission is not None and not self.admission.allows(ip):
            self.warn.warning("admission", "client %s refused by admission, closing", ip)
            return None
        if self.rate is not None:
            reason = self.rate.allow(ip)
            if reason is not None:
                # As GOST: closed at once, nothing said; counted, and logged once a second at most.
                self.metrics.rate_limited(self.service)
                self.warn.warning("rlimiter", "%s, closing", reason)
                return None
        limiter = self.limiter
        if limiter is None:
            return True
        reason = limiter.acquire(ip)
        if reason is None:
            return limiter
        self.warn.warning("climiter", "%s, refusing %s", reason, ip)
        Connection(conn, (ip, 0), log, None).tell(429, "too many connections", probe=HTTP_PROBE_SECONDS)
        return None


    def throttle(self, conn, ip):
        """``conn``, or with a bandwidth ``limiter``, ``conn`` charged to its token buckets."""
        bandwidth = self.bandwidth
        if bandwidth is None:
            return conn
        inbound, outbound = bandwidth.buckets(ip)
        if not inbound and not outbound:
            return conn
        service, metrics = self.service, self.metrics
        return Throttled(conn, inbound, outbound,
                         on_wait=lambda direction, seconds: metrics.limiter_wait(service, direction, seconds))


def accept_pipeline(handle, log, proxy=False, gate=None, upgrade=None):
    """``accepted(conn, address, meta=None)`` for a listener: the steps in wire order, then ``handle``.

    ``proxy``: read an optional PROXY header; ``gate``: admission and
    limits; ``upgrade(conn, address)``: the transport handshake, the new
    connection or None when it failed (the listener logs why).
    """

    def accepted(conn, address, meta=None):
        if proxy:
            try:
                conn, address = accept_proxy_header(conn, address)
            except (PeerClosed, ProtocolError, OSError) as exc:
                log.warning("bad or missing PROXY header from %s: %s", address[0], exc or "timeout")
                return
        admitted = gate.admit(conn, address[0], log) if gate is not None else True
        if admitted is None:
            return
        try:
            if upgrade is None:
                return handle(gate.throttle(conn, address[0]) if gate is not None else conn, address, meta)
            upgraded = upgrade(conn, address)
            if upgraded is not None:
                try:
                    return handle(gate.throttle(upgraded, address[0]) if gate is not None else upgraded, address,
                                  meta)
                finally:
                    upgraded.close()
        finally:
            if admitted is not True:
                admitted.release(address[0])

    return accepted
