"""Tunnel servers as one cluster through a real Redis (``sds``): any entrypoint reaches any tunnel.

Two server nodes A and B in this process share one redis-server; a tunnel
client connects to one of them, and visitors come in at the other.
"""

import hashlib
import json
import random
from urllib.parse import parse_qs

import gevent
import gevent.pool
import pytest
from gevent import ssl
from gevent.pywsgi import WSGIServer
from prometheus_client import generate_latest

from gostgev.components import build_config
from gostgev.discovery import LOOKUP_CACHE
from gostgev.metrics import Metrics
from gostgev.service import ServiceContext
from tests.conftest import (
    connect,
    echo_then_bye,
    http_get,
    name_responder,
    read_request_head,
    recv_all,
    tls_get,
    wait_until,
)
from tests.handler.test_tunnel import TUNNEL_A, TUNNEL_B, client_config

RULES = [("srv-0.local", TUNNEL_A), ("secure.example.com", TUNNEL_A), ("private.local", "$" + TUNNEL_B),
         ("srv-1.local", TUNNEL_B)]


def node_config(name, redis_addr, key, ttl="3s", **metadata):
    md = {"entrypoint": "127.0.0.1:0", "ingress": "ingress-0", "sd": "sd-0", "sd.node": name,
          "tunnel.ttl": ttl, **metadata}
    return {
        "sds": [{"name": "sd-0", "redis": {"addr": redis_addr, "key": key}}],
        "services": [{"name": name, "addr": "127.0.0.1:0",
                      "handler": {"type": "tunnel", "metadata": md}, "listener": {"type": "tcp"}}],
        "ingresses": [{"name": "ingress-0", "rules": [{"hostname": h, "endpoint": e} for h, e in RULES]}],
    }


class Cluster:
    def __init__(self, start_services, redis_server, names=("a", "b"), **metadata):
        self.start_services = start_services
        self.redis = redis_server
        self.key = "test:sd"
        self.metrics = Metrics()
        self.nodes = {}
        for name in names:
            self.nodes[name] = start_services(node_config(name, redis_server.addr, self.key, **metadata),
                                              context=ServiceContext(metrics=self.metrics))[name]

    def entrypoint(self, name):
        return self.nodes[name].handler.entrypoints[0].address[1]

    def port(self, name):
        return self.nodes[name].address[1]

    def client(self, name, node, tunnel_id, nodes):
        return self.start_services(client_config(name, self.port(node), tunnel_id, nodes))[name]

    def records(self, tunnel_id):
        discovery = next(iter(self.nodes.values())).handler.router.discovery
        return discovery.backend.lookup(tunnel_id)

    def wait_registered(self, tunnel_id, count, timeout=10):
        assert wait_until(lambda: len(self.records(tunnel_id)) == count, timeout), self.records(tunnel_id)


@pytest.fixture
def cluster(start_services, redis_server):
    return Cluster(start_services, redis_server)


def test_a_visitor_at_one_node_reaches_a_tunnel_held_by_the_other(cluster, backend):
    site = backend(name_responder("srv-0"))
    cluster.client("c", "b", TUNNEL_A, [{"name": "web", "addr": site.addr, "host": "srv-0.local"}])
    cluster.wait_registered(TUNNEL_A, 1)
    [record] = cluster.records(TUNNEL_A)
    assert record.node == "b" and record.address == "127.0.0.1:%d" % cluster.entrypoint("b")
    assert http_get(cluster.entrypoint("b"), "srv-0.local") == (200, b"srv-0")
    assert http_get(cluster.entrypoint("a"), "srv-0.local") == (200, b"srv-0")
    text = generate_latest(cluster.metrics.registry).decode()
    assert 'gostgev_cluster_forwards_total{host=' in text and 'node="b"' in text


def keep_alive_responder(name):
    """An HTTP handler that answers every request of a connection with ``name``."""

    def handle(sock, _address):
        for _ in range(1000):
            if not read_request_head(sock):
                return
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(name), name.encode()))

    return handle


def read_response(sock):
    """(head, body) of one response with a Content-Length."""
    data = b""
    for _ in range(100):
        if b"\r\n\r\n" in data:
            break
        chunk = sock.recv(4096)
        assert chunk, "closed before a whole response head"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    body = read_body(sock, head, body)
    assert body is not None, "closed before the whole body"
    return head, body


def read_body(sock, head, body):
    """The whole body a head's Content-Length announces (``body``: its start), None if cut short."""
    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
    for _ in range(10000):
        if len(body) >= length:
            return body
        chunk = sock.recv(65536)
        if not chunk:
            return None
        body += chunk
    return None


