"""End to end: the ``tcp`` handler over real loopback sockets."""

import socket as _stdsocket
import struct
import time

import gevent
import pytest
from gevent import ssl

from tests.conftest import connect, echo_then_bye, http_get, name_responder, recv_all, tls_get


def proxy_config(nodes, **metadata):
    md = {"sniffing": True, "sniffing.timeout": "5s"}
    md.update(metadata)
    return {"services": [{
        "name": "proxy", "addr": "127.0.0.1:0",
        "handler": {"type": "tcp", "metadata": md},
        "listener": {"type": "tcp"},
        "forwarder": {"nodes": nodes},
    }]}


@pytest.fixture
def http_sites(backend):
    return {name: backend(name_responder(name)) for name in ("a", "b", "wild", "deep", "fallback")}


def test_routes_http_by_host_exact_wildcard_and_fallback(run_services, http_sites):
    """Exact names beat wildcards, longer wildcards beat shorter, hostless nodes catch the rest."""
    s = http_sites
    ports = run_services(proxy_config([
        {"name": "a", "addr": s["a"].addr, "host": "a.example.com"},
        {"name": "b", "addr": s["b"].addr, "filter": {"host": "B.Example.COM"}},
        {"name": "wild", "addr": s["wild"].addr, "filter": {"host": "*.example.com"}},
        {"name": "deep", "addr": s["deep"].addr, "host": ".x.example.com"},
        {"name": "fallback", "addr": s["fallback"].addr},
    ]))
    port = ports["proxy"]
    assert http_get(port, "a.example.com") == (200, b"a")
    assert http_get(port, "b.example.com:8080") == (200, b"b")      # port stripped, case folded
    assert http_get(port, "A.EXAMPLE.COM.") == (200, b"a")          # trailing dot folded
    assert http_get(port, "c.example.com") == (200, b"wild")
    assert http_get(port, "example.com") == (200, b"wild")          # .example.com covers the apex
    assert http_get(port, "y.x.example.com") == (200, b"deep")
    assert http_get(port, "badexample.com") == (200, b"fallback")   # no dot boundary, no match
    assert http_get(port, "other.org") == (200, b"fallback")
    # The hostless node never shared traffic for claimed hosts.
    assert s["fallback"].connections == 2


def test_unknown_host_gets_502_naming_the_host(run_services, http_sites):
    ports = run_services(proxy_config([{"name": "a", "addr": http_sites["a"].addr, "host": "a.example.com"}]))
    status, body = http_get(ports["proxy"], "nobody.example.net")
    assert status == 502
    assert b"nobody.example.net" in body
    assert body.count(b"\n") == 1


def test_wildcard_does_not_match_lookalike_domain(run_services, http_sites):
    ports = run_services(proxy_config([{"name": "w", "addr": http_sites["wild"].addr, "host": ".example.com"}]))
    assert http_get(ports["proxy"], "badexample.com")[0] == 502
    assert http_get(ports["proxy"], "good.example.com") == (200, b"wild")


def test_routes_tls_by_sni_without_terminating(run_services, backend, cert_files, client_tls_context):
    """Two TLS backends chosen by SNI; the proxy never sees plaintext."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(*cert_files)
    one = backend(name_responder("tls-one"), ssl_context=server_context)
    two = backend(name_responder("tls-two"), ssl_context=server_context)
    ports = run_services(proxy_config([
        {"name": "one", "addr": one.addr, "host": "one.example.com"},
        {"name": "two", "addr": two.addr, "host": "two.example.com"},
    ]))
    assert tls_get(ports["proxy"], "one.example.com", client_tls_context) == b"tls-one"
    assert tls_get(ports["proxy"], "two.example.com", client_tls_context) == b"tls-two"


def test_unknown_sni_is_closed_without_a_reply(run_services, http_sites, client_tls_context):
    ports = run_services(proxy_config([{"name": "a", "addr": http_sites["a"].addr, "host": "a.example.com"}]))
    with pytest.raises(OSError):
        tls_get(ports["proxy"], "nobody.example.com", client_tls_context)


def test_dial_failure_moves_to_next_node_and_marks_it(run_services, http_sites, backend):
    dead = backend(name_responder("dead"))
    dead_addr = dead.addr
    dead.stop()
    ports = run_services(proxy_config(
        [{"name": "dead", "addr": dead_addr, "host": "a.example.com"},
         {"name": "live", "addr": http_sites["a"].addr, "host": "a.example.com"}]))
    for _ in range(4):
        assert http_get(ports["proxy"], "a.example.com") == (200, b"a")


def test_no_reachable_node_gets_503(run_services, backend):
    dead = backend(name_responder("dead"))
    dead_addr = dead.addr
    dead.stop()
    ports = run_services(proxy_config([{"name": "dead", "addr": dead_addr, "host": "a.example.com"}]))
    status, body = http_get(ports["proxy"], "a.example.com")
    assert status == 503
    assert b"a.example.com" in body


def test_half_close_is_passed_through(run_services, backend):
    """The client's EOF reaches the backend, whose reply still comes back."""
    echo = backend(echo_then_bye)
    ports = run_services(proxy_config([{"name": "echo", "addr": echo.addr}], sniffing=False))
    with connect(ports["proxy"]) as sock:
        payload = b"x" * 300_000
        sender = gevent.spawn(sock.sendall, payload)
        received = bytearray()
        while len(received) < len(payload):
            chunk = sock.recv(65536)
            assert chunk, "connection closed early"
            received += chunk
        sender.get(timeout=5)
        sock.shutdown(2 - 1)  # SHUT_WR
        tail = recv_all(sock)
    assert bytes(received) == payload
    assert tail == b"bye"


