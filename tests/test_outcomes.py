"""Every refusal counts as a handler error; chain dials fill the node-connect histogram."""

import pytest

from gostgev import metrics
from gostgev.codec import relay
from gostgev.service import ServiceContext
from tests.conftest import connect, http_get, name_responder, recv_all, wait_until
from tests.handler.test_tunnel import TUNNEL_A, Deployment


@pytest.fixture
def recorder():
    return metrics.Metrics(hostname="node-1")


@pytest.fixture
def registry(recorder):
    return recorder.registry


@pytest.fixture
def measured(start_services, recorder):
    """start_services, with the services recording into ``recorder``."""
    context = ServiceContext(metrics=recorder)
    return lambda raw: start_services(raw, context=context)


def errors(registry, service):
    return registry.get_sample_value("gost_service_handler_errors_total",
                                     {"host": "node-1", "service": service, "client": ""}) or 0


def requests(registry, service):
    return registry.get_sample_value("gost_service_requests_total",
                                     {"host": "node-1", "service": service, "client": ""}) or 0


def test_refusals_are_handler_errors_and_served_connections_are_not(registry, measured, backend):
    site = backend(name_responder("site"))
    proxy = measured({"services": [{
        "name": "proxy", "addr": "127.0.0.1:0", "handler": {"type": "tcp", "metadata": {"sniffing": True}},
        "forwarder": {"nodes": [{"name": "a", "addr": site.addr, "host": "a.local"}]}}]})["proxy"]
    port = proxy.address[1]
    assert http_get(port, "a.local") == (200, b"site")
    # HTTP is routed request by request: a 502 to one request does not fail the connection...
    assert http_get(port, "nobody.local")[0] == 502
    # ...but a connection that goes nowhere does.
    with connect(port) as sock:
        sock.sendall(b"\x00 not a protocol anyone routes\r\n")
        assert recv_all(sock) == b""
    assert wait_until(lambda: requests(registry, "proxy") == 3, 5)
    assert errors(registry, "proxy") == 1


def test_relay_refusals_on_the_tunnel_port_are_handler_errors(registry, measured):
    dep = Deployment(measured, [("a.local", TUNNEL_A)])
    for tunnel_id in (None, relay.TunnelID.parse(TUNNEL_A)):
        # no tunnel ID: Bad Request; a tunnel with no client: Service Unavailable
        with connect(dep.port) as sock:
            sock.sendall(relay.Request(cmd=relay.CONNECT, addrs=("a.local:80",), tunnel_id=tunnel_id).encode())
            assert recv_all(sock)[:2] == b"\x01" + bytes([relay.BAD_REQUEST if tunnel_id is None
                                                          else relay.SERVICE_UNAVAILABLE])
    assert wait_until(lambda: requests(registry, "server") == 2, 5)
    assert errors(registry, "server") == 2


def test_a_chain_dial_is_timed_per_node(registry, measured, backend):
    dep = Deployment(measured, [("a.local", TUNNEL_A)])
    dep.client("client", TUNNEL_A, [{"name": "n", "addr": backend(name_responder("site")).addr}])
    dep.wait_connections(TUNNEL_A, 1)
    labels = {"host": "node-1", "chain": "chain-client", "node": "node-0"}
    count = registry.get_sample_value("gost_chain_node_connect_duration_seconds_count", labels)
    assert count == 1
    assert registry.get_sample_value("gost_chain_node_connect_duration_seconds_sum", labels) > 0
