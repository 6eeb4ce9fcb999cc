"""PROXY protocol end to end: headers sent to backends and accepted from balancers, byte for byte."""

import gevent.queue

from gostgev.codec import relay
from tests.conftest import connect, recv_all
from tests.handler.test_tunnel import TUNNEL_A, Deployment

SIGNATURE = bytes.fromhex("0d0a0d0a000d0a515549540a")


def recording_backend(backend):
    """A backend that records the first bytes of each connection, then answers 200."""
    seen = gevent.queue.Queue()

    def handle(sock, _address):
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 4096:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
        seen.put(data)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    return backend(handle), seen


REQUEST = b"GET / HTTP/1.1\r\nHost: a.local\r\nConnection: close\r\n\r\n"


def forwarder(run_services, target, handler_md, service_md=None):
    return run_services({"services": [{
        "name": "fwd", "addr": "127.0.0.1:0", "metadata": service_md or {},
        "handler": {"type": "tcp", "metadata": {"sniffing": True, **handler_md}},
        "forwarder": {"nodes": [{"name": "n", "addr": target}]}}]})["fwd"]


def test_v1_header_to_the_backend(run_services, backend):
    site, seen = recording_backend(backend)
    port = forwarder(run_services, site.addr, {"proxyProtocol": 1})
    with connect(port) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(REQUEST)
        assert recv_all(sock).endswith(b"ok")
    expected = b"PROXY TCP4 127.0.0.1 127.0.0.1 %d %d\r\n" % (client_port, port)
    assert seen.get(timeout=5) == expected + REQUEST


def test_v2_header_to_the_backend(run_services, backend):
    site, seen = recording_backend(backend)
    port = forwarder(run_services, site.addr, {"proxyProtocol": 2})
    with connect(port) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(REQUEST)
        recv_all(sock)
    expected = (SIGNATURE + bytes([0x21, 0x11, 0x00, 0x0C]) + bytes([127, 0, 0, 1, 127, 0, 0, 1])
                + client_port.to_bytes(2, "big") + port.to_bytes(2, "big"))
    assert seen.get(timeout=5) == expected + REQUEST


def test_node_setting_overrides_the_handler(run_services, backend):
    site, seen = recording_backend(backend)
    port = run_services({"services": [{
        "name": "fwd", "addr": "127.0.0.1:0", "handler": {"type": "tcp", "metadata": {"proxyProtocol": 2}},
        "forwarder": {"nodes": [{"name": "n", "addr": site.addr, "metadata": {"proxyProtocol": 0}}]}}]})["fwd"]
    with connect(port) as sock:
        sock.sendall(REQUEST)
        recv_all(sock)
    assert seen.get(timeout=5) == REQUEST


def test_listener_accepts_a_balancer_header_and_passes_the_client_on(run_services, backend):
    site, seen = recording_backend(backend)
    port = forwarder(run_services, site.addr, {"proxyProtocol": 1}, {"proxyProtocol": 1})
    with connect(port) as sock:
        sock.sendall(b"PROXY TCP4 203.0.113.7 192.0.2.1 51234 443\r\n" + REQUEST)
        assert recv_all(sock).endswith(b"ok")
    assert seen.get(timeout=5) == b"PROXY TCP4 203.0.113.7 127.0.0.1 51234 %d\r\n" % port + REQUEST
    with connect(port) as sock:           # without a header the peer address is used
        client_port = sock.getsockname()[1]
        sock.sendall(REQUEST)
        recv_all(sock)
    assert seen.get(timeout=5).startswith(b"PROXY TCP4 127.0.0.1 127.0.0.1 %d " % client_port)


def test_tunnel_backends_see_the_public_client(start_services, backend):
    site, seen = recording_backend(backend)
    dep = Deployment(start_services, [("a.local", TUNNEL_A)], **{"entrypoint.proxyProtocol": 1})
    raw = {"services": [{"name": "c2", "addr": ":0", "handler": {"type": "rtcp", "metadata": {"proxyProtocol": 2}},
                         "listener": {"type": "rtcp", "chain": "to"},
                         "forwarder": {"nodes": [{"name": "n", "addr": site.addr}]}}],
           "chains": [{"name": "to", "hops": [{"nodes": [{"name": "s", "addr": "127.0.0.1:%d" % dep.port,
                                                           "connector": {"type": "tunnel",
                                                                         "metadata": {"tunnel.id": TUNNEL_A}}}]}]}]}
    start_services(raw)
    dep.wait_connections(TUNNEL_A, 1)
    with connect(dep.entrypoint) as sock:
        sock.sendall(b"PROXY TCP4 198.51.100.9 192.0.2.1 40000 80\r\n" + REQUEST)
        assert recv_all(sock).endswith(b"ok")
    # src: the public client from the stream header; dst: a tunnel stream has no local address.
    expected = (SIGNATURE + bytes([0x21, 0x11, 0x00, 0x0C]) + bytes([198, 51, 100, 9, 0, 0, 0, 0])
                + (40000).to_bytes(2, "big") + (0).to_bytes(2, "big"))
    assert seen.get(timeout=5) == expected + REQUEST


def _client_with_proxy_v1(start_services, dep, site):
    start_services({"services": [{"name": "c1", "addr": ":0",
                                  "handler": {"type": "rtcp", "metadata": {"proxyProtocol": 1}},
                                  "listener": {"type": "rtcp", "chain": "to"},
                                  "forwarder": {"nodes": [{"name": "n", "addr": site.addr}]}}],
                    "chains": [{"name": "to", "hops": [{"nodes": [{
                        "name": "s", "addr": "127.0.0.1:%d" % dep.port,
                        "connector": {"type": "tunnel", "metadata": {"tunnel.id": TUNNEL_A}}}]}]}]})
    dep.wait_connections(TUNNEL_A, 1)


def _relay_visit(port, tunnel_id, src):
    with connect(port) as sock:
        sock.sendall(relay.Request(cmd=relay.CONNECT, addrs=(src, "a.local:80"),
                                   tunnel_id=relay.TunnelID.parse(tunnel_id)).encode() + REQUEST)
        answer = recv_all(sock)
    assert answer.startswith(relay.Response(relay.OK).encode()) and answer.endswith(b"ok"), answer


def test_a_visitor_cannot_forge_the_client_address_a_backend_sees(start_services, backend):
    site, seen = recording_backend(backend)
    dep = Deployment(start_services, [("a.local", TUNNEL_A)])
    _client_with_proxy_v1(start_services, dep, site)
    for port in (dep.port, dep.entrypoint):      # the tunnel port, and relay CONNECT on the entrypoint
        _relay_visit(port, TUNNEL_A, "203.0.113.66:4444")
        header = seen.get(timeout=5).split(b"\r\n")[0]
        assert header.startswith(b"PROXY TCP4 127.0.0.1 "), header   # the visitor's own address
        assert b"203.0.113.66" not in header


def test_an_external_entrypoint_names_the_client_it_relays_for(start_services, backend):
    site, seen = recording_backend(backend)
    entrypoint_id = "7b8f0c41-2d5e-4a6b-9c3d-1e2f3a4b5c6d"
    dep = Deployment(start_services, [("a.local", TUNNEL_A)], **{"entrypoint.id": entrypoint_id})
    _client_with_proxy_v1(start_services, dep, site)
    _relay_visit(dep.port, entrypoint_id, "203.0.113.66:4444")
    assert seen.get(timeout=5).split(b"\r\n")[0].startswith(b"PROXY TCP4 203.0.113.66 ")
