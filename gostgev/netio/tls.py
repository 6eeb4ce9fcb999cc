"""TLS over gevent sockets with pyOpenSSL, as GOST's ``tls`` listener and dialer use it.

Design: each connection is an ``OpenSSL.SSL.Connection(ctx, None)`` with
memory BIOs.  OpenSSL never touches the socket; we move ciphertext between
the BIOs and the gevent socket with its own ``recv``/``sendall``, so gevent's
socket waits (and socket timeouts) do all the blocking and the hub never
blocks.  The socket-backed alternative needs ``wait_read``/``wait_write``
around every WantRead/WantWrite and lets OpenSSL read and write the fd from
two greenlets at once; with memory BIOs every OpenSSL call is a plain
synchronous function that no greenlet switch can interrupt, so (all greenlets
sharing one thread) the SSL object needs no lock at all.  Only the *socket write* order matters:

* ciphertext leaves the outgoing BIO only under ``_wlock``, and the holder
  drains the BIO again after each ``sendall`` before releasing it, so bytes
  reach the socket in BIO (= record) order;
* ``recv`` never waits for ``_wlock``: output produced while reading (TLS 1.3
  KeyUpdate replies, alerts) is left to the current holder, or sent by a
  short-lived greenlet.  A reader blocked behind a writer whose peer is itself
  blocked writing would deadlock both ends.

Bulk cost: the socket is read ``RECV_SIZE`` at a time, one ``recv`` gathers
many 16 KiB records, and ``sendall`` encrypts ``WRITE_CHUNK`` bytes before
one socket write.

Client verification follows GOST (config.md §4): off unless ``secure`` or a
``caFile``; a ``caFile`` checks the chain only, ``secure`` also the host name
(SAN only, as Go does).  A CA file on a server means mutual TLS.
"""

import datetime
import errno
import hashlib
import ipaddress
import logging
import os
import socket as _stdsocket
from dataclasses import dataclass

import gevent
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from gevent.lock import Semaphore
from OpenSSL import SSL

from gostgev.netio.wrapped import Wrapped

__all__ = ["TLSServerConfig", "TLSClientConfig", "ServerTLS", "ClientTLS", "TlsSocket", "TlsError",
           "server_context", "client_context", "accept_tls", "connect_tls", "fingerprint_of"]

_log = logging.getLogger(__name__)

#: ciphertext bytes asked of the socket per read; holds ~16 full records
RECV_SIZE = 256 * 1024
#: plaintext encrypted per socket write in sendall
WRITE_CHUNK = 256 * 1024
#: one bio_read takes a whole WRITE_CHUNK of records plus their overhead
_DRAIN_SIZE = WRITE_CHUNK + 32 * 1024
#: the largest plaintext one TLS record carries; SSL_read returns at most one
_RECORD = 16 * 1024

_VERSIONS = {"VersionTLS10": SSL.TLS1_VERSION, "VersionTLS11": SSL.TLS1_1_VERSION,
             "VersionTLS12": SSL.TLS1_2_VERSION, "VersionTLS13": SSL.TLS1_3_VERSION}


class TlsError(ConnectionError):
    """A TLS handshake failed or timed out; the message says why."""


@dataclass(frozen=True, slots=True)
class TLSServerConfig:
    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None      #: set: client certificates are required and verified (mTLS)
    min_version: str | None = None  #: GOST options.minVersion, e.g. "VersionTLS12"


@dataclass(frozen=True, slots=True)
class TLSClientConfig:
    server_name: str | None = None
    secure: bool = False
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


class ServerTLS:
    """A server context plus its certificate's identity."""

    def __init__(self, context, certificate, generated):
        self.context, self.certificate, self.generated = context, certificate, generated
        self.fingerprint = fingerprint_of(certificate)


class ClientTLS:
    """A client context; ``check_hostname`` is GOST's ``secure``."""

    def __init__(self, context, config):
        self.context, self.config = context, config
        self.verify = config.secure or bool(config.ca_file)
        self.check_hostname = config.secure


def fingerprint_of(cert):
    """Colon-separated uppercase SHA-256 of a certificate (cryptography, pyOpenSSL or DER)."""
    if hasattr(cert, "to_cryptography"):
        cert = cert.to_cryptography()
    der = cert if isinstance(cert, bytes | bytearray) else cert.public_bytes(serialization.Encoding.DER)
    return ":".join("%02X" % b for b in hashlib.sha256(der).digest())


# -- contexts ------------------------------------------------------------------------

def _new_context(min_version):
    ctx = SSL.Context(SSL.TLS_METHOD)
    if min_version is not None and min_version not in _VERSIONS:
        raise ValueError("tls: unknown minVersion %r (one of %s)" % (min_version, ", ".join(_VERSIONS)))
    # Go's default floor is TLS 1.2 on both ends; GOST inherits it.
    ctx.set_min_proto_version(_VERSIONS[min_version or "VersionTLS12"])
    ctx.set_options(SSL.OP_NO_COMPRESSION)
    return ctx