def test_keep_alive_requests_cross_over_on_a_pooled_connection(cluster, backend):
    site = backend(keep_alive_responder("srv-0"))
    cluster.client("c", "b", TUNNEL_A, [{"name": "web", "addr": site.addr, "host": "srv-0.local"}])
    cluster.wait_registered(TUNNEL_A, 1)
    pool = cluster.nodes["a"].handler.router.node_pool()
    accepted = []
    entrypoint_b = cluster.nodes["b"].handler.entrypoints[0]
    handle = entrypoint_b.handle
    entrypoint_b.handle = lambda conn: accepted.append(conn.peer) or handle(conn)
    for _ in range(2):
        with connect(cluster.entrypoint("a")) as sock:
            for _ in range(5):
                sock.sendall(b"GET / HTTP/1.1\r\nHost: srv-0.local\r\n\r\n")
                head, body = read_response(sock)
                assert head.startswith(b"HTTP/1.1 200") and body == b"srv-0"
        # The client is gone; its connection to B waits in the pool for the next one.
        assert wait_until(lambda: len(pool) == 1, 3)
    assert len(accepted) == 1, "ten requests from two clients went over one connection to B"


def test_a_kept_alive_client_outlives_the_cached_lookup(cluster, backend):
    # A later request on the connection is routed in an event-loop callback, where the lookup
    # (its cached answer gone) cannot be made: the session's greenlet makes it.
    site = backend(keep_alive_responder("srv-0"))
    cluster.client("c", "b", TUNNEL_A, [{"name": "web", "addr": site.addr, "host": "srv-0.local"}])
    cluster.wait_registered(TUNNEL_A, 1)
    with connect(cluster.entrypoint("a")) as sock:
        for _ in range(3):
            sock.sendall(b"GET / HTTP/1.1\r\nHost: srv-0.local\r\n\r\n")
            head, body = read_response(sock)
            assert head.startswith(b"HTTP/1.1 200") and body == b"srv-0"
            gevent.sleep(LOOKUP_CACHE + 0.1)


def test_tls_is_replayed_to_the_node_that_holds_the_tunnel(cluster, backend, cert_files, client_tls_context):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert_files)
    secure = backend(name_responder("secure"), ssl_context=context)
    cluster.client("c", "b", TUNNEL_A, [{"name": "s", "addr": secure.addr, "host": "secure.example.com"}])
    cluster.wait_registered(TUNNEL_A, 1)
    assert tls_get(cluster.entrypoint("a"), "secure.example.com", client_tls_context) == b"secure"


def test_a_relay_visitor_at_one_node_reaches_a_private_tunnel_on_the_other(cluster, backend, start_services):
    echo = backend(echo_then_bye)
    cluster.client("p", "b", TUNNEL_B, [{"name": "ssh", "addr": echo.addr}])
    cluster.wait_registered(TUNNEL_B, 1)
    visitor = start_services({
        "services": [{"name": "visitor", "addr": "127.0.0.1:0",
                      "handler": {"type": "tcp", "chain": "to-a"}, "listener": {"type": "tcp"},
                      "forwarder": {"nodes": [{"name": "ssh", "addr": "private.local"}]}}],
        "chains": [{"name": "to-a", "hops": [{"name": "hop", "nodes": [{
            "name": "a", "addr": "127.0.0.1:%d" % cluster.port("a"),
            "connector": {"type": "tunnel", "metadata": {"tunnel.id": TUNNEL_B}}}]}]}],
    })["visitor"]
    with connect(visitor.address[1]) as sock:
        sock.sendall(b"across nodes")
        sock.shutdown(1)
        assert recv_all(sock) == b"across nodesbye"


def test_a_dead_session_leaves_the_cluster_at_once(cluster, backend):
    site = backend(name_responder("srv-0"))
    client = cluster.client("c", "b", TUNNEL_A, [{"name": "web", "addr": site.addr, "host": "srv-0.local"}])
    cluster.wait_registered(TUNNEL_A, 1)
    client.stop(timeout=0)
    cluster.wait_registered(TUNNEL_A, 0, timeout=3)
    assert wait_until(lambda: http_get(cluster.entrypoint("a"), "srv-0.local")[0] == 503, 3)


