"""HAProxy PROXY protocol, versions 1 and 2: tell the upstream who the client is.

Wire layout (HAProxy ``proxy-protocol.txt``; v2 integers big-endian)::

    v1  "PROXY" SP ( "TCP4" | "TCP6" ) SP src SP dst SP sport SP dport CRLF
        "PROXY" SP "UNKNOWN" [ anything ] CRLF         at most 107 bytes
        addresses: dotted quad (TCP4) or RFC 4291 text (TCP6);
        ports: decimal 0-65535, no leading zeros

    v2  +--------------+--------+--------+--------+-----------------+------+
        | SIGNATURE 12 | VER|CMD| FAM|PRO| LEN(2) | addresses       | TLVs |
        +--------------+--------+--------+--------+-----------------+------+
        VER 0x2;  CMD 0x0 LOCAL, 0x1 PROXY
        FAM 0x0 UNSPEC (0 bytes)  0x1 INET (12)  0x2 INET6 (36)  0x3 UNIX (216)
        PRO 0x0 UNSPEC  0x1 STREAM  0x2 DGRAM
        INET/INET6 block: src_addr  dst_addr  src_port(2)  dst_port(2)
        TLV: type(1)  length(2)  value[length], repeated to the end of LEN

:func:`parse_proxy_header` has the three outcomes of every parser in
:mod:`gostgev.codec`: a :class:`ProxyHeader`, ``None`` for "need more data",
or :class:`~gostgev.errors.RemoteProtocolError`.  Only ``header.length``
bytes belong to the header; the rest is the client's payload.

Decoding choices:

* Only TCP over IPv4/IPv6 yields addresses.  UDP and UNIX blocks (0x12, 0x22,
  0x31, 0x32) and the UNSPEC protocol nibble are accepted and consumed with
  family ``"unspec"`` and no addresses: the spec lets a receiver ignore
  address information it does not support, and we only proxy TCP.
* LOCAL (and v1 UNKNOWN) discards the whole block, family and TLVs included,
  as the spec requires; the caller uses the real socket endpoints.
* An IPv4-mapped IPv6 address is reported in IPv4 form, as Go (and thus
  GOST) prints it.  CRC32C TLVs are exposed, not verified.
"""

import ipaddress
from dataclasses import dataclass

from gostgev.codec.tlv import iter_tlvs
from gostgev.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["SIGNATURE_V2", "MAX_V1_BYTES", "MAX_V2_BYTES", "PP2_TYPE_ALPN", "PP2_TYPE_AUTHORITY", "ProxyHeader",
           "looks_like_proxy", "parse_proxy_header", "encode_v1", "encode_v2"]

SIGNATURE_V2 = b"\r\n\r\n\x00\r\nQUIT\n"
V1_PREFIX = b"PROXY "

# The spec's own bound: the worst UNKNOWN line is 107 bytes with its CRLF, so
# a receiver that has 107 bytes and no CRLF may give up.
MAX_V1_BYTES = 107

# The 16-bit LEN allows 65551 bytes, but what real senders emit is far less:
# UNIX addresses (216) plus AUTHORITY (<= 258), UNIQUE_ID (<= 131), an SSL TLV
# with version, CN, cipher and algorithms (a few hundred) and cloud TLVs (tens)
# stay under 1.5 KiB.  4 KiB keeps that margin (dnsdist defaults to 512) while
# a peer that never finishes its header costs little buffer.
MAX_V2_BYTES = 4096

V2_FIXED_BYTES = 16
CMD_LOCAL, CMD_PROXY = 0x0, 0x1
_COMMANDS = {"LOCAL": CMD_LOCAL, "PROXY": CMD_PROXY}
FAM_TCP4, FAM_TCP6, FAM_UNSPEC = 0x11, 0x21, 0x00
_ADDR_BYTES = {0x0: 0, 0x1: 12, 0x2: 36, 0x3: 216}  # by address family nibble
PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY = 0x01, 0x02

