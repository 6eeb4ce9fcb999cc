"""Raw YAML/JSON -> :class:`gostgev.config.model.Config`, validated once.

Every problem raises :class:`ConfigError` naming the key path, e.g.
``services[0].handler.type: unknown handler "nope" (known: file, forward, tcp)``.
Keys we do not know are collected as warnings, never silently dropped.
"""

import json
import os
from dataclasses import dataclass

import yaml

from gostgev.addr import normalize_host, parse_addr
from gostgev.auth import Auther, User, load_users_file
from gostgev.codec.relay import TunnelID
from gostgev.config.model import (
    LOG_LEVELS,
    STRATEGIES,
    AdminConfig,
    AuthConfig,
    ChainConfig,
    ChainNodeConfig,
    Config,
    ConnectorConfig,
    DialerConfig,
    ForwarderConfig,
    HandlerConfig,
    HopConfig,
    IngressConfig,
    ListenerConfig,
    LoadContext,
    LogConfig,
    NodeConfig,
    SelectorConfig,
    ServiceConfig,
    TLSConfig,
)
from gostgev.config.section import Metadata, Section, join_path, unknown_key
from gostgev.errors import ConfigError
from gostgev.ingress import Rule, parse_endpoint, parse_rule_host
from gostgev.limits import Admission, ConnLimiter, parse_network
from gostgev.textfile import read_text

__all__ = ["load_file", "read_file", "build_config", "Components"]

# Top-level sections of GOST v3 that gostgev does not implement (yet); they are
# accepted so a GOST file loads unchanged, with one warning each.
_UNSUPPORTED_TOP = (
    "bypasses", "resolvers", "hosts", "sds",
    "limiters", "rlimiters", "quotas", "observers", "recorders", "routers",
    "rewriters", "caches", "loggers", "profiling", "plugins",
)
_UNSUPPORTED_SERVICE = (
    "bypass", "bypasses", "rlimiter", "limiter",
    "interface", "sockopts", "observer", "recorders", "resolver", "hosts", "logger", "loggers",
    "status",
)
_UNSUPPORTED_NODE = ("matcher", "http", "tls", "probe", "bypass", "bypasses", "connector",
                     "dialer", "interface", "sockopts", "resolver", "hosts")
# Metadata keys of GOST's that no gostgev component reads where they stand:
# "not supported", where any other key nobody reads is "unknown".
_UNSUPPORTED_METADATA = frozenset(
    "backlog keepalive keepaliveperiod ttl readbuffersize readqueuesize mptcp header enablecompression "
    "handshaketimeout readheadertimeout maxheaderbytes nodelay connecttimeout interface so_mark netns "
    "proxyprotocol observer.period observer.resettraffic limiter.refreshinterval enablestats "
    "preup postup predown postdown sniffing.websocket sniffing.websocket.samplerate".split())


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
        hops[name] = _forwarder(hop, hops={}, env=env)
    ingresses = _named(root, "ingresses", _ingress)
    chains = _named(root, "chains", lambda sec, name: _chain(sec, name, env))
    authers = _named(root, "authers", lambda sec, name: _auther(sec, base_dir))
    admissions = _named(root, "admissions", _admission)
    climiters = _named(root, "climiters", _climiter)
    default_tls = _tls(root.section("tls"), env)
    named = {"authers": authers, "admissions": admissions, "climiters": climiters, "tls": default_tls}
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
                  chains=tuple(chains.values()), ingresses=tuple(ingresses.values()))


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
                         auther=_handler_auther(sec, authers), access_log=sec.bool("accessLog", False))
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
        raise ConfigError(listener_sec.key_path("type"), _unknown("listener", listener_type, listeners))
    handler_type = handler_sec.str("type")
    if not handler_type:
        raise handler_sec.missing("type", "required (known: %s)" % ", ".join(handlers.names()))
    handler_cls = handlers.get(handler_type)
    if handler_cls is None:
        raise ConfigError(handler_sec.key_path("type"), _unknown("handler", handler_type, handlers))

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
        forwarder = _forwarder(fwd_sec, hops, env)
    handler_md = handler_sec.metadata()
    auther = _handler_auther(handler_sec, components["authers"])
    context = LoadContext(base_dir=env.base_dir, ingresses=ingresses, auther=auther, warn=svc.warn)
    try:
        options = handler_cls.parse_options(handler_md, context)
    except ValueError as exc:
        raise ConfigError(handler_md.path, str(exc)) from None
    handler_chain = _chain_ref(handler_sec, chains)
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
        listener_chain = _chain_ref(listener_sec, chains)
        listener_tls = _tls(listener_sec.section("tls"), env) or listener_tls
        listener_sec.unsupported("auth", "auther", "authers", "chaingroup")
        listener_sec.finish()
    if listener_chain is not None and not listeners.get(listener_type).accepts_chain:
        raise ConfigError(listener_sec.key_path("chain"), "listener %r cannot use a chain" % listener_type)
    listener_options = _options(listeners.get(listener_type), listener_md)
    admission = _refs(svc, ("admission", "admissions"), components["admissions"], "admission")
    climits = _refs(svc, ("climiter",), components["climiters"], "climiter")
    service_md = svc.metadata()
    proxy_protocol = service_md.int("proxyProtocol", default=0, minimum=0, maximum=2)
    svc.unsupported(*_UNSUPPORTED_SERVICE)
    svc.finish()
    _check_metadata((handler_md, listener_md, service_md), svc.warn)
    return ServiceConfig(
        name=name, addr=addr,
        handler=HandlerConfig(type=handler_type, metadata=handler_md, options=options, auther=auther,
                              chain=handler_chain),
        listener=ListenerConfig(type=listener_type, metadata=listener_md, chain=listener_chain, tls=listener_tls,
                                options=listener_options),
        forwarder=forwarder, metadata=service_md, proxy_protocol=proxy_protocol,
        admission=admission[0] if admission else None, climits=climits[0] if climits else (),
    )


