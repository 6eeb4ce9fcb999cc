"""Data integrity through every path: every byte arrives, in order, exactly once.

The routes: the ``tcp`` forwarder (plain, and sniffing an HTTP head), and a
tunnel (entrypoint -> tunnel server -> one rtcp client connection ->
backend) over plain TCP, TLS, WebSocket and WebSocket over TLS.  The client
and the backend are both ours: each side hashes what it sends while sending
and what it receives while receiving, and the test compares lengths and
SHA-256 digests taken on opposite ends, so a lost, duplicated, reordered or
truncated byte anywhere in between shows up as a mismatch.

Wire format of a test connection: the route's head, a 4-byte connection
number, then payload.  Where something routes HTTP, the head is an upgrade
request that the backend answers with ``101`` before anything else, and the
client sends its number only after reading that answer: from the switch on,
every proxy on the way is a plain pipe, which is what these tests measure.
Elsewhere the head is empty.  The backend checks that the head arrived
unchanged, then runs the test's script for that connection number.
"""

import hashlib
import random
import socket as _stdsocket
import struct
import time
from dataclasses import dataclass

import gevent
import gevent.event
import pytest
from gevent import socket

from gostgev.codec import relay
from gostgev.netio.mux import stream as mux_stream
from tests.conftest import LOCALHOST, holds_for, wait_until
from tests.handler.test_forward import proxy_config
from tests.handler.test_tunnel import TUNNEL_A, client_config, server_config

MiB = 1 << 20
HEAD = (b"GET /integrity HTTP/1.1\r\nHost: data.local\r\nConnection: Upgrade\r\n"
        b"Upgrade: gostgev-integrity\r\n\r\n")
SWITCHED = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: gostgev-integrity\r\n\r\n"
PREAMBLE = struct.Struct("!I")
DIGEST_SIZE = 32
#: longest any single socket operation may block before the test calls it a stall
OP_TIMEOUT = 20.0
#: an odd write size, so writes line up with no buffer or frame size on the way
BULK_PIECE = 256 * 1024 - 3

ROUTES = ["forward", "forward-sniffing", "tunnel", "tunnel-tls", "tunnel-ws", "tunnel-wss"]


# -- byte streams that both ends can account for -----------------------------------------

def pieces(seed, size, piece=BULK_PIECE):
    """``size`` pseudo-random bytes from ``seed``, yielded ``piece`` bytes at a time."""
    rng = random.Random(seed)
    left = size
    while left > 0:
        n = min(piece, left)
        yield rng.randbytes(n)
        left -= n


def send_stream(sock, seed, size, piece=BULK_PIECE, shut=True):
    """Send ``size`` bytes; ``(bytes sent, SHA-256 of them)`` as the sender saw it."""
    digest, sent = hashlib.sha256(), 0
    for data in pieces(seed, size, piece):
        sock.sendall(data)
        digest.update(data)
        sent += len(data)
    if shut:
        sock.shutdown(_stdsocket.SHUT_WR)
    return sent, digest.hexdigest()


def drain(sock, expected, read_size=65536, keep_tail=0):
    """Read to EOF; ``(bytes received, SHA-256 of them)``, plus the last ``keep_tail`` bytes
    (not hashed) if asked.  Reading stops a little past ``expected`` so that a stream
    delivering too much ends the loop instead of running on."""
    digest, size, tail = hashlib.sha256(), 0, b""
    while size <= expected + keep_tail:
        data = sock.recv(read_size)
        if not data:
            break
        size += len(data)
        if keep_tail:
            tail += data
            data, tail = tail[:-keep_tail], tail[-keep_tail:]
        digest.update(data)
    if keep_tail:
        return (size - len(tail), digest.hexdigest()), tail
    return size, digest.hexdigest()


