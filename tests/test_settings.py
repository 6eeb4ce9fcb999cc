"""Declared settings (gostgev.settings): reading, GOST's unset rule, the declarations, and the
table of every component's settings (SETTINGS.md, printed by scripts/settings.py)."""

import subprocess
import sys
from dataclasses import dataclass

import pytest

from gostgev.components import COMPONENTS
from gostgev.config.catalog import entries
from gostgev.config.model import LoadContext
from gostgev.config.section import Metadata
from gostgev.errors import ConfigError
from gostgev.settings import (
    BOOL,
    CHOICE,
    DURATION,
    INT,
    NOT_POSITIVE,
    REQUIRED,
    STR,
    ZERO,
    computed,
    declare,
    declared,
    format_default,
    nested,
    read,
    setting,
)
from tests import ROOT


@dataclass(frozen=True, slots=True)
class Inner:
    size: int = setting("inner.size", INT, 8, "a size", unset=ZERO)


def _both(md, spec, context, got):
    return (md.str(spec.key), md.str("extra"))


@dataclass(frozen=True, slots=True)
class Sample:
    on: bool = setting("on", BOOL, False, "a switch")
    count: int = setting("count", INT, 3, "a count", minimum=0, maximum=9)
    weight: int = setting("weight", INT, 1, "a weight", unset=NOT_POSITIVE)
    wait: float = setting("waitTime", DURATION, 10.0, "a wait", aliases=("wait_time",), unset=ZERO)
    name: str | None = setting("name", STR, None, "a name")
    mode: str = setting("mode", CHOICE, "fast", "a mode", choices=("fast", "Slow"))
    pair: tuple = setting("pair", "words", None, "custom", parse=_both,
                          also=[declare("extra", STR, None, "read by pair")])
    inner: Inner = nested(Inner)
    total: int = computed(lambda md, context, got: got["count"] + (context or 0))
    plain: int = 5


def test_defaults_when_the_map_is_empty_and_every_key_is_asked():
    md = Metadata({}, "x.metadata")
    got = read(Sample, md)
    assert got == Sample(pair=(None, None), total=3)
    assert set(md.asked) == {"on", "count", "weight", "waittime", "wait_time", "name", "mode", "pair", "extra",
                             "inner.size"}
    assert md.asked["waittime"] == "waitTime"


def test_values_kinds_aliases_and_gost_s_unset_rule():
    md = Metadata({"ON": "yes", "count": "7", "weight": -2, "wait_time": "1m30s", "name": 5, "mode": "SLOW",
                   "pair": "a", "extra": "b", "inner.size": 0})
    got = read(Sample, md, context=10)
    assert (got.on, got.count, got.weight, got.wait, got.name, got.mode) == (True, 7, 1, 90.0, "5", "slow")
    assert got.pair == ("a", "b") and got.inner == Inner() and got.total == 17 and got.plain == 5
    assert read(Sample, Metadata({"waitTime": 0})).wait == 10.0


@pytest.mark.parametrize("data, message", [
    ({"count": 10}, "x.metadata.count: must be at most 9, got 10"),
    ({"on": "maybe"}, "x.metadata.on: expected a boolean, got 'maybe'"),
    ({"mode": "medium"}, "x.metadata.mode: expected one of fast, slow, got 'medium'"),
    ({"wait_time": "soon"}, "x.metadata.wait_time: invalid duration 'soon'"),
])
def test_bad_values_name_their_key(data, message):
    with pytest.raises(ConfigError) as info:
        read(Sample, Metadata(data, "x.metadata"))
    assert ("%s: %s" % (info.value.path, info.value.message)).startswith(message)


def test_a_component_s_own_default_replaces_the_declared_one():
    assert read(Inner, Metadata({}), defaults={"Inner.Size": 2}).size == 2
    assert read(Inner, Metadata({"inner.size": 4}), defaults={"inner.size": 2}).size == 4
    # GOST's 0 means the default: the component's.
    assert read(Inner, Metadata({"inner.size": 0}), defaults={"inner.size": 2}).size == 2


