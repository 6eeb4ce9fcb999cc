"""Metrics: GOST's names and labels, scraped from a live MetricsServer on loopback."""

import base64

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gostgev import metrics
from gostgev.auth import Auther, User
from gostgev.codec.relay import TunnelID
from tests.conftest import connect, recv_all

TUNNEL = "4d21094e-b74c-4916-86c1-d9fa36ea677b"

# go-gost/x metrics/metrics.go (names) and metrics/prom.go (labels, buckets)
GOST_METRICS = {
    "gost_services": ("gauge", {"host"}),
    "gost_service_requests_total": ("counter", {"host", "service", "client"}),
    "gost_service_requests_in_flight": ("gauge", {"host", "service", "client"}),
    "gost_service_request_duration_seconds": ("histogram", {"host", "service"}),
    "gost_service_transfer_input_bytes_total": ("counter", {"host", "service", "client"}),
    "gost_service_transfer_output_bytes_total": ("counter", {"host", "service", "client"}),
    "gost_service_handler_errors_total": ("counter", {"host", "service", "client"}),
    "gost_chain_errors_total": ("counter", {"host", "chain", "node"}),
    "gost_chain_node_connect_duration_seconds": ("histogram", {"host", "chain", "node"}),
}
GOSTGEV_METRICS = {
    "gostgev_tunnel_connections": ("gauge", {"host", "service", "tunnel"}),
    "gostgev_tunnel_streams_total": ("counter", {"host", "service", "tunnel"}),
    "gostgev_tunnel_reconnects_total": ("counter", {"host", "service"}),
}


def http_get(address, path, auth=None):
    """GET over a plain socket; returns (status, headers dict, body text)."""
    head = "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n" % path
    if auth:
        head += "Authorization: Basic %s\r\n" % base64.b64encode(("%s:%s" % auth).encode()).decode()
    with connect(address[1]) as sock:
        sock.sendall((head + "\r\n").encode())
        response = recv_all(sock)
    head, _, body = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, body.decode()


def scrape(address, auth=None):
    """{sample name: {frozenset(labels.items()): value}} from the live server."""
    status, _, body = http_get(address, "/metrics", auth)
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return samples


def value(samples, name, **labels):
    return samples.get(name, {}).get(frozenset(labels.items()))


@pytest.fixture
def enabled():
    return metrics.Metrics(hostname="node-1")


@pytest.fixture
def server(enabled):
    started = []

    def start(**kwargs):
        kwargs.setdefault("metrics", enabled)
        srv = metrics.MetricsServer(("127.0.0.1", 0), **kwargs)
        srv.start()
        started.append(srv)
        return srv.address

    yield start
    for srv in started:
        srv.stop()


def test_families_have_gost_names_types_and_labels(enabled, server):
    """Every GOST family is exported under GOST's name, type and label set."""
    address = server()
    enabled.services(2)
    enabled.request_finished(enabled.request_started("svc", client="10.0.0.9"), error=True)
    enabled.transfer("svc", 10, 20, client="10.0.0.9")
    enabled.chain_error("chain-0", "node-0")
    enabled.node_connect("chain-0", "node-0", 0.02)
    enabled.tunnel_connections("svc", TunnelID.parse(TUNNEL), 1)
    enabled.tunnel_stream("svc", TunnelID.parse(TUNNEL))
    enabled.tunnel_reconnect("client-svc")
    _, headers, body = http_get(address, "/metrics")
    assert headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(body)}
    for name, (kind, labels) in {**GOST_METRICS, **GOSTGEV_METRICS}.items():
        # The parser drops a counter's _total suffix from the family name.
        family = families[name[:-len("_total")] if kind == "counter" else name]
        assert family.type == kind, name
        sample = next(s for s in family.samples if s.name in (name, name + "_count"))
        assert set(sample.labels) == labels, name
        assert sample.labels["host"] == "node-1"
    assert "_created" not in body   # GOST's Go client exports no *_created series


