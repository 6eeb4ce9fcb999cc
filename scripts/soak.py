#!/usr/bin/env python3
"""Soak test: random payloads through the forwarder and the tunnel while tunnel clients are killed.

    python3 scripts/soak.py [--duration 60] [--clients 200] [--kill-every 5] [--seed N] [--write FILE]

Processes (all on 127.0.0.1, free ports, configs and logs in a temporary
directory that is kept when a check fails):

  backend    this script with --backend: one gevent process listening on one
             port per label (fwd, t0, t1, ...), so each response names the way
             it came
  forwarder  gostgev ``tcp`` handler with sniffing -> backend "fwd"
  server     gostgev tunnel server: tunnel port, entrypoint, ingress for
             soak.local, web API and metrics
  clients    --tunnel-clients gostgev processes (rtcp + tunnel connector, one
             tunnel ID, keepalive 0.5 s / 2 s); client k -> backend "t<k>"

Load: --clients greenlets in this process.  Each connects to the forwarder or
the entrypoint (half each) and sends one request, or 2-8 over the same
connection (keep-alive), half-closing after the last one a quarter of the time:

  POST /soak HTTP/1.1, Host: soak.local, Content-Length: n, X-Mode: echo|digest, X-Reply-Size: m

The backend sends its response head at once (X-Via: its label), then
  echo    the body back as it arrives (the client sends and reads at once)
  digest  SHA-256 of the body it read, m random bytes, SHA-256 of those,
so both directions are checked by SHA-256.  n and m are log-uniform in
1 B .. --max-size.  A complete response that fails a check (digest, length,
label, bytes after the last response) is a MISMATCH; a connection that breaks
or times out, or a 5xx from gostgev, is a FAILURE.

Chaos: every --kill-every seconds (times 0.5-1.5) a random tunnel client other
than client 0 is SIGKILLed and restarted.  Client 0 is never killed, so its
descriptors and memory can be followed through the whole run and the tunnel
always has a live connection: a 503 is a bug, never bad luck.  For each kill
the server must close its end of the dead connection (its descriptor goes)
within DROP_LIMIT and the web API must stop listing it; the new process must
be registered within RECONNECT_LIMIT.

Attribution.  The entrypoint routes each request; requests in a row share
one stream, so a keep-alive connection stays with one client until that
stream ends.  A connection whose client was killed between two of its
requests goes on through another client (a MOVE, counted, not a failure);
a move without such a kill is a MISMATCH.  A request is "in flight at a
kill" from its connection's start.  A failure is
EXPECTED only if it is on the tunnel path, a kill of the client that served
it (X-Via; any client if no response head arrived) happened between
KILL_GRACE before the connection started and the failure, and the failure
surfaced within SURFACE_LIMIT of that kill.  KILL_GRACE covers a connection
the server routed onto the dead client's session in the moment before it read
EOF from it.  Every other failure is UNEXPECTED.

Idle state.  The run has a warm-up (load and kills), then the measured
--duration.  After each, load stops and the soak waits until every client is
registered and nothing is in flight, then checks for stale state: the API
lists exactly the live clients' connections with no open stream; the server's
tunnel-connections gauge and in-flight count equal the number of clients; the
forwarder and the clients have no request in flight; every process is alive.

Resources.  Descriptors and RSS are sampled in those two idle moments, which
compare like with like (same listeners and tunnel connections, no traffic),
and every --sample-every seconds under load (first, last and peak shown).
  fds  idle growth <= FD_SLACK: nothing per request or per kill may stay
       open; the slack is for a descriptor a library opens once, lazily.
  RSS  idle growth <= max(RSS_SLACK_MIB, RSS_SLACK_SHARE of the first sample).
       Memory freed after a busy moment stays in the C allocator's heap,
       fragmented, so RSS creeps up by a few MiB over minutes of random load
       with nothing leaking (the backend, which keeps no state, creeps
       alike); 8 MiB is
       about twice that creep over five minutes, while a leak of 100 bytes
       per request passes it within some 85,000 requests.  The report shows
       the growth per thousand requests as well.
Accounting: the forwarder's metrics must count exactly the connections, zero
handler errors and, to the byte, what the clients sent and received through
it during the measured phase.

Exit status 0 when every check passes, 1 otherwise; 130 when interrupted.
"""

import argparse
import collections
import ctypes
import datetime
import hashlib
import json
import math
import os
import platform
import random
import re
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass, field

import gevent
import yaml
from gevent import socket, subprocess
from gevent.event import Event
from gevent.pool import Group
from gevent.server import StreamServer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOST = "soak.local"
TUNNEL_ID = "5d0a4e1c-2b7f-4c1e-9a63-0f8e1b2c3d4e"
MIB = 1024 * 1024

#: seconds before a connection's start in which a kill still counts for it
KILL_GRACE = 1.0
#: seconds from a kill to the failure it causes, at most
SURFACE_LIMIT = 10.0
#: seconds the server may take to drop a killed client's connection
DROP_LIMIT = 5.0
#: seconds a restarted client may take to be registered (process start-up included)
RECONNECT_LIMIT = 20.0
#: descriptors an idle process may gain over the run
FD_SLACK = 2
#: RSS an idle process may gain over the run: the larger of these
RSS_SLACK_MIB = 8
RSS_SLACK_SHARE = 0.10
#: seconds load greenlets get to finish after their phase before they are stopped
PHASE_OVERRUN = 60.0

KEEPALIVE = {"mux.keepaliveInterval": "0.5s", "mux.keepaliveTimeout": "2s"}
REQUEST_HEAD = ("POST /soak HTTP/1.1\r\nHost: " + HOST + "\r\nContent-Length: %d\r\nX-Mode: %s\r\n"
                "X-Reply-Size: %d\r\n\r\n").encode()
RESPONSE_HEAD = b"HTTP/1.1 200 OK\r\nX-Via: %s\r\nContent-Length: %d\r\n\r\n"
MAX_HEAD = 8192
DIGEST = 32


