"""WebSocket transport over real loopback sockets: gostgev on both ends, or one end spoken by hand."""

import hashlib
import os
import socket as _stdsocket
import time

import gevent
import pytest

from gostgev.codec.http import parse_request_head
from gostgev.codec.ws import (
    OP_BINARY,
    OP_CLOSE,
    OP_CONTINUATION,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    FrameParser,
    accept_key,
    close_payload,
    encode_frame,
    parse_close_payload,
)
from gostgev.netio.pipe import pipe
from gostgev.netio.ws import WsHandshakeError, WsProtocolError, ws_accept, ws_connect

pytestmark = pytest.mark.timeout(10)

KEY = "dGhlIHNhbXBsZSBub25jZQ=="


def ws_pair(socket_pair, **options):
    """(client WsSocket, server WsSocket) after a real handshake."""
    client, server = socket_pair(timeout=5)
    accepting = gevent.spawn(ws_accept, server, timeout=5, **options)
    ws_client = ws_connect(client, "%s:%d" % client.getpeername(), timeout=5, **options)
    return ws_client, accepting.get(timeout=5)


class RawPeer:
    """One end spoken by hand with the codec: masks if it plays the client."""

    def __init__(self, sock, client):
        self.sock = sock
        self.client = client
        self.parser = FrameParser(expect_masked=not client)

    def send(self, opcode, payload=b"", fin=True):
        self.sock.sendall(encode_frame(opcode, payload, os.urandom(4) if self.client else None, fin))

    def frame(self, timeout=3):
        with gevent.Timeout(timeout):
            while True:
                frame = next(self.parser, None)
                if frame is not None:
                    return frame
                data = self.sock.recv(65536)
                if not data:
                    return None
                self.parser.add_data(data)


def raw_client_pair(socket_pair, request=None):
    """(RawPeer client, server WsSocket) with the raw side sending ``request`` (gorilla's by default)."""
    client, server = socket_pair(timeout=5)
    client.sendall(request or gorilla_request())
    ws = ws_accept(server, timeout=5)
    head = b""
    while b"\r\n\r\n" not in head:
        head += client.recv(1)
    assert head.startswith(b"HTTP/1.1 101 ")
    return RawPeer(client, client=True), ws


def gorilla_request(path="/ws", host="127.0.0.1:8443", key=KEY):
    # Go's Request.Write: request line, Host, User-Agent, then headers sorted by name.
    return ("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: Go-http-client/1.1\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\nUpgrade: websocket\r\n\r\n"
            % (path, host, key)).encode()


def accept_in_background(server, *args):
    """ws_accept in a greenlet; its exception is returned, not printed by the hub."""
    def run():
        try:
            return ws_accept(server, *args)
        except WsHandshakeError as exc:
            return exc
    return gevent.spawn(run)


def read_response(sock):
    """Everything until the server's EOF; then close, as a client would, to end its drain."""
    data = b""
    with gevent.Timeout(3):
        while True:
            chunk = sock.recv(4096)
            if not chunk:
                sock.close()
                return data
            data += chunk


# -- handshake -------------------------------------------------------------------------

def test_handshake_both_ways_and_small_messages(socket_pair):
    """gostgev client and server shake hands and exchange data in both directions."""
    client, server = ws_pair(socket_pair)
    client.sendall(b"hello")
    assert server.recv(100) == b"hello"
    server.sendall(b"world")
    buf = bytearray(10)
    assert client.recv_into(buf) == 5 and buf[:5] == b"world"
    assert client.getpeername() == server.getsockname()


def test_gostlike_client_request_is_accepted_and_frames_after_it_are_kept(socket_pair):
    """gorilla's exact request, with 4 KiB fragments (its default write buffer) in the same segment."""
    client, server = socket_pair(timeout=5)
    data = os.urandom(10000)
    pieces = [data[i:i + 4096] for i in range(0, len(data), 4096)]
    frames = b"".join(encode_frame(OP_BINARY if i == 0 else OP_CONTINUATION, piece, os.urandom(4),
                                   fin=i == len(pieces) - 1) for i, piece in enumerate(pieces))
    client.sendall(gorilla_request() + frames)
    ws = ws_accept(server, timeout=5)
    expected = (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                b"Sec-WebSocket-Accept: %s\r\n\r\n" % accept_key(KEY).encode())
    assert client.recv(4096) == expected
    received = b""
    while len(received) < len(data):
        received += ws.recv(65536)
    assert received == data