def test_the_relay_connector_speaks_smux_v1_unless_mux_version_is_above_0():
    # GOST's relay connector leaves 0 to smux's default, version 1.
    relay, tunnel = COMPONENTS.connectors.get("relay"), COMPONENTS.connectors.get("tunnel")
    for data, version in (({}, 1), ({"mux.version": 0}, 1), ({"mux.version": 2}, 2)):
        assert relay.parse_options(Metadata(data)).mux.version == version
    assert tunnel.parse_options(Metadata({"mux.version": 0})).mux.version == 2


def test_declared_lists_every_key_once_in_order_with_the_table_s_defaults():
    specs = declared(Sample, defaults={"inner.size": 2})
    assert [s.key for s in specs] == ["on", "count", "weight", "waitTime", "name", "mode", "pair", "extra",
                                      "inner.size"]
    shown = {s.key: format_default(s) for s in specs}
    assert shown == {"on": "false", "count": "3", "weight": "1", "waitTime": "10s", "name": "-", "mode": "fast",
                     "pair": "-", "extra": "-", "inner.size": "2"}
    assert declared(None) == []


def test_declarations_are_checked():
    with pytest.raises(TypeError, match="needs a parse function"):
        setting("x", "words", None, "no parser")
    with pytest.raises(TypeError, match="needs its choices"):
        declare("x", CHOICE, None, "no choices")


def test_durations_and_required_as_the_table_shows_them():
    spec = declare("d", DURATION, 0.5, "")
    assert format_default(spec) == "500ms"
    for seconds, text in ((0, "0"), (90, "90s"), (120, "2m"), (7200, "2h"), (1.5, "1.5s")):
        assert format_default(declare("d", DURATION, seconds, "")) == text
    assert format_default(declare("f", STR, REQUIRED, "")) == "required"


# -- every component's declarations, and the table made of them ---------------------------------

def _parse(entry, cls, md, tmp_path):
    """What the loader does with a component's metadata (or with the loader's own maps)."""
    if cls is None:
        return read(entry.options_class, md)
    if entry.kind == "handler":
        context = LoadContext(base_dir=str(tmp_path), ingresses={}, warn=lambda message: None)
        return cls.parse_options(md, context)
    return cls.parse_options(md)


def _cases():
    return [pytest.param(entry, cls, id="%s-%s" % (entry.kind, getattr(cls, "__name__", entry.where)))
            for entry in entries(COMPONENTS) for cls in (entry.classes or (None,))]


@pytest.mark.parametrize("entry, cls", _cases())
def test_every_key_a_component_reads_is_declared_and_every_declared_key_is_read(entry, cls, tmp_path):
    declared_keys = {key.lower() for spec in entry.settings() for key in spec.keys}
    asked = set()
    # Empty metadata, then every switch on (some keys are read only when another is set).
    switches = {spec.key: True for spec in entry.settings() if spec.kind == BOOL}
    for data in ({}, switches):
        md = Metadata(data, "x.metadata")
        try:
            _parse(entry, cls, md, tmp_path)
        except ValueError:
            pass    # a required key (file.dir) is missing: what was asked until then still counts
        asked |= set(md.asked)
    assert asked - declared_keys == set(), "read but not declared"
    assert declared_keys - asked == set(), "declared but never read"


def test_the_settings_table_is_up_to_date():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "settings.py")], capture_output=True, text=True,
                            check=True)
    committed = (ROOT / "SETTINGS.md").read_text(encoding="utf-8")
    assert result.stdout == committed, "SETTINGS.md is out of date: run python3 scripts/settings.py > SETTINGS.md"


def test_the_table_lists_every_registered_type_and_key():
    text = (ROOT / "SETTINGS.md").read_text(encoding="utf-8")
    for registry in (COMPONENTS.handlers, COMPONENTS.listeners, COMPONENTS.connectors, COMPONENTS.dialers):
        for name in registry.names():
            assert "`%s`" % name in text, (registry.kind, name)
    for entry in entries(COMPONENTS):
        for spec in entry.settings():
            assert "| `%s`" % spec.key in text, spec.key


def test_the_readme_links_the_table():
    assert "(SETTINGS.md)" in (ROOT / "README.md").read_text(encoding="utf-8")
