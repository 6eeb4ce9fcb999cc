"""MuxSession over real sockets: gostgev on both ends, or one end spoken by hand with the codec."""

import hashlib
import random
import socket as _stdsocket
import time

import gevent
import pytest

from gostgev.codec.mux import (
    CMD_FIN,
    CMD_NOP,
    CMD_PSH,
    CMD_SYN,
    CMD_UPD,
    INITIAL_PEER_WINDOW,
    FrameBuffer,
    decode_upd,
    encode_frame,
    encode_upd,
)
from gostgev.netio.mux import MuxConfig, MuxSession, SessionClosed, StreamLimitError
from gostgev.netio.pipe import pipe
from tests.conftest import holds_for, wait_until

pytestmark = pytest.mark.timeout(30)

FAST = MuxConfig(keepalive_disabled=True)
V1 = MuxConfig(version=1, keepalive_disabled=True)


@pytest.fixture
def make(socket_pair):
    """Build sessions and raw peers on socket pairs; everything is closed afterwards."""
    made = []

    class Maker:
        @staticmethod
        def socketpair():
            return socket_pair(tcp=False)

        @staticmethod
        def pair(config=FAST, server_config=None):
            a, b = socket_pair(tcp=False)
            client = MuxSession(a, config, client=True, name="test client")
            server = MuxSession(b, server_config or config, client=False, name="test server")
            made.extend([client, server])
            return client, server

        @staticmethod
        def raw(config=FAST, client=False, version=None):
            """A session facing a RawPeer that speaks frames by hand."""
            a, b = socket_pair(tcp=False)
            session = MuxSession(a, config, client=client, name="test session")
            peer = RawPeer(b, version or config.version)
            made.extend([session, peer])
            return session, peer

        @staticmethod
        def track(*things):
            made.extend(things)

    yield Maker
    for thing in made:
        thing.close()


class RawPeer:
    """The other end of a session, frame by frame."""

    def __init__(self, sock, version):
        self.sock, self.version = sock, version
        self.buf = FrameBuffer(version)
        self.frames = []

    def send(self, cmd, sid, payload=b""):
        self.sock.sendall(encode_frame(self.version, cmd, sid, payload))

    def read(self, timeout=2.0, skip_nop=True):
        """The next frame, or None if none arrives within ``timeout``."""
        with gevent.Timeout(timeout, False):
            while True:
                for frame in self.buf:
                    self.frames.append(frame)
                    if not (skip_nop and frame.cmd == CMD_NOP):
                        return frame
                data = self.sock.recv(1 << 20)
                if not data:
                    return None
                self.buf.add_data(data)
        return None

    def close(self):
        self.sock.close()


def recv_all(stream, limit=1 << 26):
    chunks, size = [], 0
    while size < limit:
        data = stream.recv(1 << 17)
        if not data:
            break
        chunks.append(data)
        size += len(data)
    return b"".join(chunks)


def frame_of(hexed):
    """The one frame in a hex dump written as in tunnel.md."""
    buf = FrameBuffer(2)
    buf.add_data(bytes.fromhex(hexed.replace(" ", "")))
    return next(buf)


# -- ids and basic traffic --------------------------------------------------------------

def test_stream_ids_like_smux(make):
    """The smux client numbers streams 3, 5, 7; the smux server would use 2, 4."""
    client, server = make.pair()
    opened = [client.open_stream() for _ in range(3)]
    assert [s.id for s in opened] == [3, 5, 7]
    assert [server.accept_stream(timeout=2).id for _ in range(3)] == [3, 5, 7]
    assert [server.open_stream().id for _ in range(2)] == [2, 4]
    assert client.accept_stream(timeout=2).id == 2
    assert client.num_streams == 5 and server.num_streams == 5


def test_round_trip_both_ways(make):
    """Bytes, bytearrays and memoryviews cross in both directions; close is EOF for the peer."""
    client, server = make.pair()
    stream = client.open_stream()
    stream.sendall(b"ping")
    with server.accept_stream(timeout=2) as peer:
        assert peer.recv(100) == b"ping"
        assert peer.send(bytearray(b"pong")) == 4
        peer.sendall(memoryview(b"!!").cast("B"))
    assert recv_all(stream) == b"pong!!"       # the peer's close is an EOF here
    stream.close()
    assert wait_until(lambda: client.num_streams == 0 and server.num_streams == 0, 3)


