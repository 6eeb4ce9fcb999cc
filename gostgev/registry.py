"""Name registries for handlers, listeners, dialers and connectors.

Implementations register themselves when their module is imported, as GOST's
``registry`` package does.  Registering a name twice is a programming error,
so it raises at import time rather than letting the last import win.
"""

__all__ = ["Registry"]


class Registry:
    def __init__(self, kind):
        self.kind = kind
        self._entries = {}

    def register(self, *names):
        """Class decorator: make the class available under every given name."""

        def decorate(obj):
            for name in names:
                if name in self._entries:
                    raise KeyError("%s %r registered twice" % (self.kind, name))
                self._entries[name] = obj
            return obj

        return decorate

    def get(self, name):
        return self._entries.get(name)

    def names(self):
        return sorted(self._entries)

    def __contains__(self, name):
        return name in self._entries