# -- the backend (runs as its own process) -------------------------------------------------

def backend_main(labels, seed, lifetime):
    pool = memoryview(random.Random(seed).randbytes(4 * MIB))
    rng = random.Random(seed + 1)
    servers, ports = [], {}
    for label in labels:
        server = StreamServer(("127.0.0.1", 0), _backend_handler(label.encode(), pool, rng))
        server.start()
        servers.append(server)
        ports[label] = server.address[1]
    print(json.dumps(ports), flush=True)
    stop = Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGINT, stop.set)
    stop.wait(lifetime)   # the parent ends it; the lifetime only bounds an orphan
    for server in servers:
        server.stop(timeout=1)


def _backend_handler(label, pool, rng):
    def handle(sock, _address):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(300)
        try:
            _serve(sock, label, pool, rng)
        except OSError:
            pass   # killed tunnel clients reset their connections: routine here

    return handle


def _serve(sock, label, pool, rng):
    pending = b""
    while True:
        while b"\r\n\r\n" not in pending:
            if len(pending) > MAX_HEAD:
                return _bad_request(sock, label)
            chunk = sock.recv(65536)
            if not chunk:
                return
            pending += chunk
        head, _, pending = pending.partition(b"\r\n\r\n")
        try:
            length, mode, reply_size = _parse_request(head)
        except ValueError:
            return _bad_request(sock, label)
        echo = mode == b"echo"
        sock.sendall(RESPONSE_HEAD % (label, length if echo else DIGEST + reply_size + DIGEST))
        digest = hashlib.sha256()
        remaining = length
        while remaining:
            if pending:
                chunk, pending = pending[:remaining], pending[remaining:]
            else:
                chunk = sock.recv(min(remaining, 256 * 1024))
                if not chunk:
                    return
            digest.update(chunk)
            remaining -= len(chunk)
            if echo:
                sock.sendall(chunk)
        if not echo:
            offset = rng.randrange(len(pool) - reply_size + 1)
            reply = pool[offset:offset + reply_size]
            sock.sendall(digest.digest())
            sock.sendall(reply)
            sock.sendall(hashlib.sha256(reply).digest())


def _parse_request(head):
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"POST /soak HTTP/1.1"):
        raise ValueError("request line")
    headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
    mode = headers[b"x-mode"]
    if mode not in (b"echo", b"digest"):
        raise ValueError("mode")
    return int(headers[b"content-length"]), mode, int(headers[b"x-reply-size"])


def _bad_request(sock, label):
    # X-Via marks it as the backend's: the request reached it damaged.
    sock.sendall(b"HTTP/1.1 400 Bad Request\r\nX-Via: %s\r\nContent-Length: 0\r\n\r\n" % label)


# -- processes -------------------------------------------------------------------------------

def _die_with_parent():
    # A SIGKILLed soak must not leave gostgev processes behind.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class Processes:
    def __init__(self, tmp):
        self.tmp = tmp
        self.running = {}

    def start(self, name, cmd, capture=False):
        with open(os.path.join(self.tmp, name + ".log"), "ab") as log:
            proc = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE if capture else log, stderr=log,
                                    preexec_fn=_die_with_parent)
        self.running[name] = proc
        return proc

    def kill(self, name):
        proc = self.running.pop(name)
        proc.killed_by_soak = True
        proc.kill()
        proc.wait(timeout=10)

    def stop_all(self):
        procs = list(self.running.values())
        self.running.clear()
        for proc in procs:
            if proc.poll() is None:
                try:
                    proc.terminate()
                except OSError:
                    pass
        deadline = time.monotonic() + 5
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def gostgev(config, *flags):
    return [sys.executable, "-m", "gostgev", "-c", config, "--log-level", "warn", "--grace", "1", *flags]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, timeout=20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("process %d exited with %s before listening on %d" % (proc.pid, proc.returncode, port))
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            gevent.sleep(0.1)
    raise RuntimeError("nothing listens on port %d after %gs" % (port, timeout))


def proc_usage(pid):
    """(open descriptors, RSS in KiB) of a live process, or None."""
    try:
        fds = len(os.listdir("/proc/%d/fd" % pid))
        with open("/proc/%d/status" % pid) as fh:
            rss = next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
        return fds, rss
    except (OSError, StopIteration):
        return None


def socket_inodes(pid):
    inodes = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        pass
    return inodes


def tcp_connections(pid):
    """(inode, local port, remote port) of the process's established TCP connections."""
    inodes = socket_inodes(pid)
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "01" and fields[9] in inodes:
                found.append((fields[9], int(fields[1].rsplit(":", 1)[1], 16), int(fields[2].rsplit(":", 1)[1], 16)))
    return found


def tunnel_ports(pid, server_port):
    """Local ports of the process's established connections to the tunnel port."""
    return {local for _, local, remote in tcp_connections(pid) if remote == server_port}


# -- small HTTP client for the API and metrics ------------------------------------------------

def http_get(port, path, timeout=5.0):
    """(status, body) of a GET on loopback; raises OSError (or gevent.Timeout) on failure."""
    with gevent.Timeout(timeout, TimeoutError("GET %s on port %d timed out" % (path, port))):
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" % path.encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), body


