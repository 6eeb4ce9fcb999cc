"""Host-name routing tables: exact names first, then wildcards, longest first.

Used by forwarder node selection and, later, by tunnel ingress rules.

A pattern is either an exact name (``a.example.com``) or a wildcard written
``.example.com`` (``*.example.com`` is normalised to that form at load time).
A wildcard matches the bare name and any name below it, on a dot boundary:
``.example.com`` matches ``example.com`` and ``x.y.example.com`` but not
``badexample.com``.  GOST checks only the string suffix and so matches
``badexample.com`` too; that is a hole, not a feature, and is not kept.

Matching is case-insensitive (both sides are folded by ``normalize_host``).
A lookup walks the host's labels from the full name up, so its cost grows
with the number of labels in the host, not with the number of patterns.
"""

from gostgev.addr import normalize_host

__all__ = ["HostRouter"]


class HostRouter:
    """Maps host patterns (or ``None`` = any host) to lists of values."""

    def __init__(self):
        self._exact = {}
        self._wildcard = {}   # "example.com" for the pattern ".example.com"
        self._any = []

    def add(self, pattern, value):
        if pattern is None:
            self._any.append(value)
        elif pattern.startswith("."):
            self._wildcard.setdefault(pattern[1:], []).append(value)
        else:
            self._exact.setdefault(pattern, []).append(value)

    def tiers(self, host):
        """Yield the groups of values that match ``host``, most specific first.

        The exact name comes first, then each wildcard from the longest
        suffix to the shortest, then the values registered for any host.
        An unknown host (``None`` or empty) matches only the latter.
        """
        if host:
            host = normalize_host(host)
            exact = self._exact.get(host)
            if exact:
                yield exact
            suffix = host
            while suffix:
                group = self._wildcard.get(suffix)
                if group:
                    yield group
                _, _, suffix = suffix.partition(".")
        if self._any:
            yield self._any

    def best(self, host):
        """The most specific group for ``host``, or an empty list."""
        return next(iter(self.tiers(host)), [])