def test_exchange_matches_captured_bytes(make):
    """Our smux server side answers exactly as in tunnel.md 10.5."""
    session, peer = make.raw()
    for line in ("02 00 0000 03000000", "02 02 0500 03000000 68656c6c6f"):
        peer.sock.sendall(bytes.fromhex(line.replace(" ", "")))
    stream = session.accept_stream(timeout=2)
    assert stream.recv(100) == b"hello"
    assert peer.read() == frame_of("02 04 0800 03000000 05000000 00001000")
    stream.sendall(b"world")
    assert peer.read() == frame_of("02 02 0500 03000000 776f726c64")
    peer.sock.sendall(bytes.fromhex("02040800030000000500000000001000" "0201000003000000"))
    assert stream.recv(100) == b""
    stream.close()
    assert peer.read() == frame_of("02 01 0000 03000000")


def test_client_side_captured_bytes(make):
    """Our smux client side opens streams with the captured SYN and PSH bytes."""
    session, peer = make.raw(client=True)
    stream = session.open_stream()
    stream.sendall(b"hello")
    assert peer.read() == frame_of("02 00 0000 03000000")
    assert peer.read() == frame_of("02 02 0500 03000000 68656c6c6f")
    assert session.open_stream().id == 5
    assert peer.read() == frame_of("02 00 0000 05000000")


def test_tcp_loopback_and_peer_address(make, socket_pair):
    """Over TCP the peer address is known, and a socket timeout set by the dialer is cleared."""
    a, b = socket_pair(timeout=0.05)      # the dialer's timeout: the session clears it
    address = b.getsockname()
    client = MuxSession(a, FAST, client=True)
    server = MuxSession(b, FAST, client=False)
    make.track(client, server)
    assert client.remote_address == address
    stream = client.open_stream()
    assert stream.getpeername() == client.remote_address
    gevent.sleep(0.1)                                  # longer than the socket's old timeout
    stream.sendall(b"over tcp")
    assert server.accept_stream(timeout=2).recv(100) == b"over tcp"
    assert not client.closed


def test_pipe_over_a_stream(make):
    """gostgev.netio.pipe drives a stream like a socket, half-close included."""
    client, server = make.pair()
    backend, backend_peer = make.socketpair()

    def echo_then_bye():
        while data := backend_peer.recv(65536):
            backend_peer.sendall(data)
        backend_peer.sendall(b"bye")
        backend_peer.close()

    gevent.spawn(echo_then_bye)
    stream = client.open_stream()
    served = gevent.spawn(lambda: pipe(server.accept_stream(timeout=2), backend))
    payload = random.Random(5).randbytes(3 << 20)
    writer = gevent.spawn(lambda: (stream.sendall(payload), stream.shutdown(_stdsocket.SHUT_WR)))
    with gevent.Timeout(10):
        assert recv_all(stream) == payload + b"bye"
        writer.get()
        assert served.get() == (len(payload), len(payload) + 3)
    backend.close()


def test_interrupted_write_keeps_frames_whole(make):
    """A gevent.Timeout in the middle of a blocked socket write must not cut a frame in two."""
    session, peer = make.raw(client=True)
    stream = session.open_stream()
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.1):
            stream.sendall(b"i" * INITIAL_PEER_WINDOW)     # more than the socket buffer holds
    got = {}

    def read_all():
        while (frame := peer.read(timeout=0.5)) is not None:
            got.setdefault((frame.cmd, frame.sid), []).append(frame.payload)

    reader = gevent.spawn(read_all)
    other = session.open_stream()
    other.sendall(b"after")
    reader.get(timeout=5)
    assert len(b"".join(got[(CMD_PSH, 3)])) == INITIAL_PEER_WINDOW
    assert got[(CMD_SYN, 5)] == [b""] and got[(CMD_PSH, 5)] == [b"after"]
    assert not session.closed


