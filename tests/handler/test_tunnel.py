"""End to end: tunnel server, entrypoint, ingress and rtcp clients on loopback."""

import gevent
import pytest
from gevent import ssl

from gostgev.codec import relay
from gostgev.config.spec import apply_cli
from tests.conftest import connect, echo_then_bye, http_get, name_responder, recv_all, tls_get, wait_until

TUNNEL_A = "4d21094e-b74c-4916-86c1-d9fa36ea677b"
TUNNEL_B = "ac74d9dd-3125-442a-a7c1-f9e49e05faca"
UNNAMED = "22f43305-5c5d-4a5b-9d1a-3a4d5e6f7a8b"
FAST_MUX = {"mux.keepaliveInterval": "0.2s", "mux.keepaliveTimeout": "1s"}


def server_config(rules, **metadata):
    md = {"entrypoint": "127.0.0.1:0", "ingress": "ingress-0", **metadata}
    return {
        "services": [{"name": "server", "addr": "127.0.0.1:0",
                      "handler": {"type": "tunnel", "metadata": md}, "listener": {"type": "tcp"}}],
        "ingresses": [{"name": "ingress-0",
                       "rules": [{"hostname": h, "endpoint": e} for h, e in rules]}],
    }


def client_config(name, server_port, tunnel_id, nodes, connector="tunnel", addr=":0", **metadata):
    md = {"tunnel.id": tunnel_id, **metadata} if tunnel_id else dict(metadata)
    return {
        "services": [{"name": name, "addr": addr,
                      "handler": {"type": "rtcp", "metadata": {"sniffing": True}},
                      "listener": {"type": "rtcp", "chain": "chain-" + name},
                      "forwarder": {"nodes": nodes}}],
        "chains": [{"name": "chain-" + name, "hops": [{"name": "hop-0", "nodes": [{
            "name": "node-0", "addr": "127.0.0.1:%d" % server_port,
            "connector": {"type": connector, "metadata": md}, "dialer": {"type": "tcp"}}]}]}],
    }


class Deployment:
    """A tunnel server and its entrypoint, plus helpers to add clients."""

    def __init__(self, start_services, rules, **metadata):
        self.start_services = start_services
        self.server = start_services(server_config(rules, **metadata))["server"]
        self.port = self.server.address[1]
        self.entrypoint = self.server.handler.entrypoints[0].address[1]
        self.registry = self.server.handler.registry

    def client(self, name, tunnel_id, nodes, **kwargs):
        return self.start_services(client_config(name, self.port, tunnel_id, nodes, **kwargs))[name]

    def connections(self, tunnel_id):
        tunnel = self.registry.get(relay.TunnelID.parse(tunnel_id))
        return len([c for c in tunnel.connectors if not c.closed]) if tunnel else 0

    def wait_connections(self, tunnel_id, count, timeout=10):
        assert wait_until(lambda: self.connections(tunnel_id) == count, timeout), \
            "tunnel %s has %d connections, wanted %d" % (tunnel_id, self.connections(tunnel_id), count)


@pytest.fixture
def sites(backend):
    return {name: backend(name_responder(name)) for name in ("srv-0", "srv-1", "srv-2", "other")}


@pytest.fixture
def deployment(start_services, sites):
    dep = Deployment(start_services, [("srv-0.local", TUNNEL_A), ("srv-1.local", TUNNEL_A),
                                      ("*.wild.local", TUNNEL_A), ("srv-2.local", TUNNEL_B),
                                      ("private.local", "$" + TUNNEL_B)])
    dep.client("client-a", TUNNEL_A, [
        {"name": "local-0", "addr": sites["srv-0"].addr, "host": "srv-0.local"},
        {"name": "local-1", "addr": sites["srv-1"].addr, "host": "srv-1.local"},
        {"name": "wild", "addr": sites["other"].addr, "host": ".wild.local"},
    ])
    dep.wait_connections(TUNNEL_A, 1)
    return dep


def test_routes_by_host_through_the_tunnel(deployment):
    port = deployment.entrypoint
    assert http_get(port, "srv-0.local") == (200, b"srv-0")
    assert http_get(port, "srv-1.local:8000") == (200, b"srv-1")
    assert http_get(port, "a.wild.local") == (200, b"other")


def test_unknown_host_gets_502_and_dead_tunnel_gets_503(deployment):
    status, body = http_get(deployment.entrypoint, "nobody.local")
    assert status == 502 and b"nobody.local" in body
    status, body = http_get(deployment.entrypoint, "srv-2.local")   # tunnel B has no client
    assert status == 503 and b"srv-2.local" in body
    assert http_get(deployment.entrypoint, "private.local")[0] == 502  # private: visitors only


