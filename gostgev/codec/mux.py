"""smux frames (xtaci/smux v1.5.31, the multiplexer of GOST tunnels), sans-IO.

Every frame is an 8-byte header and a payload; integers are little-endian::

    offset  size  field
    0       1     VER     1 or 2; must equal the session's version
    1       1     CMD     0 SYN, 1 FIN, 2 PSH, 3 NOP, 4 UPD (UPD: version 2 only)
    2       2     LENGTH  payload bytes, 0..65535
    4       4     SID     stream id (NOP uses 0)
    8       LENGTH        payload: PSH data, or for UPD exactly
                              consumed(4) window(4)   both uint32 LE

SYN, FIN and NOP carry no payload.  A version-2 sender may have at most
``window`` bytes of a stream in flight (written minus the peer's last
``consumed``, modulo 2**32); before the first UPD it assumes 262144.

Encoding is :func:`encode_frame`,
:func:`encode_header` (header only), :func:`encode_data` (a buffer as PSH
frames in one copy) and :func:`encode_upd`; they raise :class:`~gostgev.errors.LocalProtocolError`
for what the wire cannot carry.  Decoding is :class:`FrameBuffer` (the shape of
h2's ``FrameBuffer``): ``add_data(chunk)``, then ``for frame in buf``; the
iterator stops while a frame is incomplete and raises
:class:`~gostgev.errors.RemoteProtocolError` for bytes that cannot be a frame
of this session.  The header is checked as soon as its 8 bytes are here,
before waiting for the body, so a bad length is refused without buffering it.

The rest is the I/O-free part of a session, so it is tested without
sockets: :class:`MuxConfig` (GOST's ``mux.*`` parameters),
:class:`SendWindow` / :class:`ReceiveWindow` (v2 flow-control arithmetic)
and :class:`ChunkQueue` (a stream's unread data).
"""

import struct
from collections import deque
from dataclasses import dataclass

from gostgev.codec.buffer import ReceiveBuffer
from gostgev.errors import LocalProtocolError, RemoteProtocolError
from gostgev.settings import BOOL, DURATION, INT, ZERO, read, setting

__all__ = [
    "CMD_SYN", "CMD_FIN", "CMD_PSH", "CMD_NOP", "CMD_UPD", "HEADER_SIZE", "MAX_PAYLOAD", "UPD_SIZE",
    "INITIAL_PEER_WINDOW", "Frame", "FrameBuffer", "encode_frame", "encode_header", "encode_data", "encode_upd",
    "decode_upd", "MuxConfig", "SendWindow", "ReceiveWindow", "ChunkQueue",
]

CMD_SYN = 0
CMD_FIN = 1
CMD_PSH = 2
CMD_NOP = 3
CMD_UPD = 4

HEADER_SIZE = 8
#: the 16-bit LENGTH field's limit
MAX_PAYLOAD = 0xFFFF
#: consumed(4) + window(4)
UPD_SIZE = 8
#: the window a version-2 sender assumes before the receiver's first UPD
#: (smux ``initialPeerWindow``)
INITIAL_PEER_WINDOW = 262144

VERSIONS = (1, 2)
_COMMANDS = (CMD_SYN, CMD_FIN, CMD_PSH, CMD_NOP, CMD_UPD)
_NAMES = {CMD_SYN: "SYN", CMD_FIN: "FIN", CMD_PSH: "PSH", CMD_NOP: "NOP", CMD_UPD: "UPD"}
_MASK = 0xFFFFFFFF
_HEADER = struct.Struct("<BBHI")
_UPD = struct.Struct("<II")



