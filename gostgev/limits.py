"""Who may connect, and how many at once: GOST's admissions and climiters.

* :class:`Admission` — a list of IPs and CIDRs, used as an allow list
  (``whitelist: true``) or a deny list.
* :class:`ConnLimiter` — GOST's concurrent-connection limits, written as
  ``"$ 1000"`` (the whole service), ``"$$ 100"`` (each client IP), or
  ``"10.0.0.0/8 20"`` / ``"192.0.2.7 5"`` (each client IP inside that
  network, overriding ``$$``; the most specific network wins).
* :class:`RateLimitedLog` — one log line per reason per second, with the
  number suppressed, so a flood cannot flood the log too.

Counters are per client IP and disappear when the IP's last connection
ends, so memory follows the live connections, not the history.
"""

import ipaddress
import re
import time

from gostgev.netio.throttle import TokenBucket

__all__ = ["Admission", "BandwidthLimiter", "ConnLimiter", "RateLimiter", "RateLimitedLog", "parse_network",
           "parse_rate"]


def parse_network(text):
    """``"192.0.2.7"`` or ``"10.0.0.0/8"`` -> ip_network; ValueError otherwise."""
    return ipaddress.ip_network(text.strip(), strict=False)


def _ip(address):
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    # A v4 client on a dual-stack socket shows up as ::ffff:a.b.c.d.
    return ip.ipv4_mapped or ip if ip.version == 6 else ip


class Admission:
    def __init__(self, networks, whitelist=False):
        self.networks = tuple(networks)
        self.whitelist = whitelist

    def allows(self, address):
        ip = _ip(address)
        listed = ip is not None and any(ip in net for net in self.networks if net.version == ip.version)
        return listed if self.whitelist else not listed


class ConnLimiter:
    def __init__(self, total=None, per_ip=None, networks=()):
        self.total = total
        self.per_ip = per_ip
        # Most specific first, so the first match is the one that applies.
        self.networks = sorted(networks, key=lambda item: -item[0].prefixlen)
        self._count = 0
        self._by_ip = {}

    @classmethod
    def parse(cls, limits):
        """From GOST's ``limits`` strings; ValueError names the bad entry."""
        return cls(*_parse_limits(limits, lambda text: int(text) if text.isdigit() else None,
                                  "'$ 1000', '$$ 10', '10.0.0.0/8 5'"))

    def _ip_limit(self, ip):
        value = _network_value(self.networks, ip)
        return self.per_ip if value is None else value

    def acquire(self, address):
        """Count a new connection; the reason if it is over a limit, else None."""
        if self.total is not None and self._count >= self.total:
            return "service connection limit %d reached" % self.total
        ip = _ip(address)
        limit = self._ip_limit(ip)
        key = str(ip) if ip is not None else address
        if limit is not None and self._by_ip.get(key, 0) >= limit:
            return "connection limit %d per client reached for %s" % (limit, key)
        self._count += 1
        self._by_ip[key] = self._by_ip.get(key, 0) + 1
        return None

    def release(self, address):
        ip = _ip(address)
        key = str(ip) if ip is not None else address
        self._count -= 1
        left = self._by_ip.get(key, 1) - 1
        if left:
            self._by_ip[key] = left
        else:
            self._by_ip.pop(key, None)


def _parse_limits(limits, number, example):
    """GOST's ``limits`` lines: ``(total, per_ip, [(network, value)])``; ValueError names the bad line."""
    total = per_ip = None
    networks = []
    for entry in limits:
        fields = str(entry).split()
        value = number(fields[1]) if len(fields) == 2 else None
        if value is None:
            raise ValueError("invalid limit %r (want e.g. %s)" % (entry, example))
        if fields[0] == "$":
            total = value
        elif fields[0] == "$$":
            per_ip = value
        else:
            networks.append((parse_network(fields[0]), value))
    return total, per_ip, networks


def _network_value(networks, ip):
    """The value of the first (most specific) network holding ``ip``, or None."""
    if ip is not None:
        for net, value in networks:
            if net.version == ip.version and ip in net:
                return value
    return None


def _forget_idle(clients, idle):
    """Drop the entries of ``clients`` whose buckets are ``idle`` (full again)."""
    for key, buckets in list(clients.items()):
        if idle(buckets):
            del clients[key]


def _positive_rate(text):
    try:
        value = float(text)
    except ValueError:
        return None
    return value if 0 < value < float("inf") else None


