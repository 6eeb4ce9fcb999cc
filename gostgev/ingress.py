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

import ipaddress
import re
from dataclasses import dataclass

from gostgev.addr import host_without_port, normalize_host
from gostgev.codec.relay import TunnelID
from gostgev.hostmatch import HostRouter

__all__ = ["Rule", "Ingress", "IngressStore", "parse_rule_host", "parse_endpoint", "parse_rules"]


@dataclass(frozen=True, slots=True)
class Rule:
    hostname: str        #: normalised key: "a.example.com" or ".example.com"
    endpoint: TunnelID   #: the tunnel; ``endpoint.private`` for "$" rules


#: longest host name DNS allows, in its dotted text form
MAX_HOSTNAME = 253
_LABEL = re.compile(r"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?\Z")


def parse_rule_host(text):
    """Normalise a rule hostname; ``ValueError`` unless it is a DNS name, a wildcard or an IP literal.

    A host name is at most 253 characters of labels of at most 63 letters,
    digits, ``-`` and ``_`` (no leading or trailing ``-``).  A name in
    another script is stored in its IDNA (``xn--``) form, which is what
    clients send in ``Host`` and SNI.  NUL, control characters and lone
    surrogates are refused outright: such a rule could never match, and
    would end up in logs and API answers.
    """
    if not isinstance(text, str):
        raise ValueError("invalid ingress hostname %r: not a string" % (text,))
    shown = text if len(text) <= 80 else text[:77] + "..."
    if any(ord(c) < 0x20 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in text):
        raise ValueError("invalid ingress hostname %r: control or surrogate character" % shown)
    key = normalize_host(text).lstrip("*")
    name = key[1:] if key.startswith(".") else key
    if not name or any(c.isspace() or c in "/@?#*" for c in key):
        raise ValueError("invalid ingress hostname %r" % shown)
    try:
        ipaddress.ip_address(name.strip("[]"))
        return key if key.startswith(".") else name.strip("[]")
    except ValueError:
        pass
    if not name.isascii():
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise ValueError("invalid ingress hostname %r: not a valid internationalised name" % shown) from None
    if len(name) > MAX_HOSTNAME:
        raise ValueError("invalid ingress hostname %r: longer than %d characters" % (shown, MAX_HOSTNAME))
    for label in name.split("."):
        if not _LABEL.match(label):
            raise ValueError("invalid ingress hostname %r: bad label %r" % (shown, label[:70]))
    return "." + name if key.startswith(".") else name


def parse_endpoint(text):
    """``uuid`` or ``$uuid`` -> TunnelID; ``ValueError`` if not a UUID."""
    tunnel_id = TunnelID.parse(str(text).strip())
    if tunnel_id.is_zero:
        raise ValueError("the zero UUID is not a tunnel ID")
    return tunnel_id


def parse_rules(text, where):
    """Rules from text, ``hostname endpoint`` per line, ``#`` comments; ValueError names
    ``where`` and the line."""
    rules = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) != 2:
            raise ValueError("%s:%d: expected 'hostname endpoint'" % (where, number))
        try:
            rules.append(Rule(parse_rule_host(fields[0]), parse_endpoint(fields[1])))
        except ValueError as exc:
            raise ValueError("%s:%d: %s" % (where, number, exc)) from None
    return rules


class Ingress:
    """The rules of one ingress: the configured ones, with the API's edits on top.

    The configured rules (inline, and what the live sources read) change
    through :meth:`replace` (a reload that changed this ingress: the API's
    edits are dropped) and :meth:`refresh` (its sources were read again:
    the API's edits stay).  A rule the API sets wins over every source, and
    a host name it removes stays removed until the API sets it again or a
    reload changes the ingress.
    """

    def __init__(self, name, rules=()):
        self.name = name
        self._configured = {}
        for rule in rules:
            self._configured[rule.hostname] = rule
        self._set = {}          # the API's rules
        self._removed = set()   # host names the API removed
        self._rebuild()

    def _rebuild(self):
        rules = {key: rule for key, rule in self._configured.items() if key not in self._removed}
        rules.update(self._set)
        router = HostRouter()
        for key, rule in rules.items():
            router.add(key, rule)
        self._rules, self._router = rules, router
        self._named = {rule.endpoint.key for rule in rules.values()}

    @property
    def rules(self):
        return list(self._rules.values())

    def replace(self, rules):
        """All rules at once (a reload); lookups in flight see the old or the new table."""
        self._configured = {rule.hostname: rule for rule in rules}
        self._set, self._removed = {}, set()
        self._rebuild()

    def refresh(self, rules):
        """New configured rules from the sources; the API's edits stay on top."""
        self._configured = {rule.hostname: rule for rule in rules}
        self._rebuild()

    def set_rule(self, rule):
        self._set[rule.hostname] = rule
        self._removed.discard(rule.hostname)
        self._rebuild()

    def remove_rule(self, hostname):
        key = parse_rule_host(hostname)
        removed = self._rules.get(key)
        self._set.pop(key, None)
        if key in self._configured:
            self._removed.add(key)
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

class IngressStore:
    """The one live :class:`Ingress` of each configured name.

    Every service that names ``ingress-0`` routes with the same object, so
    a rule the API adds or deletes reaches every entrypoint at once.  A
    reload is staged: ingresses it creates are visible to the services it
    builds but join the store only at :meth:`commit`; :meth:`abort` forgets
    them.  At commit, an ingress whose configuration changed (its rules,
    or its sources) takes the new rules; one whose configuration did not
    change keeps what the API did to it (and what its sources read).

    Inline rules (a tunnel handler's ``tunnel: host:uuid,...``) belong to
    their handler alone: their config says ``shared=False``.
    """

    def __init__(self):
        self._live = {}
        self._configured = {}   # name -> the IngressConfig it was made or replaced from last
        self._staged = None

    def resolve(self, config):
        """The live Ingress for ``config`` (created with its rules if the name is new)."""
        if not getattr(config, "shared", True):
            return Ingress(config.name, config.rules)
        live = self._live.get(config.name)
        if live is not None:
            return live
        if self._staged is None:
            live = self._live[config.name] = Ingress(config.name, config.rules)
            self._configured[config.name] = config
            return live
        staged = self._staged.get(config.name)
        if staged is None:
            staged = self._staged[config.name] = Ingress(config.name, config.rules)
        return staged

    def stage(self):
        """Start a reload: ingresses created from now on wait for commit."""
        self._staged = {}

    def abort(self):
        self._staged = None

    def commit(self, configs):
        """Make ``configs`` (every ingress of the new configuration) live."""
        staged, self._staged = self._staged or {}, None
        names = set()
        for config in configs:
            names.add(config.name)
            live = self._live.get(config.name) or staged.get(config.name)
            if live is None:
                live = Ingress(config.name, config.rules)
            elif config.name in self._live and self._configured.get(config.name) != config:
                live.replace(config.rules)
            self._live[config.name] = live
            self._configured[config.name] = config
        for name in set(self._live) - names:
            del self._live[name]
            self._configured.pop(name, None)

    def get(self, name):
        return self._live.get(name)

    def items(self):
        return list(self._live.items())