def test_200_concurrent_streams(make):
    """Each stream carries a random payload both ways at once; SHA-256 checked on arrival."""
    client, server = make.pair()
    rng = random.Random(200)
    payloads = {}

    def exchange(stream, send_index):
        """Send one payload of the stream's pair while reading the other; True if it arrived intact."""
        pair = payloads[stream.id]
        sent, expected = pair[send_index], pair[1 - send_index]
        writer = gevent.spawn(lambda: (stream.sendall(sent), stream.shutdown(_stdsocket.SHUT_WR)))
        got = recv_all(stream)
        writer.get()
        stream.close()
        return hashlib.sha256(got).digest() == hashlib.sha256(expected).digest()

    def acceptor():
        return gevent.joinall([gevent.spawn(exchange, server.accept_stream(timeout=5), 1) for _ in range(200)])

    for sid in range(3, 3 + 2 * 200, 2):
        payloads[sid] = (rng.randbytes(rng.randint(0, 80_000)), rng.randbytes(rng.randint(0, 80_000)))
    accepting = gevent.spawn(acceptor)
    with gevent.Timeout(15):
        runs = [gevent.spawn(exchange, client.open_stream(), 0) for _ in range(200)]
        gevent.joinall(runs, raise_error=True)
        served = accepting.get()
    assert all(g.value for g in runs) and all(g.value for g in served)
    assert wait_until(lambda: client.num_streams == 0 and server.num_streams == 0, 3)


class Tap:
    """Wraps a socket and counts the commands of the frames sent through it."""

    def __init__(self, sock, version=2):
        self._sock, self._buf, self.counts = sock, FrameBuffer(version), {}

    def send(self, data):
        n = self._sock.send(data)
        self._buf.add_data(bytes(data[:n]))
        for frame in self._buf:
            self.counts[frame.cmd] = self.counts.get(frame.cmd, 0) + 1
        return n

    def __getattr__(self, name):
        return getattr(self._sock, name)


def tapped_pair(make, config):
    a, b = make.socketpair()
    tap_a, tap_b = Tap(a, config.version), Tap(b, config.version)
    client = MuxSession(tap_a, config, client=True)
    server = MuxSession(tap_b, config, client=False)
    make.track(client, server)
    return client, server, tap_a, tap_b


def test_large_transfer_with_window_updates(make):
    """20 MiB on one stream: the reader's side sends UPDs, both sides agree on every byte."""
    client, server, _, tap_server = tapped_pair(make, FAST)
    data = random.Random(1).randbytes(20 << 20)
    stream = client.open_stream()
    sender = gevent.spawn(lambda: (stream.sendall(data), stream.shutdown(_stdsocket.SHUT_WR)))
    with gevent.Timeout(15):
        got = recv_all(server.accept_stream(timeout=2))
        sender.get()
    assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
    # one UPD on the first read, then one per half window (512 KiB) read,
    # where a read of up to 128 KiB may overshoot each half window
    assert 20 * 1024 // (512 + 128) <= tap_server.counts[CMD_UPD] <= 20 * 1024 // 512 + 1


def test_sender_stops_at_initial_window(make):
    """Before any UPD exactly 262144 bytes go out, in frames of at most 32768; an UPD releases the rest."""
    session, peer = make.raw(client=True)
    stream = session.open_stream()
    sender = gevent.spawn(stream.sendall, b"x" * (1 << 20))
    assert peer.read().cmd == CMD_SYN
    received = 0
    while received < INITIAL_PEER_WINDOW:
        frame = peer.read()
        assert frame.cmd == CMD_PSH and len(frame.payload) <= 32768
        received += len(frame.payload)
    assert received == INITIAL_PEER_WINDOW
    assert peer.read(timeout=0.3) is None and not sender.ready()
    peer.send(CMD_UPD, 3, encode_upd(2, 3, received, 1048576)[8:])
    while received < 1 << 20:
        received += len(peer.read().payload)
    assert received == 1 << 20
    sender.get(timeout=2)