def test_a_node_that_vanishes_leaves_nothing_routable_after_one_ttl(cluster, backend):
    site = backend(name_responder("srv-0"))
    cluster.client("c", "b", TUNNEL_A, [{"name": "web", "addr": site.addr, "host": "srv-0.local"}])
    cluster.wait_registered(TUNNEL_A, 1)
    # B stops renewing without a word (as a killed process would): its record expires by itself.
    cluster.nodes["b"].handler.router.discovery.abandon()
    cluster.wait_registered(TUNNEL_A, 0, timeout=3 + 2)


def test_a_redis_outage_keeps_local_routing_and_fails_remote_lookups_fast(cluster, backend):
    site = backend(name_responder("srv-0"))
    cluster.client("c", "b", TUNNEL_A, [{"name": "web", "addr": site.addr, "host": "srv-0.local"}])
    cluster.wait_registered(TUNNEL_A, 1)
    cluster.redis.stop()
    gevent.sleep(1.1)    # the cached answer of the last lookup runs out (LOOKUP_CACHE)
    assert http_get(cluster.entrypoint("b"), "srv-0.local") == (200, b"srv-0")
    started = gevent.get_hub().loop.now()
    status, body = http_get(cluster.entrypoint("a"), "srv-0.local")
    assert status == 503 and b"srv-0.local" in body
    assert gevent.get_hub().loop.now() - started < 1.0
    # Redis comes back empty: B writes its records again, and A routes across once more.
    cluster.redis.start()
    assert wait_until(lambda: http_get(cluster.entrypoint("a"), "srv-0.local") == (200, b"srv-0"), 10)


def test_a_request_that_went_round_in_a_circle_is_refused(cluster):
    # A forged record makes A send srv-0.local to B, and B (holding nothing) would send it back.
    with connect(cluster.entrypoint("a")) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: srv-0.local\r\nGost-Forwarded-Node: a\r\nConnection: close\r\n\r\n")
        assert recv_all(sock).startswith(b"HTTP/1.1 508")
    with connect(cluster.entrypoint("a")) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: srv-0.local\r\nGost-Forwarded-Node: b\r\nConnection: close\r\n\r\n")
        assert recv_all(sock).startswith(b"HTTP/1.1 503")


def test_a_stale_record_on_both_nodes_never_loops(cluster):
    # Both nodes are named as holders, and neither holds a connection: each forwards once at most.
    backend = cluster.nodes["a"].handler.router.discovery.backend
    from gostgev.discovery import Record

    backend.register([Record("x-a", TUNNEL_A, "a", "tcp", "127.0.0.1:%d" % cluster.entrypoint("a")),
                      Record("x-b", TUNNEL_A, "b", "tcp", "127.0.0.1:%d" % cluster.entrypoint("b"))])
    assert http_get(cluster.entrypoint("a"), "srv-0.local")[0] == 503
    assert http_get(cluster.entrypoint("b"), "srv-0.local")[0] == 503
    forwarded = [line for line in generate_latest(cluster.metrics.registry).decode().splitlines()
                 if line.startswith("gostgev_cluster_forwards_total{")]
    assert sum(float(line.split()[-1]) for line in forwarded) == 2   # one hop each, never back


def test_the_cluster_view_names_each_node_and_its_connections(cluster, backend):
    site = backend(name_responder("srv-0"))
    cluster.client("c1", "a", TUNNEL_A, [{"name": "web", "addr": site.addr, "host": "srv-0.local"}])
    cluster.client("c2", "b", TUNNEL_A, [{"name": "web", "addr": site.addr, "host": "srv-0.local"}])
    cluster.wait_registered(TUNNEL_A, 2)
    view = cluster.nodes["a"].handler.router.discovery.cluster()
    assert view["node"] == "a" and view["nodes"] == {"a": 1, "b": 1}
    assert sorted(r["node"] for r in view["tunnels"][TUNNEL_A]) == ["a", "b"]


class PluginServer:
    """GOST's HTTP service-discovery plugin protocol, served from memory."""

    def __init__(self):
        self.records = {}
        self.calls = []
        self.server = WSGIServer(("127.0.0.1", 0), self.app, log=None, error_log=None)
        self.server.start()
        self.url = "http://127.0.0.1:%d/sd" % self.server.server_port

    def app(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        self.calls.append(method)
        body = b""
        if method == "GET":
            name = parse_qs(environ.get("QUERY_STRING", "")).get("name", [""])[0]
            body = json.dumps({"services": [r for r in self.records.values() if r["name"] == name]}).encode()
        else:
            record = json.loads(environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)))
            if method in ("POST", "PUT"):
                self.records[record["id"]] = record
            else:
                self.records.pop(record["id"], None)
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]


