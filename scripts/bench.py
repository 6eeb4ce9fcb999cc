#!/usr/bin/env python3
"""Side-by-side loopback benchmark: nginx direct, HAProxy (TCP and HTTP), gostgev forwarder, gostgev tunnel.

    python3 scripts/bench.py [--quick] [--paths LIST] [--write BENCHMARKS.md] [--no-pin]

Needs Debian's nginx, haproxy and wrk, and taskset (util-linux):
    apt-get install -y nginx-light haproxy wrk
The script starts its own nginx (backends) and HAProxy (peers) on free
loopback ports with configs in a temporary directory; nothing system-wide is
touched, and nothing is written unless --write names a file.  gostgev runs
from this checkout (``python3 -m gostgev``).

Backends and routing
  One nginx serves two sites on two ports, a.local and b.local (files /a/...
  and /b/...).  Each site answers the other site's files with
  421 Misdirected Request, so a request routed to the wrong backend shows up
  as a failed response in wrk's count.  Every proxy that routes (haproxy-http
  and every gostgev path) has both sites, chosen by the request's Host.

Paths
  direct       wrk or the bulk reader -> nginx (site a)
  haproxy      -> haproxy (mode tcp, no routing) -> nginx (site a)
  haproxy-http -> haproxy (mode http: each request routed by hdr(host),
                  http-reuse always, keep-alive both sides) -> nginx a or b
  forwarder    -> gostgev tcp handler with sniffing, nodes by host -> nginx a or b
  fwd-2w       the same with --workers 2 (two processes sharing the port)
  tunnel       -> gostgev entrypoint -> tunnel server ══ tunnel client -> nginx a or b
                  (server and client are separate processes, as deployed;
                  ingress a.local and b.local -> one tunnel, the client's nodes by host)
  tunnel-2w    the same, the server with --workers 2: one worker holds the
               tunnel connection, the other hands its visitors over
  tunnel-tls   the same, with the tunnel connection over TLS (self-signed, unverified)
  --quick measures direct, haproxy, haproxy-http, forwarder and tunnel
  unless --paths names others; both HAProxy paths are always measured (they
  are the bases of the ratios).

Core pinning (a 2-core machine; --no-pin turns it off)
  core 0: the proxy under test: both HAProxy processes (nbthread 1) and every
          gostgev process (for tunnels, server and client; --workers 2 puts
          both workers on core 0 too)
  core 1: nginx (one worker), wrk and this script's own clients (bulk reader,
          latency client, idle connections)
  The affinity of every started process is read back from /proc and printed.

Figures, per path
  bulk MB/s         the better of two downloads of 256 MiB (64 with --quick),
                    read in 1 MiB pieces (size checked), after one to warm the
                    page cache
  keep-alive r/s    wrk -t2, 32 connections, 1 KiB file, Host a.local
  alternating r/s   the same, the Host switching between a.local and b.local
                    on every request of every connection (a wrk Lua script,
                    written to the temporary directory).  Routing paths only.
                    A response from the wrong site (421) counts as wrong.
  new-conn r/s      wrk, 32 connections, "Connection: close"
  routing           20 requests on one keep-alive connection, hosts
                    alternating, each checked for the backend that answered
  p50/p99 ms        latency of a 1 KiB request at a fixed rate (--rate r/s
                    over 16 keep-alive connections), measured by a gevent client
  KiB/conn          RSS growth of the proxy process(es) with 2,000 and with
                    10,000 idle keep-alive connections open through them (fewer
                    if a process's descriptor limit cannot hold 10,000: the
                    column heading gives the count)

Report
  One table of bulk, latency and memory; one table per request rate
  (keep-alive, alternating hosts, new connections) with its ratios to
  HAProxy mode tcp and to HAProxy mode http, the fair peer for per-request
  routing; and the issue's targets, met or missed, against HAProxy mode http.
  Ratios are against HAProxy measured in the same run: the machines are noisy.
  A figure that fails (a process that does not start or exits, a timeout, a
  wrong response) is reported as failed or wrong in its cell; the run goes on.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SITES = ("a", "b")
HOSTS = {site: "%s.local" % site for site in SITES}
TUNNEL_ID = "0b5b7e0e-4c59-4f43-9d3f-6a0c5e2d7b11"
PROXY_CORE, CLIENT_CORE = 0, 1
CONNECTIONS = 32

ALL_PATHS = ["direct", "haproxy", "haproxy-http", "forwarder", "fwd-2w", "tunnel", "tunnel-2w", "tunnel-tls",
             "cluster-local", "cluster-remote"]
QUICK_PATHS = ["direct", "haproxy", "haproxy-http", "forwarder", "tunnel"]
BASES = ("haproxy", "haproxy-http")
ROUTING_PATHS = {"haproxy-http", "forwarder", "fwd-2w", "tunnel", "tunnel-2w", "tunnel-tls", "cluster-local",
                 "cluster-remote"}

NGINX_SITE = """
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {dir}/www;
        add_header X-Backend {site} always;
        add_header X-Host $host always;
        location /{other}/ {{ return 421; }}
    }}"""

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/nginx-error.log warn;
worker_rlimit_nofile 65536;
events {{ worker_connections 24000; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 300s;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
{sites}
}}
"""