def test_send_nowait_frames_within_the_window_or_sends_nothing(make):
    """send_nowait never switches greenlets: it frames all of the data when the window and the
    cork allow, and otherwise sends nothing at all (the caller falls back to sendall)."""
    session, peer = make.raw(client=True)
    stream = session.open_stream()
    assert peer.read().cmd == CMD_SYN
    switched = []
    gevent.spawn(switched.append, True)       # runs only if the caller yields to the hub
    assert stream.send_nowait(b"a" * 40000) is True
    assert stream.send_nowait(b"b" * 20000) is True
    # Over the cork limit of what is held this turn: nothing is framed.
    assert stream.send_nowait(b"c" * 10000) is False
    assert switched == []
    frames = [peer.read() for _ in range(3)]   # 40000 in frames of at most 32768, then 20000
    assert [(f.cmd, len(f.payload)) for f in frames] == [(CMD_PSH, 32768), (CMD_PSH, 7232), (CMD_PSH, 20000)]
    assert b"".join(f.payload for f in frames) == b"a" * 40000 + b"b" * 20000
    # The peer's window (262144 before any update) bounds it too: whole or nothing.
    for _ in range(3):
        assert stream.send_nowait(b"d" * 60000) is True
        gevent.sleep(0)                          # the loop's turn ends, the held frames go
    assert stream.send_nowait(b"e" * 30000) is False       # 60000 + 180000 + 30000 > 262144
    assert stream.send_nowait(b"f" * 22144) is True        # exactly the rest of the window
    assert stream.send_nowait(b"g") is False
    received = 0
    while received < INITIAL_PEER_WINDOW - 60000:
        frame = peer.read()
        assert frame.cmd == CMD_PSH and b"e" not in frame.payload
        received += len(frame.payload)
    assert received == INITIAL_PEER_WINDOW - 60000
    stream.close()
    with pytest.raises(BrokenPipeError):
        stream.send_nowait(b"h")


def test_peer_fin_ends_a_writer_stuck_on_the_window(make, monkeypatch):
    """A Go peer that sent FIN never reopens the window: the blocked writer gives up after the grace."""
    import gostgev.netio.mux.stream as mux_stream

    monkeypatch.setattr(mux_stream, "HALF_CLOSED_WINDOW_WAIT", 0.3)
    session, peer = make.raw(client=True)
    stream = session.open_stream()
    sender = gevent.spawn(stream.sendall, b"x" * (1 << 20))
    assert peer.read().cmd == CMD_SYN
    received = 0
    while received < INITIAL_PEER_WINDOW:
        received += len(peer.read().payload)
    assert peer.read(timeout=0.2) is None and not sender.ready()
    peer.send(CMD_FIN, 3)
    with pytest.raises(BrokenPipeError):
        sender.get(timeout=3)


def test_slow_stream_does_not_stall_another(make):
    """A stream nobody reads holds only its window; its neighbour moves 8 MiB meanwhile."""
    client, server = make.pair()
    slow, fast = client.open_stream(), client.open_stream()
    slow_peer, fast_peer = server.accept_stream(timeout=2), server.accept_stream(timeout=2)
    blocked = gevent.spawn(slow.sendall, b"s" * (4 << 20))
    data = b"f" * (8 << 20)
    sender = gevent.spawn(lambda: (fast.sendall(data), fast.shutdown(_stdsocket.SHUT_WR)))
    with gevent.Timeout(10):
        assert recv_all(fast_peer) == data
        sender.get()
    assert not blocked.ready()
    assert slow_peer.buffered == INITIAL_PEER_WINDOW     # what the peer may send before our first read
    assert slow_peer.recv(10) == b"s" * 10                  # reading it later still works
    slow.close()


