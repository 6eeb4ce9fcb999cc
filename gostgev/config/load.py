"""Raw YAML/JSON -> :class:`gostgev.config.model.Config`, validated once.

Every problem raises :class:`ConfigError` naming the key path, e.g.
``services[0].handler.type: unknown handler "nope" (known: file, forward, tcp)``.
Keys we do not know are collected as warnings, never silently dropped.
"""

import os
from dataclasses import dataclass

from gostgev.addr import parse_addr
from gostgev.config.access import (
    handler_auther,
    parse_admission,
    parse_auther,
    parse_climiter,
    parse_ingress,
    parse_limiter,
    parse_rlimiter,
    parse_sd,
    parse_tls,
    section_refs,
)
from gostgev.config.model import (
    AdminConfig,
    Config,
    HandlerConfig,
    ListenerConfig,
    LoadContext,
    LogConfig,
    ServiceConfig,
)
from gostgev.config.nodes import chain_ref, check_metadata, parse_chain, parse_forwarder, parse_options, unknown_type
from gostgev.config.read import read_file
from gostgev.config.section import Metadata, Section
from gostgev.errors import ConfigError
from gostgev.levels import LOG_LEVELS
from gostgev.settings import INT, read, setting

__all__ = ["load_file", "read_file", "build_config", "Components"]

# Top-level sections of GOST v3 that gostgev does not implement (yet); they are
# accepted so a GOST file loads unchanged, with one warning each.
_UNSUPPORTED_TOP = (
    "bypasses", "resolvers", "hosts",
    "quotas", "observers", "recorders", "routers",
    "rewriters", "caches", "loggers", "profiling", "plugins",
)
_UNSUPPORTED_SERVICE = (
    "bypass", "bypasses",
    "interface", "sockopts", "observer", "recorders", "resolver", "hosts", "logger", "loggers",
    "status",
)


@dataclass(frozen=True, slots=True)
class ServiceMetadata:
    """A service's own ``metadata``."""

    proxy_protocol: int = setting("proxyProtocol", INT, 0,
                                  "accept PROXY protocol headers (v1 and v2) from clients when 1 or 2",
                                  minimum=0, maximum=2)


@dataclass(frozen=True, slots=True)
class Components:
    """What a configuration may name, given by the caller (``gostgev.components``):
    this package parses and checks, and imports no implementation."""

    handlers: object     #: Registry of handler classes (``parse_options``, ``accepts_chain``...)
    listeners: object    #: Registry of listener classes
    connectors: object   #: Registry of connector classes
    dialers: object      #: Registry of dialer classes
    check_tls: object    #: callable(cert_file, key_file, ca_file); ValueError on a bad file


@dataclass(frozen=True, slots=True)
class _Env:
    base_dir: str
    components: Components


def load_file(path, warnings, components):
    return build_config(read_file(path), warnings, components, base_dir=os.path.dirname(os.path.abspath(path)))


def build_config(raw, warnings, components, base_dir="."):
    """Check the raw document and build the typed model."""
    env = _Env(base_dir, components)
    root = Section(raw, "", warnings)
    hops = {}
    for hop in root.sections("hops"):
        name = hop.str("name")
        if not name:
            raise ConfigError(hop.key_path("name"), "required")
        if name in hops:
            raise ConfigError(hop.key_path("name"), "duplicate hop name %r" % name)
        hops[name] = parse_forwarder(hop, hops={}, env=env)
    ingresses = _named(root, "ingresses", lambda sec, name: parse_ingress(sec, name, env))
    chains = _named(root, "chains", lambda sec, name: parse_chain(sec, name, env))
    authers = _named(root, "authers", lambda sec, name: parse_auther(sec, name, env))
    admissions = _named(root, "admissions", parse_admission)
    climiters = _named(root, "climiters", parse_climiter)
    rlimiters = _named(root, "rlimiters", parse_rlimiter)
    limiters = _named(root, "limiters", parse_limiter)
    default_tls = parse_tls(root.section("tls"), env)
    sds = _named(root, "sds", lambda sec, name: parse_sd(sec, name, env))
    named = {"authers": authers, "admissions": admissions, "climiters": climiters, "rlimiters": rlimiters,
             "limiters": limiters, "tls": default_tls,
             "sds": sds}
    services, names = [], set()
    for index, svc in enumerate(root.sections("services")):
        service = _service(svc, index, hops, chains, ingresses, named, env)
        if service.name in names:
            raise ConfigError(svc.key_path("name"), "duplicate service name %r" % service.name)
        names.add(service.name)
        services.append(service)
    log = _log(root.section("log"))
    metrics = _admin(root.section("metrics"), authers, "/metrics", "path")
    api = _admin(root.section("api"), authers, "", "pathPrefix")
    root.unsupported(*_UNSUPPORTED_TOP)
    misspelled = root.misspelled("services") if not services else None
    if misspelled is not None:      # "sevices:" must not load as "no services"
        raise misspelled
    root.finish()
    return Config(services=tuple(services), log=log, base_dir=base_dir, metrics=metrics, api=api,
                  chains=tuple(chains.values()), ingresses=tuple(ingresses.values()),
                  authers=tuple(authers.values()), raw=raw)


