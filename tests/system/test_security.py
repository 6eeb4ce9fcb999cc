"""Authentication, tunnel ownership, admission, connection limits, garbage input."""

import os
import random
import time

import gevent
import pytest
from prometheus_client import generate_latest

from gostgev.codec import relay
from gostgev.metrics import Metrics
from gostgev.service import ServiceContext
from tests.conftest import connect, echo_then_bye, http_get, name_responder, recv_all, settled, wait_until
from tests.handler.test_tunnel import TUNNEL_A, TUNNEL_B, client_config, server_config

BOB_TUNNEL = "22f43305-5c5d-4a5b-9d1a-3a4d5e6f7a8b"


def bind_request(tunnel, username=None, password=None):
    return relay.Request(cmd=relay.BIND, addrs=("127.0.0.1:1", ":0"), username=username, password=password,
                         tunnel_id=relay.TunnelID.parse(tunnel)).encode()


def status_of(port, data):
    with connect(port) as sock:
        sock.sendall(data)
        reply = sock.recv(4)
    return reply[1] if len(reply) >= 2 else None


@pytest.fixture
def secured(start_services, tmp_path):
    users = tmp_path / "users.txt"
    users.write_text("# user password [tunnels]\ncarol s3cret\nbob hunter2 %s\n" % BOB_TUNNEL)
    raw = server_config([("a.local", TUNNEL_A), ("b.local", TUNNEL_B), ("bob.local", BOB_TUNNEL)])
    raw["services"][0]["handler"]["auther"] = "users"
    raw["authers"] = [{"name": "users", "auths": [{"username": "alice", "password": "pw", "tunnels": [TUNNEL_A]}],
                       "file": {"path": str(users)}}]
    return start_services(raw, base_dir=str(tmp_path))["server"]


def test_right_wrong_and_missing_credentials(secured):
    port = secured.address[1]
    assert status_of(port, bind_request(TUNNEL_B, "carol", "s3cret")) == relay.OK
    assert status_of(port, bind_request(TUNNEL_B, "carol", "wrong")) == relay.UNAUTHORIZED
    assert status_of(port, bind_request(TUNNEL_B, "mallory", "s3cret")) == relay.UNAUTHORIZED
    assert status_of(port, bind_request(TUNNEL_B)) == relay.UNAUTHORIZED


def test_a_tunnel_can_only_be_bound_by_its_owners(secured):
    port = secured.address[1]
    assert status_of(port, bind_request(TUNNEL_A, "alice", "pw")) == relay.OK
    assert status_of(port, bind_request(TUNNEL_A, "carol", "s3cret")) == relay.UNAUTHORIZED   # rogue, right UUID
    assert status_of(port, bind_request(BOB_TUNNEL, "bob", "hunter2")) == relay.OK          # from the file
    assert status_of(port, bind_request(BOB_TUNNEL, "alice", "pw")) == relay.UNAUTHORIZED
    assert status_of(port, bind_request(TUNNEL_B, "bob", "hunter2")) == relay.OK            # nobody owns B


def test_rogue_client_is_told_and_logs_unauthorized(secured, start_services, backend, caplog):
    spy = backend(name_responder("spy"))
    raw = client_config("rogue", secured.address[1], TUNNEL_A, [{"name": "n", "addr": spy.addr}])
    raw["chains"][0]["hops"][0]["nodes"][0]["connector"]["auth"] = {"username": "carol", "password": "s3cret"}
    start_services(raw)
    assert wait_until(lambda: "unauthorized by 127.0.0.1:%d" % secured.address[1] in caplog.text, 5)
    entrypoint = secured.handler.entrypoints[0].address[1]
    assert http_get(entrypoint, "a.local")[0] == 503
    assert spy.connections == 0


def test_relay_handler_requires_auth(start_services, backend):
    echo = backend(echo_then_bye)
    server = start_services({"services": [{"name": "relay", "addr": "127.0.0.1:0", "handler": {
        "type": "relay", "auth": {"username": "u", "password": "p"}}}]})["relay"]
    connect_request = relay.Request(cmd=relay.CONNECT, addrs=(echo.addr,), username="u", password="x").encode()
    assert status_of(server.address[1], connect_request) == relay.UNAUTHORIZED
    good = relay.Request(cmd=relay.CONNECT, addrs=(echo.addr,), username="u", password="p").encode()
    assert status_of(server.address[1], good) == relay.OK


def forwarder(start_services, target, **service):
    raw = {"services": [{"name": "fwd", "addr": "127.0.0.1:0", "handler": {"type": "tcp", "metadata": {
        "sniffing": True}}, "forwarder": {"nodes": [{"name": "n", "addr": target}]}, **service}]}
    for key in ("admissions", "climiters", "rlimiters", "limiters"):
        if key in service:
            raw[key] = service.pop(key)
            raw["services"][0].pop(key)
    return start_services(raw)["fwd"].address[1]


