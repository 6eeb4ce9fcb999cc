"""Config loading: GOST YAML/JSON into the typed model, and its errors."""

import json

import pytest

from gostgev.components import build_config, load_file
from gostgev.config.values import parse_bool, parse_duration, parse_int
from gostgev.errors import ConfigError


def svc(**over):
    service = {"name": "s", "addr": ":8080", "handler": {"type": "tcp"},
               "forwarder": {"nodes": [{"name": "n", "addr": "127.0.0.1:80"}]}}
    service.update(over)
    return service


def load(raw):
    warnings = []
    return build_config(raw, warnings), warnings


def error_of(raw):
    with pytest.raises(ConfigError) as info:
        load(raw)
    return str(info.value)


@pytest.mark.parametrize("text, seconds", [
    ("10s", 10.0), ("1m30s", 90.0), ("500ms", 0.5), ("1h", 3600.0), ("1.5s", 1.5), (5, 5.0), ("7", 7.0),
    ("2m0.5s", 120.5), (0, 0.0),
])
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["s", "10x", "1m-3s", "", True, [1], "-1s"])
def test_bad_durations(bad):
    with pytest.raises(ValueError):
        parse_duration(bad)


def test_bools_and_ints():
    assert parse_bool("TRUE") is True and parse_bool("0") is False and parse_bool(1) is True
    with pytest.raises(ValueError):
        parse_bool("maybe")
    assert parse_int("42") == 42
    with pytest.raises(ValueError):
        parse_int("4.2")
    with pytest.raises(ValueError):
        parse_int(3, minimum=5)


def test_gost_file_loads_with_case_insensitive_keys():
    config, warnings = load({"Services": [{
        "Name": "proxy", "ADDR": "127.0.0.1:8080",
        "Handler": {"Type": "tcp", "Metadata": {"Sniffing": "true", "Sniffing.Timeout": "3s", "idleTimeout": 60}},
        "Listener": {"type": "tcp"},
        "Forwarder": {
            "Selector": {"Strategy": "rr", "MaxFails": 3, "FailTimeout": "30s"},
            "Nodes": [
                {"name": "a", "addr": "10.0.0.1:80", "host": "A.example.com"},
                {"name": "b", "addr": "10.0.0.2:80", "filter": {"host": "*.Example.org", "protocol": "TLS"}},
                {"name": "c", "addr": "10.0.0.3:80", "metadata": {"backup": True, "weight": 3,
                                                                 "maxFails": 2, "failTimeout": "5s"}},
            ]},
    }], "log": {"level": "debug", "format": "json"}})
    assert warnings == []
    service = config.services[0]
    assert (service.name, str(service.addr)) == ("proxy", "127.0.0.1:8080")
    options = service.handler.options
    assert options.sniffing is True and options.sniffing_timeout == 3.0 and options.idle_timeout == 60.0
    selector = service.forwarder.selector
    assert (selector.strategy, selector.max_fails, selector.fail_timeout) == ("round", 3, 30.0)
    a, b, c = service.forwarder.nodes
    assert a.host == "a.example.com"
    assert (b.host, b.protocol) == (".example.org", "tls")
    assert (c.host, c.backup, c.weight, c.max_fails, c.fail_timeout) == (None, True, 3, 2, 5.0)
    assert (config.log.level, config.log.format) == ("debug", "json")


def test_defaults():
    config, _ = load({"services": [svc()]})
    service = config.services[0]
    assert service.listener.type == "tcp"
    assert service.handler.options.sniffing is False
    assert service.handler.options.sniffing_timeout == 10.0   # never "no timeout"
    assert service.forwarder.selector.fail_timeout == 10.0


def test_sniffing_timeout_zero_still_means_a_timeout():
    config, _ = load({"services": [svc(handler={"type": "tcp", "metadata": {"sniffing.timeout": 0}})]})
    assert config.services[0].handler.options.sniffing_timeout == 10.0


def test_unknown_keys_warn_with_their_path():
    _, warnings = load({"services": [svc(colour="blue")], "bypasses": [], "frobnicate": 1})
    assert "services[0].colour: unknown key, ignored" in warnings
    assert "frobnicate: unknown key, ignored" in warnings
    assert "bypasses: not supported by gostgev, ignored" in warnings


def test_hops_can_serve_as_forwarders():
    config, _ = load({
        "hops": [{"name": "hop-0", "selector": {"strategy": "fifo"},
                  "nodes": [{"name": "x", "addr": "127.0.0.1:1"}]}],
        "services": [svc(forwarder={"hop": "hop-0"})],
    })
    forwarder = config.services[0].forwarder
    assert forwarder.selector.strategy == "fifo" and forwarder.nodes[0].name == "x"


