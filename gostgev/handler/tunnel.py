"""The tunnel server: handler ``tunnel``, its entrypoints, ingress and pool.

::

    tunnel port (this service)              entrypoint(s) (metadata entrypoint/entrypoints)
    handle(): read one relay request        Entrypoint.handle(): sniff within headerTimeout
    ├── BIND     -> register the connection   ├── HTTP Host / TLS SNI -> ingress rule -> tunnel
    │              as a mux session (we are   ├── relay CONNECT (first byte 0x01) -> as a visitor
    │              smux client) in the        └── anything else: closed
    │              TunnelRegistry                     │
    └── CONNECT  -> visitor: ingress check ──────────┴──> registry.open_stream(tunnel)
                                                          stream header (src, dst) + replayed bytes
                                                          pipe()

Routing stays with the server: the entrypoint only reaches tunnels that an
ingress rule names, and a visitor must present the tunnel ID the ingress
assigns to the host it asks for (unless ``tunnel.direct``).  Private (``$``)
rules are reachable by visitors only.  GOST's entrypoint relay branch skips
every check; here it gets the visitor checks and the handler's auth.
"""

import time
import uuid
from dataclasses import dataclass

import gevent
from gevent import socket

from gostgev import metrics
from gostgev.addr import host_without_port, parse_addr, split_host_port
from gostgev.auth import authorized
from gostgev.codec import relay
from gostgev.codec.http import simple_response
from gostgev.codec.sniff import HTTP, RELAY, TLS
from gostgev.config.model import IngressConfig
from gostgev.errors import ProtocolError
from gostgev.handler import HANDLERS, Change, Handler
from gostgev.handler.http1 import Forwarding, Refused, Route, forwarded_style, request_reporter, serve_http
from gostgev.ingress import Rule, parse_endpoint, parse_rule_host
from gostgev.listener import TcpListener, format_address
from gostgev.netio.close import close_gently
from gostgev.netio.mux import MuxConfig, MuxSession
from gostgev.netio.peek import MalformedHead, PeerClosed, SniffTimeout, bare_socket, read_head, sniff, with_prefix
from gostgev.netio.pipe import pipe
from gostgev.tunnel import NoConnector, TunnelRegistry

__all__ = ["TunnelHandler", "TunnelOptions"]

NO_LIVE_CONNECTION = "no live tunnel connection for host %s"

#: default deadline for a relay request on the tunnel port and for the
#: request head on an entrypoint; GOST has none on either
DEFAULT_HEADER_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class TunnelOptions:
    ingress: IngressConfig | None        #: rules for the entrypoint and visitors
    entrypoints: tuple                   #: (Addr, IngressConfig | None) pairs
    entrypoint_id: relay.TunnelID | None  #: visitors with this ID are external entrypoints
    direct: bool                         #: visitors reach the tunnel they name, ingress ignored
    read_timeout: float                  #: deadline for the relay request on the tunnel port
    header_timeout: float                #: deadline for the request head on entrypoints
    mux: MuxConfig
    auther: object                       #: gostgev.auth.Auther | None
    strict: bool                         #: refuse BINDs for tunnels no ingress rule names
    entrypoint_proxy: bool               #: entrypoints accept PROXY protocol headers
    forwarding: Forwarding | None = None  #: headers the entrypoints add to HTTP requests


def _entrypoint_forwarding(md):
    """``entrypoint.forwarded`` headers and the ``entrypoint.loopGuard`` (node ``entrypoint.node``)."""
    style = forwarded_style(md, "entrypoint.forwarded")
    node = None
    if md.bool("entrypoint.loopGuard"):
        node = md.str("entrypoint.node") or socket.gethostname()
        if not node or any(c in node for c in ", \t\r\n"):
            raise ValueError("entrypoint.node: %r cannot stand in a Gost-Forwarded-Node list" % node)
    return Forwarding(style, "http", node) if style or node else None


