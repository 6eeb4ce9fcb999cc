"""Declared settings: every metadata key a component reads, written once.

A pure module (dataclasses only) that every layer may use: ``codec.mux``
declares GOST's ``mux.*`` keys on its MuxConfig.

A component's options are a frozen dataclass whose fields say which
``metadata`` key fills them (GOST's spelling), of what kind, with which
default, bounds and one line of documentation::

    @dataclass(frozen=True, slots=True)
    class ForwardOptions:
        sniffing: bool = setting("sniffing", BOOL, False, "route by HTTP Host / TLS SNI")
        dial_timeout: float = setting("dialTimeout", DURATION, 10.0, "TCP connect timeout per node",
                                      unset=ZERO)

:func:`read` builds the dataclass from a :class:`~gostgev.config.section.Metadata`,
field by field in declaration order.  The Metadata remembers every key it was
asked for, so a key that no setting names still becomes an "unknown key"
warning.  :func:`declared` lists the declarations; ``scripts/settings.py``
makes the table in SETTINGS.md from them.

A field is one of three things:

* :func:`setting`: one key (and its aliases) read by its kind: ``bool``,
  ``int`` (with bounds), ``duration``, ``str`` or ``choice``.  ``unset`` is
  GOST's rule that 0 (:data:`ZERO`), or any value not above 0
  (:data:`NOT_POSITIVE`), means "the default".  A value that needs more than
  its kind (an address list, the name of an ingress) has a ``parse``
  function, ``parse(md, setting, context, got)`` (``got``: the fields read so
  far); ``also`` declares (with :func:`declare`) the other keys that
  function reads.
* :func:`nested`: another options dataclass read from the same map
  (``mux.*``).
* :func:`computed`: a value with no key of its own, ``fn(md, context, got)``
  (the handler's auther, or a flag that depends on a key declared elsewhere).

A component class names its options dataclass in ``options_class``; a
different default for one of its keys goes in ``option_defaults``
(``{"mux.version": 1}``), which replaces the declared default, for an absent
key and for the values ``unset`` maps to the default alike (GOST's relay
connector: smux's version 1 unless ``mux.version`` is above 0).
"""

import dataclasses
from dataclasses import MISSING, dataclass

__all__ = [
    "BOOL", "INT", "DURATION", "STR", "CHOICE", "ZERO", "NOT_POSITIVE", "REQUIRED",
    "Setting", "declare", "setting", "nested", "computed", "read", "component_options", "declared", "format_default",
]

BOOL = "bool"
INT = "int"
DURATION = "duration"
STR = "str"
CHOICE = "choice"

#: ``unset`` rules: which values mean "the default", as GOST's ``0 = default``
ZERO = "zero"
NOT_POSITIVE = "not positive"

#: the default of a setting that must be given
REQUIRED = MISSING

_FIELD = "gostgev.setting"   # the key of a declaration in a dataclass field's metadata


@dataclass(frozen=True, slots=True)
class Setting:
    """One metadata key of one component."""

    key: str                      #: GOST's spelling (keys are case-insensitive)
    kind: str                     #: bool, int, duration, str, choice, or a word for a parsed value
    default: object               #: the value when the key is absent; REQUIRED if it must be given
    doc: str                      #: one line for the table
    aliases: tuple = ()           #: other spellings read too (the first key present wins)
    minimum: int | None = None    #: int bounds, checked as the value is read
    maximum: int | None = None
    unset: str | None = None      #: ZERO or NOT_POSITIVE: those values mean the default
    choices: tuple = ()           #: a choice's values (lower case)
    parse: object = None          #: callable(md, setting, context, got) for what the kind cannot say
    also: tuple = ()              #: Settings for the other keys ``parse`` reads
    shown: str | None = None      #: the default as the table shows it, when the value says little

    @property
    def keys(self):
        return (self.key,) + tuple(self.aliases)

    def value(self, md, default=MISSING):
        """This key's typed value in ``md``; ``default``, when given, replaces the declared one.

        Wrong values raise ConfigError naming the key, from the Metadata's readers.
        """
        default = self.default if default is MISSING else default
        found = self._typed(md)
        if found is None:
            return default
        if (self.unset == ZERO and found == 0) or (self.unset == NOT_POSITIVE and found <= 0):
            return default
        return found

    def _typed(self, md):
        """The value by kind, None when absent."""
        keys = self.keys
        if self.kind == BOOL:
            return md.bool(*keys, default=None)
        if self.kind == INT:
            return md.int(*keys, default=None, minimum=self.minimum, maximum=self.maximum)
        if self.kind == DURATION:
            return md.duration(*keys, default=None)
        if self.kind == CHOICE:
            return md.choice(*keys, choices=self.choices, default=None)
        return md.str(*keys, default=None)

    def build(self, md, context, got, defaults):
        if self.parse is not None:
            return self.parse(md, self, context, got)
        return self.value(md, defaults.get(self.key.lower(), MISSING))


