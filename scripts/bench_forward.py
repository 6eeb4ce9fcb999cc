#!/usr/bin/env python3
"""Loopback benchmark of the plain ``tcp`` forwarder against socat.

    python3 scripts/bench_forward.py [--mib 512] [--idle 2000] [--write BENCHMARKS.md]

Paths, measured in one run so the ratios are fair on a noisy machine:
  direct   client -> source server
  socat    client -> socat (fork mode) -> source server
  gostgev  client -> gostgev tcp forwarder -> source server

Figures: bulk download MB/s (bytes checked by count), and resident memory per
idle proxied connection (RSS growth of the proxy process over --idle
connections, divided by their number).  Needs socat (apt-get install socat).
"""

import argparse
import datetime
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHUNK = 1 << 20

SOURCE = r"""
import socket, sys, threading
size = int(sys.argv[1])
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("127.0.0.1", 0)); srv.listen(4096)
print(srv.getsockname()[1], flush=True)
block = memoryview(bytes(1 << 20))
def serve(conn):
    with conn:
        if conn.recv(1) != b"G":   # "G" = send the payload; anything else = hold idle
            conn.recv(1)
            return
        left = size
        while left > 0:
            n = min(left, len(block)); conn.sendall(block[:n]); left -= n
while True:
    conn, _ = srv.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("port %d never opened" % port)


def download(port, size):
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.perf_counter()
        sock.sendall(b"G")
        got = 0
        while True:
            n = sock.recv_into(view)
            if not n:
                break
            got += n
        elapsed = time.perf_counter() - start
    if got != size:
        raise RuntimeError("expected %d bytes, got %d" % (size, got))
    return size / elapsed / 1e6


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def idle_cost(port, pid, count):
    """KiB of proxy RSS per idle proxied connection."""
    socks = []
    before = rss_kib(pid)
    try:
        for _ in range(count):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(b"I")   # reaches the source, which then holds the connection idle
            socks.append(sock)
        time.sleep(1.0)
        after = rss_kib(pid)
    finally:
        for sock in socks:
            sock.close()
    return (after - before) / count


def start(cmd):
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=512, help="download size per run (MiB)")
    parser.add_argument("--runs", type=int, default=3, help="downloads per path; the best is kept")
    parser.add_argument("--idle", type=int, default=2000, help="idle connections for the memory figure")
    parser.add_argument("--write", metavar="FILE", help="append the table to this Markdown file")
    args = parser.parse_args()
    if not shutil.which("socat"):
        sys.exit("socat not found: apt-get install socat")
    size = args.mib << 20
    source = subprocess.Popen([sys.executable, "-c", SOURCE, str(size)], stdout=subprocess.PIPE, text=True)
    procs = [source]
    try:
        backend = int(source.stdout.readline())
        socat_port, gost_port = free_port(), free_port()
        socat = start(["socat", "TCP-LISTEN:%d,bind=127.0.0.1,fork,reuseaddr,backlog=4096" % socat_port,
                       "TCP:127.0.0.1:%d" % backend])
        gost = start([sys.executable, "-m", "gostgev", "--log-level", "error",
                      "-L", "tcp://127.0.0.1:%d/127.0.0.1:%d" % (gost_port, backend)])
        procs += [socat, gost]
        for port in (socat_port, gost_port):
            wait_port(port)
        rows = []
        for name, port, proc in (("direct", backend, None), ("socat", socat_port, socat),
                                 ("gostgev", gost_port, gost)):
            mbps = max(download(port, size) for _ in range(args.runs))
            # socat forks a process per connection, so its RSS is not comparable.
            idle = idle_cost(port, proc.pid, args.idle) if name == "gostgev" else None
            rows.append((name, mbps, idle))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    socat_mbps = rows[1][1]
    lines = ["| path | bulk MB/s | × socat | KiB per idle connection |", "| --- | ---: | ---: | ---: |"]
    for name, mbps, idle in rows:
        lines.append("| %s | %.0f | %.2f | %s |" % (name, mbps, mbps / socat_mbps,
                                                    "%.1f" % idle if idle is not None else "–"))
    header = "%s, %s, %d cores, Python %s; %d MiB download, best of %d; %d idle connections" % (
        datetime.date.today().isoformat(), platform.machine(), os.cpu_count(), platform.python_version(),
        args.mib, args.runs, args.idle)
    table = "\n".join(lines)
    print(header)
    print(table)
    if args.write:
        with open(args.write, "a", encoding="utf-8") as fh:
            fh.write("\n### Forwarder vs socat (`scripts/bench_forward.py`)\n\n%s\n\n%s\n" % (header, table))


if __name__ == "__main__":
    main()
