"""A refused reload changes nothing; one live ingress per name.

A tunnel server and a tunnel client run in this process, each from its own
file under its own Runtime, as two gostgev processes would.  Each class of
bad change is written to one file or the other and reloaded; the reload
must be refused with one log line while traffic keeps flowing and the
tunnel connection stays the one that was registered before.
"""

import copy
import logging
import socket as stdsocket

import gevent.socket
import pytest
import yaml

from gostgev.api import ApiServer
from gostgev.codec import relay
from gostgev.components import load_file
from gostgev.runtime import ApiView, Runtime
from tests.conftest import http_get, name_responder, wait_until
from tests.handler.test_tunnel import TUNNEL_A, client_config
from tests.test_api import request

TUNNEL = relay.TunnelID.parse(TUNNEL_A)


class FileRuntime:
    """A Runtime over a YAML file, as ``gostgev -c FILE`` runs one."""

    def __init__(self, path, raw):
        self.path = path
        self.raw = raw
        self.write(raw)
        self.runtime = Runtime(lambda warnings: load_file(str(path), warnings), grace=1)
        self.runtime.start(self.runtime.load([]))

    def write(self, raw):
        self.path.write_text(raw if isinstance(raw, str) else yaml.safe_dump(raw))

    def reload_with(self, raw):
        self.write(raw)
        return self.runtime.reload()


def server_raw(port=0, entrypoint=0, **metadata):
    return {"services": [{"name": "server", "addr": "127.0.0.1:%d" % port, "handler": {"type": "tunnel", "metadata": {
        "entrypoint": "127.0.0.1:%d" % entrypoint, "ingress": "ingress-0", **metadata}}}],
            "ingresses": [{"name": "ingress-0", "rules": [{"hostname": "a.local", "endpoint": TUNNEL_A}]}]}


@pytest.fixture
def pair(tmp_path, backend):
    made = []
    site = backend(name_responder("site"))
    server = FileRuntime(tmp_path / "server.yaml", server_raw())
    made.append(server)
    # Fixed ports from now on, as in a real file: what the reloads rewrite must not move them.
    svc = server.runtime.services["server"]
    port, entrypoint = svc.address[1], svc.handler.entrypoints[0].address[1]
    server.raw = server_raw(port, entrypoint)
    assert server.reload_with(server.raw)[0]
    client = FileRuntime(tmp_path / "client.yaml",
                         client_config("client", port, TUNNEL_A, [{"name": "n", "addr": site.addr}]))
    made.append(client)
    handler = server.runtime.services["server"].handler

    def connectors():
        tunnel = handler.registry.get(TUNNEL)
        return [c.id.text for c in tunnel.connectors if not c.closed] if tunnel else []

    assert wait_until(lambda: len(connectors()) == 1, 10)
    assert wait_until(lambda: http_get(entrypoint, "a.local") == (200, b"site"), 5)
    yield server, client, entrypoint, connectors
    for item in made:
        item.runtime.stop(0)


def busy_port():
    sock = stdsocket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    return sock


def _connector_md(raw):
    return raw["chains"][0]["hops"][0]["nodes"][0]["connector"]["metadata"]


def bad_changes(held_port):
    """(name, which file, the bad content): every class of refusal."""
    return [
        ("bad YAML", "server", "services: [\n  - {name: server\n"),
        ("bad YAML", "client", "services: [\n"),
        ("bad type", "server", ("server", {"entrypoint.headerTimeout": ["10s"]})),
        ("bad type", "client", ("client", {"tunnel.weight": "heavy"})),
        ("out of range", "server", ("server", {"mux.maxFrameSize": 70000})),
        ("out of range", "client", ("client", {"tunnel.weight": 300})),
        ("entrypoint port in use", "server", ("entrypoint", held_port)),
        ("service port in use", "server", ("extra", held_port)),
        ("service port in use", "client", ("extra", held_port)),
        ("server moves to a port in use", "server", ("move", held_port)),
    ]


def _make(kind, server, client, change):
    """The raw content a bad change writes."""
    if isinstance(change, str):
        return change
    what, value = change
    target = server if kind == "server" else client
    raw = copy.deepcopy(target.raw)
    svc = raw["services"][0]
    if what == "server":
        svc["handler"]["metadata"].update(value)
    elif what == "client":
        _connector_md(raw).update(value)
    elif what == "entrypoint":
        svc["handler"]["metadata"]["entrypoint"] = "127.0.0.1:%d" % value
    elif what == "move":
        svc["addr"] = "127.0.0.1:%d" % value
    elif what == "extra":
        raw["services"].append({"name": "extra", "addr": "127.0.0.1:%d" % value,
                                "handler": {"type": "tcp"}, "forwarder": {"nodes": [{"name": "x",
                                                                                     "addr": "127.0.0.1:9"}]}})
        if kind == "client":   # together with a good change that must not happen either
            _connector_md(raw)["tunnel.weight"] = 7
    return raw


@pytest.mark.parametrize("index", range(10))
def test_a_refused_reload_changes_nothing(pair, index, caplog, capfd):
    server, client, entrypoint, connectors = pair
    with busy_port() as held:
        changes = bad_changes(held.getsockname()[1])
        name, kind, change = changes[index]
        target = server if kind == "server" else client
        before_services = dict(target.runtime.services)
        before_connectors = connectors()
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="gostgev"):
            ok, message = target.reload_with(_make(kind, server, client, change))
        assert not ok, "%s: %s" % (name, message)
        refused = [r for r in caplog.records if "reload refused" in r.getMessage()]
        assert len(refused) == 1 and refused[0].levelno == logging.ERROR, [r.getMessage() for r in caplog.records]
        assert not [r for r in caplog.records if r.exc_info]
        assert "Traceback" not in capfd.readouterr().err
        assert target.runtime.services == before_services          # the same Service objects
        assert all(not s.listener.server.closed for s in target.runtime.services.values()
                   if s.listener.server is not None)
        for _ in range(5):
            assert http_get(entrypoint, "a.local") == (200, b"site")
        assert connectors() == before_connectors                    # the same registration
    # The file fixed again: a good change still applies.
    restored = copy.deepcopy(target.raw)
    if kind == "client":
        _connector_md(restored)["tunnel.weight"] = 5
    else:
        restored["ingresses"][0]["rules"].append({"hostname": "b.local", "endpoint": TUNNEL_A})
    ok, message = target.reload_with(restored)
    assert ok, message
    assert wait_until(lambda: http_get(entrypoint, "b.local" if kind == "server" else "a.local") == (200, b"site"),
                      10)


