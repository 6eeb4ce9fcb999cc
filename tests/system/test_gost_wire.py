"""Wire compatibility with GOST v3, with the GOST side played by hand.

No GOST binary is available, so the peer is a raw loopback socket that sends
and expects the exact bytes of the spec (``relay-protocol.md`` §5, §8 and the
Appendix captures C1-C3; ``tunnel.md`` §2-§6, §9, §10 and its Appendix
capture of a GOST v3.2.6 server):

* a fake GOST tunnel *client* against a gostgev tunnel server (BIND, NOP
  keepalive, streams opened for the entrypoint and for a visitor);
* a fake GOST tunnel *server* against a gostgev ``rtcp`` client (BIND request
  layout, replies C2/C3/Unauthorized, streams, flow control, keepalive).

Frames are built and parsed with the pure codecs, and every key message is
also compared with literal hex from the spec, so a test cannot pass merely
because gostgev's encoder and decoder agree with each other.  Every wait has a
deadline and every loop a bound on its iterations.
"""

import logging
import time
from collections import deque

import gevent
import pytest
from gevent import socket
from gevent.event import AsyncResult

from gostgev.codec import mux, relay
from tests.conftest import LOCALHOST, connect, name_responder, wait_until

TUNNEL_ID = "4d21094e-b74c-4916-86c1-d9fa36ea677b"
TUNNEL_ID_HEX = "4d21094eb74c491686c1d9fa36ea677b"
ENDPOINT_NAME = "a6265c6d9847a4be"   # md5(TUNNEL_ID)[:8], relay-protocol.md V3b

#: relay-protocol.md Appendix C1: BIND from a GOST v3.2.6 tunnel client (src 127.0.0.1:36300, dst ":0")
C1 = bytes.fromhex("01020028020007017f0000018dcc020004030000000300144d21094eb74c491686c1d9fa36ea677b00000000")
#: C2: the GOST v3.2.6 server's reply to C1 (endpoint name, port 0, random connector ID, weight 0)
C2 = bytes.fromhex("0100002e0200140310613632363563366439383437613462650000"
                   "030014d5afc6e4c01444d08bf77919263562bb00000000")
C2_CONNECTOR = "d5afc6e4-c014-44d0-8bf7-7919263562bb"
#: C3: the GOST v3.2.6 server's reply to V1b (0.0.0.0:0 echoed)
C3 = bytes.fromhex("01000021020007010000000000000300142e5eceeac8d64b83853980c1d40d6e6c00000000")
C3_CONNECTOR = "2e5eceea-c8d6-4b83-8539-80c1d40d6e6c"
#: V1b: BIND with dst as IPv4 0.0.0.0:0 (src 192.168.1.100:54321)
V1B = bytes.fromhex("0102002b02000701c0a80164d431020007010000000000000300144d21094eb74c491686c1d9fa36ea677b00000000")
#: the 16 random connector-ID bytes inside C2 (header 4 + Addr TLV 23 + Tunnel TLV head 3)
CONNECTOR_ID_SLICE = slice(30, 46)

#: tunnel.md Appendix: the stream header GOST v3.2.6 writes (src 127.0.0.1:34028, dst srv-0.local:80)
STREAM_HEADER = bytes.fromhex("0100001c020007017f00000184ec02000f030b7372762d302e6c6f63616c0050")
STREAM_HEADER_PORT = slice(12, 14)   # the src port inside it
#: V4b with the 11-character "example.com" swapped for the 11-character "srv-0.local" (same FEALEN 0x33)
VISITOR_CONNECT = bytes.fromhex("01010033020007017f0000019c4002000f030b7372762d302e6c6f63616c0050"
                                "0300144d21094eb74c491686c1d9fa36ea677b00000000")
#: the stream header the server must write for it: src 127.0.0.1:40000, dst srv-0.local:80 (V5 layout)
VISITOR_STREAM_HEADER = bytes.fromhex("0100001c020007017f0000019c4002000f030b7372762d302e6c6f63616c0050")

