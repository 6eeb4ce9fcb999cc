#!/usr/bin/env python3
"""Side-by-side loopback benchmark: nginx direct, HAProxy, gostgev forwarder, gostgev tunnel.

    python3 scripts/bench.py [--quick] [--write BENCHMARKS.md]

Needs Debian's nginx, haproxy and wrk:
    apt-get install -y nginx-light haproxy wrk
The script starts its own nginx (backend) and HAProxy (peer, TCP mode) on
free loopback ports with configs in a temporary directory; nothing system-wide
is touched.  gostgev runs from this checkout (``python3 -m gostgev``).

Paths
  direct    wrk or the bulk reader -> nginx
  haproxy   -> haproxy (mode tcp) -> nginx
  forwarder -> gostgev tcp handler with sniffing -> nginx
  fwd-2w    the same with --workers 2 (two processes sharing the port)
  tunnel    -> gostgev entrypoint -> tunnel server ══ tunnel client -> nginx
              (server and client are separate processes, as deployed)
  tunnel-2w the same, the server with --workers 2: one worker holds the
              tunnel connection, the other hands its visitors over
  tunnel-tls  the same, with the tunnel connection over TLS (self-signed, unverified)

Figures, per path
  bulk MB/s       the better of two downloads of 256 MiB (64 with --quick),
                  read in 1 MiB pieces (size checked), after one to warm the
                  page cache
  keep-alive r/s  wrk, 32 connections, 1 KiB file
  new-conn r/s    wrk, 32 connections, "Connection: close"
  p50/p99 ms      latency of a 1 KiB request at a fixed rate (--rate r/s
                  over 16 keep-alive connections), measured by a gevent client
  KiB/conn        RSS growth of the proxy process(es) with 2,000 and with
                  10,000 idle keep-alive connections open through them (fewer
                  if a process's descriptor limit cannot hold 10,000: the
                  column heading gives the count)

Ratios are against HAProxy measured in the same run: the machines are noisy.
"""

import argparse
import datetime
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
HOST = "bench.local"
TUNNEL_ID = "0b5b7e0e-4c59-4f43-9d3f-6a0c5e2d7b11"

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
    server {{
        listen 127.0.0.1:{port} backlog=4096;
        root {dir}/www;
    }}
}}
"""

HAPROXY_CONF = """
global
    maxconn {maxconn}
defaults
    mode tcp
    timeout connect 5s
    timeout client 300s
    timeout server 300s
frontend fe
    bind 127.0.0.1:{port}
    default_backend be
backend be
    server nginx 127.0.0.1:{backend}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(port, timeout=15.0):
    """Wait until a request with our Host gets a 200 (tunnels connect asynchronously)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"GET /1k HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % HOST.encode())
                if sock.recv(64).startswith(b"HTTP/1.1 200"):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("port %d never answered 200" % port)


def _with_children(pids):
    """The processes and their children (``--workers`` forks them)."""
    found = []
    for pid in pids:
        found.append(pid)
        try:
            with open("/proc/%d/task/%d/children" % (pid, pid)) as fh:
                found.extend(_with_children([int(p) for p in fh.read().split()]))
        except OSError:
            pass
    return found


def rss_kib(pids):
    total = 0
    for pid in _with_children(pids):
        with open("/proc/%d/status" % pid) as fh:
            total += next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:"))
    return total


def bulk(port, size):
    """MB/s of one download of ``size`` bytes, read in 1 MiB pieces.

    curl reads 16 KiB at a time and tops out below what the proxies move;
    a reader with a large buffer measures the path instead of itself.
    """
    buf = memoryview(bytearray(1 << 20))
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        started = time.monotonic()
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % HOST.encode())
        head = b""
        while b"\r\n\r\n" not in head:
            n = sock.recv_into(buf)
            if not n:
                raise RuntimeError("bulk download: no response head")
            head += bytes(buf[:n])
        got = len(head) - head.index(b"\r\n\r\n") - 4
        while True:
            n = sock.recv_into(buf)
            if not n:
                break
            got += n
        seconds = time.monotonic() - started
    if got != size:
        raise RuntimeError("bulk download got %d bytes, expected %d" % (got, size))
    return size / seconds / 1e6


def wrk(port, seconds, close=False):
    cmd = ["wrk", "-t2", "-c32", "-d%ds" % seconds, "-H", "Host: " + HOST]
    if close:
        cmd += ["-H", "Connection: close"]
    out = subprocess.run(cmd + ["http://127.0.0.1:%d/1k" % port], capture_output=True, text=True,
                         timeout=seconds + 60, check=True).stdout
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if errors:
        raise RuntimeError("wrk saw %s failed responses on port %d" % (errors.group(1), port))
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


LATENCY_CLIENT = r"""
import sys, time, gevent
from gevent import socket
port, host, rate, seconds = int(sys.argv[1]), sys.argv[2].encode(), float(sys.argv[3]), float(sys.argv[4])
conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(16)]
request = b"GET /1k HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
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
    out = subprocess.run([sys.executable, "-c", LATENCY_CLIENT, str(port), HOST, str(rate), str(seconds)],
                         capture_output=True, text=True, timeout=seconds + 60, check=True).stdout.split()
    p50, p99, failures = float(out[0]), float(out[1]), int(out[2])
    if failures:
        raise RuntimeError("%d latency requests failed on port %d" % (failures, port))
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