def test_an_unexpected_error_while_reloading_is_one_line_and_changes_nothing(pair, caplog):
    server, _, entrypoint, connectors = pair
    before = connectors()

    def broken(_warnings):
        raise RuntimeError("simulated bug in the loader")

    server.runtime.load = broken
    ok, message = server.runtime.reload()
    assert not ok and "simulated bug" in message
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == [
        "reload refused, still serving the previous configuration: internal error: "
        "RuntimeError('simulated bug in the loader')"]
    assert http_get(entrypoint, "a.local") == (200, b"site") and connectors() == before


def test_a_replaced_service_takes_over_its_listening_socket(tmp_path, backend):
    """tcp -> tunnel handler on the same port: replaced, and the port never stops answering."""
    site = backend(name_responder("site"))
    with busy_port() as probe:
        port = probe.getsockname()[1]
    raw = {"services": [{"name": "svc", "addr": "127.0.0.1:%d" % port,
                         "handler": {"type": "tcp", "metadata": {"sniffing": True}},
                         "forwarder": {"nodes": [{"name": "n", "addr": site.addr}]}}]}
    state = FileRuntime(tmp_path / "svc.yaml", raw)
    try:
        old = state.runtime.services["svc"]
        assert http_get(port, "x") == (200, b"site")
        # A blocking connect does not let the hub run, so the old service
        # cannot accept it: it waits in the backlog across the switch.
        queued = stdsocket.create_connection(("127.0.0.1", port))
        changed = copy.deepcopy(raw)
        changed["services"][0]["listener"] = {"type": "ws"}
        ok, message = state.reload_with(changed)
        assert ok and "*svc" in message, message
        assert state.runtime.services["svc"] is not old
        assert state.runtime.services["svc"].address[1] == port
        listening = gevent.socket.socket(fileno=queued.detach())
        listening.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                          b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n")
        listening.settimeout(5)
        assert listening.recv(4096).startswith(b"HTTP/1.1 101")   # answered by the new listener
        listening.close()
    finally:
        state.runtime.stop(0)


def test_one_live_ingress_per_name_across_services_and_reloads(tmp_path, backend):
    """Two tunnel servers name ingress-0; an API DELETE stops the host on both entrypoints."""
    site = backend(name_responder("site"))
    raw = {"services": [], "ingresses": [{"name": "ingress-0", "rules": [
        {"hostname": "a.local", "endpoint": TUNNEL_A}, {"hostname": "b.local", "endpoint": TUNNEL_A}]}]}
    for name in ("east", "west"):
        raw["services"].append({"name": name, "addr": "127.0.0.1:0", "handler": {"type": "tunnel", "metadata": {
            "entrypoint": "127.0.0.1:0", "ingress": "ingress-0"}}})
    server = FileRuntime(tmp_path / "server.yaml", raw)
    clients, api = [], None
    try:
        services = server.runtime.services
        entrypoints = [services[n].handler.entrypoints[0].address[1] for n in ("east", "west")]
        for name in ("east", "west"):
            clients.append(FileRuntime(tmp_path / ("%s.yaml" % name), client_config(
                "c-" + name, services[name].address[1], TUNNEL_A, [{"name": "n", "addr": site.addr}])))
        for port in entrypoints:
            assert wait_until(lambda port=port: http_get(port, "a.local") == (200, b"site"), 10)
        assert services["east"].handler.ingress is services["west"].handler.ingress
        api = ApiServer(ApiView(server.runtime), ("127.0.0.1", 0))
        api.start()
        status, _, _ = request(api.address, "DELETE", "/ingresses/ingress-0/rules/a.local", auth=None)
        assert status == 204
        for port in entrypoints:
            assert http_get(port, "a.local")[0] == 502       # gone everywhere, not on one entrypoint only
            assert http_get(port, "b.local") == (200, b"site")
        status, _, _ = request(api.address, "POST", "/ingresses/ingress-0/rules", auth=None,
                               body={"hostname": "c.local", "endpoint": TUNNEL_A})
        assert status == 201
        # A reload that leaves ingress-0 alone in the file keeps what the API did...
        ok, _ = server.reload_with(raw)
        assert ok
        for port in entrypoints:
            assert http_get(port, "c.local") == (200, b"site") and http_get(port, "a.local")[0] == 502
        # ...and one that changes it takes the file's rules, on both entrypoints at once.
        changed = copy.deepcopy(raw)
        changed["ingresses"][0]["rules"].append({"hostname": "d.local", "endpoint": TUNNEL_A})
        ok, _ = server.reload_with(changed)
        assert ok
        assert server.runtime.services["east"].handler.ingress is server.runtime.services["west"].handler.ingress
        for port in entrypoints:
            assert http_get(port, "d.local") == (200, b"site") and http_get(port, "a.local") == (200, b"site")
            assert http_get(port, "c.local")[0] == 502
    finally:
        if api is not None:
            api.stop()
        for item in clients + [server]:
            item.runtime.stop(0)