@pytest.mark.parametrize("whitelist, allowed", [(False, False), (True, True)])
def test_admission_lists(start_services, backend, whitelist, allowed):
    site = backend(name_responder("site"))
    port = forwarder(start_services, site.addr, admission="adm",
                     admissions=[{"name": "adm", "whitelist": whitelist, "matchers": ["127.0.0.0/8", "::1"]}])
    try:
        served = http_get(port, "x") == (200, b"site")
    except ConnectionResetError:    # refused: closed with the request unread
        served = False
    assert served is allowed
    assert site.connections == (1 if allowed else 0)


def test_connection_limit_per_client_ip(start_services, backend):
    hold = gevent.event.Event()

    def slow(sock, _address):
        sock.recv(1024)
        hold.wait(10)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

    site = backend(slow)
    port = forwarder(start_services, site.addr, climiter="lim", climiters=[{"name": "lim", "limits": ["$$ 2"]}])
    busy = [gevent.spawn(http_get, port, "x") for _ in range(2)]
    assert wait_until(lambda: site.connections == 2, 5)
    status, body = http_get(port, "x")
    assert status == 429 and b"too many connections" in body
    hold.set()
    assert [job.get(timeout=5) for job in busy] == [(200, b"ok")] * 2
    assert http_get(port, "x") == (200, b"ok")        # released: served again


def test_service_total_limit(start_services, backend):
    echo = backend(echo_then_bye)
    port = forwarder(start_services, echo.addr, climiter="lim", climiters=[{"name": "lim", "limits": ["$ 1"]}])
    with connect(port) as first:
        first.sendall(b"\x00hold")
        assert wait_until(lambda: echo.connections == 1, 5)
        with connect(port) as second:
            second.sendall(b"\x00more")
            assert recv_all(second) == b""            # not HTTP: just closed
        first.shutdown(1)
        assert recv_all(first) == b"\x00holdbye"


def open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_garbage_on_every_port_is_survived_without_fd_leaks(start_services, backend, tmp_path):
    site = backend(name_responder("site"))
    (tmp_path / "www").mkdir()
    raw = server_config([("a.local", TUNNEL_A)], readTimeout="0.5s", **{"entrypoint.headerTimeout": "0.5s"})
    raw["services"] += [
        {"name": "relay", "addr": "127.0.0.1:0", "handler": {"type": "relay", "metadata": {
            "bind": True, "readTimeout": "0.5s"}}},
        {"name": "fwd", "addr": "127.0.0.1:0", "handler": {"type": "tcp", "metadata": {
            "sniffing": True, "sniffing.timeout": "0.5s"}}, "forwarder": {"nodes": [{"name": "n", "addr": site.addr}]}},
        {"name": "files", "addr": "127.0.0.1:0", "handler": {"type": "file", "metadata": {"dir": "www"}}},
        {"name": "tls", "addr": "127.0.0.1:0", "handler": {"type": "relay"}, "listener": {"type": "tls"}},
        {"name": "ws", "addr": "127.0.0.1:0", "handler": {"type": "relay"}, "listener": {"type": "ws"}},
        {"name": "wss", "addr": "127.0.0.1:0", "handler": {"type": "relay"}, "listener": {"type": "wss"}},
    ]
    services = start_services(raw, base_dir=str(tmp_path))
    ports = [svc.address[1] for svc in services.values()] + [services["server"].handler.entrypoints[0].address[1]]
    dep_client = client_config("c", services["server"].address[1], TUNNEL_A, [{"name": "n", "addr": site.addr}])
    start_services(dep_client)
    entrypoint = ports[-1]
    assert wait_until(lambda: http_get(entrypoint, "a.local") == (200, b"site"), 10)
    before = settled(open_fds)      # once the probes' connections are closed on every side
    assert before is not None
    rng = random.Random(7)
    prefixes = [b"", b"\x01", b"\x01\x02\x00\x20", b"\x16\x03\x01\x00\x10", b"GET / HTTP/1.1\r\nHost:", b"\x02\x00",
                b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"]

    def attack(port, prefix):
        try:
            with connect(port, timeout=3) as sock:
                sock.sendall(prefix + bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300))))
                recv_all(sock, limit=1 << 16)
        except OSError:
            pass

    jobs = [gevent.spawn(attack, port, prefix) for port in ports for prefix in prefixes for _ in range(3)]
    gevent.joinall(jobs, timeout=20)
    assert all(job.ready() for job in jobs)
    assert http_get(entrypoint, "a.local") == (200, b"site")      # still serving
    assert wait_until(lambda: open_fds() <= before, 5), (before, open_fds())


def test_oversized_heads_are_refused_and_the_service_goes_on(start_services, backend):
    site = backend(name_responder("site"))
    port = forwarder(start_services, site.addr)
    with connect(port) as sock:
        try:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + b"a" * 40000 + b"\r\n\r\n")
        except OSError:
            pass   # the proxy may stop reading before we finish writing
        assert recv_all(sock).startswith(b"HTTP/1.1 400 ")
    with connect(port) as sock:   # a ClientHello claiming more than the 64 KiB cap
        sock.sendall(b"\x16\x03\x01\x40\x00" + b"\x01\xff\xff\xff" + b"\x00" * 100)
        assert recv_all(sock) == b""
    assert http_get(port, "x") == (200, b"site")
    assert site.connections == 1


