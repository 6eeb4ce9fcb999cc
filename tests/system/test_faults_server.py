"""Fault injection on the server side and at the edges of a deployment.

* the tunnel server as a separate process: SIGKILLed and restarted, or
  frozen with SIGSTOP; its web API shows what it has registered;
* a node behind a tunnel client that is down, then comes back;
* a forwarder process run out of file descriptors;
* malformed relay and mux bytes from one peer, while others keep working.

The test process runs gevent without monkey-patching, so every wait here
yields to the hub (``wait_until``, gevent sockets): in-process backends and
services keep serving while a test waits.
"""

import errno
import json
import logging
import os
import resource
import signal
import time

import gevent
import pytest
import yaml
from gevent import ssl
from gevent.server import StreamServer

from gostgev import listener
from gostgev.codec import mux, relay
from gostgev.handler import forward
from tests.conftest import (
    LOCALHOST,
    connect,
    holds_for,
    http_get,
    name_responder,
    read_request_head,
    recv_all,
    settled,
    wait_until,
)
from tests.handler.test_tunnel import TUNNEL_A, TUNNEL_B, UNNAMED, Deployment, client_config
from tests.procs import gostgev_process, wait_listening
from tests.system.test_faults import FAST_KEEPALIVE, client_process
from tests.system.test_gost_wire import (
    C2,
    MAX_READS,
    WINDOW,
    FakeGostServer,
    FrameReader,
    _left,
    accept_bind,
    read_relay_message,
    read_until_eof,
    tunnel_client_config,
)


def get(port, host, timeout=3):
    """``http_get``, with (None, b"") while nothing listens."""
    try:
        return http_get(port, host, timeout=timeout)
    except OSError:
        return None, b""


# -- 1. the tunnel server killed, restarted, frozen ----------------------------------

