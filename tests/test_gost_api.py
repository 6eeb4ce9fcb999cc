"""GOST's configuration web API (gostgev.gostapi), driven with the request bodies of GOST's API
documentation, against a real runtime: every change is live, or refused with nothing changed."""

import json
import socket

import pytest
import yaml

from gostgev.api import ApiServer
from gostgev.components import build_config
from gostgev.runtime import ApiView, Runtime
from tests.conftest import connect, http_get, name_responder, recv_all


def call(port, method, path, body=None):
    """(status, content type, body bytes) of one request to the API (no auth: loopback only)."""
    data = b"" if body is None else json.dumps(body).encode()
    with connect(port) as sock:
        sock.sendall(b"%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: %d\r\n\r\n"
                     % (method.encode(), path.encode(), len(data)) + data)
        response = recv_all(sock)
    head, _, payload = response.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines[1:])}
    return int(lines[0].split()[1]), headers.get("content-type", ""), payload


def answer(port, method, path, body=None):
    status, _, payload = call(port, method, path, body)
    return status, json.loads(payload)


@pytest.fixture
def gost(backend, tmp_path):
    site_a, site_b = backend(name_responder("a")), backend(name_responder("b"))
    raw = {"services": [{"name": "web", "addr": "127.0.0.1:0", "handler": {"type": "tcp",
                                                                        "metadata": {"sniffing": True}},
                         "listener": {"type": "tcp"},
                         "forwarder": {"nodes": [{"name": "a", "addr": site_a.addr}]}}]}
    path = tmp_path / "gost.yaml"
    path.write_text(yaml.safe_dump(raw))
    runtime = Runtime(lambda warnings: build_config(yaml.safe_load(path.read_text()), warnings), grace=1)
    runtime.config_path = str(path)
    runtime.start(build_config(raw, []))
    server = ApiServer(ApiView(runtime), ("127.0.0.1", 0))
    server.start()

    class Gost:
        api = server.address[1]
        file = path
        sites = {"a": site_a, "b": site_b}

        @staticmethod
        def port(name):
            return runtime.services[name].address[1]

        @staticmethod
        def names():
            return sorted(runtime.services)

    yield Gost
    server.stop()
    runtime.stop(1)


def test_get_config_in_json_and_yaml(gost):
    status, kind, body = call(gost.api, "GET", "/config")
    assert status == 200 and kind == "application/json"
    assert json.loads(body)["services"][0]["name"] == "web"
    status, kind, body = call(gost.api, "GET", "/config?format=yaml")
    assert status == 200 and kind == "application/yaml"
    assert yaml.safe_load(body)["services"][0]["forwarder"]["nodes"][0]["name"] == "a"


def test_create_update_and_delete_a_service_live(gost):
    # The body of GOST's "create service" example, with a handler gostgev has.
    service = {"name": "service-0", "addr": "127.0.0.1:0", "handler": {"type": "tcp"},
               "listener": {"type": "tcp"}, "forwarder": {"nodes": [{"name": "a", "addr": gost.sites["a"].addr}]}}
    assert answer(gost.api, "POST", "/config/services", service) == (200, {"msg": "OK"})
    assert gost.names() == ["service-0", "web"]
    port = gost.port("service-0")
    assert http_get(port, "x") == (200, b"a")
    assert answer(gost.api, "POST", "/config/services", service) == (
        400, {"code": 40002, "msg": "object duplicated: services 'service-0' exists"})

    service["forwarder"]["nodes"] = [{"name": "b", "addr": gost.sites["b"].addr}]
    assert answer(gost.api, "PUT", "/config/services/service-0", service) == (200, {"msg": "OK"})
    assert http_get(gost.port("service-0"), "x") == (200, b"b")
    assert json.loads(call(gost.api, "GET", "/config")[2])["services"][1]["forwarder"]["nodes"][0]["name"] == "b"

    assert answer(gost.api, "DELETE", "/config/services/service-0") == (200, {"msg": "OK"})
    assert gost.names() == ["web"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_a_refused_change_changes_nothing(gost):
    before = call(gost.api, "GET", "/config")[2]
    status, body = answer(gost.api, "POST", "/config/services", {
        "name": "bad", "addr": "127.0.0.1:0", "handler": {"type": "nope"}, "listener": {"type": "tcp"}})
    assert status == 400 and body["code"] == 40001 and "services[1].handler.type" in body["msg"]
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        status, body = answer(gost.api, "POST", "/config/services", {
            "name": "busy", "addr": "127.0.0.1:%d" % taken.getsockname()[1], "handler": {"type": "tcp"},
            "listener": {"type": "tcp"}, "forwarder": {"nodes": [{"name": "a", "addr": gost.sites["a"].addr}]}})
    finally:
        taken.close()
    assert status == 409 and body["code"] == 40003
    status, body = answer(gost.api, "DELETE", "/config/chains/nothing")
    assert status == 400 and body["code"] == 40004
    assert call(gost.api, "GET", "/config")[2] == before
    assert gost.names() == ["web"] and http_get(gost.port("web"), "x") == (200, b"a")


def test_ingresses_and_authers_are_sections_too(gost):
    # GOST's "create ingress" body.
    ingress = {"name": "ingress-0", "rules": [{"hostname": "example.com",
                                               "endpoint": "4d21094e-b74c-4916-86c1-d9fa36ea677b"}]}
    assert answer(gost.api, "POST", "/config/ingresses", ingress) == (200, {"msg": "OK"})
    auther = {"name": "auther-0", "auths": [{"username": "user1", "password": "pass1"}]}
    assert answer(gost.api, "POST", "/config/authers", auther) == (200, {"msg": "OK"})
    raw = json.loads(call(gost.api, "GET", "/config")[2])
    assert raw["ingresses"] == [ingress] and raw["authers"] == [auther]


def test_save_writes_the_running_config_and_keeps_the_previous_file(gost):
    previous = gost.file.read_text()
    service = {"name": "service-1", "addr": "127.0.0.1:0", "handler": {"type": "tcp"}, "listener": {"type": "tcp"},
               "forwarder": {"nodes": [{"name": "a", "addr": gost.sites["a"].addr}]}}
    assert answer(gost.api, "POST", "/config/services", service)[0] == 200
    assert answer(gost.api, "POST", "/config?format=yaml") == (200, {"msg": "OK"})
    saved = yaml.safe_load(gost.file.read_text())
    assert [s["name"] for s in saved["services"]] == ["web", "service-1"]
    assert (gost.file.parent / (gost.file.name + ".bak")).read_text() == previous
    assert build_config(saved, []).services[1].name == "service-1"