def encode_header(version, cmd, sid, length=0):
    """The 8-byte header alone; the caller sends ``length`` payload bytes after it."""
    if version not in VERSIONS:
        raise LocalProtocolError("smux version must be 1 or 2, got %r" % (version,))
    if cmd not in _COMMANDS or (cmd == CMD_UPD and version == 1):
        raise LocalProtocolError("invalid smux command %r for version %d" % (cmd, version))
    if not 0 <= length <= MAX_PAYLOAD:
        raise LocalProtocolError("smux payload of %d bytes exceeds %d" % (length, MAX_PAYLOAD))
    if not 0 <= sid <= 0xFFFFFFFF:
        raise LocalProtocolError("smux stream id %r out of range" % (sid,))
    return _HEADER.pack(version, cmd, length, sid)


def encode_frame(version, cmd, sid, payload=b""):
    """One whole frame as bytes."""
    return encode_header(version, cmd, sid, len(payload)) + bytes(payload)


def encode_data(version, sid, data, frame_size=MAX_PAYLOAD):
    """``data`` (any bytes-like) as consecutive PSH frames of at most ``frame_size`` bytes, joined."""
    if not 1 <= frame_size <= MAX_PAYLOAD:
        raise LocalProtocolError("smux frame size must be 1..%d, got %r" % (MAX_PAYLOAD, frame_size))
    view, parts = memoryview(data).cast("B"), []
    for start in range(0, len(view), frame_size):
        chunk = view[start:start + frame_size]
        parts += (encode_header(version, CMD_PSH, sid, len(chunk)), chunk)
    return b"".join(parts)


def encode_upd(version, sid, consumed, window):
    """A window update; ``consumed`` wraps modulo 2**32 as in smux."""
    if not 0 <= window <= 0xFFFFFFFF:
        raise LocalProtocolError("smux window %r out of range" % (window,))
    return encode_header(version, CMD_UPD, sid, UPD_SIZE) + _UPD.pack(consumed & _MASK, window)


def decode_upd(payload):
    """``(consumed, window)`` of a UPD frame's payload."""
    return _UPD.unpack(payload)


@dataclass(frozen=True, slots=True)
class Frame:
    version: int
    cmd: int
    sid: int
    payload: bytes = b""

    def __repr__(self):
        return "Frame(v%d %s sid=%d len=%d)" % (self.version, _NAMES.get(self.cmd, self.cmd), self.sid,
                                                 len(self.payload))


class FrameBuffer(ReceiveBuffer):
    """Accumulates received bytes; iterating yields each complete :class:`Frame`.

    ``max_frame_size`` bounds a PSH payload (and so the bytes buffered for one
    incomplete frame); smux itself accepts anything the 16-bit field allows.
    After iteration stops, fewer than ``HEADER_SIZE + max(max_frame_size,
    UPD_SIZE)`` bytes are pending: one incomplete frame at most.
    """

    def __init__(self, version, max_frame_size=MAX_PAYLOAD):
        if version not in VERSIONS:
            raise ValueError("smux version must be 1 or 2, got %r" % (version,))
        if not 1 <= max_frame_size <= MAX_PAYLOAD:
            raise ValueError("max_frame_size must be 1..%d, got %r" % (MAX_PAYLOAD, max_frame_size))
        self.version = version
        self.max_frame_size = max_frame_size
        super().__init__()

    def __next__(self):
        buf, pos = self._buf, self._pos
        if len(buf) - pos < HEADER_SIZE:
            raise StopIteration
        version, cmd, length, sid = _HEADER.unpack_from(buf, pos)
        self._check(version, cmd, length, sid)
        start = pos + HEADER_SIZE
        end = start + length
        if end > len(buf):
            raise StopIteration
        if length:
            # One copy straight out of the bytearray; the view is released at
            # once so the buffer can still be resized by add_data.
            with memoryview(buf) as view:
                payload = bytes(view[start:end])
        else:
            payload = b""
        self._pos = end
        return Frame(version, cmd, sid, payload)

    def _check(self, version, cmd, length, sid):
        if version != self.version:
            raise RemoteProtocolError("smux version %d frame in a version %d session" % (version, self.version))
        if cmd == CMD_PSH:
            if length > self.max_frame_size:
                raise RemoteProtocolError("smux PSH of %d bytes exceeds %d (sid %d)"
                                          % (length, self.max_frame_size, sid))
        elif cmd == CMD_UPD:
            if self.version == 1:
                raise RemoteProtocolError("smux UPD frame in a version 1 session (sid %d)" % sid)
            if length != UPD_SIZE:
                raise RemoteProtocolError("smux UPD with a %d-byte payload (sid %d)" % (length, sid))
        elif cmd in _NAMES:
            if length:
                raise RemoteProtocolError("smux %s with a %d-byte payload (sid %d)" % (_NAMES[cmd], length, sid))
        else:
            raise RemoteProtocolError("unknown smux command %d (sid %d)" % (cmd, sid))