def test_gost_http_plugin_service_discovery(start_services, backend):
    plugin = PluginServer()
    try:
        nodes = {}
        for name in ("a", "b"):
            config = node_config(name, "unused:1", "unused", ttl="1s")
            config["sds"] = [{"name": "sd-0", "plugin": {"type": "http", "addr": plugin.url, "timeout": "2s"}}]
            nodes[name] = start_services(config)[name]
        site = backend(name_responder("srv-0"))
        client = start_services(client_config("c", nodes["b"].address[1], TUNNEL_A,
                                              [{"name": "web", "addr": site.addr, "host": "srv-0.local"}]))["c"]
        assert wait_until(lambda: len(plugin.records) == 1, 5)
        [record] = plugin.records.values()
        assert record["name"] == TUNNEL_A and record["node"] == "b" and record["network"] == "tcp"
        assert http_get(nodes["a"].handler.entrypoints[0].address[1], "srv-0.local") == (200, b"srv-0")
        assert wait_until(lambda: "PUT" in plugin.calls, 3), plugin.calls   # renewed every ttl/3
        client.stop(timeout=0)
        assert wait_until(lambda: not plugin.records and "DELETE" in plugin.calls, 5)
    finally:
        plugin.server.stop()


def hashing_responder(name):
    """Answers a POST with ``name`` and the SHA-256 of the body it received."""

    def handle(sock, _address):
        head = read_request_head(sock)
        if not head:
            return
        head, _, body = head.partition(b"\r\n\r\n")
        body = read_body(sock, head, body)
        if body is None:
            return
        answer = ("%s %s" % (name, hashlib.sha256(body).hexdigest())).encode()
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(answer), answer))

    return handle


def test_two_hundred_visitors_across_two_nodes_none_lost_none_misrouted(start_services, redis_server, backend):
    # Tunnel A's two clients are on node a, tunnel B's two on node b; visitors of both come in at both.
    cluster = Cluster(start_services, redis_server, names=("a", "b"))
    sites = {"srv-0.local": backend(hashing_responder("tunnel-a")),
             "srv-1.local": backend(hashing_responder("tunnel-b"))}
    for name, node, tunnel, host in (("c1", "a", TUNNEL_A, "srv-0.local"), ("c2", "a", TUNNEL_A, "srv-0.local"),
                                     ("c3", "b", TUNNEL_B, "srv-1.local"), ("c4", "b", TUNNEL_B, "srv-1.local")):
        cluster.client(name, node, tunnel, [{"name": "web", "addr": sites[host].addr, "host": host}])
    cluster.wait_registered(TUNNEL_A, 2)
    cluster.wait_registered(TUNNEL_B, 2)
    rng = random.Random(7)
    bodies = [rng.randbytes(rng.randrange(1, 64 * 1024)) for _ in range(200)]
    hosts = [("srv-0.local", "tunnel-a"), ("srv-1.local", "tunnel-b")]

    def visit(index):
        port = cluster.entrypoint("ab"[index % 2])
        host = hosts[(index // 2) % 2][0]
        body = bodies[index]
        with connect(port) as sock:
            sock.sendall(b"POST /%d HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                         % (index, host.encode(), len(body)) + body)
            response = recv_all(sock)
        return response.partition(b"\r\n\r\n")[2].decode()

    pool = gevent.pool.Pool(50)
    answers = pool.map(visit, range(200))
    expected = ["%s %s" % (hosts[(i // 2) % 2][1], hashlib.sha256(body).hexdigest()) for i, body in enumerate(bodies)]
    assert sum(a == e for a, e in zip(answers, expected, strict=True)) == 200
    forwarded = [line for line in generate_latest(cluster.metrics.registry).decode().splitlines()
                 if line.startswith("gostgev_cluster_forwards_total{")]
    assert sum(float(line.split()[-1]) for line in forwarded) == 100   # half came in at the other node


def test_a_reload_that_moves_the_node_rewrites_its_records(cluster, backend):
    site = backend(name_responder("srv-0"))
    cluster.client("c", "b", TUNNEL_A, [{"name": "web", "addr": site.addr, "host": "srv-0.local"}])
    cluster.wait_registered(TUNNEL_A, 1)
    node_b = cluster.nodes["b"]
    raw = node_config("b", cluster.redis.addr, cluster.key, **{"sd.node": "b2"})
    node_b.reconfigure(build_config(raw, []).services[0])
    assert wait_until(lambda: [r.node for r in cluster.records(TUNNEL_A)] == ["b2"], 3), cluster.records(TUNNEL_A)
    assert http_get(cluster.entrypoint("a"), "srv-0.local") == (200, b"srv-0")
