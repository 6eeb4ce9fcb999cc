"""Two tunnel-server processes sharing their tunnels through a real Redis; one of them is killed.

The servers are ``python -m gostgev`` processes whose ingress rules are in
Redis; the tunnel client, whose hop lists both servers, and the backend run
in the test process.
"""

import signal

import yaml

from gostgev.config.model import RedisConfig
from gostgev.discovery import RedisBackend
from tests.conftest import http_get, name_responder, wait_until
from tests.handler.test_tunnel import TUNNEL_A
from tests.procs import gostgev_process, wait_listening

TTL = 2.0


def start_node(tmp_path, processes, name, redis_addr):
    conf = tmp_path / ("%s.yaml" % name)
    conf.write_text(yaml.safe_dump({
        "sds": [{"name": "sd-0", "redis": {"addr": redis_addr, "key": "sys:sd"}}],
        "services": [{"name": name, "addr": "127.0.0.1:0", "handler": {"type": "tunnel", "metadata": {
            "entrypoint": "127.0.0.1:0", "ingress": "ingress-0", "sd": "sd-0", "sd.node": name,
            "tunnel.ttl": "%gs" % TTL, "mux.keepaliveInterval": "0.5s", "mux.keepaliveTimeout": "2s"}}}],
        # The rules live in Redis too (a hash: host name -> tunnel ID), read every 0.5 s.
        "ingresses": [{"name": "ingress-0", "reload": "0.5s",
                       "redis": {"addr": redis_addr, "key": "sys:ingress", "type": "hash"}}],
    }))
    log_path = tmp_path / ("%s.log" % name)
    proc = gostgev_process(["-c", conf, "--log-level", "info"], log_path)
    processes.append(proc)
    ports = wait_listening(proc, log_path, [name, name + " entrypoint"])
    return proc, ports[name], ports[name + " entrypoint"]


def get(port, host):
    try:
        return http_get(port, host, timeout=3)
    except OSError:
        return None, b""


def test_killing_the_node_that_holds_the_tunnel(tmp_path, processes, redis_server, start_services, backend):
    assert redis_server.command("HSET", "sys:ingress", "app.local", TUNNEL_A) == b":1\r\n"
    a, a_port, a_entry = start_node(tmp_path, processes, "a", redis_server.addr)
    b, b_port, b_entry = start_node(tmp_path, processes, "b", redis_server.addr)
    site = backend(name_responder("app"))
    start_services({
        "services": [{"name": "client", "addr": ":0", "handler": {"type": "rtcp"},
                      "listener": {"type": "rtcp", "chain": "servers"},
                      "forwarder": {"nodes": [{"name": "app", "addr": site.addr}]}}],
        "chains": [{"name": "servers", "hops": [{"name": "hop", "selector": {"strategy": "fifo"}, "nodes": [
            {"name": node, "addr": "127.0.0.1:%d" % port,
             "connector": {"type": "tunnel", "metadata": {"tunnel.id": TUNNEL_A, "mux.keepaliveInterval": "0.5s",
                                                          "mux.keepaliveTimeout": "2s"}}}
            for node, port in (("b", b_port), ("a", a_port))]}]}],
    })
    records = RedisBackend(RedisConfig(addr=redis_server.addr, key="sys:sd"), TTL)
    assert wait_until(lambda: [r.node for r in records.lookup(TUNNEL_A)] == ["b"], 10)
    assert get(a_entry, "app.local") == (200, b"app")    # at A, through B
    assert get(b_entry, "app.local") == (200, b"app")
    # A rule added in Redis routes at both nodes within one reload period.
    redis_server.command("HSET", "sys:ingress", "www.app.local", TUNNEL_A)
    assert wait_until(lambda: get(a_entry, "www.app.local") == (200, b"app"), 3)

    b.send_signal(signal.SIGKILL)
    b.wait(timeout=5)
    # The client is on A within 5 s plus one back-off step; A serves it itself.
    assert wait_until(lambda: get(a_entry, "app.local") == (200, b"app"), 5 + 1 + 2)
    # B said nothing when it died: its record expires within one TTL, and A's is there.
    assert wait_until(lambda: [r.node for r in records.lookup(TUNNEL_A)] == ["a"], TTL + 2)
    records.close()
