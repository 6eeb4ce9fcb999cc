"""GOST relay protocol version 1: the head of every relay and tunnel exchange.

Wire layout (go-gost/relay ``relay.go`` and ``feature.go``; big-endian)::

    message   VER(1)=0x01  B1(1)  FEALEN(2)  FEATURES[FEALEN]     then payload
              request:  B1 = FLAGS(high nibble, 0x80 = UDP) | CMD(low nibble)
              response: B1 = STATUS
    feature   TYPE(1)  LEN(2)  DATA[LEN]
    1 UserAuth   ULEN(1) USER[ULEN]  PLEN(1) PASS[PLEN]
    2 Addr       ATYP(1)  1: IPv4(4) | 3: N(1) NAME[N] | 4: IPv6(16)   PORT(2)
    3 Tunnel     ID(16)  FLAG(1)  RSV(2)=0  WEIGHT(1)    (v0.5 peers may send 16)
    4 Network    ID(2)   0 tcp, 1 udp, 2 ip, 0x10 unix, 0x11 serial; else tcp

Addr features are positional: in tunnel messages the first is the source and
the second the destination; a plain relay CONNECT carries the destination
only.  Unknown feature types are skipped (current GOST adds a metadata
feature), bytes a known decoder does not need are ignored, as GOST does.

:func:`parse_request` and :func:`parse_response` have the three outcomes of
every parser in :mod:`gostgev.codec`: ``(message, consumed)``, ``None`` for
"need more data", or :class:`~gostgev.errors.RemoteProtocolError`.  Exactly
``4 + FEALEN`` bytes are consumed; the rest is payload and is left alone.
No buffer limit is named here: FEALEN is 16 bits, so a head can never exceed
65539 bytes and the wire format itself bounds what a reader buffers.
"""

import functools
import hashlib
import ipaddress
import re
from dataclasses import dataclass

from gostgev.addr import Addr, split_host_port
from gostgev.codec.tlv import iter_tlvs
from gostgev.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "VERSION", "CONNECT", "BIND", "ASSOCIATE", "FLAG_UDP", "OK", "BAD_REQUEST", "UNAUTHORIZED",
    "FORBIDDEN", "TIMEOUT", "SERVICE_UNAVAILABLE", "HOST_UNREACHABLE", "NETWORK_UNREACHABLE",
    "INTERNAL_SERVER_ERROR", "STATUS_NAMES", "FEATURE_USER_AUTH", "FEATURE_ADDR", "FEATURE_TUNNEL",
    "FEATURE_NETWORK", "NETWORKS", "TUNNEL_PRIVATE", "CONNECTOR_UDP", "TunnelID", "Request",
    "Response", "encode_addr", "decode_addr", "parse_request", "parse_response",
]

VERSION = 1
CONNECT, BIND, ASSOCIATE = 1, 2, 3
FLAG_UDP = 0x80

OK, BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, TIMEOUT = 0, 1, 2, 3, 4
SERVICE_UNAVAILABLE, HOST_UNREACHABLE, NETWORK_UNREACHABLE, INTERNAL_SERVER_ERROR = 5, 6, 7, 8
STATUS_NAMES = {
    OK: "OK", BAD_REQUEST: "Bad Request", UNAUTHORIZED: "Unauthorized", FORBIDDEN: "Forbidden",
    TIMEOUT: "Timeout", SERVICE_UNAVAILABLE: "Service Unavailable", HOST_UNREACHABLE: "Host Unreachable",
    NETWORK_UNREACHABLE: "Network Unreachable", INTERNAL_SERVER_ERROR: "Internal Server Error",
}

FEATURE_USER_AUTH, FEATURE_ADDR, FEATURE_TUNNEL, FEATURE_NETWORK = 1, 2, 3, 4
NETWORKS = {0: "tcp", 1: "udp", 2: "ip", 0x10: "unix", 0x11: "serial"}
_NETWORK_IDS = {name: code for code, name in NETWORKS.items()}

# Tunnel FLAG byte: private only ever exists server-side ("$" ingress rules);
# UDP marks a connector ID handed out for a UDP bind.
TUNNEL_PRIVATE = 0x80
CONNECTOR_UDP = 0x01

