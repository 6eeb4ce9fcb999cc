"""Service discovery: which node of a tunnel-server cluster holds which tunnel connection.

Every node registers each tunnel connection its clients hold (GOST's
``sd`` records: ``{id: connector, name: tunnel, node, network, address}``,
where ``address`` is where the other nodes reach this node's entrypoint),
renews the records while the connections live, and removes a record as
soon as its connection dies.  A node that receives a visitor for a tunnel
it holds no connection of looks the tunnel up and sends the visitor to a
node that holds one.

Two backends:

* :class:`RedisBackend` (built in).  One sorted set per tunnel,
  ``<key>:<tunnel>``, whose members are the records (JSON) scored by their
  expiry in Redis's own clock, so that nodes need not agree on the time.
  A lookup first drops expired members, so a node that died without a
  word leaves nothing routable after one TTL.  ``<key>:tunnels`` lists the
  tunnels, for the cluster view.
* :class:`HttpBackend`: GOST's ``plugin: {type: http}`` calls (POST
  register, PUT renew, DELETE deregister, ``GET ?name=`` lookup).

:class:`Discovery` is what a tunnel handler uses.  Registration never
blocks a tunnel client: records are written by one greenlet, which renews
everything every ``ttl / 3`` and retries what failed, so that records come
back by themselves after a Redis outage.  Lookups are cached for
``LOOKUP_CACHE`` seconds and concurrent lookups of one tunnel share one
query; a failed lookup is remembered as long, so a Redis that is down costs
at most one timeout per tunnel per period, and the warning is logged at
most once a second.
"""

import json
import time
from dataclasses import asdict, dataclass

import gevent
from gevent.event import AsyncResult, Event

from gostgev.httpclient import HttpError
from gostgev.httpclient import request as http_request
from gostgev.limits import RateLimitedLog
from gostgev.redisconn import RedisError
from gostgev.redisconn import client as redis_client

__all__ = ["Record", "Discovery", "DiscoveryUnavailable", "RedisBackend", "HttpBackend", "backend_for"]

#: seconds a lookup's answer (or its failure) is reused
LOOKUP_CACHE = 1.0
#: seconds between failure warnings (per node)
WARN_INTERVAL = 1.0


class DiscoveryUnavailable(Exception):
    """The discovery backend could not be asked (Redis down, plugin failing)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One tunnel connection held by one node (GOST's SD service record)."""

    id: str         #: the connector ID the node gave the client connection
    name: str       #: the tunnel ID
    node: str       #: the node that holds it
    network: str    #: tcp | udp
    address: str    #: host:port where other nodes reach that node's entrypoint

    def encode(self):
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))

    @classmethod
    def decode(cls, value):
        data = json.loads(value) if isinstance(value, (str, bytes)) else value
        return cls(id=str(data.get("id", "")), name=str(data.get("name", "")), node=str(data.get("node", "")),
                   network=str(data.get("network") or "tcp"), address=str(data.get("address", "")))


# Expired members go first; then the live ones.  Redis's clock, not ours.
_LOOKUP = """
local now = tonumber(redis.call('TIME')[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZRANGE', KEYS[1], 0, -1)
"""
# ARGV: ttl, then records; every record of KEYS[i] is ARGV[i + 1].
_REGISTER = """
local now = tonumber(redis.call('TIME')[1])
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, now + ttl, ARGV[i + 1])
  redis.call('EXPIRE', key, ttl * 2)
end
return #KEYS
"""


