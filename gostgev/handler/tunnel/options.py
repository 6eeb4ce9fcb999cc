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

__all__ = ["TunnelOptions", "DEFAULT_HEADER_TIMEOUT"]

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


def _entrypoint_forwarding(md, spec, context, got):
    """``entrypoint.forwarded`` headers and the ``entrypoint.loopGuard`` (node ``entrypoint.node``)."""
    style = forwarded_style(md, spec.key)
    node = None
    if _LOOP_GUARD.value(md):
        node = _NODE.value(md) or socket.gethostname()
        if not node or any(c in node for c in ", \t\r\n"):
            raise ValueError("%s: %r cannot stand in a Gost-Forwarded-Node list" % (_NODE.key, node))
    return Forwarding(style, "http", node) if style or node else None


_INLINE_RULES = declare("tunnel", "rules", None,
                        "GOST's quick rules when no ingress is named: host1:uuid1,host2:uuid2")
_ENTRYPOINTS = declare("entrypoints", "list", None,
                       "more entrypoints: addresses, or {addr, ingress} maps with rules of their own")
_LOOP_GUARD = declare("entrypoint.loopGuard", BOOL, False,
                      "refuse (508) a request whose Gost-Forwarded-Node header already names this node")
_NODE = declare("entrypoint.node", STR, None, "this node's name in Gost-Forwarded-Node (with the loop guard)",
                shown="the host name")


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
