"""The type(1) / length(2, big-endian) / value lists that relay features and
PROXY v2 TLVs share."""

from gostgev.errors import RemoteProtocolError

__all__ = ["iter_tlvs", "TLV_HEADER_BYTES"]

TLV_HEADER_BYTES = 3


def iter_tlvs(data, protocol, item, container):
    """Yield ``(type, value)`` from a complete list; RemoteProtocolError if an
    entry's header or value runs past the end.  ``protocol``, ``item`` and
    ``container`` only word the errors ("relay", "feature", "the feature list")."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < TLV_HEADER_BYTES:
            raise RemoteProtocolError("%s: truncated %s header at offset %d" % (protocol, item, pos))
        kind, size = data[pos], int.from_bytes(data[pos + 1:pos + 3], "big")
        pos += TLV_HEADER_BYTES
        if size > len(data) - pos:
            raise RemoteProtocolError("%s: %s %d of %d bytes runs past %s" % (protocol, item, kind, size, container))
        yield kind, data[pos:pos + size]
        pos += size
