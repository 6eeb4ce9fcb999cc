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

Passwords are compared in constant time, and the lookup does the same work
for unknown users, so timing tells nothing about which names exist.
GOST lets an empty password in an auther accept any password; here an empty
password must be sent empty.
"""

import hmac
from dataclasses import dataclass

from gostgev.textfile import read_text

__all__ = ["User", "Auther", "authorized", "load_users_file"]

# Compared against when the user does not exist, so both paths cost the same.
_NO_SUCH_USER = b"\x00" * 32


@dataclass(frozen=True, slots=True)
class User:
    username: str
    password: str
    tunnels: frozenset = frozenset()   #: TunnelID keys (16 bytes) this user owns


class Auther:
    def __init__(self, users=()):
        self._users = {}
        self._owners = {}
        for user in users:
            self._users[user.username] = user
        for user in self._users.values():
            for key in user.tunnels:
                self._owners.setdefault(key, set()).add(user.username)

    def __len__(self):
        return len(self._users)

    def check(self, username, password):
        """The matching :class:`User`, or None."""
        user = self._users.get(username or "")
        expected = user.password.encode() if user else _NO_SUCH_USER
        ok = hmac.compare_digest((password or "").encode(), expected)
        return user if ok and user is not None else None

    def may_bind(self, username, tunnel_key):
        """Whether ``username`` may register connections for this tunnel."""
        owners = self._owners.get(tunnel_key)
        return owners is None or username in owners


def authorized(auther, username, password):
    """The user for these credentials; True when no auth is configured; None if refused."""
    if auther is None:
        return True
    return auther.check(username, password)


def load_users_file(path, parse_tunnel):
    """Users from a file: ``user password [uuid,uuid...]`` per line; ValueError names the line."""
    users = []
    try:
        text = read_text(path)
    except ValueError as exc:
        raise ValueError("%s: %s" % (path, exc)) from None
    for number, line in enumerate(text.splitlines(), 1):
        fields = line.split("#", 1)[0].split()
        if not fields:
            continue
        if len(fields) > 3:
            raise ValueError("%s:%d: expected 'user password [uuid,...]'" % (path, number))
        tunnels = frozenset()
        if len(fields) == 3:
            try:
                tunnels = frozenset(parse_tunnel(t).key for t in fields[2].split(",") if t)
            except ValueError as exc:
                raise ValueError("%s:%d: %s" % (path, number, exc)) from None
        users.append(User(fields[0], fields[1] if len(fields) > 1 else "", tunnels))
    return users
