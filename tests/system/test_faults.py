"""Fault injection with real processes: tunnel clients killed or frozen mid-traffic.

The tunnel server runs in this process (to look at its registry); each tunnel
client is a separate ``gostgev`` process, so it can be SIGKILLed or SIGSTOPped.
"""

import signal
import subprocess
import sys
import time

import gevent
import pytest
import yaml

from gostgev.codec import relay
from tests import ROOT
from tests.conftest import connect, http_get, name_responder, wait_until
from tests.handler.test_tunnel import TUNNEL_A, Deployment

FAST_KEEPALIVE = {"mux.keepaliveInterval": "0.3s", "mux.keepaliveTimeout": "1s"}


def client_process(tmp_path, name, server_port, backend_addr, tunnel_id=TUNNEL_A, mux=FAST_KEEPALIVE):
    """A tunnel client process; its warnings go to ``<tmp_path>/<name>.log``.

    ``mux``: its connector's mux settings (fast keepalives; ``{}`` for the defaults).
    """
    conf = tmp_path / ("%s.yaml" % name)
    conf.write_text(yaml.safe_dump({
        "services": [{"name": name, "addr": ":0", "handler": {"type": "rtcp"},
                      "listener": {"type": "rtcp", "chain": "c"},
                      "forwarder": {"nodes": [{"name": "n", "addr": backend_addr}]}}],
        "chains": [{"name": "c", "hops": [{"name": "h", "nodes": [{
            "name": "s", "addr": "127.0.0.1:%d" % server_port,
            "connector": {"type": "tunnel", "metadata": {"tunnel.id": tunnel_id, **mux}}}]}]}],
    }))
    with open(tmp_path / ("%s.log" % name), "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "gostgev", "-c", str(conf), "--log-level", "warn"],
                                cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log)


def slow_stream(sock, _address):
    """A backend that streams forever, slowly: a transfer that is always in flight."""
    sock.recv(4096)
    try:
        sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        for _ in range(600):
            sock.sendall(b"x" * 4096)
            gevent.sleep(0.05)      # the slow stream itself
    except OSError:
        pass   # the tunnel client was killed: the transfer ends here, quietly


def test_killed_client_ends_its_streams_and_the_other_takes_over(start_services, backend, processes, tmp_path):
    site = backend(name_responder("site"))
    stream = backend(slow_stream)
    dep = Deployment(start_services, [("a.local", TUNNEL_A), ("slow.local", TUNNEL_A)], **FAST_KEEPALIVE)
    victim = client_process(tmp_path, "victim", dep.port, stream.addr)
    processes.append(victim)
    dep.wait_connections(TUNNEL_A, 1)
    with connect(dep.entrypoint, timeout=10) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: slow.local\r\n\r\n")
        assert sock.recv(65536)                            # the transfer is flowing
        processes.append(client_process(tmp_path, "survivor", dep.port, site.addr))
        dep.wait_connections(TUNNEL_A, 2)
        victim.send_signal(signal.SIGKILL)
        started = time.monotonic()
        # The stream must end, not hang, and with a reset: a FIN would pass
        # the cut transfer off as complete.
        with pytest.raises(ConnectionResetError):
            for _ in range(10000):
                if not sock.recv(65536):
                    break
        assert time.monotonic() - started < 5
    dep.wait_connections(TUNNEL_A, 1)
    assert [http_get(dep.entrypoint, "a.local") for _ in range(10)] == [(200, b"site")] * 10


def test_frozen_client_is_dropped_by_keepalive(start_services, backend, processes, tmp_path):
    site = backend(name_responder("site"))
    dep = Deployment(start_services, [("a.local", TUNNEL_A)], **FAST_KEEPALIVE)
    frozen = client_process(tmp_path, "frozen", dep.port, site.addr)
    processes.append(frozen)
    dep.wait_connections(TUNNEL_A, 1)
    processes.append(client_process(tmp_path, "alive", dep.port, site.addr))
    dep.wait_connections(TUNNEL_A, 2)
    frozen.send_signal(signal.SIGSTOP)       # the TCP connection stays open; nothing answers
    started = time.monotonic()
    dep.wait_connections(TUNNEL_A, 1, timeout=5)
    assert time.monotonic() - started < 3    # within keepaliveTimeout (1 s) plus a check period
    assert [http_get(dep.entrypoint, "a.local") for _ in range(10)] == [(200, b"site")] * 10
    frozen.send_signal(signal.SIGCONT)       # it notices, reconnects, and serves again
    dep.wait_connections(TUNNEL_A, 2, timeout=10)
    assert wait_until(lambda: http_get(dep.entrypoint, "a.local") == (200, b"site"), 5)


def test_visitors_blocked_on_a_frozen_connection_end_cleanly_when_it_dies(start_services, backend, processes,
                                                                          tmp_path, caplog, capfd):
    """30 uploads stall on a frozen client's full windows; killing it must fail each one cleanly.

    Before tunnels left the registry by identity, every blocked visitor
    raised KeyError here as it woke up to a tunnel already deleted.
    """
    site = backend(name_responder("site"))
    dep = Deployment(start_services, [("a.local", TUNNEL_A)],
                     **{"mux.keepaliveInterval": "10s", "mux.keepaliveTimeout": "30s"})
    frozen = client_process(tmp_path, "frozen", dep.port, site.addr)
    processes.append(frozen)
    dep.wait_connections(TUNNEL_A, 1)
    frozen.send_signal(signal.SIGSTOP)
    body = b"u" * (1 << 20)
    visitors = []
    for _ in range(30):
        sock = connect(dep.entrypoint, timeout=20)
        visitors.append(sock)
        sock.sendall(b"POST /up HTTP/1.1\r\nHost: a.local\r\nContent-Length: %d\r\n\r\n" % len(body))
    uploads = [gevent.spawn(sock.sendall, body) for sock in visitors]
    connector = dep.registry.get(relay.TunnelID.parse(TUNNEL_A)).connectors[0]
    # 30 streams open on a client that reads nothing: each is stuck on its
    # window, and together they fill the connection's socket buffers...
    assert wait_until(lambda: connector.session.num_streams == 30, 10)
    for _ in range(30):     # ...so these 30 block while opening their streams
        sock = connect(dep.entrypoint, timeout=20)
        visitors.append(sock)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a.local\r\n\r\n")
    assert wait_until(lambda: connector.session.waiting >= 25, 10), connector.session.waiting
    frozen.send_signal(signal.SIGKILL)
    for sock in visitors:
        sock.settimeout(10)
        try:
            answer = sock.recv(65536)
        except (ConnectionResetError, BrokenPipeError):
            answer = b""
        assert answer == b"" or answer.startswith((b"HTTP/1.1 502", b"HTTP/1.1 503")), answer[:80]
        sock.close()
    gevent.joinall(uploads, timeout=10)
    dep.wait_connections(TUNNEL_A, 0)
    assert dep.registry.tunnels() == []
    assert not [r for r in caplog.records if r.exc_info], [r.getMessage() for r in caplog.records if r.exc_info]
    assert "KeyError" not in caplog.text
    # gevent reports a greenlet that died on stderr; none of gostgev's may have.
    stderr = capfd.readouterr().err
    assert "KeyError" not in stderr and "/gostgev/" not in stderr, stderr[-2000:]
    processes.append(client_process(tmp_path, "next", dep.port, site.addr))
    dep.wait_connections(TUNNEL_A, 1)
    assert http_get(dep.entrypoint, "a.local") == (200, b"site")