_METRIC = re.compile(r"^([A-Za-z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric_sum(text, name, **labels):
    total = 0.0
    for line in text.splitlines():
        match = _METRIC.match(line)
        if match and match.group(1) == name:
            found = dict(_LABEL.findall(match.group(2) or ""))
            if all(found.get(k) == v for k, v in labels.items()):
                total += float(match.group(3))
    return total


def scrape(port):
    status, body = http_get(port, "/metrics")
    if status != 200:
        raise OSError("metrics answered %d" % status)
    return body.decode()


# -- the load -------------------------------------------------------------------------------------

class Mismatch(Exception):
    """A complete answer that is wrong."""


class Failure(Exception):
    """No complete answer."""


class Reader:
    def __init__(self, sock):
        self.sock = sock
        self.pending = b""

    def head(self):
        while b"\r\n\r\n" not in self.pending:
            if len(self.pending) > MAX_HEAD:
                raise Mismatch("response head over %d bytes" % MAX_HEAD)
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Failure("eof in response head" if self.pending else "eof before response")
            self.pending += chunk
        head, _, self.pending = self.pending.partition(b"\r\n\r\n")
        return head

    def exact(self, n):
        out = bytearray(n)
        view = memoryview(out)
        pos = min(n, len(self.pending))
        out[:pos] = self.pending[:pos]
        self.pending = self.pending[pos:]
        while pos < n:
            got = self.sock.recv_into(view[pos:], n - pos)
            if not got:
                raise Failure("eof in response body")
            pos += got
        return out

    def expect_eof(self):
        if self.pending or self.sock.recv(1):
            raise Mismatch("bytes after the last response")


def _reason(exc):
    if isinstance(exc, (Failure, Mismatch)):
        return str(exc)
    if isinstance(exc, TimeoutError) or "timed out" in str(exc):
        return "timeout"
    if isinstance(exc, ConnectionResetError):
        return "connection reset"
    if isinstance(exc, BrokenPipeError):
        return "broken pipe"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return "%s: %s" % (type(exc).__name__, getattr(exc, "strerror", None) or exc)


@dataclass
class Stats:
    requests: collections.Counter = field(default_factory=collections.Counter)
    connections: collections.Counter = field(default_factory=collections.Counter)
    keepalive: collections.Counter = field(default_factory=collections.Counter)
    half_closed: collections.Counter = field(default_factory=collections.Counter)
    payload: collections.Counter = field(default_factory=collections.Counter)   # both directions
    wire_up: collections.Counter = field(default_factory=collections.Counter)
    wire_down: collections.Counter = field(default_factory=collections.Counter)
    via: collections.Counter = field(default_factory=collections.Counter)
    moves: collections.Counter = field(default_factory=collections.Counter)
    mismatches: list = field(default_factory=list)
    failures: list = field(default_factory=list)


@dataclass
class FailureRecord:
    path: str
    conn_start: float
    end: float
    via: str | None
    reason: str
    expected: bool = False
    why: str = ""
    after_kill: float = 0.0


@dataclass
class Kill:
    time: float
    slot: int
    drop: float | None = None       # seconds until the server closed the connection
    unlisted: float | None = None   # seconds until the web API no longer listed it
    reconnect: float | None = None  # seconds until the new process was registered
    superseded: bool = False        # killed again before it was registered
    note: str = ""


class Soak:
    def __init__(self, args, tmp, procs):
        self.args = args
        self.tmp = tmp
        self.procs = procs
        self.rng = random.Random(args.seed)
        size = max(4 * MIB, 2 * args.max_size)
        self.pool = memoryview(random.Random(args.seed ^ 0x5A5A).randbytes(size))
        self.log_max = math.log(args.max_size + 1)
        self.ports = {name: free_port() for name in ("forwarder", "tunnel", "entrypoint", "api", "fwd-metrics",
                                                    "server-metrics")}
        self.client_metrics = [free_port() for _ in range(args.tunnel_clients)]
        self.clients = {}   # slot -> Popen
        self.kills = []
        self.deadline = 0.0
        self.stats = {"warm-up": Stats(), "soak": Stats()}
        self.series = collections.defaultdict(list)   # name -> [(phase, t, pid, fds, rss KiB)] under load
        self.t0 = time.monotonic()
        self.idle = {}     # "warm-up"/"soak" -> {name: (pid, fds, rss)}
        self.metrics = {}  # "warm-up"/"soak" -> forwarder metrics text
        self.idle_ok = {}

    # -- setup ------------------------------------------------------------------------------

    def write_config(self, name, raw):
        path = os.path.join(self.tmp, name + ".yaml")
        with open(path, "w") as fh:
            yaml.safe_dump(raw, fh, sort_keys=False)
        return path

    def start(self):
        args = self.args
        labels = ["fwd"] + ["t%d" % k for k in range(args.tunnel_clients)]
        lifetime = args.warmup + args.duration + 900
        backend = self.procs.start("backend", [sys.executable, os.path.abspath(__file__), "--backend",
                                               ",".join(labels), "--seed", str(args.seed),
                                               "--lifetime", str(lifetime)], capture=True)
        with gevent.Timeout(20, RuntimeError("the backend did not report its ports")):
            line = backend.stdout.readline()
        try:
            self.backend = json.loads(line)
        except ValueError:
            raise RuntimeError("the backend did not start (exit status %s)" % backend.poll()) from None
        ports = self.ports
        fwd = self.write_config("forwarder", {
            "services": [{"name": "forwarder", "addr": "127.0.0.1:%d" % ports["forwarder"],
                          "handler": {"type": "tcp", "metadata": {"sniffing": True}},
                          "forwarder": {"nodes": [{"name": "backend",
                                                   "addr": "127.0.0.1:%d" % self.backend["fwd"]}]}}]})
        server = self.write_config("server", {
            "services": [{"name": "tunnel-server", "addr": "127.0.0.1:%d" % ports["tunnel"],
                          "handler": {"type": "tunnel", "metadata": {
                              "entrypoint": "127.0.0.1:%d" % ports["entrypoint"], "ingress": "ingress-0",
                              **KEEPALIVE}}}],
            "ingresses": [{"name": "ingress-0", "rules": [{"hostname": HOST, "endpoint": TUNNEL_ID}]}]})
        self.forwarder = self.procs.start("forwarder", gostgev(fwd, "--metrics", "127.0.0.1:%d"
                                                                % ports["fwd-metrics"]))
        self.server = self.procs.start("server", gostgev(server, "--api", "127.0.0.1:%d" % ports["api"],
                                                         "--metrics", "127.0.0.1:%d" % ports["server-metrics"]))
        for slot in range(args.tunnel_clients):
            self.start_client(slot)
        wait_port(ports["forwarder"], self.forwarder)
        wait_port(ports["api"], self.server)
        wait_port(ports["entrypoint"], self.server)
        missing = self.wait_connected(RECONNECT_LIMIT)
        if missing:
            raise RuntimeError("tunnel clients %s never registered" % sorted(missing))
        for path in ("forwarder", "tunnel"):
            self.probe(path)

    def start_client(self, slot):
        name = "client-%d" % slot
        config = self.write_config(name, {
            "services": [{"name": name, "addr": ":0", "handler": {"type": "rtcp"},
                          "listener": {"type": "rtcp", "chain": "chain-0"},
                          "forwarder": {"nodes": [{"name": "backend",
                                                   "addr": "127.0.0.1:%d" % self.backend["t%d" % slot]}]}}],
            "chains": [{"name": "chain-0", "hops": [{"name": "hop-0", "nodes": [{
                "name": "server", "addr": "127.0.0.1:%d" % self.ports["tunnel"],
                "connector": {"type": "tunnel", "metadata": {"tunnel.id": TUNNEL_ID, **KEEPALIVE}},
                "dialer": {"type": "tcp"}}]}]}]})
        self.clients[slot] = self.procs.start(name, gostgev(config, "--metrics",
                                                            "127.0.0.1:%d" % self.client_metrics[slot]))

    def probe(self, path, timeout=20.0):
        """One good request on a path before the load starts."""
        deadline = time.monotonic() + timeout
        stats = Stats()
        self.deadline = deadline
        while time.monotonic() < deadline:
            self.connection(random.Random(1), stats, path, 1, False)
            if stats.requests[path]:
                return
            gevent.sleep(0.2)
        reasons = [f.reason for f in stats.failures] + [m[1] for m in stats.mismatches]
        raise RuntimeError("no good request through the %s: %s" % (path, reasons[-3:]))

    # -- tunnel state ------------------------------------------------------------------------

    def api_connections(self):
        """{remote port: openStreams} of the server's tunnel connections, or None if the API did not answer."""
        try:
            status, body = http_get(self.ports["api"], "/tunnels")
        except (OSError, gevent.Timeout):
            return None
        if status != 200:
            return None
        found = {}
        try:
            tunnels = json.loads(body)["tunnels"]
        except (ValueError, KeyError):
            return None
        for tunnel in tunnels:
            for conn in tunnel["connections"]:
                found[int(conn["remote"].rsplit(":", 1)[1])] = conn["openStreams"]
        return found

    def wait_connected(self, timeout):
        """Wait until every client is registered on the server; the slots that are not."""
        deadline = time.monotonic() + timeout
        while True:
            conns = self.api_connections() or {}
            missing = {slot for slot, proc in self.clients.items()
                       if not tunnel_ports(proc.pid, self.ports["tunnel"]) & conns.keys()}
            if not missing or time.monotonic() >= deadline:
                return missing
            gevent.sleep(0.1)

    # -- chaos --------------------------------------------------------------------------------

    def chaos(self, deadline, watchers):
        """Kill on a schedule of its own: waiting for the last restart would stretch the intervals."""
        killable = list(range(1, self.args.tunnel_clients))
        planned = time.monotonic()
        while True:
            planned += self.args.kill_every * self.rng.uniform(0.5, 1.5)
            if planned >= deadline:
                return
            gevent.sleep(max(0.0, planned - time.monotonic()))
            slot = self.rng.choice(killable)
            ports = tunnel_ports(self.clients[slot].pid, self.ports["tunnel"])
            # The server's end of those connections, found while the kernel still lists them.
            server_side = {inode for inode, local, remote in tcp_connections(self.server.pid)
                           if local == self.ports["tunnel"] and remote in ports}
            kill = Kill(time.monotonic(), slot)
            self.kills.append(kill)
            self.procs.kill("client-%d" % slot)
            self.start_client(slot)
            watchers.spawn(self.watch_drop, kill, ports, server_side)
            watchers.spawn(self.watch_reconnect, kill, self.clients[slot])

    def watch_drop(self, kill, ports, server_side):
        """Time the server's close of the dead connection (its descriptor) and its removal from the API."""
        if not ports or not server_side:
            kill.note = "was not connected yet"
            return
        while time.monotonic() - kill.time < DROP_LIMIT * 2:
            now = time.monotonic()
            if kill.drop is None and not server_side & socket_inodes(self.server.pid):
                kill.drop = now - kill.time
            if kill.drop is not None:
                conns = self.api_connections()
                if conns is not None and not ports & conns.keys():
                    kill.unlisted = time.monotonic() - kill.time
                    return
            gevent.sleep(0.02)

    def watch_reconnect(self, kill, proc):
        while time.monotonic() - kill.time < RECONNECT_LIMIT * 1.5:
            if getattr(proc, "killed_by_soak", False):
                kill.superseded = True   # killed again before it registered: nothing to time
                return
            if proc.poll() is not None:
                kill.note = "restarted client exited with %s" % proc.returncode
                return
            conns = self.api_connections()
            if conns is not None and tunnel_ports(proc.pid, self.ports["tunnel"]) & conns.keys():
                kill.reconnect = time.monotonic() - kill.time
                return
            gevent.sleep(0.1)

    # -- load ---------------------------------------------------------------------------------

    def size(self, rng):
        return max(1, min(self.args.max_size, int(math.exp(rng.uniform(0, self.log_max)))))

    def client_loop(self, cid, stats):
        rng = random.Random(self.args.seed * 100003 + cid)
        gevent.sleep(rng.uniform(0, 1))   # no thundering herd of connects at t=0
        while time.monotonic() < self.deadline:
            path = "tunnel" if rng.random() < 0.5 else "forwarder"
            count = 1 if rng.random() < 0.6 else rng.randint(2, 8)
            self.connection(rng, stats, path, count, rng.random() < 0.25)

    def connection(self, rng, stats, path, count, half_close):
        port = self.ports["entrypoint" if path == "tunnel" else "forwarder"]
        conn_start = time.monotonic()
        state = {"via": None, "since": conn_start}   # who answered the last request, sent when
        sock = None
        stats.connections[path] += 1
        if count > 1:
            stats.keepalive[path] += 1
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=self.args.io_timeout)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = Reader(sock)
            for i in range(count):
                if i and time.monotonic() >= self.deadline:
                    break
                last = i == count - 1
                self.request(rng, sock, reader, path, state, half_close and last, stats)
        except Mismatch as exc:
            stats.mismatches.append((path, str(exc), state["via"]))
        except (Failure, OSError) as exc:
            stats.failures.append(FailureRecord(path, conn_start, time.monotonic(), state["via"], _reason(exc)))
        except gevent.GreenletExit:
            stats.failures.append(FailureRecord(path, conn_start, time.monotonic(), state["via"],
                                                "still running %gs after its phase" % PHASE_OVERRUN))
            raise
        finally:
            if sock is not None:
                sock.close()

    def killed_since(self, via, since):
        """Whether the tunnel client behind backend label ``via`` (t<slot>) was killed after ``since``."""
        slot = int(via[1:]) if via.startswith("t") and via[1:].isdigit() else None
        return any(k.slot == slot and k.time >= since - KILL_GRACE for k in self.kills)

    def request(self, rng, sock, reader, path, state, half_close, stats):
        started = time.monotonic()
        echo = rng.random() < 0.5
        n = self.size(rng)
        m = 0 if echo else self.size(rng)
        offset = rng.randrange(len(self.pool) - n + 1)
        body = self.pool[offset:offset + n]
        sent_digest = hashlib.sha256(body).digest()
        head = REQUEST_HEAD % (n, b"echo" if echo else b"digest", m)
        sender = gevent.spawn(_send, sock, head, body, half_close)
        try:
            response_head = reader.head()
            lines = response_head.split(b"\r\n")
            try:
                code = int(lines[0].split(b" ", 2)[1])
                headers = dict(line.lower().split(b": ", 1) for line in lines[1:])
                length = int(headers.get(b"content-length", b"-1"))
            except (ValueError, IndexError):
                raise Mismatch("malformed response head") from None
            via = headers.get(b"x-via", b"").decode("latin-1") or None
            if code != 200:
                if via is not None:
                    raise Mismatch("backend %s answered %d: the request arrived damaged" % (via, code))
                raise Failure("gostgev answered %d" % code)
            if via is None or (via == "fwd") != (path == "forwarder"):
                raise Mismatch("response from backend %r on the %s path" % (via, path))
            if state["via"] not in (None, via):
                if path != "tunnel" or not self.killed_since(state["via"], state["since"]):
                    raise Mismatch("keep-alive connection moved from %s to %s" % (state["via"], via))
                stats.moves[path] += 1   # its client died between two requests: another one took over
            state["via"] = via
            state["since"] = started
            expected = n if echo else DIGEST + m + DIGEST
            if length != expected:
                raise Mismatch("content-length %d, expected %d" % (length, expected))
            data = reader.exact(length)
            if echo:
                if hashlib.sha256(data).digest() != sent_digest:
                    raise Mismatch("echoed body differs (SHA-256)")
            else:
                if data[:DIGEST] != sent_digest:
                    raise Mismatch("backend's SHA-256 of the request body differs")
                if hashlib.sha256(memoryview(data)[DIGEST:DIGEST + m]).digest() != data[DIGEST + m:]:
                    raise Mismatch("reply body differs from its SHA-256")
            sender.join(timeout=self.args.io_timeout)
            if not sender.ready():
                raise Failure("request still being sent after a complete response")
            if sender.value is not None:
                raise Failure(sender.value)
            if half_close:
                reader.expect_eof()
        except (Failure, OSError):
            if sender.ready() and sender.value is not None:
                # The sender's error is the cause; it woke the reader by shutting the socket down.
                raise Failure("sending: %s" % sender.value) from None
            raise
        finally:
            sender.kill(block=True, timeout=5)
        stats.requests[path] += 1
        stats.payload[path] += n + (n if echo else m)
        stats.wire_up[path] += len(head) + n
        stats.wire_down[path] += len(response_head) + 4 + length
        stats.via[via] += 1
        if half_close:
            stats.half_closed[path] += 1

    # -- phases -------------------------------------------------------------------------------

    def sample(self, phase, deadline):
        while time.monotonic() < deadline:
            now = time.monotonic()
            for name, pid in self.tracked().items():
                usage = proc_usage(pid)
                if usage:
                    self.series[name].append((phase, round(now - self.t0, 1), pid, *usage))
            gevent.sleep(min(self.args.sample_every, max(0.0, deadline - time.monotonic())))

    def tracked(self):
        pids = {"forwarder": self.forwarder.pid, "server": self.server.pid}
        pids.update(("client-%d" % slot, proc.pid) for slot, proc in sorted(self.clients.items()))
        pids["backend"] = self.procs.running["backend"].pid
        return pids

    def run_phase(self, phase, seconds):
        stats = self.stats[phase]
        self.deadline = deadline = time.monotonic() + seconds
        group = Group()
        for cid in range(self.args.clients):
            group.spawn(self.client_loop, cid, stats)
        watchers = Group()
        helpers = [gevent.spawn(self.chaos, deadline, watchers), gevent.spawn(self.sample, phase, deadline)]
        group.join(timeout=seconds + PHASE_OVERRUN)
        group.kill(block=True, timeout=10)
        gevent.joinall(helpers, timeout=10)
        watchers.join(timeout=RECONNECT_LIMIT * 1.5 + 5)
        gevent.killall(helpers, block=True, timeout=5)
        watchers.kill(block=True, timeout=5)
        self.settle(phase)

    def settle(self, phase):
        """Wait for every client to be registered and nothing to be in flight; sample the idle processes."""
        missing = self.wait_connected(RECONNECT_LIMIT)
        deadline = time.monotonic() + 20
        problems = ["clients %s not registered" % sorted(missing)] if missing else []
        while True:
            idle_problems = self.idle_problems()
            if not idle_problems or time.monotonic() >= deadline:
                break
            gevent.sleep(0.2)
        problems += idle_problems
        gevent.sleep(1.0)   # a socket already shut down when the checks passed may not be closed yet
        self.idle[phase] = {name: (pid, *(proc_usage(pid) or (0, 0))) for name, pid in self.tracked().items()}
        try:
            self.metrics[phase] = scrape(self.ports["fwd-metrics"])
        except (OSError, gevent.Timeout) as exc:
            problems.append("forwarder metrics: %s" % exc)
        self.idle_ok[phase] = problems

    def idle_problems(self):
        problems = ["%s exited with %s" % (name, proc.returncode) for name, proc in self.procs.running.items()
                    if proc.poll() is not None]
        try:
            busy = metric_sum(scrape(self.ports["fwd-metrics"]), "gost_service_requests_in_flight")
            if busy:
                problems.append("forwarder: %d requests in flight" % busy)
            for slot in self.clients:
                busy = metric_sum(scrape(self.client_metrics[slot]), "gost_service_requests_in_flight")
                if busy:
                    problems.append("client-%d: %d streams in flight" % (slot, busy))
            server = scrape(self.ports["server-metrics"])
            # On the tunnel port each registered connection is one request in flight, for its whole life.
            for name, what in (("gostgev_tunnel_connections", "tunnel connections gauge"),
                               ("gost_service_requests_in_flight", "requests in flight")):
                value = metric_sum(server, name, service="tunnel-server")
                if value != len(self.clients):
                    problems.append("server: %s %d, %d clients" % (what, value, len(self.clients)))
        except (OSError, gevent.Timeout) as exc:
            problems.append("metrics: %s" % _reason(exc))
        conns = self.api_connections()
        if conns is None:
            return problems + ["API did not answer"]
        live = set()
        for proc in self.clients.values():
            live |= tunnel_ports(proc.pid, self.ports["tunnel"])
        stale = conns.keys() - live
        if stale:
            problems.append("server keeps %d connections no client has" % len(stale))
        streams = sum(conns.values())
        if streams:
            problems.append("server: %d tunnel streams open" % streams)
        return problems

    # -- verdict ------------------------------------------------------------------------------

    def attribute(self):
        for stats in self.stats.values():
            for failure in stats.failures:
                slot = int(failure.via[1:]) if failure.via and failure.via.startswith("t") else None
                if failure.path != "tunnel":
                    failure.why = "forwarder path: no kill can explain it"
                    continue
                window = [k.time for k in self.kills if failure.conn_start - KILL_GRACE <= k.time <= failure.end
                          and (slot is None or k.slot == slot)]
                if not window:
                    failure.why = "no kill of %s while it was in flight" % (failure.via or "any client")
                elif failure.end - max(window) > SURFACE_LIMIT:
                    failure.why = "failed %.1fs after the kill" % (failure.end - max(window))
                else:
                    failure.expected = True
                    failure.why = "%.2fs after the kill" % (failure.end - max(window))
                    failure.after_kill = failure.end - max(window)


