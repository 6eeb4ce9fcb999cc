"""The seed document's three setups, run from the files in etc/seed/.

Each test loads the shipped YAML, moves its loopback ports to free ones (and
makes its relative ``file.dir`` paths absolute), starts real ``gostgev``
processes and sends the request the README's ``curl --resolve`` sends: to
127.0.0.1 with the name, port included, in the Host header.
"""

import glob
import os
import re
import subprocess
import sys

import pytest
import yaml

from tests import ROOT
from tests.conftest import wait_until
from tests.procs import PortTaken, fetch, gostgev_process, port_taken, retry_on_port_taken, wait_started

SEED = os.path.join(ROOT, "etc", "seed")
SEED_FILES = ["1-reverse-proxy.yaml", "2-remote-forward-client.yaml", "2-remote-forward-server.yaml",
              "2-backends.yaml", "3-tunnel-server.yaml", "3-tunnel-client.yaml"]
SETUPS = {"1": ["1-reverse-proxy.yaml"],
          "2": ["2-remote-forward-server.yaml", "2-backends.yaml", "2-remote-forward-client.yaml"],
          "3": ["3-tunnel-server.yaml", "3-tunnel-client.yaml"]}
SITE_A = b"Hello from site A"
SITE_B = b"Hello from site B"
LOOPBACK = re.compile(r"^127\.0\.0\.1:(\d+)$")

#: The seed's second setup, client side, as the document writes it.
SEED_REMOTE_FORWARD_CLIENT = {
    "services": [{
        "name": "http",
        "addr": ":80",
        "handler": {"type": "rtcp", "metadata": {"sniffing": True}},
        "listener": {"type": "rtcp", "chain": "chain-0"},
        "forwarder": {"nodes": [
            {"name": "srv-0", "addr": "192.168.1.1:80", "host": "srv-0.local"},
            {"name": "srv-1", "addr": "192.168.1.2:80", "host": "srv-1.local"},
        ]},
    }],
    "chains": [{
        "name": "chain-0",
        "hops": [{"name": "hop-0", "nodes": [{
            "name": "node-0",
            "addr": "SERVER_IP:8443",
            "connector": {"type": "tunnel"},
            "dialer": {"type": "tcp"},
        }]}],
    }],
}


def load(name):
    with open(os.path.join(SEED, name)) as f:
        return yaml.safe_load(f)


def loopback_ports(node):
    """Every port of a 127.0.0.1:PORT string anywhere in a parsed config."""
    if isinstance(node, dict):
        return {p for value in node.values() for p in loopback_ports(value)}
    if isinstance(node, list):
        return {p for value in node for p in loopback_ports(value)}
    match = LOOPBACK.match(node) if isinstance(node, str) else None
    return {int(match.group(1))} if match else set()


def listen_and_dial_addresses(node):
    """The values of every ``addr`` and ``entrypoint`` key in a parsed config."""
    if isinstance(node, dict):
        return [v for k, v in node.items() if k in ("addr", "entrypoint")] + \
            [a for v in node.values() for a in listen_and_dial_addresses(v)]
    return [a for v in node for a in listen_and_dial_addresses(v)] if isinstance(node, list) else []


def localize(node, ports):
    """A copy with each 127.0.0.1:PORT moved to ``ports[PORT]`` and file.dir made absolute."""
    if isinstance(node, dict):
        return {key: (os.path.normpath(os.path.join(SEED, value)) if key.lower() in ("file.dir", "dir")
                      else localize(value, ports)) for key, value in node.items()}
    if isinstance(node, list):
        return [localize(value, ports) for value in node]
    match = LOOPBACK.match(node) if isinstance(node, str) else None
    return "127.0.0.1:%d" % ports[int(match.group(1))] if match else node


#: a line a process logs once the port it binds later, at a client's BIND, is bound
BOUND_LATER = {"2-remote-forward-server.yaml": "remote port bound"}


class Setup:
    """One setup's files, rewritten into ``tmp_path`` with shared free ports, and their processes.

    The files name the ports the processes dial each other on, so those are
    picked before the start, and the whole setup starts again on new ones
    if something else took one meanwhile.
    """

    def __init__(self, number, tmp_path, processes):
        self.tmp_path, self.processes, self.logs = tmp_path, processes, []
        self.names = SETUPS[number]
        self.configs = {name: load(name) for name in self.names}
        self.shipped = sorted(set().union(*(loopback_ports(c) for c in self.configs.values())))
        self.port, self.files = {}, {}

    def start(self):
        retry_on_port_taken(self._start, len(self.shipped))
        return self

    def _start(self, picked):
        self.port = dict(zip(self.shipped, picked, strict=True))
        self.logs, started = [], []
        try:
            for name in self.names:
                path = self.tmp_path / name
                path.write_text(yaml.safe_dump(localize(self.configs[name], self.port)))
                self.files[name] = path
                log = self.tmp_path / (name + ".log")
                proc = gostgev_process(["-c", path], log, cwd=self.tmp_path)
                self.processes.append(proc)
                started.append(proc)
                self.logs.append(log)
                wait_started(proc, log)
            for name in set(BOUND_LATER) & set(self.names):
                self._wait_bound(self.tmp_path / (name + ".log"), BOUND_LATER[name])
        except PortTaken:
            for proc in started:
                proc.kill()
                proc.wait(timeout=10)
            raise

    def _wait_bound(self, log, marker):
        assert wait_until(lambda: marker in log.read_text() or port_taken(log.read_text()), 15), self.describe()
        if port_taken(log.read_text()):
            raise PortTaken(log.read_text())

    def describe(self):
        return "\n".join("--- %s\n%s" % (log.name, log.read_text()) for log in self.logs if log.exists())

    def curl(self, shipped_port, name):
        """``curl --resolve NAME:PORT:127.0.0.1 http://NAME:PORT/``: (status, body)."""
        port = self.port[shipped_port]
        head, _, body = fetch(port, "%s:%d" % (name, port)).partition(b"\r\n\r\n")
        status = head.split(b" ", 2)[1] if head.startswith(b"HTTP/1.") else b"0"
        return int(status), body

    def wait_for(self, shipped_port, name, body):
        ok = wait_until(lambda: self.curl(shipped_port, name) == (200, body), 15)
        assert ok, "%s: no %r\n%s" % (name, body, self.describe())


