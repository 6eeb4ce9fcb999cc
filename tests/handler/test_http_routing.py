"""Every HTTP request is routed by its own Host, end to end through real sockets.

At the sniffing forwarder (handler ``tcp``, ``sniffing: true``) and at the
tunnel entrypoint, each request of a keep-alive connection goes where its own
target says (the absolute-form URI's host, else Host); node and ingress
matching, ``filter.path`` and the 502/503 answers apply per request; bodies
are framed exactly, responses come back in request order, smuggling attempts
are refused, and the forwarder reuses idle upstream connections.

The origins here are small keep-alive HTTP/1.1 servers that answer with their
name (body, and an ``X-Site`` header for answers without a body) and record
every request line and every byte they receive.  Their parsing is lenient on
purpose, like many real origins: bytes a proxy should have refused show up in
what they recorded.
"""

import socket
import struct
import time
from dataclasses import dataclass, field

import gevent
import pytest

from tests.conftest import connect, wait_until
from tests.handler.test_tunnel import TUNNEL_A, TUNNEL_B, Deployment
from tests.nginx import nginx_fixture  # noqa: F401  (the nginx fixture)

TUNNEL_C = "5b0d6d1e-9c1f-4e3a-8f6b-2a7c3e9d1f40"   # named by a rule, no client: 503
TIMEOUT = 5              # seconds any single socket operation of a test may wait
MAX_LINE = 65536
MAX_ITEMS = 10_000       # bound on lines, chunks and reads in one message


# -- HTTP/1.1 on a socket, both sides ------------------------------------------------

class Peer:
    """Buffered reads of HTTP/1.1 messages; ``record`` (a bytearray) gets every byte received."""

    def __init__(self, sock, record=None):
        self.sock = sock
        self.buf = bytearray()
        self.record = record
        self.received = 0

    def fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError("connection closed by the peer")
        self.received += len(chunk)
        if self.record is not None:
            self.record += chunk
        self.buf += chunk

    def line(self):
        """One line without its end; a bare LF ends a line too (lenient)."""
        for _ in range(MAX_ITEMS):
            end = self.buf.find(b"\n")
            if end >= 0:
                line = bytes(self.buf[:end])
                del self.buf[:end + 1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(self.buf) > MAX_LINE:
                raise ValueError("line longer than %d bytes" % MAX_LINE)
            self.fill()
        raise ValueError("no end of line")

    def exactly(self, size):
        for _ in range(size + 1):
            if len(self.buf) >= size:
                break
            self.fill()
        data = bytes(self.buf[:size])
        del self.buf[:size]
        return data

    def to_eof(self):
        data = bytearray()
        for _ in range(MAX_ITEMS):
            data += self.buf
            self.buf.clear()
            try:
                self.fill()
            except EOFError:
                return bytes(data)
        raise ValueError("no end of a close-delimited body")

    def fields(self):
        """Header (or trailer) fields up to the blank line, names lowercased; obs-fold is unfolded."""
        fields = []
        for _ in range(MAX_ITEMS):
            line = self.line()
            if not line:
                return fields
            if line[:1] in (b" ", b"\t") and fields:
                name, value = fields[-1]
                fields[-1] = (name, value + " " + line.strip().decode("latin-1"))
            else:
                name, _, value = line.decode("latin-1").partition(":")
                fields.append((name.strip().lower(), value.strip()))
        raise ValueError("too many header lines")

    def head(self):
        """The start line and the header fields of the next message."""
        for _ in range(MAX_ITEMS):
            start = self.line()
            if start:
                return start.decode("latin-1"), self.fields()
        raise ValueError("only blank lines")

    def chunked(self):
        """A chunked body and its trailers; the size is read as leniently as ``int(x, 16)`` does."""
        body = bytearray()
        for _ in range(MAX_ITEMS):
            size = int(self.line().split(b";")[0].strip(), 16)
            if size == 0:
                return bytes(body), self.fields()
            body += self.exactly(size)
            self.line()
        raise ValueError("too many chunks")


def header(fields, name):
    """The last value of ``name`` in ``fields`` (as a lenient origin reads duplicates), or None."""
    values = [value for key, value in fields if key == name.lower()]
    return values[-1] if values else None


def is_chunked(fields):
    return "chunked" in (header(fields, "transfer-encoding") or "").lower()


def closes(fields):
    return "close" in (header(fields, "connection") or "").lower()


def request(host, path="/", method="GET", headers=(), body=None):
    """Request bytes; ``body`` gets a Content-Length."""
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: " + host, *headers]
    if body is not None:
        lines.append("Content-Length: %d" % len(body))
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def chunked_body(chunks, trailers=()):
    out = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for chunk in chunks)
    return out + b"0\r\n" + b"".join(b"%s\r\n" % t for t in trailers) + b"\r\n"