ATYP_IPV4, ATYP_DOMAIN, ATYP_IPV6 = 1, 3, 4
HEADER_BYTES = 4
MAX_FIELD_BYTES = 0xFF      # one length byte: user, password, domain name
MAX_FEATURES_BYTES = 0xFFFF  # FEALEN is 16 bits
UUID_BYTES = 16
TUNNEL_BYTES = 20

_HEX36 = re.compile(r"[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}")
_HEX32 = re.compile(r"[0-9a-fA-F]{32}")
_PORT = re.compile(r"[0-9]+")


@dataclass(frozen=True, slots=True)
class TunnelID:
    """A tunnel ID (in requests) or connector ID (in BIND replies).

    Which tunnel is meant depends on :attr:`key` alone; compare ``a.key ==
    b.key``, since ``==`` on the dataclass also compares flag and weight.
    """

    uuid: bytes
    flag: int = 0
    weight: int = 0

    def __post_init__(self):
        if not isinstance(self.uuid, bytes | bytearray | memoryview) or len(self.uuid) != UUID_BYTES:
            raise LocalProtocolError("tunnel ID needs %d bytes, got %r" % (UUID_BYTES, self.uuid))
        object.__setattr__(self, "uuid", bytes(self.uuid))
        if not (0 <= self.flag <= 0xFF and 0 <= self.weight <= 0xFF):
            raise LocalProtocolError("tunnel flag and weight are single bytes: %r, %r" % (self.flag, self.weight))

    @classmethod
    def parse(cls, text):
        """``[$]uuid`` in the spellings GOST's handler accepts; ``$`` marks it private.

        36-char hyphenated, 32 hex digits, ``{...}`` or ``urn:uuid:...``, any
        hex case.  ``ValueError`` on anything else.
        """
        if not isinstance(text, str):
            raise ValueError("tunnel ID must be text, got %r" % (text,))
        body = text[1:] if text.startswith("$") else text
        if len(body) == 38 and body[0] == "{" and body[-1] == "}":
            body = body[1:-1]
        elif len(body) == 45 and body[:9].lower() == "urn:uuid:":
            body = body[9:]
        if not (_HEX36.fullmatch(body) or _HEX32.fullmatch(body)):
            raise ValueError("invalid tunnel ID %r" % text[:64])
        return cls(bytes.fromhex(body.replace("-", "")), TUNNEL_PRIVATE if text.startswith("$") else 0)

    @classmethod
    def from_bytes(cls, data):
        """Decode a Tunnel feature's DATA: 20 bytes, or the bare 16 of relay v0.5."""
        if len(data) < UUID_BYTES:
            raise RemoteProtocolError("relay: Tunnel feature needs %d bytes, got %d" % (UUID_BYTES, len(data)))
        data = bytes(data)
        return cls(data[:UUID_BYTES], data[16] if len(data) > 16 else 0,
                   data[19] if len(data) >= TUNNEL_BYTES else 0)

    def to_bytes(self):
        return self.uuid + bytes((self.flag, 0, 0, self.weight))

    @property
    def key(self):
        return self.uuid

    @property
    def text(self):
        """Lowercase 8-4-4-4-12: the exact string GOST hashes and compares."""
        return _uuid_text(self.uuid)

    @property
    def private(self):
        return bool(self.flag & TUNNEL_PRIVATE)

    @property
    def is_zero(self):
        return not any(self.uuid)

    def endpoint_name(self):
        """The public host name GOST reports for this tunnel: md5(text)[:8] in hex."""
        return hashlib.md5(self.text.encode("ascii"), usedforsecurity=False).hexdigest()[:16]

    def __str__(self):
        return ("$" if self.private else "") + self.text


def encode_addr(host_port):
    """``host:port`` -> Addr feature DATA, as GOST's encoder builds it.

    A missing or non-numeric port becomes 0 (relay v0.5); a string that ends
    in a separator colon (``host:``, ``:``) or is empty is refused, as newer
    GOST refuses it, because it can only come from a bug on our side.
    """
    if not isinstance(host_port, str) or not host_port:
        raise LocalProtocolError("relay: empty address %r" % (host_port,))
    try:
        host, port_text = split_host_port(host_port)
    except ValueError as exc:
        raise LocalProtocolError("relay: %s" % exc) from None
    bare_ipv6 = not host_port.startswith("[") and host_port.count(":") > 1
    if not port_text and host_port.endswith(":") and not bare_ipv6:
        raise LocalProtocolError("relay: missing port in address %r" % host_port)
    port = int(port_text) if _PORT.fullmatch(port_text) else 0
    if port > 0xFFFF:
        raise LocalProtocolError("relay: port %d out of range in %r" % (port, host_port))
    return _host_bytes(host) + port.to_bytes(2, "big")