def site_body(name):
    with open(os.path.join(ROOT, "etc", "www", name, "index.html"), "rb") as f:
        return f.read()


# -- the files themselves ---------------------------------------------------------

def test_every_seed_file_is_covered():
    assert sorted(os.path.basename(p) for p in glob.glob(os.path.join(SEED, "*.yaml"))) == sorted(SEED_FILES)
    assert sorted(n for names in SETUPS.values() for n in names) == sorted(SEED_FILES)


@pytest.mark.parametrize("name", SEED_FILES)
def test_seed_file_loads_without_warnings(name):
    result = subprocess.run([sys.executable, "-m", "gostgev", "-c", os.path.join("etc", "seed", name), "-O", "yaml"],
                            capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert yaml.safe_load(result.stdout)["services"]


def test_seed_ports_are_loopback_and_do_not_clash():
    """Setups can run side by side, and next to etc/gost.yaml's demo."""
    with open(os.path.join(ROOT, "etc", "gost.yaml")) as f:
        demo = loopback_ports(yaml.safe_load(f))
    assert {8000, 8080, 8443, 18081, 18082} <= demo
    taken = {}
    for number, names in SETUPS.items():
        ports = set().union(*(loopback_ports(load(name)) for name in names))
        assert ports and not ports & demo, (number, ports & demo)
        for other, other_ports in taken.items():
            assert not ports & other_ports, (number, other)
        taken[number] = ports
    for name in SEED_FILES:
        for addr in listen_and_dial_addresses(load(name)):
            assert LOOPBACK.match(addr) or addr == ":0", (name, addr)


def test_remote_forward_client_is_the_seed_with_only_addresses_changed():
    client = load("2-remote-forward-client.yaml")
    service, node = client["services"][0], client["chains"][0]["hops"][0]["nodes"][0]
    nodes = service["forwarder"]["nodes"]
    changed = [service["addr"], nodes[0]["addr"], nodes[1]["addr"], node["addr"]]
    assert all(LOOPBACK.match(addr) for addr in changed), changed
    assert len(set(changed)) == 4
    service["addr"], nodes[0]["addr"], nodes[1]["addr"], node["addr"] = \
        ":80", "192.168.1.1:80", "192.168.1.2:80", "SERVER_IP:8443"
    assert client == SEED_REMOTE_FORWARD_CLIENT
    # And the server it names is the one 2-remote-forward-server.yaml runs, with no mux.version.
    server = load("2-remote-forward-server.yaml")["services"][0]
    assert server["addr"] == changed[3]
    assert server["handler"] == {"type": "relay", "metadata": {"bind": True}}
    backends = {s["addr"] for s in load("2-backends.yaml")["services"]}
    assert backends == set(changed[1:3])


# -- running them -----------------------------------------------------------------

def test_setup_1_reverse_proxy(tmp_path, processes):
    setup = Setup("1", tmp_path, processes).start()
    setup.wait_for(10080, "example.com", site_body("a"))
    setup.wait_for(10080, "example.org", site_body("b"))
    assert site_body("a").startswith(SITE_A) and site_body("b").startswith(SITE_B)
    status, body = setup.curl(10080, "example.net")
    assert status == 502 and SITE_A not in body and SITE_B not in body


def test_setup_2_remote_port_forwarding_through_a_relay_bind_server(tmp_path, processes):
    setup = Setup("2", tmp_path, processes).start()
    setup.wait_for(20080, "srv-1.local", site_body("b"))     # the README's curl
    setup.wait_for(20080, "srv-0.local", site_body("a"))
    status, body = setup.curl(20080, "srv-2.local")
    assert status == 502 and SITE_A not in body and SITE_B not in body
    assert "mux=v2" in (tmp_path / "2-remote-forward-server.yaml.log").read_text()


def test_setup_3_tunnel_with_entrypoint_and_ingress(tmp_path, processes):
    setup = Setup("3", tmp_path, processes).start()
    setup.wait_for(30080, "srv-0.local", site_body("a"))     # the README's curl
    setup.wait_for(30080, "srv-1.local", site_body("b"))
    status, body = setup.curl(30080, "srv-2.local")         # ingress names a tunnel nobody serves
    assert status == 503 and SITE_A not in body and SITE_B not in body
    status, body = setup.curl(30080, "nobody.local")        # no ingress rule
    assert status == 502 and SITE_A not in body and SITE_B not in body