@dataclass
class Response:
    status: int
    fields: list
    body: bytes = b""
    trailers: list = field(default_factory=list)

    def header(self, name):
        return header(self.fields, name)

    @property
    def site(self):
        return self.header("x-site")


class Client:
    """One client connection to the proxy under test; every read times out after TIMEOUT."""

    def __init__(self, port):
        self.sock = connect(port, timeout=TIMEOUT)
        self.peer = Peer(self.sock)
        self.last = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.sock.close()

    def send(self, data):
        self.sock.sendall(data)

    def response(self, method="GET", interim=False):
        """The next response; 100/102/103 are skipped unless ``interim``; 101 is always returned."""
        for _ in range(MAX_ITEMS):
            start, fields = self.peer.head()
            status = int(start.split(" ")[1])
            if interim or status == 101 or not 100 <= status < 200:
                break
        response = Response(status, fields)
        if method != "HEAD" and status >= 200 and status not in (204, 304):
            if is_chunked(fields):
                response.body, response.trailers = self.peer.chunked()
            elif header(fields, "content-length") is not None:
                response.body = self.peer.exactly(int(header(fields, "content-length")))
            else:
                response.body = self.peer.to_eof()
        self.last = response
        return response

    def get(self, host, path="/", method="GET", headers=(), body=None):
        self.send(request(host, path, method, headers, body))
        return self.response(method)

    def closed(self):
        """True if the proxy closes this connection (EOF or reset) within TIMEOUT, with nothing more sent."""
        if self.peer.buf:
            return False
        try:
            self.peer.fill()
        except (EOFError, ConnectionError):
            return True
        except TimeoutError:
            return False
        return False


class Session:
    """A well-behaved client: keeps one connection, opening a new one when the last response said
    ``Connection: close`` or the idle connection turned out closed before any byte of a response."""

    def __init__(self, port):
        self.port = port
        self.client = None
        self.connections = 0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.client:
            self.client.close()

    def _open(self):
        if self.client:
            self.client.close()
        self.client = Client(self.port)
        self.connections += 1

    def get(self, host, path="/", method="GET", headers=(), body=None):
        if self.client is None or (self.client.last and closes(self.client.last.fields)):
            self._open()
        for attempt in range(2):
            before = self.client.peer.received
            try:
                return self.client.get(host, path, method, headers, body)
            except (EOFError, ConnectionError):
                if attempt or self.client.peer.received != before or self.client.last is None:
                    raise
                self._open()
        raise AssertionError("unreachable")


# -- origins ------------------------------------------------------------------------------