def _load_pem_certs(path, what):
    """The certificates in a PEM file; ValueError naming the file otherwise."""
    try:
        with open(path, "rb") as f:
            return x509.load_pem_x509_certificates(f.read())
    except OSError as e:
        raise ValueError("tls: cannot read %s %s: %s" % (what, path, e.strerror or e)) from None
    except ValueError:
        # cryptography's own text is a pointer to its FAQ, not a reason.
        raise ValueError("tls: %s %s holds no PEM certificate" % (what, path)) from None


def _use_cert_and_key(ctx, cert_file, key_file):
    """Load a PEM chain and key; returns the leaf certificate."""
    if bool(cert_file) != bool(key_file):
        raise ValueError("tls: certFile and keyFile must be given together (got %s)"
                         % ("certFile %s" % cert_file if cert_file else "keyFile %s" % key_file))
    leaf = _load_pem_certs(cert_file, "certFile")[0]
    if not os.path.isfile(key_file):
        raise ValueError("tls: cannot read keyFile %s: no such file" % key_file)
    for what, path, load in (("certFile", cert_file, ctx.use_certificate_chain_file),
                             ("keyFile", key_file, ctx.use_privatekey_file)):
        try:
            load(path)
        except SSL.Error as e:
            if "mismatch" in _reasons(e):  # OpenSSL checks the key against the certificate on load
                break
            raise ValueError("tls: cannot load %s %s: %s" % (what, path, _reasons(e))) from None
    try:
        ctx.check_privatekey()
    except SSL.Error:
        raise ValueError("tls: keyFile %s does not match certFile %s" % (key_file, cert_file)) from None
    return leaf


def _use_ca(ctx, ca_file):
    _load_pem_certs(ca_file, "caFile")
    try:
        ctx.load_verify_locations(ca_file)
    except SSL.Error as e:
        raise ValueError("tls: cannot load caFile %s: %s" % (ca_file, _reasons(e))) from None


def _self_signed():
    """An EC P-256 certificate for localhost, valid a year (GOST makes one too)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gostgev")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName([
            x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            x509.IPAddress(ipaddress.ip_address("::1"))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def check_files(cert_file=None, key_file=None, ca_file=None):
    """Load the files into a throw-away context, so that a bad one is found at config load.

    ``ValueError`` naming the file and what is wrong with it.
    """
    ctx = _new_context(None)
    if cert_file or key_file:
        _use_cert_and_key(ctx, cert_file, key_file)
    if ca_file:
        _use_ca(ctx, ca_file)


def server_context(config, log=None):
    """Build the listener side; a missing cert/key pair is generated in memory."""
    ctx = _new_context(config.min_version)
    if config.cert_file or config.key_file:
        cert, generated = _use_cert_and_key(ctx, config.cert_file, config.key_file), False
    else:
        cert, key = _self_signed()
        ctx.use_certificate(cert)
        ctx.use_privatekey(key)
        generated = True
    if config.ca_file:
        _use_ca(ctx, config.ca_file)
        ctx.load_client_ca(os.fsencode(config.ca_file))  # tells clients which certificate to send
        ctx.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT | SSL.VERIFY_CLIENT_ONCE, _verify_cb)
    server = ServerTLS(ctx, cert, generated)
    if generated:
        (log or _log).info("tls: no certificate configured, using a generated self-signed one, "
                           "SHA-256 fingerprint %s", server.fingerprint)
    return server


def client_context(config):
    """Build the dialer side with GOST's verification rules (module docstring)."""
    ctx = _new_context(None)
    if config.cert_file or config.key_file:
        _use_cert_and_key(ctx, config.cert_file, config.key_file)
    if config.ca_file:
        _use_ca(ctx, config.ca_file)
    elif config.secure:
        ctx.set_default_verify_paths()
    client = ClientTLS(ctx, config)
    ctx.set_verify(SSL.VERIFY_PEER if client.verify else SSL.VERIFY_NONE, _verify_cb if client.verify else None)
    return client


# -- verification -------------------------------------------------------------------

class _Check:
    """Per-handshake verification state, hung on the Connection's app data."""
    __slots__ = ("hostname", "error")

    def __init__(self, hostname=None):
        self.hostname, self.error = hostname, None


def _verify_cb(conn, cert, errnum, depth, ok):
    check = conn.get_app_data()
    if not ok:
        if check.error is None:
            check.error = _x509_reason(errnum)
        return False
    if depth == 0 and check.hostname is not None:
        try:
            problem = _hostname_problem(cert.to_cryptography(), check.hostname)
        except Exception as e:  # a malformed SAN must fail the handshake, not escape it
            problem = "bad subjectAltName: %s" % e
        if problem:  # pyOpenSSL gives no way to set X509_V_ERR_HOSTNAME_MISMATCH, so the
            check.error = problem  # peer sees an "internal error" alert; our message says why
            return False
    return True


