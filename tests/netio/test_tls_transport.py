"""gostgev.netio.tls over real loopback sockets: verification rules, mTLS, half-close, bulk, abuse."""

import hashlib
import os
import pathlib
import re
import socket as _stdsocket
import time

import gevent
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from gevent import socket, ssl
from gevent.server import StreamServer

from gostgev.netio.pipe import pipe
from gostgev.netio.tls import (
    TLSClientConfig,
    TlsError,
    TLSServerConfig,
    accept_tls,
    client_context,
    connect_tls,
    fingerprint_of,
    server_context,
)
from tests import certs
from tests.conftest import wait_until

LOCALHOST = "127.0.0.1"


# -- servers -------------------------------------------------------------------------

class TlsServer:
    """Accepts TLS on loopback and runs ``handle(tls)``; handshake errors are kept in ``errors``,
    and the TCP socket beneath each accepted connection in ``beneath[tls]``."""

    def __init__(self, server_tls, handle, timeout=5.0):
        self.server_tls, self.handle, self.timeout = server_tls, handle, timeout
        self.errors, self.accepted, self.beneath = [], [], {}
        self.server = StreamServer((LOCALHOST, 0), self._serve)
        self.server.start()
        self.port = self.server.address[1]

    def _serve(self, sock, _address):
        started = time.monotonic()
        try:
            tls = accept_tls(sock, self.server_tls, self.timeout)
        except TlsError as e:
            self.errors.append((e, time.monotonic() - started))
            return
        self.accepted.append(tls)
        self.beneath[tls] = sock
        with tls:
            self.handle(tls)


def echo(tls):
    while True:
        data = tls.recv(65536)
        if not data:
            break
        tls.sendall(data)
    tls.shutdown(_stdsocket.SHUT_WR)


@pytest.fixture
def serve():
    made = []

    def start(server_tls, handle=echo, timeout=5.0):
        server = TlsServer(server_tls, handle, timeout)
        made.append(server)
        return server

    yield start
    for server in made:
        server.server.stop(timeout=1)


def dial(port, client_tls, server_name=None, timeout=5.0):
    sock = socket.create_connection((LOCALHOST, port), timeout=5)
    try:
        return connect_tls(sock, client_tls, server_name=server_name, timeout=timeout)
    except BaseException:
        sock.close()
        raise


def send_then_half_close(tls, payload):
    tls.sendall(payload)
    tls.shutdown(_stdsocket.SHUT_WR)


def roundtrip(tls, payload=b"ping"):
    send_then_half_close(tls, payload)
    return read_all(tls)


def read_all(tls, limit=1 << 30):
    parts, total = [], 0
    while total < limit:
        data = tls.recv(256 * 1024)
        if not data:
            break
        parts.append(data)
        total += len(data)
    return b"".join(parts)


def wait_errors(server, count=1, timeout=3.0):
    wait_until(lambda: len(server.errors) >= count, timeout, 0.01)
    return server.errors


@pytest.fixture(scope="module")
def verified_server_tls(test_ca):
    return server_context(TLSServerConfig(cert_file=test_ca["server"], key_file=test_ca["server_key"]))


# -- verification --------------------------------------------------------------------

def test_verified_connection_moves_10mib_both_ways_through_pipe(test_ca, verified_server_tls, serve):
    """A TLS server pipes to a plain echo backend; a verifying client streams 10 MiB and reads it back."""
    backend = StreamServer((LOCALHOST, 0), lambda sock, _a: _plain_echo(sock))
    backend.start()

    def relay(tls):
        with socket.create_connection((LOCALHOST, backend.address[1]), timeout=5) as upstream:
            pipe(tls, upstream)

    try:
        server = serve(verified_server_tls, relay)
        client_tls = client_context(TLSClientConfig(secure=True, ca_file=test_ca["ca"], server_name="localhost"))
        payload = os.urandom(10 * 1024 * 1024)
        with dial(server.port, client_tls) as tls:
            writer = gevent.spawn(send_then_half_close, tls, payload)
            echoed = read_all(tls)
            writer.join(timeout=10)
        assert writer.successful()
        assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
        assert tls.peer_certificate_subject() == "CN=localhost"
    finally:
        backend.stop(timeout=1)


