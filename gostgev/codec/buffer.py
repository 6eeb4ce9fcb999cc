"""A receive buffer for frame parsers: append at the back, consume from the front."""

__all__ = ["ReceiveBuffer"]

# Consumed bytes at the front are dropped only once they are this large (or
# everything is consumed), so the memmove is amortised over many frames
# instead of paid per frame.
COMPACT_AT = 256 * 1024


class ReceiveBuffer:
    """Base for frame parsers: ``_buf`` holds bytes, ``_pos`` is where parsing resumes."""

    def __init__(self):
        self._buf = bytearray()
        self._pos = 0

    @property
    def pending(self):
        """Bytes received but not yet returned as frames."""
        return len(self._buf) - self._pos

    @property
    def held(self):
        """Bytes held in memory: the pending ones and a consumed prefix not dropped yet."""
        return len(self._buf)

    def add_data(self, data):
        if self._pos and (self._pos == len(self._buf) or self._pos >= COMPACT_AT):
            del self._buf[:self._pos]
            self._pos = 0
        self._buf += data

    def __iter__(self):
        return self
