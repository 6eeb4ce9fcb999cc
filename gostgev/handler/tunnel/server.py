"""The ``tunnel`` handler: its port, where tunnel clients register and visitors connect.

::

    handle(): read one relay request (within readTimeout)
    ├── BIND    -> the connection becomes a mux session (we are the smux
    │             client: we open the streams), registered in the Router's
    │             TunnelRegistry until it closes
    └── CONNECT -> a visitor: Router.visit (ingress check, then a stream)

Routing stays with the server: entrypoints (:mod:`.entrypoint`) only reach
tunnels that an ingress rule names, and a visitor must present the tunnel
ID the ingress assigns to the host it asks for (unless ``tunnel.direct``).
With ``tunnel.strict`` (the default) a BIND for a tunnel that no ingress
rule names is refused.  With ``sd``, the node registers every connection
it holds in the service discovery (:mod:`gostgev.discovery`), so that the
other nodes of the cluster send it the visitors of those tunnels.
"""

import time
import uuid

import gevent

from gostgev.addr import format_address, split_host_port
from gostgev.codec import relay
from gostgev.connection import DONE, failed, relay_refused
from gostgev.discovery import Discovery, backend_for
from gostgev.handler.base import Change, Handler
from gostgev.handler.tunnel.entrypoint import Entrypoint
from gostgev.handler.tunnel.options import TunnelOptions
from gostgev.handler.tunnel.router import Router
from gostgev.metrics import OFF
from gostgev.netio.mux import MuxSession
from gostgev.netio.peek import with_prefix
from gostgev.netio.relayio import read_request

__all__ = ["TunnelHandler", "ServerConnector"]


