"""A tunnel client that stops answering (SIGSTOP: its TCP connection stays up)
costs the visitors at most one slow request, with the default mux settings.

The tunnel server runs in this process; the clients are ``gostgev``
processes with the default keepalive (a NOP every 10 s), so the only quick
sign of life the server gets is the window update a smux v2 peer sends on
its first read of a new stream.
"""

import re
import signal
import time

import gevent
import pytest
from gevent.event import Event

from gostgev.codec.mux import CMD_NOP, CMD_PSH, CMD_SYN, CMD_UPD, encode_frame, encode_upd
from gostgev.codec.relay import TunnelID
from gostgev.handler.http1 import Route, serve_http
from gostgev.logsetup import get_logger
from gostgev.netio.mux import MuxConfig, MuxSession
from gostgev.tunnel import TunnelRegistry
from tests.conftest import connect, holds_for, read_request_head, recv_all, wait_until
from tests.handler.test_tunnel import TUNNEL_A, Deployment
from tests.system.test_faults import client_process as faults_client

pytestmark = pytest.mark.timeout(90)

#: what the goals allow a visitor to wait while a connection is found stalled
PATIENCE = 3.0
#: seconds the service takes to answer ``/late``: longer than the stall timeout (1 s)
LATE = 2.0


def client_process(tmp_path, name, server_port, backend_addr):
    """A tunnel client process with GOST's default mux settings."""
    return faults_client(tmp_path, name, server_port, backend_addr, mux={})


class Site:
    """A backend answering each request with its own name, the method and the body it got.

    ``/slow`` sends half its answer, then the rest once ``release`` is set;
    ``/late`` answers after ``LATE`` seconds.
    """

    def __init__(self, backend, name):
        self.name = name
        self.seen = []                 # (method, path, body) per request
        self.release = Event()
        self.server = backend(self._handle)
        self.addr = self.server.addr

    def _handle(self, sock, _address):
        head = read_request_head(sock)
        if not head:
            return
        head, _, body = head.partition(b"\r\n\r\n")
        method, path = head.split(b" ")[:2]
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                for _ in range(100):
                    if len(body) >= int(value):
                        break
                    body += sock.recv(65536)
        self.seen.append((method.decode(), path.decode(), body))
        if path == b"/late":
            gevent.sleep(LATE)      # the slow service itself
        if path == b"/slow":
            sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello")
            self.release.wait(30)
            sock.sendall(b"world")
            return
        answer = b"%s %s %s" % (self.name.encode(), method, body)
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(answer), answer))


def request(port, raw, timeout=5.0):
    """Send ``raw`` on a new connection: ``(status, body, seconds)``; status None if no answer came."""
    started = time.monotonic()
    try:
        with connect(port, timeout=timeout) as sock:
            sock.sendall(raw)
            response = recv_all(sock)
    except OSError:
        response = b""
    head, _, body = response.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else None
    return status, body, time.monotonic() - started


def get(port, host="a.local", path="/"):
    return request(port, b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path.encode(), host.encode()))


