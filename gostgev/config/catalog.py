"""Every metadata setting of every component, as one table (SETTINGS.md).

The rows come from the declarations (:mod:`gostgev.settings`): each
registered handler, listener, connector and dialer class names its
``options_class`` (and ``option_defaults``), and the loader's own maps
(service and node metadata) are listed with them.  ``scripts/settings.py``
prints :func:`markdown`; a test keeps SETTINGS.md equal to it.
"""

from dataclasses import dataclass

from gostgev.config.load import ServiceMetadata
from gostgev.config.nodes import ChainNodeMetadata, NodeMetadata
from gostgev.settings import NOT_POSITIVE, ZERO, declared, format_default

__all__ = ["Entry", "entries", "markdown"]


@dataclass(frozen=True, slots=True)
class Entry:
    """Components of one kind with the same settings (all the names they are registered under)."""

    kind: str                   #: handler, listener, connector, dialer, service, node, chain node
    types: tuple                #: their type names; () for the loader's own maps
    options_class: object       #: the options dataclass, or None
    defaults: object = None     #: the components' own defaults for declared keys
    classes: tuple = ()         #: the registered classes; () for the loader's own maps
    where: str = ""             #: where the map stands in the config, for the loader's own maps

    def settings(self):
        return declared(self.options_class, self.defaults)


def entries(components):
    """The service map, every registered component (by kind, then name), then the node maps."""
    out = [Entry("service", (), ServiceMetadata, where="services[].metadata")]
    for kind, registry in (("handler", components.handlers), ("listener", components.listeners),
                           ("connector", components.connectors), ("dialer", components.dialers)):
        groups = {}     # components with the same options and defaults share their rows
        for name in registry.names():
            cls = registry.get(name)
            defaults = getattr(cls, "option_defaults", None) or {}
            types, classes = groups.setdefault((cls.options_class, tuple(sorted(defaults.items()))), ([], []))
            types.append(name)
            if cls not in classes:
                classes.append(cls)
        for (options_class, defaults), (types, classes) in groups.items():
            out.append(Entry(kind, tuple(types), options_class, dict(defaults), tuple(classes)))
    out.append(Entry("node", (), NodeMetadata, where="forwarder.nodes[].metadata"))
    out.append(Entry("chain node", (), ChainNodeMetadata, where="chains[].hops[].nodes[].metadata"))
    return out


_HEAD = """\
# Settings

Every `metadata` key gostgev reads, for every component it has. Generated
from the declarations in the code; do not edit by hand, run
`python3 scripts/settings.py > SETTINGS.md` (a test fails when this file is
out of date).

Keys are case-insensitive, as in GOST; durations are Go-style (`500ms`,
`10s`, `1m30s`) or bare numbers of seconds. "0 = default" is GOST's rule: a
zero value keeps the default. A key no component reads gets a warning at
load time ("unknown key", with the closest known key), and so does a GOST
key gostgev does not implement ("not supported").

| Component | Type | Key | Kind | Default | Description |
|---|---|---|---|---|---|
"""


def markdown(components):
    """The whole of SETTINGS.md."""
    rows, bare = [], []
    for entry in entries(components):
        specs = entry.settings()
        if not specs:
            bare.append(entry)
            continue
        types = ", ".join("`%s`" % name for name in entry.types) or "`%s`" % entry.where
        for spec in specs:
            rows.append("| %s | %s | %s | %s | %s | %s |" % (
                entry.kind, types, _key(spec), spec.kind, _cell(format_default(spec)), _cell(_describe(spec))))
    text = _HEAD + "\n".join(rows) + "\n"
    if bare:
        by_kind = {}
        for entry in bare:
            by_kind.setdefault(entry.kind, []).extend(entry.types)
        text += "\nNo metadata settings: %s.\n" % "; ".join(
            "%s %s" % (kind, ", ".join("`%s`" % name for name in sorted(names))) for kind, names in by_kind.items())
    return text


def _key(spec):
    text = "`%s`" % spec.key
    if spec.aliases:
        text += " (or %s)" % ", ".join("`%s`" % alias for alias in spec.aliases)
    return text


def _describe(spec):
    parts = [spec.doc]
    if spec.choices:
        parts.append("one of %s" % ", ".join(spec.choices))
    if spec.minimum is not None and spec.maximum is not None:
        parts.append("%d..%d" % (spec.minimum, spec.maximum))
    elif spec.minimum is not None:
        parts.append("at least %d" % spec.minimum)
    elif spec.maximum is not None:
        parts.append("at most %d" % spec.maximum)
    if spec.unset == ZERO:
        parts.append("0 = default")
    elif spec.unset == NOT_POSITIVE:
        parts.append("0 or less = default")
    return "; ".join(parts)


def _cell(text):
    return text.replace("|", "\\|")
