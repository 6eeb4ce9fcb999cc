"""--workers: processes sharing ports with SO_REUSEPORT; tunnels reachable from every worker."""

import os
import signal

import yaml

from tests.conftest import wait_until
from tests.handler.test_tunnel import TUNNEL_A
from tests.procs import fetch, gostgev_process, retry_on_port_taken, wait_started
from tests.system.test_faults import client_process


def children_of(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as fh:
        return [int(p) for p in fh.read().split()]


def test_workers_share_ports_and_run_every_service_but_relay(tmp_path, processes):
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("site\n")
    conf, log = tmp_path / "gost.yaml", tmp_path / "gost.log"

    def start(picked):
        # Every worker binds these itself (SO_REUSEPORT): they must be known before the start.
        ports = dict(zip(("files", "server", "entrypoint", "proxy"), picked, strict=True))
        conf.write_text(yaml.safe_dump({
            "services": [
                {"name": "files", "addr": "127.0.0.1:%d" % ports["files"], "handler": {"type": "file",
                                                                                      "metadata": {"dir": "www"}}},
                {"name": "proxy", "addr": "127.0.0.1:%d" % ports["proxy"], "handler": {"type": "tcp"},
                 "forwarder": {"nodes": [{"name": "f", "addr": "127.0.0.1:%d" % ports["files"]}]}},
                {"name": "server", "addr": "127.0.0.1:%d" % ports["server"], "handler": {
                    "type": "tunnel", "metadata": {"entrypoint": "127.0.0.1:%d" % ports["entrypoint"],
                                                   "tunnel": "a.local:%s" % TUNNEL_A}}},
                {"name": "client", "addr": ":0", "handler": {"type": "rtcp"},
                 "listener": {"type": "rtcp", "chain": "c"},
                 "forwarder": {"nodes": [{"name": "f", "addr": "127.0.0.1:%d" % ports["files"]}]}},
            ],
            "chains": [{"name": "c", "hops": [{"name": "h", "nodes": [{
                "name": "s", "addr": "127.0.0.1:%d" % ports["server"],
                "connector": {"type": "tunnel", "metadata": {"tunnel.id": TUNNEL_A}}}]}]}],
        }))
        proc = gostgev_process(["-c", conf, "--workers", "2", "--grace", "1"], log)
        processes.append(proc)
        wait_started(proc, log)
        return proc, ports

    proc, ports = retry_on_port_taken(start, 4)
    try:
        assert wait_until(lambda: fetch(ports["entrypoint"], "a.local").endswith(b"site\n"), 10)
        workers = children_of(proc.pid)
        assert len(workers) == 1
        # Both processes serve the shared ports; every request succeeds.
        for port in (ports["files"], ports["proxy"]):
            assert all(fetch(port).endswith(b"site\n") for _ in range(40))
        # Each process runs a tunnel client and a tunnel server: two
        # connections, each registered in whichever worker accepted it.
        assert all(fetch(ports["entrypoint"], "a.local").endswith(b"site\n") for _ in range(40))
        proc.send_signal(signal.SIGHUP)
        # The master passes the signal on: each process reloads on its own.
        assert wait_until(lambda: log.read_text().count("reloaded: nothing changed") == 2, 10), log.read_text()
        assert fetch(ports["files"]).endswith(b"site\n")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    stderr = log.read_text()
    assert proc.returncode == 0, stderr
    assert "started with 4 service(s) (worker 1)" in stderr
    assert "started with 4 service(s) and 1 more workers" in stderr
    assert stderr.count("reloaded: nothing changed") == 2
    assert stderr.count("tunnel connection registered") == 2
    for pid in workers:
        assert not os.path.exists("/proc/%d" % pid) or open("/proc/%d/status" % pid).read().find("zombie") >= 0


def test_a_tunnel_held_by_one_worker_is_reachable_from_every_worker(tmp_path, processes):
    """One tunnel connection lands in one worker; entrypoint connections land
    in both, and those in the other worker are handed over to the holder."""
    (tmp_path / "www").mkdir()
    (tmp_path / "www" / "index.html").write_text("site\n")
    conf, log = tmp_path / "server.yaml", tmp_path / "server.log"

    def start(picked):
        ports = dict(zip(("files", "server", "entrypoint"), picked, strict=True))
        conf.write_text(yaml.safe_dump({"services": [
            {"name": "files", "addr": "127.0.0.1:%d" % ports["files"], "handler": {"type": "file",
                                                                                  "metadata": {"dir": "www"}}},
            {"name": "server", "addr": "127.0.0.1:%d" % ports["server"], "handler": {"type": "tunnel", "metadata": {
                "entrypoint": "127.0.0.1:%d" % ports["entrypoint"], "tunnel": "a.local:%s" % TUNNEL_A}}},
        ]}))
        proc = gostgev_process(["-c", conf, "--workers", "2", "--grace", "1", "--log-level", "debug"], log)
        processes.append(proc)
        wait_started(proc, log)
        return proc, ports

    proc, ports = retry_on_port_taken(start, 3)
    client = client_process(tmp_path, "client", ports["server"], "127.0.0.1:%d" % ports["files"])
    processes.append(client)
    try:
        assert wait_until(lambda: fetch(ports["entrypoint"], "a.local").endswith(b"site\n"), 10)
        # The kernel spreads these over both workers by their source ports:
        # without hand-overs about half would get 503.
        answers = [fetch(ports["entrypoint"], "a.local") for _ in range(40)]
        assert [a.endswith(b"site\n") for a in answers] == [True] * 40
    finally:
        client.kill()
        client.wait(timeout=10)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    stderr = log.read_text()
    assert proc.returncode == 0, stderr
    assert stderr.count("tunnel connection registered") == 1
    assert "handed to worker" in stderr