def _options(cls, md):
    """A listener's, dialer's or connector's typed options, parsed now so a bad value stops the load."""
    try:
        return cls.parse_options(md)
    except ValueError as exc:
        raise ConfigError(md.path, str(exc)) from None


def _check_metadata(group, warn):
    """Warn once for every metadata key that nothing read.

    ``group`` holds the maps that one GOST command-line URL fills at once
    (handler, listener and service metadata for ``-L``; hop, node, connector
    and dialer metadata for ``-F``).  A key found in all of them with one
    value was copied there, so it is known when any of them reads it, and
    is reported once, at the first, when none does.
    """
    maps = [md.as_dict() for md in group]
    copied = set()
    if len(maps) > 1:
        copied = {key for key, value in maps[0].items()
                  if all(key in other and other[key] == value for other in maps[1:])}
    for index, (md, items) in enumerate(zip(group, maps, strict=True)):
        for key in items:
            if key in md.asked:
                continue
            if key in copied and (index > 0 or any(key in other.asked for other in group)):
                continue
            if key in _UNSUPPORTED_METADATA:
                warn("%s: not supported by gostgev, ignored" % join_path(md.path, md.spelling(key)))
            else:
                known = [k for other in (group if key in copied else [md]) for k in other.asked.values()]
                warn(unknown_key(md.path, md.spelling(key), known))


def _chain_ref(sec, chains):
    name = sec.str("chain")
    if not name:
        return None
    if name not in chains:
        raise ConfigError(sec.key_path("chain"), "no chain named %r in chains" % name)
    return chains[name]


def _refs(sec, keys, table, kind):
    """Components named by ``kind: name`` or ``kinds: [names]``; errors for unknown names."""
    found = []
    for key in keys:
        value = sec.raw(key)
        if value is None:
            continue
        names = value if isinstance(value, list) else [value]
        for name in names:
            if str(name) not in table:
                raise ConfigError(sec.key_path(key), "no %s named %r in %ss" % (kind, name, kind))
            found.append(table[str(name)])
    if len(found) > 1 and kind != "auther":
        raise ConfigError(sec.key_path(keys[-1]), "only one %s per service is supported" % kind)
    return found


def _handler_auther(sec, authers):
    users = []
    single = _auth(sec.section("auth"))
    if single is not None:
        users.append(User(single.username, single.password))
    for auther in _refs(sec, ("auther", "authers"), authers, "auther"):
        users.extend(auther)
    return Auther(users) if users else None


