"""Connectors: the relay handshake spoken over a dialed connection.

A connector turns a connection to a server into either

* a connection to a target (``connect``): visitor CONNECT with a tunnel ID
  (``tunnel``), or plain relay CONNECT (``relay``); or
* a multiplexed session whose streams the server opens toward us (``bind``):
  tunnel registration (``tunnel``, smux v2) or remote port forwarding
  (``relay``, smux v1).

Wire formats: ``gostgev.codec.relay``.  Every read has a deadline, so a
server that accepts and then says nothing cannot hang a client forever.
"""

import uuid
from dataclasses import dataclass

import gevent

from gostgev.addr import address_tuple, format_address
from gostgev.codec import relay
from gostgev.errors import ProtocolError
from gostgev.netio.mux import MuxConfig, MuxSession
from gostgev.netio.peek import PeerClosed, read_head, with_prefix
from gostgev.registry import Registry
from gostgev.settings import INT, component_options, nested, setting

__all__ = ["CONNECTORS", "ConnectError", "Bound", "ConnectorOptions", "TunnelConnectorOptions",
           "TunnelConnector", "RelayConnector", "HANDSHAKE_TIMEOUT"]

CONNECTORS = Registry("connector")

#: seconds to wait for the server's reply to a CONNECT or BIND
HANDSHAKE_TIMEOUT = 15.0
#: the most tunnel connections one rtcp listener keeps (``tunnel.connections``)
MAX_CONNECTIONS = 64


class ConnectError(ConnectionError):
    """The server refused the request; ``status`` is the relay status code."""

    def __init__(self, status, server):
        self.status = status
        self.server = server
        if status == relay.UNAUTHORIZED:
            super().__init__("unauthorized by %s: check the connector's auth" % server)
        else:
            super().__init__("%s refused the request: %s" % (server, relay.STATUS_NAMES.get(status, status)))


@dataclass(frozen=True, slots=True)
class ConnectorOptions:
    """A connector's metadata, parsed at config load."""

    mux: MuxConfig = nested(MuxConfig)


def _tunnel_uuid(md, spec, context, got):
    text = md.str(*spec.keys)
    try:
        return relay.TunnelID.parse(text).uuid if text else None
    except ValueError as exc:
        raise ValueError("%s: %s" % (spec.key, exc)) from None


@dataclass(frozen=True, slots=True)
class TunnelConnectorOptions(ConnectorOptions):
    """The ``tunnel`` connector's metadata."""

    tunnel_uuid: bytes | None = setting("tunnel.id", "uuid", None,
                                        "the tunnel to register or visit; default: a fresh ID per process "
                                        "(a new tunnel on every restart)", aliases=("tunnelID",), parse=_tunnel_uuid)
    weight: int = setting("tunnel.weight", INT, 0, "this connection's weight among the tunnel's connections",
                          minimum=0, maximum=255)
    connections: int = setting("tunnel.connections", INT, 1,
                               "gostgev's: tunnel connections an rtcp listener keeps at once through this "
                               "node's hop, spread over its nodes", minimum=1, maximum=MAX_CONNECTIONS)


@dataclass(frozen=True, slots=True)
class Bound:
    """A live BIND: the session plus what the server told us."""

    session: MuxSession
    endpoint: str            #: public address the server reported
    connector_id: object     #: TunnelID the server gave this connection (tunnel only)
    header_has_target: bool  #: whether stream headers carry a target address

    def read_stream_header(self, stream, timeout):
        """A stream the server opened -> ``(conn, client address, target or None)``.

        The server writes a relay header first (status OK, the public
        client's address, and for tunnels the ``host:port`` it asked for);
        ``conn`` is the stream with the bytes read past the header put
        back.  ProtocolError, PeerClosed (also on ``timeout``) or OSError.
        """
        with gevent.Timeout(timeout, PeerClosed):
            (header, used), data = read_head(stream, relay.parse_response)
        if header.status != relay.OK or not header.addrs:
            raise ProtocolError("stream header without OK status and source address")
        target = header.addrs[1] if self.header_has_target and len(header.addrs) > 1 else None
        return with_prefix(stream, data[used:]), address_tuple(header.addrs[0]), target


def _peer(conn):
    try:
        return format_address(conn.getpeername())
    except OSError:
        return "server"


