"""A real ``redis-server`` on a loopback port, for the tests that need Redis.

Redis cannot report a port it picked itself, so the port is picked just
before the start, and the start is retried on a new one if something took
it in between (:func:`tests.procs.retry_on_port_taken`).  A server keeps
its port across :meth:`RedisServer.stop` and :meth:`RedisServer.start`, so
a test can take Redis away and bring it back where the nodes expect it.
Nothing is saved to disk.
"""

import shutil
import socket
import subprocess

from tests.conftest import wait_until
from tests.procs import PortTaken, retry_on_port_taken

__all__ = ["RedisServer", "REDIS_SERVER", "start_redis"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisServer:
    def __init__(self, port, workdir):
        self.port = port
        self.workdir = workdir
        self.proc = None
        self.log_path = workdir / ("redis-%d.log" % port)

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def start(self, timeout=10):
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--logfile", str(self.log_path),
             "--notify-keyspace-events", "KEA"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_until(lambda: self.proc.poll() is not None or self.ping(), timeout)
        except BaseException:
            self.stop()
            raise
        if self.proc.poll() is None and not self.ping():
            self.stop()
            raise RuntimeError("redis-server did not answer on %s within %gs" % (self.addr, timeout))
        if self.proc.poll() is not None:
            text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
            self.proc = None
            if "in use" in text:
                raise PortTaken(self.port)
            raise RuntimeError("redis-server exited at start: %s" % text[-500:])
        return self

    def ping(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(64).startswith(b"+PONG")
        except OSError:
            return False

    def command(self, *args):
        """One command over a fresh connection; the raw RESP reply (for checks in tests)."""
        parts = [b"*%d\r\n" % len(args)]
        for arg in args:
            data = arg if isinstance(arg, bytes) else str(arg).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as sock:
            sock.sendall(b"".join(parts))
            return sock.recv(1 << 20)

    def stop(self):
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=5)
            self.proc = None



def start_redis(workdir):
    """A started RedisServer, empty, on a free loopback port."""
    if not shutil.which(REDIS_SERVER):
        raise RuntimeError("redis-server is not installed (.ci/run installs Debian's redis-server)")
    return retry_on_port_taken(lambda ports: RedisServer(ports[0], workdir).start(), 1)