HAPROXY_TCP_CONF = """
global
    maxconn {maxconn}
    nbthread 1
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server nginx-a 127.0.0.1:{backend_a}
"""

HAPROXY_HTTP_CONF = """
global
    maxconn {maxconn}
    nbthread 1
defaults
    mode http
    option http-keep-alive
    http-reuse always
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-request 10s
    timeout http-keep-alive 300s
frontend fe
    bind 127.0.0.1:{port}
    use_backend site-a if {{ hdr(host) -i a.local }}
    use_backend site-b if {{ hdr(host) -i b.local }}
backend site-a
    server nginx-a 127.0.0.1:{backend_a}
backend site-b
    server nginx-b 127.0.0.1:{backend_b}
"""

# The Host alternates on every request of each connection.  wrk's request()
# is not told which connection it builds for, but wrk calls it for a
# connection in the order in which response() saw that connection's previous
# responses complete; so response() queues the host each response was for
# (the backend echoes it in X-Host, whichever site answered) and request()
# asks for the other host.  The first request of each connection alternates
# by a counter.  HAProxy in HTTP mode passes header names in lower case.
ALTERNATE_LUA = """
local other, first = {}, {}
local queue, head, tail, n = {}, 1, 0, 0
function init(args)
    first[0] = wrk.format("GET", "/a/1k", {["Host"] = "a.local"})
    first[1] = wrk.format("GET", "/b/1k", {["Host"] = "b.local"})
    other["a.local"] = first[1]
    other["b.local"] = first[0]
end
function response(status, headers, body)
    tail = tail + 1
    queue[tail] = headers["X-Host"] or headers["x-host"] or ""
end
function request()
    if head <= tail then
        local last = queue[head]
        queue[head] = nil
        head = head + 1
        if other[last] then
            return other[last]
        end
    end
    n = n + 1
    return first[n % 2]
end
"""


class Failed(Exception):
    """A figure that could not be measured; the message goes into the report."""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def head_request(site, close=False, path="1k"):
    return b"GET /%s/%s HTTP/1.1\r\nHost: %s\r\n%s\r\n" % (
        site.encode(), path.encode(), HOSTS[site].encode(), b"Connection: close\r\n" if close else b"")


