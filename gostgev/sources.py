"""Live sources of ingress rules and auther users: GOST's ``file``, ``redis`` and ``http``.

A named ingress or auther may read entries, besides its inline ones, from

* ``file``: ``hostname endpoint`` (``user password [uuid,...]``) per line,
  ``#`` comments;
* ``redis``: a ``hash`` (field = host name, value = endpoint; field = user
  name, value = password) or a ``set`` whose members are lines of the file
  format;
* ``http``: a GET whose ``200`` answer is a body in the file format.

A :class:`Refresher` reads them at start, at each reload of the
configuration and every ``reload`` period, merges them over the inline
entries (for an equal host or user name: http > redis > file > inline) and
replaces the live table whole: the ingress's configured rules
(:meth:`gostgev.ingress.Ingress.refresh`, which keeps the API's edits on
top) or the auther's users (:meth:`gostgev.auth.LiveUsers.replace`).

A source that fails (unreachable, a malformed line, an answer other than
200) keeps what it gave last; each failed read logs one warning, so at
most one per period, and the first good read after failures logs once at
info.  A source that is down at start does not stop the start: the others
are used meanwhile.

Everything here is gevent I/O: the file is read at once (regular files of
bounded size only), Redis through :mod:`gostgev.redisconn`, HTTP with
:mod:`http.client` on gevent sockets, all bounded in time.
"""

import logging

import gevent

from gostgev import redisconn
from gostgev.auth import User, parse_users
from gostgev.codec.relay import TunnelID
from gostgev.httpclient import HttpError
from gostgev.httpclient import request as http_request
from gostgev.ingress import Rule, parse_endpoint, parse_rule_host, parse_rules
from gostgev.textfile import MAX_TEXT_FILE, read_text

__all__ = ["SourceError", "Kind", "INGRESS", "AUTHER", "FileSource", "RedisSource", "HTTPSource",
           "Refresher", "Sources", "MIN_PERIOD"]

log = logging.getLogger("gostgev.sources")

#: shortest period between two reads of a source, whatever ``reload`` says
MIN_PERIOD = 0.1


class SourceError(Exception):
    """A source could not be read, or what it gave is not valid."""


class Kind:
    """What a source's entries are: how text and key/value pairs parse, and what an entry's key is."""

    def __init__(self, what, parse_text, parse_pair, key):
        self.what = what                #: "ingress" or "auther"
        self.parse_text = parse_text    #: (text, where) -> entries; ValueError names the line
        self.parse_pair = parse_pair    #: (field, value) -> entry, for a Redis hash; ValueError
        self.key = key                  #: entry -> its host or user name


INGRESS = Kind("ingress", parse_rules, lambda host, endpoint: Rule(parse_rule_host(host), parse_endpoint(endpoint)),
               lambda rule: rule.hostname)
AUTHER = Kind("auther", lambda text, where: parse_users(text, where, TunnelID.parse),
              lambda username, password: User(username, password), lambda user: user.username)


def _reason(exc):
    return str(exc) or type(exc).__name__


class FileSource:
    name = "file"

    def __init__(self, path):
        self.spec = ("file", path)
        self.path = path

    def read(self, kind):
        try:
            text = read_text(self.path)
        except OSError as exc:
            raise SourceError("%s: %s" % (self.path, exc.strerror or _reason(exc))) from None
        except ValueError as exc:
            raise SourceError("%s: %s" % (self.path, exc)) from None
        try:
            return kind.parse_text(text, self.path)
        except ValueError as exc:
            raise SourceError(str(exc)) from None

    def close(self):
        pass


class RedisSource:
    name = "redis"

    def __init__(self, config):
        self.spec = ("redis", config)
        self.config = config
        self.where = "redis %s key %s" % (config.addr, config.key)
        self._client = None

    def read(self, kind):
        if self._client is None:
            self._client = redisconn.client(self.config)
        key = self.config.key
        try:
            if self.config.type == "hash":
                data = self._client.hgetall(key)
            else:
                data = self._client.smembers(key)
        except redisconn.RedisError as exc:
            raise SourceError("%s: %s" % (self.where, _reason(exc))) from None
        entries = []
        if self.config.type == "hash":
            for field, value in sorted(data.items()):
                try:
                    entries.append(kind.parse_pair(field, value))
                except ValueError as exc:
                    raise SourceError("%s: field %r: %s" % (self.where, field[:80], exc)) from None
        else:
            for member in sorted(data):
                label = "%s: member %r" % (self.where, member[:80])
                try:
                    entries.extend(kind.parse_text(member, label))
                except ValueError as exc:
                    raise SourceError(str(exc).replace(label + ":1:", label + ":", 1)) from None
        return entries

    def close(self):
        if self._client is not None:
            self._client.connection_pool.disconnect()
            self._client = None


class HTTPSource:
    name = "http"

    def __init__(self, config):
        self.spec = ("http", config)
        self.config = config

    def read(self, kind):
        url = self.config.url
        try:
            status, reason, body = http_request("GET", url, timeout=self.config.timeout,
                                                headers={"Accept": "text/plain"}, max_body=MAX_TEXT_FILE)
        except HttpError as exc:
            raise SourceError(str(exc)) from None
        if status != 200:
            raise SourceError("%s: HTTP %d %s" % (url, status, reason))
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise SourceError("%s: not UTF-8 text" % url) from None
        try:
            return kind.parse_text(text, url)
        except ValueError as exc:
            raise SourceError(str(exc)) from None

    def close(self):
        pass


