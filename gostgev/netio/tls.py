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

Contexts, certificates and verification are in :mod:`gostgev.netio.tlscontext`.
"""

import errno
import socket as _stdsocket

import gevent
from gevent.lock import Semaphore
from OpenSSL import SSL

from gostgev.netio.tlscontext import (
    ClientTLS,
    ServerTLS,
    TLSClientConfig,
    TlsError,
    TLSServerConfig,
    _Check,
    _describe,
    _ip_or_none,
    _reasons,
    check_files,
    client_context,
    fingerprint_of,
    server_context,
)
from gostgev.netio.wrapped import Wrapped

# The contexts live in tlscontext; they are importable from here too, so a
# user of TLS connections needs one module.
__all__ = ["TLSServerConfig", "TLSClientConfig", "ServerTLS", "ClientTLS", "TlsSocket", "TlsError",
           "server_context", "client_context", "check_files", "accept_tls", "connect_tls", "fingerprint_of"]

#: ciphertext bytes asked of the socket per read; holds ~16 full records
RECV_SIZE = 256 * 1024
#: plaintext encrypted per socket write in sendall
WRITE_CHUNK = 256 * 1024
#: one bio_read takes a whole WRITE_CHUNK of records plus their overhead
_DRAIN_SIZE = WRITE_CHUNK + 32 * 1024
#: the largest plaintext one TLS record carries; SSL_read returns at most one
_RECORD = 16 * 1024

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
