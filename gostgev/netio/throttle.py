"""Bandwidth limits on a connection: token buckets and a socket that waits for them.

A :class:`TokenBucket` gives ``rate`` bytes a second and holds a second's
worth.  Taking more than it holds puts it in debt, and the taker sleeps
until the debt is paid: the wait is computed, never polled.  A
:class:`Throttled` connection charges every byte it reads to its inbound
buckets and every byte it writes to its outbound ones (a service's shared
bucket, one of its own, one per client IP), reading and writing at most a
tenth of a second's worth at a time so that the rate stays smooth.  While
a reader sleeps, the kernel's buffers fill and TCP's flow control slows
the sender down.
"""

import time

import gevent

__all__ = ["TokenBucket", "Throttled"]

#: the smallest piece read or written at a time, however low the rate
MIN_PIECE = 1024


class TokenBucket:
    """``rate`` bytes a second, at most a second's worth saved up."""

    __slots__ = ("rate", "tokens", "at", "waited")

    def __init__(self, rate):
        self.rate = float(rate)
        self.tokens = self.rate
        self.at = time.monotonic()
        self.waited = 0.0      #: seconds takers have slept for this bucket, in all

    def _refill(self):
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.at) * self.rate)
        self.at = now

    def take(self, amount):
        """Take ``amount`` worth, in debt if need be; the seconds to wait before using it (0.0: none)."""
        self._refill()
        self.tokens -= amount
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate

    def try_take(self, amount=1):
        """Take ``amount`` worth if the bucket holds it (True), else take nothing (False)."""
        self._refill()
        if self.tokens < amount:
            return False
        self.tokens -= amount
        return True

    def idle(self):
        """Whether the bucket is full again: nobody has taken from it for a while."""
        return self.tokens + (time.monotonic() - self.at) * self.rate >= self.rate


class Throttled:
    """``conn`` with its reads charged to ``inbound`` buckets and its writes to ``outbound`` ones.

    ``on_wait(direction, seconds)`` is told of every wait (for metrics).
    Everything else is ``conn``'s.
    """

    def __init__(self, conn, inbound=(), outbound=(), on_wait=None):
        self._conn = conn
        self._in = tuple(inbound)
        self._out = tuple(outbound)
        self._on_wait = on_wait
        self._in_piece = _piece(self._in)
        self._out_piece = _piece(self._out)

    def _charge(self, buckets, amount, direction):
        wait = 0.0
        for bucket in buckets:
            wait = max(wait, bucket.take(amount))
        if wait > 0:
            for bucket in buckets:
                bucket.waited += wait
            if self._on_wait is not None:
                self._on_wait(direction, wait)
            gevent.sleep(wait)

    def recv(self, size, *flags):
        data = self._conn.recv(min(size, self._in_piece) if self._in else size, *flags)
        if data and self._in:
            self._charge(self._in, len(data), "in")
        return data

    def recv_into(self, buffer, nbytes=0, *flags):
        size = nbytes or len(buffer)
        count = self._conn.recv_into(buffer, min(size, self._in_piece) if self._in else size, *flags)
        if count and self._in:
            self._charge(self._in, count, "in")
        return count

    def send(self, data, *flags):
        if not self._out:
            return self._conn.send(data, *flags)
        piece = memoryview(data)[:self._out_piece]
        self._charge(self._out, len(piece), "out")
        return self._conn.send(piece, *flags)

    def sendall(self, data, *flags):
        if not self._out:
            return self._conn.sendall(data, *flags)
        view = memoryview(data)
        for start in range(0, len(view), self._out_piece):
            piece = view[start:start + self._out_piece]
            self._charge(self._out, len(piece), "out")
            self._conn.sendall(piece, *flags)
        return None

    def __getattr__(self, name):
        return getattr(self._conn, name)


def _piece(buckets):
    """A tenth of a second at the slowest bucket's rate (at least ``MIN_PIECE`` bytes)."""
    if not buckets:
        return 0
    return max(MIN_PIECE, int(min(bucket.rate for bucket in buckets) / 10))
