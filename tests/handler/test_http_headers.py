"""Opt-in request headers: X-Forwarded-*, RFC 7239 Forwarded, and the Gost-Forwarded-Node loop guard.

Off by default, requests reach the origin exactly as the client sent them.
"""

import pytest

from tests.handler.test_http_routing import Client, Site, forwarder_config
from tests.handler.test_tunnel import TUNNEL_A, Deployment


def forwarder(start_services, site, **metadata):
    raw = forwarder_config([{"name": site.name, "addr": site.addr, "host": "a.local"}])
    raw["services"][0]["handler"]["metadata"].update(metadata)
    return start_services(raw)["proxy"].address[1]


def entrypoint(start_services, site, **metadata):
    dep = Deployment(start_services, [("a.local", TUNNEL_A)], **metadata)
    dep.client("client", TUNNEL_A, [{"name": site.name, "addr": site.addr, "host": "a.local"}])
    dep.wait_connections(TUNNEL_A, 1)
    return dep.entrypoint


def head_received(site):
    """The last request head the origin read, as text."""
    raw = bytes(site.raw)
    start = raw.rfind(b"GET ")
    return raw[start:raw.index(b"\r\n\r\n", start) + 4].decode("latin-1")


def test_headers_are_untouched_by_default(start_services, backend):
    site = Site(backend, "a")
    port = forwarder(start_services, site)
    sent = "GET /p HTTP/1.1\r\nHost: a.local:81\r\nX-Forwarded-For: 10.9.9.9\r\nX-Custom: 1\r\n\r\n"
    with Client(port) as client:
        client.send(sent.encode())
        assert client.response().status == 200
    assert head_received(site) == sent


@pytest.mark.parametrize("where", ["forwarder", "entrypoint"])
def test_x_forwarded_headers_name_the_client(start_services, backend, where):
    site = Site(backend, "a")
    if where == "forwarder":
        port = forwarder(start_services, site, **{"http.forwarded": "x-forwarded"})
    else:
        port = entrypoint(start_services, site, **{"entrypoint.forwarded": "x-forwarded"})
    with Client(port) as client:
        client.send(b"GET /p HTTP/1.1\r\nHost: a.local:81\r\nX-Forwarded-For: 10.9.9.9\r\n\r\n")
        assert client.response().status == 200
    lines = head_received(site).split("\r\n")
    # The client's own list stays first; ours names the address it came from.
    assert lines.index("X-Forwarded-For: 10.9.9.9") < lines.index("X-Forwarded-For: 127.0.0.1")
    assert "X-Forwarded-Proto: http" in lines and "X-Forwarded-Host: a.local:81" in lines
    assert lines[-2:] == ["", ""]


def test_rfc7239_forwarded_header(start_services, backend):
    site = Site(backend, "a")
    port = forwarder(start_services, site, **{"http.forwarded": "forwarded"})
    with Client(port) as client:
        assert client.get("a.local").status == 200
    assert 'Forwarded: for=127.0.0.1;host=a.local;proto=http' in head_received(site).split("\r\n")


def test_an_unknown_style_is_a_config_error(start_services, backend):
    site = Site(backend, "a")
    with pytest.raises(Exception, match="http.forwarded: unknown style 'xff'"):
        forwarder(start_services, site, **{"http.forwarded": "xff"})


def test_loop_guard_refuses_a_request_that_came_round_again(start_services, backend):
    site = Site(backend, "a")
    port = entrypoint(start_services, site, **{"entrypoint.loopGuard": True, "entrypoint.node": "edge-1"})
    with Client(port) as client:
        client.send(b"GET /first HTTP/1.1\r\nHost: a.local\r\nGost-Forwarded-Node: edge-0\r\n\r\n")
        assert client.response().status == 200
        assert "Gost-Forwarded-Node: edge-0, edge-1" in head_received(site).split("\r\n")
        client.send(b"GET /again HTTP/1.1\r\nHost: a.local\r\nGost-Forwarded-Node: edge-0, edge-1\r\n\r\n")
        looped = client.response()
        assert looped.status == 508 and b"edge-1" in looped.body
        # The connection goes on; the origin never saw the looping request.
        assert client.get("a.local", "/after").status == 200
    assert site.targets() == ["/first", "/after"]