def _inline_rules(text):
    """GOST's ``tunnel: host1:uuid1,host2:uuid2`` quick rules."""
    rules = []
    for item in (part.strip() for part in text.split(",")):
        if item:
            host, sep, endpoint = item.partition(":")
            if not sep:
                raise ValueError("tunnel: %r is not host:uuid" % item)
            rules.append(Rule(parse_rule_host(host), parse_endpoint(endpoint)))
    return IngressConfig(name="tunnel", rules=tuple(rules), shared=False)


def _ingress_named(name, context, key):
    if name not in context.ingresses:
        raise ValueError("%s: no ingress named %r in ingresses" % (key, name))
    return context.ingresses[name]


@HANDLERS.register("tunnel")
class TunnelHandler(Handler):
    @classmethod
    def parse_options(cls, md, context):
        ingress = None
        if md.str("ingress"):
            ingress = _ingress_named(md.str("ingress"), context, "ingress")
        elif md.str("tunnel"):
            ingress = _inline_rules(md.str("tunnel"))
        entrypoints = []
        if md.str("entrypoint"):
            entrypoints.append((parse_addr(md.str("entrypoint")), ingress))
        for i, item in enumerate(md.raw("entrypoints") or []):
            item = item if isinstance(item, dict) else {"addr": item}
            for key in item:
                if str(key).lower() not in ("addr", "ingress"):
                    context.unknown("%s.entrypoints[%d]" % (md.path, i), str(key), ("addr", "ingress"))
            item = {str(k).lower(): v for k, v in item.items()}
            try:
                addr = parse_addr(str(item.get("addr") or ""))
            except ValueError as exc:
                raise ValueError("entrypoints[%d].addr: %s" % (i, exc)) from None
            name = item.get("ingress")
            entrypoints.append((addr, _ingress_named(name, context, "entrypoints[%d].ingress" % i)
                                if name else ingress))
        entrypoint_id = md.str("entrypoint.id")
        return TunnelOptions(
            ingress=ingress, entrypoints=tuple(entrypoints),
            entrypoint_id=relay.TunnelID.parse(entrypoint_id) if entrypoint_id else None,
            direct=md.bool("tunnel.direct"),
            read_timeout=md.duration("readtimeout") or DEFAULT_HEADER_TIMEOUT,
            header_timeout=md.duration("entrypoint.headertimeout") or DEFAULT_HEADER_TIMEOUT,
            mux=MuxConfig.from_metadata(md), auther=context.auther,
            strict=md.bool("tunnel.strict", default=True),
            entrypoint_proxy=md.int("entrypoint.proxyprotocol", default=0) > 0,
            forwarding=_entrypoint_forwarding(md))

    def __init__(self, service_config, log):
        super().__init__(service_config, log)
        self.registry = TunnelRegistry()
        self.service = None
        #: the worker cluster this handler serves in (its service's), from
        #: start() until stop(): a session that dies after stop() announces nothing
        self.cluster = None
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

    def _collect_ingresses(self):
        # Every ingress this handler routes with: what "registered" means for tunnel.strict.
        self.ingresses = [i for i in [self.ingress] + [ep.ingress for ep in self.entrypoints] if i is not None]

    def reconfigure(self, service_config):
        """New rules and options; registered tunnel connections and the registry stay."""
        self.prepare(service_config).commit()

    def prepare(self, service_config, inherit=None):
        """Bind the entrypoints ``service_config`` adds; commit swaps them in, abort closes them."""
        opts = service_config.handler.options
        resolve = self._resolver(self.service.ingresses)
        running = {str(ep.addr): ep for ep in self.entrypoints}
        planned, added = [], []
        try:
            for addr, cfg in opts.entrypoints:
                entrypoint = running.get(str(addr))
                if entrypoint is None:
                    entrypoint = Entrypoint(self, addr, None)
                    added.append(entrypoint)
                    entrypoint.bind(inherit)
                planned.append((entrypoint, resolve(cfg)))
        except OSError as exc:
            for entrypoint in added:
                entrypoint.close()
            exc.where = "entrypoint %s" % addr
            raise
        ingress = resolve(opts.ingress)

        def commit():
            Handler.reconfigure(self, service_config)
            self.ingress = ingress
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
            self._collect_ingresses()

        def abort():
            for entrypoint in added:
                entrypoint.close()

        return Change(commit, abort)

    # -- lifecycle ----------------------------------------------------------------

    def bind(self, service, inherit=None):
        self.service = service
        opts = self.options
        resolve = self._resolver(service.ingresses)
        self.ingress = resolve(opts.ingress)
        self.entrypoints = [Entrypoint(self, addr, resolve(cfg)) for addr, cfg in opts.entrypoints]
        self._collect_ingresses()
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
        self.cluster = service.context.cluster
        if self.cluster is not None:
            self.cluster.serve(self.config.name, self._handed_over)
        for entrypoint in self.entrypoints:
            entrypoint.start(service.gate)

    def close(self):
        for entrypoint in self.entrypoints:
            entrypoint.close()

    def stop(self, timeout=None):
        gevent.joinall([gevent.spawn(ep.stop, timeout) for ep in self.entrypoints])
        for tunnel in self.registry.tunnels():
            for connector in list(tunnel.connectors):
                connector.session.close()
        if self.cluster is not None:
            self.cluster.announce(self.config.name, ())
            self.cluster = None   # sessions closing after this announce nothing

    # -- the tunnel port ------------------------------------------------------------

    def handle(self, conn, address, target=None):
        log = self.log.bind(remote=format_address(address))
        request, leftover = read_request(conn, self.options.read_timeout, log)
        if request is None:
            return
        tunnel_id = request.tunnel_id
        user = self.authorized(request)
        if tunnel_id is None or tunnel_id.is_zero:
            log.warning("relay request without a tunnel ID")
            reply(conn, relay.BAD_REQUEST)
        elif not user:
            log.warning("unauthorized", fields={"user": request.username})
            reply(conn, relay.UNAUTHORIZED)
        elif request.cmd == relay.BIND:
            refusal = self._bind_refusal(request, user, log)
            if refusal is None:
                self._bind(conn, address, request, leftover, log)
            else:
                reply(conn, refusal)
        elif request.cmd == relay.CONNECT:
            self.visit(conn, address, request, leftover, self.ingress, log)
        else:
            log.warning("unsupported relay command %d", request.cmd)
            reply(conn, relay.BAD_REQUEST)

    def authorized(self, request):
        """The authenticated user, True when no auth is configured, or None."""
        return authorized(self.options.auther, request.username, request.password)

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

        def unregister(_session=None):
            self.registry.remove(tunnel_id, connector)
            self._count_connections(tunnel_id)

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

    def _count_connections(self, tunnel_id):
        tunnel = self.registry.get(tunnel_id)
        metrics.tunnel_connections(self.config.name, tunnel_id.text, len(tunnel.connectors) if tunnel else 0)
        if self.cluster is not None:
            self.cluster.announce(self.config.name, [
                t.id.key for t in self.registry.tunnels() if any(not c.closed and not c.udp for c in t.connectors)])

    # -- other workers (--workers) -------------------------------------------------------

    def hand_off(self, conn, tunnel_id, kind, src, dst, data, log):
        """Pass ``conn`` to a worker holding ``tunnel_id``; False if none could take it.

        A plain socket itself moves to that worker.  A connection whose
        transport lives in this process (TLS, WebSocket) cannot: the worker
        gets one end of a socket pair, and this greenlet pipes the other.
        """
        member = self.cluster
        if member is None:
            return False
        owners = member.owners(self.config.name, tunnel_id.key)
        if not owners:
            return False
        header = {"service": self.config.name, "tunnel": tunnel_id.text, "kind": kind, "src": src, "dst": dst}
        sock = bare_socket(conn)
        ours = None
        if sock is None:
            ours, sock = socket.socketpair()
        try:
            for index in owners:
                if member.hand_off(index, sock, header, data):
                    log.debug("handed to worker %d", index)
                    if ours is not None:
                        pipe(conn, ours)
                    return True
            return False
        finally:
            if ours is not None:
                ours.close()
                sock.close()

    def _handed_over(self, conn, header, data):
        """A connection another worker accepted, for a tunnel connection held here."""
        kind, src, dst = header["kind"], header["src"], header["dst"]
        if kind == HTTP:
            # Routed request by request here as well (through the handler's ingress).
            log = self.log.bind(remote=src, worker=header.get("from"))
            return self.serve_http(conn, src, data, self.ingress, log)
        tunnel_id = relay.TunnelID.parse(header["tunnel"])
        log = self.log.bind(remote=src, host=host_without_port(dst), tunnel=tunnel_id.text,
                            worker=header.get("from"))
        try:
            stream, connector = self.registry.open_stream(tunnel_id)
        except NoConnector as exc:
            # Gone since the other worker looked: answer as it would have.
            if kind == RELAY:
                log.warning("%s", exc)
                return reply(conn, relay.SERVICE_UNAVAILABLE)
            return refuse(conn, kind, 503, NO_LIVE_CONNECTION % host_without_port(dst), log, detail=str(exc))
        if kind == RELAY:
            reply(conn, relay.OK)
        self.relay_stream(conn, stream, connector, src, dst, data, log)

    def _public_name(self, host, tunnel_id):
        """The name reported to a binding client (GOST's endpoint rules)."""
        if host in ("", "0.0.0.0", "::") or self.ingress is None:
            return tunnel_id.endpoint_name()
        rule = self.ingress.lookup(host)
        if rule is not None and rule.endpoint.key != tunnel_id.key:
            return tunnel_id.endpoint_name()   # someone else's name: not for this client
        return host

    def visit(self, conn, address, request, leftover, ingress, log):
        """CONNECT with a tunnel ID: a visitor, or an external entrypoint.

        The client address written into the stream header (and from there
        into logs and PROXY headers at the backend) is the peer's own.  Only
        an external entrypoint, which presents ``entrypoint.id``, may name
        the client it relays for; from anyone else a source address would be
        a forgery, so it is ignored.
        """
        entrypoint_id = self.options.entrypoint_id
        external = entrypoint_id is not None and request.tunnel_id.key == entrypoint_id.key
        src = request.addrs[0] if external and len(request.addrs) > 1 else format_address(address)
        dst = request.addrs[-1] if request.addrs else ""
        host = host_without_port(dst)
        rule = ingress.lookup(host) if ingress is not None and host else None
        tunnel_id = rule.endpoint if rule else None
        log = log.bind(host=host or None)
        if external:
            if tunnel_id is None:
                log.warning("no ingress rule for host")
                return reply(conn, relay.NETWORK_UNREACHABLE)
            if tunnel_id.private:
                log.warning("host is routed to a private tunnel")
                return reply(conn, relay.HOST_UNREACHABLE)
        else:
            if self.options.direct:
                tunnel_id = request.tunnel_id
            if tunnel_id is None or tunnel_id.key != request.tunnel_id.key:
                log.warning("visitor's tunnel ID does not own the host", fields={"tunnel": request.tunnel_id.text})
                return reply(conn, relay.HOST_UNREACHABLE)
        log = log.bind(tunnel=tunnel_id.text)
        try:
            stream, connector = self.registry.open_stream(tunnel_id, request.network or "tcp")
        except NoConnector as exc:
            if (request.network or "tcp") == "tcp" and self.hand_off(conn, tunnel_id, RELAY, src, dst, leftover,
                                                                       log):
                return
            log.warning("%s", exc)
            return reply(conn, relay.SERVICE_UNAVAILABLE)
        reply(conn, relay.OK)
        self.relay_stream(conn, stream, connector, src, dst, leftover, log)

    # -- HTTP, request by request (entrypoints, and visitors handed over by other workers) ---------

    def serve_http(self, conn, client, data, ingress, log):
        """Route each request of an HTTP client by its own host through ``ingress``.

        Requests in a row for one tunnel and host share a stream; a new
        host opens a new one, whose header names it for the client.
        """
        started = time.monotonic()
        routes = {}
        name = self.config.name

        def route_for(head, current):
            tunnel_id, dst = lookup(ingress, head.host, head)
            route = routes.get((tunnel_id.key, dst))
            if route is None:
                route = routes[(tunnel_id.key, dst)] = self.http_route(tunnel_id, dst, head.host, client)
            return route

        up, down = serve_http(conn, host_without_port(client), data, route_for, log, request_reporter(log, name),
                              forwarding=self.options.forwarding, plain=True,
                              head_timeout=self.options.header_timeout)
        metrics.transfer(name, up, down)
        log.debug("connection closed", fields={"inputBytes": up, "outputBytes": down,
                                               "duration": "%.3fs" % (time.monotonic() - started)})

    def http_route(self, tunnel_id, dst, host, client):
        """The route to ``tunnel_id`` for requests to ``dst``: a stream, with its header, per run."""
        registry = self.registry
        name = self.config.name
        opened = {}

        def open_():
            try:
                stream, connector = registry.open_stream(tunnel_id)
            except NoConnector as exc:
                raise Refused(503, NO_LIVE_CONNECTION % host, detail=str(exc)) from None
            metrics.tunnel_stream(name, connector.tunnel_id.text)
            try:
                stream.sendall(relay.Response(relay.OK, addrs=(client, dst)).encode())
            except OSError as exc:
                stream.close()
                raise Refused(503, NO_LIVE_CONNECTION % host, detail=str(exc)) from None
            opened[stream] = connector
            return stream, {"tunnel": tunnel_id.text, "connector": connector.id.text}, False

        def release(stream, _reusable, sent, received):
            stream.close()
            connector = opened.pop(stream, None)
            if connector is not None:
                connector.streams += 1
                connector.bytes_in += sent
                connector.bytes_out += received

        def reroute():
            # Only where a connection answers: selection passes stalled ones over then.
            tunnel = registry.get(tunnel_id)
            if tunnel is None or not tunnel.answering():
                raise Refused(503, NO_LIVE_CONNECTION % host, detail="no other tunnel connection answers")
            stream, fields, _ = open_()
            return stream, fields

        return Route((tunnel_id.key, dst), open_, release, reroute=reroute)

    def relay_stream(self, conn, stream, connector, src, dst, data, log):
        """Write the stream header and ``data``, then pipe; log one line."""
        started = time.monotonic()
        up = down = 0
        error = None
        metrics.tunnel_stream(self.config.name, connector.tunnel_id.text)
        try:
            stream.sendall(relay.Response(relay.OK, addrs=(src, dst)).encode() + data)
            up, down = pipe(conn, stream)
        except OSError as exc:
            error = exc.strerror or str(exc)
        finally:
            stream.close()
            connector.streams += 1
            connector.bytes_in += len(data) + up
            connector.bytes_out += down
            metrics.transfer(self.config.name, len(data) + up, down)
        log.info("connection closed", fields={
            "connector": connector.id.text, "inputBytes": len(data) + up, "outputBytes": down,
            "duration": "%.3fs" % (time.monotonic() - started), "error": error})


