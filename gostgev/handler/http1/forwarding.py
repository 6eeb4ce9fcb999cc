"""The headers a proxy adds to the requests it passes on, and the loop guard.

:class:`Forwarding` is applied to each request head by the session, before
it is routed; ``forwarded_style`` reads the option that turns it on.
"""

import re

from gostgev.handler.http1.routes import Refused

#: values of the ``http.forwarded`` / ``entrypoint.forwarded`` options
FORWARDED_STYLES = ("x-forwarded", "forwarded")


def forwarded_style(md, key):
    """Option ``key``: ``x-forwarded``, ``forwarded``, or None (off, the default: requests pass as sent)."""
    style = (md.str(key) or "").lower()
    if style in ("", "off", "false", "none"):
        return None
    if style not in FORWARDED_STYLES:
        raise ValueError("%s: unknown style %r (x-forwarded, forwarded or off)" % (key, style))
    return style


class Forwarding:
    """What a proxy adds to each request it passes on (all opt-in).

    * ``style`` ``x-forwarded``: ``X-Forwarded-For`` (the client's address),
      ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` (the Host it asked for);
      ``forwarded``: the same as one RFC 7239 ``Forwarded`` header.  A
      client's own headers of that name stay: ours is added after them, so
      a list reads oldest hop first.
    * ``node``: the loop guard.  A request whose ``Gost-Forwarded-Node``
      already names this node has gone round in a circle and is refused
      with 508; otherwise this node is added to the header (GOST replaces
      the value, which sees a loop of two nodes only).
    """

    __slots__ = ("style", "proto", "node")

    def __init__(self, style=None, proto="http", node=None):
        self.style = style
        self.proto = proto
        self.node = node

    def __bool__(self):
        return bool(self.style or self.node)

    def apply(self, head, raw, client_ip):
        """``raw`` with our headers added; :class:`Refused` for a request caught in a loop."""
        lines = []
        if self.node:
            seen = [value for name, value in head.headers if name.lower() == "gost-forwarded-node"]
            nodes = [n.strip() for value in seen for n in value.split(",") if n.strip()]
            if self.node in nodes:
                raise Refused(508, "request loop: it has passed node %s before" % self.node)
            if seen:
                raw = _FORWARDED_NODE.sub(b"", raw)
            lines.append("Gost-Forwarded-Node: %s" % ", ".join(nodes + [self.node]))
        if self.style:
            host = head.header("host") or head.host or ""
            if self.style == "forwarded":
                who = '"[%s]"' % client_ip if ":" in client_ip else client_ip
                lines.append("Forwarded: for=%s;host=%s;proto=%s" % (who, _quoted(host), self.proto))
            else:
                lines.append("X-Forwarded-For: %s" % client_ip)
                lines.append("X-Forwarded-Proto: %s" % self.proto)
                if host:
                    lines.append("X-Forwarded-Host: %s" % host)
        extra = "".join(line + "\r\n" for line in lines).encode("latin-1")
        cut = len(raw) - (2 if raw.endswith(b"\r\n\r\n") else 1)
        return raw[:cut] + extra + raw[cut:]


def _quoted(value):
    """An RFC 7239 value: a token as it is, anything else (a port's colon) quoted."""
    if value and all(c.isalnum() or c in "!#$%&'*+-.^_`|~" for c in value):
        return value
    return '"%s"' % value.replace("\\", "\\\\").replace('"', '\\"')


# The header a loop guard rewrites, line and all (a folded value was refused earlier).
_FORWARDED_NODE = re.compile(rb"\r?\ngost-forwarded-node:[^\r\n]*(?=\r?\n)", re.IGNORECASE)