class Site:
    """A keep-alive HTTP/1.1 origin on the conftest Backend, answering with its name.

    Paths: ``/slow`` answers after 0.3 s, ``/chunked`` answers chunked with a trailer,
    ``/eof`` answers with a close-delimited body, ``/204`` and ``/304`` without a body,
    ``/bye`` with ``Connection: close`` and a close.  A request with a body gets
    ``name:body`` back, and the trailers it came with in ``X-Trailers``.  ``Expect:
    100-continue`` gets a 100 first; a WebSocket upgrade gets a 101, then an echo.

    ``after``: ``keep-alive``; ``close`` (close after each response without saying
    so); ``announce-close`` (say ``Connection: close`` but leave the socket open and
    count any request that still arrives on it in ``reused_after_close``).
    """

    EOF_BODY = b"z" * 200_000

    def __init__(self, backend, name, after="keep-alive"):
        self.name = name
        self.after = after
        self.seen = []            # (request line, Host) of every request read
        self.raw = bytearray()    # every byte received, all connections
        self.reused_after_close = 0
        self.server = backend(self._serve)
        self.addr = self.server.addr

    @property
    def connections(self):
        return self.server.connections

    def targets(self):
        return [line.split(" ")[1] for line, _host in self.seen]

    def saw(self, text):
        return text.encode() in self.raw

    def _serve(self, sock, _address):
        sock.settimeout(10)
        peer = Peer(sock, self.raw)
        announced = False
        try:
            for _ in range(1000):
                keep = self._answer(sock, peer, announced)
                if keep == "announced":
                    announced = True
                elif not keep:
                    break
        except (EOFError, OSError, ValueError):
            pass
        finally:
            sock.close()

    def _answer(self, sock, peer, announced):
        start, fields = peer.head()
        if announced:
            self.reused_after_close += 1
        target = start.split(" ")[1] if start.count(" ") >= 2 else ""
        self.seen.append((start, header(fields, "host")))
        if (header(fields, "expect") or "").lower() == "100-continue":
            sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body, trailers = b"", []
        if is_chunked(fields):
            body, trailers = peer.chunked()
        elif header(fields, "content-length") is not None:
            body = peer.exactly(int(header(fields, "content-length")))
        name = self.name.encode()
        if (header(fields, "upgrade") or "").lower() == "websocket":
            sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"X-Site: %s\r\n\r\n" % name)
            self._echo(sock, peer)
            return False
        content = name + b":" + body if body else name
        lines = [b"X-Site: " + name]
        if trailers:
            lines.append(b"X-Trailers: " + ", ".join("%s=%s" % t for t in trailers).encode())
        if target == "/slow":
            gevent.sleep(0.3)       # the slow backend itself
        bye = closes(fields) or target == "/bye" or self.after != "keep-alive"
        if bye and self.after != "close":
            lines.append(b"Connection: close")
        if target == "/eof":
            sock.sendall(b"HTTP/1.1 200 OK\r\n%s\r\n\r\n%s:%s" % (b"\r\n".join(lines), name, self.EOF_BODY))
            return False
        status, payload = b"200 OK", content
        if target == "/204":
            status, payload = b"204 No Content", b""
        elif target == "/304":
            status, payload = b"304 Not Modified", b""
            lines += [b'ETag: "v1"', b"Content-Length: %d" % len(content)]
        elif target == "/chunked":
            lines += [b"Transfer-Encoding: chunked", b"Trailer: X-Site-Trailer"]
            third = len(content) // 3
            payload = chunked_body([content[:third], content[third:2 * third], content[2 * third:]],
                                   [b"X-Site-Trailer: " + name])
        else:
            lines.append(b"Content-Length: %d" % len(content))
            if start.startswith("HEAD "):
                payload = b""
        sock.sendall(b"HTTP/1.1 %s\r\n%s\r\n\r\n%s" % (status, b"\r\n".join(lines), payload))
        if self.after == "announce-close" and not (closes(fields) or target == "/bye"):
            return "announced"
        return not bye

    @staticmethod
    def _echo(sock, peer):
        data = bytes(peer.buf)
        peer.buf.clear()
        for _ in range(MAX_ITEMS):
            if data:
                sock.sendall(data)
            data = sock.recv(65536)
            if not data:
                return


def dead_addr(backend):
    """An address nothing listens on any more."""
    gone = backend(lambda sock, _address: None)
    addr = gone.addr
    gone.stop()
    return addr


# -- what sits in front: the forwarder or the tunnel entrypoint ----------------------------

def forwarder_config(nodes):
    return {"services": [{
        "name": "proxy", "addr": "127.0.0.1:0",
        "handler": {"type": "tcp", "metadata": {"sniffing": True, "sniffing.timeout": "5s"}},
        "listener": {"type": "tcp"},
        "forwarder": {"nodes": nodes},
    }]}


def start_forwarder(start_services, nodes):
    return start_services(forwarder_config(nodes))["proxy"].address[1]


@dataclass
class Front:
    """Where the test client connects, the two routed hosts and their origins."""

    port: int
    sites: dict               # host -> Site
    dead: str = "dead.local"  # routed, but nothing answers there: 503
    unknown: str = "nobody.local"   # no route: 502

    @property
    def hosts(self):
        return tuple(self.sites)

    def name(self, host):
        return self.sites[host].name.encode()

    def assert_each_site_saw_only_its_host(self):
        for host, site in self.sites.items():
            wrong = [(line, got) for line, got in site.seen if (got or "").split(":")[0] != host]
            assert not wrong, "%s (for %s) got requests for other hosts: %r" % (site.name, host, wrong)

    def saw_anywhere(self, text):
        return any(site.saw(text) for site in self.sites.values())


FRONTS = ["forwarder", "entrypoint", "one-tunnel"]


