"""Tunnel clients with several server nodes: failover, and ``tunnel.connections`` sessions at once.

Two tunnel servers A and B run in this process with the same ingress; one
rtcp client lists both in its hop.
"""

import gevent
import pytest
from gevent import socket

from gostgev.chain import Chain
from gostgev.components import build_config
from gostgev.config.spec import apply_cli
from gostgev.errors import ConfigError
from tests.conftest import LOCALHOST, http_get, name_responder, wait_until
from tests.handler.test_tunnel import TUNNEL_A, Deployment, client_config, server_config

RULES = [("srv-0.local", TUNNEL_A)]


@pytest.fixture
def site(backend):
    return backend(name_responder("srv-0"))


@pytest.fixture
def servers(start_services):
    return [Deployment(start_services, RULES) for _ in range(2)]


def free_port():
    """A loopback port nothing listens on (a dial to it is refused)."""
    with socket.socket() as sock:
        sock.bind((LOCALHOST, 0))
        return sock.getsockname()[1]


def start_client(start_services, ports, site, selector=None, **metadata):
    raw = client_config("c", ports[0], TUNNEL_A, [{"name": "web", "addr": site.addr, "host": "srv-0.local"}],
                        **metadata)
    hop = raw["chains"][0]["hops"][0]
    node = hop["nodes"][0]
    hop["nodes"] = [dict(node, name="node-%d" % i, addr="%s:%d" % (LOCALHOST, port)) for i, port in enumerate(ports)]
    if selector:
        hop["selector"] = selector
    return start_services(raw)["c"]


def counts(servers):
    return [server.connections(TUNNEL_A) for server in servers]


def restart(start_services, server):
    """Start server's tunnel port again where it was (a new entrypoint port)."""
    raw = server_config(RULES)
    raw["services"][0]["addr"] = "%s:%d" % (LOCALHOST, server.port)
    server.server = start_services(raw)["server"]
    server.registry = server.server.handler.registry
    server.entrypoint = server.server.handler.entrypoints[0].address[1]


@pytest.mark.parametrize("strategy", ["fifo", "round"])
def test_client_fails_over_to_the_other_server_at_once_and_back(start_services, servers, site, caplog, strategy):
    # fifo: the selector alone would pick the dead server again.
    client = start_client(start_services, [s.port for s in servers], site, selector={"strategy": strategy})
    assert wait_until(lambda: sum(counts(servers)) == 1, 10), counts(servers)
    holder, other = servers if counts(servers)[0] else servers[::-1]
    assert http_get(holder.entrypoint, "srv-0.local") == (200, b"srv-0")

    holder.server.stop(timeout=0)
    other.wait_connections(TUNNEL_A, 1, timeout=2)   # no back-off: the other node was not tried
    assert http_get(other.entrypoint, "srv-0.local") == (200, b"srv-0")
    assert "reconnecting to another node" in caplog.text

    # The node whose session died is tried last, not never: with its server back and
    # the other one gone, the client returns to it, again without waiting.
    restart(start_services, holder)
    assert holder.connections(TUNNEL_A) == 0          # the client stays where it is
    other.server.stop(timeout=0)
    holder.wait_connections(TUNNEL_A, 1, timeout=2)
    assert http_get(holder.entrypoint, "srv-0.local") == (200, b"srv-0")
    assert "reconnecting in" not in caplog.text and "retrying in" not in caplog.text
    assert client.listener.sessions.running == 1


def test_a_dead_node_at_start_costs_no_back_off(start_services, servers, site, caplog):
    live = servers[0]
    start_client(start_services, [free_port(), live.port], site, selector={"strategy": "fifo"})
    live.wait_connections(TUNNEL_A, 1, timeout=5)
    assert "trying another node" in caplog.text
    assert "retrying in" not in caplog.text


def test_back_off_only_when_every_node_failed_in_a_row(start_services, site, caplog):
    client = start_client(start_services, [free_port(), free_port()], site)
    assert wait_until(lambda: "retrying in 1s" in caplog.text, 5)
    failures = [r.getMessage() for r in caplog.records if r.getMessage().startswith("connect to ")]
    assert failures[0].endswith("trying another node") and failures[1].endswith("retrying in 1s"), failures
    client.stop(timeout=0)
    assert client.listener.sessions.running == 0


