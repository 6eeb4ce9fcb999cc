"""The tunnel handler's options, parsed from ``handler.metadata`` when the file loads.

Every key is declared once, on :class:`TunnelOptions` (see :mod:`gostgev.settings`);
the keys whose value needs more than its kind have a parse function here.
"""

from dataclasses import dataclass

from gevent import socket

from gostgev.addr import parse_addr
from gostgev.codec import relay
from gostgev.config.model import IngressConfig
from gostgev.handler.base import service_auther
from gostgev.handler.http1 import FORWARDED_STYLES, Forwarding, forwarded_style
from gostgev.ingress import Rule, parse_endpoint, parse_rule_host
from gostgev.netio.mux import MuxConfig
from gostgev.netio.relayio import DEFAULT_REQUEST_TIMEOUT
from gostgev.settings import BOOL, CHOICE, DURATION, INT, STR, ZERO, computed, declare, nested, setting

__all__ = ["TunnelOptions", "ClusterOptions", "DEFAULT_HEADER_TIMEOUT", "DEFAULT_TTL"]

#: default deadline for a relay request on the tunnel port and for the
#: request head on an entrypoint; GOST has none on either
DEFAULT_HEADER_TIMEOUT = DEFAULT_REQUEST_TIMEOUT


def _ingress(md, spec, context, got):
    """The ingress ``ingress`` names, else GOST's inline ``tunnel`` rules, else None."""
    name = md.str(*spec.keys)
    if name:
        return _ingress_named(name, context, spec.key)
    text = md.str(*_INLINE_RULES.keys)
    return _inline_rules(text) if text else None


def _entrypoints(md, spec, context, got):
    """(Addr, IngressConfig | None) pairs: ``entrypoint``, then each of ``entrypoints``."""
    ingress, entrypoints = got["ingress"], []
    single = md.str(*spec.keys)
    if single:
        entrypoints.append((parse_addr(single), ingress))
    for i, item in enumerate(md.raw(*_ENTRYPOINTS.keys) or []):
        item = item if isinstance(item, dict) else {"addr": item}
        for key in item:
            if str(key).lower() not in ("addr", "ingress"):
                context.unknown("%s.entrypoints[%d]" % (md.path, i), str(key), ("addr", "ingress"))
        item = {str(k).lower(): v for k, v in item.items()}
        try:
            addr = parse_addr(str(item.get("addr") or ""))
        except ValueError as exc:
            raise ValueError("entrypoints[%d].addr: %s" % (i, exc)) from None
        name = item.get("ingress")
        entrypoints.append((addr, _ingress_named(name, context, "entrypoints[%d].ingress" % i)
                            if name else ingress))
    return tuple(entrypoints)


def _entrypoint_id(md, spec, context, got):
    text = md.str(*spec.keys)
    try:
        return relay.TunnelID.parse(text) if text else None
    except ValueError as exc:
        raise ValueError("%s: %s" % (spec.key, exc)) from None


#: GOST's ``tunnel.ttl``: how long a service-discovery record lives unrenewed
DEFAULT_TTL = 15.0


@dataclass(frozen=True, slots=True)
class ClusterOptions:
    """This node in a cluster of tunnel servers (``sd``)."""

    sd: object          #: gostgev.config.model.SDConfig
    node: str           #: this node's ID in records and in Gost-Forwarded-Node
    address: str        #: host:port where the other nodes reach this node's entrypoint ("": the first
                        #: entrypoint as bound, for an entrypoint on port 0)
    ttl: float          #: a record's life without renewal (renewed every ttl / 3)


def _valid_node(node, key):
    if not node or any(c in node for c in ", \t\r\n"):
        raise ValueError("%s: %r cannot stand in a Gost-Forwarded-Node list" % (key, node))
    return node


def _cluster(md, spec, context, got):
    """``sd`` with ``sd.node``, ``sd.address`` and ``tunnel.ttl``; None without ``sd``."""
    name = md.str(*spec.keys)
    node, address, ttl = _SD_NODE.value(md), _SD_ADDRESS.value(md), _TTL.value(md)
    if not name:
        return None
    sds = getattr(context, "sds", None) or {}
    if name not in sds:
        raise ValueError("%s: no sds entry named %r" % (spec.key, name))
    node = _valid_node(node or _NODE.value(md) or socket.gethostname(), _SD_NODE.key)
    if not address:
        entrypoints = got.get("entrypoints") or ()
        if not entrypoints:
            raise ValueError("%s: a cluster node needs an entrypoint, or %s" % (spec.key, _SD_ADDRESS.key))
        first = entrypoints[0][0]
        if first.host in ("", "0.0.0.0", "::"):
            raise ValueError("%s: the entrypoint %s names no host the other nodes can reach; give %s"
                             % (spec.key, first, _SD_ADDRESS.key))
        address = str(first) if first.port else ""   # port 0: the port it binds, known at start
    else:
        try:
            addr = parse_addr(address)
        except ValueError as exc:
            raise ValueError("%s: %s" % (_SD_ADDRESS.key, exc)) from None
        if not addr.host or not addr.port:
            raise ValueError("%s: %r needs a host and a port" % (_SD_ADDRESS.key, address))
    if ttl < 1:
        raise ValueError("%s: at least 1s, got %gs" % (_TTL.key, ttl))
    return ClusterOptions(sds[name], node, address, ttl)


