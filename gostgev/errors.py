"""The exception hierarchy shared by every layer.

Strategy: a :class:`RemoteProtocolError` means a peer sent bytes we refuse; the
caller logs it and closes that one connection.  A :class:`LocalProtocolError`
means our own code tried to encode something the wire cannot carry, which is a
bug or bad config.  :class:`ConfigError` carries the key path so the CLI can
print one line that points at the offending key.  Protocol errors are also
``ValueError`` so generic callers (URL parsers, tests) can catch them plainly.
"""

import errno

#: errors that mean "this process or host is out of file descriptors or memory
#: for now": on accept() the connection stays queued, so accepting again at once
#: only fails again; on a dial they say nothing about the node dialed
EXHAUSTED_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


class GostError(Exception):
    """Base class of every error gostgev raises on purpose."""


class ConfigError(GostError):
    """A configuration value is missing, malformed or inconsistent."""

    def __init__(self, path, message):
        super().__init__(path, message)
        self.path = path
        self.message = message

    def __str__(self):
        return "%s: %s" % (self.path, self.message) if self.path else self.message


class ProtocolError(GostError, ValueError):
    """Bytes on the wire violate the protocol."""


class RemoteProtocolError(ProtocolError):
    """The peer sent something invalid; close its connection."""


class LocalProtocolError(ProtocolError):
    """We were asked to encode something the protocol cannot express."""
