"""Config sections about where traffic goes: chains, hops, nodes and
forwarders, with their connector, dialer and metadata checks.
"""

from dataclasses import dataclass

from gostgev.addr import normalize_host, parse_addr
from gostgev.config.access import parse_auth, parse_tls
from gostgev.config.model import (
    STRATEGIES,
    ChainConfig,
    ChainNodeConfig,
    ConnectorConfig,
    DialerConfig,
    ForwarderConfig,
    HopConfig,
    NodeConfig,
    SelectorConfig,
)
from gostgev.config.section import Metadata, join_path, unknown_key
from gostgev.errors import ConfigError
from gostgev.settings import BOOL, DURATION, INT, NOT_POSITIVE, ZERO, read, setting

UNSUPPORTED_NODE = ("matcher", "http", "tls", "probe", "bypass", "bypasses", "connector",
                     "dialer", "interface", "sockopts", "resolver", "hosts")


# Metadata keys of GOST's that no gostgev component reads where they stand:
# "not supported", where any other key nobody reads is "unknown".
UNSUPPORTED_METADATA = frozenset(
    "backlog keepalive keepaliveperiod ttl readbuffersize readqueuesize mptcp header enablecompression "
    "handshaketimeout readheadertimeout maxheaderbytes nodelay connecttimeout interface so_mark netns "
    "proxyprotocol observer.period observer.resettraffic limiter.refreshinterval enablestats "
    "preup postup predown postdown sniffing.websocket sniffing.websocket.samplerate".split())


def _max_fails():
    return setting("maxFails", INT, None, "failed dials before the node is skipped", aliases=("max_fails",),
                   unset=NOT_POSITIVE, shown="the selector's")


def _fail_timeout():
    return setting("failTimeout", DURATION, None, "how long a failed node is skipped", aliases=("fail_timeout",),
                   unset=ZERO, shown="the selector's")


@dataclass(frozen=True, slots=True)
class NodeMetadata:
    """A forwarder node's ``metadata``."""

    weight: int = setting("weight", INT, 1, "the node's share of connections with strategy rand",
                          unset=NOT_POSITIVE)
    max_fails: int | None = _max_fails()
    fail_timeout: float | None = _fail_timeout()
    proxy_protocol: int | None = setting("proxyProtocol", INT, None,
                                         "send a PROXY header (1: v1, 2: v2, 0: none) to this node",
                                         minimum=0, maximum=2, shown="the handler's")
    backup: bool = setting("backup", BOOL, False, "used only when no primary node of its tier is healthy")


@dataclass(frozen=True, slots=True)
class ChainNodeMetadata:
    """A chain node's ``metadata``."""

    max_fails: int | None = _max_fails()
    fail_timeout: float | None = _fail_timeout()


def parse_options(cls, md):
    """A listener's, dialer's or connector's typed options, parsed now so a bad value stops the load."""
    try:
        return cls.parse_options(md)
    except ValueError as exc:
        raise ConfigError(md.path, str(exc)) from None


def check_metadata(group, warn):
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
            if key in UNSUPPORTED_METADATA:
                warn("%s: not supported by gostgev, ignored" % join_path(md.path, md.spelling(key)))
            else:
                known = [k for other in (group if key in copied else [md]) for k in other.asked.values()]
                warn(unknown_key(md.path, md.spelling(key), known))


def chain_ref(sec, chains):
    name = sec.str("chain")
    if not name:
        return None
    if name not in chains:
        raise ConfigError(sec.key_path("chain"), "no chain named %r in chains" % name)
    return chains[name]


def parse_chain(sec, name, env):
    hops = []
    for hop in sec.sections("hops"):
        hop_name = hop.str("name") or "hop-%d" % len(hops)
        selector = parse_selector(hop.section("selector"))
        nodes = tuple(parse_chain_node(node, i, env) for i, node in enumerate(hop.sections("nodes")))
        if not nodes:
            raise hop.missing("nodes", "a chain hop needs nodes")
        hop_md = hop.metadata()
        hop.unsupported("bypass", "bypasses", "resolver", "hosts", "interface", "sockopts")
        hop.finish()
        # Nothing reads hop metadata itself; GOST's -F copies its keys into the nodes' maps.
        check_metadata([hop_md] + [md for node in nodes
                                            for md in (node.metadata, node.connector.metadata,
                                                       node.dialer.metadata)], hop.warn)
        hops.append(HopConfig(name=hop_name, nodes=nodes, selector=selector))
    if not hops:
        raise sec.missing("hops", "a chain needs hops")
    sec.unsupported("metadata")
    sec.finish()
    return ChainConfig(name=name, hops=tuple(hops))


