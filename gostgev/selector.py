"""Choosing among equivalent nodes: strategies and failure marking.

A :class:`Selector` turns a list of candidate nodes into the order in which to
try them.  The strategy picks the first one; the rest follow in rotation, so
a failed dial moves on to the next candidate instead of giving up.

Failure marking follows GOST (``maxFails``/``failTimeout``): a node whose
last ``max_fails`` dials failed is skipped for ``fail_timeout`` seconds.  When
every candidate is marked, they are tried anyway, as a last resort, rather
than refusing the request outright.
"""

import itertools
import random
import time
import zlib

__all__ = ["Node", "Selector"]


class Node:
    """A configured node plus its health state (shared by all connections).

    ``config`` is whatever the user of the selector needs back (a forwarder
    node, a chain node); the selector itself reads only the keyword fields.
    """

    __slots__ = ("config", "name", "weight", "backup", "fails", "failed_at", "max_fails", "fail_timeout")

    def __init__(self, config, selector_config, *, weight=1, backup=False, max_fails=None, fail_timeout=None):
        self.config = config
        self.name = config.name
        self.weight = weight
        self.backup = backup
        self.fails = 0
        self.failed_at = 0.0
        self.max_fails = max_fails or selector_config.max_fails
        self.fail_timeout = fail_timeout or selector_config.fail_timeout

    def is_failed(self, now):
        return self.fails >= self.max_fails and now - self.failed_at < self.fail_timeout

    def mark_failed(self):
        self.fails += 1
        self.failed_at = time.monotonic()

    def mark_ok(self):
        self.fails = 0

    def __repr__(self):
        return "<Node %s>" % self.name


class Selector:
    def __init__(self, config):
        self.strategy = config.strategy
        # One counter for every host, as in GOST: rotation is fair overall,
        # not strictly per host.
        self._counter = itertools.count()

    def order(self, candidates, client_ip=None):
        """Return ``candidates`` in the order they should be dialed."""
        if not candidates:
            return []
        if len(candidates) == 1:
            return list(candidates)    # healthy or not, the one node is the only one to dial
        now = time.monotonic()
        healthy = [n for n in candidates if not n.is_failed(now)]
        if not healthy:
            return list(candidates)
        primary = [n for n in healthy if not n.backup]
        backup = [n for n in healthy if n.backup]
        group = primary or backup
        first = self._pick(group, client_ip)
        ordered = group[first:] + group[:first]
        return ordered + backup if primary else ordered

    def _pick(self, group, client_ip):
        if len(group) == 1 or self.strategy == "fifo":
            return 0
        if self.strategy == "round":
            return next(self._counter) % len(group)
        if self.strategy == "hash" and client_ip:
            return zlib.crc32(client_ip.encode()) % len(group)
        weights = [n.weight for n in group]
        return random.choices(range(len(group)), weights=weights)[0]
