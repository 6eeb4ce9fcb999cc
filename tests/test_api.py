"""The JSON API against a fake runtime holding real Ingress objects, on loopback."""

import base64
import json

import pytest

from gostgev.api import MAX_BODY, ApiServer
from gostgev.auth import Auther, User
from gostgev.ingress import Ingress, Rule, parse_endpoint
from tests.conftest import connect, recv_all

UUID_A = "4d21094e-b74c-4916-86c1-d9fa36ea677b"
UUID_B = "ac74d9dd-3125-442a-a7c1-f9e49e05faca"
CREDS = ("admin", "pw")
AUTHER = Auther([User(*CREDS)])


class FakeRuntime:
    def __init__(self):
        self.ingresses_ = {"ingress-0": Ingress("ingress-0", [Rule("a.example.com", parse_endpoint(UUID_A))]),
                           "ingress-1": Ingress("ingress-1")}
        self.reload_result = (True, "reloaded 2 services")
        self.reloads = 0

    def services(self):
        return [{"name": "entry", "addr": ":8080", "handler": "tunnel", "listener": "tcp"}]

    def tunnels(self):
        return [{"service": "relay", "tunnel": UUID_A, "connections": [
            {"id": "c1", "remote": "10.0.0.2:5000", "since": 1700000000.0, "streams": 3,
             "bytesIn": 10, "bytesOut": 20}]}]

    def ingresses(self):
        return self.ingresses_

    def reload(self):
        self.reloads += 1
        if isinstance(self.reload_result, Exception):
            raise self.reload_result
        return self.reload_result


def request(address, method, path, body=None, auth=CREDS, headers=()):
    """One HTTP/1.1 request over a plain socket; returns (status, headers, parsed JSON or None)."""
    data = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    headers = dict(headers)
    headers.setdefault("Host", "127.0.0.1:%d" % address[1])
    head = "%s %s HTTP/1.1\r\nConnection: close\r\nContent-Length: %d\r\n" % (method, path, len(data))
    if auth:
        head += "Authorization: Basic %s\r\n" % base64.b64encode(("%s:%s" % auth).encode()).decode()
    head += "".join("%s: %s\r\n" % h for h in headers.items())
    with connect(address[1]) as sock:
        sock.sendall(head.encode() + b"\r\n" + data)
        response = recv_all(sock)
    raw_head, _, raw_body = response.partition(b"\r\n\r\n")
    lines = raw_head.decode("latin-1").split("\r\n")
    response_headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), response_headers, json.loads(raw_body) if raw_body else None


@pytest.fixture
def runtime():
    return FakeRuntime()


@pytest.fixture
def api(runtime):
    started = []

    def start(auther=AUTHER, path_prefix="", addr=("127.0.0.1", 0)):
        server = ApiServer(runtime, addr, path_prefix=path_prefix, auther=auther)
        server.start()
        started.append(server)
        return server.address

    yield start
    for server in started:
        server.stop()


def test_list_routes(api):
    address = api()
    status, headers, body = request(address, "GET", "/services")
    assert status == 200 and headers["content-type"] == "application/json"
    assert body == {"services": [{"name": "entry", "addr": ":8080", "handler": "tunnel", "listener": "tcp"}]}
    status, _, body = request(address, "GET", "/tunnels")
    assert status == 200 and body["tunnels"][0]["connections"][0]["streams"] == 3
    status, _, body = request(address, "GET", "/ingresses")
    assert status == 200
    assert body == {"ingresses": [{"name": "ingress-0", "rules": [{"hostname": "a.example.com", "endpoint": UUID_A}]},
                                  {"name": "ingress-1", "rules": []}]}


def test_one_ingress_and_unknown_ingress(api):
    address = api()
    status, _, body = request(address, "GET", "/ingresses/ingress-0")
    assert status == 200 and body["rules"] == [{"hostname": "a.example.com", "endpoint": UUID_A}]
    status, _, body = request(address, "GET", "/ingresses/nope")
    assert status == 404 and "nope" in body["error"]
    assert request(address, "POST", "/ingresses/nope/rules", {"hostname": "x.com", "endpoint": UUID_A})[0] == 404


def test_add_rule_takes_effect_at_once(api, runtime):
    """A posted rule is found by the live Ingress with no reload."""
    address = api()
    ingress = runtime.ingresses()["ingress-0"]
    assert ingress.lookup("new.example.com") is None
    status, _, body = request(address, "POST", "/ingresses/ingress-0/rules",
                              {"hostname": "*.new.example.com", "endpoint": "$" + UUID_B.upper()})
    assert status == 201
    assert body == {"hostname": ".new.example.com", "endpoint": "$" + UUID_B}
    rule = ingress.lookup("www.new.example.com:443")
    assert rule is not None and rule.endpoint.text == UUID_B and rule.endpoint.private
    # posting the same host again replaces the rule
    status, _, _ = request(address, "POST", "/ingresses/ingress-0/rules",
                           {"hostname": ".new.example.com", "endpoint": UUID_A})
    assert status == 200
    assert ingress.lookup("www.new.example.com").endpoint.text == UUID_A
    assert len(ingress.rules) == 2


