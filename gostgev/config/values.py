"""Scalar coercions for config values, GOST style.

Each function takes what YAML, JSON or a URL query gave us (str, int, float,
bool) and returns the typed value or raises ``ValueError`` with a message meant
for the end of a ``key.path: message`` line.
"""

import re

__all__ = ["parse_bool", "parse_int", "parse_duration", "parse_str", "parse_choice"]

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})

# Go's time.ParseDuration units, which GOST configs use ("1m30s", "500ms").
_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_bool(value):
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError("expected a boolean, got %r" % (value,))


def parse_int(value, *, minimum=None, maximum=None):
    if isinstance(value, bool):
        raise ValueError("expected an integer, got %r" % (value,))
    if isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        number = int(value)
    else:
        raise ValueError("expected an integer, got %r" % (value,))
    if minimum is not None and number < minimum:
        raise ValueError("must be at least %d, got %d" % (minimum, number))
    if maximum is not None and number > maximum:
        raise ValueError("must be at most %d, got %d" % (maximum, number))
    return number


def parse_duration(value):
    """Seconds as a float: ``"10s"``, ``"1m30s"``, ``"500ms"``, or bare seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration, got %r" % (value,))
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if re.fullmatch(r"\d+(\.\d+)?", text):
            seconds = float(text)
        else:
            seconds = _parse_go_duration(text)
    else:
        raise ValueError("expected a duration like \"10s\", got %r" % (value,))
    if seconds < 0:
        raise ValueError("duration must not be negative, got %r" % (value,))
    return seconds


def _parse_go_duration(text):
    sign = 1.0
    if text and text[0] in "+-":
        sign, text = (-1.0 if text[0] == "-" else 1.0), text[1:]
    pos, total = 0, 0.0
    while pos < len(text):
        match = _DURATION_PART.match(text, pos)
        if not match:
            break
        total += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not text or pos != len(text):
        raise ValueError("invalid duration %r (use e.g. \"10s\", \"1m30s\", \"500ms\")" % text)
    return sign * total


def parse_str(value):
    if isinstance(value, bool) or value is None or isinstance(value, (dict, list)):
        raise ValueError("expected a string, got %r" % (value,))
    return str(value)


def parse_choice(value, choices):
    """One of ``choices`` (lower case), any case."""
    text = parse_str(value).strip().lower()
    if text not in choices:
        raise ValueError("expected one of %s, got %r" % (", ".join(choices), value))
    return text