def test_two_connections_hold_one_session_per_server(start_services, servers, site):
    a, b = servers
    client = start_client(start_services, [a.port, b.port], site, **{"tunnel.connections": 2})
    assert wait_until(lambda: counts(servers) == [1, 1], 10), counts(servers)
    assert {bound.session.remote_address[1] for bound in client.listener.sessions.bound.values()} == {a.port, b.port}

    reconnects = []
    client.listener.metrics = type("Spy", (), {"tunnel_reconnect": lambda self, service: reconnects.append(service)})()
    results = []

    def visit():
        for _ in range(40):
            results.append(http_get(b.entrypoint, "srv-0.local", timeout=5))

    visitor = gevent.spawn(visit)
    assert wait_until(lambda: len(results) >= 5, 10)
    a.server.stop(timeout=0)          # while B's visitors keep coming
    visitor.join(timeout=30)
    assert results == [(200, b"srv-0")] * 40
    # A's session found B at once: both sessions are there now.
    b.wait_connections(TUNNEL_A, 2, timeout=2)
    assert reconnects == ["c"]         # one session died, one reconnect for the service

    client.stop(timeout=0)
    assert client.listener.sessions.running == 0
    assert not client.listener.sessions.bound
    b.wait_connections(TUNNEL_A, 0, timeout=2)
    assert reconnects == ["c"]         # stopping is no reconnect


def test_more_connections_than_nodes_share_the_nodes(start_services, servers, site):
    client = start_client(start_services, [s.port for s in servers], site, **{"tunnel.connections": 3})
    assert wait_until(lambda: sorted(counts(servers)) == [1, 2], 10), counts(servers)
    assert client.listener.sessions.running == 3
    assert [http_get(s.entrypoint, "srv-0.local")[0] for s in servers] == [200, 200]


def test_one_connection_is_the_default(start_services, servers, site):
    client = start_client(start_services, [s.port for s in servers], site)
    assert wait_until(lambda: sum(counts(servers)) == 1, 10)
    assert client.listener.chain.connections == 1
    assert client.listener.sessions.running == 1 and len(client.listener.sessions.bound) == 1


# -- the setting -------------------------------------------------------------------

def command_line(query):
    """``-L rtcp://... -F tunnel://two servers?...&query`` as a raw config."""
    node_url = "tunnel://127.0.0.1:1,127.0.0.1:2?tunnel.id=%s&%s" % (TUNNEL_A, query)
    return apply_cli({}, ["rtcp://:0/127.0.0.1:80"], [node_url])


def test_connections_from_the_command_line_reach_the_chain():
    warnings = []
    config = build_config(command_line("tunnel.connections=2"), warnings)
    assert warnings == []
    hop = config.chains[0].hops[0]
    assert [node.addr for node in hop.nodes] == ["127.0.0.1:1", "127.0.0.1:2"]
    assert Chain(config.services[0].listener.chain).connections == 2


@pytest.mark.parametrize("value, message", [("0", "at least 1"), ("65", "at most 64"), ("many", "")])
def test_a_bad_connections_value_is_refused_naming_the_key(value, message):
    with pytest.raises(ConfigError) as raised:
        build_config(command_line("tunnel.connections=%s" % value), [])
    assert "chains[0].hops[0].nodes[0].connector.metadata" in str(raised.value)
    assert "tunnel.connections" in str(raised.value) and message in str(raised.value)


def test_a_bad_connections_value_in_a_file_is_refused_naming_the_key(site):
    raw = client_config("c", 1, TUNNEL_A, [{"name": "web", "addr": site.addr}], **{"tunnel.connections": -1})
    with pytest.raises(ConfigError) as raised:
        build_config(raw, [])
    assert "chains[0].hops[0].nodes[0].connector.metadata" in str(raised.value)
    assert "tunnel.connections" in str(raised.value)


def test_route_puts_avoided_then_failed_nodes_last_and_spreads_by_load(site):
    raw = client_config("c", 1, TUNNEL_A, [{"name": "web", "addr": site.addr}])
    hop = raw["chains"][0]["hops"][0]
    hop["selector"] = {"strategy": "fifo"}
    hop["nodes"] = [dict(hop["nodes"][0], name="node-%d" % i, addr="127.0.0.1:%d" % (i + 1)) for i in range(3)]
    chain = Chain(build_config(raw, []).chains[0])
    a, b, c = chain.hops[0].nodes

    def first(**kwargs):
        return chain.route(**kwargs)[0][1]

    assert first() is a
    assert first(avoid={a}) is b
    assert first(avoid={a, b, c}) is a        # nothing else left: the selector's pick
    assert first(load={a: 1}) is b
    assert first(load={a: 1, b: 1}) is c
    assert first(load={a: 2, b: 2, c: 2}) is a
    b.mark_failed()
    assert first(load={a: 1}) is c            # a healthy node before a less loaded one
    assert first(avoid={a, c}) is b           # marked failed, yet not left out
    b.failed_at -= b.fail_timeout             # its failTimeout is over
    assert first(load={a: 1}) is b


def test_a_node_addr_listing_several_servers_asks_for_a_node_each(site):
    raw = client_config("c", 1, TUNNEL_A, [{"name": "web", "addr": site.addr}])
    raw["chains"][0]["hops"][0]["nodes"][0]["addr"] = "127.0.0.1:1,127.0.0.1:2"
    with pytest.raises(ConfigError) as raised:
        build_config(raw, [])
    assert raised.value.path == "chains[0].hops[0].nodes[0].addr"
    assert "one server per node" in raised.value.message
