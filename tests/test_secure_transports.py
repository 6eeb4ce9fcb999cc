"""Tunnels over TLS (verified, mutual, refused) and over WebSocket, end to end."""

import logging

import pytest

from tests.conftest import http_get, name_responder, wait_until
from tests.handler.test_tunnel import TUNNEL_A, server_config

HANDSHAKE_FAILED = "handshake with 127.0.0.1 failed"


def secure_server(start_services, listener, tls=None, **listener_md):
    raw = server_config([("a.local", TUNNEL_A)])
    raw["services"][0]["listener"] = {"type": listener, "metadata": listener_md, **({"tls": tls} if tls else {})}
    server = start_services(raw)["server"]
    return server, server.handler.entrypoints[0].address[1]


def secure_client(start_services, server, backend_addr, dialer, tls=None, **dialer_md):
    node = {"name": "node-0", "addr": "localhost:%d" % server.address[1],
            "connector": {"type": "tunnel", "metadata": {"tunnel.id": TUNNEL_A}},
            "dialer": {"type": dialer, "metadata": dialer_md, **({"tls": tls} if tls else {})}}
    start_services({"services": [{"name": "client", "addr": ":0", "handler": {"type": "rtcp"},
                                  "listener": {"type": "rtcp", "chain": "c"},
                                  "forwarder": {"nodes": [{"name": "n", "addr": backend_addr}]}}],
                    "chains": [{"name": "c", "hops": [{"name": "h", "nodes": [node]}]}]})


def served(entrypoint):
    return wait_until(lambda: http_get(entrypoint, "a.local") == (200, b"site"), 8)


@pytest.fixture
def site(backend):
    return backend(name_responder("site"))


def test_verified_tls_tunnel(start_services, site, test_ca):
    server, entrypoint = secure_server(start_services, "tls",
                                       tls={"certFile": test_ca["server"], "keyFile": test_ca["server_key"]})
    secure_client(start_services, server, site.addr, "tls",
                  tls={"caFile": test_ca["ca"], "secure": True, "serverName": "localhost"})
    assert served(entrypoint)


def test_wrong_ca_is_refused_and_logged_on_the_client(start_services, site, test_ca, caplog):
    server, entrypoint = secure_server(start_services, "tls",
                                       tls={"certFile": test_ca["server"], "keyFile": test_ca["server_key"]})
    secure_client(start_services, server, site.addr, "tls", tls={"caFile": test_ca["other_ca"], "secure": True})
    assert wait_until(lambda: "certificate verify failed: " in caplog.text, 5)
    assert http_get(entrypoint, "a.local")[0] == 503
    assert site.connections == 0


def test_wrong_hostname_is_refused(start_services, site, test_ca, caplog):
    server, entrypoint = secure_server(start_services, "tls",
                                       tls={"certFile": test_ca["server"], "keyFile": test_ca["server_key"]})
    secure_client(start_services, server, site.addr, "tls",
                  tls={"caFile": test_ca["ca"], "secure": True, "serverName": "other.example"})
    assert wait_until(lambda: "certificate verify failed: hostname mismatch" in caplog.text, 5)
    assert http_get(entrypoint, "a.local")[0] == 503


def test_mutual_tls_requires_a_client_certificate(start_services, site, test_ca, caplog):
    server_tls = {"certFile": test_ca["server"], "keyFile": test_ca["server_key"], "caFile": test_ca["ca"]}
    server, entrypoint = secure_server(start_services, "tls", tls=server_tls)
    secure_client(start_services, server, site.addr, "tls", tls={"caFile": test_ca["ca"]})
    assert wait_until(lambda: HANDSHAKE_FAILED in caplog.text, 5)     # logged on the server side
    assert http_get(entrypoint, "a.local")[0] == 503
    secure_client(start_services, server, site.addr, "tls", tls={
        "caFile": test_ca["ca"], "certFile": test_ca["client"], "keyFile": test_ca["client_key"]})
    assert served(entrypoint)


def test_self_signed_server_logs_its_fingerprint(start_services, site, caplog):
    caplog.set_level(logging.INFO)
    server, entrypoint = secure_server(start_services, "tls")
    fingerprint = server.listener.tls.fingerprint
    assert len(fingerprint.split(":")) == 32 and fingerprint in caplog.text
    secure_client(start_services, server, site.addr, "tls")         # GOST default: no verification
    assert served(entrypoint)


@pytest.mark.parametrize("listener, dialer", [("ws", "ws"), ("wss", "wss")])
def test_websocket_tunnels(start_services, site, listener, dialer):
    server, entrypoint = secure_server(start_services, listener, path="/tunnel")
    secure_client(start_services, server, site.addr, dialer, path="/tunnel", host="cdn.example")
    assert served(entrypoint)


def test_websocket_wrong_path_is_refused(start_services, site, caplog):
    server, entrypoint = secure_server(start_services, "ws", path="/tunnel")
    secure_client(start_services, server, site.addr, "ws")          # default /ws
    assert wait_until(lambda: HANDSHAKE_FAILED in caplog.text, 5)
    assert http_get(entrypoint, "a.local")[0] == 503