@functools.lru_cache(maxsize=4096)
def _host_bytes(host):
    """ATYP and address of ``host`` (an IP or a name); cached: a stream header per request
    names the same few hosts again and again."""
    try:
        # Go's ParseIP knows no zones, so "fe80::1%eth0" goes out as a name.
        ip = ipaddress.ip_address(host) if "%" not in host else None
    except ValueError:
        ip = None
    ip = getattr(ip, "ipv4_mapped", None) or ip  # "::ffff:1.2.3.4" goes out as IPv4, as in Go
    if ip is not None:
        return bytes((ATYP_IPV4 if ip.version == 4 else ATYP_IPV6,)) + ip.packed
    name = host.encode("utf-8", "surrogateescape")
    if len(name) > MAX_FIELD_BYTES:
        raise LocalProtocolError("relay: host name longer than %d bytes: %r" % (MAX_FIELD_BYTES, host[:64]))
    return bytes((ATYP_DOMAIN, len(name))) + name


def _uuid_text(raw):
    """16 bytes as a lowercase 8-4-4-4-12 UUID (what ``str(uuid.UUID(bytes=raw))`` gives)."""
    h = raw.hex()
    return "%s-%s-%s-%s-%s" % (h[:8], h[8:12], h[12:16], h[16:20], h[20:])


def decode_addr(data):
    """Addr feature DATA -> ``host:port`` (``[v6]:port``; ``:port`` for an empty name)."""
    data = bytes(data)
    if len(data) < 4:
        raise RemoteProtocolError("relay: Addr feature needs at least 4 bytes, got %d" % len(data))
    atyp = data[0]
    end = {ATYP_IPV4: 5, ATYP_IPV6: 17, ATYP_DOMAIN: 2 + data[1]}.get(atyp)
    if end is None:
        raise RemoteProtocolError("relay: unknown address type %d" % atyp)
    if len(data) < end + 2:
        raise RemoteProtocolError("relay: Addr feature of type %d needs %d bytes, got %d" % (atyp, end + 2, len(data)))
    if atyp == ATYP_DOMAIN:
        host = data[2:end].decode("utf-8", "replace")
    else:
        ip = ipaddress.ip_address(data[1:end])
        host = str(getattr(ip, "ipv4_mapped", None) or ip)  # Go prints a v4-mapped address as IPv4
    return str(Addr(host, int.from_bytes(data[end:end + 2], "big")))


@dataclass(frozen=True, slots=True)
class Request:
    """A relay request; ``encode()`` emits features in the order GOST does."""

    cmd: int
    flags: int = 0
    username: str | None = None
    password: str | None = None
    addrs: tuple[str, ...] = ()
    tunnel_id: TunnelID | None = None
    network: str | None = None
    unknown: tuple[tuple[int, bytes], ...] = ()  #: skipped features, re-sent after the known ones

    def encode(self):
        if not 0 <= self.cmd <= 0x0F or self.flags & ~0xF0:
            raise LocalProtocolError("relay: bad command %r / flags %r" % (self.cmd, self.flags))
        features = _network(self.network)
        if self.username is not None:
            user = _field(self.username, "username")
            password = _field(self.password or "", "password")
            features.append(_tlv(FEATURE_USER_AUTH, bytes((len(user),)) + user + bytes((len(password),)) + password))
        return _message(self.cmd | self.flags, features + _tail(self))


@dataclass(frozen=True, slots=True)
class Response:
    """A relay response; ``tunnel_id`` is the connector ID of a BIND reply."""

    status: int
    addrs: tuple[str, ...] = ()
    tunnel_id: TunnelID | None = None
    network: str | None = None
    unknown: tuple[tuple[int, bytes], ...] = ()

    def encode(self):
        if not 0 <= self.status <= 0xFF:
            raise LocalProtocolError("relay: bad status %r" % (self.status,))
        return _message(self.status, _network(self.network) + _tail(self))