@pytest.fixture
def make_front(start_services, backend):
    """``forwarder``: a.local and b.local are forwarder nodes.  ``entrypoint``: a.local and b.local
    are two tunnels, each with its own client.  ``one-tunnel``: srv-0.local and srv-1.local are one
    tunnel whose client routes them to two origins.  dead.local is routed to nothing live (503)."""

    def make(kind):
        if kind == "forwarder":
            sites = {"a.local": Site(backend, "a"), "b.local": Site(backend, "b")}
            nodes = [{"name": site.name, "addr": site.addr, "host": host} for host, site in sites.items()]
            nodes.append({"name": "dead", "addr": dead_addr(backend), "host": "dead.local"})
            return Front(start_forwarder(start_services, nodes), sites)
        if kind == "entrypoint":
            sites = {"a.local": Site(backend, "a"), "b.local": Site(backend, "b")}
            dep = Deployment(start_services, [("a.local", TUNNEL_A), ("b.local", TUNNEL_B),
                                              ("dead.local", TUNNEL_C)])
            for (host, site), tunnel in zip(sites.items(), (TUNNEL_A, TUNNEL_B), strict=True):
                dep.client("client-" + site.name, tunnel, [{"name": site.name, "addr": site.addr, "host": host}])
            dep.wait_connections(TUNNEL_A, 1)
            dep.wait_connections(TUNNEL_B, 1)
            return Front(dep.entrypoint, sites)
        assert kind == "one-tunnel"
        sites = {"srv-0.local": Site(backend, "srv-0"), "srv-1.local": Site(backend, "srv-1")}
        dep = Deployment(start_services, [("srv-0.local", TUNNEL_A), ("srv-1.local", TUNNEL_A),
                                          ("dead.local", TUNNEL_C)])
        dep.client("client", TUNNEL_A, [{"name": site.name, "addr": site.addr, "host": host}
                                        for host, site in sites.items()])
        dep.wait_connections(TUNNEL_A, 1)
        return Front(dep.entrypoint, sites)

    return make


@pytest.fixture(params=["forwarder", "entrypoint"])
def front(request, make_front):
    return make_front(request.param)


def never(predicate, seconds=0.2):
    """True if ``predicate`` stays false for ``seconds`` (lets in-flight bytes land first)."""
    return not wait_until(predicate, seconds)


# -- routing each request -------------------------------------------------------------------

@pytest.mark.parametrize("kind", FRONTS)
@pytest.mark.parametrize("pipelined", [False, True], ids=["sequential", "pipelined"])
def test_each_request_on_one_connection_goes_to_its_own_host(make_front, kind, pipelined):
    front = make_front(kind)
    first, second = front.hosts
    order = [first, second, first, second]
    paths = ["/r%d" % i for i in range(len(order))]
    with Client(front.port) as client:
        if pipelined:
            client.send(b"".join(request(host, path) for host, path in zip(order, paths, strict=True)))
            got = [client.response() for _ in order]
        else:
            got = [client.get(host, path) for host, path in zip(order, paths, strict=True)]
    assert [(r.status, r.body) for r in got] == [(200, front.name(host)) for host in order]
    assert front.sites[first].targets() == ["/r0", "/r2"]
    assert front.sites[second].targets() == ["/r1", "/r3"]


def test_pipelined_responses_keep_request_order_when_the_first_is_slow(front):
    first, second = front.hosts
    with Client(front.port) as client:
        client.send(request(first, "/slow") + request(second, "/") + request(first, "/"))
        got = [client.response().body for _ in range(3)]
    assert got == [front.name(first), front.name(second), front.name(first)]


def test_absolute_form_target_routes_and_must_agree_with_host(front):
    first, second = front.hosts
    with Client(front.port) as client:
        assert client.get(first).body == front.name(first)
        client.send(b"GET http://%s/absolute HTTP/1.1\r\nHost: %s\r\n\r\n" % (second.encode(), second.encode()))
        response = client.response()
        assert (response.status, response.body) == (200, front.name(second))
        client.send(b"GET http://%s/mismatch HTTP/1.1\r\nHost: %s\r\n\r\n" % (first.encode(), second.encode()))
        assert client.response().status == 400
    with Client(front.port) as client:   # also as the first request of a connection
        client.send(b"GET http://%s/mismatch HTTP/1.1\r\nHost: %s\r\n\r\n" % (first.encode(), second.encode()))
        assert client.response().status == 400
    assert never(lambda: front.saw_anywhere("/mismatch"))
    assert front.sites[second].targets() in (["/absolute"], ["http://%s/absolute" % second])