def wait_http(port, procs, site="a", timeout=15.0):
    """Wait until a request for ``site`` gets a 200 (tunnels connect asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise Failed("exited at start (status %s)" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(head_request(site, close=True))
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise Failed("never answered 200")


def _with_children(pids):
    """The processes and their children (``--workers`` and nginx fork them)."""
    found = []
    for pid in pids:
        found.append(pid)
        try:
            with open("/proc/%d/task/%d/children" % (pid, pid)) as fh:
                found.extend(_with_children([int(p) for p in fh.read().split()]))
        except OSError:
            pass
    return found


def _status_field(pid, field):
    with open("/proc/%d/status" % pid) as fh:
        return next(line.split(":", 1)[1].strip() for line in fh if line.startswith(field + ":"))


def rss_kib(pids):
    total = 0
    for pid in _with_children(pids):
        total += int(_status_field(pid, "VmRSS").split()[0])
    return total


def affinity(pids):
    """Cpus_allowed_list of every thread of the processes and their children, as a set of strings."""
    found = set()
    for pid in _with_children(pids):
        try:
            for tid in os.listdir("/proc/%d/task" % pid):
                found.add(_status_field(int(tid), "Cpus_allowed_list"))
        except OSError:
            pass
    return found


def bulk(port, size):
    """MB/s of one download of ``size`` bytes, read in 1 MiB pieces.

    curl reads 16 KiB at a time and tops out below what the proxies move;
    a reader with a large buffer measures the path instead of itself.
    """
    buf = memoryview(bytearray(1 << 20))
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(head_request("a", close=True, path="big"))
        head = b""
        while b"\r\n\r\n" not in head:
            n = sock.recv_into(buf)
            if not n:
                raise Failed("no response head")
            head += bytes(buf[:n])
        if not head.startswith(b"HTTP/1.1 200"):
            raise Failed("status %s" % head.split(b"\r\n", 1)[0].decode("latin-1"))
        got = len(head) - head.index(b"\r\n\r\n") - 4
        while True:
            n = sock.recv_into(buf)
            if not n:
                break
            got += n
        seconds = time.monotonic() - started
    if got != size:
        raise Failed("got %d bytes of %d" % (got, size))
    return size / seconds / 1e6


def _cpu_ticks(pids):
    """user and system clock ticks the processes have used so far."""
    user = system = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user, system


def costed(pids, run):
    """``run()``'s wrk figures, with what each request cost the processes under test: CPU
    microseconds (user, system) and, where ``perf`` can count tracepoints, system calls."""
    pids = _with_children(pids)
    perf = None
    if pids and shutil.which("perf"):
        perf = subprocess.Popen(["perf", "stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p",
                                 ",".join(map(str, pids))], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        time.sleep(0.2)   # attached before the load starts
    before = _cpu_ticks(pids)
    try:
        result = run()
    finally:
        after = _cpu_ticks(pids)
        calls = None
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            try:
                _, err = perf.communicate(timeout=10)
                match = re.search(r"^(\d+),.*raw_syscalls:sys_enter", err, re.MULTILINE)
                calls = int(match.group(1)) if match else None
            except subprocess.TimeoutExpired:
                perf.kill()
    if pids:
        tick = 1e6 / os.sysconf("SC_CLK_TCK")
        result["user_us"] = (after[0] - before[0]) * tick / result["requests"]
        result["sys_us"] = (after[1] - before[1]) * tick / result["requests"]
        result["syscalls"] = calls / result["requests"] if calls is not None else None
    return result


def wrk(pin, port, seconds, close=False, script=None):
    """wrk's figures: {"rate", "requests", "bad" (non-2xx responses), "errors" (socket errors by kind)}."""
    if script:
        cmd = pin + ["wrk", "-t2", "-c%d" % CONNECTIONS, "-d%ds" % seconds, "-s", script,
                     "http://127.0.0.1:%d/" % port]
    else:
        cmd = pin + ["wrk", "-t2", "-c%d" % CONNECTIONS, "-d%ds" % seconds, "-H", "Host: " + HOSTS["a"]]
        if close:
            cmd += ["-H", "Connection: close"]
        cmd.append("http://127.0.0.1:%d/a/1k" % port)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60).stdout
    except subprocess.TimeoutExpired:
        raise Failed("wrk did not finish") from None
    rate = re.search(r"Requests/sec:\s+([\d.]+)", out)
    requests = re.search(r"(\d+) requests in", out)
    if not rate or not requests:
        raise Failed("no figures from wrk")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    kinds = ("connect", "read", "write", "timeout")
    result = {"rate": float(rate.group(1)), "requests": int(requests.group(1)),
              "bad": int(bad.group(1)) if bad else 0,
              "errors": {k: int(v) for k, v in zip(kinds, errors.groups(), strict=True) if int(v)} if errors else {}}
    if not result["requests"]:
        raise Failed("no request completed")
    return result


def _read_response(sock, pending):
    """One response from a keep-alive connection: (status, X-Backend value, leftover bytes)."""
    data = pending
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise Failed("connection closed")
        data += chunk
    head, _, data = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        fields[name.strip().lower()] = value.strip()
    length = int(fields.get(b"content-length", b"0"))
    while len(data) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise Failed("connection closed in a body")
        data += chunk
    return status, fields.get(b"x-backend", b"").decode("latin-1"), data[length:]


def routing_check(port, count=20):
    """Hosts a.local and b.local alternating on one keep-alive connection: how many reached the wrong site."""
    wrong = 0
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        pending = b""
        for i in range(count):
            site = SITES[i % 2]
            sock.sendall(head_request(site))
            try:
                status, backend, pending = _read_response(sock, pending)
            except (Failed, OSError, ValueError, IndexError) as exc:
                raise Failed("request %d of %d: %s" % (i + 1, count, exc)) from None
            if status != 200 or backend != site:
                wrong += 1
    return {"wrong": wrong, "count": count}


LATENCY_CLIENT = r"""
import sys, time, gevent
from gevent import socket
port, host, path = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3].encode()
rate, seconds = float(sys.argv[4]), float(sys.argv[5])
conns = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(16)]
request = b"GET " + path + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
samples, failures = [], 0

def one(sock):
    global failures
    started = time.perf_counter()
    try:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < 1024:
            chunk = sock.recv(65536)
            if not chunk:
                raise OSError("closed")
            data += chunk
        samples.append(time.perf_counter() - started)
    except OSError:
        failures += 1

busy = [None] * len(conns)
interval, start = 1.0 / rate, time.perf_counter()
for i in range(int(rate * seconds)):
    gevent.sleep(max(0.0, start + i * interval - time.perf_counter()))
    k = i % len(conns)
    if busy[k] is not None:
        busy[k].join()
    busy[k] = gevent.spawn(one, conns[k])
gevent.joinall([g for g in busy if g is not None], timeout=10)
samples.sort()
print(samples[len(samples) // 2] * 1000, samples[int(len(samples) * 0.99)] * 1000, failures)
"""


def latency(port, rate, seconds):
    try:
        done = subprocess.run([sys.executable, "-c", LATENCY_CLIENT, str(port), HOSTS["a"], "/a/1k", str(rate),
                               str(seconds)], capture_output=True, text=True, timeout=seconds + 30)
    except subprocess.TimeoutExpired:
        raise Failed("latency client did not finish") from None
    out = done.stdout.split()
    if done.returncode or len(out) != 3:
        raise Failed("latency client failed")
    p50, p99, failures = float(out[0]), float(out[1]), int(out[2])
    if failures:
        raise Failed("%d requests failed" % failures)
    return p50, p99