def test_delete_rule(api, runtime):
    address = api()
    ingress = runtime.ingresses()["ingress-0"]
    status, _, body = request(address, "DELETE", "/ingresses/ingress-0/rules/A.Example.com")
    assert status == 204 and body is None
    assert ingress.lookup("a.example.com") is None
    status, _, body = request(address, "DELETE", "/ingresses/ingress-0/rules/a.example.com")
    assert status == 404 and "a.example.com" in body["error"]


@pytest.mark.parametrize("rule, message", [
    ({"hostname": "a b.com", "endpoint": UUID_A}, "invalid ingress hostname"),
    ({"hostname": "ok.example.com", "endpoint": "not-a-uuid"}, "invalid tunnel ID"),
    ({"hostname": "ok.example.com", "endpoint": "00000000-0000-0000-0000-000000000000"}, "zero UUID"),
    ({"hostname": "ok.example.com"}, "required"),
    ({"hostname": 5, "endpoint": UUID_A}, "required"),
    ({"hostname": "a\u0000b.example.com", "endpoint": UUID_A}, "control"),
    ({"hostname": "a\u001bb.example.com", "endpoint": UUID_A}, "control"),
    ({"hostname": "a\ud800.example.com", "endpoint": UUID_A}, "surrogate"),
    ({"hostname": "x" * 64 + ".example.com", "endpoint": UUID_A}, "bad label"),
    ({"hostname": ("a" * 60 + ".") * 4 + "example.com", "endpoint": UUID_A}, "longer than 253"),
    ({"hostname": "-a.example.com", "endpoint": UUID_A}, "bad label"),
    ({"hostname": "a..example.com", "endpoint": UUID_A}, "bad label"),
])
def test_bad_rule_is_400_with_the_message(api, runtime, rule, message):
    status, _, body = request(api(), "POST", "/ingresses/ingress-0/rules", rule)
    assert status == 400 and message in body["error"]
    assert len(runtime.ingresses()["ingress-0"].rules) == 1


@pytest.mark.parametrize("raw", [b"{not json", b"[1, 2]", b""])
def test_bad_json_is_400(api, raw):
    status, _, body = request(api(), "POST", "/ingresses/ingress-0/rules", raw)
    assert status == 400 and "JSON" in body["error"]


def test_body_too_large_is_413(api, runtime):
    big = {"hostname": "x.example.com", "endpoint": UUID_A, "pad": "x" * MAX_BODY}
    status, _, body = request(api(), "POST", "/ingresses/ingress-0/rules", big)
    assert status == 413 and "body" in body["error"]
    assert runtime.ingresses()["ingress-0"].lookup("x.example.com") is None


def test_reload_ok_and_failure(api, runtime):
    address = api()
    status, _, body = request(address, "POST", "/config/reload")
    assert status == 200 and body == {"ok": True, "message": "reloaded 2 services"}
    runtime.reload_result = (False, "config: services[0].addr: invalid port")
    status, _, body = request(address, "POST", "/config/reload")
    assert status == 500 and body == {"ok": False, "error": "config: services[0].addr: invalid port"}
    runtime.reload_result = RuntimeError("boom")
    status, _, body = request(address, "POST", "/config/reload")
    assert status == 500 and body == {"ok": False, "error": "boom"}
    assert runtime.reloads == 3


def test_auth_required(api, runtime):
    address = api()
    for creds in (None, ("admin", "wrong"), ("nobody", "pw")):
        status, headers, body = request(address, "GET", "/services", auth=creds)
        assert status == 401 and headers["www-authenticate"] == 'Basic realm="gostgev"'
        assert body == {"error": "unauthorized"}
    status, _, _ = request(address, "POST", "/config/reload", auth=None)
    assert status == 401 and runtime.reloads == 0
    assert request(address, "GET", "/services", headers=[("Authorization", "Basic !!!")], auth=None)[0] == 401


def test_unknown_route_404_and_wrong_method_405(api):
    address = api()
    assert request(address, "GET", "/nothing")[0] == 404
    assert request(address, "GET", "/ingresses/ingress-0/rules/a/b")[0] == 404
    status, headers, _ = request(address, "GET", "/config/reload")
    assert status == 405 and headers["allow"] == "POST"
    assert request(address, "DELETE", "/services")[0] == 405


def test_path_prefix(api):
    address = api(path_prefix="/api/")
    assert request(address, "GET", "/api/services")[0] == 200
    assert request(address, "GET", "/services")[0] == 404
    assert request(address, "POST", "/api/config/reload")[0] == 200


def test_refuses_to_start_exposed_without_auth(runtime):
    with pytest.raises(ValueError, match="api: auth is required when listening on 0.0.0.0:0"):
        ApiServer(runtime, ("0.0.0.0", 0)).start()
    with pytest.raises(ValueError, match="auth is required"):
        ApiServer(runtime, ("", 0)).start()


def test_loopback_without_auth_serves_loopback_hosts_only(api):
    address = api(auther=None)
    assert request(address, "GET", "/services", auth=None)[0] == 200
    # a DNS-rebinding page reaches 127.0.0.1 under its own host name
    status, _, body = request(address, "GET", "/services", auth=None, headers=[("Host", "evil.example")])
    assert status == 403


def test_cross_origin_changes_are_refused(api, runtime):
    status, _, _ = request(api(), "POST", "/config/reload", headers=[("Origin", "https://evil.example")])
    assert status == 403 and runtime.reloads == 0