def test_client_against_a_gostlike_server_with_a_frame_glued_to_the_101(socket_pair):
    """ws_connect sends gorilla's request layout and keeps a frame sent in the 101's segment."""
    client, server = socket_pair(timeout=5)

    def gostlike_server():
        head = b""
        while b"\r\n\r\n" not in head:
            head += server.recv(4096)
        request = parse_request_head(head)
        server.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                       b"Sec-WebSocket-Accept: %s\r\n\r\n" % accept_key(request.header("Sec-WebSocket-Key")).encode()
                       + encode_frame(OP_BINARY, b"early"))
        return head

    answering = gevent.spawn(gostlike_server)
    ws = ws_connect(client, "cdn.example.com", "/tunnel", timeout=5, extra_headers=[("x-auth", "t")])
    head = answering.get(timeout=5)
    key = parse_request_head(head).header("Sec-WebSocket-Key")
    assert head == gorilla_request("/tunnel", "cdn.example.com", key).replace(b"\r\n\r\n", b"\r\nX-Auth: t\r\n\r\n")
    assert ws.recv(100) == b"early"


def test_small_reads_of_big_frames_and_text_frames(socket_pair):
    raw, ws = raw_client_pair(socket_pair)
    big = os.urandom(100000)
    raw.send(OP_BINARY, big)
    raw.send(OP_TEXT, "ünïcode".encode())
    received = b""
    while len(received) < len(big):
        received += ws.recv(999)
    assert received == big
    buf = bytearray(100)
    n = ws.recv_into(buf, 3)
    assert bytes(buf[:n]) == "ünïcode".encode()[:3]
    assert ws.recv(100) == "ünïcode".encode()[3:]


def test_client_frames_are_masked_with_fresh_keys_and_split(socket_pair):
    """A client's sendall becomes masked binary frames of at most 64 KiB, each with its own key."""
    client_sock, server_sock = socket_pair(timeout=5)
    accepting = gevent.spawn(ws_accept, server_sock, timeout=5)
    ws = ws_connect(client_sock, "example.com", timeout=5)
    accepting.get(timeout=5)
    under = server_sock     # the socket beneath the server's WsSocket: the frames as sent
    ws.sendall(bytes(150000))
    wire_size = (2 + 8 + 4) * 2 + (2 + 2 + 4) + 150000
    data = b""
    with gevent.Timeout(3):
        while len(data) < wire_size:
            data += under.recv(wire_size - len(data))
    pos, lengths, masks = 0, [], []
    while pos < len(data):
        assert data[pos] == 0x82 and data[pos + 1] & 0x80  # FIN + binary, MASK bit
        code = data[pos + 1] & 0x7F
        ext = {126: 2, 127: 8}.get(code, 0)
        length = int.from_bytes(data[pos + 2:pos + 2 + ext], "big") if ext else code
        masks.append(data[pos + 2 + ext:pos + 6 + ext])
        lengths.append(length)
        pos += 6 + ext + length
    assert lengths == [65536, 65536, 18928] and pos == len(data)
    assert len(set(masks)) == 3
    parser = FrameParser(expect_masked=True)
    parser.add_data(data)
    assert b"".join(f.payload for f in parser) == bytes(150000)


def test_wrong_path_gets_404(socket_pair):
    client, server = socket_pair(timeout=5)
    client.sendall(gorilla_request(path="/other"))
    accepting = accept_in_background(server, "/ws", 5)
    response = read_response(client)
    error = accepting.get(timeout=5)
    assert isinstance(error, WsHandshakeError) and error.status == 404
    assert response.startswith(b"HTTP/1.1 404 Not Found\r\n") and response.endswith(b"404 page not found\n")


@pytest.mark.parametrize("request_bytes", [
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 garbage\r\n\r\n",  # a TLS ClientHello-ish start
    b"GET /ws HTTP/1.1\r\nHost: a\r\n\r\n",                          # plain HTTP, no upgrade
    gorilla_request().replace(b"Version: 13", b"Version: 8"),
])
def test_not_an_upgrade_gets_400_without_hanging(socket_pair, request_bytes):
    client, server = socket_pair(timeout=5)
    client.sendall(request_bytes)
    started = time.monotonic()
    accepting = accept_in_background(server, "/ws", 5)
    response = read_response(client)
    error = accepting.get(timeout=5)
    assert isinstance(error, WsHandshakeError) and error.status == 400
    assert response.startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert time.monotonic() - started < 3