def _auther(sec, base_dir):
    """A named auther as a list of users (inline auths, then the users file)."""
    users = []
    for entry in sec.sections("auths"):
        username = entry.str("username") or ""
        tunnels = entry.raw("tunnels", [])
        try:
            keys = frozenset(TunnelID.parse(str(t)).key for t in (tunnels if isinstance(tunnels, list) else [tunnels]))
        except ValueError as exc:
            raise ConfigError(entry.key_path("tunnels"), str(exc)) from None
        users.append(User(username, entry.str("password") or "", keys))
        entry.finish()
    file_sec = sec.section("file")
    if file_sec is not None:
        path = os.path.join(base_dir, file_sec.str("path") or "")
        try:
            users.extend(load_users_file(path, TunnelID.parse))
        except OSError as exc:
            raise ConfigError(file_sec.key_path("path"), "%s: %s" % (path, exc.strerror)) from None
        except ValueError as exc:
            raise ConfigError(file_sec.key_path("path"), str(exc)) from None
        file_sec.finish()
    sec.unsupported("reload", "redis", "http", "plugin")
    sec.finish()
    return users


def _admission(sec, name):
    networks = []
    matchers = sec.raw("matchers", [])
    for i, text in enumerate(matchers if isinstance(matchers, list) else [matchers]):
        try:
            networks.append(parse_network(str(text)))
        except ValueError:
            raise ConfigError("%s[%d]" % (sec.key_path("matchers"), i), "not an IP or CIDR: %r" % text) from None
    whitelist = sec.bool("whitelist", False) or sec.bool("reverse", False)
    sec.unsupported("file", "redis", "http", "plugin", "reload")
    sec.finish()
    return Admission(networks, whitelist=whitelist)


def _climiter(sec, name):
    limits = sec.raw("limits", [])
    limits = tuple(str(x) for x in (limits if isinstance(limits, list) else [limits]))
    try:
        ConnLimiter.parse(limits)
    except ValueError as exc:
        raise ConfigError(sec.key_path("limits"), str(exc)) from None
    sec.unsupported("file", "redis", "http", "plugin", "reload")
    sec.finish()
    return limits


def _auth(sec):
    if sec is None:
        return None
    username, password = sec.str("username") or "", sec.str("password") or ""
    sec.finish()
    return AuthConfig(username=username, password=password)


def _ingress(sec, name):
    rules = []
    for rule in sec.sections("rules"):
        try:
            hostname = parse_rule_host(rule.str("hostname"))
        except ValueError as exc:
            raise ConfigError(rule.key_path("hostname"), str(exc)) from None
        try:
            endpoint = parse_endpoint(rule.str("endpoint") or "")
        except ValueError as exc:
            raise ConfigError(rule.key_path("endpoint"), "%s (want a tunnel UUID, or $UUID)" % exc) from None
        rule.finish()
        rules.append(Rule(hostname, endpoint))
    sec.unsupported("file", "redis", "http", "plugin", "reload")
    sec.finish()
    return IngressConfig(name=name, rules=tuple(rules))


def _tls(sec, env):
    """A ``tls`` block; files are checked here so a typo is a config error, not a crash later."""
    if sec is None:
        return None
    files = {}
    for key in ("certFile", "keyFile", "caFile"):
        path = sec.str(key)
        if path:
            path = os.path.join(env.base_dir, path)
            if not os.path.isfile(path):
                raise ConfigError(sec.key_path(key), "no such file: %s" % path)
        files[key] = path
    if bool(files["certFile"]) != bool(files["keyFile"]):
        raise ConfigError(sec.path, "certFile and keyFile go together")
    try:
        env.components.check_tls(files["certFile"], files["keyFile"], files["caFile"])
    except ValueError as exc:
        raise ConfigError(sec.path, str(exc).removeprefix("tls: ")) from None
    config = TLSConfig(cert_file=files["certFile"], key_file=files["keyFile"], ca_file=files["caFile"],
                       server_name=sec.str("serverName"), secure=sec.bool("secure", False))
    sec.unsupported("options", "validity", "commonName", "organization")
    sec.finish()
    return config


