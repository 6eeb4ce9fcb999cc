"""Certificates for the tests: self-signed ones, and a CA with certificates it issues.

Self-signed certificates come from the product's own builder
(:func:`gostgev.netio.tlscontext.self_signed`).  CA certificates carry
basic constraints, key usage and a subject key identifier, and issued
certificates an authority key identifier: what strict verification
(OpenSSL's X509_STRICT) requires.  The fixtures in conftest.py use these.
"""

import datetime
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gostgev.netio.tlscontext import self_signed

__all__ = ["self_signed", "make_ca", "issue", "sans", "write_pem", "SERVER_AUTH", "CLIENT_AUTH"]

SERVER_AUTH = ExtendedKeyUsageOID.SERVER_AUTH
CLIENT_AUTH = ExtendedKeyUsageOID.CLIENT_AUTH


def _name(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _validity(builder):
    now = datetime.datetime.now(datetime.timezone.utc)
    return builder.not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=30))


def sans(*names):
    """Subject alternative names: IP addresses as such, anything else as a DNS name."""
    out = []
    for name in names:
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            out.append(x509.DNSName(name))
    return out


def make_ca(common_name):
    """A self-signed CA: ``(cert, key)``."""
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        _validity(x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(_name(common_name))
                  .public_key(key.public_key()).serial_number(x509.random_serial_number()))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def issue(ca, common_name, names=(), usage=SERVER_AUTH):
    """A certificate ``ca`` (``(cert, key)``) signs for ``names`` (see :func:`sans`): ``(cert, key)``."""
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        _validity(x509.CertificateBuilder().subject_name(_name(common_name)).issuer_name(ca_cert.subject)
                  .public_key(key.public_key()).serial_number(x509.random_serial_number()))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans(*names)), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def write_pem(directory, stem, cert, key=None):
    """``<stem>.pem`` (and ``<stem>.key`` if ``key``) in ``directory``: the cert's path, or both paths."""
    cert_path = directory / ("%s.pem" % stem)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    if key is None:
        return str(cert_path)
    key_path = directory / ("%s.key" % stem)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)
