"""Walking raw YAML/JSON with key paths, case-insensitively.

GOST treats every key as case-insensitive (``entryPoint`` = ``entrypoint``).
:class:`Section` wraps one mapping of the raw document, remembers its path
(``services[0].handler``) and which keys were read, so that every error names
the exact key and every key nobody read becomes an "unknown key" warning,
with the nearest key that was asked for when one is close:
``services[0].handlr: unknown key (did you mean "handler"?)``.
:class:`Metadata` is the free-form ``metadata`` map with typed getters; it
remembers the keys its readers asked for in the same way.
"""

import difflib

from gostgev.config.values import parse_bool, parse_choice, parse_duration, parse_int, parse_str
from gostgev.errors import ConfigError

__all__ = ["Section", "Metadata", "join_path", "unknown_key"]

#: how close (difflib ratio, lower case) a key must be to be offered as "did you mean"
_CLOSE = 0.75


def join_path(path, key):
    if isinstance(key, int):
        return "%s[%d]" % (path, key)
    return "%s.%s" % (path, key) if path else key


def closest(key, known):
    """The spelling in ``known`` nearest to ``key`` (case-insensitive), or None."""
    by_lower = {k.lower(): k for k in known}
    match = difflib.get_close_matches(key.lower(), list(by_lower), n=1, cutoff=_CLOSE)
    return by_lower[match[0]] if match else None


def unknown_key(path, key, known):
    """The warning for a key nobody reads, with a suggestion when one is close."""
    guess = closest(key, known)
    if guess is None:
        return "%s: unknown key, ignored" % join_path(path, key)
    return '%s: unknown key (did you mean "%s"?)' % (join_path(path, key), guess)


def _fold(data, path):
    """Lower-case the keys of a mapping; two spellings of one key is an error."""
    folded = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(path, "keys must be strings, got %r" % (key,))
        lower = key.lower()
        if lower in folded:
            raise ConfigError(join_path(path, key), "duplicate key (keys are case-insensitive)")
        folded[lower] = (key, value)
    return folded


class Section:
    """A mapping from the raw config, read with typed getters."""

    def __init__(self, data, path, warnings):
        if not isinstance(data, dict):
            raise ConfigError(path, "expected a mapping, got %s" % _kind(data))
        self.path = path
        self._items = _fold(data, path)
        self._used = {}             # lower case -> the spelling a reader asked for
        self._unsupported = set()   # lower case keys of GOST's that gostgev ignores
        self._warnings = warnings

    def key_path(self, key):
        return join_path(self.path, self._items.get(key.lower(), (key,))[0])

    def has(self, key):
        return key.lower() in self._items

    def raw(self, key, default=None):
        """The value under ``key`` (any case), or ``default`` if absent or null."""
        self._used.setdefault(key.lower(), key)
        item = self._items.get(key.lower())
        if item is None or item[1] is None:
            return default
        return item[1]

    def _typed(self, key, default, convert):
        value = self.raw(key)
        if value is None:
            return default
        try:
            return convert(value)
        except ValueError as exc:
            raise ConfigError(self.key_path(key), str(exc)) from None

    def str(self, key, default=None):
        return self._typed(key, default, parse_str)

    def int(self, key, default=None, **bounds):
        return self._typed(key, default, lambda v: parse_int(v, **bounds))

    def bool(self, key, default=None):
        return self._typed(key, default, parse_bool)

    def duration(self, key, default=None):
        return self._typed(key, default, parse_duration)

    def section(self, key):
        value = self.raw(key)
        if value is None:
            return None
        return Section(value, self.key_path(key), self._warnings)

    def sections(self, key):
        """The list under ``key`` as Sections; a missing key is an empty list."""
        value = self.raw(key, [])
        path = self.key_path(key)
        if not isinstance(value, list):
            raise ConfigError(path, "expected a list, got %s" % _kind(value))
        return [Section(item, join_path(path, i), self._warnings) for i, item in enumerate(value)]

    def metadata(self, key="metadata"):
        value = self.raw(key, {})
        return Metadata(value, self.key_path(key))

    def unsupported(self, *keys):
        """Warn once for GOST keys we recognise but do not implement."""
        for key in keys:
            self._unsupported.add(key.lower())
            if self.raw(key) is not None:
                self._warnings.append("%s: not supported by gostgev, ignored" % self.key_path(key))

    def warn(self, message):
        self._warnings.append(message)

    def _unread(self):
        """Original spellings of the keys that no getter asked for."""
        return [key for lower, (key, _) in self._items.items() if lower not in self._used]

    def misspelled(self, key):
        """An error naming an unread key close to ``key`` (``handlr`` for ``handler``), or None."""
        guess = closest(key, self._unread())
        if guess is None:
            return None
        return ConfigError(join_path(self.path, guess), 'unknown key (did you mean "%s"?)' % key)

    def missing(self, key, message="required"):
        """The error for a required ``key`` that is absent, or misspelled: then the misspelling is named."""
        return self.misspelled(key) or ConfigError(self.key_path(key), message)

    def finish(self):
        """Record a warning for every key that no getter asked for."""
        known = [k for lower, k in self._used.items() if lower not in self._unsupported]
        for key in self._unread():
            self._warnings.append(unknown_key(self.path, key, known))


class Metadata:
    """GOST's free-form ``metadata`` map: case-insensitive keys, typed reads.

    Every key a getter asks for is remembered (``asked``), present or not, so
    that the loader can name the keys that nothing reads once the options
    are parsed (:mod:`gostgev.config.load` does, allowing for GOST's
    command line, which copies one query key into several metadata maps).
    """

    def __init__(self, data, path=""):
        if not isinstance(data, dict):
            raise ConfigError(path, "expected a mapping, got %s" % _kind(data))
        self.path = path
        self._items = {str(k).lower(): v for k, v in data.items()}
        self._spelled = {str(k).lower(): str(k) for k in data}
        self.asked = {}     # lower case -> the spelling a reader asked for

    def as_dict(self):
        return dict(self._items)

    def __eq__(self, other):
        # Reload compares configurations: equal keys and values mean unchanged.
        return isinstance(other, Metadata) and self._items == other._items

    __hash__ = None

    def __contains__(self, key):
        self.asked.setdefault(key.lower(), key)
        return key.lower() in self._items

    def spelling(self, lower):
        """The key as the file wrote it."""
        return self._spelled.get(lower, lower)

    def _first(self, keys):
        for key in keys:
            self.asked.setdefault(key.lower(), key)
        for key in keys:
            value = self._items.get(key.lower())
            if value is not None:
                return key, value
        return None, None

    def _typed(self, keys, default, convert):
        key, value = self._first(keys)
        if key is None:
            return default
        try:
            return convert(value)
        except ValueError as exc:
            raise ConfigError(join_path(self.path, key), str(exc)) from None

    def raw(self, *keys):
        """The untyped value of the first key present, or None."""
        return self._first(keys)[1]

    def str(self, *keys, default=None):
        return self._typed(keys, default, parse_str)

    def bool(self, *keys, default=False):
        return self._typed(keys, default, parse_bool)

    def int(self, *keys, default=0, **bounds):
        return self._typed(keys, default, lambda v: parse_int(v, **bounds))

    def duration(self, *keys, default=0.0):
        return self._typed(keys, default, parse_duration)

    def choice(self, *keys, choices, default=None):
        return self._typed(keys, default, lambda v: parse_choice(v, choices))


def _kind(value):
    return {dict: "a mapping", list: "a list", str: "a string"}.get(type(value), type(value).__name__)