class _State:
    """A source and what it gave last."""

    def __init__(self, source):
        self.source = source
        self.good = None        #: the entries of the last good read, None before one
        self.failing = False


class Refresher:
    """Reads the sources of one ingress or auther and publishes the merged table.

    ``previous`` is the refresher this one replaces (a reload): a source
    whose configuration did not change starts with what it gave that one,
    so a source that is down during a reload keeps serving its last read.
    """

    def __init__(self, kind, name, inline, config, previous=None):
        self.kind, self.name = kind, name
        self.inline = tuple(inline)
        self.period = max(config.reload, MIN_PERIOD) if config.reload else 0.0
        sources = []      # lowest precedence first
        if config.file:
            sources.append(FileSource(config.file))
        if config.redis is not None:
            sources.append(RedisSource(config.redis))
        if config.http is not None:
            sources.append(HTTPSource(config.http))
        self.states = [_State(source) for source in sources]
        inherited = {state.source.spec: state for state in (previous.states if previous else ())}
        for state in self.states:
            old = inherited.get(state.source.spec)
            if old is not None:
                state.good, state.failing = old.good, old.failing
        self._publish_to = None
        self._published = None
        self._greenlet = None
        self._halted = False

    def describe(self, state):
        return "%s %s: %s source" % (self.kind.what, self.name, state.source.name)

    def read_all(self):
        """Read every source once; a failure is logged and leaves that source's last good entries."""
        for state in self.states:
            self._read(state)

    def _read(self, state):
        try:
            entries = state.source.read(self.kind)
        except SourceError as exc:
            self._failed(state, str(exc))
            return
        except Exception as exc:    # a bug must cost one read, not the refresher
            log.debug("%s: read failed", self.describe(state), exc_info=True)
            self._failed(state, "internal error: %r" % exc)
            return
        if state.failing:
            log.info("%s is back: %d entries", self.describe(state), len(entries))
        state.good, state.failing = entries, False

    def _failed(self, state, reason):
        state.failing = True
        keeping = "keeping what it gave last" if state.good is not None else "going on without it"
        log.warning("%s failed: %s; %s", self.describe(state), reason, keeping)

    def merged(self):
        """The inline entries, then each source's in precedence order; the later of equal keys wins."""
        table = {}
        for entry in self.inline:
            table[self.kind.key(entry)] = entry
        for state in self.states:
            for entry in state.good or ():
                table[self.kind.key(entry)] = entry
        return list(table.values())

    def start(self, publish_to):
        """Publish the merged table to ``publish_to(entries)`` now, and every period from now on."""
        self._publish_to = publish_to
        self._publish()
        if self.period:
            self._greenlet = gevent.spawn(self._run)

    def _publish(self):
        if self._halted:
            return
        entries = self.merged()
        if entries != self._published:
            self._published = entries
            self._publish_to(entries)

    def _run(self):
        while True:
            gevent.sleep(self.period)
            self.read_all()
            self._publish()

    def halt(self):
        """Never publish again (at once, without switching greenlets); :meth:`stop` ends the rest."""
        self._halted = True

    def stop(self):
        self._halted = True
        if self._greenlet is not None:
            self._greenlet.kill()
            self._greenlet = None
        for state in self.states:
            state.source.close()


class Sources:
    """The refreshers of the running configuration (one per ingress or auther with sources)."""

    def __init__(self):
        self._current = {}

    def prepare(self, config):
        """Refreshers for ``config``, every source read once; a :class:`Staged` to commit or abort.

        The reads run in parallel, each bounded by its source's timeout; a
        source that fails is logged and does not stop the others.
        """
        made = {}
        for ingress in config.ingresses:
            if ingress.sources is not None:
                key = ("ingress", ingress.name)
                made[key] = Refresher(INGRESS, ingress.name, ingress.rules, ingress.sources, self._current.get(key))
        for auther in config.authers:
            if auther.sources is not None:
                key = ("auther", auther.name)
                made[key] = Refresher(AUTHER, auther.name, auther.users, auther.sources, self._current.get(key))
        if made:
            gevent.joinall([gevent.spawn(refresher.read_all) for refresher in made.values()])
        return Staged(self, made)

    def refreshers(self):
        return dict(self._current)

    def stop(self):
        current, self._current = self._current, {}
        for refresher in current.values():
            refresher.stop()


class Staged:
    """Refreshers read once, not running yet."""

    def __init__(self, sources, made):
        self._sources = sources
        self._made = made

    def commit(self, ingresses, authers):
        """Stop the previous refreshers; publish to the live ingresses (an IngressStore) and
        auther tables (an AutherStore) and start the new ones."""
        previous, self._sources._current = self._sources._current, self._made
        # No greenlet switch until every new table is published: nothing in
        # between sees an ingress with its inline rules only.
        for refresher in previous.values():
            refresher.halt()
        for (what, name), refresher in self._made.items():
            if what == "ingress":
                refresher.start(ingresses.get(name).refresh)
            else:
                refresher.start(authers.get(name).replace)
        for refresher in previous.values():
            refresher.stop()

    def abort(self):
        for refresher in self._made.values():
            refresher.stop()