def raise_fd_limit():
    """10,000 proxied connections need about 40,000 descriptors across the processes."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 65536), max(hard, 65536)))
    except (ValueError, OSError):
        pass   # not root, or a hard limit: the big figure shrinks to fit
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def big_idle_count(fd_limit):
    """10,000, or as close as each process's descriptor limit allows.

    Every process has its own limit; the tightest is a single-process proxy,
    which holds two descriptors per connection (client and backend sides).
    """
    return min(10000, (fd_limit - 1000) // 2 // 500 * 500)


def idle_cost(port, pids, count, timeout=30.0):
    socks = []
    deadline = time.monotonic() + timeout
    before = rss_kib(pids)
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port), timeout=10)
            sock.sendall(head_request("a"))
            socks.append(sock)
        for sock in socks:
            data = b""
            while len(data) < 1024:   # response head + 1 KiB body, then the connection idles
                sock.settimeout(max(0.1, deadline - time.monotonic()))
                chunk = sock.recv(65536)
                if not chunk:
                    raise Failed("an idle connection was closed early")
                data += chunk
        time.sleep(1.0)
        return (rss_kib(pids) - before) / count
    except OSError as exc:
        raise Failed("idle connections: %s" % exc) from None
    finally:
        for sock in socks:
            sock.close()


class Procs:
    def __init__(self, logdir):
        self.procs = []
        self.logdir = logdir

    def start(self, name, cmd, **kwargs):
        log = open(os.path.join(self.logdir, "%s-%d.log" % (name, len(self.procs))), "wb")
        with log:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log, cwd=ROOT, **kwargs)
        proc.log = log.name
        self.procs.append(proc)
        return proc

    def stop(self, procs=None):
        procs = self.procs if procs is None else procs
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def log_tail(proc, lines=5):
    try:
        with open(proc.log, "rb") as fh:
            return fh.read().decode("utf-8", "replace").strip().splitlines()[-lines:]
    except OSError:
        return []


def gostgev(*args):
    return [sys.executable, "-m", "gostgev", "--log-level", "error", *args]


def routed_nodes(backends):
    return [{"name": "site-%s" % site, "addr": backends[site], "host": HOSTS[site]} for site in SITES]


def forwarder_config(port, backends):
    return {"services": [{"name": "forwarder", "addr": "127.0.0.1:%d" % port,
                          "handler": {"type": "tcp", "metadata": {"sniffing": True}},
                          "listener": {"type": "tcp"},
                          "forwarder": {"nodes": routed_nodes(backends)}}]}


def tunnel_client_config(tunnel_port, tunnel_id, backends, tls=False):
    return {"services": [{"name": "tunnel-client", "addr": ":0",
                          "handler": {"type": "rtcp", "metadata": {"sniffing": True}},
                          "listener": {"type": "rtcp", "chain": "chain-0"},
                          "forwarder": {"nodes": routed_nodes(backends)}}],
            "chains": [{"name": "chain-0", "hops": [{"name": "hop-0", "nodes": [{
                "name": "node-0", "addr": "127.0.0.1:%d" % tunnel_port,
                "connector": {"type": "tunnel", "metadata": {"tunnel.id": tunnel_id}},
                "dialer": {"type": "tls" if tls else "tcp"}}]}]}]}


class Bench:
    def __init__(self, tmp, fd_limit, pin):
        self.tmp = tmp
        self.fd_limit = fd_limit
        self.procs = Procs(tmp)
        self.proxy_pin = ["taskset", "-c", str(PROXY_CORE)] if pin else []
        self.client_pin = ["taskset", "-c", str(CLIENT_CORE)] if pin else []
        self.backend_ports = {site: free_port() for site in SITES}
        self.backends = {site: "127.0.0.1:%d" % port for site, port in self.backend_ports.items()}

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as fh:
            fh.write(text)
        return path

    def start_nginx(self):
        sites = "".join(NGINX_SITE.format(dir=self.tmp, port=self.backend_ports[site], site=site,
                                          other=next(s for s in SITES if s != site)) for site in SITES)
        conf = self.write("nginx.conf", NGINX_CONF.format(dir=self.tmp, sites=sites))
        return self.procs.start("nginx", self.client_pin + [shutil.which("nginx") or "/usr/sbin/nginx",
                                                            "-c", conf, "-p", self.tmp])

    def haproxy(self, name, template, port):
        # HAProxy refuses to start if maxconn does not fit in the descriptor limit.
        conf = self.write(name + ".cfg", template.format(
            port=port, backend_a=self.backend_ports["a"], backend_b=self.backend_ports["b"],
            maxconn=max(1000, min(24000, self.fd_limit // 2 - 250))))
        return [self.procs.start(name, self.proxy_pin + [shutil.which("haproxy") or "/usr/sbin/haproxy",
                                                          "-f", conf])]

    def gostgev(self, name, *args):
        return self.procs.start(name, self.proxy_pin + gostgev(*args))

    def gostgev_config(self, name, config, *args):
        return self.gostgev(name, "-c", self.write(name + ".json", json.dumps(config, indent=1)), *args)

    def tunnel(self, name, tunnel_id, workers=1, tls=False):
        tunnel_port, entrypoint = free_port(), free_port()
        rules = ",".join("%s:%s" % (HOSTS[site], tunnel_id) for site in SITES)
        scheme = "tunnel+tls" if tls else "tunnel"
        server = self.gostgev(name + "-server", *(["--workers", str(workers)] if workers > 1 else []), "-L",
                              "%s://127.0.0.1:%d?entrypoint=127.0.0.1:%d&tunnel=%s"
                              % (scheme, tunnel_port, entrypoint, rules))
        client = self.gostgev_config(name + "-client",
                                     tunnel_client_config(tunnel_port, tunnel_id, self.backends, tls=tls))
        return entrypoint, [server, client]

    def cluster(self, name, remote):
        """Two tunnel-server nodes sharing a Redis, the client bound to node B; the entrypoint of
        B (the local path) or of A (every request crosses to B on a pooled connection).  Both
        nodes and the client run on the proxy core either way, Redis on the client core."""
        redis_port = free_port()
        # Measured processes are the gostgev ones; Redis is only asked once a second at most.
        redis = self.procs.start(name + "-redis", self.client_pin + [
            shutil.which("redis-server") or "/usr/bin/redis-server", "--port", str(redis_port),
            "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        tunnel_id = TUNNEL_ID[:-1] + ("5" if remote else "4")
        rules = [{"hostname": HOSTS[site], "endpoint": tunnel_id} for site in SITES]
        ports = {}
        procs = []
        for node in ("a", "b"):
            ports[node] = tunnel_port, entrypoint = free_port(), free_port()
            procs.append(self.gostgev_config("%s-%s" % (name, node), {
                "sds": [{"name": "sd", "redis": {"addr": "127.0.0.1:%d" % redis_port, "key": name}}],
                "ingresses": [{"name": "rules", "rules": rules}],
                "services": [{"name": "node-" + node, "addr": "127.0.0.1:%d" % tunnel_port,
                              "handler": {"type": "tunnel", "metadata": {
                                  "entrypoint": "127.0.0.1:%d" % entrypoint, "ingress": "rules",
                                  "sd": "sd", "sd.node": node}}}]}))
        procs.append(self.gostgev_config(name + "-client",
                                         tunnel_client_config(ports["b"][0], tunnel_id, self.backends)))
        if redis.poll() is not None:
            raise OSError(0, "redis-server exited")
        return ports["a" if remote else "b"][1], procs

    def start(self, name):
        """Start a path's processes: (port the clients use, the processes to measure)."""
        if name == "direct":
            return self.backend_ports["a"], []
        if name == "haproxy":
            port = free_port()
            return port, self.haproxy(name, HAPROXY_TCP_CONF, port)
        if name == "haproxy-http":
            port = free_port()
            return port, self.haproxy(name, HAPROXY_HTTP_CONF, port)
        if name in ("forwarder", "fwd-2w"):
            port = free_port()
            workers = ["--workers", "2"] if name == "fwd-2w" else []
            return port, [self.gostgev_config(name, forwarder_config(port, self.backends), *workers)]
        if name == "tunnel":
            return self.tunnel(name, TUNNEL_ID)
        if name == "tunnel-2w":
            return self.tunnel(name, TUNNEL_ID[:-1] + "3", workers=2)
        if name == "tunnel-tls":
            return self.tunnel(name, TUNNEL_ID[:-1] + "2", tls=True)
        if name in ("cluster-local", "cluster-remote"):
            return self.cluster(name, name == "cluster-remote")
        raise ValueError(name)