class RedisBackend:
    def __init__(self, config, ttl):
        self.config = config
        self.prefix = config.key or "gostgev:sd"
        self.ttl = max(1, int(round(ttl)))
        self.redis = redis_client(config)
        self._lookup = self.redis.register_script(_LOOKUP)
        self._register = self.redis.register_script(_REGISTER)

    def _key(self, tunnel):
        return "%s:%s" % (self.prefix, tunnel)

    def register(self, records):
        """Add or renew ``records`` (one round trip)."""
        if not records:
            return
        pipe = self.redis.pipeline(transaction=False)
        self._register(keys=[self._key(r.name) for r in records],
                       args=[self.ttl] + [r.encode() for r in records], client=pipe)
        pipe.sadd(self._key("tunnels"), *{r.name for r in records})
        pipe.execute()

    def deregister(self, records):
        if not records:
            return
        pipe = self.redis.pipeline(transaction=False)
        for record in records:
            pipe.zrem(self._key(record.name), record.encode())
        pipe.execute()

    def lookup(self, tunnel):
        return [Record.decode(v) for v in self._lookup(keys=[self._key(tunnel)])]

    def everything(self):
        """``{tunnel: [Record]}`` of the whole cluster (for the API)."""
        found = {}
        for tunnel in sorted(self.redis.smembers(self._key("tunnels"))):
            records = self.lookup(tunnel)
            if records:
                found[tunnel] = records
            else:
                self.redis.srem(self._key("tunnels"), tunnel)
        return found

    def close(self):
        self.redis.connection_pool.disconnect()


class HttpBackend:
    """GOST's HTTP service-discovery plugin protocol."""

    def __init__(self, url, timeout):
        self.url = url
        self.timeout = timeout

    def _call(self, method, body=None, query=""):
        status, _, data = http_request(method, self.url + query, body, self.timeout)
        if status != 200:
            raise HttpError("%s %s: status %d" % (method, self.url, status))
        return data

    def register(self, records):
        for record in records:
            self._call("POST", json.dumps(asdict(record)).encode())

    def renew(self, records):
        for record in records:
            self._call("PUT", json.dumps(asdict(record)).encode())

    def deregister(self, records):
        for record in records:
            self._call("DELETE", json.dumps(asdict(record)).encode())

    def lookup(self, tunnel):
        from urllib.parse import quote

        data = self._call("GET", query=("&" if "?" in self.url else "?") + "name=" + quote(tunnel))
        try:
            services = json.loads(data or b"{}").get("services") or []
            return [Record.decode(s) for s in services]
        except (ValueError, AttributeError) as exc:
            raise HttpError("GET %s: bad answer: %s" % (self.url, exc)) from None

    def everything(self):
        return {}

    def close(self):
        pass


def backend_for(config, ttl):
    """The backend an ``sds`` entry (:class:`gostgev.config.model.SDConfig`) describes."""
    if config.redis is not None:
        return RedisBackend(config.redis, ttl)
    return HttpBackend(config.plugin_addr, config.plugin_timeout)


_FAILURES = RedisError + (HttpError, OSError, ValueError)