@pytest.mark.parametrize("missing, status", [("unknown", 502), ("dead", 503)])
def test_request_without_a_route_gets_an_error_and_the_next_its_own_backend(front, missing, status):
    first, second = front.hosts
    lost = getattr(front, missing)
    with Session(front.port) as session:
        assert session.get(first, "/one").body == front.name(first)
        response = session.get(lost, "/lost")
        assert response.status == status
        assert lost.encode() in response.body
        assert (response.header("content-type") or "").startswith("text/plain")
        assert session.get(second, "/two").body == front.name(second)
        assert session.get(first, "/three").body == front.name(first)
    assert never(lambda: front.saw_anywhere("/lost"))
    front.assert_each_site_saw_only_its_host()


def test_filter_path_applies_to_every_request(start_services, backend):
    site = Site(backend, "index")
    port = start_forwarder(start_services, [
        {"name": "index", "addr": site.addr, "host": "a.local", "filter": {"path": "/index"}}])
    with Session(port) as session:
        first = session.get("a.local", "/index.html")
        assert (first.status, first.body) == (200, b"index")
        second = session.get("a.local", "/secret.html")
        assert second.status == 502
        assert b"a.local" in second.body
    assert never(lambda: site.saw("/secret.html"))
    assert site.targets() == ["/index.html"]


def test_a_tunnel_client_routes_each_request_by_path_when_a_node_filters_by_path(start_services, backend):
    # A stream is one host's, so the client pipes it, unless a node filters by path: then
    # every request on the kept-alive stream is routed on its own, as at the forwarder.
    index, rest = Site(backend, "index"), Site(backend, "rest")
    dep = Deployment(start_services, [("a.local", TUNNEL_A)])
    dep.client("client", TUNNEL_A, [
        {"name": "index", "addr": index.addr, "host": "a.local", "filter": {"path": "/index"}},
        {"name": "rest", "addr": rest.addr, "host": "a.local", "filter": {"path": "/other"}}])
    dep.wait_connections(TUNNEL_A, 1)
    with Session(dep.entrypoint) as session:
        for path, name in (("/index.html", b"index"), ("/other", b"rest"), ("/index2", b"index"),
                           ("/other2", b"rest")):
            response = session.get("a.local", path)
            assert (response.status, response.body) == (200, name)
    assert index.targets() == ["/index.html", "/index2"] and rest.targets() == ["/other", "/other2"]


def test_a_tunnel_stream_of_one_host_reaches_its_node_over_one_connection(start_services, backend):
    site = Site(backend, "a")
    dep = Deployment(start_services, [("a.local", TUNNEL_A)])
    dep.client("client", TUNNEL_A, [{"name": "a", "addr": site.addr, "host": "a.local"}])
    dep.wait_connections(TUNNEL_A, 1)
    with Session(dep.entrypoint) as session:
        for i in range(5):
            assert session.get("a.local", "/%d" % i).body == b"a"
    assert site.targets() == ["/%d" % i for i in range(5)]
    assert site.connections == 1


# -- bodies and framing ---------------------------------------------------------------------

def test_content_length_bodies_both_ways(front):
    first, second = front.hosts
    payloads = {first: bytes(range(256)) * 400, second: b"B" * 70_000}
    with Client(front.port) as client:
        for host in (first, second):
            response = client.get(host, "/upload", "POST", body=payloads[host])
            assert response.status == 200
            assert response.body == front.name(host) + b":" + payloads[host]
        assert client.get(first).body == front.name(first)


def test_chunked_bodies_with_trailers_both_ways(front):
    first, second = front.hosts
    chunks = [b"x" * 10, b"y" * 70_000, b"z"]
    with Client(front.port) as client:
        assert client.get(first).body == front.name(first)
        client.send(b"POST /chunked HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\nTrailer: X-Checksum\r\n\r\n"
                    % second.encode() + chunked_body(chunks, [b"X-Checksum: 42"]))
        response = client.response()
        assert response.status == 200
        assert response.body == front.name(second) + b":" + b"".join(chunks)
        assert response.header("x-trailers") == "x-checksum=42"          # the request's trailer arrived
        assert ("x-site-trailer", front.name(second).decode()) in response.trailers
        assert client.get(first).body == front.name(first)


def test_expect_100_continue(front):
    first, second = front.hosts
    body = b"q" * 5000
    with Client(front.port) as client:
        assert client.get(first).body == front.name(first)
        client.send(request(second, "/upload", "POST", ["Expect: 100-continue"], body)[:-len(body)])
        interim = client.response(interim=True)
        assert interim.status == 100
        client.send(body)
        final = client.response()
        assert (final.status, final.body) == (200, front.name(second) + b":" + body)
        assert client.get(first).body == front.name(first)