def check_taskset():
    """Does ``taskset -c N`` really pin?  Reads the affinity back from a pinned child."""
    if not shutil.which("taskset"):
        return "taskset not found (util-linux)"
    allowed = os.sched_getaffinity(0)
    if not {PROXY_CORE, CLIENT_CORE} <= allowed:
        return "cores %d and %d are not both available (allowed: %s)" % (PROXY_CORE, CLIENT_CORE, sorted(allowed))
    for core in (PROXY_CORE, CLIENT_CORE):
        out = subprocess.run(["taskset", "-c", str(core), "cat", "/proc/self/status"], capture_output=True,
                             text=True).stdout
        got = re.search(r"Cpus_allowed_list:\s*(\S+)", out)
        if not got or got.group(1) != str(core):
            return "taskset -c %d gave %s" % (core, got.group(1) if got else "nothing")
    return None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, short runs and the main paths "
                        "(under a minute)")
    parser.add_argument("--write", metavar="FILE", help="append the results to this Markdown file "
                        "(default: print only)")
    parser.add_argument("--paths", metavar="LIST", help="comma-separated paths to measure, of %s (both haproxy "
                        "paths are always included, as the bases of the ratios); default: all, or with --quick %s"
                        % (",".join(ALL_PATHS), ",".join(QUICK_PATHS)))
    parser.add_argument("--no-pin", action="store_true", help="do not pin processes to cores")
    args = parser.parse_args()
    if args.paths:
        wanted = set(args.paths.split(",")) | set(BASES)
        unknown = wanted - set(ALL_PATHS)
        if unknown:
            parser.error("unknown path(s): %s (known: %s)" % (", ".join(sorted(unknown)), ", ".join(ALL_PATHS)))
    else:
        wanted = set(QUICK_PATHS if args.quick else ALL_PATHS)
    names = [name for name in ALL_PATHS if name in wanted]
    for tool in ("nginx", "haproxy", "wrk"):
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
            sys.exit("%s not found: apt-get install -y nginx-light haproxy wrk" % tool)
    pin = not args.no_pin
    if pin:
        problem = check_taskset()
        if problem:
            sys.exit("cannot pin: %s; run with --no-pin" % problem)
        os.sched_setaffinity(0, {CLIENT_CORE})   # this script's clients share core 1 with nginx and wrk
    bulk_mib, seconds, idle = (64, 2, 500) if args.quick else (256, 10, 2000)
    fd_limit = raise_fd_limit()
    big_idle = None if args.quick else big_idle_count(fd_limit)
    rate = 1000
    size = bulk_mib << 20
    rows = []
    layout = []
    with tempfile.TemporaryDirectory(prefix="gostgev-bench-") as tmp:
        os.chmod(tmp, 0o755)   # nginx workers drop root and must read the files
        for site in SITES:
            os.makedirs(os.path.join(tmp, "www", site))
            with open(os.path.join(tmp, "www", site, "1k"), "wb") as fh:
                fh.write(os.urandom(1024))
        with open(os.path.join(tmp, "www", "a", "big"), "wb") as fh:
            fh.truncate(size)
        lua = os.path.join(tmp, "alternate.lua")
        with open(lua, "w") as fh:
            fh.write(ALTERNATE_LUA)
        bench = Bench(tmp, fd_limit, pin)
        try:
            nginx = bench.start_nginx()
            started = {}
            for name in names:
                try:
                    started[name] = bench.start(name)
                except OSError as exc:
                    started[name] = Failed("could not start: %s" % exc.strerror)
            try:
                wait_http(bench.backend_ports["a"], [nginx])
                wait_http(bench.backend_ports["b"], [nginx], site="b")
            except Failed as exc:
                sys.exit("nginx backend: %s" % exc)
            layout.append(("nginx", [nginx.pid]))
            for name in names:
                if isinstance(started[name], Failed):
                    continue
                port, procs = started[name]
                try:
                    wait_http(port, procs)
                except Failed as exc:
                    started[name] = exc
                    for proc in procs:
                        for line in log_tail(proc):
                            print("  %s: %s" % (name, line), file=sys.stderr)
                    continue
                if procs:
                    layout.append((name, [p.pid for p in procs]))
            layout = [(name, len(_with_children(pids)), affinity(pids)) for name, pids in layout]
            layout.append(("bench clients", 1, {_status_field(os.getpid(), "Cpus_allowed_list")}))
            bulk(bench.backend_ports["a"], size)   # the first read of the file fills the page cache
            for name in names:
                row = measure(name, started[name], bench, args, size, seconds, rate, idle, big_idle, lua)
                rows.append(row)
                print("measured %-12s %s" % (name, {k: v for k, v in row.items() if k != "path"}), flush=True)
        finally:
            bench.procs.stop()
    report(rows, layout, pin, args, bulk_mib, seconds, idle, big_idle, rate)