def test_half_close(make):
    """After our FIN we still read; after the peer's FIN we still write; writing after our FIN fails."""
    client, server = make.pair()
    stream = client.open_stream()
    stream.sendall(b"request")
    stream.shutdown(_stdsocket.SHUT_WR)
    with pytest.raises(BrokenPipeError):
        stream.sendall(b"more")
    peer = server.accept_stream(timeout=2)
    assert recv_all(peer) == b"request"
    peer.sendall(b"response after the client's FIN")
    peer.shutdown(_stdsocket.SHUT_WR)
    assert recv_all(stream) == b"response after the client's FIN"
    stream.shutdown(_stdsocket.SHUT_WR)       # idempotent


def test_shutdown_rdwr_wakes_reader(make):
    """SHUT_RDWR wakes a blocked reader with EOF and sends FIN."""
    client, server = make.pair()
    stream = client.open_stream()
    reader = gevent.spawn(stream.recv, 10)
    gevent.idle()                              # every greenlet that can run has: the reader waits in recv
    stream.shutdown(_stdsocket.SHUT_RDWR)
    assert reader.get(timeout=1) == b""
    peer = server.accept_stream(timeout=2)
    assert peer.recv(10) == b""                # our FIN
    with pytest.raises(BrokenPipeError):
        stream.sendall(b"x")


def test_timeouts(make):
    """settimeout bounds recv and a window wait; accept_stream has its own timeout."""
    client, server = make.pair()
    stream = client.open_stream()
    stream.settimeout(0.1)
    assert stream.gettimeout() == 0.1
    started = time.monotonic()
    with pytest.raises(_stdsocket.timeout):
        stream.recv(10)
    with pytest.raises(TimeoutError):
        stream.sendall(b"x" * (INITIAL_PEER_WINDOW + 1))
    assert time.monotonic() - started < 1
    assert server.accept_stream(timeout=0.05) is not None
    assert server.accept_stream(timeout=0.05) is None


# -- keepalive and teardown ----------------------------------------------------------------

def test_keepalive_timeout_closes_silent_peer(make):
    """A peer that never sends is dropped after keepalive_timeout; our NOPs reach it meanwhile."""
    session, peer = make.raw(MuxConfig(keepalive_interval=0.2, keepalive_timeout=0.6))
    closed = []
    session.link_closed(closed.append)
    started = time.monotonic()
    assert session.wait_closed(timeout=2)
    assert 0.5 <= time.monotonic() - started < 1.2
    assert session.close_reason == "keepalive timeout"
    while peer.read(timeout=0.2, skip_nop=False) is not None:
        pass
    assert [f.cmd for f in peer.frames].count(CMD_NOP) >= 2
    assert all(f.sid == 0 and f.payload == b"" for f in peer.frames)
    assert wait_until(lambda: closed == [session], 3)


def test_keepalive_keeps_idle_pair_open(make):
    """Two idle sessions keep each other alive with NOPs."""
    client, server = make.pair(MuxConfig(keepalive_interval=0.1, keepalive_timeout=0.3))
    assert holds_for(lambda: not client.closed and not server.closed, 1.0)


def test_dead_socket_fails_everything(make):
    """The connection vanishing fails every stream, waiter and acceptor at once."""
    client, server = make.pair()
    streams = [client.open_stream() for _ in range(3)]
    accepted = [server.accept_stream(timeout=2) for _ in range(3)]
    streams[0].sendall(b"unread")
    readers = [gevent.spawn(s.recv, 10) for s in streams[1:]]
    acceptor = gevent.spawn(client.accept_stream)
    blocked_writer = gevent.spawn(streams[0].sendall, b"x" * (1 << 20))
    calls = []
    client.link_closed(calls.append)
    gevent.idle()                             # all of them are waiting now
    server.sock.close()                       # the other end vanishes, unannounced
    assert client.wait_closed(timeout=2)
    assert client.close_reason == "connection closed by peer"
    for reader in readers:
        with pytest.raises(ConnectionResetError):
            reader.get(timeout=1)
    with pytest.raises(SessionClosed):
        acceptor.get(timeout=1)
    with pytest.raises(BrokenPipeError):
        blocked_writer.get(timeout=1)
    with pytest.raises(ConnectionResetError):
        streams[0].recv(10)
    with pytest.raises(BrokenPipeError):
        streams[1].sendall(b"x")
    with pytest.raises(SessionClosed):
        client.open_stream()
    assert all(s.closed for s in streams + accepted)
    assert wait_until(lambda: calls == [client], 3)
    client.close()
    client.link_closed(calls.append)          # after the fact: still called, once
    assert wait_until(lambda: calls == [client, client], 3)