def recv_exact(sock, n):
    """Exactly ``n`` bytes; b"" if the peer closed before sending any."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            if data:
                raise ConnectionError("EOF after %d of %d bytes" % (len(data), n))
            return b""
        data += chunk
    return data


def sha(data):
    return hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Plan:
    """What one connection carries: sizes and seeds of each direction."""

    up: int
    down: int
    up_seed: int
    down_seed: int


def plan(conn_id, up, down, salt=0):
    # Distinct seeds per direction and per connection: a byte delivered to the
    # wrong stream, or echoed back, cannot pass for the right one.
    return Plan(up, down, (salt << 32) | (conn_id << 1), (salt << 32) | (conn_id << 1) | 1)


# -- the backend ------------------------------------------------------------------------------

class Ledger:
    """The backend: checks each connection's head and runs ``script(sock, conn_id)``.

    What the scripts record goes into ``received``/``sent``; anything that
    goes wrong on this side lands in ``errors``, which every test checks,
    because an exception in a server greenlet would otherwise only be logged.
    """

    def __init__(self, make_backend, head):
        self.head = head
        self.script = None
        self.received, self.sent, self.errors, self.empty = {}, {}, [], 0
        self.limit = 3 * OP_TIMEOUT     #: whole-connection deadline on this side
        self.server = make_backend(self._serve)
        self.addr = self.server.addr

    def _serve(self, sock, _address):
        conn_id = None
        try:
            sock.settimeout(OP_TIMEOUT)
            with gevent.Timeout(self.limit):
                head = recv_exact(sock, len(self.head)) if self.head else b""
                if head != self.head:
                    if not head:
                        self.empty += 1
                        return
                    raise AssertionError("head changed on the way: %r" % head)
                if self.head:
                    sock.sendall(SWITCHED)
                first = recv_exact(sock, PREAMBLE.size)
                if not first:
                    self.empty += 1
                    return
                (conn_id,) = PREAMBLE.unpack(first)
                self.script(sock, conn_id)
        except BaseException as exc:   # gevent.Timeout is not an Exception
            self.errors.append((conn_id, repr(exc)))

    def wait(self, ids, timeout=OP_TIMEOUT):
        """Until the backend has finished with every connection in ``ids``."""
        ids = set(ids)
        done = wait_until(lambda: ids <= set(self.received) | {e[0] for e in self.errors}, timeout)
        assert not self.errors, self.errors[:5]
        assert done, "backend never finished %s" % sorted(ids - set(self.received))[:10]


def duplex_script(ledger, plans, piece=BULK_PIECE, stall=None):
    """Backend: send the plan's download while draining the upload; both at once.

    With ``stall`` = ``(event, ids)``, the upload of connections in ``ids`` is
    not read until ``event`` is set.
    """
    def script(sock, conn_id):
        p = plans[conn_id]
        sender = gevent.spawn(send_stream, sock, p.down_seed, p.down, piece)
        try:
            if stall is not None and conn_id in stall[1]:
                stall[0].wait(OP_TIMEOUT)
            ledger.received[conn_id] = drain(sock, p.up)
            ledger.sent[conn_id] = sender.get(timeout=OP_TIMEOUT)
        finally:
            sender.kill()

    return script


# -- routes -----------------------------------------------------------------------------------

class Route:
    """One way from a client socket to the backend."""

    def __init__(self, name, port, head, ledger, registry=None):
        self.name, self.port, self.head, self.ledger = name, port, head, ledger
        self.registry = registry
        self.client = None      #: the rtcp client service, for tunnels

    @property
    def tunneled(self):
        return self.registry is not None

    def connectors(self):
        tunnel = self.registry.get(relay.TunnelID.parse(TUNNEL_A))
        return [c for c in tunnel.connectors if not c.closed] if tunnel else []

    def connect(self, conn_id, rcvbuf=None):
        """A client connection that has already sent its head and number."""
        sock = socket.socket(_stdsocket.AF_INET, _stdsocket.SOCK_STREAM)
        try:
            if rcvbuf:
                sock.setsockopt(_stdsocket.SOL_SOCKET, _stdsocket.SO_RCVBUF, rcvbuf)
            sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
            sock.settimeout(OP_TIMEOUT)
            sock.connect((LOCALHOST, self.port))
            if self.head:
                sock.sendall(self.head)
                answer = recv_exact(sock, len(SWITCHED))
                assert answer == SWITCHED, "no switch: %r" % answer
            sock.sendall(PREAMBLE.pack(conn_id))
        except BaseException:
            sock.close()
            raise
        return sock


def _tunnel_route(name, start_services, ledger, test_ca, **mux):
    """Entrypoint -> tunnel server -> one rtcp client -> ``ledger``; ``mux`` goes to both ends."""
    transport = name.partition("-")[2] or "tcp"
    raw = server_config([("data.local", TUNNEL_A)], **mux)
    listener, dialer = {"type": transport}, {"type": transport}
    if transport in ("tls", "wss"):
        listener["tls"] = {"certFile": test_ca["server"], "keyFile": test_ca["server_key"]}
        dialer["tls"] = {"caFile": test_ca["ca"], "secure": True, "serverName": "localhost"}
    if transport in ("ws", "wss"):
        listener["metadata"] = dialer["metadata"] = {"path": "/integrity"}
    raw["services"][0]["listener"] = listener
    server = start_services(raw)["server"]
    client = client_config("client", server.address[1], TUNNEL_A,
                           [{"name": "data", "addr": ledger.addr, "host": "data.local"}], **mux)
    client["chains"][0]["hops"][0]["nodes"][0]["dialer"] = dialer
    route = Route(name, server.handler.entrypoints[0].address[1], HEAD, ledger, server.handler.registry)
    route.client = start_services(client)["client"]
    assert wait_until(lambda: len(route.connectors()) == 1, 10), "the tunnel client never registered"
    return route


@pytest.fixture(params=ROUTES)
def route(request, start_services, backend, test_ca):
    return make_route(request.param, start_services, backend, test_ca)


def make_route(name, start_services, backend, test_ca):
    if name.startswith("tunnel"):
        return _tunnel_route(name, start_services, Ledger(backend, HEAD), test_ca)
    sniffing = name == "forward-sniffing"
    ledger = Ledger(backend, HEAD if sniffing else b"")
    nodes = [{"name": "data", "addr": ledger.addr, **({"host": "data.local"} if sniffing else {})}]
    proxy = start_services(proxy_config(nodes, sniffing=sniffing))["proxy"]
    return Route(name, proxy.address[1], ledger.head, ledger)


# -- the client side --------------------------------------------------------------------------

def client_duplex(route, conn_id, p, piece=BULK_PIECE, rcvbuf=None, hold=None):
    """Send ``p.up`` while draining ``p.down``; ``(sent, received)`` as the client saw them.

    With ``hold`` (an Event), nothing is read until it is set: a stalled reader.
    """
    with route.connect(conn_id, rcvbuf) as sock:
        sender = gevent.spawn(send_stream, sock, p.up_seed, p.up, piece)
        try:
            if hold is not None:
                hold.wait(OP_TIMEOUT)
            received = drain(sock, p.down)
            return sender.get(timeout=OP_TIMEOUT), received
        finally:
            sender.kill()


def check_duplex(ledger, plans, results):
    """Each direction of each connection: sender's count and digest == receiver's."""
    ledger.wait(plans)
    for conn_id, p in plans.items():
        sent, received = results[conn_id]
        assert sent[0] == p.up and ledger.sent[conn_id][0] == p.down, conn_id
        assert ledger.received[conn_id] == sent, "upload of connection %d differs" % conn_id
        assert received == ledger.sent[conn_id], "download of connection %d differs" % conn_id


def run_parallel(route, plans, timeout, **kwargs):
    jobs = {cid: gevent.spawn(client_duplex, route, cid, p, **kwargs) for cid, p in plans.items()}
    gevent.joinall(list(jobs.values()), timeout=timeout, raise_error=True)
    unfinished = [cid for cid, job in jobs.items() if not job.ready()]
    assert not unfinished, "%d connections still running after %gs" % (len(unfinished), timeout)
    return {cid: job.value for cid, job in jobs.items()}


def varied_plans(count, rng, salt, largest=MiB):
    """``count`` plans with sizes spread log-uniformly over 1 byte .. ``largest``,
    always including both extremes, independently per direction."""
    def size():
        return max(1, int(2 ** rng.uniform(0, largest.bit_length() - 1)))

    plans = {cid: plan(cid, size(), size(), salt) for cid in range(count)}
    plans[0] = plan(0, 1, largest, salt)
    plans[1] = plan(1, largest, 1, salt)
    return plans


# -- 1. bulk, both directions at once --------------------------------------------------------

@pytest.mark.timeout(60)
def test_bulk_transfer_both_directions_at_once(route):
    """16 MiB up and a different 16 MiB down on one connection, concurrently."""
    plans = {7: plan(7, 16 * MiB, 16 * MiB, salt=1)}
    route.ledger.script = duplex_script(route.ledger, plans)
    with gevent.Timeout(45):
        results = {7: client_duplex(route, 7, plans[7])}
    check_duplex(route.ledger, plans, results)


# -- 2. half-close ---------------------------------------------------------------------------

@pytest.mark.timeout(30)
def test_client_half_close_then_reply_with_digest(route):
    """Client sends N bytes and SHUT_WR; the backend reads to EOF, then answers M bytes plus the
    SHA-256 of what it got, and closes.  The client's EOF must not cut the reply short."""
    n, m = 3 * MiB + 17, 2 * MiB + 5
    p = plan(3, n, m, salt=2)
    ledger = route.ledger

    def script(sock, conn_id):
        got = drain(sock, n)
        ledger.sent[conn_id] = send_stream(sock, p.down_seed, m, shut=False)
        sock.sendall(bytes.fromhex(got[1]))
        ledger.received[conn_id] = got

    ledger.script = script
    with gevent.Timeout(20), route.connect(3) as sock:
        sent = send_stream(sock, p.up_seed, n)
        reply, digest = drain(sock, m, keep_tail=DIGEST_SIZE)
    ledger.wait([3])
    assert sent[0] == n and ledger.received[3] == sent
    assert digest.hex() == sent[1]                      # the backend's view, sent back in-band
    assert reply == ledger.sent[3] and reply[0] == m