def test_routes_tls_by_sni_through_the_tunnel(start_services, backend, cert_files, client_tls_context):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert_files)
    secure = backend(name_responder("secure"), ssl_context=context)
    dep = Deployment(start_services, [("secure.example.com", TUNNEL_A)])
    dep.client("c", TUNNEL_A, [{"name": "s", "addr": secure.addr, "host": "secure.example.com"}])
    dep.wait_connections(TUNNEL_A, 1)
    assert tls_get(dep.entrypoint, "secure.example.com", client_tls_context) == b"secure"
    with pytest.raises(OSError):
        tls_get(dep.entrypoint, "unknown.example.com", client_tls_context)


def test_client_answers_502_when_its_node_is_down(start_services, backend):
    dead = backend(name_responder("dead"))
    dead_addr = dead.addr
    dead.stop()
    dep = Deployment(start_services, [("down.local", TUNNEL_A)])
    dep.client("c", TUNNEL_A, [{"name": "d", "addr": dead_addr, "host": "down.local"}])
    dep.wait_connections(TUNNEL_A, 1)
    status, body = http_get(dep.entrypoint, "down.local")
    assert status == 502 and b"down.local" in body


def test_two_clients_share_round_robin_and_survive_losing_one(deployment, sites, backend):
    second = backend(name_responder("srv-0-bis"))
    client_b = deployment.client("client-b", TUNNEL_A, [
        {"name": "local-0", "addr": second.addr, "host": "srv-0.local"}])
    deployment.wait_connections(TUNNEL_A, 2)
    bodies = [http_get(deployment.entrypoint, "srv-0.local")[1] for _ in range(6)]
    assert sorted(bodies) == [b"srv-0"] * 3 + [b"srv-0-bis"] * 3
    assert bodies[0] != bodies[1]
    client_b.stop(timeout=0)
    deployment.wait_connections(TUNNEL_A, 1)
    assert [http_get(deployment.entrypoint, "srv-0.local") for _ in range(5)] == [(200, b"srv-0")] * 5


def test_strict_registration_refuses_a_uuid_no_rule_names(deployment, backend, caplog):
    spy = backend(name_responder("spy"))
    deployment.client("intruder", UNNAMED, [{"name": "all", "addr": spy.addr}])
    assert wait_until(lambda: "tunnel %s is not registered on the server" % UNNAMED in caplog.text, 5)
    assert deployment.connections(UNNAMED) == 0
    with connect(deployment.port) as sock:
        sock.sendall(relay.Request(cmd=relay.BIND, addrs=("127.0.0.1:1", ":0"),
                                   tunnel_id=relay.TunnelID.parse(UNNAMED)).encode())
        assert recv_all(sock) == relay.Response(relay.FORBIDDEN).encode()


def test_without_strict_an_unnamed_uuid_joins_but_gets_nothing(start_services, sites, backend):
    dep = Deployment(start_services, [("srv-0.local", TUNNEL_A), ("private.local", "$" + TUNNEL_B)],
                     **{"tunnel.strict": False})
    dep.client("a", TUNNEL_A, [{"name": "n", "addr": sites["srv-0"].addr}])
    spy = backend(name_responder("spy"))
    dep.client("intruder", UNNAMED, [{"name": "all", "addr": spy.addr}])
    dep.wait_connections(UNNAMED, 1)
    dep.wait_connections(TUNNEL_A, 1)
    for host in ("srv-0.local", "nobody.local", "private.local"):
        http_get(dep.entrypoint, host)
    # Not even a relay CONNECT on the entrypoint naming the tunnel directly reaches it.
    with connect(dep.entrypoint) as sock:
        sock.sendall(relay.Request(cmd=relay.CONNECT, addrs=("127.0.0.1:1", "x.local:80"),
                                   tunnel_id=relay.TunnelID.parse(UNNAMED)).encode())
        assert recv_all(sock)[:2] == bytes([1, relay.HOST_UNREACHABLE])
    assert spy.connections == 0


def test_client_reconnects_after_the_server_restarts(start_services, sites):
    dep = Deployment(start_services, [("srv-0.local", TUNNEL_A)])
    dep.client("c", TUNNEL_A, [{"name": "n", "addr": sites["srv-0"].addr, "host": "srv-0.local"}], **FAST_MUX)
    dep.wait_connections(TUNNEL_A, 1)
    port = dep.port
    dep.server.stop(timeout=0)
    raw = server_config([("srv-0.local", TUNNEL_A)])
    raw["services"][0]["addr"] = "127.0.0.1:%d" % port
    restarted = start_services(raw)["server"]
    dep.registry = restarted.handler.registry
    dep.wait_connections(TUNNEL_A, 1, timeout=8)     # backoff is capped at 5 s
    entrypoint = restarted.handler.entrypoints[0].address[1]
    assert http_get(entrypoint, "srv-0.local") == (200, b"srv-0")