def measure(name, started, bench, args, size, seconds, rate, idle, big_idle, lua):
    """Every figure of one path; a figure that fails is kept as its Failed exception."""
    row = {"path": name}
    keys = ["bulk", "keepalive", "alternating", "newconn", "routing", "latency", "idle", "idle_big"]
    routes = name in ROUTING_PATHS
    if isinstance(started, Failed):
        skip = {"alternating", "routing"} if not routes else set()
        skip |= {"idle_big"} if not big_idle else set()
        row.update({key: None if key in skip else started for key in keys})
        return row
    port, procs = started
    pids = [p.pid for p in procs]
    figures = {
        "bulk": lambda: max(bulk(port, size) for _ in range(2)),
        "keepalive": lambda: costed(pids, lambda: wrk(bench.client_pin, port, seconds)),
        "alternating": (lambda: wrk(bench.client_pin, port, seconds, script=lua)) if routes else None,
        "newconn": lambda: costed(pids, lambda: wrk(bench.client_pin, port, seconds, close=True)),
        "routing": (lambda: routing_check(port)) if routes else None,
        "latency": lambda: latency(port, rate, 1 if args.quick else 5),
        "idle": (lambda: idle_cost(port, pids, idle)) if pids else None,
        "idle_big": (lambda: idle_cost(port, pids, big_idle)) if pids and big_idle else None,
    }
    for key in keys:
        if figures[key] is None:
            row[key] = None
            continue
        dead = [p for p in procs if p.poll() is not None]
        if dead:
            row[key] = Failed("process exited (status %s)" % dead[0].returncode)
            continue
        try:
            row[key] = figures[key]()
        except Failed as exc:
            row[key] = exc
        except Exception as exc:   # whatever breaks, the other figures and paths still run
            row[key] = Failed("%s: %s" % (type(exc).__name__, exc))
        dead = [p for p in procs if p.poll() is not None]
        if dead and not isinstance(row[key], Failed):
            row[key] = Failed("process exited (status %s)" % dead[0].returncode)
    for proc in procs:
        if proc.poll() is not None:
            for line in log_tail(proc):
                print("  %s: %s" % (name, line), file=sys.stderr)
    return row


