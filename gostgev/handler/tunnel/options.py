"""The tunnel handler's options, parsed from ``handler.metadata`` when the file loads."""

from dataclasses import dataclass

from gevent import socket

from gostgev.addr import parse_addr
from gostgev.codec import relay
from gostgev.config.model import IngressConfig
from gostgev.handler.http1 import Forwarding, forwarded_style
from gostgev.ingress import Rule, parse_endpoint, parse_rule_host
from gostgev.netio.mux import MuxConfig
from gostgev.netio.relayio import DEFAULT_REQUEST_TIMEOUT

__all__ = ["TunnelOptions", "parse_options", "DEFAULT_HEADER_TIMEOUT"]

#: default deadline for a relay request on the tunnel port and for the
#: request head on an entrypoint; GOST has none on either
DEFAULT_HEADER_TIMEOUT = DEFAULT_REQUEST_TIMEOUT


@dataclass(frozen=True, slots=True)
class TunnelOptions:
    ingress: IngressConfig | None        #: rules for the entrypoint and visitors
    entrypoints: tuple                   #: (Addr, IngressConfig | None) pairs
    entrypoint_id: relay.TunnelID | None  #: visitors with this ID are external entrypoints
    direct: bool                         #: visitors reach the tunnel they name, ingress ignored
    read_timeout: float                  #: deadline for the relay request on the tunnel port
    header_timeout: float                #: deadline for the request head on entrypoints
    mux: MuxConfig
    auther: object                       #: gostgev.auth.Auther | None
    strict: bool                         #: refuse BINDs for tunnels no ingress rule names
    entrypoint_proxy: bool               #: entrypoints accept PROXY protocol headers
    forwarding: Forwarding | None = None  #: headers the entrypoints add to HTTP requests


def parse_options(md, context):
    """:class:`TunnelOptions` from the handler's metadata; ``ValueError`` names the bad key."""
    ingress = None
    if md.str("ingress"):
        ingress = _ingress_named(md.str("ingress"), context, "ingress")
    elif md.str("tunnel"):
        ingress = _inline_rules(md.str("tunnel"))
    entrypoints = []
    if md.str("entrypoint"):
        entrypoints.append((parse_addr(md.str("entrypoint")), ingress))
    for i, item in enumerate(md.raw("entrypoints") or []):
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
    entrypoint_id = md.str("entrypoint.id")
    return TunnelOptions(
        ingress=ingress, entrypoints=tuple(entrypoints),
        entrypoint_id=relay.TunnelID.parse(entrypoint_id) if entrypoint_id else None,
        direct=md.bool("tunnel.direct"),
        read_timeout=md.duration("readtimeout") or DEFAULT_HEADER_TIMEOUT,
        header_timeout=md.duration("entrypoint.headertimeout") or DEFAULT_HEADER_TIMEOUT,
        mux=MuxConfig.from_metadata(md), auther=context.auther,
        strict=md.bool("tunnel.strict", default=True),
        entrypoint_proxy=md.int("entrypoint.proxyprotocol", default=0) > 0,
        forwarding=_entrypoint_forwarding(md))


def _entrypoint_forwarding(md):
    """``entrypoint.forwarded`` headers and the ``entrypoint.loopGuard`` (node ``entrypoint.node``)."""
    style = forwarded_style(md, "entrypoint.forwarded")
    node = None
    if md.bool("entrypoint.loopGuard"):
        node = md.str("entrypoint.node") or socket.gethostname()
        if not node or any(c in node for c in ", \t\r\n"):
            raise ValueError("entrypoint.node: %r cannot stand in a Gost-Forwarded-Node list" % node)
    return Forwarding(style, "http", node) if style or node else None


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