def idle_cost(port, pids, count):
    socks = []
    before = rss_kib(pids)
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"GET /1k HTTP/1.1\r\nHost: %s\r\n\r\n" % HOST.encode())
            socks.append(sock)
        for sock in socks:
            sock.settimeout(30)
            data = b""
            while len(data) < 1024:   # response head + 1 KiB body, then the connection idles
                chunk = sock.recv(65536)
                if not chunk:
                    raise RuntimeError("idle connection closed early")
                data += chunk
        time.sleep(1.0)
        return (rss_kib(pids) - before) / count
    finally:
        for sock in socks:
            sock.close()


class Procs:
    def __init__(self):
        self.procs = []

    def start(self, cmd, **kwargs):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT, **kwargs)
        self.procs.append(proc)
        return proc

    def stop(self):
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()


def gostgev(*args):
    return [sys.executable, "-m", "gostgev", "--log-level", "error", *args]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes and short runs (under a minute)")
    parser.add_argument("--write", metavar="FILE", help="append the results to this Markdown file")
    parser.add_argument("--paths", metavar="LIST", help="comma-separated paths to measure (haproxy is always "
                        "included, as the base of the ratios); default: all")
    args = parser.parse_args()
    wanted = set(args.paths.split(",")) | {"haproxy"} if args.paths else None
    for tool in ("nginx", "haproxy", "wrk"):
        if not shutil.which(tool) and not os.path.exists("/usr/sbin/" + tool):
            sys.exit("%s not found: apt-get install -y nginx-light haproxy wrk" % tool)
    bulk_mib, seconds, idle = (64, 2, 500) if args.quick else (256, 10, 2000)
    fd_limit = raise_fd_limit()
    big_idle = None if args.quick else big_idle_count(fd_limit)
    rate = 1000
    size = bulk_mib << 20
    procs = Procs()
    with tempfile.TemporaryDirectory(prefix="gostgev-bench-") as tmp:
        os.chmod(tmp, 0o755)   # nginx workers drop root and must read the files
        os.makedirs(os.path.join(tmp, "www"))
        with open(os.path.join(tmp, "www", "1k"), "wb") as fh:
            fh.write(os.urandom(1024))
        with open(os.path.join(tmp, "www", "big"), "wb") as fh:
            fh.truncate(size)
        ports = {name: free_port() for name in ("nginx", "haproxy", "forwarder", "tunnel", "entrypoint",
                                                 "tunnel-tls", "entrypoint-tls", "fwd-2w", "tunnel-2w",
                                                 "entrypoint-2w")}
        try:
            with open(os.path.join(tmp, "nginx.conf"), "w") as fh:
                fh.write(NGINX_CONF.format(dir=tmp, port=ports["nginx"]))
            with open(os.path.join(tmp, "haproxy.cfg"), "w") as fh:
                # HAProxy refuses to start if maxconn does not fit in the descriptor limit.
                fh.write(HAPROXY_CONF.format(port=ports["haproxy"], backend=ports["nginx"],
                                             maxconn=max(1000, min(24000, fd_limit // 2 - 250))))
            procs.start([shutil.which("nginx") or "/usr/sbin/nginx", "-c", os.path.join(tmp, "nginx.conf"),
                         "-p", tmp])
            haproxy = procs.start([shutil.which("haproxy") or "/usr/sbin/haproxy", "-f",
                                   os.path.join(tmp, "haproxy.cfg")])
            backend = "127.0.0.1:%d" % ports["nginx"]
            forwarder = procs.start(gostgev("-L", "tcp://127.0.0.1:%d/%s?sniffing=true"
                                            % (ports["forwarder"], backend)))
            two = procs.start(gostgev("--workers", "2", "-L", "tcp://127.0.0.1:%d/%s?sniffing=true"
                                      % (ports["fwd-2w"], backend)))
            server = procs.start(gostgev("-L", "tunnel://127.0.0.1:%d?entrypoint=127.0.0.1:%d&tunnel=%s:%s" % (
                ports["tunnel"], ports["entrypoint"], HOST, TUNNEL_ID)))
            client = procs.start(gostgev("-L", "rtcp://:0/%s" % backend,
                                         "-F", "tunnel://127.0.0.1:%d?tunnel.id=%s" % (ports["tunnel"], TUNNEL_ID)))
            id_2w = TUNNEL_ID[:-1] + "3"
            server_2w = procs.start(gostgev("--workers", "2", "-L", "tunnel://127.0.0.1:%d?entrypoint=127.0.0.1:%d&tunnel=%s:%s"
                                            % (ports["tunnel-2w"], ports["entrypoint-2w"], HOST, id_2w)))
            client_2w = procs.start(gostgev("-L", "rtcp://:0/%s" % backend,
                                            "-F", "tunnel://127.0.0.1:%d?tunnel.id=%s" % (ports["tunnel-2w"], id_2w)))
            tls_id = TUNNEL_ID[:-1] + "2"
            tls_server = procs.start(gostgev("-L", "tunnel+tls://127.0.0.1:%d?entrypoint=127.0.0.1:%d&tunnel=%s:%s" % (
                ports["tunnel-tls"], ports["entrypoint-tls"], HOST, tls_id)))
            tls_client = procs.start(gostgev("-L", "rtcp://:0/%s" % backend, "-F", "tunnel+tls://127.0.0.1:%d?tunnel.id=%s"
                                             % (ports["tunnel-tls"], tls_id)))
            paths = [("direct", ports["nginx"], []), ("haproxy", ports["haproxy"], [haproxy.pid]),
                     ("forwarder", ports["forwarder"], [forwarder.pid]),
                     ("fwd-2w", ports["fwd-2w"], [two.pid]),
                     ("tunnel", ports["entrypoint"], [server.pid, client.pid]),
                     ("tunnel-2w", ports["entrypoint-2w"], [server_2w.pid, client_2w.pid]),
                     ("tunnel-tls", ports["entrypoint-tls"], [tls_server.pid, tls_client.pid])]
            if wanted is not None:
                paths = [p for p in paths if p[0] in wanted]
            for _, port, _ in paths:
                wait_http(port)
            bulk(ports["nginx"], size)   # the first read of the file fills the page cache: not a path's cost
            rows = []
            for name, port, pids in paths:
                row = {"path": name, "bulk": max(bulk(port, size) for _ in range(2)), "keepalive": wrk(port, seconds),
                       "newconn": wrk(port, seconds, close=True),
                       "latency": latency(port, rate, 1 if args.quick else 5),
                       "idle": idle_cost(port, pids, idle) if pids else None,
                       "idle_big": idle_cost(port, pids, big_idle) if pids and big_idle else None}
                rows.append(row)
                print("measured %-9s %s" % (name, row), flush=True)
        finally:
            procs.stop()
    report(rows, args, bulk_mib, seconds, idle, big_idle, rate)


def _kib(value):
    return "%.1f" % value if value is not None else "–"


def report(rows, args, bulk_mib, seconds, idle, big_idle, rate):
    base = next(r for r in rows if r["path"] == "haproxy")
    lines = ["| path | bulk MB/s | × HAProxy | keep-alive r/s | × HAProxy | new-conn r/s | × HAProxy "
             "| p50 ms | p99 ms | KiB/idle conn @%d | @%s |" % (idle, big_idle or "–"),
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append("| %s | %.0f | %.2f | %.0f | %.2f | %.0f | %.2f | %.2f | %.2f | %s | %s |" % (
            r["path"], r["bulk"], r["bulk"] / base["bulk"], r["keepalive"], r["keepalive"] / base["keepalive"],
            r["newconn"], r["newconn"] / base["newconn"], r["latency"][0], r["latency"][1],
            _kib(r["idle"]), _kib(r["idle_big"])))
    header = ("%s, %s, %d cores, Python %s%s: %d MiB download (1 MiB reads), wrk -t2 -c32 -d%ds on a 1 KiB file, "
              "latency at %d r/s, idle keep-alive connections; tunnel KiB counts server and client processes."
              % (datetime.date.today().isoformat(), platform.machine(), os.cpu_count(), platform.python_version(),
                 " (--quick)" if args.quick else "", bulk_mib, seconds, rate))
    table = "\n".join(lines)
    print()
    print(header)
    print(table)
    if args.write:
        with open(args.write, "a", encoding="utf-8") as fh:
            fh.write("\n### Paths side by side (`scripts/bench.py%s`)\n\n%s\n\n%s\n"
                     % (" --quick" if args.quick else "", header, table))


if __name__ == "__main__":
    main()