def test_slow_client_is_cut_by_the_handshake_timeout(socket_pair):
    client, server = socket_pair(timeout=5)
    client.sendall(b"GET /ws HTTP/1.1\r\n")
    started = time.monotonic()
    with pytest.raises(WsHandshakeError, match="within 0.3s"):
        ws_accept(server, timeout=0.3)
    assert 0.25 < time.monotonic() - started < 1.5


def test_client_side_failures(socket_pair):
    """ws_connect: a refusal carries its status; a silent server hits the timeout."""
    client, server = socket_pair(timeout=5)
    gevent.spawn(lambda: (server.recv(4096), server.sendall(b"HTTP/1.1 403 Forbidden\r\n\r\n")))
    with pytest.raises(WsHandshakeError) as error:
        ws_connect(client, "h", timeout=5)
    assert error.value.status == 403
    client, server = socket_pair(timeout=5)
    started = time.monotonic()
    with pytest.raises(WsHandshakeError, match="within"):
        ws_connect(client, "h", timeout=0.3)
    assert time.monotonic() - started < 1.5


# -- control frames ------------------------------------------------------------------------

def test_ping_pong(socket_pair):
    """A ping from a raw peer is answered with the same payload while recv keeps waiting for data."""
    raw, ws = raw_client_pair(socket_pair)
    reader = gevent.spawn(ws.recv, 100)
    raw.send(OP_PING, b"are you there")
    pong = raw.frame()
    assert (pong.opcode, pong.payload) == (OP_PONG, b"are you there")
    raw.send(OP_PONG, b"unsolicited")
    raw.send(OP_BINARY, b"data")
    assert reader.get(timeout=3) == b"data"


def test_pongs_never_land_inside_a_concurrent_bulk_sendall(socket_pair):
    """The reader answers a ping flood while another greenlet writes 8 MiB: every frame stays whole."""
    raw, ws = raw_client_pair(socket_pair)
    data = os.urandom(8 * 1024 * 1024)
    reader = gevent.spawn(ws.recv, 100)
    writer = gevent.spawn(ws.sendall, data)

    def flood():
        for i in range(200):
            raw.send(OP_PING, b"%d" % i)
            gevent.sleep(0)     # a yield: the pings arrive among the writer's frames, not all before them
        raw.send(OP_PING, b"last")

    pinger = gevent.spawn(flood)
    received, pongs, mid_stream = [], [], 0
    with gevent.Timeout(8):
        # Pongs may be coalesced, but the latest ping is always answered.
        while pongs[-1:] != [b"last"] or sum(map(len, received)) < len(data):
            frame = raw.frame()  # the parser raises if a pong cut a frame
            if frame.opcode == OP_PONG:
                pongs.append(frame.payload)
                mid_stream += sum(map(len, received)) < len(data)
            else:
                assert frame.opcode == OP_BINARY and len(frame.payload) <= 65536
                received.append(frame.payload)
    assert mid_stream  # some pong really went out between two frames of the sendall
    pinger.get(timeout=1)
    writer.get(timeout=1)
    assert b"".join(received) == data
    raw.send(OP_BINARY, b"done")
    assert reader.get(timeout=3) == b"done"


def test_close_from_peer_ends_reading_and_is_answered_on_shutdown(socket_pair):
    """Half-close: after the peer's close frame we may still send, then our close answers it."""
    raw, ws = raw_client_pair(socket_pair)
    raw.send(OP_BINARY, b"last")
    raw.send(OP_CLOSE, close_payload(1000))
    assert ws.recv(100) == b"last"
    assert ws.recv(100) == b""
    assert ws.recv(100) == b""
    ws.sendall(b"reply after the peer's close")
    assert raw.frame().payload == b"reply after the peer's close"
    ws.shutdown(_stdsocket.SHUT_WR)
    close = raw.frame()
    assert close.opcode == OP_CLOSE and parse_close_payload(close.payload) == (1000, "")
    with pytest.raises(BrokenPipeError):
        ws.sendall(b"too late")


def test_close_answers_a_pending_close(socket_pair):
    raw, ws = raw_client_pair(socket_pair)
    raw.send(OP_CLOSE, close_payload(1001, "going away"))
    assert ws.recv(100) == b""
    ws.close()
    assert raw.frame().opcode == OP_CLOSE
    assert raw.frame() is None  # then TCP EOF