def test_visitor_reaches_a_private_tunnel_by_its_id(deployment, start_services, backend):
    echo = backend(echo_then_bye)
    deployment.client("private-b", TUNNEL_B, [{"name": "ssh", "addr": echo.addr}])
    deployment.wait_connections(TUNNEL_B, 1)
    visitor = start_services({
        "services": [{"name": "visitor", "addr": "127.0.0.1:0",
                      "handler": {"type": "tcp", "chain": "to-server"}, "listener": {"type": "tcp"},
                      "forwarder": {"nodes": [{"name": "ssh", "addr": "private.local"}]}}],
        "chains": [{"name": "to-server", "hops": [{"name": "hop", "nodes": [{
            "name": "server", "addr": "127.0.0.1:%d" % deployment.port,
            "connector": {"type": "tunnel", "metadata": {"tunnel.id": TUNNEL_B}}}]}]}],
    })["visitor"]
    with connect(visitor.address[1]) as sock:
        sock.sendall(b"hello over a private tunnel")
        sock.shutdown(1)
        assert recv_all(sock) == b"hello over a private tunnelbye"


def test_sniffing_visitor_from_gost_command_line_reaches_the_host_it_asks_for(deployment, start_services, backend):
    # gost -L "tcp://:8000?sniffing=true" -F "tunnel://SERVER:8443?tunnel.id=..." has no forwarder
    # nodes: each connection goes, through the chain, to the host it asked for.
    deployment.client("private-b", TUNNEL_B, [{"name": "web", "addr": backend(name_responder("private")).addr}])
    deployment.wait_connections(TUNNEL_B, 1)
    raw = apply_cli({}, ["tcp://127.0.0.1:0?sniffing=true"],
                    ["tunnel://127.0.0.1:%d?tunnel.id=%s" % (deployment.port, TUNNEL_B)])
    visitor = start_services(raw)["service-0"]
    assert http_get(visitor.address[1], "private.local") == (200, b"private")
    status, body = http_get(visitor.address[1], "srv-0.local")    # not a host of tunnel B: refused
    assert status == 503 and b"srv-0.local" in body


def test_visitor_with_the_wrong_tunnel_id_is_refused(deployment):
    with connect(deployment.port) as sock:
        sock.sendall(relay.Request(cmd=relay.CONNECT, addrs=("127.0.0.1:1", "private.local:22"),
                                   tunnel_id=relay.TunnelID.parse(TUNNEL_A)).encode())
        assert recv_all(sock) == relay.Response(relay.HOST_UNREACHABLE).encode()


def test_bind_without_a_tunnel_id_is_a_bad_request(deployment):
    with connect(deployment.port) as sock:
        sock.sendall(relay.Request(cmd=relay.BIND, addrs=("127.0.0.1:1", ":0")).encode())
        assert recv_all(sock) == relay.Response(relay.BAD_REQUEST).encode()


def test_many_parallel_requests_through_one_tunnel_connection(deployment):
    hosts = ["srv-0.local" if i % 2 else "srv-1.local" for i in range(60)]
    jobs = [gevent.spawn(http_get, deployment.entrypoint, host) for host in hosts]
    gevent.joinall(jobs, timeout=30, raise_error=True)
    assert [job.value for job in jobs] == [(200, host[:5].encode()) for host in hosts]


def test_auth_is_required_when_configured(start_services, sites):
    raw = server_config([("srv-0.local", TUNNEL_A)])
    raw["services"][0]["handler"]["auth"] = {"username": "user", "password": "pass"}
    server = start_services(raw)["server"]
    with connect(server.address[1]) as sock:
        sock.sendall(relay.Request(cmd=relay.BIND, addrs=("127.0.0.1:1", ":0"), username="user", password="bad",
                                   tunnel_id=relay.TunnelID.parse(TUNNEL_A)).encode())
        assert recv_all(sock) == relay.Response(relay.UNAUTHORIZED).encode()
    good = client_config("c", server.address[1], TUNNEL_A, [{"name": "n", "addr": sites["srv-0"].addr}])
    good["chains"][0]["hops"][0]["nodes"][0]["connector"]["auth"] = {"username": "user", "password": "pass"}
    start_services(good)
    entrypoint = server.handler.entrypoints[0].address[1]
    assert wait_until(lambda: http_get(entrypoint, "srv-0.local")[0] == 200, 10)