class TunnelHandler(Handler):
    options_class = TunnelOptions

    def __init__(self, service_config, log, metrics=OFF):
        super().__init__(service_config, log, metrics)
        self.router = Router(service_config.name, log, metrics)
        self.router.options = self.options
        self.registry = self.router.registry
        self.service = None
        self.ingress = None
        self.ingresses = []
        self.entrypoints = []

    def _resolver(self, store):
        """Ingress configs -> live Ingress objects; one object per name within one configuration,
        so the handler and its entrypoints that name the same rules share them."""
        seen = {}

        def resolve(config):
            if config is None:
                return None
            if config.name not in seen:
                seen[config.name] = store.resolve(config)
            return seen[config.name]

        return resolve

    def _set_ingresses(self, ingress):
        self.ingress = self.router.ingress = ingress
        # Every ingress this handler routes with: what "registered" means for tunnel.strict.
        self.ingresses = [i for i in [ingress] + [ep.ingress for ep in self.entrypoints] if i is not None]

    def _entrypoint(self, addr, ingress):
        return Entrypoint(self.router, addr, ingress, reuse_port=self.service.context.reuse_port)

    # -- lifecycle ----------------------------------------------------------------

    def bind(self, service, inherit=None):
        self.service = service
        opts = self.options
        resolve = self._resolver(service.context.ingresses)
        self.entrypoints = [self._entrypoint(addr, resolve(cfg)) for addr, cfg in opts.entrypoints]
        self._set_ingresses(resolve(opts.ingress))
        for entrypoint in self.entrypoints:
            try:
                entrypoint.bind(inherit)
            except OSError as exc:
                self.close()
                exc.where = "entrypoint %s" % entrypoint.addr
                raise

    def listening(self):
        found = {}
        for entrypoint in self.entrypoints:
            found.update(entrypoint.listener.listening())
        return found

    def start(self, service):
        self.service = service
        # The worker cluster, from start() until stop(): a session that dies
        # after stop() announces nothing.
        self.router.cluster = service.context.cluster
        if self.router.cluster is not None:
            self.router.cluster.serve(self.config.name, self.router.handed_over)
        for entrypoint in self.entrypoints:
            entrypoint.start(service.gate)
        self._join_cluster(self.options.cluster)

    def _join_cluster(self, cluster):
        """Start sharing this node's tunnels through ``cluster`` (ClusterOptions, or None: stop)."""
        old = self.router.discovery
        if old is not None:
            self.router.discovery = None
            self.router.close_node_pool()
            if cluster is None:
                gevent.spawn(old.close)
                return
            # Its records go before the new discovery writes them again (bounded: 2 s).
            old.close()
        if cluster is None:
            return
        address = cluster.address
        if not address and self.entrypoints:
            first = self.entrypoints[0]
            address = format_address((first.addr.host, first.address[1]))
        discovery = Discovery(backend_for(cluster.sd, cluster.ttl), cluster.node, address, cluster.ttl,
                              self.log.bind(sd=cluster.sd.name, node=cluster.node))
        for tunnel in self.registry.tunnels():
            for connector in tunnel.connectors:
                if not connector.closed:
                    discovery.register(connector.id.text, tunnel.id.text, "udp" if connector.udp else "tcp")
        discovery.start()
        self.router.discovery = discovery

    def reconfigure(self, service_config):
        """New rules and options; registered tunnel connections and the registry stay."""
        self.prepare(service_config).commit()

    def prepare(self, service_config, inherit=None):
        """Bind the entrypoints ``service_config`` adds; commit swaps them in, abort closes them."""
        opts = service_config.handler.options
        resolve = self._resolver(self.service.context.ingresses)
        running = {str(ep.addr): ep for ep in self.entrypoints}
        planned, added = [], []
        try:
            for addr, cfg in opts.entrypoints:
                entrypoint = running.get(str(addr))
                if entrypoint is None:
                    entrypoint = self._entrypoint(addr, None)
                    added.append(entrypoint)
                    entrypoint.bind(inherit)
                planned.append((entrypoint, resolve(cfg)))
        except OSError as exc:
            for entrypoint in added:
                entrypoint.close()
            exc.where = "entrypoint %s" % addr
            raise
        ingress = resolve(opts.ingress)
        old_cluster = self.options.cluster

        def commit():
            Handler.reconfigure(self, service_config)
            self.router.options = self.options
            kept = set()
            for entrypoint, entry_ingress in planned:
                entrypoint.ingress = entry_ingress
                kept.add(entrypoint)
                if entrypoint in added:
                    entrypoint.start(self.service.gate)
            for gone in self.entrypoints:
                if gone not in kept:
                    gone.close()
                    gevent.spawn(gone.stop, 10)
            self.entrypoints = [entrypoint for entrypoint, _ in planned]
            self._set_ingresses(ingress)
            if opts.cluster != old_cluster:
                self._join_cluster(opts.cluster)

        def abort():
            for entrypoint in added:
                entrypoint.close()

        return Change(commit, abort)

    def close(self):
        for entrypoint in self.entrypoints:
            entrypoint.close()

    def stop(self, timeout=None):
        gevent.joinall([gevent.spawn(ep.stop, timeout) for ep in self.entrypoints])
        for tunnel in self.registry.tunnels():
            for connector in list(tunnel.connectors):
                connector.session.close()
        if self.router.cluster is not None:
            self.router.cluster.announce(self.config.name, ())
            self.router.cluster = None   # sessions closing after this announce nothing
        discovery, self.router.discovery = self.router.discovery, None
        if discovery is not None:
            discovery.close()
        self.router.close_node_pool()

    # -- the tunnel port ------------------------------------------------------------

    def handle(self, connection):
        conn, log = connection.sock, connection.log
        request, leftover = read_request(conn, self.options.read_timeout, log)
        if request is None:
            return failed("no relay request")
        tunnel_id = request.tunnel_id
        user = self.router.authorize(request)
        if tunnel_id is None or tunnel_id.is_zero:
            log.warning("relay request without a tunnel ID")
            return relay_refused(conn, relay.BAD_REQUEST)
        if not user:
            log.warning("unauthorized", fields={"user": request.username})
            return relay_refused(conn, relay.UNAUTHORIZED)
        if request.cmd == relay.BIND:
            refusal = self._bind_refusal(request, user, log)
            if refusal is not None:
                return relay_refused(conn, refusal)
            return self._bind(conn, connection.address, request, leftover, log)
        if request.cmd == relay.CONNECT:
            return self.router.visit(connection, request, leftover, self.ingress)
        log.warning("unsupported relay command %d", request.cmd)
        return relay_refused(conn, relay.BAD_REQUEST)

    def _bind_refusal(self, request, user, log):
        """The status refusing this BIND, or None to accept it."""
        tunnel_id = request.tunnel_id
        auther = self.options.auther
        if auther is not None and not auther.may_bind(user.username, tunnel_id.key):
            log.warning("tunnel %s belongs to other users", tunnel_id.text, fields={"user": request.username})
            return relay.UNAUTHORIZED
        if self.options.strict and self.ingresses and not any(i.names(tunnel_id) for i in self.ingresses):
            log.warning("tunnel %s is not named by any ingress rule; refusing (tunnel.strict)", tunnel_id.text)
            return relay.FORBIDDEN
        return None

    def _bind(self, conn, address, request, leftover, log):
        tunnel_id = request.tunnel_id
        udp = request.network == "udp"
        dst = request.addrs[1] if len(request.addrs) > 1 else ":0"
        host, port = split_host_port(dst)
        connector_id = relay.TunnelID(uuid.uuid4().bytes, 0x01 if udp else 0, tunnel_id.weight)
        public = "%s:%s" % (self._public_name(host, tunnel_id), port or "0")
        conn.sendall(relay.Response(relay.OK, addrs=(public,), tunnel_id=connector_id).encode())
        session = MuxSession(with_prefix(conn, leftover), self.options.mux, client=True,
                             name="tunnel %s" % tunnel_id.text)
        connector = ServerConnector(connector_id, tunnel_id, session, format_address(address), udp)
        self.registry.add(tunnel_id, connector)
        self._count_connections(tunnel_id)
        discovery = self.router.discovery
        if discovery is not None:
            discovery.register(connector_id.text, tunnel_id.text, "udp" if udp else "tcp")

        def unregister(_session=None):
            self.registry.remove(tunnel_id, connector)
            self._count_connections(tunnel_id)
            if self.router.discovery is not None:
                self.router.discovery.deregister(connector_id.text)

        session.link_closed(unregister)
        log = log.bind(tunnel=tunnel_id.text, connector=connector_id.text)
        log.info("tunnel connection registered", fields={"weight": tunnel_id.weight or 1,
                                                          "network": "udp" if udp else "tcp"})
        try:
            session.refuse_streams_until_closed()   # the client never opens streams
        finally:
            unregister()
        log.info("tunnel connection closed: %s", session.close_reason or "closed",
                 fields={"duration": "%.0fs" % (time.monotonic() - connector.since)})
        return DONE

    def _count_connections(self, tunnel_id):
        tunnel = self.registry.get(tunnel_id)
        self.metrics.tunnel_connections(self.config.name, tunnel_id.text, len(tunnel.connectors) if tunnel else 0)
        member = self.router.cluster
        if member is not None:
            member.announce(self.config.name, [
                t.id.key for t in self.registry.tunnels() if any(not c.closed and not c.udp for c in t.connectors)])

    def _public_name(self, host, tunnel_id):
        """The name reported to a binding client (GOST's endpoint rules)."""
        if host in ("", "0.0.0.0", "::") or self.ingress is None:
            return tunnel_id.endpoint_name()
        rule = self.ingress.lookup(host)
        if rule is not None and rule.endpoint.key != tunnel_id.key:
            return tunnel_id.endpoint_name()   # someone else's name: not for this client
        return host


class ServerConnector:
    """One registered client connection, as the registry sees it."""

    __slots__ = ("id", "tunnel_id", "session", "remote", "udp", "weight", "since", "connected_at",
                 "streams", "bytes_in", "bytes_out")

    def __init__(self, connector_id, tunnel_id, session, remote, udp):
        self.id = connector_id
        self.tunnel_id = tunnel_id
        self.session = session
        self.remote = remote
        self.udp = udp
        self.weight = tunnel_id.weight
        self.since = time.monotonic()
        self.connected_at = time.time()   # for people: the API shows it
        self.streams = self.bytes_in = self.bytes_out = 0

    def describe(self):
        return {"id": self.id.text, "remote": self.remote, "since": int(self.connected_at),
                "weight": self.weight or 1, "network": "udp" if self.udp else "tcp",
                "openStreams": self.session.num_streams, "streams": self.streams,
                "bytesIn": self.bytes_in, "bytesOut": self.bytes_out, "stalled": self.stalled}

    @property
    def closed(self):
        return self.session.closed

    @property
    def stalled(self):
        """The client has not answered a new stream for ``mux.stallTimeout``: passed over meanwhile."""
        return self.session.stalled

    def open_stream(self):
        return self.session.open_stream()
