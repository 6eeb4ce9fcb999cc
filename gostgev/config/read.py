"""Reading a configuration file: YAML (JSON is YAML) into plain Python data.

Integers must be printable, and nesting is bounded, so a hostile file is a
:class:`ConfigError`, not a hang or a crash.
"""

import json

import yaml

from gostgev.errors import ConfigError
from gostgev.textfile import read_text

__all__ = ["read_file"]


class _ConfigLoader(yaml.SafeLoader):
    """``yaml.safe_load``, except that every integer must be printable."""


def _construct_int(loader, node):
    value = yaml.SafeLoader.construct_yaml_int(loader, node)
    try:
        # Hex, octal, binary and base-60 spellings bypass Python's limit on
        # int/str conversion, so a value could load yet fail in every message
        # that quotes it.
        str(value)
    except ValueError:
        raise yaml.constructor.ConstructorError(None, None, "integer too long", node.start_mark) from None
    return value


_ConfigLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def read_file(path):
    """Parse a YAML or JSON file (by extension) into plain data."""
    try:
        text = read_text(path)
    except OSError as exc:
        raise ConfigError(path, exc.strerror or str(exc)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, "not UTF-8: byte 0x%02x at offset %d" % (exc.object[exc.start], exc.start)) from None
    except ValueError as exc:
        raise ConfigError(path, str(exc)) from None
    try:
        if path.endswith(".json"):
            return json.loads(text) if text.strip() else {}
        return yaml.load(text, Loader=_ConfigLoader) or {}  # a SafeLoader: plain data only
    except json.JSONDecodeError as exc:
        raise ConfigError("%s:%d:%d" % (path, exc.lineno, exc.colno), "invalid JSON: " + exc.msg) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = "%s:%d:%d" % (path, mark.line + 1, mark.column + 1) if mark else path
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(where, "invalid YAML: " + problem) from None
    except ValueError as exc:
        # PyYAML's constructors let a malformed scalar (2001-13-01) escape as
        # a bare ValueError, and both parsers do for a number too long to convert.
        raise ConfigError(path, "invalid %s value: %s" % ("JSON" if path.endswith(".json") else "YAML", exc)) from None
    except RecursionError:
        # Both parsers recurse once per level of [ or {.
        raise ConfigError(path, "nested too deeply") from None
