"""UDP datagrams through a stream: GOST's framing, a 2-byte big-endian length then the data.

The tunnel carries each UDP association on one mux stream (both directions
framed alike).  :func:`encode` frames one datagram; :class:`Deframer`
takes stream bytes as they come and yields whole datagrams, never split
and never merged.
"""

from gostgev.errors import LocalProtocolError

__all__ = ["MAX_DATAGRAM", "encode", "Deframer"]

#: the largest datagram the 16-bit length can carry
MAX_DATAGRAM = 0xFFFF


def encode(datagram):
    """One framed datagram."""
    if len(datagram) > MAX_DATAGRAM:
        raise LocalProtocolError("UDP datagram of %d bytes is over %d" % (len(datagram), MAX_DATAGRAM))
    return len(datagram).to_bytes(2, "big") + bytes(datagram)


class Deframer:
    """Stream bytes in (:meth:`feed`), whole datagrams out."""

    def __init__(self):
        self._buffer = bytearray()

    def feed(self, data):
        """The datagrams that ``data`` completes, in order."""
        buffer = self._buffer
        buffer += data
        out = []
        pos = 0
        while len(buffer) - pos >= 2:
            size = int.from_bytes(buffer[pos:pos + 2], "big")
            if len(buffer) - pos - 2 < size:
                break
            out.append(bytes(buffer[pos + 2:pos + 2 + size]))
            pos += 2 + size
        del buffer[:pos]
        return out