def post(port, body, host="a.local"):
    return request(port, b"POST /post HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                   % (host.encode(), len(body), body))


class Pair:
    """A tunnel server with two client processes: ``victim`` (site "victim") and ``alive`` (site "alive")."""

    def __init__(self, start_services, backend, processes, tmp_path):
        self.sites = {name: Site(backend, name) for name in ("victim", "alive")}
        self.dep = Deployment(start_services, [("a.local", TUNNEL_A)])
        self.victim_process = client_process(tmp_path, "victim", self.dep.port, self.sites["victim"].addr)
        processes.append(self.victim_process)
        self.dep.wait_connections(TUNNEL_A, 1)
        self.victim = self.dep.registry.get(TunnelID.parse(TUNNEL_A)).connectors[0]
        self.processes, self.tmp_path = processes, tmp_path

    def add_alive(self):
        self.processes.append(client_process(self.tmp_path, "alive", self.dep.port, self.sites["alive"].addr))
        self.dep.wait_connections(TUNNEL_A, 2)

    def freeze(self):
        self.victim_process.send_signal(signal.SIGSTOP)

    def thaw(self):
        self.victim_process.send_signal(signal.SIGCONT)


@pytest.fixture
def pair(start_services, backend, processes, tmp_path):
    made = Pair(start_services, backend, processes, tmp_path)
    yield made
    made.thaw()     # the processes fixture kills it afterwards


def stalled_since(connector, limit=10.0):
    """A greenlet whose value is when ``connector`` was first seen stalled (None if not within ``limit``)."""

    def watch():
        return time.monotonic() if wait_until(lambda: getattr(connector, "stalled", False), limit, 0.01) else None

    return gevent.spawn(watch)


# -- end to end, with real client processes ---------------------------------------------------------

def test_a_frozen_client_costs_the_visitors_at_most_one_slow_request(pair):
    pair.add_alive()
    port = pair.dep.entrypoint
    warm = sorted(get(port)[1].split()[0] for _ in range(2))
    assert warm == [b"alive", b"victim"]            # both clients serve; the next pick is the victim
    pair.freeze()
    frozen_at = time.monotonic()
    watcher = stalled_since(pair.victim)
    results = []
    for _ in range(20):
        results.append(get(port))
        if sum(seconds > PATIENCE for _, _, seconds in results) > 1:
            break                                   # already failed: do not wait out the rest
    latencies = ["%.2f" % seconds for _, _, seconds in results]
    assert [(status, body) for status, body, _ in results] == [(200, b"alive GET ")] * 20, latencies
    assert sum(seconds > PATIENCE for _, _, seconds in results) <= 1, latencies
    # The first request after the freeze went to the victim, waited for the
    # stall to show, and was sent again; everything after it was quick.
    assert results[0][2] < PATIENCE and max(seconds for _, _, seconds in results[1:]) < 1.0, latencies
    seen = watcher.get(timeout=15)
    assert seen is not None and seen - frozen_at < PATIENCE
    assert pair.victim.stalled and not pair.victim.closed   # passed over, not dropped


def test_a_live_client_behind_a_slow_service_is_not_taken_for_stalled(pair):
    """The gostgev client, like Go's smux, reports its first read of a stream at once."""
    watcher = stalled_since(pair.victim, limit=LATE + 1)
    status, body, seconds = get(pair.dep.entrypoint, path="/late")
    assert (status, body) == (200, b"victim GET ") and seconds >= LATE
    assert watcher.get(timeout=5) is None and not pair.victim.stalled


def test_the_frozen_client_is_taken_back_once_it_answers(pair):
    pair.add_alive()
    port = pair.dep.entrypoint
    pair.freeze()
    for _ in range(4):
        get(port)
        if getattr(pair.victim, "stalled", False):
            break
    assert pair.victim.stalled
    assert {get(port)[1] for _ in range(4)} == {b"alive GET "}
    pair.thaw()
    assert wait_until(lambda: not pair.victim.stalled, 5)
    bodies = [get(port)[1] for _ in range(4)]
    assert sorted(bodies) == [b"alive GET "] * 2 + [b"victim GET "] * 2, bodies


def test_a_post_whose_body_went_unread_is_sent_again_but_not_an_answer_begun(pair):
    port = pair.dep.entrypoint
    # An answer in progress on the victim: its head and half its body are out.
    slow = connect(port, timeout=10)
    slow.sendall(b"GET /slow HTTP/1.1\r\nHost: a.local\r\nConnection: close\r\n\r\n")
    partial = b""
    for _ in range(100):
        if partial.endswith(b"hello"):
            break
        partial += slow.recv(65536)
    assert partial.startswith(b"HTTP/1.1 200 OK") and partial.endswith(b"hello")
    pair.add_alive()
    pair.freeze()
    results = []
    for n in range(4):
        results.append(post(port, b"payload-%d" % n))
        if getattr(pair.victim, "stalled", False) or results[-1][2] > PATIENCE:
            break
    latencies = ["%.2f" % seconds for _, _, seconds in results]
    assert [(status, body) for status, body, _ in results] == \
        [(200, b"alive POST payload-%d" % n) for n in range(len(results))], latencies
    assert max(seconds for _, _, seconds in results) < PATIENCE, latencies
    assert pair.victim.stalled
    # Each POST reached a backend once; the GET whose answer had begun was not sent again.
    alive = pair.sites["alive"].seen
    assert sorted(body for method, _, body in alive if method == "POST") == \
        [b"payload-%d" % n for n in range(len(results))]
    assert [path for _, path, _ in pair.sites["victim"].seen + alive].count("/slow") == 1
    slow.settimeout(0.5)
    with pytest.raises(TimeoutError):
        slow.recv(65536)                            # still waiting for the rest, from the victim
    pair.thaw()
    pair.sites["victim"].release.set()
    slow.settimeout(10)
    assert recv_all(slow) == b"world"               # the same answer, finished
    slow.close()
    assert [path for _, path, _ in pair.sites["victim"].seen + alive].count("/slow") == 1


# -- the mux session: keepalive deadline and stall detection, one end spoken by hand ------------------

class RawPeer:
    """The tunnel client's end, spoken by hand: it sends what a test tells it, and reads nothing."""

    def __init__(self, sock, version):
        self.sock, self.version = sock, version

    def send(self, cmd, sid, payload=b""):
        self.sock.sendall(encode_frame(self.version, cmd, sid, payload))


@pytest.fixture
def raw_session(socket_pair):
    made = []

    def make(config):
        ours, theirs = socket_pair(tcp=False)
        session = MuxSession(ours, config, client=True, name="test tunnel")
        made.append(session)
        return session, RawPeer(theirs, config.version)

    yield make
    for session in made:
        session.close()


def test_keepalive_timeout_counts_from_the_last_frame_received(raw_session):
    """A silent peer is dropped keepaliveTimeout after its last frame, not up to twice that."""
    session, peer = raw_session(MuxConfig(keepalive_interval=0.5, keepalive_timeout=1.0))
    gevent.sleep(0.2)       # not a wait for anything: the last frame comes apart from the session's start
    peer.send(CMD_NOP, 0)                           # just after the session began: then silence
    last_frame = time.monotonic()
    assert session.wait_closed(timeout=3)
    waited = time.monotonic() - last_frame
    assert session.close_reason == "keepalive timeout"
    assert 0.9 <= waited < 1.2, "closed %.2fs after the last frame" % waited


@pytest.mark.parametrize("version", [2, 1])
def test_a_stream_unanswered_for_the_stall_timeout_stalls_the_session_until_anything_arrives(raw_session, version):
    session, peer = raw_session(MuxConfig(version=version, keepalive_disabled=True, stall_timeout=0.3))
    calls = []
    stream = session.open_stream()
    stream.on_stall = lambda: calls.append(stream.id)
    assert not session.stalled
    opened = time.monotonic()
    assert wait_until(lambda: session.stalled, 2)
    assert 0.25 <= time.monotonic() - opened < 0.6
    # v2: streams that asked are told; v1 has no early answer to expect, so a
    # stall there only moves new streams elsewhere.
    assert calls == ([stream.id] if version == 2 else [])
    peer.send(CMD_NOP, 0)                           # any frame at all: alive again
    assert wait_until(lambda: not session.stalled, 2)
    # A stream answered in time (the peer's window update on its first read) stalls nothing.
    answered = session.open_stream()
    peer.send(CMD_PSH if version == 1 else CMD_UPD, answered.id,
              b"hi" if version == 1 else encode_upd(2, answered.id, 5, 1048576)[8:])
    assert holds_for(lambda: not session.stalled, 0.5)     # past the stall timeout
    assert calls == ([stream.id] if version == 2 else [])


def test_a_stream_opened_by_the_peer_or_no_stream_at_all_never_stalls(raw_session):
    session, peer = raw_session(MuxConfig(keepalive_disabled=True, stall_timeout=0.2))
    peer.send(CMD_SYN, 2)
    assert session.accept_stream(timeout=2) is not None
    assert holds_for(lambda: not session.stalled, 0.5)     # silence, but nobody waits for an answer


def test_stall_timeout_is_a_mux_option_and_zero_turns_it_off(raw_session):
    from gostgev.config.section import Metadata

    assert MuxConfig().stall_timeout == 1.0
    assert MuxConfig.from_metadata(Metadata({"mux.stallTimeout": "500ms"})).stall_timeout == 0.5
    assert MuxConfig.from_metadata(Metadata({"mux.stallTimeout": 0})).stall_timeout == 0
    session, _ = raw_session(MuxConfig(keepalive_disabled=True, stall_timeout=0))
    session.open_stream()
    assert holds_for(lambda: not session.stalled, 0.3)


# -- the HTTP engines, with mux sessions on socket pairs ------------------------------------------------

def serve_requests(stream):
    """Answer each request on ``stream`` with "alive", its method and its body."""
    buf = b""
    for _ in range(100):
        while b"\r\n\r\n" not in buf:
            chunk = stream.recv(65536)
            if not chunk:
                return
            buf += chunk
        head, _, buf = buf.partition(b"\r\n\r\n")
        length = re.search(rb"(?i)content-length: *(\d+)", head)
        length = int(length.group(1)) if length else 0
        while len(buf) < length:
            buf += stream.recv(65536)
        body, buf = buf[:length], buf[length:]
        answer = b"alive %s %s" % (head.split(b" ")[0], body)
        stream.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(answer), answer))