def _chain(sec, name, env):
    hops = []
    for hop in sec.sections("hops"):
        hop_name = hop.str("name") or "hop-%d" % len(hops)
        selector = _selector(hop.section("selector"))
        nodes = tuple(_chain_node(node, i, env) for i, node in enumerate(hop.sections("nodes")))
        if not nodes:
            raise hop.missing("nodes", "a chain hop needs nodes")
        hop_md = hop.metadata()
        hop.unsupported("bypass", "bypasses", "resolver", "hosts", "interface", "sockopts")
        hop.finish()
        # Nothing reads hop metadata itself; GOST's -F copies its keys into the nodes' maps.
        _check_metadata([hop_md] + [md for node in nodes
                                            for md in (node.metadata, node.connector.metadata,
                                                       node.dialer.metadata)], hop.warn)
        hops.append(HopConfig(name=hop_name, nodes=nodes, selector=selector))
    if not hops:
        raise sec.missing("hops", "a chain needs hops")
    sec.unsupported("metadata")
    sec.finish()
    return ChainConfig(name=name, hops=tuple(hops))


def _chain_node(sec, index, env):
    connectors, dialers = env.components.connectors, env.components.dialers

    name = sec.str("name") or "node-%d" % index
    addr = sec.str("addr")
    if not addr:
        raise sec.missing("addr")
    try:
        parse_addr(addr)
    except ValueError as exc:
        raise ConfigError(sec.key_path("addr"), str(exc)) from None
    conn = sec.section("connector")
    conn_type = (conn.str("type") if conn else None) or "http"
    if conn_type not in connectors:
        raise ConfigError((conn or sec).key_path("type" if conn else "connector"),
                          _unknown("connector", conn_type, connectors))
    conn_md = conn.metadata() if conn else Metadata({}, sec.key_path("connector") + ".metadata")
    connector = ConnectorConfig(type=conn_type, metadata=conn_md, options=_options(connectors.get(conn_type), conn_md),
                                auth=_auth(conn.section("auth")) if conn else None)
    if conn is not None:
        conn.finish()
    dial = sec.section("dialer")
    dial_type = (dial.str("type") if dial else None) or "tcp"
    if dial_type not in dialers:
        raise ConfigError((dial or sec).key_path("type" if dial else "dialer"),
                          _unknown("dialer", dial_type, dialers))
    dial_md = dial.metadata() if dial else Metadata({}, sec.key_path("dialer") + ".metadata")
    dialer = DialerConfig(type=dial_type, metadata=dial_md, options=_options(dialers.get(dial_type), dial_md),
                          tls=_tls(dial.section("tls"), env) if dial else None)
    if dial is not None:
        dial.unsupported("auth")
        dial.finish()
    metadata = sec.metadata()
    max_fails = metadata.int("maxFails", "max_fails", default=0)
    fail_timeout = metadata.duration("failTimeout", "fail_timeout", default=0.0)
    sec.unsupported("bypass", "bypasses", "resolver", "hosts", "interface", "sockopts", "tls", "http")
    sec.finish()
    return ChainNodeConfig(name=name, addr=addr, connector=connector, dialer=dialer, metadata=metadata,
                           max_fails=max_fails if max_fails > 0 else None,
                           fail_timeout=fail_timeout if fail_timeout > 0 else None)


def _unknown(kind, value, registry):
    return 'unknown %s "%s" (known: %s)' % (kind, value, ", ".join(registry.names()))


def _forwarder(sec, hops, env):
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
    max_fails = sec.int("maxFails", 1)
    fail_timeout = sec.duration("failTimeout", 10.0)
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
    max_fails = md.int("maxFails", "max_fails", default=0)
    fail_timeout = md.duration("failTimeout", "fail_timeout", default=0.0)
    proxy_protocol = md.int("proxyProtocol", default=None, minimum=0, maximum=2)
    backup = md.bool("backup")
    _check_metadata([md], sec.warn)
    return NodeConfig(
        name=name, addr=addr, host=_host_pattern(host, filter_path),
        protocol=protocol.lower() if protocol else None, path=path or None,
        weight=weight if weight > 0 else 1, backup=backup,
        max_fails=max_fails if max_fails > 0 else None,
        fail_timeout=fail_timeout if fail_timeout > 0 else None,
        proxy_protocol=proxy_protocol, metadata=md.as_dict(),
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