# smux v2 frames, tunnel.md §10.5 (ver, cmd, length LE, sid LE)
SYN_3 = bytes.fromhex("0200000003000000")
SYN_5 = bytes.fromhex("0200000005000000")
FIN_3 = bytes.fromhex("0201000003000000")
NOP = bytes.fromhex("0203000000000000")
UPD_3_HEAD = bytes.fromhex("0204080003000000")
WINDOW_1MIB = bytes.fromhex("00001000")   # 1048576 little-endian
PSH_HEADER_3 = bytes.fromhex("0202200003000000")  # PSH sid 3 with a 32-byte payload: the stream header

OK_EMPTY = bytes.fromhex("01000000")
BAD_REQUEST = bytes.fromhex("01010000")
UNAUTHORIZED = bytes.fromhex("01020000")

#: As GOST's entrypoint sends it: its HTTP client keeps no connection to the tunnel
#: (entrypoint.keepalive false), so every request says Connection: close.
REQUEST = b"GET / HTTP/1.1\r\nHost: srv-0.local\r\nUser-Agent: Go-http-client/1.1\r\nConnection: close\r\n\r\n"
WINDOW = 1048576
KEEPALIVE = 0.3
MAX_READS = 1000      # bound on recv() calls in any one helper


# -- raw socket helpers ------------------------------------------------------------

def _left(deadline):
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise TimeoutError("deadline passed")
    return remaining


def recv_exact(sock, n, deadline):
    data = bytearray()
    for _ in range(MAX_READS):
        if len(data) >= n:
            return bytes(data)
        sock.settimeout(_left(deadline))
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("peer closed after %d of %d bytes: %r" % (len(data), n, bytes(data)))
        data += chunk
    raise AssertionError("too many reads for %d bytes" % n)


def read_relay_message(sock, timeout=5.0):
    """One relay message: 4 header bytes, then exactly FEALEN bytes."""
    deadline = time.monotonic() + timeout
    head = recv_exact(sock, 4, deadline)
    return head + recv_exact(sock, int.from_bytes(head[2:4], "big"), deadline)


def read_until_eof(sock, timeout=5.0, limit=1 << 20):
    deadline = time.monotonic() + timeout
    data = bytearray()
    for _ in range(MAX_READS):
        sock.settimeout(_left(deadline))
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
        assert len(data) <= limit
    return bytes(data)


def assert_closed_silently(sock, timeout=3.0):
    """The peer closes without sending a single byte."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096)
    except ConnectionResetError:
        data = b""
    assert data == b"", "expected a silent close, got %r" % data


class FrameReader:
    """smux v2 frames off a raw socket, each with its exact wire bytes.

    NOPs are skipped (and kept in ``nops``) unless asked for.
    """

    def __init__(self, sock):
        self.sock = sock
        self.buf = mux.FrameBuffer(2)
        self.raw = bytearray()
        self.queue = deque()
        self.nops = []

    def _pull(self, deadline):
        self.sock.settimeout(_left(deadline))
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("peer closed the tunnel connection")
        self.raw += data
        self.buf.add_data(data)
        for frame in self.buf:
            size = mux.HEADER_SIZE + len(frame.payload)
            self.queue.append((frame, bytes(self.raw[:size])))
            del self.raw[:size]

    def next(self, timeout=5.0, skip_nops=True):
        """``(Frame, raw bytes)`` of the next frame."""
        deadline = time.monotonic() + timeout
        for _ in range(MAX_READS):
            while self.queue:
                frame, raw = self.queue.popleft()
                if skip_nops and frame.cmd == mux.CMD_NOP:
                    self.nops.append(raw)
                    continue
                return frame, raw
            self._pull(deadline)
        raise AssertionError("too many reads waiting for a frame")

    def until(self, predicate, timeout=5.0):
        """Frames up to and including the first one for which ``predicate(frame)`` holds."""
        deadline = time.monotonic() + timeout
        seen = []
        for _ in range(MAX_READS):
            frame, raw = self.next(_left(deadline))
            seen.append((frame, raw))
            if predicate(frame):
                return seen
        raise AssertionError("no matching frame among %r" % [f for f, _ in seen])


def is_fin(sid):
    return lambda frame: frame.cmd == mux.CMD_FIN and frame.sid == sid


def stream_data(frames, sid):
    return b"".join(f.payload for f, _ in frames if f.cmd == mux.CMD_PSH and f.sid == sid)


def upds(frames, sid):
    return [raw for f, raw in frames if f.cmd == mux.CMD_UPD and f.sid == sid]


def test_literal_frames_agree_with_the_codec():
    """The literals below are the spec's; the codec must produce the same bytes."""
    assert mux.encode_frame(2, mux.CMD_SYN, 3) == SYN_3
    assert mux.encode_frame(2, mux.CMD_FIN, 3) == FIN_3
    assert mux.encode_frame(2, mux.CMD_NOP, 0) == NOP
    assert mux.encode_upd(2, 3, 5, WINDOW) == bytes.fromhex("0204080003000000" "05000000" "00001000")
    assert mux.encode_frame(2, mux.CMD_PSH, 3, STREAM_HEADER)[:8] == PSH_HEADER_3
    assert relay.TunnelID.parse(TUNNEL_ID).endpoint_name() == ENDPOINT_NAME
    assert C2[CONNECTOR_ID_SLICE].hex() == C2_CONNECTOR.replace("-", "")