class ServerProcess:
    """A tunnel server with an entrypoint and the web API, in its own process.

    The first start binds port 0 for all three and reads the ports from the
    log; the config is then rewritten with them, so a restart comes back on
    the ports the clients know.
    """

    def __init__(self, tmp_path, processes, rules):
        self.port = self.entrypoint = self.api = 0
        self.rules = rules
        self.tmp_path = tmp_path
        self.processes = processes
        self.runs = 0
        self.proc = None
        self.conf = tmp_path / "server.yaml"
        self._write_config()

    def _write_config(self):
        self.conf.write_text(yaml.safe_dump({
            "services": [{"name": "server", "addr": "127.0.0.1:%d" % self.port,
                          "handler": {"type": "tunnel", "metadata": {
                              "entrypoint": "127.0.0.1:%d" % self.entrypoint, "ingress": "ingress-0",
                              **FAST_KEEPALIVE}}}],
            "ingresses": [{"name": "ingress-0", "rules": [{"hostname": h, "endpoint": e} for h, e in self.rules]}],
            "api": {"addr": "127.0.0.1:%d" % self.api},
        }))

    @property
    def log_path(self):
        return self.tmp_path / ("server-%d.log" % self.runs)

    def start(self):
        self.runs += 1
        self.proc = gostgev_process(["-c", self.conf, "--log-level", "info"], self.log_path)
        self.processes.append(self.proc)
        if self.runs == 1:
            ports = wait_listening(self.proc, self.log_path, ["server", "server entrypoint", "api"])
            self.port, self.entrypoint, self.api = ports["server"], ports["server entrypoint"], ports["api"]
            self._write_config()
        assert wait_until(lambda: self.tunnels() is not None, 10), "the server's API never answered"

    def tunnels(self):
        """{tunnel id: [connection]} as the API reports them; None while it does not answer."""
        try:
            with connect(self.api, timeout=3) as sock:
                sock.sendall(b"GET /tunnels HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                response = recv_all(sock)
        except OSError:
            return None
        head, _, body = response.partition(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            return None
        return {t["tunnel"]: t["connections"] for t in json.loads(body)["tunnels"]}

    def counts(self):
        tunnels = self.tunnels()
        return None if tunnels is None else {t: len(c) for t, c in tunnels.items() if c}

    def wait_counts(self, wanted, timeout=10):
        assert wait_until(lambda: self.counts() == wanted, timeout), \
            "registered %r, wanted %r" % (self.counts(), wanted)

    def registrations_logged(self):
        return self.log_path.read_text().count("tunnel connection registered")


def distinct_connections(tunnels):
    """Every registered connection has its own id and its own client address."""
    connections = [c for conns in tunnels.values() for c in conns]
    return (len({c["id"] for c in connections}) == len(connections)
            and len({c["remote"] for c in connections}) == len(connections))


def serves_all(entrypoint):
    """a.local alternates over both tunnel A clients, b.local reaches tunnel B's."""
    seen = {http_get(entrypoint, "a.local", timeout=5) for _ in range(4)}
    return seen == {(200, b"a1"), (200, b"a2")} and http_get(entrypoint, "b.local", timeout=5) == (200, b"b")


def test_killed_server_restarts_and_each_client_registers_exactly_once(backend, processes, tmp_path):
    sites = {name: backend(name_responder(name)) for name in ("a1", "a2", "b")}
    server = ServerProcess(tmp_path, processes, [("a.local", TUNNEL_A), ("b.local", TUNNEL_B)])
    server.start()
    clients = [client_process(tmp_path, name, server.port, sites[name].addr, tunnel)
               for name, tunnel in (("a1", TUNNEL_A), ("a2", TUNNEL_A), ("b", TUNNEL_B))]
    processes.extend(clients)
    wanted = {TUNNEL_A: 2, TUNNEL_B: 1}
    server.wait_counts(wanted)
    assert serves_all(server.entrypoint)

    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=10)
    with pytest.raises(ConnectionRefusedError):
        http_get(server.entrypoint, "a.local", timeout=2)
    server.start()                                        # same ports, empty registry
    up = time.monotonic()
    server.wait_counts(wanted, timeout=listener.RECONNECT_MAX + 5)
    assert time.monotonic() - up < listener.RECONNECT_MAX + 3
    # No client registers twice, and nothing stale appears later (the server's keepalive
    # would drop a dead registration within about a second).
    assert holds_for(lambda: server.counts() == wanted, 1.5, step=0.1), server.tunnels()
    assert distinct_connections(server.tunnels())
    assert server.registrations_logged() == 3
    assert serves_all(server.entrypoint)
    assert [c.poll() for c in clients] == [None] * 3


def test_frozen_server_keeps_no_stale_registration_when_clients_redial(backend, processes, tmp_path):
    sites = {name: backend(name_responder(name)) for name in ("a1", "a2")}
    server = ServerProcess(tmp_path, processes, [("a.local", TUNNEL_A)])
    server.start()
    processes.extend(client_process(tmp_path, name, server.port, sites[name].addr) for name in ("a1", "a2"))
    server.wait_counts({TUNNEL_A: 2})
    before = {c["id"] for c in server.tunnels()[TUNNEL_A]}

    # Frozen, the server still holds both registrations; the clients stop hearing its
    # keepalive, hang up and dial again, and the kernel queues their new connections.
    server.proc.send_signal(signal.SIGSTOP)
    logs = [tmp_path / "a1.log", tmp_path / "a2.log"]
    try:
        assert wait_until(lambda: all("tunnel disconnected" in log.read_text() for log in logs), 10)
    finally:
        server.proc.send_signal(signal.SIGCONT)

    def replaced():
        tunnels = server.tunnels() or {}
        ids = {c["id"] for c in tunnels.get(TUNNEL_A, [])}
        return len(ids) == 2 and not ids & before

    assert wait_until(replaced, listener.RECONNECT_MAX + 5), server.tunnels()
    assert holds_for(lambda: server.counts() == {TUNNEL_A: 2}, 1.5, step=0.1), server.tunnels()
    assert distinct_connections(server.tunnels())
    assert {http_get(server.entrypoint, "a.local", timeout=5) for _ in range(4)} == {(200, b"a1"), (200, b"a2")}


# -- 2. the node behind the tunnel client is down --------------------------------------

def client_hello(server_name):
    """The first flight of a TLS client, with SNI."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    outgoing = ssl.MemoryBIO()
    conn = context.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        conn.do_handshake()
    return outgoing.read()


def closed_port(backend):
    server = backend(name_responder("gone"))
    server.stop()
    return server.port


def test_node_down_gets_502_over_http_and_a_close_over_tls(start_services, backend):
    dep = Deployment(start_services, [("down.local", TUNNEL_A)])
    dead = "%s:%d" % (LOCALHOST, closed_port(backend))
    dep.client("c", TUNNEL_A, [{"name": "dead", "addr": dead, "host": "down.local"}])
    dep.wait_connections(TUNNEL_A, 1)
    status, body = http_get(dep.entrypoint, "down.local")
    assert status == 502 and b"no node reachable for host down.local" in body, body
    with connect(dep.entrypoint, timeout=5) as sock:
        sock.sendall(client_hello("down.local"))
        try:
            answer = sock.recv(4096)
        except ConnectionResetError:
            answer = b""
        assert answer == b""          # plain text would only confuse a TLS client


def test_failed_node_is_skipped_until_fail_timeout_then_tried_again(start_services, backend):
    fail_timeout = 2.0
    dep = Deployment(start_services, [("ha.local", TUNNEL_A)])
    fallback = backend(name_responder("fallback"))
    primary_port = closed_port(backend)
    raw = client_config("c", dep.port, TUNNEL_A, [
        {"name": "primary", "addr": "%s:%d" % (LOCALHOST, primary_port), "host": "ha.local"},
        {"name": "fallback", "addr": fallback.addr, "host": "ha.local"}])
    raw["services"][0]["forwarder"]["selector"] = {"strategy": "fifo", "maxFails": 2,
                                                   "failTimeout": "%gs" % fail_timeout}
    client = start_services(raw)["c"]
    dep.wait_connections(TUNNEL_A, 1)
    primary = next(n for n in client.handler.forwarder.nodes if n.name == "primary")

    # maxFails 2: the first failed dial does not take the node out yet.
    assert http_get(dep.entrypoint, "ha.local") == (200, b"fallback")
    assert primary.fails == 1 and not primary.is_failed(time.monotonic())
    marked = time.monotonic()
    assert http_get(dep.entrypoint, "ha.local") == (200, b"fallback")
    assert primary.is_failed(time.monotonic())

    dialed = []

    def primary_site(sock, address):
        dialed.append(address)
        name_responder("primary")(sock, address)

    revived = StreamServer((LOCALHOST, primary_port), primary_site)
    revived.start()
    try:
        # While marked, the node is not dialed at all, although it is up again.
        for _ in range(1000):
            if time.monotonic() - marked > fail_timeout / 2:
                break
            answer = http_get(dep.entrypoint, "ha.local")
            if time.monotonic() - marked < fail_timeout:    # else a slow request may rightly reach it
                assert answer == (200, b"fallback") and dialed == []
            gevent.sleep(0.05)      # paces the samples over the window; nothing to wait for
        assert wait_until(lambda: http_get(dep.entrypoint, "ha.local") == (200, b"primary"), fail_timeout + 5)
        assert time.monotonic() - marked >= fail_timeout
        assert http_get(dep.entrypoint, "ha.local") == (200, b"primary")   # fifo: back in first place
        assert primary.fails == 0
    finally:
        revived.stop(timeout=1)


# -- 3. out of file descriptors ------------------------------------------------------

FD_LIMIT = 64


def open_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def settled_fds(pid):
    """The process's descriptor count once two readings in a row agree."""
    count = settled(lambda: open_fds(pid))
    assert count is not None, "descriptor count of %d never settled" % pid
    return count


def cpu_seconds(pid):
    """User plus system CPU time of a process, from /proc/<pid>/stat."""
    with open("/proc/%d/stat" % pid) as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def limit_fds():
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))


