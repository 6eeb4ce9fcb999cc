"""Declared settings (gostgev.settings): reading, GOST's unset rule, the declarations."""

from dataclasses import dataclass

import pytest

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


def test_component_defaults_apply_when_the_key_is_absent():
    assert read(Inner, Metadata({}), defaults={"Inner.Size": 2}).size == 2
    assert read(Inner, Metadata({"inner.size": 4}), defaults={"inner.size": 2}).size == 4
    # GOST's 0 still means the declared default.
    assert read(Inner, Metadata({"inner.size": 0}), defaults={"inner.size": 2}).size == 8


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