# -- 1. fake GOST client -> gostgev tunnel server ---------------------------------------

def tunnel_server_config(**metadata):
    md = {"entrypoint": "127.0.0.1:0", "ingress": "ingress-0", "mux.keepaliveInterval": "%gs" % KEEPALIVE,
          **metadata}
    return {
        "services": [{"name": "server", "addr": "127.0.0.1:0",
                      "handler": {"type": "tunnel", "metadata": md}, "listener": {"type": "tcp"}}],
        "ingresses": [{"name": "ingress-0", "rules": [{"hostname": "srv-0.local", "endpoint": TUNNEL_ID}]}],
    }


class GostServerUnderTest:
    def __init__(self, service):
        self.service = service
        self.port = service.address[1]
        self.entrypoint = service.handler.entrypoints[0].address[1]
        self.registry = service.handler.registry

    def live_connectors(self):
        tunnel = self.registry.get(relay.TunnelID.parse(TUNNEL_ID))
        return len([c for c in tunnel.connectors if not c.closed]) if tunnel else 0

    def bind(self, request=C1):
        """Open a raw connection, send ``request``; return (socket, reply bytes)."""
        sock = connect(self.port, timeout=5)
        sock.sendall(request)
        return sock, read_relay_message(sock)


@pytest.fixture
def gostgev_server(start_services):
    return GostServerUnderTest(start_services(tunnel_server_config())["server"])


def assert_c2_shaped(reply):
    """Byte for byte C2, except the 16 random connector-ID bytes."""
    assert len(reply) == len(C2), reply.hex()
    assert reply[:CONNECTOR_ID_SLICE.start] == C2[:CONNECTOR_ID_SLICE.start], reply.hex()
    assert reply[CONNECTOR_ID_SLICE.stop:] == C2[CONNECTOR_ID_SLICE.stop:], reply.hex()
    assert any(reply[CONNECTOR_ID_SLICE])
    parsed, used = relay.parse_response(reply)
    assert used == len(reply)
    assert parsed.addrs == ("%s:0" % ENDPOINT_NAME,)
    assert (parsed.tunnel_id.flag, parsed.tunnel_id.weight) == (0, 0)