def test_forwarder_out_of_descriptors_logs_once_backs_off_and_recovers(backend, processes, tmp_path):
    site = backend(name_responder("site"))
    conf = tmp_path / "fwd.yaml"
    conf.write_text(yaml.safe_dump({"services": [{
        "name": "fwd", "addr": "127.0.0.1:0",
        # Idle connections wait for a request head: each holds one descriptor for the whole test.
        "handler": {"type": "tcp", "metadata": {"sniffing": True, "sniffing.timeout": "60s"}},
        "forwarder": {"nodes": [{"name": "site", "addr": site.addr}]}}]}))
    log_path = tmp_path / "fwd.log"
    proc = gostgev_process(["-c", conf, "--log-level", "info"], log_path, preexec_fn=limit_fds)
    processes.append(proc)
    port = wait_listening(proc, log_path, ["fwd"])["fwd"]
    assert wait_until(lambda: get(port, "x") == (200, b"site"), 10)
    held = []
    try:
        held += [connect(port) for _ in range(FD_LIMIT - 1 - settled_fds(proc.pid))]
        assert wait_until(lambda: open_fds(proc.pid) == FD_LIMIT - 1, 10), open_fds(proc.pid)
        # One descriptor left: accepting takes it, so the dial to the node fails with EMFILE.
        status, body = http_get(port, "x")
        assert status == 503 and b"no node reachable" in body, (status, body)
        held += [connect(port) for _ in range(5)]    # one is accepted, the rest wait in the backlog
        assert wait_until(lambda: open_fds(proc.pid) == FD_LIMIT, 10), open_fds(proc.pid)
        assert wait_until(lambda: "cannot accept connections" in log_path.read_text(), 10)
        started, cpu = time.monotonic(), cpu_seconds(proc.pid)
        gevent.sleep(1.0)                            # a window to measure: the process must idle in it
        assert (cpu_seconds(proc.pid) - cpu) / (time.monotonic() - started) < 0.3
    finally:
        for sock in held:
            sock.close()
    assert wait_until(lambda: get(port, "x") == (200, b"site"), 10)
    assert wait_until(lambda: "accepting connections on 127.0.0.1:%d again" % port in log_path.read_text(), 5)
    text = log_path.read_text()
    assert "Traceback" not in text, text
    assert 1 <= text.count("cannot accept connections") <= 2, text
    assert "Too many open files" in text
    assert proc.poll() is None