# --- report ---------------------------------------------------------------

def _ok(value):
    return value is not None and not isinstance(value, Failed)


def _rate(value):
    """A wrk figure's rate if every response was a 2xx, else None."""
    return value["rate"] if _ok(value) and not value["bad"] else None


def _rate_cell(value):
    """The rate, and what went wrong: responses other than 2xx, and socket errors (wrk counts a
    connection closed where the response promised keep-alive as a read error)."""
    if value is None:
        return "–"
    if isinstance(value, Failed):
        return "failed"
    notes = ["%d%% wrong" % max(1, round(100.0 * value["bad"] / value["requests"]))] if value["bad"] else []
    notes += ["%d %s errors" % (n, kind) for kind, n in sorted(value["errors"].items())]
    return "%.0f (%s)" % (value["rate"], ", ".join(notes)) if notes else "%.0f" % value["rate"]


def _ratio(a, b):
    return "%.2f" % (a / b) if a is not None and b else "–"


def _plain(value, fmt):
    if value is None:
        return "–"
    if isinstance(value, Failed):
        return "failed"
    return fmt % value


def _cost_cell(value):
    if not _ok(value) or value.get("user_us") is None:
        return "–"
    return "%.0f (%.0f+%.0f)" % (value["user_us"] + value["sys_us"], value["user_us"], value["sys_us"])


def _routing_cell(value):
    if value is None:
        return "–"
    if isinstance(value, Failed):
        return "failed"
    return "ok" if not value["wrong"] else "%d of %d wrong" % (value["wrong"], value["count"])


