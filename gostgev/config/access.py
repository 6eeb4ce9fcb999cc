"""Config sections about who may do what: authers, admissions, connection
limiters, ingress rules and TLS files.  Each returns the typed value the
model holds, or raises :class:`ConfigError` naming the key.
"""

import os
from urllib.parse import urlsplit

from gostgev.addr import parse_addr
from gostgev.auth import Auther, LiveUsers, User, parse_users
from gostgev.codec.relay import TunnelID
from gostgev.config.model import (
    AuthConfig,
    AutherConfig,
    HTTPSourceConfig,
    IngressConfig,
    RedisConfig,
    SDConfig,
    SourcesConfig,
    TLSConfig,
)
from gostgev.errors import ConfigError
from gostgev.ingress import Rule, parse_endpoint, parse_rule_host, parse_rules
from gostgev.limits import Admission, BandwidthLimiter, ConnLimiter, RateLimiter, parse_network
from gostgev.textfile import read_text


def section_refs(sec, keys, table, kind):
    """Components named by ``kind: name`` or ``kinds: [names]``; errors for unknown names."""
    found = []
    for key in keys:
        value = sec.raw(key)
        if value is None:
            continue
        names = value if isinstance(value, list) else [value]
        for name in names:
            if str(name) not in table:
                raise ConfigError(sec.key_path(key), "no %s named %r in %ss" % (kind, name, kind))
            found.append(table[str(name)])
    if len(found) > 1 and kind != "auther":
        raise ConfigError(sec.key_path(keys[-1]), "only one %s per service is supported" % kind)
    return found


def handler_auther(sec, authers):
    users = []
    single = parse_auth(sec.section("auth"))
    if single is not None:
        users.append(User(single.username, single.password))
    for auther in section_refs(sec, ("auther", "authers"), authers, "auther"):
        if auther.live is not None:
            users.append(auther.live)     # its inline users and what its sources read, kept up to date
        else:
            users.extend(auther.users)
    return Auther(users) if users else None


def parse_auther(sec, name, env):
    """A named auther: inline ``auths``, then the users ``file`` (read now when it is the only
    source and there is no ``reload``), or live sources the runtime reads."""
    users = []
    for entry in sec.sections("auths"):
        username = entry.str("username") or ""
        tunnels = entry.raw("tunnels", [])
        try:
            keys = frozenset(TunnelID.parse(str(t)).key for t in (tunnels if isinstance(tunnels, list) else [tunnels]))
        except ValueError as exc:
            raise ConfigError(entry.key_path("tunnels"), str(exc)) from None
        users.append(User(username, entry.str("password") or "", keys))
        entry.finish()
    static, sources = parse_sources(sec, env, "gost:authers:" + name,
                                    lambda text, where: parse_users(text, where, TunnelID.parse))
    users.extend(static)
    sec.unsupported("plugin")
    sec.finish()
    live = LiveUsers(name, users) if sources is not None else None
    return AutherConfig(name=name, users=tuple(users), sources=sources, live=live)


def parse_admission(sec, name):
    networks = []
    matchers = sec.raw("matchers", [])
    for i, text in enumerate(matchers if isinstance(matchers, list) else [matchers]):
        try:
            networks.append(parse_network(str(text)))
        except ValueError:
            raise ConfigError("%s[%d]" % (sec.key_path("matchers"), i), "not an IP or CIDR: %r" % text) from None
    whitelist = sec.bool("whitelist", False) or sec.bool("reverse", False)
    sec.unsupported("file", "redis", "http", "plugin", "reload")
    sec.finish()
    return Admission(networks, whitelist=whitelist)


def parse_climiter(sec, name, limiter=ConnLimiter):
    """A ``climiters`` entry (or, with ``limiter=RateLimiter``, an ``rlimiters`` one): its
    ``limits`` strings, checked."""
    limits = sec.raw("limits", [])
    limits = tuple(str(x) for x in (limits if isinstance(limits, list) else [limits]))
    try:
        limiter.parse(limits)
    except ValueError as exc:
        raise ConfigError(sec.key_path("limits"), str(exc)) from None
    sec.unsupported("file", "redis", "http", "plugin", "reload")
    sec.finish()
    return limits


def parse_rlimiter(sec, name):
    return parse_climiter(sec, name, RateLimiter)


def parse_limiter(sec, name):
    return parse_climiter(sec, name, BandwidthLimiter)


def parse_auth(sec):
    if sec is None:
        return None
    username, password = sec.str("username") or "", sec.str("password") or ""
    sec.finish()
    return AuthConfig(username=username, password=password)


def parse_ingress(sec, name, env):
    rules = []
    for rule in sec.sections("rules"):
        try:
            hostname = parse_rule_host(rule.str("hostname"))
        except ValueError as exc:
            raise ConfigError(rule.key_path("hostname"), str(exc)) from None
        try:
            endpoint = parse_endpoint(rule.str("endpoint") or "")
        except ValueError as exc:
            raise ConfigError(rule.key_path("endpoint"), "%s (want a tunnel UUID, or $UUID)" % exc) from None
        rule.finish()
        rules.append(Rule(hostname, endpoint))
    static, sources = parse_sources(sec, env, "gost:ingresses:" + name, parse_rules)
    rules.extend(static)
    sec.unsupported("plugin")
    sec.finish()
    return IngressConfig(name=name, rules=tuple(rules), sources=sources)