def test_gost_client_binds_and_serves_an_entrypoint_request(gostgev_server):
    sock, reply = gostgev_server.bind(C1)
    with sock:
        assert reply[:2] == b"\x01\x00"
        assert_c2_shaped(reply)
        assert wait_until(lambda: gostgev_server.live_connectors() == 1, 5)

        port = AsyncResult()

        def public_client():
            with connect(gostgev_server.entrypoint, timeout=5) as public:
                port.set(public.getsockname()[1])
                public.sendall(REQUEST)
                return read_until_eof(public)

        job = gevent.spawn(public_client)
        try:
            frames = FrameReader(sock)
            # The server is the smux client: first stream id 3, SYN before anything else.
            syn, raw = frames.next()
            assert raw == SYN_3, raw.hex()
            public_port = port.get(timeout=5)
            header = (bytes.fromhex("0100001c020007017f000001") + public_port.to_bytes(2, "big")
                      + bytes.fromhex("02000f030b7372762d302e6c6f63616c0050"))
            assert header[:STREAM_HEADER_PORT.start] == STREAM_HEADER[:STREAM_HEADER_PORT.start]
            assert header[STREAM_HEADER_PORT.stop:] == STREAM_HEADER[STREAM_HEADER_PORT.stop:]
            data = b""
            for _ in range(100):
                if len(data) >= len(header) + len(REQUEST):
                    break
                frame, raw = frames.next()
                assert (frame.cmd, frame.sid) == (mux.CMD_PSH, 3), frame
                assert raw[:2] == b"\x02\x02" and raw[4:8] == SYN_3[4:8]
                data += frame.payload
            # The stream header, then the public client's bytes unchanged.
            assert data == header + REQUEST

            # Answer as Go smux would: UPD on the first read, then the response, then FIN.
            upd = mux.encode_upd(2, 3, len(data), WINDOW)
            assert upd == UPD_3_HEAD + len(data).to_bytes(4, "little") + WINDOW_1MIB
            response = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
            sock.sendall(upd + mux.encode_frame(2, mux.CMD_PSH, 3, response) + FIN_3)
            assert job.get(timeout=5) == response

            # gostgev read our PSH: it reports it at once (first read), then closes its end.
            seen = frames.until(is_fin(3))
            assert seen[-1][1] == FIN_3
            assert upds(seen, 3) == [UPD_3_HEAD + len(response).to_bytes(4, "little") + WINDOW_1MIB]
            assert [f for f, _ in seen if f.cmd not in (mux.CMD_UPD, mux.CMD_FIN)] == []
        finally:
            job.kill()


@pytest.mark.parametrize("request_bytes", [C1, V1B], ids=["C1-empty-domain", "V1b-ipv4-zero"])
def test_gostgev_server_sends_nop_keepalives_to_a_silent_client(gostgev_server, request_bytes):
    sock, reply = gostgev_server.bind(request_bytes)
    with sock:
        started = time.monotonic()
        # tunnel.md §3: dst "", "0.0.0.0" or "::" -> the endpoint name, port echoed.
        assert_c2_shaped(reply)
        frame, raw = FrameReader(sock).next(timeout=KEEPALIVE + 1.0, skip_nops=False)
        assert raw == NOP
        assert KEEPALIVE * 0.5 < time.monotonic() - started < KEEPALIVE + 0.7
        assert gostgev_server.live_connectors() == 1


def test_bind_with_a_bad_version_is_closed_without_reply(gostgev_server):
    with connect(gostgev_server.port, timeout=5) as sock:
        sock.sendall(b"\x05" + C1[1:])
        assert_closed_silently(sock)
    assert gostgev_server.live_connectors() == 0


@pytest.mark.parametrize("request_bytes", [
    C1.replace(bytes.fromhex(TUNNEL_ID_HEX), bytes(16)),    # zero tunnel ID
    b"\x01\x03" + C1[2:],                                    # ASSOCIATE: not accepted by the tunnel handler
], ids=["zero-tunnel-id", "associate"])
def test_bad_requests_get_exactly_01_01_00_00(gostgev_server, request_bytes):
    assert request_bytes != C1 and len(request_bytes) == len(C1)
    with connect(gostgev_server.port, timeout=5) as sock:
        sock.sendall(request_bytes)
        assert read_until_eof(sock) == BAD_REQUEST
    assert gostgev_server.live_connectors() == 0