def _plain_echo(sock):
    while True:
        data = sock.recv(128 * 1024)
        if not data:
            break
        sock.sendall(data)
    sock.shutdown(_stdsocket.SHUT_WR)


def test_wrong_ca_is_refused(test_ca, verified_server_tls, serve):
    server = serve(verified_server_tls)
    client_tls = client_context(TLSClientConfig(secure=True, ca_file=test_ca["other_ca"], server_name="localhost"))
    with pytest.raises(TlsError) as info:
        dial(server.port, client_tls)
    assert str(info.value).startswith("certificate verify failed: ")
    assert "issuer" in str(info.value)
    # the client's alert reaches the server, which fails its handshake too
    assert wait_errors(server) and "handshake failed" in str(server.errors[0][0])


def test_wrong_host_name_is_refused_when_secure(test_ca, verified_server_tls, serve):
    server = serve(verified_server_tls)
    client_tls = client_context(TLSClientConfig(secure=True, ca_file=test_ca["ca"], server_name="other.example"))
    with pytest.raises(TlsError) as info:
        dial(server.port, client_tls)
    assert str(info.value).startswith("certificate verify failed: hostname mismatch")
    assert "other.example" in str(info.value)


def test_server_name_argument_overrides_config_and_ip_matches_ip_san(test_ca, verified_server_tls, serve):
    server = serve(verified_server_tls)
    client_tls = client_context(TLSClientConfig(secure=True, ca_file=test_ca["ca"], server_name="other.example"))
    with dial(server.port, client_tls, server_name=LOCALHOST) as tls:  # IP literal: no SNI, IP SAN checked
        assert roundtrip(tls) == b"ping"


def test_ca_file_without_secure_checks_chain_but_not_host_name(test_ca, verified_server_tls, serve):
    server = serve(verified_server_tls)
    chain_only = client_context(TLSClientConfig(ca_file=test_ca["ca"], server_name="other.example"))
    with dial(server.port, chain_only) as tls:
        assert roundtrip(tls) == b"ping"
    wrong_chain = client_context(TLSClientConfig(ca_file=test_ca["other_ca"], server_name="other.example"))
    with pytest.raises(TlsError, match="^certificate verify failed: "):
        dial(server.port, wrong_chain)


def test_insecure_client_accepts_generated_cert_and_sees_its_fingerprint(serve):
    logged = []

    class Log:
        def info(self, msg, *args):
            logged.append(msg % args)

    server_tls = server_context(TLSServerConfig(), log=Log())
    assert server_tls.generated and len(server_tls.fingerprint) == 32 * 3 - 1
    assert logged and server_tls.fingerprint in logged[0]
    server = serve(server_tls)
    client_tls = client_context(TLSClientConfig(server_name="whatever.example"))
    with dial(server.port, client_tls) as tls:
        assert fingerprint_of(tls.peer_certificate()) == server_tls.fingerprint
        assert roundtrip(tls) == b"ping"
    # the same certificate fails verification once the client asks for it
    with pytest.raises(TlsError, match="^certificate verify failed: self-signed"):
        dial(server.port, client_context(TLSClientConfig(secure=True, server_name="localhost")))


def test_loaded_certificate_fingerprint(test_ca, verified_server_tls):
    pem = pathlib.Path(test_ca["server"]).read_bytes()
    der = x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)
    assert verified_server_tls.fingerprint == ":".join("%02X" % b for b in hashlib.sha256(der).digest())
    assert not verified_server_tls.generated


# -- mutual TLS ----------------------------------------------------------------------

def test_mutual_tls_refuses_client_without_certificate(test_ca, serve):
    server_tls = server_context(TLSServerConfig(cert_file=test_ca["server"], key_file=test_ca["server_key"],
                                                ca_file=test_ca["ca"]))
    server = serve(server_tls)
    client_tls = client_context(TLSClientConfig(ca_file=test_ca["ca"]))
    with pytest.raises(ConnectionError):
        # TLS 1.3: the client's handshake ends before the server judges it; the alert arrives on read
        with dial(server.port, client_tls) as tls:
            tls.sendall(b"ping")
            read_all(tls)
    errors = wait_errors(server)
    assert errors and str(errors[0][0]).startswith("client certificate required")


