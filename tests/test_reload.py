"""Reloading the configuration: nothing in flight is dropped, new routes apply at once."""

import copy
import hashlib
import os
import signal

import gevent
import pytest
import yaml

from gostgev.components import build_config
from gostgev.errors import ConfigError
from gostgev.runtime import Runtime
from tests.conftest import connect, http_get, name_responder, wait_until
from tests.handler.test_tunnel import TUNNEL_A, client_config
from tests.procs import gostgev_process, wait_listening

PAYLOAD = os.urandom(8 << 20)


def streaming_backend(sock, _address):
    """Answers any request with 8 MiB, slowly enough that a reload lands mid-transfer."""
    sock.recv(4096)
    sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(PAYLOAD))
    for start in range(0, len(PAYLOAD), 1 << 20):
        sock.sendall(PAYLOAD[start:start + (1 << 20)])
        gevent.sleep(0.05)      # the slow backend itself


class Reloadable:
    """A Runtime whose 'file' is a dict the test edits."""

    def __init__(self, raw):
        self.raw = raw
        self.runtime = Runtime(self._load, grace=2)
        self.runtime.start(self._load([]))

    def _load(self, warnings):
        return build_config(copy.deepcopy(self.raw), warnings)

    def port(self, name):
        return self.runtime.services[name].address[1]


@pytest.fixture
def reloadable():
    made = []

    def make(raw):
        made.append(Reloadable(raw))
        return made[-1]

    yield make
    for item in made:
        item.runtime.stop(0)


def proxy(nodes):
    return {"services": [{"name": "proxy", "addr": "127.0.0.1:0",
                          "handler": {"type": "tcp", "metadata": {"sniffing": True}},
                          "forwarder": {"nodes": nodes}}]}


def download(port, host):
    with connect(port, timeout=20) as sock:
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode())
        data = b""
        while True:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            data += chunk
    return data.partition(b"\r\n\r\n")[2]


def test_reload_keeps_a_transfer_in_flight_and_applies_new_routes(reloadable, backend):
    big = backend(streaming_backend)
    site_b = backend(name_responder("b"))
    state = reloadable(proxy([{"name": "big", "addr": big.addr, "host": "big.local"}]))
    port = state.port("proxy")
    transfer = gevent.spawn(download, port, "big.local")
    assert wait_until(lambda: big.connections == 1, 5)
    state.raw = proxy([{"name": "big", "addr": big.addr, "host": "big.local"},
                       {"name": "b", "addr": site_b.addr, "host": "b.local"}])
    ok, message = state.runtime.reload()
    assert ok and "~proxy" in message
    assert state.port("proxy") == port                       # same listening socket
    assert http_get(port, "b.local") == (200, b"b")          # the new route, at once
    assert not transfer.ready()                              # still streaming during all this
    body = transfer.get(timeout=30)
    assert hashlib.sha256(body).digest() == hashlib.sha256(PAYLOAD).digest()


def test_a_broken_config_is_refused_and_the_old_one_serves(reloadable, backend, caplog):
    site = backend(name_responder("site"))
    state = reloadable(proxy([{"name": "s", "addr": site.addr}]))
    port = state.port("proxy")
    state.raw = {"services": [{"name": "proxy", "addr": "127.0.0.1:0", "handler": {"type": "nope"}}]}
    ok, message = state.runtime.reload()
    assert not ok and 'unknown handler "nope"' in message
    assert "reload refused" in caplog.text
    assert http_get(port, "x") == (200, b"site")


def test_services_are_added_and_removed(reloadable, backend):
    site = backend(name_responder("site"))
    state = reloadable(proxy([{"name": "s", "addr": site.addr}]))
    old_port = state.port("proxy")
    raw = proxy([{"name": "s", "addr": site.addr}])
    raw["services"][0]["name"] = "renamed"
    state.raw = raw
    ok, message = state.runtime.reload()
    assert ok and "+renamed" in message and "-proxy" in message
    assert http_get(state.port("renamed"), "x") == (200, b"site")
    with pytest.raises(OSError):
        http_get(old_port, "x", timeout=2)


def test_tunnel_connections_stay_registered_across_a_reload(reloadable, start_services, backend):
    site = backend(name_responder("site"))
    server_raw = {
        "services": [{"name": "server", "addr": "127.0.0.1:0", "handler": {
            "type": "tunnel", "metadata": {"entrypoint": "127.0.0.1:0", "ingress": "i"}}}],
        "ingresses": [{"name": "i", "rules": [{"hostname": "a.local", "endpoint": TUNNEL_A}]}],
    }
    state = reloadable(server_raw)
    server = state.runtime.services["server"]
    start_services(client_config("c", server.address[1], TUNNEL_A, [{"name": "n", "addr": site.addr}]))
    entrypoint = server.handler.entrypoints[0].address[1]
    assert wait_until(lambda: http_get(entrypoint, "a.local") == (200, b"site"), 10)
    connectors = [c.id for t in server.handler.registry.tunnels() for c in t.connectors]
    new_raw = copy.deepcopy(server_raw)      # same addresses (port 0 here means "the one bound")
    new_raw["ingresses"][0]["rules"].append({"hostname": "new.local", "endpoint": TUNNEL_A})
    state.raw = new_raw
    ok, _ = state.runtime.reload()
    assert ok
    assert state.runtime.services["server"] is server
    assert [c.id for t in server.handler.registry.tunnels() for c in t.connectors] == connectors
    assert http_get(entrypoint, "new.local") == (200, b"site")
    assert http_get(entrypoint, "a.local") == (200, b"site")


def test_sighup_reloads_the_file(tmp_path, processes):
    """From outside, as an operator does it: edit the file, SIGHUP, see the change."""
    import socket as stdsocket

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "index.html").write_text("A\n")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "index.html").write_text("B\n")
    conf, log = tmp_path / "gost.yaml", tmp_path / "gost.log"

    def write(dirname):
        conf.write_text(yaml.safe_dump({"services": [{"name": "files", "addr": "127.0.0.1:0",
                                                      "handler": {"type": "file", "metadata": {"dir": dirname}}}]}))

    def get():
        try:
            with stdsocket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            return data.partition(b"\r\n\r\n")[2]
        except OSError:
            return None

    write("a")
    proc = gostgev_process(["-c", conf], log)
    processes.append(proc)
    port = wait_listening(proc, log, ["files"])["files"]    # kept by the reload: the service changes in place
    try:
        assert wait_until(lambda: get() == b"A\n", 10)
        write("b")
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: get() == b"B\n", 10)
        conf.write_text("services: [\n")
        proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: "reload refused" in log.read_text(), 10), log.read_text()
        assert get() == b"B\n" and proc.poll() is None
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    stderr = log.read_text()
    assert proc.returncode == 0
    assert "reload refused" in stderr and "invalid YAML" in stderr


def test_config_error_type_is_what_the_runtime_expects():
    with pytest.raises(ConfigError):
        build_config({"services": [{"addr": ":1", "handler": {"type": "nope"}}]}, [])