def test_gostgev_server_refuses_streams_opened_by_the_client(gostgev_server):
    """tunnel.md §3.7: the server accepts and immediately closes a stream the client opens."""
    sock, reply = gostgev_server.bind(C1)
    with sock:
        assert_c2_shaped(reply)
        sock.sendall(bytes.fromhex("0200000002000000"))       # SYN sid 2 (smux server ids are even)
        frames = FrameReader(sock)
        assert frames.next()[1] == bytes.fromhex("0201000002000000")
        assert wait_until(lambda: gostgev_server.live_connectors() == 1, 5)


#: C1 as a UDP BIND: FUDP flag and Network=udp first (relay-protocol.md §5), FEALEN 40 + 5
C1_UDP = bytes.fromhex("0182002d" "0400020001") + C1[4:]
#: C1 with weight 5 and an unknown (metadata-like) feature 0x05 after the Tunnel feature, FEALEN 40 + 6
C1_WEIGHT5_UNKNOWN = bytes.fromhex("0102002e") + C1[4:-1] + bytes([5]) + bytes.fromhex("050003616263")


@pytest.mark.parametrize("request_bytes, flag, weight", [(C1_UDP, 0x01, 0), (C1_WEIGHT5_UNKNOWN, 0, 5)],
                         ids=["udp-bind", "weight-and-unknown-feature"])
def test_bind_reply_carries_udp_flag_and_weight(gostgev_server, request_bytes, flag, weight):
    sock, reply = gostgev_server.bind(request_bytes)
    with sock:
        # C2 with the connector ID's FLAG (0x01 = UDP) and WEIGHT (copied) bytes set.
        expected = C2[:46] + bytes([flag]) + C2[47:49] + bytes([weight])
        assert len(reply) == len(expected), reply.hex()
        assert reply[:30] == expected[:30] and reply[46:] == expected[46:], reply.hex()