_V1_FAMILIES = (b"TCP4 ", b"TCP6 ", b"UNKNOWN ", b"UNKNOWN\r")
_V1_IP = {b"TCP4": ipaddress.IPv4Address, b"TCP6": ipaddress.IPv6Address}
_MAPPED_PREFIX = b"\x00" * 10 + b"\xff\xff"
_UNSPECIFIED = ipaddress.IPv4Address("0.0.0.0")


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A decoded header; ``length`` is how many bytes of the stream it took."""

    version: int
    command: str
    family: str
    src: tuple[str, int] | None
    dst: tuple[str, int] | None
    length: int
    tlvs: tuple[tuple[int, bytes], ...] = ()


def _compatible(data, magic):
    """True when ``data`` and ``magic`` agree on their common length."""
    n = min(len(data), len(magic))
    return data[:n] == magic[:n]


def looks_like_proxy(data):
    """True once ``data`` starts with either version's magic, False once it cannot, else None."""
    data = bytes(data[:len(SIGNATURE_V2)])
    for magic in (V1_PREFIX, SIGNATURE_V2):
        if _compatible(data, magic) and data:
            return True if len(data) >= len(magic) else None
    return None if not data else False


def parse_proxy_header(data):
    """Parse a v1 or v2 header at the start of ``data``.

    Returns a :class:`ProxyHeader`, ``None`` while a valid header could still
    be arriving, or raises :class:`RemoteProtocolError`.  Input of
    :data:`MAX_V2_BYTES` bytes never yields ``None``.
    """
    kind = looks_like_proxy(data)
    if kind is None:
        return None
    if kind is False:
        raise RemoteProtocolError("not a PROXY protocol header: %r" % bytes(data[:12]))
    if data[0] == V1_PREFIX[0]:
        return _parse_v1(bytes(data[:MAX_V1_BYTES]))
    return _parse_v2(data)


def _parse_v1(data):
    # Reject a bad family word early, so a non-PROXY client fails before 107 bytes.
    if not any(_compatible(data[len(V1_PREFIX):], word) for word in _V1_FAMILIES):
        raise RemoteProtocolError("PROXY v1: bad family in %r" % data[:20])
    end = data.find(b"\n")
    if end < 0:
        if len(data) >= MAX_V1_BYTES:
            raise RemoteProtocolError("PROXY v1: no CRLF within %d bytes" % MAX_V1_BYTES)
        return None
    if data[end - 1] != 0x0D:
        raise RemoteProtocolError("PROXY v1: line ends in a bare LF")
    parts = data[:end - 1].split(b" ")
    if parts[1] == b"UNKNOWN":  # the spec says to ignore whatever follows
        return ProxyHeader(1, "LOCAL", "unspec", None, None, end + 1)
    if len(parts) != 6:
        raise RemoteProtocolError("PROXY v1: expected 6 fields, got %d" % len(parts))
    family, src, dst = parts[1], _v1_ip(parts[1], parts[2]), _v1_ip(parts[1], parts[3])
    src_port, dst_port = _v1_port(parts[4]), _v1_port(parts[5])
    return ProxyHeader(1, "PROXY", family.decode().lower(), (src, src_port), (dst, dst_port), end + 1)


def _v1_ip(family, text):
    try:
        if b"%" in text:  # a zone suffix is not RFC 4291 text, though ipaddress accepts it
            raise ValueError(text)
        return _text(_unmapped(_V1_IP[family](text.decode("ascii"))))
    except ValueError:
        raise RemoteProtocolError("PROXY v1: bad %s address %r" % (family.decode(), text[:48])) from None


def _v1_port(text):
    if not (text.isdigit() and len(text) <= 5 and (text == b"0" or text[0] != 0x30) and int(text) <= 0xFFFF):
        raise RemoteProtocolError("PROXY v1: bad port %r" % text[:8])
    return int(text)