def read_response(sock):
    """One response with a Content-Length body."""
    data = b""
    for _ in range(100):
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            if len(body) >= length:
                return body
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    return data


@pytest.mark.parametrize("plain", [True, False], ids=["callbacks", "greenlets"])
def test_both_http_engines_send_an_unread_request_again_once_its_session_stalls(plain, socket_pair):
    config = MuxConfig(keepalive_disabled=True, stall_timeout=0.3)
    frozen_end, unread = socket_pair(tcp=False)        # nothing ever reads ``unread``
    frozen = MuxSession(frozen_end, config, client=True, name="frozen")
    ours, theirs = socket_pair(tcp=False)
    alive = MuxSession(ours, config, client=True, name="alive")
    peer = MuxSession(theirs, config, client=False, name="peer")
    client, inner = socket_pair(tcp=False)
    jobs = []

    def accept():
        for _ in range(10):
            jobs.append(gevent.spawn(serve_requests, peer.accept_stream()))

    route = Route("tunnel", lambda: (frozen.open_stream(), {"via": "frozen"}, False),
                  reroute=lambda: (alive.open_stream(), {"via": "alive"}))
    jobs.append(gevent.spawn(accept))
    started = time.monotonic()
    first = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\n\r\nbody"    # as the entrypoint read it
    jobs.append(gevent.spawn(serve_http, inner, "127.0.0.1", first, lambda head, current: route,
                             get_logger("test"), plain=plain))
    try:
        client.settimeout(5)
        assert read_response(client) == b"alive POST body"
        assert 0.25 < time.monotonic() - started < 1.5
        assert frozen.stalled
        # The connection goes on, on the stream that answered.
        client.sendall(b"GET /next HTTP/1.1\r\nHost: a\r\n\r\n")
        assert read_response(client) == b"alive GET "
        assert peer.num_streams == 1
    finally:
        gevent.killall(jobs)
        for session in (frozen, alive, peer):
            session.close()


# -- the registry --------------------------------------------------------------------------------------

class FakeConnector:
    def __init__(self, name, stalled=False, weight=0):
        self.name, self.stalled, self.weight = name, stalled, weight
        self.closed = self.udp = False

    def open_stream(self):
        return "stream"


def test_pick_passes_over_a_stalled_connector_while_another_answers():
    tunnel_id = TunnelID.parse(TUNNEL_A)
    a, b, c = FakeConnector("a"), FakeConnector("b"), FakeConnector("c", weight=255)
    registry = TunnelRegistry()
    for connector in (a, b, c):
        registry.add(tunnel_id, connector)

    def picks(n):
        return [registry.open_stream(tunnel_id)[1].name for _ in range(n)]

    assert picks(3) == ["c"] * 3                    # exclusive while it answers
    c.stalled = True
    assert sorted(picks(4)) == ["a", "a", "b", "b"]   # stalled: the others take over
    b.stalled = True
    assert picks(3) == ["a"] * 3
    a.stalled = True
    assert sorted(set(picks(3))) == ["c"]           # all stalled: never refused, as before
    assert registry.get(tunnel_id).answering() is False
    b.stalled = False
    assert registry.get(tunnel_id).answering() is True and picks(2) == ["b", "b"]