@dataclass(frozen=True, slots=True)
class MuxConfig:
    """Session parameters, GOST's ``mux.*`` metadata; the defaults are GOST's tunnel defaults
    (smux's own window is 65536).  As in GOST, 0 keeps the default of the ``mux.*`` numbers."""

    version: int = setting("mux.version", INT, 2, "smux protocol version, 1 or 2 (GOST tunnels 2, relay BIND 1)",
                           unset=ZERO)
    keepalive_interval: float = setting("mux.keepaliveInterval", DURATION, 10.0, "time between the NOPs we send",
                                        unset=ZERO)
    keepalive_timeout: float = setting("mux.keepaliveTimeout", DURATION, 30.0,
                                       "close the session when no frame arrived for this long", unset=ZERO)
    keepalive_disabled: bool = setting("mux.keepaliveDisabled", BOOL, False,
                                       "send no NOPs and never time the session out")
    max_frame_size: int = setting("mux.maxFrameSize", INT, 32768, "largest PSH payload we send, 1..65535",
                                  unset=ZERO)
    max_receive_buffer: int = setting("mux.maxReceiveBuffer", INT, 4194304,
                                      "v1: unread bytes per session before reading pauses", unset=ZERO)
    max_stream_buffer: int = setting("mux.maxStreamBuffer", INT, 1048576, "v2: the window we advertise per stream",
                                     unset=ZERO)
    #: Ours, not smux's (which has no limit): open streams per session, so a
    #: peer opening streams in a loop cannot exhaust memory or descriptors.
    #: It must exceed the busiest tunnel connection's concurrent connections;
    #: each idle stream costs about 1 KB.
    max_streams: int = setting("mux.maxStreams", INT, 16384,
                               "gostgev's: most open streams per session (each idle one costs about 1 KB)",
                               unset=ZERO)
    accept_backlog: int = 1024          #: streams opened by the peer, not yet accepted (smux: 1024)
    #: Ours, not smux's: seconds a stream we opened may go without any frame
    #: arriving on the session before the session counts as stalled (see
    #: :mod:`gostgev.netio.mux`).
    stall_timeout: float = setting("mux.stallTimeout", DURATION, 1.0,
                                   "gostgev's: a stream we opened waits this long for any frame before the "
                                   "session counts as stalled; 0 = no check")

    def __post_init__(self):
        # smux's VerifyConfig rules, plus bounds of our own.
        checks = (
            (self.version in VERSIONS, "mux.version", "must be 1 or 2", self.version),
            (self.keepalive_disabled or self.keepalive_interval > 0, "mux.keepaliveInterval",
             "must be positive", self.keepalive_interval),
            (self.keepalive_disabled or self.keepalive_timeout >= self.keepalive_interval, "mux.keepaliveTimeout",
             "must not be shorter than mux.keepaliveInterval", self.keepalive_timeout),
            (1 <= self.max_frame_size <= MAX_PAYLOAD, "mux.maxFrameSize", "must be 1..65535", self.max_frame_size),
            (self.max_receive_buffer > 0, "mux.maxReceiveBuffer", "must be positive", self.max_receive_buffer),
            (0 < self.max_stream_buffer < 2**31, "mux.maxStreamBuffer", "must be 1..2147483647",
             self.max_stream_buffer),
            (self.max_streams > 0, "mux.maxStreams", "must be positive", self.max_streams),
            (self.accept_backlog > 0, "accept_backlog", "must be positive", self.accept_backlog),
            (self.stall_timeout >= 0, "mux.stallTimeout", "must not be negative", self.stall_timeout),
        )
        for ok, key, message, value in checks:
            if not ok:
                raise ValueError("%s: %s, got %r" % (key, message, value))

    @classmethod
    def from_metadata(cls, md):
        """Read ``mux.*`` from a :class:`~gostgev.config.section.Metadata`.

        As in GOST, an absent or zero value keeps the default; anything else
        invalid raises ``ValueError`` naming the key.  ``mux.stallTimeout``
        is ours: there 0 turns the stall check off.
        """
        return read(cls, md)