def _x509_reason(errnum):
    try:  # pyOpenSSL exposes the codes but not their text; its binding has the function
        from OpenSSL._util import ffi, lib
        return ffi.string(lib.X509_verify_cert_error_string(errnum)).decode()
    except Exception:
        return "X509 error %d" % errnum


def _hostname_problem(cert, hostname):
    """None if the leaf's SAN covers ``hostname`` (Go's rules), else the reason."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return "hostname mismatch, certificate has no subjectAltName (common name is not checked)"
    names = san.get_values_for_type(x509.DNSName)
    ips = san.get_values_for_type(x509.IPAddress)
    ip = _ip_or_none(hostname)
    if ip is not None:
        if ip in ips:
            return None
    elif any(_name_matches(pattern, hostname) for pattern in names):
        return None
    valid = ", ".join([*names, *map(str, ips)]) or "no names"
    return "hostname mismatch, certificate is valid for %s, not %s" % (valid, hostname)


def _name_matches(pattern, host):
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern.startswith("*."):  # the whole leftmost label only, never "*.com"-style across dots
        label, dot, rest = host.partition(".")
        return bool(label and dot and rest == pattern[2:] and "." in rest)
    return pattern == host


def _ip_or_none(host):
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _reasons(err):
    args = err.args[0] if err.args else None
    if isinstance(args, list) and args:
        return "; ".join(str(item[2]) for item in args if isinstance(item, tuple) and item[2]) or str(err)
    return str(err) or err.__class__.__name__


def _describe(err, check):
    if check is not None and check.error:
        return "certificate verify failed: %s" % check.error
    reason = _reasons(err)
    if "peer did not return a certificate" in reason or reason == "certificate required":
        return "client certificate required: peer did not return a certificate"
    return "handshake failed: %s" % reason


# -- handshakes -------------------------------------------------------------------

def accept_tls(sock, server_tls, timeout=10.0):
    """Server handshake on an accepted socket; TlsError on failure.  The caller still owns ``sock``."""
    conn = SSL.Connection(server_tls.context, None)
    conn.set_accept_state()
    conn.set_app_data(_Check())
    return _handshake(TlsSocket(sock, conn, server_side=True), timeout)


def connect_tls(sock, client_tls, server_name=None, timeout=10.0):
    """Client handshake; ``server_name`` overrides the config's.  TlsError on failure."""
    name = (server_name or client_tls.config.server_name or "").strip("[]") or None
    if client_tls.check_hostname and name is None:
        raise TlsError("certificate verify failed: secure TLS needs a server name to check")
    conn = SSL.Connection(client_tls.context, None)
    conn.set_connect_state()
    if name is not None and _ip_or_none(name) is None:  # SNI carries names, never IP literals
        try:
            conn.set_tlsext_host_name(name.encode("idna"))
        except UnicodeError:
            conn.set_tlsext_host_name(name.encode("ascii", "replace"))
    conn.set_app_data(_Check(name if client_tls.check_hostname else None))
    return _handshake(TlsSocket(sock, conn, server_side=False), timeout)


def _handshake(tls, timeout):
    conn = tls._conn
    timer = gevent.Timeout(timeout)
    timer.start()
    try:
        while True:
            try:
                conn.do_handshake()
                break
            except SSL.WantReadError:
                tls._flush()
                data = tls._sock.recv(RECV_SIZE)
                if not data:
                    raise TlsError("handshake failed: connection closed by peer") from None
                conn.bio_write(data)
        tls._flush()  # our Finished, or TLS 1.3 session tickets
    except gevent.Timeout as t:
        if t is not timer:
            raise
        raise TlsError("handshake timed out after %gs" % timeout) from None
    except SSL.Error as e:
        tls._send_nowait(tls._drain())  # the alert that tells the peer why
        raise TlsError(_describe(e, conn.get_app_data())) from None
    except TlsError:
        raise
    except OSError as e:
        raise TlsError("handshake failed: %s" % (e.strerror or e)) from None
    finally:
        timer.close()
    conn.set_app_data(None)
    tls._established = True
    return tls


# -- the socket ---------------------------------------------------------------------