def _local(conn):
    try:
        return format_address(conn.getsockname())
    except (OSError, AttributeError, ValueError, TypeError):
        return "0.0.0.0:0"


def exchange(conn, request, timeout=HANDSHAKE_TIMEOUT):
    """Send a relay request and read the response; ``(response, leftover bytes)``.

    Raises :class:`ConnectError` for a non-OK status.
    """
    conn.sendall(request.encode())
    try:
        with gevent.Timeout(timeout, TimeoutError("no reply from %s within %gs" % (_peer(conn), timeout))):
            (response, used), data = read_head(conn, relay.parse_response)
    except PeerClosed:
        raise ConnectionResetError("%s closed the connection without a reply" % _peer(conn)) from None
    if response.status != relay.OK:
        raise ConnectError(response.status, _peer(conn))
    return response, data[used:]


class _Base:
    #: the dataclass of ``connector.metadata``'s settings (gostgev.settings)
    options_class = ConnectorOptions
    #: defaults of this connector's own for declared keys
    option_defaults = {}
    #: BIND sessions a listener keeps through this connector's hop
    connections = 1

    @classmethod
    def parse_options(cls, md):
        """Typed options from ``connector.metadata``; ``ValueError`` names the bad key."""
        return component_options(cls, md)

    def __init__(self, config):
        self.config = config
        self.mux = config.options.mux
        auth = config.auth
        self.username = auth.username if auth else None
        self.password = auth.password if auth else None

    def _request(self, cmd, addrs, network, tunnel_id=None, network_feature=None):
        """A relay request with this connector's credentials; UDP sets the flag (and, by default, the feature)."""
        udp = network == "udp"
        return relay.Request(cmd=cmd, flags=relay.FLAG_UDP if udp else 0, username=self.username,
                             password=self.password, addrs=addrs, tunnel_id=tunnel_id,
                             network=network_feature if network_feature is not None else ("udp" if udp else None))


@CONNECTORS.register("tunnel")
class TunnelConnector(_Base):
    options_class = TunnelConnectorOptions

    def __init__(self, config):
        super().__init__(config)
        opts = config.options
        # Without tunnel.id, GOST's behaviour: a fresh time-based ID per
        # process, i.e. a new tunnel on every restart.
        self.tunnel_id = relay.TunnelID(opts.tunnel_uuid or uuid.uuid1().bytes, 0, opts.weight)
        self.connections = opts.connections

    def connect(self, conn, target, network="tcp", src=None):
        request = self._request(relay.CONNECT, (src or _local(conn), target), network, self.tunnel_id)
        _, leftover = exchange(conn, request)
        return with_prefix(conn, leftover)

    def bind(self, conn, addr, network="tcp"):
        # GOST v3 sends ":0" as an empty domain name; we send the same bytes.
        request = self._request(relay.BIND, (_local(conn), addr), network, self.tunnel_id)
        try:
            response, leftover = exchange(conn, request)
        except ConnectError as exc:
            if exc.status == relay.FORBIDDEN:
                exc.args = ("tunnel %s is not registered on the server %s" % (self.tunnel_id.text, exc.server),)
            raise
        session = MuxSession(with_prefix(conn, leftover), self.mux, client=False,
                             name="tunnel %s" % self.tunnel_id.text)
        return Bound(session, response.addrs[0] if response.addrs else "", response.tunnel_id, True)


@CONNECTORS.register("relay")
class RelayConnector(_Base):
    # Plain relay BIND sessions are smux version 1 unless told otherwise, as in GOST.
    option_defaults = {"mux.version": 1}

    def connect(self, conn, target, network="tcp", src=None):
        request = self._request(relay.CONNECT, (target,), network)
        _, leftover = exchange(conn, request)
        return with_prefix(conn, leftover)

    def bind(self, conn, addr, network="tcp"):
        host, _, port = addr.rpartition(":")
        # GOST's relay BIND names its network ("tcp" too) in the Network feature.
        request = self._request(relay.BIND, ("%s:%s" % (host or "0.0.0.0", port),), network, network_feature=network)
        response, leftover = exchange(conn, request)
        session = MuxSession(with_prefix(conn, leftover), self.mux, client=False, name="relay bind %s" % addr)
        return Bound(session, response.addrs[0] if response.addrs else "", None, False)