def test_mutual_tls_accepts_client_certificate_from_ca(test_ca, serve):
    server_tls = server_context(TLSServerConfig(cert_file=test_ca["server"], key_file=test_ca["server_key"],
                                                ca_file=test_ca["ca"]))
    server = serve(server_tls)
    client_tls = client_context(TLSClientConfig(ca_file=test_ca["ca"], cert_file=test_ca["client"],
                                                key_file=test_ca["client_key"]))
    with dial(server.port, client_tls) as tls:
        assert roundtrip(tls) == b"ping"
    assert server.accepted[0].peer_certificate_subject() == "CN=tunnel client"


def test_mutual_tls_refuses_client_certificate_from_other_ca(test_ca, serve, tmp_path):
    rogue = certs.issue(certs.make_ca("rogue CA"), "rogue", usage=certs.CLIENT_AUTH)
    rogue_cert, rogue_key = certs.write_pem(tmp_path, "rogue", *rogue)
    server_tls = server_context(TLSServerConfig(cert_file=test_ca["server"], key_file=test_ca["server_key"],
                                                ca_file=test_ca["ca"]))
    server = serve(server_tls)
    client_tls = client_context(TLSClientConfig(cert_file=rogue_cert, key_file=rogue_key))
    with pytest.raises(ConnectionError):
        with dial(server.port, client_tls) as tls:
            tls.sendall(b"ping")
            read_all(tls)
    errors = wait_errors(server)
    assert errors and str(errors[0][0]).startswith("certificate verify failed: ")


# -- interop with another TLS stack (the stdlib's OpenSSL binding) ---------------------------

def test_stdlib_client_against_our_server_closes_with_close_notify(test_ca, verified_server_tls, serve):
    server = serve(verified_server_tls)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # gevent's class: its handshake cooperates
    context.load_verify_locations(test_ca["ca"])
    with socket.create_connection((LOCALHOST, server.port), timeout=5) as raw:
        sock = context.wrap_socket(raw, server_hostname="localhost")
        sock.sendall(b"hello")
        assert sock.recv(5) == b"hello"
        sock.unwrap().close()  # sends close_notify and waits for ours: the echo's SHUT_WR answers it


def test_our_client_against_stdlib_server_half_closes(test_ca):
    def handle(sock, _address):
        data = b""
        while True:
            chunk = sock.recv(65536)
            if not chunk:  # our close_notify
                break
            data += chunk
        sock.sendall(b"got " + data)
        sock.unwrap()

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(test_ca["server"], test_ca["server_key"])
    server = StreamServer((LOCALHOST, 0), handle, ssl_context=context)
    server.start()
    try:
        client_tls = client_context(TLSClientConfig(secure=True, ca_file=test_ca["ca"], server_name="localhost"))
        with dial(server.address[1], client_tls) as tls:
            assert roundtrip(tls, b"x" * 100000) == b"got " + b"x" * 100000
    finally:
        server.stop(timeout=1)


# -- stream semantics -------------------------------------------------------------------

def test_half_close_then_reply(verified_server_tls, serve):
    """Client SHUT_WR -> server recv() gives b"" and its later reply still reaches the client."""
    seen = []

    def handle(tls):
        seen.append(read_all(tls))
        tls.sendall(b"reply after EOF")
        tls.shutdown(_stdsocket.SHUT_WR)

    server = serve(verified_server_tls, handle)
    with dial(server.port, client_context(TLSClientConfig())) as tls:
        tls.sendall(b"request")
        tls.shutdown(_stdsocket.SHUT_WR)
        with pytest.raises(BrokenPipeError):
            tls.sendall(b"too late")
        assert read_all(tls) == b"reply after EOF"
        assert tls.recv(10) == b""
    assert seen == [b"request"]