def _parse_v2(data):
    # Fail on the fixed fields as soon as each one arrives.
    if len(data) > 12 and (data[12] >> 4 != 2 or data[12] & 0x0F not in _COMMANDS.values()):
        raise RemoteProtocolError("PROXY v2: bad version/command byte 0x%02x" % data[12])
    if len(data) > 13 and (data[13] >> 4 not in _ADDR_BYTES or data[13] & 0x0F > 2):
        raise RemoteProtocolError("PROXY v2: bad family/protocol byte 0x%02x" % data[13])
    if len(data) < V2_FIXED_BYTES:
        return None
    total = V2_FIXED_BYTES + int.from_bytes(data[14:16], "big")
    if total > MAX_V2_BYTES:
        raise RemoteProtocolError("PROXY v2: header of %d bytes exceeds %d" % (total, MAX_V2_BYTES))
    if len(data) < total:
        return None
    if data[12] & 0x0F == CMD_LOCAL:
        return ProxyHeader(2, "LOCAL", "unspec", None, None, total)
    block, fam = bytes(data[V2_FIXED_BYTES:total]), data[13]
    addr_bytes = _ADDR_BYTES[fam >> 4]
    if len(block) < addr_bytes:
        raise RemoteProtocolError("PROXY v2: family 0x%02x needs %d address bytes, got %d"
                                  % (fam, addr_bytes, len(block)))
    tlvs = tuple(iter_tlvs(block[addr_bytes:], "PROXY v2", "TLV", "the header"))
    if fam not in (FAM_TCP4, FAM_TCP6):
        return ProxyHeader(2, "PROXY", "unspec", None, None, total, tlvs)
    n = 4 if fam == FAM_TCP4 else 16
    src, dst = (_text(_unmapped(ipaddress.ip_address(block[i:i + n]))) for i in (0, n))
    ports = int.from_bytes(block[2 * n:2 * n + 2], "big"), int.from_bytes(block[2 * n + 2:2 * n + 4], "big")
    return ProxyHeader(2, "PROXY", "tcp4" if n == 4 else "tcp6", (src, ports[0]), (dst, ports[1]), total, tlvs)


def encode_v1(src, dst):
    """``PROXY TCP4|TCP6 ...\\r\\n`` for two ``(host, port)``; ``PROXY UNKNOWN\\r\\n`` if either is None."""
    if src is None or dst is None:
        return b"PROXY UNKNOWN\r\n"
    (a, a_port), (b, b_port) = _endpoints(src, dst)
    family = "TCP4" if a.version == 4 else "TCP6"
    return ("PROXY %s %s %s %d %d\r\n" % (family, _text(a), _text(b), a_port, b_port)).encode("ascii")


def encode_v2(src, dst, command="PROXY", tlvs=()):
    """The binary header; LOCAL, or PROXY with either address None, sends UNSPEC and no addresses."""
    if command not in _COMMANDS:
        raise LocalProtocolError("PROXY v2: unknown command %r" % (command,))
    fam, block = FAM_UNSPEC, b""
    # The spec has LOCAL senders use UNSPEC: the receiver ignores addresses anyway.
    if command == "PROXY" and src is not None and dst is not None:
        (a, a_port), (b, b_port) = _endpoints(src, dst)
        fam = FAM_TCP4 if a.version == 4 else FAM_TCP6
        block = a.packed + b.packed + a_port.to_bytes(2, "big") + b_port.to_bytes(2, "big")
    for kind, value in tlvs:
        if not 0 <= kind <= 0xFF or len(value) > 0xFFFF:
            raise LocalProtocolError("PROXY v2: TLV %r of %d bytes cannot be encoded" % (kind, len(value)))
        block += bytes((kind,)) + len(value).to_bytes(2, "big") + bytes(value)
    if V2_FIXED_BYTES + len(block) > MAX_V2_BYTES:
        raise LocalProtocolError("PROXY v2: header would exceed %d bytes" % MAX_V2_BYTES)
    return SIGNATURE_V2 + bytes((0x20 | _COMMANDS[command], fam)) + len(block).to_bytes(2, "big") + block


def _endpoints(src, dst):
    """Two ``(host, port)`` -> two ``(ip, port)`` of one family.

    A host that is not an IP literal becomes 0.0.0.0 (GOST's rule), and only
    then is the family chosen: IPv4 if both are IPv4, else IPv6 with any IPv4
    address written in its IPv4-mapped form.
    """
    ends = [(_host_ip(host), _port(port)) for host, port in (src, dst)]
    if ends[0][0].version != ends[1][0].version:
        ends = [(ipaddress.IPv6Address(_MAPPED_PREFIX + ip.packed) if ip.version == 4 else ip, port)
                for ip, port in ends]
    return ends


def _host_ip(host):
    if isinstance(host, str):
        host = host[1:-1] if host[:1] == "[" and host[-1:] == "]" else host
        try:  # the wire has no room for an IPv6 zone, so it is dropped
            return _unmapped(ipaddress.ip_address(host.partition("%")[0]))
        except ValueError:
            pass
    return _UNSPECIFIED


def _port(port):
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
        raise LocalProtocolError("PROXY: bad port %r" % (port,))
    return port


def _unmapped(ip):
    return getattr(ip, "ipv4_mapped", None) or ip


def _text(ip):
    # Spelled out because str() of a mapped address differs across Python versions.
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return "::ffff:%s" % ip.ipv4_mapped
    return str(ip)