def test_request_counters_gauge_and_histogram_move(enabled, server):
    """A request moves in-flight up then down, the counter, histogram and errors."""
    address = server()
    token = enabled.request_started("svc")
    assert value(scrape(address), "gost_service_requests_in_flight", host="node-1", service="svc", client="") == 1
    enabled.request_finished(token, error=False)
    enabled.request_finished(enabled.request_started("svc"), error=True)
    samples = scrape(address)
    svc = {"host": "node-1", "service": "svc"}
    assert value(samples, "gost_service_requests_in_flight", client="", **svc) == 0
    assert value(samples, "gost_service_requests_total", client="", **svc) == 2
    assert value(samples, "gost_service_handler_errors_total", client="", **svc) == 1
    assert value(samples, "gost_service_request_duration_seconds_count", **svc) == 2
    assert value(samples, "gost_service_request_duration_seconds_bucket", le="60.0", **svc) == 2


def test_transfer_chain_and_tunnel_metrics_move(enabled, server):
    address = server()
    enabled.services(3)
    enabled.transfer("svc", 100, 0)
    enabled.transfer("svc", 5, 7)
    enabled.chain_error("chain-0", "node-a")
    enabled.tunnel_connections("svc", TunnelID.parse("$" + TUNNEL), 2)
    for _ in range(3):
        enabled.tunnel_stream("svc", TunnelID.parse(TUNNEL))
    enabled.tunnel_reconnect("client")
    samples = scrape(address)
    assert value(samples, "gost_services", host="node-1") == 3
    svc = {"host": "node-1", "service": "svc", "client": ""}
    assert value(samples, "gost_service_transfer_input_bytes_total", **svc) == 105
    assert value(samples, "gost_service_transfer_output_bytes_total", **svc) == 7
    assert value(samples, "gost_chain_errors_total", host="node-1", chain="chain-0", node="node-a") == 1
    # private or not, a tunnel is labelled by its bare UUID
    tun = {"host": "node-1", "service": "svc", "tunnel": TUNNEL}
    assert value(samples, "gostgev_tunnel_connections", **tun) == 2
    assert value(samples, "gostgev_tunnel_streams_total", **tun) == 3
    assert value(samples, "gostgev_tunnel_reconnects_total", host="node-1", service="client") == 1


def test_off_records_nothing_and_costs_a_call():
    off = metrics.OFF
    token = off.request_started("svc")
    assert token is None
    off.request_finished(token, error=True)
    off.services(1)
    off.transfer("svc", 1, 1)
    off.chain_error("c", "n")
    off.node_connect("c", "n", 1.0)
    off.tunnel_connections("svc", TUNNEL, 1)
    off.tunnel_stream("svc", TUNNEL)
    off.tunnel_reconnect("svc")
    off.http_request("svc", 200)
    assert not hasattr(metrics, "current")   # nothing process-wide to switch on or off


def test_registries_are_independent():
    a = metrics.Metrics(hostname="a")
    b = metrics.Metrics(hostname="b")
    a.services(5)
    assert a.registry.get_sample_value("gost_services", {"host": "a"}) == 5
    assert b.registry.get_sample_value("gost_services", {"host": "b"}) == 0


def test_auth_required_when_configured(enabled, server):
    address = server(auther=Auther([User("prom", "s3cret")]))
    status, headers, _ = http_get(address, "/metrics")
    assert status == 401
    assert headers["www-authenticate"] == 'Basic realm="gostgev"'
    assert http_get(address, "/metrics", auth=("prom", "wrong"))[0] == 401
    assert http_get(address, "/metrics", auth=("prom", "s3cret"))[0] == 200


def test_custom_path_and_404_elsewhere(enabled, server):
    address = server(path="/gost/metrics")
    assert http_get(address, "/metrics")[0] == 404
    assert http_get(address, "/gost/metrics")[0] == 200


def test_server_answers_503_when_metrics_are_off(server):
    address = server(metrics=None)
    assert http_get(address, "/metrics")[0] == 503