def read_request(conn, timeout, log):
    """The relay request that opens ``conn`` and the bytes after it, or ``(None, b"")``.

    A malformed request is closed without a reply, as GOST does.
    """
    try:
        with gevent.Timeout(timeout, PeerClosed):
            (request, used), data = read_head(conn, relay.parse_request)
    except (PeerClosed, OSError):
        log.debug("no relay request, closing")
        return None, b""
    except ProtocolError as exc:
        log.warning("bad relay request, closing: %s", exc)
        return None, b""
    return request, data[used:]


def reply(conn, status):
    try:
        conn.sendall(relay.Response(status).encode())
    except OSError:
        pass


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


class Entrypoint:
    """A public listener of the tunnel handler: sniff, route by ingress, open a stream."""

    def __init__(self, handler, addr, ingress):
        self.handler = handler
        self.addr = addr
        self.ingress = ingress
        self.log = handler.log.bind(entrypoint=str(addr))
        self.listener = TcpListener(None, self.log, addr=addr, reuse_port=handler.service.context.reuse_port)

    @property
    def address(self):
        return self.listener.address

    def bind(self, inherit=None):
        self.listener.bind(inherit)

    def start(self, gate):
        """Listen; the service's admission and connection limits apply here too."""
        self.listener.start(self._guarded, gate=gate, accept_proxy=self.handler.options.entrypoint_proxy)

    def _guarded(self, conn, address, target=None):
        # As Service._handle does for the tunnel port: a bug costs one
        # connection and one log line, never a dead greenlet on stderr.
        try:
            self.handle(conn, address, target)
        except Exception:
            self.log.exception("handler error", fields={"remote": format_address(address)})

    def close(self):
        self.listener.close()

    def stop(self, timeout=None):
        self.listener.stop(timeout)

    def handle(self, conn, address, target=None):
        client = format_address(address)
        log = self.log.bind(remote=client)
        timeout = self.handler.options.header_timeout
        try:
            sniffed = sniff(conn, timeout)
            if sniffed.protocol == RELAY:
                with gevent.Timeout(timeout, SniffTimeout):
                    (request, used), data = read_head(conn, relay.parse_request, sniffed.data)
        except SniffTimeout:
            log.info("no complete request head within %gs, closing", timeout)
            return
        except MalformedHead as exc:
            log.warning("%s", exc)
            if exc.protocol == HTTP:
                close_gently(conn, simple_response(400, "gostgev: bad request"))
            return
        except (PeerClosed, ProtocolError, OSError) as exc:
            log.debug("closed before routing: %s", exc or "peer closed")
            return
        if sniffed.protocol == RELAY:
            return self._relay(conn, address, request, data[used:], log)
        if sniffed.protocol not in (HTTP, TLS):
            log.warning("neither HTTP, TLS nor relay, closing")
            return
        self._route(conn, client, sniffed, log)

    def _relay(self, conn, address, request, leftover, log):
        handler = self.handler
        if request.tunnel_id is None or request.tunnel_id.is_zero or request.cmd != relay.CONNECT:
            return reply(conn, relay.BAD_REQUEST)
        if not handler.authorized(request):
            log.warning("unauthorized", fields={"user": request.username})
            return reply(conn, relay.UNAUTHORIZED)
        handler.visit(conn, address, request, leftover, self.ingress, log)

    def _route(self, conn, client, sniffed, log):
        host = sniffed.host
        log = log.bind(host=host, protocol=sniffed.protocol)
        try:
            tunnel_id, dst = lookup(self.ingress, host, sniffed.head if sniffed.protocol == HTTP else None)
        except Refused as exc:
            return refuse(conn, sniffed.protocol, exc.status, exc.message, log)
        if sniffed.protocol == HTTP and sniffed.head.version != "HTTP/2.0":
            # A tunnel held only by another worker: the whole client connection goes there.
            if not self.handler.registry.has_connector(tunnel_id) and \
                    self.handler.hand_off(conn, tunnel_id, HTTP, client, dst, sniffed.data, log):
                return
            return self.handler.serve_http(conn, client, sniffed.data, self.ingress, log)
        log = log.bind(tunnel=tunnel_id.text)
        try:
            stream, connector = self.handler.registry.open_stream(tunnel_id)
        except NoConnector as exc:
            if self.handler.hand_off(conn, tunnel_id, sniffed.protocol, client, dst, sniffed.data, log):
                return
            return refuse(conn, sniffed.protocol, 503, NO_LIVE_CONNECTION % host, log, detail=str(exc))
        self.handler.relay_stream(conn, stream, connector, client, dst, sniffed.data, log)



def lookup(ingress, host, head=None):
    """``(tunnel ID, dst)`` for a host (an HTTP request's, or TLS's SNI when ``head`` is None).

    :class:`Refused` (502) when no public rule names the host.
    """
    rule = ingress.lookup(host) if ingress is not None and host else None
    if rule is None or rule.endpoint.private:
        raise Refused(502, "no tunnel for host %s" % (host or "(none)"))
    if head is None:
        return rule.endpoint, "%s:443" % host
    _, port = split_host_port(head.header("host") or "")
    return rule.endpoint, "%s:%s" % (host, port if port.isdigit() else "80")


def refuse(conn, protocol, status, message, log, detail=None):
    """Log why, and tell an HTTP client (``status`` and ``message``); TLS clients are just closed."""
    log.warning("%s", detail or message)
    if protocol == HTTP:
        close_gently(conn, simple_response(status, "gostgev: " + message))