def parse_chain_node(sec, index, env):
    connectors, dialers = env.components.connectors, env.components.dialers

    name = sec.str("name") or "node-%d" % index
    addr = sec.str("addr")
    if not addr:
        raise sec.missing("addr")
    if "," in addr:
        # As in GOST, only a -F URL lists several servers at once, and it makes a node of each.
        raise ConfigError(sec.key_path("addr"), "one server per node: make a node of each of %r "
                          "(the hop's nodes are its alternative servers)" % addr)
    try:
        parse_addr(addr)
    except ValueError as exc:
        raise ConfigError(sec.key_path("addr"), str(exc)) from None
    conn, conn_type, conn_md, conn_options = _component(sec, "connector", "http", connectors)
    connector = ConnectorConfig(type=conn_type, metadata=conn_md, options=conn_options,
                                auth=parse_auth(conn.section("auth")) if conn else None)
    if conn is not None:
        conn.finish()
    dial, dial_type, dial_md, dial_options = _component(sec, "dialer", "tcp", dialers)
    dialer = DialerConfig(type=dial_type, metadata=dial_md, options=dial_options,
                          tls=parse_tls(dial.section("tls"), env) if dial else None)
    if dial is not None:
        dial.unsupported("auth")
        dial.finish()
    metadata = sec.metadata()
    options = read(ChainNodeMetadata, metadata)
    sec.unsupported("bypass", "bypasses", "resolver", "hosts", "interface", "sockopts", "tls", "http")
    sec.finish()
    return ChainNodeConfig(name=name, addr=addr, connector=connector, dialer=dialer, metadata=metadata,
                           max_fails=options.max_fails, fail_timeout=options.fail_timeout)


def _component(sec, key, default, registry):
    """A node's ``connector`` or ``dialer`` block: ``(section or None, type, metadata, options)``."""
    part = sec.section(key)
    kind = (part.str("type") if part else None) or default
    if kind not in registry:
        raise ConfigError((part or sec).key_path("type" if part else key), unknown_type(key, kind, registry))
    md = part.metadata() if part else Metadata({}, sec.key_path(key) + ".metadata")
    return part, kind, md, parse_options(registry.get(kind), md)


def unknown_type(kind, value, registry):
    return 'unknown %s "%s" (known: %s)' % (kind, value, ", ".join(registry.names()))


def parse_forwarder(sec, hops, env):
    hop_name = sec.str("hop")
    if hop_name is not None and not sec.has("nodes"):
        if hop_name not in hops:
            raise ConfigError(sec.key_path("hop"), "no hop named %r in hops" % hop_name)
        sec.raw("name")
        sec.finish()
        return hops[hop_name]
    selector = parse_selector(sec.section("selector"))
    nodes = tuple(parse_node(node, i) for i, node in enumerate(sec.sections("nodes")))
    seen = set()
    for i, node in enumerate(nodes):
        if node.name in seen:
            raise ConfigError("%s[%d].name" % (sec.key_path("nodes"), i), "duplicate node name %r" % node.name)
        seen.add(node.name)
    sec.raw("name")
    sec.finish()
    return ForwarderConfig(nodes=nodes, selector=selector, hop=hop_name)


def parse_selector(sec):
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


def parse_node(sec, index):
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
    sec.unsupported(*UNSUPPORTED_NODE)
    sec.finish()
    options = read(NodeMetadata, md)
    check_metadata([md], sec.warn)
    return NodeConfig(
        name=name, addr=addr, host=host_pattern(host, filter_path),
        protocol=protocol.lower() if protocol else None, path=path or None,
        weight=options.weight, backup=options.backup, max_fails=options.max_fails,
        fail_timeout=options.fail_timeout, proxy_protocol=options.proxy_protocol, metadata=md.as_dict(),
    )


def host_pattern(text, path):
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