class TlsSocket(Wrapped):
    """A socket-like TLS stream; one reader and one writer greenlet may use it at once."""

    def __init__(self, sock, conn, server_side):
        self._sock, self._conn, self.server_side = sock, conn, server_side
        self._wlock = Semaphore()
        self._established = False
        self._eof = False          # peer's close_notify or TCP EOF
        self._write_closed = False  # close_notify sent, or aborted
        self._closed = False

    # reading -----------------------------------------------------------------

    def recv(self, n=RECV_SIZE, flags=0):
        """Up to ``n`` plaintext bytes; b"" after close_notify or EOF."""
        if n <= 0:
            return b""
        while True:
            data = self._read_plain(n)
            if data is not None:
                return data
            raw = self._sock.recv(RECV_SIZE)
            if not raw:
                self._eof = True
                return b""
            self._conn.bio_write(raw)

    def recv_into(self, buffer, nbytes=0, flags=0):
        view = memoryview(buffer).cast("B")
        data = self.recv(nbytes or len(view))
        view[:len(data)] = data
        return len(data)

    def _read_plain(self, n):
        """Decrypt what the BIO holds: bytes, b"" at the end, None if more is needed."""
        if self._eof:
            return b""
        parts, got = [], 0
        try:
            while got < n:
                chunk = self._conn.recv(min(n - got, _RECORD))
                parts.append(chunk)
                got += len(chunk)
        except SSL.WantReadError:
            pass
        except SSL.ZeroReturnError:
            self._eof = True
        except SSL.Error as e:
            self._eof = True
            if not self._wlock.locked():  # the fatal alert, sent now: the owner may close next
                self._send_nowait(self._drain())
            raise ConnectionResetError(errno.ECONNRESET, "tls: %s" % _reasons(e)) from None
        self._flush_from_reader()
        if parts:
            return parts[0] if len(parts) == 1 else b"".join(parts)
        return b"" if self._eof else None

    # writing -----------------------------------------------------------------

    def sendall(self, data, flags=0):
        if self._write_closed:
            raise BrokenPipeError(errno.EPIPE, "tls: write after shutdown")
        view = memoryview(data).cast("B")
        off, total = 0, len(view)
        while off < total:
            end = min(off + WRITE_CHUNK, total)
            try:
                while off < end:  # partial-write mode: about one record per call
                    off += self._conn.send(view[off:end])
            except SSL.Error as e:
                raise BrokenPipeError(errno.EPIPE, "tls: %s" % _reasons(e)) from None
            self._flush()

    def send(self, data, flags=0):
        data = memoryview(data).cast("B")[:WRITE_CHUNK]
        self.sendall(data)
        return len(data)

    def _drain(self):
        parts = []
        while True:
            try:
                parts.append(self._conn.bio_read(_DRAIN_SIZE))
            except SSL.WantReadError:
                break
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _flush(self):
        """Send everything the outgoing BIO holds, in order (module docstring)."""
        with self._wlock:
            while True:
                out = self._drain()
                if not out:
                    return
                self._sock.sendall(out)

    def _flush_from_reader(self):
        if self._wlock.locked():
            return  # the holder drains again before it releases
        try:
            out = self._conn.bio_read(_RECORD)
        except SSL.WantReadError:
            return  # the usual case: reading produced nothing to send
        self._wlock.acquire()  # free, so this does not switch
        gevent.spawn(self._send_then_release, out)

    def _send_then_release(self, out):
        try:
            self._sock.sendall(out)
            while out:
                out = self._drain()
                if out:
                    self._sock.sendall(out)
        except OSError:
            pass  # the next recv/sendall reports the broken socket
        finally:
            self._wlock.release()

    def _send_nowait(self, data):
        """Best effort for close_notify and alerts: never waits for the peer."""
        if data:
            try:
                self._sock.send(data, 0, 0.0)  # gevent's send takes a timeout; 0 = do not wait
            except (OSError, TypeError):
                pass

    # ending ----------------------------------------------------------------------

    def shutdown(self, how):
        """SHUT_WR sends close_notify once (reading goes on); SHUT_RDWR aborts the socket."""
        if how == _stdsocket.SHUT_WR:
            if not self._write_closed:
                self._write_closed = True
                self._close_notify()
                self._flush()
            return
        if how == _stdsocket.SHUT_RDWR:
            self._write_closed = True
        self._sock.shutdown(how)

    def _close_notify(self):
        try:
            self._conn.shutdown()
        except SSL.Error:
            pass

    def close(self):
        """Close the socket, with a close_notify first if one can go out without waiting."""
        if self._closed:
            return
        self._closed = True
        if self._established and not self._write_closed and not self._wlock.locked():
            self._write_closed = True
            self._close_notify()
            self._send_nowait(self._drain())
        self._sock.close()

    # TLS details -----------------------------------------------------------------

    def peer_certificate(self):
        """The peer's leaf certificate (cryptography), or None."""
        return self._conn.get_peer_certificate(as_cryptography=True)

    def peer_certificate_subject(self):
        cert = self.peer_certificate()
        return cert.subject.rfc4514_string() if cert is not None else None

    @property
    def version(self):
        return self._conn.get_protocol_version_name()

    @property
    def cipher(self):
        return self._conn.get_cipher_name()
