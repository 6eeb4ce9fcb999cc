"""Multiplexed streams over one connection: smux v1/v2 as GOST v3 uses it.

Architecture (wire rules, windows and config live in :mod:`gostgev.codec.mux`)::

    MuxSession(sock, config, client=...)         one per tunnel connection
    ├── reader greenlet: sock.recv -> FrameBuffer -> _dispatch; never writes
    │     SYN  new MuxStream -> accept queue; reading pauses while the queue is
    │          full (as smux does); past max_streams: refused with FIN
    │     PSH  stream's ChunkQueue; v2: a peer overrunning the window resets that stream;
    │          v1: reading pauses while max_receive_buffer bytes sit unread (TCP back-pressure)
    │     FIN  EOF once the stream's data is drained
    │     UPD  the peer's consumed/window -> wakes that stream's blocked sendall
    ├── keepalive greenlet: a NOP every keepalive_interval
    ├── watchdog timer: nothing received for keepalive_timeout -> close("keepalive timeout")
    ├── stall timer: a stream we opened, then nothing received for stall_timeout -> stalled
    ├── control flusher (short-lived greenlet): FINs the reader had to queue
    └── _write(): one lock, a batch of whole frames per turn, never interleaved
    MuxStream: socket-like recv / sendall / shutdown / close / settimeout

The package, by part of that picture:

* :mod:`.session`: :class:`MuxSession`: opening, accepting and closing
  streams, the reader and its dispatch, and teardown.
* :mod:`.writer`: the session's write side: the write lock, and the frames
  the reader queues (FINs, window updates) for a flusher to send.
* :mod:`.liveness`: the keepalive, its watchdog, and stall detection.
* :mod:`.stream`: :class:`MuxStream`, the socket-like stream, and half-close.

:class:`MuxSession` is one class; its write side and its timers are base
classes of their own modules, which hold no state of their own (it is all
set up in ``MuxSession.__init__``).
"""

from gostgev.codec.mux import MuxConfig
from gostgev.netio.mux.session import MuxSession, SessionClosed, StreamLimitError
from gostgev.netio.mux.stream import MuxStream

__all__ = ["MuxConfig", "MuxSession", "MuxStream", "SessionClosed", "StreamLimitError"]