def test_head_204_and_304_carry_no_body(front):
    first, second = front.hosts
    with Client(front.port) as client:
        head = client.get(first, "/", "HEAD")
        assert (head.status, head.site) == (200, front.sites[first].name)
        assert head.header("content-length") == str(len(front.name(first)))
        no_content = client.get(second, "/204")
        assert (no_content.status, no_content.site) == (204, front.sites[second].name)
        not_modified = client.get(first, "/304")
        assert (not_modified.status, not_modified.site) == (304, front.sites[first].name)
        last = client.get(second, "/")
        assert (last.status, last.body) == (200, front.name(second))


def test_close_delimited_response_reaches_the_client_whole(front):
    first, second = front.hosts
    with Client(front.port) as client:
        assert client.get(second).body == front.name(second)
        response = client.get(first, "/eof")
        assert response.status == 200
        assert response.body == front.name(first) + b":" + Site.EOF_BODY


def test_connection_close_from_the_client(front):
    first, second = front.hosts
    with Client(front.port) as client:
        assert client.get(first).body == front.name(first)
        response = client.get(second, "/", headers=["Connection: close"])
        assert (response.status, response.body) == (200, front.name(second))
        # Whoever ends the connection says so in the answer: clients reuse one that does not.
        assert closes(response.fields)
        assert client.closed()


def test_connection_close_from_the_backend(front):
    first, second = front.hosts
    with Client(front.port) as client:
        assert client.get(first).body == front.name(first)
        response = client.get(second, "/bye")
        assert (response.status, response.body) == (200, front.name(second))
        if closes(response.fields):
            assert client.closed()
        else:   # the proxy kept the client's connection: it must still route
            assert client.get(first).body == front.name(first)
            assert client.get(second).body == front.name(second)


def test_a_pooled_node_closing_its_connection_is_passed_on_and_not_reused(start_services, backend):
    """A node ending its connection (nginx's keepalive_requests, say): the answer reaches the
    client as sent, the client's connection closes after it, and the next client gets a fresh one."""
    site = Site(backend, "a")
    port = start_forwarder(start_services, [{"name": "a", "addr": site.addr, "host": "a.local"}])
    with Client(port) as client:
        assert client.get("a.local", "/one").body == b"a"
        bye = client.get("a.local", "/bye")
        assert (bye.status, bye.body, closes(bye.fields)) == (200, b"a", True)
        assert client.closed()
    with Client(port) as client:
        assert client.get("a.local", "/two").body == b"a"
    assert site.targets() == ["/one", "/bye", "/two"]
    assert site.connections == 2          # the closed connection was not taken from the pool


def test_websocket_upgrade_then_raw_bytes_both_ways(front):
    first, second = front.hosts
    messages = [b"\x81\x05hello", b"GET /not-a-request HTTP/1.1\r\nHost: %s\r\n\r\n" % first.encode(),
                bytes(range(256)) * 300]
    with Client(front.port) as client:
        assert client.get(first).body == front.name(first)
        client.send(b"GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
                    % second.encode())
        switched = client.response()
        assert (switched.status, switched.site) == (101, front.sites[second].name)
        for message in messages:
            client.send(message)
            assert client.peer.exactly(len(message)) == message
    assert front.sites[second].targets() == ["/ws"]
    assert front.sites[first].targets() == ["/"]


# -- request smuggling --------------------------------------------------------------------------

def _smuggled(host):
    return b"GET /smuggled HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode()


def _cl_and_te(host):
    body = b"0\r\n\r\n" + _smuggled(host)
    return (b"POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
            % (host.encode(), len(body)) + body)


def _two_content_lengths(host):
    return (b"POST /upload HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nContent-Length: 0\r\n\r\n"
            % (host.encode(), len(_smuggled(host))) + _smuggled(host))


def _bare_lf_in_chunk_size(host):
    return (b"POST /upload HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n"
            % host.encode() + _smuggled(host))


def _obs_fold(host):
    return (b"GET /folded HTTP/1.1\r\nHost: %s\r\nX-Pad: x\r\n Content-Length: %d\r\n\r\n"
            % (host.encode(), len(_smuggled(host))) + _smuggled(host))


def _non_hex_chunk_size(host):
    return (b"POST /upload HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n"
            % host.encode() + _smuggled(host))


