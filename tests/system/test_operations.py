"""Metrics and the web API on a live runtime: counters move, rule changes apply at once."""

import base64
import copy
import json
import re

import pytest

from gostgev import metrics
from gostgev.cli import start_admin
from gostgev.components import build_config
from gostgev.runtime import Runtime
from gostgev.service import ServiceContext
from tests.conftest import connect, http_get, name_responder, recv_all, wait_until
from tests.handler.test_tunnel import TUNNEL_A, client_config

AUTH = "Basic " + base64.b64encode(b"admin:secret").decode()


@pytest.fixture
def live(start_services, backend):
    site = backend(name_responder("site"))
    raw = {
        "services": [
            {"name": "server", "addr": "127.0.0.1:0",
             "handler": {"type": "tunnel", "metadata": {"entrypoint": "127.0.0.1:0", "ingress": "ingress-0"}}},
            {"name": "fwd", "addr": "127.0.0.1:0", "handler": {"type": "tcp", "metadata": {"sniffing": True}},
             "forwarder": {"nodes": [{"name": "site", "addr": site.addr}]}},
        ],
        "ingresses": [{"name": "ingress-0", "rules": [{"hostname": "a.local", "endpoint": TUNNEL_A}]}],
        "authers": [{"name": "admins", "auths": [{"username": "admin", "password": "secret"}]}],
        "metrics": {"addr": "127.0.0.1:0", "path": "/metrics"},
        "api": {"addr": "127.0.0.1:0", "pathPrefix": "/api", "auther": "admins"},
    }
    runtime = Runtime(lambda warnings: build_config(copy.deepcopy(raw), warnings), grace=1,
                      context=ServiceContext(metrics=metrics.Metrics()))
    config = build_config(copy.deepcopy(raw), [])
    admin = start_admin(config, runtime)
    runtime.start(config)
    server = runtime.services["server"]
    start_services(client_config("c", server.address[1], TUNNEL_A, [{"name": "n", "addr": site.addr}]))
    entrypoint = server.handler.entrypoints[0].address[1]
    assert wait_until(lambda: http_get(entrypoint, "a.local") == (200, b"site"), 10)
    yield {"runtime": runtime, "metrics": admin[0].address[1], "api": admin[1].address[1],
           "entrypoint": entrypoint, "fwd": runtime.services["fwd"].address[1]}
    runtime.stop(0)
    for server in admin:
        server.stop()


def request(port, method, path, body=None, auth=AUTH):
    payload = json.dumps(body).encode() if body is not None else b""
    head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: %d\r\n" % (
        method, path, len(payload))
    if auth:
        head += "Authorization: %s\r\n" % auth
    with connect(port) as sock:
        sock.sendall(head.encode() + b"\r\n" + payload)
        response = recv_all(sock)
    status_line, _, rest = response.partition(b"\r\n")
    return int(status_line.split()[1]), rest.partition(b"\r\n\r\n")[2]


def sample(text, name, **labels):
    """The value of one sample in Prometheus text format (0 if absent)."""
    for line in text.splitlines():
        match = re.match(r"^%s\{(.*)\} (\S+)$" % re.escape(name), line)
        if match and all('%s="%s"' % kv in match.group(1) for kv in labels.items()):
            return float(match.group(2))
    return 0.0


def test_counters_move_with_traffic(live):
    before = request(live["metrics"], "GET", "/metrics", auth=None)[1].decode()
    for _ in range(3):
        assert http_get(live["fwd"], "x") == (200, b"site")
    text = request(live["metrics"], "GET", "/metrics", auth=None)[1].decode()
    requests = sample(text, "gost_service_requests_total", service="fwd")
    assert requests - sample(before, "gost_service_requests_total", service="fwd") == 3
    assert sample(text, "gost_service_transfer_output_bytes_total", service="fwd") > 0
    assert sample(text, "gost_service_transfer_input_bytes_total", service="fwd") > 0
    assert sample(text, "gostgev_tunnel_connections", service="server", tunnel=TUNNEL_A) == 1
    assert sample(text, "gostgev_tunnel_streams_total", service="server", tunnel=TUNNEL_A) >= 1
    assert re.search(r"^gost_services\{.*\} 2\.0$", text, re.M)


def test_api_requires_auth(live):
    assert request(live["api"], "GET", "/api/tunnels", auth=None)[0] == 401
    wrong = "Basic " + base64.b64encode(b"admin:nope").decode()
    assert request(live["api"], "GET", "/api/tunnels", auth=wrong)[0] == 401


def test_api_lists_tunnels_and_services(live):
    status, body = request(live["api"], "GET", "/api/tunnels")
    tunnels = json.loads(body)["tunnels"]
    assert status == 200 and tunnels[0]["tunnel"] == TUNNEL_A
    connection = tunnels[0]["connections"][0]
    assert connection["remote"].startswith("127.0.0.1:") and connection["streams"] >= 1
    names = [s["name"] for s in json.loads(request(live["api"], "GET", "/api/services")[1])["services"]]
    assert names == ["server", "fwd"]


def test_api_rule_changes_take_effect_at_once(live):
    assert http_get(live["entrypoint"], "b.local")[0] == 502
    status, _ = request(live["api"], "POST", "/api/ingresses/ingress-0/rules",
                        {"hostname": "b.local", "endpoint": TUNNEL_A})
    assert status == 201
    assert http_get(live["entrypoint"], "b.local") == (200, b"site")
    assert request(live["api"], "DELETE", "/api/ingresses/ingress-0/rules/b.local")[0] == 204
    assert http_get(live["entrypoint"], "b.local")[0] == 502
    assert request(live["api"], "POST", "/api/ingresses/ingress-0/rules", {"hostname": "c", "endpoint": "x"})[0] == 400


def test_api_reload(live):
    status, body = request(live["api"], "POST", "/api/config/reload")
    assert status == 200 and json.loads(body)["ok"] is True
    assert http_get(live["entrypoint"], "a.local") == (200, b"site")