def say_hi(port, data=b"\x00hi"):
    """What an echo-then-bye backend answered through ``port``; b"" when the proxy closed the connection
    (a reset: it closed with our bytes unread)."""
    with connect(port) as sock:
        try:
            sock.sendall(data)
            sock.shutdown(1)
            return recv_all(sock)
        except ConnectionResetError:
            return b""


def test_connection_rate_per_client_is_held_to_its_limit(start_services, backend):
    """``$$ 40``: 40 new connections a second from one IP, with a second's worth at once."""
    echo = backend(echo_then_bye)
    port = forwarder(start_services, echo.addr, rlimiter="rate", rlimiters=[{"name": "rate", "limits": ["$$ 40"]}])
    served = refused = 0
    started = time.monotonic()
    for _ in range(2000):                     # as fast as one client can, for 2.5 seconds
        if time.monotonic() - started >= 2.5:
            break
        if say_hi(port) == b"\x00hibye":
            served += 1
        else:
            refused += 1
    elapsed = time.monotonic() - started
    assert refused > 0
    rate = (served - 40) / elapsed            # beyond the first second's worth, taken at once
    assert abs(rate - 40) <= 4, "served %d in %.2fs: %.1f a second" % (served, elapsed, rate)


def test_the_service_rate_counts_every_client_and_shows_in_metrics(start_services, backend):
    echo = backend(echo_then_bye)
    metrics = Metrics()
    raw = {"services": [{"name": "fwd", "addr": "127.0.0.1:0", "handler": {"type": "tcp"}, "rlimiter": "rate",
                         "forwarder": {"nodes": [{"name": "n", "addr": echo.addr}]}}],
           "rlimiters": [{"name": "rate", "limits": ["$ 5"]}]}
    port = start_services(raw, context=ServiceContext(metrics=metrics))["fwd"].address[1]
    started = time.monotonic()
    answers = [say_hi(port) for _ in range(8)]
    elapsed = time.monotonic() - started
    served = answers.count(b"\x00hibye")
    # Five at once, and one more for every fifth of a second the eight took.
    assert 5 <= served <= 5 + int(elapsed * 5) and answers.count(b"") == 8 - served
    text = generate_latest(metrics.registry).decode()
    [counted] = [line for line in text.splitlines() if line.startswith("gostgev_rlimiter_refused_total{")]
    assert float(counted.split()[-1]) == 8 - served


#: bytes a second the bandwidth tests allow
RATE = 256 * 1024


def sink_then_count(sock, _address):
    """A backend that reads everything, then answers how many bytes it got."""
    total = 0
    for _ in range(100000):
        data = sock.recv(65536)
        if not data:
            break
        total += len(data)
    sock.sendall(b"%d" % total)


def timed_download(port, size):
    """Seconds from the first byte past one second's worth (the bucket's start) to the last."""
    with connect(port) as sock:
        sock.sendall(b"GET /%d HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % size)
        got, mark = 0, None
        for _ in range(100000):
            data = sock.recv(65536)
            if not data:
                break
            got += len(data)
            if mark is None and got >= RATE:
                mark = (time.monotonic(), got)
    return got, mark



def test_bandwidth_out_per_connection_is_held_to_its_rate(start_services, backend):
    def big(sock, _address):
        head = sock.recv(4096)
        size = int(head.split(b" ")[1][1:])
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size + b"x" * size)

    site = backend(big)
    port = forwarder(start_services, site.addr, limiter="bw",
                     limiters=[{"name": "bw", "limits": ["$$ 1MB 256KB"]}])
    size = 3 * RATE
    got, (marked, at) = timed_download(port, size)
    ended = time.monotonic()
    rate = (got - at) / (ended - marked)
    assert got > size and abs(rate - RATE) <= 0.1 * RATE, "%.0f bytes a second" % rate


def test_bandwidth_in_is_held_to_its_rate_and_shows_in_metrics(start_services, backend):
    sink = backend(sink_then_count)
    metrics = Metrics()
    raw = {"services": [{"name": "fwd", "addr": "127.0.0.1:0", "handler": {"type": "tcp"}, "limiter": "bw",
                         "forwarder": {"nodes": [{"name": "n", "addr": sink.addr}]}}],
           "limiters": [{"name": "bw", "limits": ["$ 256KB"]}]}
    port = start_services(raw, context=ServiceContext(metrics=metrics))["fwd"].address[1]
    payload = b"\x00" + b"y" * (3 * RATE)
    with connect(port) as sock:
        started = time.monotonic()
        sock.sendall(payload)
        sock.shutdown(1)
        answer = recv_all(sock)
        elapsed = time.monotonic() - started
    assert answer == b"%d" % len(payload)
    rate = (len(payload) - RATE) / elapsed          # the first second's worth goes at once
    assert abs(rate - RATE) <= 0.1 * RATE, "%.0f bytes a second" % rate
    text = generate_latest(metrics.registry).decode()
    [waited] = [line for line in text.splitlines() if line.startswith("gostgev_limiter_wait_seconds_total{")
                and 'direction="in"' in line]
    assert float(waited.split()[-1]) > 1.0
