"""Relay BIND (handler relay, bind: true): which smux version the session speaks.

Without ``mux.version`` the server infers it per BIND: a request carrying a
tunnel ID comes from a ``tunnel`` connector (smux v2), anything else from a
plain ``relay`` connector (smux v1).  An explicit ``mux.version`` wins.
"""

import pytest

from gostgev.codec import mux, relay
from tests.conftest import connect, http_get, name_responder, wait_until

TUNNEL = "4d21094e-b74c-4916-86c1-d9fa36ea677b"


def relay_server(start_services, **metadata):
    return start_services({"services": [{"name": "relay", "addr": "127.0.0.1:0", "handler": {
        "type": "relay", "metadata": {"bind": True, **metadata}}}]})["relay"]


def read_exactly(sock, size):
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "connection closed after %d of %d bytes" % (len(data), size)
        data += chunk
    return data


def bind(sock, request):
    """Send a BIND, read the reply; the port the server bound."""
    sock.sendall(request.encode())
    head = read_exactly(sock, 4)
    response, _ = relay.parse_response(head + read_exactly(sock, int.from_bytes(head[2:4], "big")))
    assert response.status == relay.OK
    return int(response.addrs[0].rpartition(":")[2])


def first_frame(sock):
    """The first frame header other than a keepalive NOP (at most 10 looked at)."""
    for _ in range(10):
        header = read_exactly(sock, mux.HEADER_SIZE)
        read_exactly(sock, int.from_bytes(header[2:4], "little"))
        if header[1] != mux.CMD_NOP:
            return header
    raise AssertionError("only NOPs")


TUNNEL_BIND = relay.Request(cmd=relay.BIND, addrs=("127.0.0.1:40000", "127.0.0.1:0"),
                            tunnel_id=relay.TunnelID.parse(TUNNEL))
PLAIN_BIND = relay.Request(cmd=relay.BIND, addrs=("127.0.0.1:0",), network="tcp")


@pytest.mark.parametrize("metadata, request_, version", [
    ({}, TUNNEL_BIND, 2),                      # tunnel connector: v2
    ({}, PLAIN_BIND, 1),                       # relay connector: v1
    ({"mux.version": 0}, PLAIN_BIND, 1),       # 0 means "not set", as in GOST
    ({"mux.version": 1}, TUNNEL_BIND, 1),      # explicit wins
    ({"mux.version": 2}, PLAIN_BIND, 2),
], ids=["tunnel-inferred-v2", "plain-inferred-v1", "zero-is-unset", "explicit-v1", "explicit-v2"])
def test_bind_session_speaks_the_right_smux_version(start_services, metadata, request_, version):
    server = relay_server(start_services, **metadata)
    with connect(server.address[1]) as sock:
        port = bind(sock, request_)
        with connect(port):
            header = first_frame(sock)
    # The server opens the stream: SYN, stream id 3 (smux client ids are odd), in that version.
    assert header == bytes((version, mux.CMD_SYN, 0, 0, 3, 0, 0, 0))


def rtcp_client(name, server_port, public_port, nodes, connector, connector_md=None):
    return {
        "services": [{"name": name, "addr": "127.0.0.1:%d" % public_port,
                      "handler": {"type": "rtcp", "metadata": {"sniffing": True}},
                      "listener": {"type": "rtcp", "chain": "chain-" + name},
                      "forwarder": {"nodes": nodes}}],
        "chains": [{"name": "chain-" + name, "hops": [{"name": "hop-0", "nodes": [{
            "name": "node-0", "addr": "127.0.0.1:%d" % server_port,
            "connector": {"type": connector, "metadata": connector_md or {}}, "dialer": {"type": "tcp"}}]}]}],
    }


FAST_MUX = {"mux.keepaliveInterval": "0.2s", "mux.keepaliveTimeout": "1s"}


@pytest.mark.parametrize("connector, server_md, connector_md", [
    ("tunnel", {}, {}),                                        # the seed's pair: no tunnel.id, no mux.version
    ("relay", {}, {}),                                         # plain remote forwarding, v1
    ("tunnel", {"mux.version": 1}, {"mux.version": 1}),        # explicit on both ends
], ids=["tunnel-no-id", "relay", "tunnel-explicit-v1"])
def test_remote_forwarding_routes_by_host(start_services, backend, connector, server_md, connector_md):
    sites = {name: backend(name_responder(name)) for name in ("srv-0", "srv-1")}
    server = relay_server(start_services, **FAST_MUX, **server_md)
    client = start_services(rtcp_client("http", server.address[1], 0, [
        {"name": "srv-0", "addr": sites["srv-0"].addr, "host": "srv-0.local"},
        {"name": "srv-1", "addr": sites["srv-1"].addr, "host": "srv-1.local"},
    ], connector, {**FAST_MUX, **connector_md}))["http"]
    assert wait_until(lambda: client.listener.bound is not None, 10)
    public = int(client.listener.bound.endpoint.rpartition(":")[2])     # the port the server bound for us
    host = "srv-1.local:%d" % public                         # what curl --resolve sends

    def reaches(name, host_header):
        try:
            return http_get(public, host_header, timeout=2) == (200, name.encode())
        except OSError:
            return False

    assert wait_until(lambda: reaches("srv-1", host), 10)
    session = client.listener.bound.session
    assert reaches("srv-0", "srv-0.local:%d" % public)
    assert http_get(public, "srv-2.local")[0] == 502             # no node for that host
    # Keepalives flow both ways for several intervals: the same session stays up.
    assert not wait_until(lambda: session.closed, 1.0)
    assert client.listener.bound is not None and client.listener.bound.session is session
    assert reaches("srv-1", host)
    assert sites["srv-0"].connections == 1                       # srv-2.local reached no backend