@pytest.mark.parametrize("frame, reason", [
    ("01 00 0000 03000000", "version 1 frame"),
    ("02 09 0000 03000000", "unknown smux command 9"),
    ("02 00 0400 03000000 00000000", "SYN with a 4-byte payload"),
])
def test_protocol_error_closes_session(make, frame, reason):
    """A frame that breaks the wire rules ends the whole session."""
    session, peer = make.raw()
    peer.send(CMD_SYN, 3)
    stream = session.accept_stream(timeout=2)
    peer.sock.sendall(bytes.fromhex(frame.replace(" ", "")))
    assert session.wait_closed(timeout=2)
    assert session.close_reason.startswith("protocol error") and reason in session.close_reason
    with pytest.raises(ConnectionResetError):
        stream.recv(1)
    assert peer.read(timeout=1) is None       # the connection is gone


def test_version_1_end_to_end(make):
    """No UPD in either direction; 3 MiB each way."""
    client, server, tap_client, tap_server = tapped_pair(make, V1)
    up, down = random.Random(2).randbytes(3 << 20), random.Random(3).randbytes(3 << 20)
    stream = client.open_stream()
    writer = gevent.spawn(lambda: (stream.sendall(up), stream.shutdown(_stdsocket.SHUT_WR)))
    peer = server.accept_stream(timeout=2)
    peer_writer = gevent.spawn(lambda: (peer.sendall(down), peer.shutdown(_stdsocket.SHUT_WR)))
    with gevent.Timeout(10):
        assert recv_all(peer) == up
        assert recv_all(stream) == down
        gevent.joinall([writer, peer_writer], raise_error=True)
    assert tap_client.counts[CMD_PSH] > 0 and tap_server.counts[CMD_PSH] > 0
    assert CMD_UPD not in tap_client.counts and CMD_UPD not in tap_server.counts


def test_version_1_pauses_reading_at_receive_buffer(make):
    """v1: once max_receive_buffer bytes sit unread, the session stops reading the socket."""
    config = MuxConfig(version=1, keepalive_disabled=True, max_receive_buffer=256 * 1024)
    client, server = make.pair(config)
    stream = client.open_stream()
    writer = gevent.spawn(stream.sendall, b"v" * (4 << 20))
    peer = server.accept_stream(timeout=2)
    assert wait_until(lambda: server.paused, 3)
    # Paused, it stays paused: nothing more is read, and the writer stays blocked.
    assert holds_for(lambda: server.paused and server.buffered <= 256 * 1024 + 512 * 1024 and not writer.ready(), 0.1)
    assert 256 * 1024 < server.buffered <= 256 * 1024 + 512 * 1024 and not writer.ready()
    with gevent.Timeout(10):
        assert len(recv_all(peer, limit=4 << 20)) == 4 << 20
        writer.get()


def test_stream_limit(make):
    """max_streams bounds streams we open and streams the peer opens."""
    client, server = make.pair(MuxConfig(keepalive_disabled=True, max_streams=3))
    for _ in range(3):
        client.open_stream()
    with pytest.raises(StreamLimitError):
        client.open_stream()
    # the peer is bounded too: a fourth SYN from a raw peer is refused with FIN
    session, peer = make.raw(MuxConfig(keepalive_disabled=True, max_streams=3))
    for sid in (3, 5, 7, 9):
        peer.send(CMD_SYN, sid)
    assert peer.read().cmd == CMD_FIN and peer.frames[-1].sid == 9
    assert session.num_streams == 3