def test_relay_bind_remote_port_forwarding(start_services, backend, run_services):
    """GOST's plain remote forwarding: relay?bind=true on the server, rtcp + relay on the client."""
    echo = backend(echo_then_bye)
    server = start_services({"services": [{"name": "relay", "addr": "127.0.0.1:0",
                                           "handler": {"type": "relay", "metadata": {"bind": True}}}]})["relay"]
    client = start_services(client_config("rf", server.address[1], None, [{"name": "echo", "addr": echo.addr}],
                                          connector="relay", addr="127.0.0.1:0"))["rf"]
    assert wait_until(lambda: client.listener.bound is not None, 10)
    public_port = int(client.listener.bound.endpoint.rpartition(":")[2])   # the port the server bound for us

    def roundtrip():
        try:
            with connect(public_port, timeout=2) as sock:
                sock.sendall(b"ping")
                sock.shutdown(1)
                return recv_all(sock)
        except OSError:
            return None

    assert wait_until(lambda: roundtrip() == b"pingbye", 10)


def test_relay_connect_dials_the_target(start_services, backend):
    echo = backend(echo_then_bye)
    server = start_services({"services": [{"name": "relay", "addr": "127.0.0.1:0",
                                           "handler": {"type": "relay"}}]})["relay"]
    with connect(server.address[1]) as sock:
        # Request and first payload in one segment, as GOST's relay connector sends them.
        sock.sendall(relay.Request(cmd=relay.CONNECT, addrs=(echo.addr,)).encode() + b"early")
        sock.shutdown(1)
        assert recv_all(sock) == relay.Response(relay.OK).encode() + b"earlybye"
    with connect(server.address[1]) as sock:
        sock.sendall(relay.Request(cmd=relay.BIND, addrs=("127.0.0.1:0",), network="tcp").encode())
        assert recv_all(sock) == relay.Response(relay.FORBIDDEN).encode()   # bind not enabled


def test_extra_entrypoints_with_their_own_ingress(start_services, sites):
    raw = server_config([("srv-0.local", TUNNEL_A)],
                        entrypoints=[{"addr": "127.0.0.1:0", "ingress": "ingress-1"}])
    raw["ingresses"].append({"name": "ingress-1", "rules": [{"hostname": "alias.local", "endpoint": TUNNEL_A}]})
    server = start_services(raw)["server"]
    start_services(client_config("c", server.address[1], TUNNEL_A, [{"name": "n", "addr": sites["srv-0"].addr}]))
    main_ep, extra_ep = (ep.address[1] for ep in server.handler.entrypoints)
    assert wait_until(lambda: http_get(main_ep, "srv-0.local") == (200, b"srv-0"), 10)
    assert http_get(extra_ep, "alias.local") == (200, b"srv-0")
    assert http_get(extra_ep, "srv-0.local")[0] == 502          # not in that entrypoint's ingress
    assert http_get(main_ep, "alias.local")[0] == 502


def test_inline_tunnel_rules_from_the_command_line_form(start_services, sites):
    server = start_services({"services": [{
        "name": "server", "addr": "127.0.0.1:0",
        "handler": {"type": "tunnel", "metadata": {
            "entrypoint": "127.0.0.1:0", "tunnel": "srv-0.local:%s,*.w.local:%s" % (TUNNEL_A, TUNNEL_A)}}}]})["server"]
    start_services(client_config("c", server.address[1], TUNNEL_A, [{"name": "n", "addr": sites["srv-0"].addr}]))
    entrypoint = server.handler.entrypoints[0].address[1]
    assert wait_until(lambda: http_get(entrypoint, "srv-0.local") == (200, b"srv-0"), 10)
    assert http_get(entrypoint, "x.w.local") == (200, b"srv-0")


def test_entrypoint_cuts_a_silent_visitor(start_services):
    import time

    dep = Deployment(start_services, [("srv-0.local", TUNNEL_A)], **{"entrypoint.headerTimeout": "0.3s"})
    with connect(dep.entrypoint) as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\n")          # never finishes the head
        assert recv_all(sock) == b""
        assert 0.25 <= time.monotonic() - started < 3


def test_silent_tunnel_port_client_is_cut_by_read_timeout(start_services):
    import time

    dep = Deployment(start_services, [("srv-0.local", TUNNEL_A)], readTimeout="0.3s")
    with connect(dep.port) as sock:
        started = time.monotonic()
        assert recv_all(sock) == b""
        assert 0.25 <= time.monotonic() - started < 3