@pytest.mark.parametrize("raw, message", [
    ({"services": [svc(handler={"type": "nope"})]},
     'services[0].handler.type: unknown handler "nope" (known: file, forward, relay, rtcp, rudp, tcp, tunnel, udp)'),
    ({"services": [svc(listener={"type": "quic"})]},
     'services[0].listener.type: unknown listener "quic" (known: rtcp, rudp, tcp, tls, udp, ws, wss)'),
    ({"services": [svc(handler={})]}, "services[0].handler.type: required"),
    ({"services": [svc(addr="localhost")]}, "services[0].addr: missing port"),
    ({"services": [svc(addr=":99999")]}, "services[0].addr: port 99999 out of range"),
    ({"services": [svc(forwarder=None)]}, "services[0].forwarder: handler 'tcp' needs forwarder nodes"),
    ({"services": [svc(handler={"type": "tcp", "metadata": {"sniffing.timeout": "soon"}})]},
     "services[0].handler.metadata.sniffing.timeout: invalid duration 'soon'"),
    ({"services": [svc(handler={"type": "tcp", "metadata": {"sniffing": "maybe"}})]},
     "services[0].handler.metadata.sniffing: expected a boolean"),
    ({"services": [svc(forwarder={"selector": {"strategy": "best"}, "nodes": [{"addr": "a:1"}]})]},
     "services[0].forwarder.selector.strategy: unknown strategy 'best'"),
    ({"services": [svc(forwarder={"nodes": [{"name": "n", "addr": "a:1", "host": "a*b.com"}]})]},
     "services[0].forwarder.nodes[0].host: invalid host pattern"),
    ({"services": [svc(forwarder={"nodes": [{"name": "n", "addr": "a:x"}]})]},
     "services[0].forwarder.nodes[0].addr: invalid port"),
    ({"services": [svc(forwarder={"nodes": [{"name": "n", "addr": "a:1"}, {"name": "n", "addr": "b:1"}]})]},
     "services[0].forwarder.nodes[1].name: duplicate node name"),
    ({"services": [svc(), svc()]}, "services[1].name: duplicate service name"),
    ({"services": [svc(forwarder={"hop": "missing"})]}, "services[0].forwarder.hop: no hop named"),
    ({"services": [svc(handler={"type": "tcp", "chain": "chain-0"})]},
     "services[0].handler.chain: no chain named 'chain-0'"),
    ({"services": [svc(handler={"type": "file", "chain": "c", "metadata": {"dir": "."}}, forwarder=None)],
      "chains": [{"name": "c", "hops": [{"nodes": [{"addr": "a:1", "connector": {"type": "tunnel"}}]}]}]},
     "services[0].handler.chain: handler 'file' cannot use a chain"),
    ({"services": [svc()], "chains": [{"name": "c", "hops": [{"nodes": [{"addr": "a:1"}]}]}]},
     'chains[0].hops[0].nodes[0].connector: unknown connector "http" (known: relay, tunnel)'),
    ({"services": [svc()], "ingresses": [{"name": "i", "rules": [{"hostname": "a", "endpoint": "nope"}]}]},
     "ingresses[0].rules[0].endpoint:"),
    ({"services": [svc(handler={"type": "tunnel", "metadata": {"ingress": "missing"}}, forwarder=None)]},
     "services[0].handler.metadata: ingress: no ingress named 'missing'"),
    ({"services": {"name": "x"}}, "services: expected a list"),
    ({"services": [svc(Addr=":1", addr=":2")]}, "services[0].Addr: duplicate key"),
    ({"log": {"level": "loud"}}, "log.level: unknown level 'loud'"),
    ({"services": [svc(handler={"type": "file", "metadata": {"dir": "/nonexistent-dir"}}, forwarder=None)]},
     "services[0].handler.metadata: file.dir: '/nonexistent-dir' is not a directory"),
])
def test_errors_name_the_key_path(raw, message):
    assert error_of(raw).startswith(message)


def test_yaml_and_json_files(tmp_path):
    yml = tmp_path / "gost.yaml"
    yml.write_text("services:\n- name: s\n  addr: :1\n  handler: {type: tcp}\n"
                   "  forwarder: {nodes: [{name: n, addr: '127.0.0.1:2'}]}\n")
    js = tmp_path / "gost.json"
    js.write_text(json.dumps({"services": [svc()]}))
    assert load_file(str(yml), []).services[0].name == "s"
    assert load_file(str(js), []).services[0].name == "s"


def test_file_errors_carry_line_and_column(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("services:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError) as info:
        load_file(str(bad), [])
    assert str(info.value).startswith("%s:" % bad)
    assert "invalid YAML" in str(info.value)
    with pytest.raises(ConfigError, match="No such file"):
        load_file(str(tmp_path / "missing.yaml"), [])


def test_file_dir_is_relative_to_the_config_file(tmp_path):
    (tmp_path / "www").mkdir()
    conf = tmp_path / "gost.yaml"
    conf.write_text("services:\n- name: f\n  addr: :1\n  handler: {type: file, metadata: {dir: www}}\n")
    config = load_file(str(conf), [])
    assert config.services[0].handler.options.root == str((tmp_path / "www").resolve())


@pytest.mark.timeout(10)
def test_files_that_are_not_regular_files_are_refused_at_once(tmp_path):
    """/dev/zero would be read forever and a FIFO would block start-up."""
    import os

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        with pytest.raises(ConfigError, match="not a regular file"):
            load_file(path, [])
        conf = tmp_path / "users.yaml"
        conf.write_text("services: []\nauthers:\n- name: a\n  file: {path: %s}\n" % path)
        with pytest.raises(ConfigError, match=r"authers\[0\]\.file\.path: .*not a regular file"):
            load_file(str(conf), [])


def test_oversized_files_are_refused(tmp_path):
    from gostgev.textfile import read_text

    big = tmp_path / "big.yaml"
    big.write_bytes(b"x" * 200)
    with pytest.raises(ValueError, match="larger than"):
        read_text(str(big), limit=199)
    assert read_text(str(big), limit=200) == "x" * 200


@pytest.mark.parametrize("metadata, message", [
    ({"entrypoint.proxyProtocol": -1}, "entrypoint.proxyProtocol: must be at least 0, got -1"),
    ({"entrypoint.proxyProtocol": 3}, "entrypoint.proxyProtocol: must be at most 2, got 3"),
    ({"entrypoint.id": "nope"}, "entrypoint.id: invalid tunnel ID 'nope'"),
])
def test_tunnel_entrypoint_values_are_checked_and_named(metadata, message):
    from tests.handler.test_tunnel import TUNNEL_A, server_config

    with pytest.raises(ConfigError) as caught:
        build_config(server_config([("a.local", TUNNEL_A)], **metadata), [])
    assert str(caught.value).endswith(message), str(caught.value)