def test_silent_client_is_cut_by_the_sniffing_timeout(run_services, http_sites):
    ports = run_services(proxy_config([{"name": "a", "addr": http_sites["a"].addr}], **{"sniffing.timeout": "0.3s"}))
    with connect(ports["proxy"]) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""
        elapsed = time.monotonic() - started
    assert 0.25 <= elapsed < 3
    assert http_sites["a"].connections == 0


def test_trickling_client_is_cut_by_the_same_deadline(run_services, http_sites):
    """The deadline covers the whole head, not each read."""
    ports = run_services(proxy_config([{"name": "a", "addr": http_sites["a"].addr}], **{"sniffing.timeout": "0.5s"}))
    with connect(ports["proxy"]) as sock:
        started = time.monotonic()
        sock.sendall(b"GET / HTTP/1.1\r\n")
        closed = False
        for _ in range(40):
            gevent.sleep(0.1)       # the client's pace: a trickle, not a wait
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                closed = True
                break
        elapsed = time.monotonic() - started
    assert closed
    assert elapsed < 3


def test_idle_timeout_closes_a_silent_piped_connection(run_services, backend):
    echo = backend(echo_then_bye)
    ports = run_services(proxy_config([{"name": "echo", "addr": echo.addr}], sniffing=False, idleTimeout="0.4s"))
    with connect(ports["proxy"]) as sock:
        sock.sendall(b"ping")
        assert sock.recv(4) == b"ping"
        started = time.monotonic()
        data = recv_all(sock)
        elapsed = time.monotonic() - started
    assert data in (b"", b"bye")
    assert 0.35 <= elapsed < 3


def test_malformed_http_head_gets_400(run_services, http_sites):
    ports = run_services(proxy_config([{"name": "a", "addr": http_sites["a"].addr}]))
    with connect(ports["proxy"]) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n")
        response = recv_all(sock)
    assert response.startswith(b"HTTP/1.1 400 ")
    assert http_sites["a"].connections == 0


def test_unsniffable_bytes_go_to_a_hostless_node(run_services, backend):
    echo = backend(echo_then_bye)
    ports = run_services(proxy_config([{"name": "echo", "addr": echo.addr}]))
    with connect(ports["proxy"]) as sock:
        sock.sendall(b"\x00\x01binary hello")
        sock.shutdown(1)
        assert recv_all(sock) == b"\x00\x01binary hellobye"


def test_hundred_concurrent_requests(run_services, http_sites):
    s = http_sites
    ports = run_services(proxy_config([
        {"name": "a", "addr": s["a"].addr, "host": "a.example.com"},
        {"name": "b", "addr": s["b"].addr, "host": "b.example.com"},
    ]))
    hosts = ["a.example.com" if i % 2 else "b.example.com" for i in range(100)]
    jobs = [gevent.spawn(http_get, ports["proxy"], host) for host in hosts]
    gevent.joinall(jobs, timeout=30, raise_error=True)
    results = [job.value for job in jobs]
    assert results == [(200, b"a" if h.startswith("a") else b"b") for h in hosts]


def test_round_robin_between_nodes_of_one_host(run_services, http_sites):
    s = http_sites
    ports = run_services(proxy_config([
        {"name": "a", "addr": s["a"].addr, "host": "app.example.com"},
        {"name": "b", "addr": s["b"].addr, "host": "app.example.com"},
    ]))
    bodies = [http_get(ports["proxy"], "app.example.com")[1] for _ in range(6)]
    assert sorted(bodies) == [b"a"] * 3 + [b"b"] * 3
    assert bodies[0] != bodies[1]


def _sends_then_resets(sock, _address):
    sock.recv(4096)
    sock.sendall(b"HTTP/1.0 200 OK\r\n\r\n" + b"x" * 1000)
    gevent.sleep(0.2)   # a backend that fails some time into its answer, not at once
    sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()   # RST: the download is cut short


@pytest.mark.parametrize("sniffing", [False, True])
def test_backend_reset_reaches_the_client_as_a_reset(start_services, backend, sniffing):
    """A body that ends at EOF must not look complete when the backend failed."""
    site = backend(_sends_then_resets)
    port = start_services({"services": [{
        "name": "f", "addr": "127.0.0.1:0", "handler": {"type": "tcp", "metadata": {"sniffing": sniffing}},
        "forwarder": {"nodes": [{"name": "n", "addr": site.addr}]}}]})["f"].address[1]
    with connect(port) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        got = b""
        with pytest.raises(ConnectionResetError):
            for _ in range(1000):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                got += chunk
    assert got.endswith(b"x" * 1000)          # everything sent before the reset arrived
