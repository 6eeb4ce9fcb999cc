"""gostgev as a library (gostgev.run, gostgev.Tunnel), used the way a threaded program uses it.

The calling side here uses only the standard library's blocking sockets and
threads: gostgev's services run in threads of their own, on gevent hubs of
their own, and the backend is a plain ``http.server`` in a thread.
"""

import http.server
import socket
import subprocess
import sys
import threading

import pytest

import gostgev
from gostgev.errors import ConfigError
from gostgev.service import ServiceError
from tests.conftest import recv_all

TUNNEL = "4d21094e-b74c-4916-86c1-d9fa36ea677b"


class _Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"hello from the app"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def app():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.1:%d" % server.server_address[1]
    server.shutdown()
    server.server_close()


def get(port, host):
    """One GET with the standard library's blocking socket: (status line, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % host.encode())
        data = recv_all(sock)
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n", 1)[0], body


def test_run_serves_a_config_dict_from_a_plain_thread(app):
    with gostgev.run({"services": [{
            "name": "web", "addr": "127.0.0.1:0", "handler": {"type": "tcp", "metadata": {"sniffing": True}},
            "listener": {"type": "tcp"}, "forwarder": {"nodes": [{"name": "app", "addr": app, "host": "a.local"}]}}]}
    ) as running:
        port = running.addresses["web"][1]
        assert get(port, "a.local") == (b"HTTP/1.1 200 OK", b"hello from the app")
        assert get(port, "b.local")[0].startswith(b"HTTP/1.1 502")
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2)


def test_a_tunnel_client_in_three_lines(app):
    server = gostgev.run({
        "services": [{"name": "server", "addr": "127.0.0.1:0", "handler": {"type": "tunnel", "metadata": {
            "entrypoint": "127.0.0.1:0", "tunnel": "app.example.com:" + TUNNEL}}}]})
    try:
        assert server.wait_ready(10)
        address = "127.0.0.1:%d" % server.addresses["server"][1]
        entrypoint = server.entrypoints["server"][0][1]
        with gostgev.Tunnel(server=address, tunnel_id=TUNNEL, forward={"app.example.com": app}) as tunnel:
            assert tunnel.wait_connected(10)
            assert get(entrypoint, "app.example.com") == (b"HTTP/1.1 200 OK", b"hello from the app")
        assert not tunnel.connected
    finally:
        assert server.stop(10)


def test_mistakes_surface_in_the_caller():
    with pytest.raises(ConfigError) as caught:
        gostgev.run({"services": [{"name": "x", "addr": "127.0.0.1:0", "handler": {"type": "nope"}}]})
    assert "services[0].handler.type" in str(caught.value)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    try:
        running = gostgev.run({"services": [{"name": "x", "addr": "127.0.0.1:%d" % taken.getsockname()[1],
                                             "handler": {"type": "tcp"}, "listener": {"type": "tcp"},
                                             "forwarder": {"nodes": [{"name": "n", "addr": "127.0.0.1:9"}]}}]})
        with pytest.raises(ServiceError):
            running.wait_ready(10)
        assert running.stop(5)
    finally:
        taken.close()


PROGRAM = r'''
import http.server, socket, sys, threading
import gostgev

class Hello(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass

app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
threading.Thread(target=app.serve_forever, daemon=True).start()
config = {"services": [{"name": "web", "addr": "127.0.0.1:0",
          "handler": {"type": "tcp", "metadata": {"sniffing": True}}, "listener": {"type": "tcp"},
          "forwarder": {"nodes": [{"name": "a", "addr": "127.0.0.1:%d" % app.server_address[1], "host": "a.local"}]}}]}
with gostgev.run(config) as running:
    results = []
    def fetch():
        with socket.create_connection(("127.0.0.1", running.addresses["web"][1]), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: a.local\r\nConnection: close\r\n\r\n")
            results.append(sock.recv(65536))
    threads = [threading.Thread(target=fetch) for _ in range(8)]
    [t.start() for t in threads]
    [t.join(10) for t in threads]
import gevent.monkey
print(sum(r.startswith(b"HTTP/1.1 200") for r in results), gevent.monkey.is_module_patched("socket"))
'''


def test_a_plain_threaded_program_embeds_gostgev_in_a_fresh_interpreter():
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["8", "False"]