def test_close_without_shutdown_still_ends_cleanly(verified_server_tls, serve):
    got = []
    server = serve(verified_server_tls, lambda tls: got.append(read_all(tls)))
    tls = dial(server.port, client_context(TLSClientConfig()))
    tls.sendall(b"last words")
    tls.close()
    assert wait_until(lambda: got, 3, 0.01)
    assert got == [b"last words"]


def test_corrupt_record_is_a_reset_and_the_peer_gets_an_alert(verified_server_tls, serve):
    """Garbage after the handshake: recv raises ConnectionResetError and our alert goes out."""
    alert = []

    def handle(tls):
        raw = server.beneath[tls]  # below TLS on purpose: forge a record that fails authentication
        raw.sendall(b"\x17\x03\x03\x00\x20" + b"\x00" * 32)
        raw.settimeout(3)
        alert.append(raw.recv(4096))

    server = serve(verified_server_tls, handle)
    with dial(server.port, client_context(TLSClientConfig())) as tls:
        with pytest.raises(ConnectionResetError, match="tls: "):
            read_all(tls)
        assert tls.recv(10) == b""
    assert wait_until(lambda: alert, 3, 0.01)
    assert alert[0][:1] in (b"\x15", b"\x17")  # an alert record (TLS 1.3 encrypts it as 0x17)


def test_recv_into_and_socket_passthrough(verified_server_tls, serve):
    server = serve(verified_server_tls)
    with dial(server.port, client_context(TLSClientConfig())) as tls:
        assert tls.getpeername() == (LOCALHOST, server.port)
        assert tls.getsockname()[0] == LOCALHOST
        tls.settimeout(3)
        assert tls.gettimeout() == 3
        tls.setsockopt(_stdsocket.IPPROTO_TCP, _stdsocket.TCP_NODELAY, 1)
        tls.sendall(b"abcdef")
        buf = bytearray(16)
        got = 0
        while got < 6:
            got += tls.recv_into(memoryview(buf)[got:], 6 - got)
        assert bytes(buf[:6]) == b"abcdef"
        assert tls.version in ("TLSv1.2", "TLSv1.3") and tls.cipher


def test_min_version_tls13(test_ca, serve):
    server_tls = server_context(TLSServerConfig(cert_file=test_ca["server"], key_file=test_ca["server_key"],
                                                min_version="VersionTLS13"))
    server = serve(server_tls)
    with dial(server.port, client_context(TLSClientConfig())) as tls:
        assert tls.version == "TLSv1.3"
        assert roundtrip(tls) == b"ping"


def test_fifty_parallel_connections_echo_64k(verified_server_tls, serve):
    server = serve(verified_server_tls)
    client_tls = client_context(TLSClientConfig())

    def one(i):
        payload = bytes([i]) * 65536
        with dial(server.port, client_tls) as tls:
            writer = gevent.spawn(tls.sendall, payload)
            echoed = b""
            while len(echoed) < len(payload):
                data = tls.recv(65536)
                if not data:
                    break
                echoed += data
            writer.join(timeout=5)
            return echoed == payload

    jobs = [gevent.spawn(one, i) for i in range(50)]
    gevent.joinall(jobs, timeout=10)
    assert [job.value for job in jobs] == [True] * 50


# -- abuse -------------------------------------------------------------------------

def test_plaintext_client_is_rejected_quickly(verified_server_tls, serve):
    server = serve(verified_server_tls, timeout=5.0)
    with socket.create_connection((LOCALHOST, server.port), timeout=3) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        errors = wait_errors(server)
        assert errors and errors[0][1] < 1.0
        assert str(errors[0][0]).startswith("handshake failed: ")
        # the server sent an alert at most, then the connection ends
        reply, deadline = b"", time.monotonic() + 3
        for _ in range(64):     # an alert is a few bytes, in one or two reads
            if time.monotonic() >= deadline:
                break
            data = sock.recv(4096)
            if not data:
                break
            reply += data
        assert len(reply) < 64


