"""TLS contexts for gostgev's listeners and dialers: certificates, CAs, verification.

Built with pyOpenSSL.  A listener without a certificate gets a self-signed
one made in memory.  Client verification follows GOST (config.md §4): it is
off unless ``secure`` or a ``caFile`` is given; a ``caFile`` checks the chain
only, and ``secure`` also checks the host name (SAN only, as Go does).  A CA
file on a server means mutual TLS.  Verification failures are described in
words: which certificate, which name, which reason.

The connections that use these contexts are in :mod:`gostgev.netio.tls`.
"""

import datetime
import hashlib
import ipaddress
import logging
import os
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL

__all__ = ["TLSServerConfig", "TLSClientConfig", "ServerTLS", "ClientTLS", "TlsError", "server_context",
           "client_context", "check_files", "fingerprint_of", "self_signed"]

_log = logging.getLogger("gostgev.netio.tls")

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


def self_signed(common_name="gostgev", dns_names=("localhost",), ip_addresses=("127.0.0.1", "::1")):
    """A self-signed EC P-256 certificate for these names, valid a year: ``(cert, key)``.

    The defaults are what a listener without a certificate uses (GOST makes
    one too).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    sans = [x509.DNSName(n) for n in dns_names] + [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
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
        cert, key = self_signed()
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
