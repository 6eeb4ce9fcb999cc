"""The plain relay server: handler ``relay`` (GOST's remote port forwarding).

* CONNECT: dial the requested target and pipe (a proxy; protect it with
  ``auth``, as GOST's own docs advise).
* BIND (only with metadata ``bind: true``): listen on the requested address
  on this server, reply with the address actually bound, and turn the
  client's connection into a mux session.  Each connection accepted on the
  bound port becomes a stream that starts with a relay header naming the
  connecting peer.  The port closes when the client's session ends.

The smux version of a BIND session: ``mux.version`` when the metadata sets
it; otherwise inferred from the request.  A BIND carrying a tunnel ID comes
from a ``tunnel`` connector, which speaks smux v2; a plain relay BIND speaks
v1.  (GOST's relay handler always uses ``mux.version``, default 1, so a
``tunnel`` connector needs ``mux.version=2`` on a GOST relay server.)
"""

import dataclasses
from dataclasses import dataclass

from gostgev.accept import listen_tcp, serve_tcp
from gostgev.addr import format_address, parse_addr
from gostgev.auth import authorized
from gostgev.codec import relay
from gostgev.connection import DONE, failed
from gostgev.connection import relay_refused as refused
from gostgev.dialer import DEFAULT_DIAL_TIMEOUT, dial_tcp
from gostgev.handler.base import HANDLERS, Handler, service_auther
from gostgev.netio.mux import MuxConfig, MuxSession
from gostgev.netio.pipe import pipe
from gostgev.netio.relayio import DEFAULT_REQUEST_TIMEOUT, read_request, reply
from gostgev.settings import BOOL, DURATION, ZERO, computed, nested, setting

__all__ = ["RelayHandler", "RelayOptions"]


@dataclass(frozen=True, slots=True)
class RelayOptions:
    bind: bool = setting("bind", BOOL, False, "let clients BIND ports on this server (remote port forwarding)")
    read_timeout: float = setting("readTimeout", DURATION, DEFAULT_REQUEST_TIMEOUT, "deadline for the relay request",
                                  unset=ZERO)
    dial_timeout: float = setting("dialTimeout", DURATION, DEFAULT_DIAL_TIMEOUT, "TCP connect timeout for a CONNECT",
                                  unset=ZERO)
    #: session parameters; ``version`` only counts if mux_version_set
    mux: MuxConfig = nested(MuxConfig)
    #: mux.version given: use it for every BIND, infer nothing (as in GOST, 0 means "not set")
    mux_version_set: bool = computed(lambda md, context, got: md.int("mux.version", default=0) != 0, False)
    auther: object = computed(service_auther)

    def mux_for(self, request):
        """The mux config for this BIND: explicit version, else 2 for a tunnel connector, 1 for relay."""
        if self.mux_version_set:
            return self.mux
        return dataclasses.replace(self.mux, version=2 if request.tunnel_id is not None else 1)


@HANDLERS.register("relay")
class RelayHandler(Handler):
    options_class = RelayOptions

    def handle(self, connection):
        conn, log = connection.sock, connection.log
        request, leftover = read_request(conn, self.options.read_timeout, log)
        if request is None:
            return failed("no relay request")
        if not authorized(self.options.auther, request.username, request.password):
            log.warning("unauthorized", fields={"user": request.username})
            return refused(conn, relay.UNAUTHORIZED)
        if not request.addrs:
            return refused(conn, relay.BAD_REQUEST)
        if request.cmd == relay.CONNECT:
            return self._connect(connection, request, leftover)
        if request.cmd == relay.BIND:
            return self._bind(conn, request, log)
        return refused(conn, relay.BAD_REQUEST)

    def _connect(self, connection, request, leftover):
        conn = connection.sock
        target = request.addrs[-1]
        log = connection.log = connection.log.bind(target=target)
        if request.network not in (None, "tcp"):
            log.warning("relay CONNECT for network %s is not supported", request.network)
            return refused(conn, relay.BAD_REQUEST)
        try:
            addr = parse_addr(target)
            upstream = dial_tcp(addr.host, addr.port, self.options.dial_timeout)
        except (OSError, ValueError) as exc:
            log.warning("dial failed: %s", getattr(exc, "strerror", None) or exc)
            return refused(conn, relay.HOST_UNREACHABLE)
        reply(conn, relay.OK)
        return connection.relay_to(upstream, replay=leftover)

    def _bind(self, conn, request, log):
        if not self.options.bind:
            log.warning("BIND refused: metadata bind is not enabled")
            return refused(conn, relay.FORBIDDEN)
        if request.network not in (None, "tcp"):
            return refused(conn, relay.BAD_REQUEST)
        try:
            addr = parse_addr(request.addrs[-1])
            sock = listen_tcp(addr)
        except (OSError, ValueError) as exc:
            log.warning("BIND %s failed: %s", request.addrs[-1], getattr(exc, "strerror", None) or exc)
            return refused(conn, relay.SERVICE_UNAVAILABLE)
        bound = format_address(sock.getsockname())
        mux = self.options.mux_for(request)
        try:
            conn.sendall(relay.Response(relay.OK, addrs=(bound,)).encode())
        except OSError as exc:
            sock.close()    # the client is gone: free the port it asked for
            log.info("BIND %s: client gone before the reply: %s", bound, exc.strerror or exc)
            return failed("client gone")
        session = MuxSession(conn, mux, client=True, name="relay bind %s" % bound)
        log = log.bind(bind=bound, mux="v%d" % mux.version)
        server = serve_tcp(sock, lambda c, a: self._carry(session, c, a, log), log)
        log.info("remote port bound")
        try:
            session.refuse_streams_until_closed()   # the client never opens streams
        finally:
            server.stop(timeout=1)
        log.info("remote port released: %s", session.close_reason or "closed")
        return DONE

    def _carry(self, session, conn, address, log):
        """A connection to the bound port: one stream to the client, with its header."""
        peer = format_address(address)
        try:
            stream = session.open_stream()
        except OSError as exc:
            log.warning("cannot open a stream for %s: %s", peer, exc)
            return
        try:
            stream.sendall(relay.Response(relay.OK, addrs=(peer,)).encode())
            pipe(conn, stream)
        except OSError:
            pass
        finally:
            stream.close()
