"""Expose a local http.server through a gostgev tunnel, in one script.

    python3 examples/expose_http_server.py

It serves this directory with the standard library's http.server, starts a
tunnel server whose public entrypoint routes ``app.local`` to a tunnel, and
connects a tunnel client that forwards that tunnel to the http.server.  Then
it fetches a page through the public entrypoint, as a visitor would, and
prints what came back.  Everything listens on 127.0.0.1, on ports the
system picks.  In real use the server runs on a public machine and
``gostgev.Tunnel`` in your program, with ``tls=True``.
"""

import functools
import http.server
import os
import socket
import threading
import uuid

import gostgev

TUNNEL_ID = str(uuid.uuid4())


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def serve_directory():
    """The local app: http.server on a free port, in a thread."""
    handler = functools.partial(QuietHandler, directory=os.path.dirname(os.path.abspath(__file__)))
    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    return app


def fetch(port, host, path):
    """One GET through the entrypoint, as a visitor's browser would send it."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host)).encode())
        chunks = []
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def main():
    app = serve_directory()
    with gostgev.run({"services": [{
        "name": "tunnel-server", "addr": "127.0.0.1:0",
        "handler": {"type": "tunnel", "metadata": {"entrypoint": "127.0.0.1:0",
                                                   "tunnel": "app.local:" + TUNNEL_ID}}}]}) as server:
        server_addr = "127.0.0.1:%d" % server.addresses["tunnel-server"][1]
        entrypoint = server.entrypoints["tunnel-server"][0][1]
        local_app = "127.0.0.1:%d" % app.server_address[1]
        with gostgev.Tunnel(server=server_addr, tunnel_id=TUNNEL_ID, forward={"app.local": local_app}) as tunnel:
            if not tunnel.wait_connected(10):
                raise SystemExit("the tunnel did not connect")
            response = fetch(entrypoint, "app.local", "/" + os.path.basename(__file__))
            status = response.split(b"\r\n", 1)[0].decode()
            print("through the tunnel:", status, "-", len(response.partition(b"\r\n\r\n")[2]), "bytes")
    app.shutdown()
    return 0 if " 200 " in status else 1


if __name__ == "__main__":
    raise SystemExit(main())