class SendWindow:
    """What a v2 sender may still put in flight on one stream.

    ``written`` is a Python int; only its value modulo 2**32 matters, which
    is all the peer's ``consumed`` can express.
    """

    __slots__ = ("written", "consumed", "window")

    def __init__(self):
        self.written = 0
        self.consumed = 0
        self.window = INITIAL_PEER_WINDOW

    def available(self):
        """Bytes that may be sent now (<= 0: wait for an UPD)."""
        return self.window - ((self.written - self.consumed) & _MASK)

    def update(self, consumed, window):
        """Apply an UPD; False if it claims more consumed than was written (smux ``ErrConsumed``)."""
        if (self.written - consumed) & _MASK >= 2**31:
            return False
        self.consumed, self.window = consumed, window
        return True


class ReceiveWindow:
    """A v2 receiver's accounting for one stream.

    A peer that respects our window never has more than the larger of the
    two windows it can have seen (ours, or the initial 256 KiB before our
    first UPD) in flight beyond the consumed count we last reported; one
    frame more is tolerated, anything beyond is an overrun.
    """

    __slots__ = ("window", "limit", "received", "read", "since_update", "reported")

    def __init__(self, window):
        self.window = window
        self.limit = max(INITIAL_PEER_WINDOW, window) + MAX_PAYLOAD
        self.received = self.read = self.since_update = self.reported = 0

    def on_data(self, n):
        """Count ``n`` received bytes; False if the peer overran the window."""
        self.received += n
        return self.received - self.reported <= self.limit

    def on_read(self, n):
        """Count ``n`` bytes read by the application; the consumed count to report, or None.

        smux reports at half the window and on the very first read, so the
        peer learns the real window early.  It never exceeds what was received.
        """
        self.read += n
        self.since_update += n
        if self.since_update >= self.window // 2 or self.read == n:
            self.since_update = 0
            self.reported = self.read
            return self.read
        return None


class ChunkQueue:
    """A stream's received payloads; ``take(n)`` copies only what it returns.

    The deque exists only while something is queued: most streams are idle
    most of the time, and an empty deque still holds a 64-slot block.
    """

    __slots__ = ("_chunks", "_offset", "size")

    def __init__(self):
        self._chunks = None
        self._offset = 0    # bytes of _chunks[0] already taken
        self.size = 0

    def __len__(self):
        return self.size

    def append(self, data):
        if self._chunks is None:
            self._chunks = deque()
        self._chunks.append(data)
        self.size += len(data)

    def take(self, n):
        """Up to ``n`` bytes from the front (b"" when empty)."""
        chunks, offset = self._chunks, self._offset
        if not chunks:
            return b""
        parts, got = [], 0
        while chunks and got < n:
            head = chunks[0]
            size = len(head) - offset
            if size <= n - got:
                parts.append(head[offset:] if offset else head)
                chunks.popleft()
                offset = 0
                got += size
            else:
                parts.append(head[offset:offset + n - got])
                offset += n - got
                got = n
        self._offset = offset
        self.size -= got
        if not chunks:
            self._chunks = None
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def clear(self):
        """Drop everything; return how many bytes were dropped."""
        dropped, self.size, self._offset = self.size, 0, 0
        self._chunks = None
        return dropped
