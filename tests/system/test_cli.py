"""The gostgev command as a user runs it: subprocesses, exit codes, output."""

import json
import os
import signal
import subprocess
import sys

import pytest
import yaml

from tests import ROOT
from tests.conftest import wait_until
from tests.procs import fetch, gostgev_process, retry_on_port_taken, wait_listening


def gostgev(*args, env=None, timeout=20):
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "gostgev", *args], capture_output=True, text=True,
                          timeout=timeout, env=full_env, cwd=ROOT)


@pytest.mark.parametrize("yaml_text, expected", [
    ("services:\n- name: s\n  addr: :1\n  handler: {type: nope}\n",
     'gostgev: services[0].handler.type: unknown handler "nope" '
     '(known: file, forward, relay, rtcp, rudp, tcp, tunnel, udp)'),
    ("services:\n- name: s\n  addr: nowhere\n  handler: {type: tcp}\n",
     "gostgev: services[0].addr: missing port in address 'nowhere'"),
    ("services: [\n", "invalid YAML"),
    ("services:\n- addr: :1\n  handler: {type: tcp, metadata: {sniffing.timeout: fast}}\n"
     "  forwarder: {nodes: [{addr: 'a:1'}]}\n",
     "gostgev: services[0].handler.metadata.sniffing.timeout: invalid duration 'fast'"),
    ("log: {}\n", "gostgev: services: no services configured"),
])
def test_bad_config_exits_2_with_one_line(tmp_path, yaml_text, expected):
    conf = tmp_path / "bad.yaml"
    conf.write_text(yaml_text)
    result = gostgev("-c", str(conf))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


def test_missing_config_file_exits_2():
    result = gostgev("-c", "/nonexistent/gost.yaml")
    assert result.returncode == 2
    assert result.stderr.startswith("gostgev: /nonexistent/gost.yaml: ")


def test_print_resolved_config_as_yaml_and_json():
    result = gostgev("-L", "tcp://127.0.0.1:8080/10.0.0.1:80?sniffing=true&strategy=fifo", "-O", "yaml")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    service = printed["services"][0]
    assert service["handler"] == {"type": "tcp", "metadata": {"sniffing": "true"}}
    assert service["forwarder"]["selector"] == {"strategy": "fifo", "maxFails": 1, "failTimeout": "30s"}
    assert service["forwarder"]["nodes"] == [{"name": "target-0", "addr": "10.0.0.1:80"}]
    result = gostgev("-c", "etc/gost.yaml", "-O", "json")
    assert result.returncode == 0, result.stderr
    names = [s["name"] for s in json.loads(result.stdout)["services"]]
    assert names == ["tunnel-server", "tunnel-client", "reverse-proxy", "site-a", "site-b"]


def test_the_seed_example_loads_unchanged():
    result = gostgev("-c", "etc/reverse-proxy.yaml", "-O", "json")
    assert result.returncode == 0, result.stderr
    nodes = json.loads(result.stdout)["services"][0]["forwarder"]["nodes"]
    assert [n["filter"]["host"] for n in nodes] == ["example.com", "example.org"]


def test_environment_variables_are_read(tmp_path):
    result = gostgev("-O", "json", env={"GOSTGEV_CONFIG": "etc/gost.yaml"})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["services"][0]["name"] == "tunnel-server"


def test_version():
    result = gostgev("--version")
    assert result.returncode == 0 and result.stdout.startswith("gostgev ")


def test_demo_serves_then_stops_cleanly_on_sigterm(tmp_path, processes):
    """The README's demo: start it, the curl requests, SIGTERM, exit 0."""
    shipped = open(os.path.join(ROOT, "etc", "gost.yaml")).read()
    (tmp_path / "www").symlink_to(os.path.join(ROOT, "etc", "www"))
    conf, log = tmp_path / "gost.yaml", tmp_path / "gost.log"
    # The public ports (entrypoint, reverse proxy) are bound as port 0; the
    # ones the demo dials itself (tunnel server, sites) must be known up front.
    text = shipped.replace("127.0.0.1:8000", "127.0.0.1:0").replace("127.0.0.1:8080", "127.0.0.1:0")

    def start(picked):
        moved = dict(zip(("8443", "18081", "18082"), picked, strict=True))
        replaced = text
        for old, new in moved.items():
            replaced = replaced.replace("127.0.0.1:%s" % old, "127.0.0.1:%d" % new)
        conf.write_text(replaced)
        proc = gostgev_process(["-c", conf], log)
        processes.append(proc)
        return proc, wait_listening(proc, log, ["tunnel-server entrypoint", "reverse-proxy"])

    proc, ports = retry_on_port_taken(start, 3)
    entrypoint, proxy = ports["tunnel-server entrypoint"], ports["reverse-proxy"]

    def get(port, host):
        return fetch(port, host, timeout=2)

    def eventually(port, host, expected):
        """Retry while the tunnel client connects (bounded)."""
        wait_until(lambda: expected in get(port, host), 10)
        return get(port, host)

    try:
        assert b"Hello from site A" in eventually(proxy, "a.example.com", b"Hello from site A")
        assert b"Hello from site A" in eventually(entrypoint, "srv-0.local", b"Hello from site A")
        assert b"Hello from site B" in eventually(entrypoint, "srv-1.local", b"Hello from site B")
        assert eventually(entrypoint, "srv-2.local", b"HTTP/1.1 503 ").startswith(b"HTTP/1.1 503 ")
        assert eventually(entrypoint, "nobody.local", b"HTTP/1.1 502 ").startswith(b"HTTP/1.1 502 ")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=20)
    stderr = log.read_text()
    assert proc.returncode == 0, stderr
    assert "listening on 127.0.0.1:%d service=reverse-proxy" % proxy in stderr
    assert "host=a.example.com" in stderr and "node=site-a" in stderr
    assert "tunnel connection registered" in stderr


@pytest.mark.parametrize("name", ["gost.yaml", "reverse-proxy.yaml", "tunnel-server.yaml", "tunnel-client.yaml"])
def test_shipped_configs_load_without_warnings(name):
    from gostgev.components import load_file

    warnings = []
    config = load_file(os.path.join(ROOT, "etc", name), warnings)
    assert config.services and warnings == []


def test_printed_tunnel_demo_loads_again(tmp_path):
    """-O keeps chains, chain references and ingresses: what it prints is a working config."""
    from gostgev.components import build_config

    result = gostgev("-c", "etc/gost.yaml", "-O", "yaml")
    assert result.returncode == 0, result.stderr
    printed = yaml.safe_load(result.stdout)
    client = next(s for s in printed["services"] if s["name"] == "tunnel-client")
    assert client["listener"]["chain"] == "chain-0"
    assert printed["chains"][0]["hops"][0]["nodes"][0]["connector"]["metadata"]["tunnel.id"]
    assert [r["hostname"] for r in printed["ingresses"][0]["rules"]] == ["srv-0.local", "srv-1.local", "srv-2.local"]
    reloaded = build_config(printed, [], base_dir=os.path.join(ROOT, "etc"))
    assert [s.name for s in reloaded.services] == [s["name"] for s in printed["services"]]
