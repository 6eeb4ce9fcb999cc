"""A base for connections layered on another one (TLS, WebSocket).

Everything about the underlying socket (addresses, timeouts, options) is
passed through to ``self._sock``; subclasses provide the byte stream
(``recv``, ``sendall``, ``shutdown``, ``close``).
"""

__all__ = ["Wrapped"]


class Wrapped:
    _sock = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def getpeername(self):
        return self._sock.getpeername()

    def getsockname(self):
        return self._sock.getsockname()

    def settimeout(self, timeout):
        self._sock.settimeout(timeout)

    def gettimeout(self):
        return self._sock.gettimeout()

    def setsockopt(self, *args):
        return self._sock.setsockopt(*args)

    def getsockopt(self, *args):
        return self._sock.getsockopt(*args)

    def fileno(self):
        return self._sock.fileno()