def test_bind_arriving_one_byte_at_a_time(gostgev_server):
    with connect(gostgev_server.port, timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for byte in C1:
            sock.sendall(bytes([byte]))
            gevent.sleep(0.002)     # paces the bytes, so each arrives on its own
        assert_c2_shaped(read_relay_message(sock))


def test_gostgev_server_drops_a_client_silent_past_the_keepalive_timeout(start_services):
    server = GostServerUnderTest(start_services(tunnel_server_config(**{"mux.keepaliveTimeout": "0.6s"}))["server"])
    sock, reply = server.bind(C1)
    with sock:
        assert_c2_shaped(reply)
        assert wait_until(lambda: server.live_connectors() == 1, 5)
        started = time.monotonic()
        frames = FrameReader(sock)
        with pytest.raises((EOFError, ConnectionResetError)):
            frames.next(timeout=3)          # only NOPs, then the close
        assert time.monotonic() - started < 2.5
        assert frames.nops and all(raw == NOP for raw in frames.nops)
        assert wait_until(lambda: server.live_connectors() == 0, 2)


def _read_stream(frames, sid, total, timeout=5.0):
    """PSH payload of ``sid`` until ``total`` bytes; checks the frame size limit of §10.1."""
    deadline = time.monotonic() + timeout
    data = bytearray()
    for _ in range(MAX_READS):
        if len(data) >= total:
            return bytes(data)
        frame, raw = frames.next(_left(deadline))
        if frame.cmd == mux.CMD_PSH and frame.sid == sid:
            assert len(frame.payload) <= 32768, len(frame.payload)
            data += frame.payload
    raise AssertionError("too many frames")


def _assert_no_data(frames, sid, quiet=0.4):
    """Nothing but NOPs (or UPDs for other streams) on ``sid`` for ``quiet`` seconds."""
    deadline = time.monotonic() + quiet
    for _ in range(MAX_READS):
        try:
            frame, _ = frames.next(max(0.001, deadline - time.monotonic()))
        except TimeoutError:
            return
        assert not (frame.cmd == mux.CMD_PSH and frame.sid == sid), "data sent beyond the window"
    raise AssertionError("too many frames")


def test_gostgev_server_respects_the_initial_262144_window(gostgev_server):
    sock, reply = gostgev_server.bind(C1)
    with sock:
        assert_c2_shaped(reply)
        assert wait_until(lambda: gostgev_server.live_connectors() == 1, 5)
        body = bytes(range(256)) * 1600                     # 409600 bytes
        upload = b"POST / HTTP/1.1\r\nHost: srv-0.local\r\nContent-Length: %d\r\n\r\n" % len(body) + body

        answer = b"HTTP/1.1 204 No Content\r\n\r\n"

        def public_client():
            # The answer keeps the connection open (HTTP/1.1, no close): read just that answer.
            with connect(gostgev_server.entrypoint, timeout=10) as public:
                public.sendall(upload)
                return recv_exact(public, len(answer), time.monotonic() + 10)

        job = gevent.spawn(public_client)
        try:
            frames = FrameReader(sock)
            assert frames.next()[1] == SYN_3
            first = _read_stream(frames, 3, mux.INITIAL_PEER_WINDOW)
            assert len(first) == mux.INITIAL_PEER_WINDOW      # exactly up to the window, not beyond
            _assert_no_data(frames, 3)
            sock.sendall(mux.encode_upd(2, 3, len(first), WINDOW))
            header_len = int.from_bytes(first[2:4], "big") + 4
            rest = _read_stream(frames, 3, header_len + len(upload) - len(first))
            assert (first + rest)[header_len:] == upload
            sock.sendall(mux.encode_frame(2, mux.CMD_PSH, 3, answer) + FIN_3)
            assert job.get(timeout=10) == answer
        finally:
            job.kill()


def test_visitor_connect_reaches_the_gost_client(gostgev_server):
    tunnel, reply = gostgev_server.bind(C1)
    with tunnel:
        assert_c2_shaped(reply)
        assert wait_until(lambda: gostgev_server.live_connectors() == 1, 5)
        assert relay.parse_request(VISITOR_CONNECT)[0].addrs == ("127.0.0.1:40000", "srv-0.local:80")
        with connect(gostgev_server.port, timeout=5) as visitor:
            visitor.sendall(VISITOR_CONNECT)
            assert recv_exact(visitor, 4, time.monotonic() + 5) == OK_EMPTY
            frames = FrameReader(tunnel)
            assert frames.next()[1] == SYN_3
            data = b""
            for _ in range(100):
                if len(data) >= len(VISITOR_STREAM_HEADER):
                    break
                frame, _ = frames.next()
                assert (frame.cmd, frame.sid) == (mux.CMD_PSH, 3), frame
                data += frame.payload
            # GOST copies the visitor's own src (40000 here) into the stream
            # header; gostgev writes the address it accepted the visitor from,
            # since anyone may put any src in a CONNECT.  Same bytes otherwise.
            port = visitor.getsockname()[1].to_bytes(2, "big")
            assert data == VISITOR_STREAM_HEADER[:12] + port + VISITOR_STREAM_HEADER[14:]
            # Bytes flow both ways.
            visitor.sendall(b"ping")
            frame, raw = frames.next()
            assert raw == bytes.fromhex("0202040003000000") + b"ping"
            tunnel.sendall(mux.encode_frame(2, mux.CMD_PSH, 3, b"pong"))
            assert recv_exact(visitor, 4, time.monotonic() + 5) == b"pong"


# -- 2. fake GOST server -> gostgev tunnel client -----------------------------------------

WEIGHT = 3


class FakeGostServer:
    """A raw listening socket playing the GOST tunnel server."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((LOCALHOST, 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = []

    def accept(self, timeout=5.0):
        self.sock.settimeout(timeout)
        conn, peer = self.sock.accept()
        self.accepted.append(conn)
        return conn, peer

    def close(self):
        for conn in self.accepted:
            conn.close()
        self.sock.close()


@pytest.fixture
def gost_listener():
    server = FakeGostServer()
    yield server
    server.close()


def tunnel_client_config(server_port, backend_addr, **metadata):
    md = {"tunnel.id": TUNNEL_ID, "tunnel.weight": WEIGHT, "mux.keepaliveInterval": "%gs" % KEEPALIVE, **metadata}
    return {
        "services": [{"name": "client", "addr": ":0",
                      "handler": {"type": "rtcp", "metadata": {"sniffing": True}},
                      "listener": {"type": "rtcp", "chain": "chain-0"},
                      "forwarder": {"nodes": [{"name": "local-0", "addr": backend_addr, "host": "srv-0.local"}]}}],
        "chains": [{"name": "chain-0", "hops": [{"name": "hop-0", "nodes": [{
            "name": "node-0", "addr": "%s:%d" % (LOCALHOST, server_port),
            "connector": {"type": "tunnel", "metadata": md}, "dialer": {"type": "tcp"}}]}]}],
    }


@pytest.fixture
def gostgev_client(start_services, backend, gost_listener):
    site = backend(name_responder("srv-0"))
    raw = tunnel_client_config(gost_listener.port, site.addr)
    return start_services(raw)["client"]


def accept_bind(listener):
    """Accept the client's connection and check its BIND against C1; return (conn, request)."""
    conn, peer = listener.accept()
    request = read_relay_message(conn)
    assert peer[0] == LOCALHOST
    # C1, except the source port (the client's real one) and the configured weight.
    expected = C1[:12] + peer[1].to_bytes(2, "big") + C1[14:-1] + bytes([WEIGHT])
    assert request == expected, request.hex()
    assert request[:4] == bytes.fromhex("01020028")
    assert request[4:14] == bytes.fromhex("020007017f000001") + peer[1].to_bytes(2, "big")
    assert request[14:21] == bytes.fromhex("02000403000000")       # dst: empty domain, port 0
    assert request[21:] == bytes.fromhex("030014" + TUNNEL_ID_HEX + "000000") + bytes([WEIGHT])
    parsed, _ = relay.parse_request(request)
    assert parsed.addrs == ("%s:%d" % peer, ":0")
    assert (parsed.tunnel_id.text, parsed.tunnel_id.weight) == (TUNNEL_ID, WEIGHT)
    return conn, request


def open_stream(conn, sid, header=STREAM_HEADER, payload=REQUEST):
    """SYN, the stream header in its own PSH, then the request in another (tunnel.md Appendix)."""
    syn = mux.encode_frame(2, mux.CMD_SYN, sid)
    first = mux.encode_frame(2, mux.CMD_PSH, sid, header)
    conn.sendall(syn + first + mux.encode_frame(2, mux.CMD_PSH, sid, payload))


def assert_served(frames, sid, sent):
    """The client's answer on stream ``sid``: a v2 UPD, the backend's response, FIN."""
    seen = frames.until(is_fin(sid))
    assert seen[-1][1] == mux.encode_frame(2, mux.CMD_FIN, sid)
    updates = upds(seen, sid)
    assert updates, "no window update for stream %d in %r" % (sid, [f for f, _ in seen])
    for raw in updates:
        assert raw[:8] == bytes.fromhex("02040800") + sid.to_bytes(4, "little")
        assert raw[12:16] == WINDOW_1MIB
        consumed, window = mux.decode_upd(raw[8:])
        assert 0 < consumed <= sent and window == WINDOW
    body = stream_data(seen, sid)
    assert body.startswith(b"HTTP/1.1 200 OK\r\n") and body.endswith(b"\r\n\r\nsrv-0"), body
    assert {f.sid for f, _ in seen} == {sid}
    return seen


@pytest.mark.parametrize("reply", [C2, C3], ids=["C2-endpoint-name", "C3-ipv4-echo"])
def test_gostgev_client_against_a_gost_server(gostgev_client, gost_listener, reply):
    conn, _ = accept_bind(gost_listener)
    conn.sendall(reply)
    assert wait_until(lambda: gostgev_client.listener.bound is not None, 5)
    bound = gostgev_client.listener.bound
    if reply is C2:
        assert (bound.endpoint, bound.connector_id.text) == ("%s:0" % ENDPOINT_NAME, C2_CONNECTOR)
    else:
        assert (bound.endpoint, bound.connector_id.text) == ("0.0.0.0:0", C3_CONNECTOR)

    frames = FrameReader(conn)
    open_stream(conn, 3)
    assert_served(frames, 3, len(STREAM_HEADER) + len(REQUEST))
    conn.sendall(FIN_3)
    # Keepalive: a NOP within the configured interval (plus slack).
    if not frames.nops:
        frame, raw = frames.next(timeout=KEEPALIVE + 1.5, skip_nops=False)
        assert raw == NOP, raw.hex()
    assert all(raw == NOP for raw in frames.nops)


def test_gostgev_client_takes_frames_coalesced_with_the_bind_reply(gostgev_client, gost_listener):
    """The reply and the first stream's frames in one segment: the bytes after C2 belong to smux."""
    conn, _ = accept_bind(gost_listener)
    frames = FrameReader(conn)
    conn.sendall(C2 + SYN_3 + PSH_HEADER_3 + STREAM_HEADER
                 + b"\x02\x02" + len(REQUEST).to_bytes(2, "little") + b"\x03\x00\x00\x00" + REQUEST)
    assert_served(frames, 3, len(STREAM_HEADER) + len(REQUEST))


def test_unauthorized_reply_makes_the_client_retry(gostgev_client, gost_listener, caplog):
    caplog.set_level(logging.WARNING)
    conn, _ = accept_bind(gost_listener)
    conn.sendall(UNAUTHORIZED)
    refused = time.monotonic()
    conn.close()
    second, _ = accept_bind(gost_listener)          # a fresh, identical BIND
    elapsed = time.monotonic() - refused
    assert 0.5 < elapsed < 2.5, elapsed             # reconnect policy: first wait 1 s
    assert any("unauthorized by 127.0.0.1:" in record.getMessage() for record in caplog.records), caplog.text
    # The second attempt succeeds and the tunnel works.
    second.sendall(C2)
    open_stream(second, 3)
    assert_served(FrameReader(second), 3, len(STREAM_HEADER) + len(REQUEST))


def test_a_malformed_stream_header_closes_only_that_stream(gostgev_client, gost_listener):
    conn, _ = accept_bind(gost_listener)
    conn.sendall(C2)
    frames = FrameReader(conn)
    conn.sendall(SYN_3 + mux.encode_frame(2, mux.CMD_PSH, 3, bytes.fromhex("05ff00000102030405")))
    seen = frames.until(is_fin(3))
    assert seen[-1][1] == FIN_3
    assert stream_data(seen, 3) == b""
    # Same connection, next stream: served normally.
    open_stream(conn, 5)
    assert mux.encode_frame(2, mux.CMD_SYN, 5) == SYN_5
    assert_served(frames, 5, len(STREAM_HEADER) + len(REQUEST))
    assert gostgev_client.listener.bound is not None and not gostgev_client.listener.bound.session.closed


def big_responder(size):
    def handle(sock, _address):
        head = b""
        for _ in range(100):
            if b"\r\n\r\n" in head:
                break
            chunk = sock.recv(4096)
            if not chunk:
                return
            head += chunk
        sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % size
                     + b"x" * size)

    return handle


def test_gostgev_client_respects_the_initial_262144_window(start_services, backend, gost_listener):
    site = backend(big_responder(409600))
    start_services(tunnel_client_config(gost_listener.port, site.addr))
    conn, _ = accept_bind(gost_listener)
    conn.sendall(C2)
    frames = FrameReader(conn)
    open_stream(conn, 3)
    first = _read_stream(frames, 3, mux.INITIAL_PEER_WINDOW)
    assert len(first) == mux.INITIAL_PEER_WINDOW
    _assert_no_data(frames, 3)
    conn.sendall(mux.encode_upd(2, 3, len(first), WINDOW))
    seen = frames.until(is_fin(3), timeout=10)
    response = first + stream_data(seen, 3)
    assert response.startswith(b"HTTP/1.1 200 OK\r\n") and response.endswith(b"\r\n\r\n" + b"x" * 409600)
    assert all(len(f.payload) <= 32768 for f, _ in seen if f.cmd == mux.CMD_PSH)
