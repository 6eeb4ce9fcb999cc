"""Credentials for the relay handlers (``handler.auth``, ``auther``/``authers``).

An :class:`Auther` is a table of users.  It comes from a handler's single
``auth`` or from named ``authers`` (inline ``auths`` and a users ``file``
with ``user password`` per line, ``#`` comments).

Tunnel ownership, a gostgev extension: a user entry may list the tunnel
UUIDs it owns (``tunnels: [uuid, ...]`` inline, or a third column of
comma-separated UUIDs in the file).  A tunnel that some user owns can be
bound only by its owners, so knowing a tunnel's UUID is not enough to join
its pool and receive its traffic.  Tunnels nobody lists stay open to every
authenticated client, as in GOST.

A named auther with live sources (``file`` with ``reload``, ``redis``,
``http``) is a :class:`LiveUsers` table that :mod:`gostgev.sources`
replaces whole on every refresh.  An :class:`Auther` holds such tables
by reference, so every handler and admin endpoint naming that auther sees
a refresh at once; :class:`AutherStore` keeps one table per name across
configuration reloads, and the tables of a newer configuration follow it.

Passwords are compared in constant time, and the lookup does the same work
for unknown users, so timing tells nothing about which names exist.
GOST lets an empty password in an auther accept any password; here an empty
password must be sent empty.
"""

import hmac
from dataclasses import dataclass

from gostgev.textfile import read_text

__all__ = ["User", "Auther", "LiveUsers", "AutherStore", "authorized", "load_users_file", "parse_users"]

# Compared against when the user does not exist, so both paths cost the same.
_NO_SUCH_USER = b"\x00" * 32


@dataclass(frozen=True, slots=True)
class User:
    username: str
    password: str
    tunnels: frozenset = frozenset()   #: TunnelID keys (16 bytes) this user owns


class _Table:
    """Users by name (the later of two equal names wins) and the owners of each tunnel."""

    __slots__ = ("users", "owners")

    def __init__(self, users):
        self.users = {}
        for user in users:
            self.users[user.username] = user
        self.owners = {}
        for user in self.users.values():
            for key in user.tunnels:
                self.owners.setdefault(key, set()).add(user.username)


class LiveUsers:
    """The users of a named auther with live sources, replaced whole by :meth:`replace`.

    A table may :meth:`follow` another of the same name (the one a
    previous configuration made, kept by :class:`AutherStore`): it then
    shows that table's users, so authers built from any configuration see
    the same refreshes.
    """

    def __init__(self, name, users=()):
        self.name = name
        self._table = _Table(users)
        self._leader = None

    def follow(self, leader):
        self._leader = None if leader is self else leader

    def table(self):
        source = self
        while source._leader is not None:
            source = source._leader
        return source._table

    @property
    def users(self):
        return list(self.table().users.values())

    def replace(self, users):
        """All users at once; a check in flight sees the old or the new table, never a mix."""
        self._table = _Table(users)


class Auther:
    """A table of users: :class:`User` entries and :class:`LiveUsers` tables, in precedence
    order (for equal user names the later entry wins)."""

    def __init__(self, users=()):
        self._entries = tuple(users)
        self._live = tuple(entry for entry in self._entries if isinstance(entry, LiveUsers))
        self._seen = None       # the live tables the merged table was built from
        self._table = _Table(self._entries) if not self._live else None

    def _current(self):
        if not self._live:
            return self._table
        tables = tuple(live.table() for live in self._live)
        if self._seen is None or any(a is not b for a, b in zip(tables, self._seen, strict=True)):
            merged = []
            for entry in self._entries:
                merged.extend(entry.table().users.values() if isinstance(entry, LiveUsers) else (entry,))
            self._table, self._seen = _Table(merged), tables
        return self._table

    def __len__(self):
        return len(self._current().users)

    def check(self, username, password):
        """The matching :class:`User`, or None."""
        user = self._current().users.get(username or "")
        expected = user.password.encode() if user else _NO_SUCH_USER
        ok = hmac.compare_digest((password or "").encode(), expected)
        return user if ok and user is not None else None

    def may_bind(self, username, tunnel_key):
        """Whether ``username`` may register connections for this tunnel."""
        owners = self._current().owners.get(tunnel_key)
        return owners is None or username in owners


class AutherStore:
    """The one :class:`LiveUsers` of each named auther with sources, across reloads.

    At :meth:`commit` the tables of the new configuration follow the one
    kept under their name (the first such table becomes it), so authers
    still held from an older configuration (the admin endpoints live as
    long as the process) see what the new refreshers read.
    """

    def __init__(self):
        self._live = {}

    def commit(self, configs):
        """Make ``configs`` (every AutherConfig of the new configuration) live."""
        names = set()
        for config in configs:
            if config.live is None:
                continue
            names.add(config.name)
            kept = self._live.setdefault(config.name, config.live)
            config.live.follow(kept)
        for name in set(self._live) - names:
            del self._live[name]

    def get(self, name):
        return self._live.get(name)


def authorized(auther, username, password):
    """The user for these credentials; True when no auth is configured; None if refused."""
    if auther is None:
        return True
    return auther.check(username, password)


def parse_users(text, where, parse_tunnel):
    """Users from text, ``user password [uuid,uuid...]`` per line, ``#`` comments;
    ValueError names ``where`` and the line."""
    users = []
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 3:
            raise ValueError("%s:%d: expected 'user password [uuid,...]'" % (where, number))
        tunnels = frozenset()
        if len(fields) == 3:
            try:
                tunnels = frozenset(parse_tunnel(t).key for t in fields[2].split(",") if t)
            except ValueError as exc:
                raise ValueError("%s:%d: %s" % (where, number, exc)) from None
        users.append(User(fields[0], fields[1] if len(fields) > 1 else "", tunnels))
    return users


def load_users_file(path, parse_tunnel):
    """Users from a file (:func:`parse_users`); OSError if unreadable, ValueError names the line."""
    try:
        text = read_text(path)
    except ValueError as exc:
        raise ValueError("%s: %s" % (path, exc)) from None
    return parse_users(text, path, parse_tunnel)