ATTACKS = {"content-length-and-transfer-encoding": _cl_and_te, "two-content-lengths": _two_content_lengths,
           "bare-lf-in-chunk-size": _bare_lf_in_chunk_size, "obs-fold": _obs_fold,
           "non-hex-chunk-size": _non_hex_chunk_size}


@pytest.mark.parametrize("attack", list(ATTACKS))
@pytest.mark.parametrize("position", ["first", "after-a-good-request"])
def test_request_smuggling_gets_400_and_a_close(front, attack, position):
    host = front.hosts[0]
    with Client(front.port) as client:
        if position != "first":
            assert client.get(host, "/good").body == front.name(host)
        client.send(ATTACKS[attack](host))
        try:
            response = client.response()
        except (EOFError, ConnectionError) as exc:
            pytest.fail("closed without a 400: %r" % exc)
        assert response.status == 400
        assert client.closed()
    assert never(lambda: front.saw_anywhere("/smuggled"))


# -- upstream connections at the forwarder ----------------------------------------------------

@pytest.mark.parametrize("then", ["nothing", "peer-closes", "peer-resets", "unsolicited-bytes", "closed-here"])
def test_a_pooled_connection_is_healthy_only_while_idle_and_open(socket_pair, then):
    from gostgev.handler.http1.routes import _healthy

    ours, node = socket_pair()
    assert _healthy(ours)
    if then == "peer-closes":
        node.close()
    elif then == "peer-resets":
        node.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        node.close()
    elif then == "unsolicited-bytes":
        node.sendall(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    elif then == "closed-here":
        ours.close()
    expected = then == "nothing"
    assert wait_until(lambda: _healthy(ours) == expected, timeout=2)
    assert _healthy(ours) == expected


@pytest.mark.parametrize("client_says_close", [False, True], ids=["client-just-closes", "client-connection-close"])
def test_idle_upstream_connections_are_reused_by_later_clients(start_services, backend, client_says_close):
    site = Site(backend, "a")
    port = start_forwarder(start_services, [{"name": "a", "addr": site.addr, "host": "a.local"}])
    clients = 10
    for i in range(clients):
        with Client(port) as client:
            response = client.get("a.local", "/n%d" % i, headers=["Connection: close"] if client_says_close else [])
            assert (response.status, response.body) == (200, b"a")
    assert site.targets() == ["/n%d" % i for i in range(clients)]
    assert site.connections < clients


@pytest.mark.parametrize("after", ["close", "bye"], ids=["closes-silently", "says-close-and-closes"])
def test_backend_closing_after_each_response_never_fails_a_request(start_services, backend, after):
    site = Site(backend, "a", after="close" if after == "close" else "keep-alive")
    port = start_forwarder(start_services, [{"name": "a", "addr": site.addr, "host": "a.local"}])
    path = "/bye" if after == "bye" else "/"
    for _ in range(20):
        with Client(port) as client:
            response = client.get("a.local", path)
            assert (response.status, response.body) == (200, b"a")
    assert len(site.seen) == 20


@pytest.mark.parametrize("client_style", ["new-connections", "keep-alive-session"])
def test_backend_answering_connection_close_is_not_reused(start_services, backend, client_style):
    site = Site(backend, "a", after="announce-close")
    port = start_forwarder(start_services, [{"name": "a", "addr": site.addr, "host": "a.local"}])
    with Session(port) as session:
        for i in range(5):
            if client_style == "new-connections":
                with Client(port) as client:
                    response = client.get("a.local", "/n%d" % i)
            else:
                response = session.get("a.local", "/n%d" % i)
            assert (response.status, response.body) == (200, b"a")
    assert site.reused_after_close == 0
    assert site.connections == 5


# -- nginx in front, keeping its upstream connections alive across hosts -------------------------

NGINX_LOCATION = """\
location / {
    proxy_pass http://gost;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $host;
}
"""


@pytest.mark.parametrize("kind", ["forwarder", "entrypoint"])
def test_nginx_with_upstream_keepalive_in_front(make_front, nginx, kind):
    front = make_front(kind)
    proxy = nginx(http="upstream gost {\n    server 127.0.0.1:%d;\n    keepalive 4;\n}" % front.port,
                  server=NGINX_LOCATION)
    hosts = [front.hosts[i % 2] for i in range(40)]
    got = []
    with Session(proxy.port) as session:
        for i, host in enumerate(hosts):
            response = session.get(host, "/n%d" % i)
            got.append((response.status, response.body))
    wrong = [(i, host, answer) for i, (host, answer) in enumerate(zip(hosts, got, strict=True))
             if answer != (200, front.name(host))]
    assert not wrong, "%d of %d answered wrongly, first ones: %r\n%s" % (len(wrong), len(hosts), wrong[:4], proxy.log())
    front.assert_each_site_saw_only_its_host()


def test_a_bad_chunk_in_the_middle_of_a_body_cuts_the_connection_without_hanging(front):
    """Bad framing after part of a request went upstream: that request cannot be answered,
    so the client is cut at once (waiting for its answer would wait forever)."""
    host = front.hosts[0]
    with Client(front.port) as client:
        client.send(b"POST /upload HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
                    % host.encode())
        assert wait_until(lambda: front.saw_anywhere("/upload"), 5)
        client.send(b"zz\r\nGET /smuggled HTTP/1.1\r\nHost: %s\r\n\r\n" % host.encode())
        assert client.closed()
    assert never(lambda: front.saw_anywhere("/smuggled"))


@pytest.mark.parametrize("kind", FRONTS)
def test_bodies_larger_than_a_read_both_ways(make_front, kind):
    """Several reads' worth (the proxy reads 128 KiB at a time) each way, on every front,
    then the connection goes on: nothing is left waiting in a buffer."""
    front = make_front(kind)
    first, second = front.hosts
    payload = bytes(range(251)) * 4200           # about 1 MiB, not a multiple of any read size
    with Client(front.port) as client:
        response = client.get(first, "/upload", "POST", body=payload)
        assert (response.status, response.body) == (200, front.name(first) + b":" + payload)
        assert client.get(second).body == front.name(second)


def test_a_connection_that_carries_a_proxy_header_is_never_pooled(start_services, backend):
    """The first node is down, the fallback gets a PROXY header naming the client: that
    connection is this client's alone, so the next client gets one of its own."""
    headers = []

    def proxied(sock, _address):
        sock.settimeout(10)
        peer = Peer(sock)
        headers.append(peer.line())
        for _ in range(100):
            try:
                peer.head()
            except (EOFError, OSError):
                return
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\np")

    site = backend(proxied)
    raw = forwarder_config([
        {"name": "down", "addr": dead_addr(backend), "host": "a.local", "metadata": {"maxFails": 100}},
        {"name": "proxied", "addr": site.addr, "host": "a.local", "metadata": {"proxyProtocol": 1}}])
    raw["services"][0]["forwarder"]["selector"] = {"strategy": "fifo"}   # the dead node stays first
    port = start_services(raw)["proxy"].address[1]
    sources = []
    for _ in range(2):
        with Client(port) as client:
            sources.append(client.sock.getsockname()[1])
            assert client.get("a.local").body == b"p"
    assert site.connections == 2
    assert [h.split(b" ")[4] for h in headers] == [str(p).encode() for p in sources]


@pytest.mark.parametrize("where", ["forwarder", "entrypoint"])
def test_a_later_head_must_come_whole_within_the_head_timeout(start_services, backend, where):
    """A keep-alive connection may sit idle between requests, but a request head, once
    begun, must be complete within the head timeout (sniffing.timeout, entrypoint.headerTimeout)."""
    site = Site(backend, "a")
    if where == "forwarder":
        raw = forwarder_config([{"name": "a", "addr": site.addr, "host": "a.local"}])
        raw["services"][0]["handler"]["metadata"]["sniffing.timeout"] = "1s"
        port = start_services(raw)["proxy"].address[1]
    else:
        dep = Deployment(start_services, [("a.local", TUNNEL_A)], **{"entrypoint.headerTimeout": "1s"})
        dep.client("client", TUNNEL_A, [{"name": "a", "addr": site.addr, "host": "a.local"}])
        dep.wait_connections(TUNNEL_A, 1)
        port = dep.entrypoint
    with Client(port) as client:
        assert client.get("a.local").body == b"a"
        client.sock.settimeout(1.5)          # idle for longer than the head timeout: still open
        with pytest.raises(TimeoutError):
            client.sock.recv(1)
        client.sock.settimeout(TIMEOUT)
        assert client.get("a.local", "/again").body == b"a"
        client.send(b"GET /slow-head HTTP/1.1\r\nHo")
        started = time.monotonic()
        assert client.closed()
        assert time.monotonic() - started < TIMEOUT
    assert not site.saw("/slow-head")