def parse_sources(sec, env, default_key, parse_text):
    """The ``file``, ``redis``, ``http`` and ``reload`` keys of a named ingress or auther:
    ``(entries read now, SourcesConfig or None)``.

    A ``file`` that is the only source, without ``reload``, is part of the
    configuration: it is read here, and a missing or malformed file is a
    ConfigError.  Otherwise the sources are live: the runtime reads them at
    start, at each reload and every ``reload`` period, and a source that
    fails keeps what it gave last.  ``parse_text(text, where)`` turns a file's
    text into entries (ValueError naming the line).
    """
    period = sec.duration("reload", 0.0)
    path = None
    file_sec = sec.section("file")
    if file_sec is not None:
        path = file_sec.str("path")
        if not path:
            raise file_sec.missing("path", "the path of the file is required")
        path = os.path.join(env.base_dir, path)
        file_sec.finish()
    redis = parse_redis(sec.section("redis"), env, default_key, ("hash", "set"))
    http = _http_source(sec.section("http"))
    if redis is None and http is None and not period:
        if path is None:
            return [], None
        try:
            return parse_text(read_text(path), path), None
        except OSError as exc:
            raise ConfigError(file_sec.key_path("path"), "%s: %s" % (path, exc.strerror)) from None
        except ValueError as exc:
            message = str(exc)
            raise ConfigError(file_sec.key_path("path"),
                              message if message.startswith(path) else "%s: %s" % (path, message)) from None
    if path is None and redis is None and http is None:
        return [], None         # a reload period and nothing to read again
    return [], SourcesConfig(file=path, redis=redis, http=http, reload=period)


def _http_source(sec):
    if sec is None:
        return None
    url = sec.str("url")
    if not url:
        raise sec.missing("url", "the URL is required (http:// or https://)")
    try:
        parts = urlsplit(url)
        parts.port     # noqa: B018 -- raises ValueError for a bad port
    except ValueError as exc:
        raise ConfigError(sec.key_path("url"), "invalid URL %r: %s" % (url, exc)) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(sec.key_path("url"), "want an http:// or https:// URL, got %r" % url)
    timeout = sec.duration("timeout", 0.0) or 10.0
    sec.finish()
    return HTTPSourceConfig(url=url, timeout=timeout)


def parse_tls(sec, env):
    """A ``tls`` block; files are checked here so a typo is a config error, not a crash later."""
    if sec is None:
        return None
    files = {}
    for key in ("certFile", "keyFile", "caFile"):
        path = sec.str(key)
        if path:
            path = os.path.join(env.base_dir, path)
            if not os.path.isfile(path):
                raise ConfigError(sec.key_path(key), "no such file: %s" % path)
        files[key] = path
    if bool(files["certFile"]) != bool(files["keyFile"]):
        raise ConfigError(sec.path, "certFile and keyFile go together")
    try:
        env.components.check_tls(files["certFile"], files["keyFile"], files["caFile"])
    except ValueError as exc:
        raise ConfigError(sec.path, str(exc).removeprefix("tls: ")) from None
    config = TLSConfig(cert_file=files["certFile"], key_file=files["keyFile"], ca_file=files["caFile"],
                       server_name=sec.str("serverName"), secure=sec.bool("secure", False))
    sec.unsupported("options", "validity", "commonName", "organization")
    sec.finish()
    return config


def parse_redis(sec, env, default_key, types=("set", "hash")):
    """A ``redis`` block (``addr``, ``db``, ``username``, ``password``, ``key``, ``type``, ``tls``)."""
    if sec is None:
        return None
    addr = sec.str("addr")
    if not addr:
        raise sec.missing("addr", "the Redis address is required (host:port)")
    try:
        parse_addr(addr, default_port=6379)
    except ValueError as exc:
        raise ConfigError(sec.key_path("addr"), str(exc)) from None
    kind = sec.str("type") or types[0]
    if kind not in types:
        raise ConfigError(sec.key_path("type"), "want one of %s, got %r" % (", ".join(types), kind))
    tls = sec.raw("tls")
    if tls is True:
        tls_config = TLSConfig()
    elif tls in (None, False):
        tls_config = None
    else:
        tls_config = parse_tls(sec.section("tls"), env)
    config = RedisConfig(addr=addr, db=sec.int("db", 0, minimum=0), username=sec.str("username") or "",
                         password=sec.str("password") or "", key=sec.str("key") or default_key,
                         type=kind, tls=tls_config)
    sec.finish()
    return config


def parse_sd(sec, name, env):
    """An ``sds`` entry: ``redis`` (built in) or GOST's ``plugin: {type: http, addr, timeout}``."""
    redis_sec, plugin = sec.section("redis"), sec.section("plugin")
    if (redis_sec is None) == (plugin is None):
        raise ConfigError(sec.path, "give either redis or plugin (type http)")
    if redis_sec is not None:
        config = SDConfig(name=name, redis=parse_redis(redis_sec, env, "gostgev:sd", types=("set",)))
    else:
        kind = (plugin.str("type") or "grpc").lower()
        if kind != "http":
            raise ConfigError(plugin.key_path("type"), "only the http plugin is supported, got %r" % kind)
        addr = plugin.str("addr") or ""
        if not addr.startswith(("http://", "https://")):
            raise ConfigError(plugin.key_path("addr"), "want an http:// or https:// URL, got %r" % addr)
        timeout = plugin.duration("timeout", 5.0)
        if timeout <= 0:
            raise ConfigError(plugin.key_path("timeout"), "must be positive")
        plugin.unsupported("token", "tls")
        plugin.finish()
        config = SDConfig(name=name, plugin_addr=addr, plugin_timeout=timeout)
    sec.finish()
    return config