def parse_request(data):
    """``(Request, consumed)``, ``None`` (need more) or RemoteProtocolError."""
    return _parse(data, lambda byte1, **fields: Request(byte1 & 0x0F, byte1 & 0xF0, **fields))


def parse_response(data):
    """``(Response, consumed)``; UserAuth means nothing in a response and lands in ``unknown``."""
    return _parse(data, Response, user_auth=False)


def _parse(data, build, user_auth=True):
    # Checking the version on the first byte lets a sniffer give up early.
    if data and data[0] != VERSION:
        raise RemoteProtocolError("relay: bad version %d" % data[0])
    if len(data) < HEADER_BYTES:
        return None
    end = HEADER_BYTES + int.from_bytes(data[2:4], "big")
    if len(data) < end:
        return None
    body = bytes(data[HEADER_BYTES:end])
    # A repeated Tunnel, Network or UserAuth is still validated, but the first one counts.
    fields = {"addrs": [], "unknown": []}
    for kind, value in iter_tlvs(body, "relay", "feature", "the feature list"):
        if kind == FEATURE_ADDR:
            fields["addrs"].append(decode_addr(value))
        elif kind == FEATURE_TUNNEL:
            fields.setdefault("tunnel_id", TunnelID.from_bytes(value))
        elif kind == FEATURE_NETWORK:
            if len(value) < 2:
                raise RemoteProtocolError("relay: Network feature needs 2 bytes, got %d" % len(value))
            fields.setdefault("network", NETWORKS.get(int.from_bytes(value[:2], "big"), "tcp"))
        elif kind == FEATURE_USER_AUTH and user_auth:
            user, password = _decode_user_auth(value)
            fields.setdefault("username", user)
            fields.setdefault("password", password)
        else:
            fields["unknown"].append((kind, value))
    fields["addrs"], fields["unknown"] = tuple(fields["addrs"]), tuple(fields["unknown"])
    return build(data[1], **fields), end


def _decode_user_auth(value):
    ulen = value[0] if value else 0
    if len(value) < 2 + ulen or len(value) < 2 + ulen + value[1 + ulen]:
        raise RemoteProtocolError("relay: UserAuth lengths run past its %d bytes" % len(value))
    plen = value[1 + ulen]
    user, password = value[1:1 + ulen], value[2 + ulen:2 + ulen + plen]
    return user.decode("utf-8", "replace"), password.decode("utf-8", "replace")


def _field(text, what):
    raw = text.encode("utf-8")
    if len(raw) > MAX_FIELD_BYTES:
        raise LocalProtocolError("relay: %s longer than %d bytes" % (what, MAX_FIELD_BYTES))
    return raw


def _network(name):
    if name is not None and name not in _NETWORK_IDS:
        raise LocalProtocolError("relay: unknown network %r" % (name,))
    return [] if name is None else [_tlv(FEATURE_NETWORK, _NETWORK_IDS[name].to_bytes(2, "big"))]


def _tail(message):
    """Addr features in order, then Tunnel, then whatever unknown features were kept."""
    features = [_tlv(FEATURE_ADDR, encode_addr(a)) for a in message.addrs]
    if message.tunnel_id is not None:
        features.append(_tlv(FEATURE_TUNNEL, message.tunnel_id.to_bytes()))
    features.extend(_tlv(kind, bytes(value)) for kind, value in message.unknown)
    return features


def _tlv(kind, value):
    if not 0 <= kind <= 0xFF or len(value) > MAX_FEATURES_BYTES:
        raise LocalProtocolError("relay: feature %r of %d bytes cannot be encoded" % (kind, len(value)))
    return bytes((kind,)) + len(value).to_bytes(2, "big") + value


def _message(byte1, features):
    body = b"".join(features)
    if len(body) > MAX_FEATURES_BYTES:
        raise LocalProtocolError("relay: %d bytes of features exceed the 16-bit FEALEN" % len(body))
    return bytes((VERSION, byte1)) + len(body).to_bytes(2, "big") + body