@dataclass(frozen=True, slots=True)
class _Nested:
    cls: type

    def build(self, md, context, got, defaults):
        return read(self.cls, md, context, defaults)


@dataclass(frozen=True, slots=True)
class _Computed:
    fn: object

    def build(self, md, context, got, defaults):
        return self.fn(md, context, got)


_GENERIC = (BOOL, INT, DURATION, STR, CHOICE)


def declare(key, kind, default, doc, *, aliases=(), minimum=None, maximum=None, unset=None, choices=(),
            parse=None, also=(), shown=None):
    """A :class:`Setting`, checked: for ``also=``, or on a field by :func:`setting`."""
    if kind == CHOICE and not choices:
        raise TypeError("setting %r: a choice needs its choices" % key)
    return Setting(key=key, kind=kind, default=default, doc=doc, aliases=tuple(aliases), minimum=minimum,
                   maximum=maximum, unset=unset, choices=tuple(c.lower() for c in choices), parse=parse,
                   also=tuple(also), shown=shown)


def setting(key, kind, default, doc, **options):
    """A dataclass field filled from metadata ``key``; the options are :func:`declare`'s."""
    spec = declare(key, kind, default, doc, **options)
    if spec.parse is None and kind not in _GENERIC:
        raise TypeError("setting %r: kind %r needs a parse function" % (key, kind))
    return dataclasses.field(default=default, metadata={_FIELD: spec})


def nested(cls):
    """A dataclass field holding ``cls``, read from the same metadata (its keys are listed with ours)."""
    return dataclasses.field(default_factory=cls, metadata={_FIELD: _Nested(cls)})


def computed(fn, default=None):
    """A dataclass field with no key of its own: ``fn(md, context, got)``."""
    return dataclasses.field(default=default, metadata={_FIELD: _Computed(fn)})


def read(cls, md, context=None, defaults=None):
    """``cls`` built from the metadata ``md``, each field as declared, in order.

    ``context`` goes to parse and computed functions (a handler's
    :class:`~gostgev.config.model.LoadContext`); ``defaults`` maps keys to
    defaults of the component's own.  Fields with no declaration keep their
    dataclass default.  Bad values raise ConfigError (a value of the wrong
    kind, named by its key) or ValueError (from a parse function or the
    dataclass's own checks).
    """
    lowered = {key.lower(): value for key, value in (defaults or {}).items()}
    got = {}
    for field in dataclasses.fields(cls):
        how = field.metadata.get(_FIELD)
        if how is not None and field.init:
            got[field.name] = how.build(md, context, got, lowered)
    return cls(**got)


def component_options(component, md, context=None):
    """A component class's options from its metadata: its ``options_class`` read with its
    ``option_defaults``; None for a component with no settings."""
    if component.options_class is None:
        return None
    return read(component.options_class, md, context, getattr(component, "option_defaults", None))


def declared(cls, defaults=None):
    """Every :class:`Setting` of ``cls`` in declaration order, nested ones included;
    ``defaults`` (a component's ``option_defaults``) replace the declared defaults."""
    if cls is None:
        return []
    lowered = {key.lower(): value for key, value in (defaults or {}).items()}
    out = []
    for field in dataclasses.fields(cls):
        how = field.metadata.get(_FIELD)
        if isinstance(how, Setting):
            for spec in (how,) + how.also:
                if spec.key.lower() in lowered:
                    spec = dataclasses.replace(spec, default=lowered[spec.key.lower()], shown=None)
                out.append(spec)
        elif isinstance(how, _Nested):
            out.extend(declared(how.cls, defaults))
    return out


def format_default(spec):
    """The default as a table shows it: ``10s``, ``true``, ``-`` for none."""
    if spec.shown is not None:
        return spec.shown
    value = spec.default
    if value is MISSING:
        return "required"
    if value is None or value == "" or value == ():
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if spec.kind == DURATION:
        return _format_duration(value)
    return str(value)


def _format_duration(seconds):
    if seconds == 0:
        return "0"
    for unit, size in (("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return "%d%s" % (seconds // size, unit)
    if seconds < 1:
        return "%gms" % (seconds * 1000)
    return "%gs" % seconds