@pytest.mark.timeout(30)
def test_backend_half_close_while_client_keeps_sending(route):
    """The backend sends M bytes and SHUT_WR first; the client reads that EOF and only then
    sends the second half of its N bytes, which must still arrive in full."""
    n, m = 2 * MiB + 1, MiB + 3
    p = plan(4, n, m, salt=3)
    ledger = route.ledger

    def script(sock, conn_id):
        ledger.sent[conn_id] = send_stream(sock, p.down_seed, m)
        ledger.received[conn_id] = drain(sock, n)

    ledger.script = script
    saw_eof = gevent.event.Event()
    data = b"".join(pieces(p.up_seed, n))
    first, second = data[: n // 2], data[n // 2:]

    def upload(sock):
        sock.sendall(first)
        assert saw_eof.wait(OP_TIMEOUT), "no EOF from the backend"
        for start in range(0, len(second), 4099):
            sock.sendall(second[start:start + 4099])
        sock.shutdown(_stdsocket.SHUT_WR)

    with gevent.Timeout(20), route.connect(4) as sock:
        uploader = gevent.spawn(upload, sock)
        received = drain(sock, m)
        saw_eof.set()
        uploader.get(timeout=OP_TIMEOUT)
        ledger.wait([4])
        assert sock.recv(1) == b""                       # still at EOF: nothing more came
    assert received == ledger.sent[4] and received[0] == m
    assert ledger.received[4] == (n, sha(data))


@pytest.mark.timeout(30)
def test_write_then_close_at_once_delivers_everything(route):
    """close() straight after the last write, no SHUT_WR and no reading, on either end: what
    was written still arrives in full before the EOF."""
    ledger = route.ledger
    up = plan(5, 3 * MiB + 11, 0, salt=11)
    down = plan(6, 0, 3 * MiB + 13, salt=11)

    def script(sock, conn_id):
        if conn_id == 5:
            ledger.received[conn_id] = drain(sock, up.up)
        else:
            ledger.sent[conn_id] = send_stream(sock, down.down_seed, down.down, shut=False)
            ledger.received[conn_id] = None     # marks the connection done for ledger.wait
            sock.close()

    ledger.script = script
    with gevent.Timeout(20):
        with route.connect(5) as sock:
            sent = send_stream(sock, up.up_seed, up.up, shut=False)
        ledger.wait([5])
        assert sent[0] == up.up and ledger.received[5] == sent
        with route.connect(6) as sock:
            received = drain(sock, down.down)
        ledger.wait([6])
        assert received == ledger.sent[6] and received[0] == down.down


def outcome(fn, *args):
    """``fn(*args)``, or the OSError it raised, so a test can assert on either."""
    try:
        return fn(*args)
    except OSError as exc:
        return exc


#: how long the reading side pauses after the half-close in the two tests below; longer
#: than the half-closed window wait they set, as a real pause would be longer than 10 s
PAUSE = 1.0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", ["forward", "tunnel"])
def test_half_closed_client_that_pauses_reading_gets_the_whole_download(
        name, start_services, backend, test_ca, monkeypatch):
    """The client sends its request and SHUT_WR, then stops reading for a while (a busy or slow
    consumer) while a download larger than every buffer on the way is pending.  Over TCP that is
    plain back-pressure; nothing may be lost."""
    monkeypatch.setattr(mux_stream, "HALF_CLOSED_WINDOW_WAIT", PAUSE / 5)
    route = make_route(name, start_services, backend, test_ca)
    p = plan(1, 100, 16 * MiB, salt=12)
    route.ledger.script = duplex_script(route.ledger, {1: p}, piece=65536 + 7)
    with gevent.Timeout(20), route.connect(1, rcvbuf=16384) as sock:
        sent = send_stream(sock, p.up_seed, p.up)
        gevent.sleep(PAUSE)     # the pause in reading is the test
        received = outcome(drain, sock, p.down)
    route.ledger.wait([1])
    assert route.ledger.received[1] == sent
    assert received == route.ledger.sent[1], "download of %d bytes ended as %s" % (p.down, received)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("name", ["forward", "tunnel"])
def test_half_closed_backend_that_pauses_reading_gets_the_whole_upload(
        name, start_services, backend, test_ca, monkeypatch):
    """The mirror image: the backend answers and SHUT_WR first, then pauses before reading a
    large upload."""
    monkeypatch.setattr(mux_stream, "HALF_CLOSED_WINDOW_WAIT", PAUSE / 5)
    route = make_route(name, start_services, backend, test_ca)
    ledger = route.ledger
    p = plan(2, 16 * MiB, 100, salt=13)

    def script(sock, conn_id):
        ledger.sent[conn_id] = send_stream(sock, p.down_seed, p.down)
        gevent.sleep(PAUSE)     # the pause in reading is the test
        ledger.received[conn_id] = drain(sock, p.up)

    ledger.script = script
    with gevent.Timeout(20), route.connect(2) as sock:
        uploader = gevent.spawn(outcome, send_stream, sock, p.up_seed, p.up)
        received = outcome(drain, sock, p.down)
        sent = uploader.get(timeout=OP_TIMEOUT)
    ledger.wait([2])
    assert received == ledger.sent[2]
    assert ledger.received[2] == sent, "upload of %d bytes arrived as %s (client: %s)" % (
        p.up, ledger.received[2], sent)


# -- 3. many streams over one tunnel connection -----------------------------------------------

@pytest.mark.timeout(60)
def test_many_parallel_streams(route):
    """150 connections at once, sizes from 1 byte to 1 MiB each way, each with its own bytes.
    Through a tunnel they all share the single registered client connection."""
    count = 150
    plans = varied_plans(count, random.Random(150), salt=4)
    route.ledger.script = duplex_script(route.ledger, plans, piece=65536 + 7)
    before = route.connectors() if route.tunneled else None
    if before is not None:
        assert len(before) == 1
        streams_before, bound = before[0].streams, route.client.listener.bound
    results = run_parallel(route, plans, timeout=40, piece=65536 + 7)
    check_duplex(route.ledger, plans, results)
    if before is not None:
        after = route.connectors()
        assert after == before and route.client.listener.bound is bound, "the tunnel connection changed"
        assert wait_until(lambda: after[0].streams - streams_before == count, 5)
        assert wait_until(lambda: after[0].session.num_streams == 0, 5), "streams left open"


@pytest.mark.timeout(60)
def test_stalled_streams_do_not_hold_up_the_others(route):
    """Some connections stop reading (clients that leave their download unread, a backend that
    leaves their upload unread) while 60 others run: the others must all finish, intact, within
    a bound, while the stalled ones are still held; then the stalled ones complete intact."""
    rng = random.Random(60)
    fast = {cid: plan(cid, rng.randint(1, 256 * 1024), rng.randint(1, 256 * 1024), salt=5) for cid in range(60)}
    # Loopback socket buffers on the way (autotuned) soak up several MiB per connection; only
    # what does not fit reaches the 1 MiB stream window, so a stalled direction carries 16 MiB.
    slow_down = {cid: plan(cid, 1000, 16 * MiB + cid, salt=5) for cid in (100, 101)}
    slow_up = {cid: plan(cid, 16 * MiB + cid, 1000, salt=5) for cid in (200, 201)}
    plans = {**fast, **slow_down, **slow_up}
    release = gevent.event.Event()
    route.ledger.script = duplex_script(route.ledger, plans, piece=65536 + 7, stall=(release, set(slow_up)))
    slow = {cid: gevent.spawn(client_duplex, route, cid, p, piece=65536 + 7, rcvbuf=16384, hold=release)
            for cid, p in slow_down.items()}
    slow.update({cid: gevent.spawn(client_duplex, route, cid, p, piece=65536 + 7) for cid, p in slow_up.items()})
    try:
        # The stalled connections are through to the backend, their transfers under way.
        assert wait_until(lambda: route.ledger.server.connections >= len(slow), 10)
        started = time.monotonic()
        fast_results = run_parallel(route, fast, timeout=20, piece=65536 + 7)
        fast_time = time.monotonic() - started
        finished = [cid for cid, job in slow.items() if job.ready()]
        assert not finished, "stalled connections ended early: %s" % [slow[c].exception for c in finished]
        assert not set(slow_up) & set(route.ledger.received)
    finally:
        release.set()
    gevent.joinall(list(slow.values()), timeout=30, raise_error=True)
    assert all(job.ready() for job in slow.values())
    check_duplex(route.ledger, plans, {**fast_results, **{cid: job.value for cid, job in slow.items()}})
    assert fast_time < 20
    if route.tunneled:
        assert len(route.connectors()) == 1


# -- 4. chunking edges -----------------------------------------------------------------------

#: around smux's 32 KiB frames we send, the 16-bit frame length, the 256 KiB initial window,
#: the pipe's 128 KiB reads, the 1 MiB stream window and the 64 KiB WebSocket frames
EDGE_SIZES = [0, 1, 2, 32767, 32768, 32769, 65535, 65536, 65537, 131071, 131072, 131073,
              262143, 262144, 262145, MiB - 1, MiB, MiB + 1]


def one_size_per_connection(route, sizes, salt):
    """A connection per size, one after another, each direction in a single sendall; the
    download of each is the upload size of its mirror in the list, so small meets large."""
    plans = {cid: plan(cid, size, sizes[-1 - cid], salt) for cid, size in enumerate(sizes)}
    route.ledger.script = duplex_script(route.ledger, plans, piece=4 * MiB)
    results = {}
    with gevent.Timeout(40):
        for cid, p in plans.items():
            results[cid] = client_duplex(route, cid, p, piece=4 * MiB)
    check_duplex(route.ledger, plans, results)


@pytest.mark.timeout(60)
def test_sizes_around_frame_and_window_boundaries(route):
    one_size_per_connection(route, EDGE_SIZES, salt=6)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("frame", [65535, 4093])
def test_sizes_around_configured_mux_frame_sizes(start_services, backend, test_ca, frame):
    """The largest frame the 16-bit length allows, and a small odd one that splits every write."""
    route = _tunnel_route("tunnel", start_services, Ledger(backend, HEAD), test_ca, **{"mux.maxFrameSize": frame})
    assert route.connectors()[0].session.config.max_frame_size == frame
    assert route.client.listener.bound.session.config.max_frame_size == frame
    sizes = sorted({k * frame + d for k in (1, 2, 3, 64) for d in (-1, 0, 1)} | {0, 1, 3 * MiB + 1})
    one_size_per_connection(route, sizes, salt=10 + frame)


@pytest.mark.timeout(30)
def test_bursts_of_one_byte_writes(route):
    """2000 single-byte writes each way, concurrently, with Nagle off on both ends."""
    count = 2000
    p = plan(9, count, count, salt=7)
    ledger = route.ledger

    def script(sock, conn_id):
        sock.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
        sender = gevent.spawn(send_stream, sock, p.down_seed, count, 1)
        ledger.received[conn_id] = drain(sock, count)
        ledger.sent[conn_id] = sender.get(timeout=OP_TIMEOUT)

    ledger.script = script
    with gevent.Timeout(20):
        results = {9: client_duplex(route, 9, p, piece=1)}
    check_duplex(ledger, {9: p}, results)


@pytest.mark.timeout(30)
def test_zero_byte_transfers(route):
    """A connection with no payload either way, ended by SHUT_WR, gets a clean EOF; one the client
    closes at once after its head reaches the backend as an EOF; one with no bytes at all reaches
    the backend only where nothing needs a head (and then as an empty connection)."""
    ledger = route.ledger
    plans = {0: plan(0, 0, 0)}
    ledger.script = duplex_script(ledger, plans)
    with gevent.Timeout(20):
        assert client_duplex(route, 0, plans[0]) == ((0, sha(b"")), (0, sha(b"")))
        ledger.wait([0])
        assert ledger.received[0] == (0, sha(b"")) and ledger.sent[0] == (0, sha(b""))

        def record_eof(sock, conn_id):
            ledger.received[conn_id] = drain(sock, 0)

        ledger.script = record_eof
        route.connect(1).close()
        ledger.wait([1])
        assert ledger.received[1] == (0, sha(b""))

        connections = ledger.server.connections
        socket.create_connection((LOCALHOST, route.port), timeout=OP_TIMEOUT).close()
        if route.head:
            assert holds_for(lambda: ledger.server.connections == connections and ledger.empty == 0, 0.3)
        else:
            assert wait_until(lambda: ledger.empty == 1, 5)
    assert not ledger.errors


# -- heavy variants -------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_256_mib_each_way(route):
    plans = {1: plan(1, 256 * MiB, 256 * MiB, salt=8)}
    route.ledger.script = duplex_script(route.ledger, plans)
    route.ledger.limit = 800
    with gevent.Timeout(800):
        results = {1: client_duplex(route, 1, plans[1])}
    check_duplex(route.ledger, plans, results)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_soak_1000_parallel_streams(route):
    count = 1000
    plans = varied_plans(count, random.Random(1000), salt=9, largest=512 * 1024)
    route.ledger.script = duplex_script(route.ledger, plans, piece=65536 + 7)
    route.ledger.limit = 600
    before = route.connectors() if route.tunneled else None
    results = run_parallel(route, plans, timeout=600, piece=65536 + 7)
    check_duplex(route.ledger, plans, results)
    if before is not None:
        assert route.connectors() == before
