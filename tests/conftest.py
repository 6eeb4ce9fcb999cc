"""Shared fixtures: loopback backends, running services, small HTTP/TLS clients.

Everything listens on 127.0.0.1 port 0 and runs in this process under gevent,
except the CLI tests, which start ``python -m gostgev`` as a subprocess.
"""

import signal
import ssl as _stdssl
import time

import gevent
import pytest
from gevent import socket, ssl
from gevent.server import StreamServer

from gostgev.components import build_config
from gostgev.service import Service
from tests import certs

LOCALHOST = "127.0.0.1"


# -- services under test ----------------------------------------------------

@pytest.fixture
def start_services():
    """Start services from a raw config dict; returns {name: Service}."""
    started = []

    def start(raw, base_dir=".", context=None):
        config = build_config(raw, [], base_dir=base_dir)
        services = {}
        for svc_config in config.services:
            service = Service(svc_config, context)
            service.start()
            started.append(service)
            services[svc_config.name] = service
        return services

    yield start
    for service in reversed(started):
        service.stop(timeout=1)


@pytest.fixture
def run_services(start_services):
    """Like start_services, but returns {name: bound port}."""

    def start(raw, base_dir="."):
        return {name: svc.address[1] for name, svc in start_services(raw, base_dir).items()}

    return start


@pytest.fixture
def redis_server(tmp_path):
    """A real redis-server of this test's own (tests/redisserver.py), empty; killed at the end."""
    from tests.redisserver import start_redis

    server = start_redis(tmp_path)
    yield server
    server.stop()


# -- backends -----------------------------------------------------------------

class Backend:
    """A loopback server whose handler is a plain function of (sock, address)."""

    def __init__(self, handle, **ssl_args):
        self.connections = 0
        self._handle = handle
        self.server = StreamServer((LOCALHOST, 0), self._count, **ssl_args)
        self.server.start()
        self.port = self.server.address[1]
        self.addr = "%s:%d" % (LOCALHOST, self.port)

    def _count(self, sock, address):
        self.connections += 1
        self._handle(sock, address)

    def stop(self):
        self.server.stop(timeout=1)


def read_request_head(sock, limit=65536):
    data = b""
    while b"\r\n\r\n" not in data and len(data) < limit:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def name_responder(name):
    """An HTTP handler that answers one request with ``name`` and closes."""

    def handle(sock, _address):
        if read_request_head(sock):
            body = name.encode()
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (len(body), body))

    return handle


def echo_then_bye(sock, _address):
    """Echo until EOF, then send b"bye" and close: proves half-close works."""
    while True:
        data = sock.recv(65536)
        if not data:
            break
        sock.sendall(data)
    sock.sendall(b"bye")


@pytest.fixture
def backend():
    made = []

    def make(handle, **ssl_args):
        server = Backend(handle, **ssl_args)
        made.append(server)
        return server

    yield make
    for server in made:
        server.stop()


# -- connected sockets ------------------------------------------------------------

@pytest.fixture
def socket_pair():
    """``socket_pair()`` -> ``(a, b)``: two connected gevent sockets, all closed after the test.

    By default a loopback TCP connection: ``a`` dialed (with ``timeout``, if
    given) and ``b`` was accepted.  ``tcp=False``: a Unix ``socketpair()``.
    """
    made = []

    def make(tcp=True, timeout=None):
        if tcp:
            with socket.socket() as listener:
                listener.bind((LOCALHOST, 0))
                listener.listen(1)
                a = socket.create_connection(listener.getsockname(), timeout=timeout)
                b, _ = listener.accept()
        else:
            a, b = socket.socketpair()
        made.extend((a, b))
        return a, b

    yield make
    for sock in made:
        sock.close()


# -- clients --------------------------------------------------------------------

def connect(port, host=LOCALHOST, timeout=10):
    sock = socket.create_connection((host, port), timeout=timeout)
    return sock


def recv_all(sock, limit=1 << 24):
    data = b""
    while len(data) < limit:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def http_get(port, host, path="/", timeout=10):
    """One HTTP/1.1 GET with ``Connection: close``; returns (status, body)."""
    with connect(port, timeout=timeout) as sock:
        sock.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path.encode(), host.encode()))
        response = recv_all(sock)
    head, _, body = response.partition(b"\r\n\r\n")
    if not head:
        return None, b""
    return int(head.split(b" ", 2)[1]), body


def tls_get(port, server_name, context, timeout=10):
    """TLS handshake with SNI, then an HTTP GET; returns the response body."""
    with connect(port, timeout=timeout) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % server_name.encode())
            response = recv_all(sock)
    return response.partition(b"\r\n\r\n")[2]


# -- certificates -----------------------------------------------------------------

@pytest.fixture(scope="session")
def cert_files(tmp_path_factory):
    """A self-signed certificate for *.example.com and 127.0.0.1: (cert path, key path)."""
    cert, key = certs.self_signed("gostgev test", ("*.example.com", "example.com"), (LOCALHOST,))
    return certs.write_pem(tmp_path_factory.mktemp("certs"), "cert", cert, key)


@pytest.fixture
def client_tls_context(cert_files):
    context = ssl.SSLContext(_stdssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cert_files[0])
    return context


# -- waiting for a condition -------------------------------------------------------
#
# Tests wait for what they need to see, not for a time that usually
# suffices.  Every wait is bounded in time and in polls, and yields to
# gevent, so servers in this process keep running meanwhile.

def wait_until(predicate, timeout=5.0, step=0.02):
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; its last value.

    The clock is time.monotonic(): the hub's loop time is only brought up to
    date when the hub runs, and after a stretch of blocking calls it is
    stale enough to end a wait before it began.
    """
    deadline = time.monotonic() + timeout
    for _ in range(int(timeout / step) + 1):
        if predicate():
            return True
        if time.monotonic() >= deadline:
            break
        gevent.sleep(step)
    return predicate()


def holds_for(predicate, seconds, step=0.02):
    """True if ``predicate`` is true at every poll over ``seconds``: something that must not happen,
    watched for as long as it would take to happen."""
    return not wait_until(lambda: not predicate(), seconds, step)


def settled(read, timeout=5.0, step=0.1):
    """``read()`` once two readings ``step`` apart agree (None if they never do within ``timeout``)."""
    readings = []

    def steady():
        readings.append(read())
        return len(readings) > 1 and readings[-1] == readings[-2]

    return readings[-1] if wait_until(steady, timeout, step) else None



@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    """A CA, a server certificate (localhost, 127.0.0.1) and a client certificate it signed,
    plus an unrelated CA; returns {name: path}: ca, other_ca, server, server_key, client, client_key."""
    directory = tmp_path_factory.mktemp("ca")
    ca = certs.make_ca("gostgev test CA")
    files = {"ca": certs.write_pem(directory, "ca", ca[0]),
             "other_ca": certs.write_pem(directory, "other_ca", certs.make_ca("unrelated CA")[0])}
    files["server"], files["server_key"] = certs.write_pem(
        directory, "server", *certs.issue(ca, "localhost", ("localhost", LOCALHOST), certs.SERVER_AUTH))
    files["client"], files["client_key"] = certs.write_pem(
        directory, "client", *certs.issue(ca, "tunnel client", ("client",), certs.CLIENT_AUTH))
    return files


@pytest.fixture
def processes():
    """Subprocesses a test started (append them): killed, even if stopped, and reaped."""
    started = []
    yield started
    for proc in started:
        if proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.wait(timeout=10)