def report(rows, layout, pin, args, bulk_mib, seconds, idle, big_idle, rate):
    by_name = {r["path"]: r for r in rows}
    tcp, http = by_name.get("haproxy", {}), by_name.get("haproxy-http", {})
    out = []
    placed = []
    for name, count, cpus in layout:
        want = str(CLIENT_CORE if name in ("nginx", "bench clients") else PROXY_CORE)
        wrong = "" if cpus == {want} else " (NOT core %s)" % want
        placed.append("%s%s on %s%s" % (name, " (%d processes)" % count if count > 1 else "",
                                        "/".join(sorted(cpus)) or "?", wrong))
    cores = ", ".join(placed)
    pinning = ("pinned (taskset; affinity read back from /proc): %s" % cores if pin
               else "not pinned (--no-pin)")
    header = ("%s, %s, %d cores, Python %s%s: %d MiB download (1 MiB reads), wrk -t2 -c%d -d%ds on a "
              "1 KiB file, latency at %d r/s, idle keep-alive connections; tunnel figures count server and "
              "client processes. Cores: %s."
              % (datetime.date.today().isoformat(), platform.machine(), os.cpu_count(), platform.python_version(),
                 " (--quick)" if args.quick else "", bulk_mib, CONNECTIONS, seconds, rate, pinning))
    out.append(header)

    lines = ["| path | bulk MB/s | × HAProxy tcp | p50 ms | p99 ms | KiB/idle conn @%d | @%s | notes |"
             % (idle, big_idle or "–"),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        notes = sorted({str(v) for v in r.values() if isinstance(v, Failed)})
        lat = r["latency"]
        lines.append("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
            r["path"], _plain(r["bulk"], "%.0f"),
            _ratio(r["bulk"] if _ok(r["bulk"]) else None, tcp.get("bulk") if _ok(tcp.get("bulk")) else None),
            _plain(lat[0] if _ok(lat) else lat, "%.2f"), _plain(lat[1] if _ok(lat) else lat, "%.2f"),
            _plain(r["idle"], "%.1f"), _plain(r["idle_big"], "%.1f"), "; ".join(notes)))
    out += ["", "Bulk, latency, memory", "", "\n".join(lines)]

    def rate_table(title, key, bases=((" tcp", tcp), (" http", http)), extra=()):
        """One request-rate figure per path with its ratios; ``extra``: (heading, align, cell function)."""
        lines = ["| path | %s r/s |" % title + "".join(" × HAProxy%s |" % b[0] for b in bases)
                 + "".join(" %s |" % e[0] for e in extra),
                 "| --- | ---: |" + " ---: |" * len(bases) + "".join(" %s |" % e[1] for e in extra)]
        for r in rows:
            if r[key] is None:
                continue
            mine = _rate(r[key])
            cells = [r["path"], _rate_cell(r[key])] + [_ratio(mine, _rate(b[1].get(key))) for b in bases]
            cells += [e[2](r) for e in extra]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def cost_columns(key):
        return [("CPU µs/req (user+sys)", "---:", lambda r: _cost_cell(r[key])),
                ("syscalls/req", "---:", lambda r: _plain(r[key].get("syscalls") if _ok(r[key]) else r[key], "%.1f"))]

    out += ["", "Keep-alive request rate (Host a.local); CPU and system calls of the processes under test", "",
            rate_table("keep-alive", "keepalive", extra=cost_columns("keepalive"))]
    out += ["", "Keep-alive request rate, hosts alternating a.local / b.local on each connection", "",
            rate_table("alternating", "alternating", bases=((" http", http),), extra=[
                ("× own keep-alive", "---:", lambda r: _ratio(_rate(r["alternating"]), _rate(r["keepalive"]))),
                ("routing check", "---", lambda r: _routing_cell(r["routing"]))])]
    out += ["", "New-connection request rate (Connection: close); CPU and system calls of the processes "
            "under test", "", rate_table("new-conn", "newconn", extra=cost_columns("newconn"))]
    out += ["", "Targets (per core, against HAProxy mode tcp in the same run)", "",
            "\n".join(targets(by_name, tcp, idle, big_idle))]
    text = "\n".join(out)
    print()
    print(text)
    if args.write:
        with open(args.write, "a", encoding="utf-8") as fh:
            fh.write("\n### Paths side by side (`scripts/bench.py%s`)\n\n%s\n"
                     % (" --quick" if args.quick else "", text))


def targets(by_name, tcp, idle, big_idle):
    """The per-core targets, against HAProxy ``mode tcp`` measured in the same run."""
    lines = ["| figure | target | measured | |", "| --- | --- | --- | --- |"]

    def rate_target(label, path, key, minimum):
        row = by_name.get(path)
        base = _rate(tcp.get(key))
        if row is None:
            lines.append("| %s | ≥ %.2g× haproxy | not measured | |" % (label, minimum))
            return
        mine = _rate(row[key])
        if mine is None or not base:
            why = "haproxy " + _rate_cell(tcp.get(key)) if not base else _rate_cell(row[key])
            lines.append("| %s | ≥ %.2g× haproxy | %s | missed |" % (label, minimum, why))
            return
        lines.append("| %s | ≥ %.2g× haproxy | %.2f× (%.0f / %.0f r/s) | %s |"
                     % (label, minimum, mine / base, mine, base, "met" if mine / base >= minimum else "missed"))

    def memory_target(label, path, maximum):
        row = by_name.get(path)
        if row is None:
            lines.append("| %s | ≤ %d KiB | not measured | |" % (label, maximum))
            return
        figures = [(count, row[key]) for key, count in (("idle", idle), ("idle_big", big_idle))
                   if row[key] is not None]
        if not figures or not all(_ok(v) for _, v in figures):
            lines.append("| %s | ≤ %d KiB | failed | missed |" % (label, maximum))
            return
        text = ", ".join("%.1f KiB at %d connections" % (v, count) for count, v in figures)
        lines.append("| %s | ≤ %d KiB | %s | %s |" % (label, maximum, text,
                                                        "met" if all(v <= maximum for _, v in figures) else "missed"))

    rate_target("forwarder new-connection r/s", "forwarder", "newconn", 0.5)
    rate_target("tunnel keep-alive r/s (both ends on core 0)", "tunnel", "keepalive", 0.3)
    rate_target("tunnel new-connection r/s (both ends on core 0)", "tunnel", "newconn", 0.15)
    memory_target("memory per idle keep-alive connection, forwarder", "forwarder", 8)
    memory_target("memory per idle keep-alive connection, tunnel (both ends)", "tunnel", 16)
    for path in ("forwarder", "tunnel"):
        row = by_name.get(path)
        if row is None:
            continue
        check, alt = row["routing"], row["alternating"]
        met = _ok(check) and not check["wrong"] and _ok(alt) and not alt["bad"]
        lines.append("| %s, hosts alternating on a connection | every request to its host's backend | "
                     "check: %s; wrk: %s | %s |" % (path, _routing_cell(check), _rate_cell(alt),
                                                   "met" if met else "missed"))
    return lines

if __name__ == "__main__":
    main()
