"""Raw YAML/JSON -> :class:`gostgev.config.model.Config`, validated once.

Every problem raises :class:`ConfigError` naming the key path, e.g.
``services[0].handler.type: unknown handler "nope" (known: file, forward, tcp)``.
Keys we do not know are collected as warnings, never silently dropped.
"""

import json
import os

import yaml

from gostgev.addr import normalize_host, parse_addr
from gostgev.config.model import (
    LOG_LEVELS,
    STRATEGIES,
    Config,
    ForwarderConfig,
    HandlerConfig,
    ListenerConfig,
    LogConfig,
    NodeConfig,
    SelectorConfig,
    ServiceConfig,
)
from gostgev.config.section import Metadata, Section
from gostgev.errors import ConfigError

__all__ = ["load_file", "read_file", "build_config"]

# Top-level sections of GOST v3 that gostgev does not implement (yet); they are
# accepted so a GOST file loads unchanged, with one warning each.
_UNSUPPORTED_TOP = (
    "chains", "authers", "admissions", "bypasses", "resolvers", "hosts", "ingresses", "sds",
    "limiters", "climiters", "rlimiters", "quotas", "observers", "recorders", "routers",
    "rewriters", "caches", "loggers", "tls", "api", "metrics", "profiling", "plugins",
)
_UNSUPPORTED_SERVICE = (
    "bypass", "bypasses", "admission", "admissions", "climiter", "rlimiter", "limiter",
    "interface", "sockopts", "observer", "recorders", "resolver", "hosts", "logger", "loggers",
    "status",
)
_UNSUPPORTED_NODE = ("matcher", "http", "tls", "probe", "bypass", "bypasses", "connector",
                     "dialer", "interface", "sockopts", "resolver", "hosts")