def test_full_accept_backlog_pauses_reading_and_repeated_syn_is_ignored(make):
    """SYNs beyond the accept backlog wait for the acceptor (none is refused, the
    keepalive does not fire meanwhile); a second SYN for a known id changes nothing."""
    session, peer = make.raw(MuxConfig(keepalive_interval=0.1, keepalive_timeout=0.2, accept_backlog=2))
    for sid in (3, 3, 5, 7, 9):
        peer.send(CMD_SYN, sid)
    assert holds_for(lambda: not session.closed, 0.5)   # paused longer than the keepalive timeout
    assert session.num_streams == 2
    assert [session.accept_stream(timeout=1).id for _ in range(4)] == [3, 5, 7, 9]
    assert session.accept_stream(timeout=0.05) is None
    assert peer.read(timeout=0.3) is None               # nothing but keepalives: no FIN, no refusal


def test_window_overrun_resets_only_that_stream(make):
    """A peer sending past our window loses that stream, not the session."""
    session, peer = make.raw()
    peer.send(CMD_SYN, 3)
    peer.send(CMD_SYN, 5)
    bad, good = session.accept_stream(timeout=2), session.accept_stream(timeout=2)
    chunk = b"o" * 32768
    for _ in range((1048576 + 65535) // 32768 + 2):   # past our window plus one frame
        peer.send(CMD_PSH, 3, chunk)
    frame = peer.read()
    assert (frame.cmd, frame.sid) == (CMD_FIN, 3)
    with pytest.raises(ConnectionResetError):
        bad.recv(10)
    with pytest.raises(BrokenPipeError):
        bad.sendall(b"x")
    peer.send(CMD_PSH, 3, b"ignored")                  # data for a reset id is discarded
    peer.send(CMD_PSH, 5, b"still fine")
    assert good.recv(100) == b"still fine"
    assert not session.closed and session.num_streams == 1


def test_bogus_update_resets_stream(make):
    """An UPD claiming more consumed than we wrote resets that stream only."""
    session, peer = make.raw(client=True)
    stream = session.open_stream()
    stream.sendall(b"abc")
    peer.send(CMD_UPD, 3, encode_upd(2, 3, 4, 1048576)[8:])   # consumed 4 of 3 bytes written
    assert wait_until(lambda: stream.closed, 3)          # the reset arrived
    with pytest.raises(BrokenPipeError):
        stream.sendall(b"x")
    assert not session.closed


def test_unknown_stream_data_is_discarded(make):
    """Frames for ids nobody opened are dropped quietly."""
    session, peer = make.raw()
    peer.send(CMD_PSH, 41, b"nobody home")
    peer.send(CMD_FIN, 41)
    peer.send(CMD_UPD, 41, decode_upd_payload(1, 2))
    peer.send(CMD_SYN, 3)
    peer.send(CMD_PSH, 3, b"hi")
    assert session.accept_stream(timeout=2).recv(10) == b"hi"


def decode_upd_payload(consumed, window):
    payload = encode_upd(2, 0, consumed, window)[8:]
    assert decode_upd(payload) == (consumed, window)
    return payload


def test_session_close_is_idempotent(make):
    """close() twice keeps the first reason; the peer sees EOF."""
    client, server = make.pair()
    stream = client.open_stream()
    client.close()
    client.close("again")
    assert client.closed and client.close_reason == "closed"
    stream.close()
    assert server.wait_closed(timeout=2) and server.close_reason == "connection closed by peer"


@pytest.mark.slow
def test_throughput_one_stream(socket_pair):
    """64 MiB through one v2 stream over a socket pair; prints MB/s."""
    a, b = socket_pair(tcp=False)
    client, server = MuxSession(a, FAST, client=True), MuxSession(b, FAST, client=False)
    data = b"t" * (1 << 20)
    stream = client.open_stream()

    def send():
        for _ in range(64):
            stream.sendall(data)
        stream.shutdown(_stdsocket.SHUT_WR)

    started = time.monotonic()
    sender = gevent.spawn(send)
    peer = server.accept_stream(timeout=2)
    total = 0
    while chunk := peer.recv(1 << 17):
        total += len(chunk)
    sender.get()
    elapsed = time.monotonic() - started
    print("\n64 MiB one stream: %.0f MB/s" % (total / elapsed / 1e6))
    assert total == 64 << 20
    client.close()
    server.close()