def test_silent_client_is_cut_after_handshake_timeout(verified_server_tls, serve):
    server = serve(verified_server_tls, timeout=0.3)
    with socket.create_connection((LOCALHOST, server.port), timeout=3) as sock:
        errors = wait_errors(server, timeout=2)
        assert errors and "timed out" in str(errors[0][0])
        assert 0.25 < errors[0][1] < 1.0
        assert sock.recv(10) == b""


def test_client_handshake_timeout(verified_server_tls):
    """A server that accepts TCP but never answers: connect_tls gives up in time."""
    listener = socket.socket()
    listener.bind((LOCALHOST, 0))
    listener.listen(1)
    try:
        start = time.monotonic()
        with pytest.raises(TlsError, match="timed out"):
            dial(listener.getsockname()[1], client_context(TLSClientConfig()), timeout=0.3)
        assert time.monotonic() - start < 1.0
    finally:
        listener.close()


# -- configuration errors ---------------------------------------------------------------

def test_missing_and_bad_files_raise_value_error_naming_the_file(test_ca, tmp_path):
    missing = str(tmp_path / "nope.pem")
    with pytest.raises(ValueError, match="nope.pem"):
        server_context(TLSServerConfig(cert_file=missing, key_file=test_ca["server_key"]))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ValueError, match="garbage.pem"):
        server_context(TLSServerConfig(cert_file=str(garbage), key_file=test_ca["server_key"]))
    with pytest.raises(ValueError, match="garbage.pem"):
        client_context(TLSClientConfig(ca_file=str(garbage)))
    with pytest.raises(ValueError, match="does not match"):
        server_context(TLSServerConfig(cert_file=test_ca["server"], key_file=test_ca["client_key"]))
    with pytest.raises(ValueError, match="together"):
        client_context(TLSClientConfig(cert_file=test_ca["client"]))
    with pytest.raises(ValueError, match="minVersion"):
        server_context(TLSServerConfig(min_version="TLS9"))


@pytest.mark.parametrize("pattern, host, ok", [
    ("example.com", "EXAMPLE.com.", True),
    ("*.example.com", "a.example.com", True),
    ("*.example.com", "example.com", False),
    ("*.example.com", "a.b.example.com", False),
    ("*.com", "example.com", False),
    ("a*.example.com", "ab.example.com", False),
])
def test_host_name_matching(pattern, host, ok, serve, tmp_path):
    """A certificate for ``pattern`` verified for ``host`` by a client with ``secure``: Go's rules."""
    cert, key = certs.write_pem(tmp_path, "leaf", *certs.self_signed("leaf", (pattern,), ()))
    server = serve(server_context(TLSServerConfig(cert_file=cert, key_file=key)))
    client_tls = client_context(TLSClientConfig(secure=True, ca_file=cert, server_name=host))
    if ok:
        with dial(server.port, client_tls) as tls:
            assert roundtrip(tls) == b"ping"
    else:
        with pytest.raises(TlsError, match="hostname mismatch, certificate is valid for %s, not %s"
                           % (re.escape(pattern), re.escape(host))):
            dial(server.port, client_tls)


# -- throughput ------------------------------------------------------------------------

@pytest.mark.slow
def test_throughput_one_stream(verified_server_tls, serve):
    """256 MiB through one TLS stream over loopback; prints MB/s."""
    total, chunk = 256 * 1024 * 1024, os.urandom(1024 * 1024)
    counted = []

    def sink(tls):
        n = 0
        while True:
            data = tls.recv(256 * 1024)
            if not data:
                break
            n += len(data)
        counted.append(n)
        tls.sendall(b"done")

    server = serve(verified_server_tls, sink)
    with dial(server.port, client_context(TLSClientConfig())) as tls:
        start = time.monotonic()
        for _ in range(total // len(chunk)):
            tls.sendall(chunk)
        tls.shutdown(_stdsocket.SHUT_WR)
        assert read_all(tls) == b"done"
        elapsed = time.monotonic() - start
    assert counted == [total]
    print("\nTLS %s one stream: %.0f MB/s (%d MiB in %.2fs)"
          % (tls.version, total / elapsed / 1e6, total >> 20, elapsed))