def _named(root, key, parse):
    """Parse a top-level list of named components into {name: value}."""
    out = {}
    for sec in root.sections(key):
        name = sec.str("name")
        if not name:
            raise ConfigError(sec.key_path("name"), "required")
        if name in out:
            raise ConfigError(sec.key_path("name"), "duplicate name %r" % name)
        out[name] = parse(sec, name)
    return out


def _admin(sec, authers, default_path, path_key):
    """``metrics:`` or ``api:``; the auth is checked like a handler's."""
    if sec is None:
        return None
    try:
        addr = parse_addr(sec.str("addr") or "")
    except ValueError as exc:
        raise ConfigError(sec.key_path("addr"), str(exc)) from None
    config = AdminConfig(addr=addr, path=sec.str(path_key) or default_path,
                         auther=handler_auther(sec, authers), access_log=sec.bool("accessLog", False))
    sec.finish()
    return config


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


def _service(svc, index, hops, chains, ingresses, components, env):
    handlers, listeners = env.components.handlers, env.components.listeners

    name = svc.str("name") or "service-%d" % index
    handler_sec = svc.section("handler")
    if handler_sec is None:
        raise svc.missing("handler")
    listener_sec = svc.section("listener")
    listener_type = (listener_sec.str("type") if listener_sec else None) or "tcp"
    if listener_type not in listeners:
        raise ConfigError(listener_sec.key_path("type"), unknown_type("listener", listener_type, listeners))
    handler_type = handler_sec.str("type")
    if not handler_type:
        raise handler_sec.missing("type", "required (known: %s)" % ", ".join(handlers.names()))
    handler_cls = handlers.get(handler_type)
    if handler_cls is None:
        raise ConfigError(handler_sec.key_path("type"), unknown_type("handler", handler_type, handlers))

    addr_text = svc.str("addr")
    if not addr_text:
        raise svc.missing("addr")
    try:
        addr = parse_addr(addr_text)
    except ValueError as exc:
        raise ConfigError(svc.key_path("addr"), str(exc)) from None

    forwarder = None
    fwd_sec = svc.section("forwarder")
    if fwd_sec is not None:
        forwarder = parse_forwarder(fwd_sec, hops, env)
    handler_md = handler_sec.metadata()
    auther = handler_auther(handler_sec, components["authers"])
    context = LoadContext(base_dir=env.base_dir, ingresses=ingresses, auther=auther, warn=svc.warn,
                          sds=components["sds"])
    try:
        options = handler_cls.parse_options(handler_md, context)
    except ValueError as exc:
        raise ConfigError(handler_md.path, str(exc)) from None
    handler_chain = chain_ref(handler_sec, chains)
    if handler_chain is not None and not handler_cls.accepts_chain:
        raise ConfigError(handler_sec.key_path("chain"), "handler %r cannot use a chain" % handler_type)
    if handler_cls.needs_nodes(options, handler_chain) and (forwarder is None or not forwarder.nodes):
        raise ConfigError(svc.key_path("forwarder"),
                          "handler %r needs forwarder nodes to send traffic to" % handler_type)
    handler_sec.unsupported("retries", "limiter", "observer", "chaingroup")
    handler_sec.finish()
    listener_md, listener_chain, listener_tls = Metadata({}, svc.key_path("listener") + ".metadata"), None, \
        components["tls"]
    if listener_sec is not None:
        listener_md = listener_sec.metadata()
        listener_chain = chain_ref(listener_sec, chains)
        listener_tls = parse_tls(listener_sec.section("tls"), env) or listener_tls
        listener_sec.unsupported("auth", "auther", "authers", "chaingroup")
        listener_sec.finish()
    if listener_chain is not None and not listeners.get(listener_type).accepts_chain:
        raise ConfigError(listener_sec.key_path("chain"), "listener %r cannot use a chain" % listener_type)
    listener_options = parse_options(listeners.get(listener_type), listener_md)
    admission = section_refs(svc, ("admission", "admissions"), components["admissions"], "admission")
    climits = section_refs(svc, ("climiter",), components["climiters"], "climiter")
    rlimits = section_refs(svc, ("rlimiter",), components["rlimiters"], "rlimiter")
    limits = section_refs(svc, ("limiter",), components["limiters"], "limiter")
    service_md = svc.metadata()
    proxy_protocol = read(ServiceMetadata, service_md).proxy_protocol
    svc.unsupported(*_UNSUPPORTED_SERVICE)
    svc.finish()
    check_metadata((handler_md, listener_md, service_md), svc.warn)
    return ServiceConfig(
        name=name, addr=addr,
        handler=HandlerConfig(type=handler_type, metadata=handler_md, options=options, auther=auther,
                              chain=handler_chain),
        listener=ListenerConfig(type=listener_type, metadata=listener_md, chain=listener_chain, tls=listener_tls,
                                options=listener_options),
        forwarder=forwarder, metadata=service_md, proxy_protocol=proxy_protocol,
        admission=admission[0] if admission else None, climits=climits[0] if climits else (),
        rlimits=rlimits[0] if rlimits else (), limits=limits[0] if limits else (),
    )