def _entrypoint_forwarding(md, spec, context, got):
    """``entrypoint.forwarded`` headers and the ``entrypoint.loopGuard`` (node ``entrypoint.node``).

    A cluster node (``sd``) always guards against loops, as its ``sd.node``.
    """
    style = forwarded_style(md, spec.key)
    node = None
    if got.get("cluster") is not None:
        node = got["cluster"].node
    elif _LOOP_GUARD.value(md):
        node = _valid_node(_NODE.value(md) or socket.gethostname(), _NODE.key)
    return Forwarding(style, "http", node) if style or node else None


_INLINE_RULES = declare("tunnel", "rules", None,
                        "GOST's quick rules when no ingress is named: host1:uuid1,host2:uuid2")
_ENTRYPOINTS = declare("entrypoints", "list", None,
                       "more entrypoints: addresses, or {addr, ingress} maps with rules of their own")
_LOOP_GUARD = declare("entrypoint.loopGuard", BOOL, False,
                      "refuse (508) a request whose Gost-Forwarded-Node header already names this node")
_NODE = declare("entrypoint.node", STR, None, "this node's name in Gost-Forwarded-Node (with the loop guard)",
                shown="the host name")
_SD_NODE = declare("sd.node", STR, None, "this node's ID in the cluster (default: entrypoint.node)",
                   shown="the host name")
_SD_ADDRESS = declare("sd.address", "host:port", None,
                      "where the other nodes reach this node's entrypoint (default: the entrypoint)")
_TTL = declare("tunnel.ttl", DURATION, DEFAULT_TTL,
               "life of a cluster record without renewal; records are renewed every ttl/3")


@dataclass(frozen=True, slots=True)
class TunnelOptions:
    ingress: IngressConfig | None = setting(
        "ingress", "name", None, "the ingresses entry whose rules route entrypoint requests and visitors",
        parse=_ingress, also=(_INLINE_RULES,))
    entrypoints: tuple = setting(
        "entrypoint", "address", None, "address of the public entrypoint (HTTP and TLS, routed by the ingress)",
        parse=_entrypoints, also=(_ENTRYPOINTS,))
    entrypoint_id: relay.TunnelID | None = setting(
        "entrypoint.id", "uuid", None, "visitors with this tunnel ID are external entrypoints", parse=_entrypoint_id)
    direct: bool = setting("tunnel.direct", BOOL, False, "visitors reach the tunnel they name, the ingress ignored")
    read_timeout: float = setting("readTimeout", DURATION, DEFAULT_HEADER_TIMEOUT,
                                  "deadline for the relay request on the tunnel port (GOST: none)", unset=ZERO)
    header_timeout: float = setting("entrypoint.headerTimeout", DURATION, DEFAULT_HEADER_TIMEOUT,
                                    "deadline for the request head on an entrypoint (GOST: none)", unset=ZERO)
    mux: MuxConfig = nested(MuxConfig)
    auther: object = computed(service_auther)     #: gostgev.auth.Auther | None
    strict: bool = setting("tunnel.strict", BOOL, True, "refuse BINDs for tunnels that no ingress rule names")
    cluster: ClusterOptions | None = setting(
        "sd", "name", None, "the sds entry through which this node shares its tunnels with the other nodes",
        parse=_cluster, also=(_SD_NODE, _SD_ADDRESS, _TTL))
    entrypoint_proxy: bool = setting("entrypoint.proxyProtocol", INT, 0,
                                     "entrypoints accept PROXY protocol headers (v1 and v2) when 1 or 2",
                                     minimum=0, maximum=2, parse=lambda md, spec, context, got: spec.value(md) > 0)
    forwarding: Forwarding | None = setting(
        "entrypoint.forwarded", CHOICE, None,
        "add X-Forwarded-* (x-forwarded) or Forwarded (forwarded) headers to entrypoint requests; off: none",
        choices=FORWARDED_STYLES + ("off",), parse=_entrypoint_forwarding, also=(_LOOP_GUARD, _NODE))


def _inline_rules(text):
    """GOST's ``tunnel: host1:uuid1,host2:uuid2`` quick rules."""
    rules = []
    for item in (part.strip() for part in text.split(",")):
        if item:
            host, sep, endpoint = item.partition(":")
            if not sep:
                raise ValueError("tunnel: %r is not host:uuid" % item)
            rules.append(Rule(parse_rule_host(host), parse_endpoint(endpoint)))
    return IngressConfig(name="tunnel", rules=tuple(rules), shared=False)


def _ingress_named(name, context, key):
    if name not in context.ingresses:
        raise ValueError("%s: no ingress named %r in ingresses" % (key, name))
    return context.ingresses[name]
