"""Ingress: which tunnel serves a public host name.

Rules map a host name to a tunnel ID (the rule's *endpoint*).  A ``$`` before
the endpoint makes the rule private: the entrypoint will not route to it,
only visitors presenting that tunnel ID may use it.  Lookup follows GOST's
order (exact name, then ``.name``, then each parent suffix, most specific
first) through :class:`gostgev.hostmatch.HostRouter`, with two deliberate
differences: matching is case-insensitive (DNS is), and a wildcard matches on
a dot boundary only.

Rule keys are normalised as GOST normalises them: a leading ``*`` is dropped,
so ``*.example.com`` is ``.example.com``, while ``*example.com`` becomes the
exact name ``example.com``.  For equal keys the later rule wins.
"""

from dataclasses import dataclass

from gostgev.addr import host_without_port, normalize_host
from gostgev.codec.relay import TunnelID
from gostgev.hostmatch import HostRouter

__all__ = ["Rule", "Ingress", "parse_rule_host", "parse_endpoint"]


@dataclass(frozen=True, slots=True)
class Rule:
    hostname: str        #: normalised key: "a.example.com" or ".example.com"
    endpoint: TunnelID   #: the tunnel; ``endpoint.private`` for "$" rules


def parse_rule_host(text):
    """Normalise a rule hostname; ``ValueError`` if empty or malformed."""
    key = normalize_host(text or "").lstrip("*")
    if not key or key == "." or any(c.isspace() or c in "/@?#*" for c in key):
        raise ValueError("invalid ingress hostname %r" % text)
    return key


def parse_endpoint(text):
    """``uuid`` or ``$uuid`` -> TunnelID; ``ValueError`` if not a UUID."""
    tunnel_id = TunnelID.parse(str(text).strip())
    if tunnel_id.is_zero:
        raise ValueError("the zero UUID is not a tunnel ID")
    return tunnel_id


class Ingress:
    def __init__(self, name, rules=()):
        self.name = name
        self._rules = {}
        for rule in rules:
            self._rules[rule.hostname] = rule
        self._rebuild()

    def _rebuild(self):
        router = HostRouter()
        for key, rule in self._rules.items():
            router.add(key, rule)
        self._router = router
        self._named = {rule.endpoint.key for rule in self._rules.values()}

    @property
    def rules(self):
        return list(self._rules.values())

    def replace(self, rules):
        """All rules at once (a reload); lookups in flight see the old or the new table."""
        self._rules = {rule.hostname: rule for rule in rules}
        self._rebuild()

    def set_rule(self, rule):
        self._rules[rule.hostname] = rule
        self._rebuild()

    def remove_rule(self, hostname):
        removed = self._rules.pop(parse_rule_host(hostname), None)
        self._rebuild()
        return removed

    def lookup(self, host):
        """The rule for ``host`` (port ignored), or None."""
        if not host:
            return None
        group = self._router.best(host_without_port(host))
        return group[-1] if group else None

    def names(self, tunnel_id):
        """Whether any rule routes to this tunnel (private rules included)."""
        return tunnel_id.key in self._named