class RateLimiter:
    """GOST's ``rlimiter``: new connections a second, for the service (``$``), per client IP
    (``$$``) and for IPs in a network (``10.0.0.0/8 5``, the most specific wins).

    Token buckets, refilled by the clock when a connection arrives: nothing
    waits or polls.  A client over its rate is refused at once.  Buckets of
    clients that went quiet are dropped once there are many.
    """

    #: per-client buckets kept before the full (idle) ones are dropped
    MAX_CLIENTS = 10000

    def __init__(self, total=None, per_ip=None, networks=()):
        self.networks = sorted(networks, key=lambda item: -item[0].prefixlen)
        self.per_ip = per_ip
        self._total = TokenBucket(total) if total else None
        self._clients = {}

    @classmethod
    def parse(cls, limits):
        return cls(*_parse_limits(limits, _positive_rate, "'$ 100', '$$ 10', '10.0.0.0/8 5' (a second)"))

    def allow(self, address):
        """None if a new connection from ``address`` may go on, else why not."""
        ip = _ip(address)
        rate = _network_value(self.networks, ip)
        rate = self.per_ip if rate is None else rate
        if rate is not None:
            key = str(ip) if ip is not None else address
            bucket = self._clients.get(key)
            if bucket is None:
                if len(self._clients) >= self.MAX_CLIENTS:
                    _forget_idle(self._clients, lambda bucket: bucket.idle())
                bucket = self._clients[key] = TokenBucket(rate)
            if not bucket.try_take():
                return "connection rate %g/s per client exceeded by %s" % (rate, key)
        if self._total is not None and not self._total.try_take():
            return "service connection rate %g/s exceeded" % self._total.rate
        return None


_RATE = re.compile(r"([0-9]+(?:\.[0-9]+)?)\s*([KMGT]?)(I?B)?", re.IGNORECASE)
_UNIT = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_rate(text):
    """Bytes a second from GOST's ``128KB``, ``10MB``, ``1GB`` (binary units; ``B`` may be left
    out, ``KiB`` is the same as ``KB``); None for zero or a negative rate (no limit).
    ValueError for anything else."""
    text = str(text).strip()
    if text.startswith("-"):
        return None
    match = _RATE.fullmatch(text)
    if match is None:
        raise ValueError("invalid rate %r (want e.g. 512KB, 10MB, 1GB)" % text)
    value = float(match[1]) * _UNIT[match[2].upper()]
    return value if value > 0 else None


class BandwidthLimiter:
    """GOST's ``limiter``: bytes a second in (from the client) and out (to it), for the whole
    service (``$``), for each connection (``$$``) and for each client IP in a network
    (``192.168.0.0/16 1MB 5MB``, the most specific wins).  A missing out rate means none.

    :meth:`buckets` gives a new connection the token buckets it is charged to.
    """

    #: per-client buckets kept before the full (idle) ones are dropped
    MAX_CLIENTS = 10000

    def __init__(self, service=(None, None), connection=(None, None), networks=()):
        self.connection = connection
        self.networks = sorted(networks, key=lambda item: -item[0].prefixlen)
        self._service = tuple(TokenBucket(rate) if rate else None for rate in service)
        self._clients = {}

    @classmethod
    def parse(cls, limits):
        service, connection, networks = (None, None), (None, None), []
        for entry in limits:
            fields = str(entry).split()
            if len(fields) not in (2, 3):
                raise ValueError("invalid limit %r (want e.g. '$ 100MB 100MB', '$$ 10MB', "
                                 "'192.168.0.0/16 1MB 5MB')" % entry)
            rates = (parse_rate(fields[1]), parse_rate(fields[2]) if len(fields) == 3 else None)
            if fields[0] == "$":
                service = rates
            elif fields[0] == "$$":
                connection = rates
            else:
                networks.append((parse_network(fields[0]), rates))
        return cls(service, connection, networks)

    def _client(self, ip):
        if ip is None:
            return (None, None)
        key = str(ip)
        buckets = self._clients.get(key)
        if buckets is None:
            rates = _network_value(self.networks, ip)
            if rates is None:
                return (None, None)
            if len(self._clients) >= self.MAX_CLIENTS:
                _forget_idle(self._clients, lambda pair: all(b is None or b.idle() for b in pair))
            buckets = self._clients[key] = tuple(TokenBucket(rate) if rate else None for rate in rates)
        return buckets

    def buckets(self, address):
        """``(inbound, outbound)`` bucket lists for a new connection from ``address``."""
        own = tuple(TokenBucket(rate) if rate else None for rate in self.connection)
        client = self._client(_ip(address))
        inbound = [b for b in (self._service[0], own[0], client[0]) if b is not None]
        outbound = [b for b in (self._service[1], own[1], client[1]) if b is not None]
        return inbound, outbound


class RateLimitedLog:
    """Log a repeated warning at most once per ``interval`` seconds per reason."""

    def __init__(self, log, interval=1.0):
        self.log = log
        self.interval = interval
        self._last = {}
        self._suppressed = {}

    def warning(self, reason, message, *args):
        now = time.monotonic()
        if now - self._last.get(reason, -self.interval) < self.interval:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return
        self._last[reason] = now
        suppressed = self._suppressed.pop(reason, 0)
        if suppressed:
            message += " (%d more like this suppressed)" % suppressed
        self.log.warning(message, *args)
