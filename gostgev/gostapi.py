"""GOST's configuration web API, route for route, so that GOST's tools and scripts work.

::

    GET    /config?format=json|yaml          the running configuration, in GOST's shape
    POST   /config?format=json|yaml          save it to the config file (the previous one kept as .bak)
    POST   /config/{section}                 add an object (its "name" must be new)
    PUT    /config/{section}/{name}          replace an object
    DELETE /config/{section}/{name}          remove an object

for the sections ``services``, ``chains``, ``hops``, ``authers``,
``admissions``, ``ingresses``, ``sds``, ``limiters``, ``climiters`` and
``rlimiters``.  Bodies are the objects themselves, as in the file.

Every change goes through the same path as a reload: the whole edited
configuration is checked and put in place at once, or refused with
nothing changed.  Answers are GOST's: ``{"msg": "OK"}``; errors
``{"code": ..., "msg": ...}`` with 40001 (invalid, 400), 40002 (a name
that exists, 400), 40003 (could not be put in place, 409), 40004 (not
found, 400) and 40005 (could not be saved, 500).  GOST answers only
"object invalid"; here the message names the key at fault.
"""

import copy
import json
import os
import tempfile
from urllib.parse import parse_qs

import yaml

from gostgev.errors import ConfigError

__all__ = ["SECTIONS", "GostError", "RawBody", "GostConfigRoutes", "CONFIG_ROUTES"]

SECTIONS = ("services", "chains", "hops", "authers", "admissions", "ingresses", "sds", "limiters", "climiters",
            "rlimiters")

_SECTION = "(?P<section>%s)" % "|".join(SECTIONS)
#: (path pattern, {method: method name}) for the API server's route table
CONFIG_ROUTES = [
    (r"/config", {"GET": "get_config", "POST": "save_config"}),
    (r"/config/" + _SECTION, {"POST": "create_object"}),
    (r"/config/" + _SECTION + "/(?P<name>[^/]+)", {"PUT": "update_object", "DELETE": "delete_object"}),
]


class GostError(Exception):
    """An answer in GOST's error shape."""

    def __init__(self, status, code, msg):
        super().__init__(msg)
        self.status, self.code, self.msg = status, code, msg


def _invalid(msg="object invalid"):
    return GostError(400, 40001, msg)


class RawBody:
    """An answer that is not JSON (GET /config?format=yaml)."""

    def __init__(self, data, content_type):
        self.data, self.content_type = data, content_type


def _format(environ):
    fmt = (parse_qs(environ.get("QUERY_STRING", "")).get("format") or ["json"])[0].lower()
    if fmt not in ("json", "yaml"):
        raise _invalid("format must be json or yaml")
    return fmt


def _dump(raw, fmt):
    if fmt == "yaml":
        return yaml.safe_dump(raw, sort_keys=False, allow_unicode=True).encode()
    return json.dumps(raw, indent=2).encode() + b"\n"


class GostConfigRoutes:
    """The routes above, for :class:`gostgev.api.ApiServer` (``self.runtime``, ``read_json``)."""

    def _raw(self):
        raw = self.runtime.raw()
        return copy.deepcopy(raw) if raw is not None else {}

    def get_config(self, environ):
        fmt = _format(environ)
        return 200, RawBody(_dump(self._raw(), fmt), "application/yaml" if fmt == "yaml" else "application/json")

    def save_config(self, environ):
        fmt = _format(environ)
        path = self.runtime.config_path()
        if not path:
            raise GostError(500, 40005, "save config failed: the configuration came from the command line")
        try:
            _write_atomically(path, _dump(self._raw(), fmt))
        except OSError as exc:
            raise GostError(500, 40005, "save config failed: %s" % (exc.strerror or exc)) from None
        self.log.info("api: configuration saved to %s", path)
        return 200, {"msg": "OK"}

    def _objects(self, raw, section):
        objects = raw.get(section)
        if objects is None:
            objects = raw[section] = []
        if not isinstance(objects, list):
            raise _invalid("%s is not a list in the running configuration" % section)
        return objects

    def _apply(self, raw, what):
        try:
            self.runtime.apply_raw(raw)
        except ConfigError as exc:
            raise _invalid("object invalid: %s" % exc) from None
        except Exception as exc:   # refused: nothing changed
            raise GostError(409, 40003, "object creation failed: %s" % (exc or type(exc).__name__)) from None
        self.log.info("api: %s", what)
        return 200, {"msg": "OK"}

    def create_object(self, environ, section):
        obj = self.read_json(environ)
        name = obj.get("name")
        if not isinstance(name, str) or not name:
            raise _invalid("object invalid: a name is required")
        raw = self._raw()
        objects = self._objects(raw, section)
        if any(isinstance(o, dict) and o.get("name") == name for o in objects):
            raise GostError(400, 40002, "object duplicated: %s %r exists" % (section, name))
        objects.append(obj)
        return self._apply(raw, "%s %s created" % (section, name))

    def update_object(self, environ, section, name):
        obj = self.read_json(environ)
        obj["name"] = name
        raw = self._raw()
        objects = self._objects(raw, section)
        index = _find(objects, name, section)
        objects[index] = obj
        return self._apply(raw, "%s %s updated" % (section, name))

    def delete_object(self, environ, section, name):
        raw = self._raw()
        objects = self._objects(raw, section)
        del objects[_find(objects, name, section)]
        return self._apply(raw, "%s %s deleted" % (section, name))


def _find(objects, name, section):
    for index, obj in enumerate(objects):
        if isinstance(obj, dict) and obj.get("name") == name:
            return index
    raise GostError(400, 40004, "object not found: no %s named %r" % (section, name))


def _write_atomically(path, data):
    """Replace ``path`` with ``data`` in one rename; the previous file is kept as ``path.bak``."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(prefix=".gostgev-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        if os.path.exists(path):
            _copy_file(path, path + ".bak")    # copied: the file itself is never missing
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


def _copy_file(source, target):
    with open(source, "rb") as src, open(target + ".tmp", "wb") as dst:
        dst.write(src.read())
    os.replace(target + ".tmp", target)