def test_our_shutdown_keeps_reading_until_the_peers_close(socket_pair):
    raw, ws = raw_client_pair(socket_pair)
    ws.shutdown(_stdsocket.SHUT_WR)
    ws.shutdown(_stdsocket.SHUT_WR)  # only one close frame goes out
    assert raw.frame().opcode == OP_CLOSE
    raw.send(OP_BINARY, b"still flowing")
    raw.send(OP_CLOSE)
    assert ws.recv(100) == b"still flowing"
    assert ws.recv(100) == b""
    ws.close()
    assert raw.frame() is None  # nothing after our single close frame, then TCP EOF


def test_protocol_error_closes_with_1002(socket_pair):
    raw, ws = raw_client_pair(socket_pair)
    raw.sock.sendall(b"\x82\x05hello")  # unmasked: a client must mask
    with pytest.raises(WsProtocolError, match="masked"):
        ws.recv(100)
    close = raw.frame()
    assert close.opcode == OP_CLOSE and parse_close_payload(close.payload)[0] == 1002


def test_eof_inside_a_frame_is_an_error_and_eof_between_frames_is_not(socket_pair):
    raw, ws = raw_client_pair(socket_pair)
    raw.sock.sendall(encode_frame(OP_BINARY, b"whole", os.urandom(4)) + encode_frame(OP_BINARY, b"cut", b"abcd")[:4])
    raw.sock.shutdown(_stdsocket.SHUT_WR)
    assert ws.recv(100) == b"whole"
    with pytest.raises(ConnectionResetError):
        ws.recv(100)
    raw2, ws2 = raw_client_pair(socket_pair)
    raw2.sock.shutdown(_stdsocket.SHUT_WR)
    assert ws2.recv(100) == b""


def test_keepalive_pings_and_drops_a_silent_peer(socket_pair):
    """keepalive=0.1: pings go out; a peer that never answers is cut after ~2 intervals."""
    client_sock, server_sock = socket_pair(timeout=5)
    accepting = gevent.spawn(ws_accept, server_sock, timeout=5)
    ws = ws_connect(client_sock, "h", timeout=5, keepalive=0.1)
    accepting.get(timeout=5)
    raw = RawPeer(server_sock, client=False)    # takes the pings from beneath the server's WsSocket
    assert raw.frame(timeout=1).opcode == OP_PING
    started = time.monotonic()
    with pytest.raises(ConnectionResetError, match="keepalive"):
        ws.recv(100)
    assert time.monotonic() - started < 1.0
    ws.close()


def test_keepalive_keeps_an_answering_connection(socket_pair):
    client, server = ws_pair(socket_pair, keepalive=0.05)
    reader = gevent.spawn(server.recv, 100)  # the server's reader answers the client's pings
    with pytest.raises(gevent.Timeout):
        with gevent.Timeout(0.4):
            client.recv(100)
    client.sendall(b"alive")
    assert reader.get(timeout=2) == b"alive"
    client.close()
    server.close()


# -- bulk ------------------------------------------------------------------------------------

def test_10_mib_both_ways_through_pipe(socket_pair):
    """app <-> pipe <-> ws client ==ws== ws server <-> pipe <-> backend, SHA-256 on both ends."""
    size = 10 * 1024 * 1024
    up, down = os.urandom(size), os.urandom(size)
    app, app_peer = socket_pair(timeout=5)
    backend_peer, backend = socket_pair(timeout=5)
    ws_client, ws_server = ws_pair(socket_pair)
    pipes = [gevent.spawn(pipe, app_peer, ws_client), gevent.spawn(pipe, ws_server, backend_peer)]

    def send_then_half_close(sock, data):
        sock.sendall(data)
        sock.shutdown(_stdsocket.SHUT_WR)

    def drain(sock):
        digest, total = hashlib.sha256(), 0
        while True:
            chunk = sock.recv(256 * 1024)
            if not chunk:
                return digest.hexdigest(), total
            digest.update(chunk)
            total += len(chunk)

    started = time.monotonic()
    senders = [gevent.spawn(send_then_half_close, app, up), gevent.spawn(send_then_half_close, backend, down)]
    readers = [gevent.spawn(drain, backend), gevent.spawn(drain, app)]
    gevent.joinall(senders + readers + pipes, timeout=8, raise_error=True)
    elapsed = time.monotonic() - started
    assert readers[0].value == (hashlib.sha256(up).hexdigest(), size)
    assert readers[1].value == (hashlib.sha256(down).hexdigest(), size)
    assert [p.value for p in pipes] == [(size, size), (size, size)]
    print("ws pipe: 2 x 10 MiB in %.2fs" % elapsed)