def test_dial_failing_for_lack_of_descriptors_does_not_mark_the_node(start_services, backend, monkeypatch):
    site = backend(name_responder("site"))
    fwd = start_services({"services": [{
        "name": "fwd", "addr": "127.0.0.1:0", "handler": {"type": "tcp", "metadata": {"sniffing": True}},
        "forwarder": {"nodes": [{"name": "site", "addr": site.addr}]}}]})["fwd"]
    port, node = fwd.address[1], fwd.handler.forwarder.nodes[0]

    def exhausted(*_args):
        raise OSError(errno.EMFILE, os.strerror(errno.EMFILE))

    with monkeypatch.context() as patch:
        patch.setattr(forward, "dial_tcp", exhausted)
        status, body = http_get(port, "x")
    assert status == 503 and b"no node reachable for host x" in body, (status, body)
    assert node.fails == 0              # our own shortage, not the node's
    assert http_get(port, "x") == (200, b"site")


# -- 4. malformed bytes from one peer ----------------------------------------------------

#: a counter pattern, so any lost, repeated or reordered byte shows
PATTERN_CHUNK = 1024
PATTERN = b"".join(i.to_bytes(4, "big") for i in range(600 * PATTERN_CHUNK // 4))


def pattern_stream(sock, _address):
    """An HTTP response that streams PATTERN slowly: a transfer always in flight."""
    read_request_head(sock)
    try:
        sock.sendall(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
        for start in range(0, len(PATTERN), PATTERN_CHUNK):
            sock.sendall(PATTERN[start:start + PATTERN_CHUNK])
            gevent.sleep(0.02)      # the slow stream itself
    except OSError:
        pass   # the reader went away


class LongDownload:
    """A GET through the entrypoint whose body is read in the background."""

    def __init__(self, port, host):
        self.sock = connect(port, timeout=10)
        self.sock.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode())
        self.data = bytearray()
        self.ended = False
        self.job = gevent.spawn(self._read)

    def _read(self):
        for _ in range(100000):
            chunk = self.sock.recv(65536)
            if not chunk:
                break
            self.data += chunk
        self.ended = True

    @property
    def body(self):
        return bytes(self.data).partition(b"\r\n\r\n")[2]

    def grows_by(self, n, timeout=10):
        """Wait for ``n`` more intact body bytes while the stream stays open."""
        target = len(self.body) + n
        assert wait_until(lambda: len(self.body) >= target or self.ended, timeout), len(self.body)
        assert not self.ended, "the long stream ended"
        body = self.body
        assert body == PATTERN[:len(body)], "the long stream's bytes were damaged"

    def close(self):
        self.job.kill()
        self.sock.close()


def raw_bind(port, tunnel_id):
    """A hand-made tunnel client: BIND, and the server's OK."""
    sock = connect(port, timeout=5)
    sock.sendall(relay.Request(cmd=relay.BIND, addrs=("127.0.0.1:1", ":0"),
                               tunnel_id=relay.TunnelID.parse(tunnel_id)).encode())
    reply, _ = relay.parse_response(read_relay_message(sock))
    assert reply.status == relay.OK
    return sock


def header(version, cmd, length, sid):
    """A smux header with no checks at all, unlike the codec's encoder."""
    return bytes([version, cmd]) + length.to_bytes(2, "little") + sid.to_bytes(4, "little")


BAD_FRAMES = {
    "version-1-frame": header(1, mux.CMD_NOP, 0, 0),
    "unknown-command": header(2, 9, 0, 3),
    "upd-of-65535-bytes": header(2, mux.CMD_UPD, 0xFFFF, 3),
    "nop-with-payload": header(2, mux.CMD_NOP, 4, 0) + b"junk",
    "syn-with-payload": header(2, mux.CMD_SYN, 8, 2) + b"12345678",
}
BAD_RELAY = {
    "relay-version-5": b"\x05" + relay.Request(cmd=relay.BIND, addrs=("127.0.0.1:1", ":0"),
                                                tunnel_id=relay.TunnelID.parse(UNNAMED)).encode()[1:],
    "feature-past-its-list": bytes.fromhex("0102000502000901") + b"\x7f",
}


@pytest.fixture
def busy_deployment(start_services, backend):
    """Tunnel A with a long download in flight, tunnel B idle, tunnel C free for a raw client."""
    dep = Deployment(start_services, [("slow.local", TUNNEL_A), ("a.local", TUNNEL_A), ("b.local", TUNNEL_B),
                                      ("c.local", UNNAMED)])
    slow, site_a, site_b = backend(pattern_stream), backend(name_responder("a")), backend(name_responder("b"))
    dep.client("client-a", TUNNEL_A, [{"name": "slow", "addr": slow.addr, "host": "slow.local"},
                                      {"name": "a", "addr": site_a.addr, "host": "a.local"}])
    dep.client("client-b", TUNNEL_B, [{"name": "b", "addr": site_b.addr}])
    dep.wait_connections(TUNNEL_A, 1)
    dep.wait_connections(TUNNEL_B, 1)
    download = LongDownload(dep.entrypoint, "slow.local")
    download.grows_by(4096)
    yield dep
    download.grows_by(4096)            # still flowing after whatever the test did
    assert http_get(dep.entrypoint, "a.local") == (200, b"a")
    assert http_get(dep.entrypoint, "b.local") == (200, b"b")
    download.close()


@pytest.mark.parametrize("frame", BAD_FRAMES.values(), ids=BAD_FRAMES.keys())
def test_malformed_mux_frame_closes_only_its_connection(busy_deployment, frame, caplog):
    caplog.set_level(logging.INFO)
    dep = busy_deployment
    sock = raw_bind(dep.port, UNNAMED)
    with sock:
        dep.wait_connections(UNNAMED, 1)
        sock.sendall(frame)
        read_until_eof(sock, timeout=5)             # TimeoutError if the server keeps it open
    dep.wait_connections(UNNAMED, 0, timeout=5)
    assert wait_until(lambda: "tunnel connection closed: protocol error: " in caplog.text, 5), caplog.text
    assert http_get(dep.entrypoint, "c.local")[0] == 503


@pytest.mark.parametrize("head", BAD_RELAY.values(), ids=BAD_RELAY.keys())
def test_malformed_relay_header_closes_only_its_connection(busy_deployment, head, caplog):
    caplog.set_level(logging.INFO)
    with connect(busy_deployment.port, timeout=5) as sock:
        sock.sendall(head)
        assert read_until_eof(sock, timeout=5) == b""       # no reply, as GOST does
    assert "bad relay request, closing: relay:" in caplog.text
    assert busy_deployment.connections(UNNAMED) == 0


def test_data_for_an_unknown_stream_is_dropped_and_the_connection_lives(busy_deployment):
    dep = busy_deployment
    sock = raw_bind(dep.port, UNNAMED)
    with sock:
        dep.wait_connections(UNNAMED, 1)
        # smux discards frames for streams it does not know; so do we.
        sock.sendall(mux.encode_frame(2, mux.CMD_PSH, 99, b"nobody asked") + mux.encode_frame(2, mux.CMD_FIN, 99))
        visitor = gevent.spawn(http_get, dep.entrypoint, "c.local", timeout=5)
        try:
            frame, _ = FrameReader(sock).next(timeout=5)   # the server still uses this connection
            assert (frame.cmd, frame.sid) == (mux.CMD_SYN, 3)
            assert dep.connections(UNNAMED) == 1
        finally:
            visitor.kill()


# -- the same from the server: a bad stream header toward a tunnel client ------------------

class FakeServerStreams:
    """The fake server's view of the client's frames, collected per stream."""

    def __init__(self, conn):
        self.conn = conn
        self.frames = FrameReader(conn)
        self.data = {}
        self.fins = set()

    def pump(self, done, timeout=5.0):
        deadline = time.monotonic() + timeout
        for _ in range(MAX_READS):
            if done():
                return
            frame, _ = self.frames.next(_left(deadline))
            if frame.cmd == mux.CMD_PSH:
                self.data[frame.sid] = self.data.get(frame.sid, b"") + frame.payload
                if frame.sid == 3:     # keep the long stream's window open
                    self.conn.sendall(mux.encode_upd(2, 3, len(self.data[3]), WINDOW))
            elif frame.cmd == mux.CMD_FIN:
                self.fins.add(frame.sid)
        raise AssertionError("too many frames")

    def body(self, sid):
        return self.data.get(sid, b"").partition(b"\r\n\r\n")[2]


def send_stream(conn, sid, head, payload=b""):
    frames = mux.encode_frame(2, mux.CMD_SYN, sid) + mux.encode_frame(2, mux.CMD_PSH, sid, head)
    conn.sendall(frames + (mux.encode_frame(2, mux.CMD_PSH, sid, payload) if payload else b""))


def test_bad_stream_header_from_the_server_closes_only_that_stream(start_services, backend):
    slow, site = backend(pattern_stream), backend(name_responder("srv-0"))
    fake = FakeGostServer()
    try:
        raw = tunnel_client_config(fake.port, site.addr)
        raw["services"][0]["forwarder"]["nodes"].append({"name": "slow", "addr": slow.addr, "host": "slow.local"})
        client = start_services(raw)["client"]
        conn, _ = accept_bind(fake)
        conn.sendall(C2)
        streams = FakeServerStreams(conn)
        send_stream(conn, 3, relay.Response(relay.OK, addrs=("127.0.0.1:40000", "slow.local:80")).encode(),
                    b"GET / HTTP/1.1\r\nHost: slow.local\r\n\r\n")
        streams.pump(lambda: len(streams.body(3)) >= 4096)

        send_stream(conn, 5, bytes.fromhex("05ff00000102030405"))                  # not a relay header
        send_stream(conn, 7, relay.Response(relay.HOST_UNREACHABLE).encode())     # no OK, no address
        # As a GOST server sends it: one request per stream, saying Connection: close.
        send_stream(conn, 9, relay.Response(relay.OK, addrs=("127.0.0.1:40001", "srv-0.local:80")).encode(),
                    b"GET / HTTP/1.1\r\nHost: srv-0.local\r\nConnection: close\r\n\r\n")
        streams.pump(lambda: {5, 7, 9} <= streams.fins)
        assert streams.data.get(5, b"") == streams.data.get(7, b"") == b""
        assert streams.body(9) == b"srv-0"
        mark = len(streams.body(3))
        streams.pump(lambda: len(streams.body(3)) >= mark + 4096)
        assert 3 not in streams.fins
        assert streams.body(3) == PATTERN[:len(streams.body(3))]
        assert not client.listener.bound.session.closed
    finally:
        fake.close()