def read_file(path):
    """Parse a YAML or JSON file (by extension) into plain data."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except OSError as exc:
        raise ConfigError(path, exc.strerror or str(exc)) from None
    try:
        if path.endswith(".json"):
            return json.loads(text) if text.strip() else {}
        return yaml.safe_load(text) or {}
    except json.JSONDecodeError as exc:
        raise ConfigError("%s:%d:%d" % (path, exc.lineno, exc.colno), "invalid JSON: " + exc.msg) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = "%s:%d:%d" % (path, mark.line + 1, mark.column + 1) if mark else path
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(where, "invalid YAML: " + problem) from None


def load_file(path, warnings):
    return build_config(read_file(path), warnings, base_dir=os.path.dirname(os.path.abspath(path)))


def build_config(raw, warnings, base_dir="."):
    """Check the raw document and build the typed model."""
    root = Section(raw, "", warnings)
    hops = {}
    for hop in root.sections("hops"):
        name = hop.str("name")
        if not name:
            raise ConfigError(hop.key_path("name"), "required")
        if name in hops:
            raise ConfigError(hop.key_path("name"), "duplicate hop name %r" % name)
        hops[name] = _forwarder(hop, hops={}, base_dir=base_dir)
    services, names = [], set()
    for index, svc in enumerate(root.sections("services")):
        service = _service(svc, index, hops, base_dir)
        if service.name in names:
            raise ConfigError(svc.key_path("name"), "duplicate service name %r" % service.name)
        names.add(service.name)
        services.append(service)
    log = _log(root.section("log"))
    root.unsupported(*_UNSUPPORTED_TOP)
    root.finish()
    return Config(services=tuple(services), log=log, base_dir=base_dir)


def _log(sec):
    if sec is None:
        return LogConfig()
    level = (sec.str("level") or "info").lower()
    if level not in LOG_LEVELS:
        raise ConfigError(sec.key_path("level"), "unknown level %r (known: %s)" % (level, ", ".join(LOG_LEVELS)))
    fmt = (sec.str("format") or "text").lower()
    if fmt not in ("text", "json"):
        raise ConfigError(sec.key_path("format"), "unknown format %r (known: text, json)" % fmt)
    output = sec.str("output") or "stderr"
    sec.unsupported("rotation")
    sec.finish()
    return LogConfig(level=level, format=fmt, output=output)


def _service(svc, index, hops, base_dir):
    # Imported here: the registries live with the gevent code that fills them,
    # and only a full load needs them.
    from gostgev.handler import HANDLERS
    from gostgev.listener import LISTENERS

    name = svc.str("name") or "service-%d" % index
    handler_sec = svc.section("handler")
    if handler_sec is None:
        raise ConfigError(svc.key_path("handler"), "required")
    listener_sec = svc.section("listener")
    listener_type = (listener_sec.str("type") if listener_sec else None) or "tcp"
    if listener_type not in LISTENERS:
        raise ConfigError(listener_sec.key_path("type"), _unknown("listener", listener_type, LISTENERS))
    handler_type = handler_sec.str("type")
    if not handler_type:
        raise ConfigError(handler_sec.key_path("type"), "required (known: %s)" % ", ".join(HANDLERS.names()))
    handler_cls = HANDLERS.get(handler_type)
    if handler_cls is None:
        raise ConfigError(handler_sec.key_path("type"), _unknown("handler", handler_type, HANDLERS))

    addr_text = svc.str("addr")
    if not addr_text:
        raise ConfigError(svc.key_path("addr"), "required")
    try:
        addr = parse_addr(addr_text)
    except ValueError as exc:
        raise ConfigError(svc.key_path("addr"), str(exc)) from None

    forwarder = None
    fwd_sec = svc.section("forwarder")
    if fwd_sec is not None:
        forwarder = _forwarder(fwd_sec, hops, base_dir)
    if handler_cls.needs_forwarder and (forwarder is None or not forwarder.nodes):
        raise ConfigError(svc.key_path("forwarder"),
                          "handler %r needs forwarder nodes to send traffic to" % handler_type)

    handler_md = handler_sec.metadata()
    try:
        options = handler_cls.parse_options(handler_md, base_dir)
    except ValueError as exc:
        raise ConfigError(handler_md.path, str(exc)) from None
    for sec in (handler_sec, listener_sec):
        # Ignoring a chain would send traffic directly instead of through it.
        if sec is not None and (sec.raw("chain") or sec.raw("chaingroup")):
            raise ConfigError(sec.key_path("chain"), "chains are not supported by gostgev yet")
    handler_sec.unsupported("retries", "auth", "auther", "authers", "limiter", "observer")
    handler_sec.finish()
    listener_md = listener_sec.metadata() if listener_sec else Metadata({})
    if listener_sec is not None:
        listener_sec.unsupported("auth", "auther", "authers", "tls")
        listener_sec.finish()
    service_md = svc.metadata()
    svc.unsupported(*_UNSUPPORTED_SERVICE)
    svc.finish()
    return ServiceConfig(
        name=name, addr=addr,
        handler=HandlerConfig(type=handler_type, metadata=handler_md, options=options),
        listener=ListenerConfig(type=listener_type, metadata=listener_md),
        forwarder=forwarder, metadata=service_md,
    )


def _unknown(kind, value, registry):
    return 'unknown %s "%s" (known: %s)' % (kind, value, ", ".join(registry.names()))


def _forwarder(sec, hops, base_dir):
    hop_name = sec.str("hop")
    if hop_name is not None and not sec.has("nodes"):
        if hop_name not in hops:
            raise ConfigError(sec.key_path("hop"), "no hop named %r in hops" % hop_name)
        sec.raw("name")
        sec.finish()
        return hops[hop_name]
    selector = _selector(sec.section("selector"))
    nodes = tuple(_node(node, i) for i, node in enumerate(sec.sections("nodes")))
    seen = set()
    for i, node in enumerate(nodes):
        if node.name in seen:
            raise ConfigError("%s[%d].name" % (sec.key_path("nodes"), i), "duplicate node name %r" % node.name)
        seen.add(node.name)
    sec.raw("name")
    sec.finish()
    return ForwarderConfig(nodes=nodes, selector=selector, hop=hop_name)


def _selector(sec):
    if sec is None:
        return SelectorConfig()
    strategy = (sec.str("strategy") or "round").lower()
    if strategy not in STRATEGIES:
        raise ConfigError(sec.key_path("strategy"),
                          "unknown strategy %r (known: %s)" % (strategy, ", ".join(sorted(STRATEGIES))))
    max_fails = sec.int("maxfails", 1)
    fail_timeout = sec.duration("failtimeout", 10.0)
    sec.raw("name")
    sec.finish()
    # GOST falls back to its defaults for non-positive values; so do we.
    return SelectorConfig(strategy=STRATEGIES[strategy], max_fails=max_fails if max_fails > 0 else 1,
                          fail_timeout=fail_timeout if fail_timeout > 0 else 10.0)


def _node(sec, index):
    name = sec.str("name") or "node-%d" % index
    addr = sec.str("addr") or ""
    if addr:
        try:
            parse_addr(addr, default_port=0)
        except ValueError as exc:
            raise ConfigError(sec.key_path("addr"), str(exc)) from None
    host, protocol, path = sec.str("host"), sec.str("protocol"), sec.str("path")
    filt = sec.section("filter")
    if filt is not None:
        # GOST: a filter block replaces the legacy fields entirely.
        host, protocol, path = filt.str("host"), filt.str("protocol"), filt.str("path")
        filt.finish()
        filter_path = filt.key_path("host")
    else:
        filter_path = sec.key_path("host")
    network = sec.str("network")
    if network not in (None, "", "tcp"):
        raise ConfigError(sec.key_path("network"), "unsupported network %r (known: tcp)" % network)
    md = sec.metadata()
    sec.unsupported(*_UNSUPPORTED_NODE)
    sec.finish()
    weight = md.int("weight", default=1)
    max_fails = md.int("maxfails", "max_fails", default=0)
    fail_timeout = md.duration("failtimeout", "fail_timeout", default=0.0)
    return NodeConfig(
        name=name, addr=addr, host=_host_pattern(host, filter_path),
        protocol=protocol.lower() if protocol else None, path=path or None,
        weight=weight if weight > 0 else 1, backup=md.bool("backup"),
        max_fails=max_fails if max_fails > 0 else None,
        fail_timeout=fail_timeout if fail_timeout > 0 else None,
        metadata=md.as_dict(),
    )


def _host_pattern(text, path):
    """Normalise a host filter: ``*.x`` and ``*x`` become GOST's ``.x`` form."""
    if not text:
        return None
    pattern = normalize_host(text)
    if pattern.startswith("*"):
        pattern = "." + pattern.lstrip("*").lstrip(".")
    bare = pattern[1:] if pattern.startswith(".") else pattern
    if not bare or "*" in bare or any(c.isspace() or c in "/@?#" for c in bare):
        raise ConfigError(path, "invalid host pattern %r (use a name, .example.com or *.example.com)" % text)
    return pattern