def _send(sock, head, body, half_close):
    """Send one request; None, or the reason it could not be sent."""
    try:
        sock.sendall(head)
        sock.sendall(body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        return None
    except OSError as exc:
        try:
            sock.shutdown(socket.SHUT_RDWR)   # wake the reader now rather than at its timeout
        except OSError:
            pass
        return _reason(exc)


# -- report ---------------------------------------------------------------------------------------

def _mib(kib):
    return "%.1f" % (kib / 1024)


def report(soak, elapsed):
    args = soak.args
    soak.attribute()
    main, warm = soak.stats["soak"], soak.stats["warm-up"]
    paths = ("forwarder", "tunnel")
    checks = []

    def check(ok, text):
        checks.append((bool(ok), text))

    def per_path(stats, fn):
        values = [fn(stats, p) for p in paths]
        return values + [sum(values)]

    def count_failures(stats, path, expected):
        return sum(1 for f in stats.failures if f.path == path and f.expected == expected)

    rows = [
        ("requests (complete, checked)", lambda s, p: s.requests[p], "%d"),
        ("connections", lambda s, p: s.connections[p], "%d"),
        ("connections with keep-alive (2-8 requests)", lambda s, p: s.keepalive[p], "%d"),
        ("connections half-closed after the last request", lambda s, p: s.half_closed[p], "%d"),
        ("payload MiB (both directions)", lambda s, p: s.payload[p] / MIB, "%.1f"),
        ("mismatches", lambda s, p: sum(1 for m in s.mismatches if m[0] == p), "%d"),
        ("moves to another tunnel client after a kill", lambda s, p: s.moves[p], "%d"),
        ("failures, expected (in flight at a kill)", lambda s, p: count_failures(s, p, True), "%d"),
        ("failures, unexpected", lambda s, p: count_failures(s, p, False), "%d"),
    ]
    load = ["| measured %gs | forwarder | tunnel | total |" % args.duration, "| --- | ---: | ---: | ---: |"]
    for label, fn, fmt in rows:
        load.append("| %s | %s |" % (label, " | ".join(fmt % v for v in per_path(main, fn))))
    total_requests = sum(main.requests.values())
    load.append("| requests/s | %s |" % " | ".join("%.0f" % (v / args.duration)
                                                  for v in per_path(main, lambda s, p: s.requests[p])))
    load.append("| payload MiB/s | %s |" % " | ".join("%.1f" % (v / MIB / args.duration)
                                                     for v in per_path(main, lambda s, p: s.payload[p])))
    via = ", ".join("%s %d" % (k, v) for k, v in sorted(main.via.items()))
    warm_summary = "%d requests, %d mismatches, %d expected and %d unexpected failures" % (
        sum(warm.requests.values()), len(warm.mismatches), sum(f.expected for f in warm.failures),
        sum(not f.expected for f in warm.failures))

    kills = soak.kills
    drops = [k.drop for k in kills if k.drop is not None]
    unlisted = [k.unlisted for k in kills if k.unlisted is not None]
    reconnects = [k.reconnect for k in kills if k.reconnect is not None]
    by_slot = collections.Counter("client-%d" % k.slot for k in kills)
    notes = collections.Counter(k.note for k in kills if k.note)
    kill_lines = [
        "kills: %d (%s), every %gs x0.5-1.5, warm-up included; client-0 is never killed%s"
        % (len(kills), ", ".join("%s %d" % kv for kv in sorted(by_slot.items())) or "none", args.kill_every,
           "".join("; %d %s" % (n, note) for note, n in sorted(notes.items()))),
        "server closed the dead connection after: max %s, median %s; web API stopped listing it after: "
        "max %s, median %s (%d of %d measured)" % (
            _secs(max(drops) if drops else None), _secs(_median(drops)),
            _secs(max(unlisted) if unlisted else None), _secs(_median(unlisted)), len(drops), len(kills)),
        "restarted client registered after: max %s, median %s (process start-up included)" % (
            _secs(max(reconnects) if reconnects else None), _secs(_median(reconnects))),
    ]
    surfaced = [f.after_kill for stats in soak.stats.values() for f in stats.failures if f.expected]
    if surfaced:
        kill_lines.append("expected failures surfaced after their kill: max %s, median %s" % (
            _secs(max(surfaced)), _secs(_median(surfaced))))

    all_mismatches = warm.mismatches + main.mismatches
    all_failures = warm.failures + main.failures
    unexpected = [f for f in all_failures if not f.expected]
    reasons = collections.Counter((f.reason, f.expected) for f in all_failures)
    reason_lines = []
    if reasons:
        reason_lines = ["| failure (warm-up and measured) | path | expected | count |", "| --- | --- | --- | ---: |"]
        by_path = collections.Counter((f.reason, f.path, f.expected) for f in all_failures)
        for (reason, path, expected), n in by_path.most_common():
            reason_lines.append("| %s | %s | %s | %d |" % (reason, path, "yes" if expected else "NO", n))
    for path, reason, via_label in all_mismatches[:20]:
        reason_lines.append("mismatch on the %s path (via %s): %s" % (path, via_label, reason))
    for f in unexpected[:20]:
        reason_lines.append("unexpected failure on the %s path (via %s, %.1fs into its connection): %s; %s" % (
            f.path, f.via, f.end - f.conn_start, f.reason, f.why))

    check(not all_mismatches, "mismatches: %d" % len(all_mismatches))
    check(not unexpected, "unexpected failures: %d" % len(unexpected))
    check(all(main.requests[p] for p in paths), "requests on both paths: %s"
          % ", ".join("%s %d" % (p, main.requests[p]) for p in paths))
    check(len(kills) > 0 or args.kill_every >= args.duration + args.warmup, "kills: %d" % len(kills))
    late_drops = [k for k in kills if not k.note.startswith("was not")
                  and (k.drop is None or k.drop > DROP_LIMIT or k.unlisted is None)]
    check(not late_drops, "server closed each killed client's connection within %gs and unlisted it (%d late or "
          "never)" % (DROP_LIMIT, len(late_drops)))
    late = [k for k in kills if not k.superseded and (k.reconnect is None or k.reconnect > RECONNECT_LIMIT)]
    check(not late, "each restarted client registered within %gs (%d late or never)" % (RECONNECT_LIMIT, len(late)))
    for phase in ("warm-up", "soak"):
        problems = soak.idle_ok.get(phase, ["not reached"])
        check(not problems, "idle after %s: all clients registered, no stale connection, nothing in flight%s"
              % ("the warm-up" if phase == "warm-up" else "the measured phase",
                 (": " + "; ".join(problems)) if problems else ""))

    first, last = soak.idle.get("warm-up", {}), soak.idle.get("soak", {})
    res = ["| process | fds idle: after warm-up -> end | fds under load: first -> last (peak) "
           "| RSS MiB idle: after warm-up -> end | RSS MiB under load: first -> last (peak) | verdict |",
           "| --- | --- | --- | --- | --- | --- |"]
    requests_k = max(1.0, total_requests / 1000)
    for name in first:
        if name not in last:
            continue
        pid0, fds0, rss0 = first[name]
        pid1, fds1, rss1 = last[name]
        if pid0 != pid1:
            verdict = "restarted, not judged"
        elif name == "backend":
            verdict = "the soak's own, not judged"
        else:
            fd_ok = fds1 - fds0 <= FD_SLACK
            rss_limit = max(RSS_SLACK_MIB * 1024, rss0 * RSS_SLACK_SHARE)
            rss_ok = rss1 - rss0 <= rss_limit
            verdict = "PASS" if fd_ok and rss_ok else "FAIL"
            check(fd_ok, "%s fds flat: %d -> %d (growth <= %d)" % (name, fds0, fds1, FD_SLACK))
            check(rss_ok, "%s RSS flat: %s -> %s MiB (growth <= %s MiB)" % (name, _mib(rss0), _mib(rss1),
                                                                           _mib(rss_limit)))
        loaded = [row for row in soak.series.get(name, []) if row[0] == "soak" and row[2] == pid1]
        if loaded:
            fds_load = "%d -> %d (%d)" % (loaded[0][3], loaded[-1][3], max(r[3] for r in loaded))
            rss_load = "%s -> %s (%s)" % (_mib(loaded[0][4]), _mib(loaded[-1][4]), _mib(max(r[4] for r in loaded)))
        else:
            fds_load = rss_load = "-"
        res.append("| %s | %d -> %d (%+d) | %s | %s -> %s (%+.1f, %+.0f KiB/1k requests) | %s | %s |" % (
            name, fds0, fds1, fds1 - fds0, fds_load, _mib(rss0), _mib(rss1), (rss1 - rss0) / 1024,
            (rss1 - rss0) / requests_k, rss_load, verdict))

    if "warm-up" in soak.metrics and "soak" in soak.metrics:
        def delta(name):
            return int(metric_sum(soak.metrics["soak"], name, service="forwarder")
                       - metric_sum(soak.metrics["warm-up"], name, service="forwarder"))

        counted = [delta("gost_service_requests_total"), delta("gost_service_handler_errors_total"),
                   delta("gost_service_transfer_input_bytes_total"), delta("gost_service_transfer_output_bytes_total")]
        ours = [main.connections["forwarder"], 0, main.wire_up["forwarder"], main.wire_down["forwarder"]]
        if any(f.path == "forwarder" for f in main.failures) or any(m[0] == "forwarder" for m in main.mismatches):
            check(True, "forwarder metrics: not comparable (the forwarder path had failures, counted above)")
        else:
            pairs = tuple(v for pair in zip(counted, ours, strict=True) for v in pair)
            check(counted == ours, "forwarder metrics match the clients' counts: connections %d/%d, handler errors "
                  "%d/%d, bytes in %d/%d, bytes out %d/%d" % pairs)

    header = ("%s, %s, %d cores, Python %s, seed %d: %d clients for %gs (after a %gs warm-up), payloads 1 B-%s "
              "log-uniform, %d tunnel clients; %.0fs wall clock." % (
                  datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), platform.machine(), os.cpu_count(),
                  platform.python_version(), args.seed, args.clients, args.duration, args.warmup,
                  "%d KiB" % (args.max_size // 1024) if args.max_size >= 1024 else "%d B" % args.max_size,
                  args.tunnel_clients, elapsed))
    command = "python3 scripts/soak.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    check_lines = ["%s  %s" % ("PASS" if ok else "FAIL", text) for ok, text in checks]
    sections = [header, "`%s`" % command, "\n".join(load),
                "tunnel requests by client: %s; warm-up: %s." % (via or "none", warm_summary),
                "\n".join(kill_lines), "\n".join(res)]
    if reason_lines:
        sections.append("\n".join(reason_lines))
    sections.append("```\n%s\n```" % "\n".join(check_lines))
    text = "\n\n".join(sections)
    print()
    print(text)
    ok = all(c[0] for c in checks)
    print("\nRESULT: %s" % ("PASS" if ok else "FAIL"))
    if args.write:
        with open(args.write, "a", encoding="utf-8") as fh:
            fh.write("\n### Soak (`scripts/soak.py`): %s\n\n%s\n" % ("PASS" if ok else "FAIL", text))
    return ok


def _median(values):
    return sorted(values)[len(values) // 2] if values else None


def _secs(value):
    if value is None:
        return "-"
    return "%.0f ms" % (value * 1000) if value < 1 else "%.1f s" % value


# -- main -----------------------------------------------------------------------------------------

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of measured load (default 60)")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds of load before the first idle sample (default: duration/5, 5-30)")
    parser.add_argument("--clients", type=int, default=200, help="concurrent load clients (default 200)")
    parser.add_argument("--kill-every", type=float, default=5.0, help="mean seconds between kills (default 5)")
    parser.add_argument("--tunnel-clients", type=int, default=3, help="tunnel client processes, >= 2 (default 3)")
    parser.add_argument("--max-size", type=int, default=MIB, help="largest payload in bytes (default 1 MiB)")
    parser.add_argument("--io-timeout", type=float, default=30.0, help="seconds any one socket wait may take")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between resource samples")
    parser.add_argument("--seed", type=int, default=None, help="random seed (default: random, printed)")
    parser.add_argument("--write", metavar="FILE", help="append the results to this Markdown file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (configs, logs)")
    parser.add_argument("--backend", metavar="LABELS", help=argparse.SUPPRESS)
    parser.add_argument("--lifetime", type=float, default=3600.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.seed is None:
        args.seed = random.SystemRandom().randrange(1 << 31)
    if args.warmup is None:
        args.warmup = min(30.0, max(5.0, args.duration / 5))
    if args.tunnel_clients < 2:
        parser.error("--tunnel-clients must be at least 2: client 0 is never killed")
    if not 1 <= args.max_size <= 16 * MIB or args.clients < 1 or args.duration <= 0 or args.kill_every <= 0:
        parser.error("sizes, counts and durations must be positive (--max-size at most 16 MiB)")
    return args


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None):
    args = parse_args(argv)
    if args.backend:
        backend_main(args.backend.split(","), args.seed, args.lifetime)
        return 0
    # Cleanup runs on SIGTERM as on Ctrl-C, and Ctrl-C works even where SIGINT was inherited ignored
    # (a background job of a non-interactive shell) while the gostgev children still obey it.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    hub = gevent.get_hub()
    hub.NOT_ERROR = hub.NOT_ERROR + (KeyboardInterrupt,)   # still reaches the main greenlet, without a traceback
    tmp = tempfile.mkdtemp(prefix="gostgev-soak-")
    procs = Processes(tmp)
    ok = False
    started = time.monotonic()
    try:
        soak = Soak(args, tmp, procs)
        print("soak: seed %d, %d clients, %gs warm-up + %gs, kill every ~%gs; files in %s"
              % (args.seed, args.clients, args.warmup, args.duration, args.kill_every, tmp), flush=True)
        soak.start()
        print("soak: processes up; warm-up", flush=True)
        soak.run_phase("warm-up", args.warmup)
        print("soak: warm-up done (%d requests); measuring for %gs"
              % (sum(soak.stats["warm-up"].requests.values()), args.duration), flush=True)
        soak.run_phase("soak", args.duration)
        procs.stop_all()
        with open(os.path.join(tmp, "samples.json"), "w") as fh:
            json.dump({"idle": soak.idle, "under load": soak.series}, fh)
        ok = report(soak, time.monotonic() - started)
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("\nsoak: interrupted; stopping processes", file=sys.stderr)
        ok = True   # nothing failed: no reason to keep the files
        return 130
    except RuntimeError as exc:
        print("soak: %s (logs in %s)" % (exc, tmp), file=sys.stderr)
        args.keep = True
        return 1
    finally:
        procs.stop_all()
        if ok and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.isdir(tmp):
            print("soak: configs and logs kept in %s" % tmp, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