class Discovery:
    """A node's view of the cluster: its own records, and lookups of the others'."""

    def __init__(self, backend, node, address, ttl, log):
        self.backend = backend
        self.node = node
        self.address = address
        self.ttl = ttl
        self.log = log
        self.warn = RateLimitedLog(log, interval=WARN_INTERVAL)
        self._live = {}          # connector id -> Record
        self._added = {}         # connector id -> Record, not yet written
        self._gone = {}          # connector id -> Record, not yet removed
        self._cache = {}         # tunnel -> (expires, records or exception)
        self._pending = {}       # tunnel -> AsyncResult of the query in flight
        self._wake = Event()
        self._loop = None
        self._healthy = True

    # -- our own records ---------------------------------------------------------------

    def start(self):
        if self._loop is None:
            self._loop = gevent.spawn(self._run)

    def register(self, connector_id, tunnel, network):
        record = Record(connector_id, tunnel, self.node, network, self.address)
        self._live[connector_id] = record
        self._added[connector_id] = record
        self._gone.pop(connector_id, None)
        self._wake.set()

    def deregister(self, connector_id):
        record = self._live.pop(connector_id, None)
        if record is not None:
            self._added.pop(connector_id, None)
            self._gone[connector_id] = record
            self._wake.set()

    def _run(self):
        renew_every = max(self.ttl / 3.0, 0.1)
        next_renew = time.monotonic() + renew_every
        while True:
            self._wake.wait(timeout=max(0.0, next_renew - time.monotonic()))
            self._wake.clear()
            renew = time.monotonic() >= next_renew
            if renew:
                next_renew = time.monotonic() + renew_every
            self._write(renew)

    def _write(self, renew):
        gone, added = list(self._gone.values()), list(self._added.values())
        try:
            if gone:
                self.backend.deregister(gone)
                for record in gone:
                    self._gone.pop(record.id, None)
            records = list(self._live.values()) if renew else added
            if records:
                if renew and isinstance(self.backend, HttpBackend):
                    self.backend.renew([r for r in records if r.id not in self._added])
                    self.backend.register([r for r in records if r.id in self._added])
                else:
                    self.backend.register(records)
            for record in added:
                if self._added.get(record.id) is record:
                    del self._added[record.id]
        except _FAILURES as exc:
            self._failed("cannot write tunnel records to the service discovery", exc)
            if not renew:
                return
            # Everything goes again at the next renew, once the backend answers.
            self._added.update(self._live)
            return
        self._recovered()

    def _failed(self, what, exc):
        self._healthy = False
        self.warn.warning("sd", "%s: %s", what, exc or type(exc).__name__)

    def _recovered(self):
        if not self._healthy:
            self._healthy = True
            self.log.info("service discovery answers again")

    # -- the others' records -----------------------------------------------------------

    def lookup(self, tunnel, network="tcp", wait=True):
        """Records of other nodes holding ``tunnel``; DiscoveryUnavailable when that cannot be known.

        ``wait=False``: only a fresh cached answer, else None (the caller may not wait).
        """
        now = time.monotonic()
        cached = self._cache.get(tunnel)
        if cached is None or cached[0] <= now:
            if not wait:
                return None
            cached = self._query(tunnel)
        found = cached[1]
        if isinstance(found, Exception):
            raise found
        return [r for r in found if r.node != self.node and r.network == network and r.address]

    def _query(self, tunnel):
        pending = self._pending.get(tunnel)
        if pending is not None:
            return pending.get()
        pending = self._pending[tunnel] = AsyncResult()
        try:
            try:
                found = self.backend.lookup(tunnel)
                self._recovered()
            except _FAILURES as exc:
                self._failed("cannot look tunnel %s up in the service discovery" % tunnel, exc)
                found = DiscoveryUnavailable("service discovery unavailable: %s" % (exc or type(exc).__name__))
            entry = (time.monotonic() + LOOKUP_CACHE, found)
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[tunnel] = entry
            pending.set(entry)
            return entry
        except BaseException as exc:
            pending.set_exception(exc)    # whoever waits for this query must not wait forever
            raise
        finally:
            del self._pending[tunnel]

    def forget(self, tunnel):
        """Drop the cached answer for ``tunnel`` (a node it named did not answer)."""
        self._cache.pop(tunnel, None)

    def cluster(self):
        """``{"node", "tunnels": {tunnel: [record]}, "nodes": {node: connections}}`` for the API."""
        try:
            everything = self.backend.everything()
        except _FAILURES as exc:
            return {"node": self.node, "error": str(exc) or type(exc).__name__}
        nodes = {}
        for records in everything.values():
            for record in records:
                nodes[record.node] = nodes.get(record.node, 0) + 1
        return {"node": self.node, "address": self.address, "nodes": nodes,
                "tunnels": {t: [asdict(r) for r in records] for t, records in everything.items()}}

    def abandon(self):
        """Stop renewing, and leave the records to expire: what a node that dies does."""
        if self._loop is not None:
            self._loop.kill(block=False)
            self._loop = None
        self._live.clear()
        self._added.clear()
        self._gone.clear()

    def close(self):
        """Stop writing; remove what this node registered (best effort, bounded)."""
        records = list(self._live.values()) + list(self._gone.values())
        self.abandon()
        try:
            with gevent.Timeout(2):
                self.backend.deregister(records)
        except (gevent.Timeout,) + _FAILURES:
            pass
        self.backend.close()
