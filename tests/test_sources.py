"""Live ingress and auther sources (file, redis, http + reload), through a real Runtime.

Redis is a real redis-server (the ``redis_server`` fixture); the HTTP source
is a small gevent server on loopback.  Periods are short (0.2 s) and every
wait is bounded.
"""

import copy
import logging
import time

import gevent
import pytest
from gevent import ssl
from gevent.server import StreamServer

from gostgev.auth import Auther, AutherStore, LiveUsers, User
from gostgev.codec import relay
from gostgev.components import build_config
from gostgev.config.model import HTTPSourceConfig
from gostgev.errors import ConfigError
from gostgev.ingress import Ingress, Rule, parse_endpoint, parse_rule_host
from gostgev.runtime import Runtime
from gostgev.sources import INGRESS, HTTPSource, SourceError
from tests.conftest import connect, holds_for, http_get, name_responder, read_request_head, recv_all, wait_until
from tests.handler.test_tunnel import TUNNEL_A, TUNNEL_B, client_config, server_config

PERIOD = "0.2s"
UUID_C = "22f43305-5c5d-4a5b-9d1a-3a4d5e6f7a8b"


def hosts(ingress):
    """{hostname: endpoint text} of a live ingress."""
    return {rule.hostname: str(rule.endpoint) for rule in ingress.rules}


class Running:
    """A Runtime over a raw config dict the test may edit (``reload()`` reads it again)."""

    def __init__(self, raw, base_dir="."):
        self.raw, self.base_dir = raw, base_dir
        self.runtime = Runtime(self._load, grace=1)
        self.runtime.start(self._load([]))

    def _load(self, warnings):
        return build_config(copy.deepcopy(self.raw), warnings, base_dir=self.base_dir)

    def ingress(self, name="ingress-0"):
        return self.runtime.context.ingresses.get(name)

    def users(self, name="auther-0"):
        return {u.username: u.password for u in self.runtime.context.authers.get(name).users}


@pytest.fixture
def running():
    made = []

    def make(raw, base_dir="."):
        made.append(Running(raw, base_dir))
        return made[-1]

    yield make
    for item in made:
        item.runtime.stop(0)


class Body:
    """An HTTP source on loopback: answers every GET with ``status`` and ``text``."""

    def __init__(self, text="", status=200):
        self.text, self.status, self.requests = text, status, 0
        self.server = StreamServer(("127.0.0.1", 0), self._handle)
        self.server.start()
        self.url = "http://127.0.0.1:%d/rules" % self.server.address[1]

    def _handle(self, sock, _address):
        if read_request_head(sock):
            self.requests += 1
            body = self.text.encode()
            sock.sendall(b"HTTP/1.1 %d X\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                         % (self.status, len(body), body))


@pytest.fixture
def http_body():
    made = []

    def make(text="", status=200):
        made.append(Body(text, status))
        return made[-1]

    yield make
    for body in made:
        body.server.stop(timeout=1)


def ingress_raw(**sources):
    return {"services": [], "ingresses": [{"name": "ingress-0", "reload": PERIOD,
                                           "rules": [{"hostname": "inline.local", "endpoint": TUNNEL_A}],
                                           **sources}]}


# -- configuration ------------------------------------------------------------------

@pytest.mark.parametrize("section, path", [
    ({"reload": "soon"}, "ingresses[0].reload"),
    ({"reload": "-1s"}, "ingresses[0].reload"),
    ({"file": {}}, "ingresses[0].file.path"),
    ({"file": {"pat": "x"}}, "ingresses[0].file.pat"),
    ({"http": {"url": "ftp://host/rules"}}, "ingresses[0].http.url"),
    ({"http": {"url": "http://host/rules", "timeout": "x"}}, "ingresses[0].http.timeout"),
    ({"redis": {"addr": "127.0.0.1:6379", "type": "list"}}, "ingresses[0].redis.type"),
    ({"redis": {"key": "k"}}, "ingresses[0].redis.addr"),
])
def test_bad_source_keys_name_their_path(section, path):
    with pytest.raises(ConfigError) as info:
        build_config({"services": [], "ingresses": [{"name": "i", **section}]}, [])
    assert info.value.path == path
    raw = {"services": [], "authers": [{"name": "a", **section}]}
    with pytest.raises(ConfigError) as info:
        build_config(raw, [])
    assert info.value.path == path.replace("ingresses", "authers")


def test_sources_are_parsed_and_plugin_is_warned(tmp_path):
    warnings = []
    config = build_config({"services": [], "ingresses": [{
        "name": "ingress-0", "reload": "10s", "file": {"path": "rules.txt"},
        "redis": {"addr": "127.0.0.1:6380", "type": "set"}, "http": {"url": "https://h/r", "timeout": "3s"},
        "plugin": {"type": "http"}}], "authers": [{"name": "a", "redis": {"addr": "127.0.0.1"}}]},
        warnings, base_dir=str(tmp_path))
    sources = config.ingresses[0].sources
    assert sources.reload == 10.0 and sources.file == str(tmp_path / "rules.txt")
    assert (sources.redis.key, sources.redis.type) == ("gost:ingresses:ingress-0", "set")
    assert (sources.http.url, sources.http.timeout) == ("https://h/r", 3.0)
    assert warnings == ["ingresses[0].plugin: not supported by gostgev, ignored"]
    auther = config.authers[0]
    assert (auther.sources.redis.key, auther.sources.redis.type) == ("gost:authers:a", "hash")
    assert auther.live is not None


def test_a_lone_file_without_reload_is_read_at_load(tmp_path):
    (tmp_path / "rules.txt").write_text("# comment\nfile.local %s  # trailing\n" % TUNNEL_B)
    config = build_config({"services": [], "ingresses": [{"name": "i", "file": {"path": "rules.txt"}}]},
                          [], base_dir=str(tmp_path))
    assert config.ingresses[0].sources is None
    assert [r.hostname for r in config.ingresses[0].rules] == ["file.local"]
    (tmp_path / "rules.txt").write_text("file.local\n")
    with pytest.raises(ConfigError, match=r"ingresses\[0\]\.file\.path: .*rules.txt:1: expected 'hostname endpoint'"):
        build_config({"services": [], "ingresses": [{"name": "i", "file": {"path": "rules.txt"}}]},
                     [], base_dir=str(tmp_path))


# -- the sources ----------------------------------------------------------------------

def test_a_file_change_applies_within_one_period(running, tmp_path):
    rules = tmp_path / "rules.txt"
    rules.write_text("a.local %s\n" % TUNNEL_A)
    state = running(ingress_raw(file={"path": str(rules)}))
    assert hosts(state.ingress()) == {"inline.local": TUNNEL_A, "a.local": TUNNEL_A}
    rules.write_text("b.local $%s\n" % TUNNEL_B)
    assert wait_until(lambda: hosts(state.ingress()) == {"inline.local": TUNNEL_A, "b.local": "$" + TUNNEL_B}, 2)


@pytest.mark.parametrize("kind", ["hash", "set"])
def test_redis_sources(running, redis_server, kind):
    key = "gost:ingresses:ingress-0"
    if kind == "hash":
        redis_server.command("HSET", key, "r.local", TUNNEL_B)
    else:
        redis_server.command("SADD", key, "r.local %s" % TUNNEL_B, "# a comment member")
    state = running(ingress_raw(redis={"addr": redis_server.addr, "type": kind}))
    assert hosts(state.ingress()) == {"inline.local": TUNNEL_A, "r.local": TUNNEL_B}
    if kind == "hash":
        redis_server.command("HSET", key, "s.local", UUID_C)
        redis_server.command("HDEL", key, "r.local")
    else:
        redis_server.command("SADD", key, "s.local %s" % UUID_C)
        redis_server.command("SREM", key, "r.local %s" % TUNNEL_B)
    assert wait_until(lambda: hosts(state.ingress()) == {"inline.local": TUNNEL_A, "s.local": UUID_C}, 2)


def test_an_http_source_and_its_non_200_answers(running, http_body, caplog):
    body = http_body("h.local %s\n" % TUNNEL_B)
    state = running(ingress_raw(http={"url": body.url, "timeout": "1s"}))
    assert hosts(state.ingress()) == {"inline.local": TUNNEL_A, "h.local": TUNNEL_B}
    body.status = 500
    body.text = "i.local %s\n" % TUNNEL_B
    assert wait_until(lambda: "HTTP 500" in caplog.text, 2)
    assert hosts(state.ingress())["h.local"] == TUNNEL_B     # the last good answer stays
    body.status = 200
    assert wait_until(lambda: "i.local" in hosts(state.ingress()), 2)
    assert "h.local" not in hosts(state.ingress())


def test_precedence_http_over_redis_over_file_over_inline(running, redis_server, http_body, tmp_path):
    (tmp_path / "rules.txt").write_text("inline.local %s\nfile.local %s\nall.local %s\n" % ((TUNNEL_B,) * 3))
    redis_server.command("HSET", "gost:ingresses:ingress-0", "file.local", UUID_C)
    redis_server.command("HSET", "gost:ingresses:ingress-0", "all.local", UUID_C)
    body = http_body("all.local $%s\n" % TUNNEL_A)
    state = running(ingress_raw(file={"path": str(tmp_path / "rules.txt")}, redis={"addr": redis_server.addr},
                                http={"url": body.url}))
    assert hosts(state.ingress()) == {"inline.local": TUNNEL_B, "file.local": UUID_C, "all.local": "$" + TUNNEL_A}


def test_a_failing_source_keeps_its_last_good_entries_and_warns_once_per_period(running, tmp_path, caplog):
    rules = tmp_path / "rules.txt"
    rules.write_text("a.local %s\n" % TUNNEL_A)
    state = running(ingress_raw(file={"path": str(rules)}))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="gostgev.sources"):
        rules.write_text("a.local %s\nnot-a-rule\n" % TUNNEL_B)
        assert wait_until(lambda: "rules.txt:2: expected 'hostname endpoint'" in caplog.text, 2)
        started = len([r for r in caplog.records if r.levelno == logging.WARNING])
        gevent.sleep(1.0)   # the window in which warnings are counted: about five periods
        warned = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert 2 <= len(warned) - started <= 7, [r.getMessage() for r in warned]
        assert all(r.exc_info is None and "keeping what it gave last" in r.getMessage() for r in warned)
        assert hosts(state.ingress())["a.local"] == TUNNEL_A
        rules.write_text("a.local %s\n" % TUNNEL_B)
        assert wait_until(lambda: hosts(state.ingress())["a.local"] == TUNNEL_B, 2)
        assert holds_for(lambda: caplog.text.count("file source is back") == 1, 0.5)


def test_redis_going_away_and_coming_back(running, redis_server, caplog):
    caplog.set_level(logging.INFO, logger="gostgev.sources")
    redis_server.command("HSET", "gost:ingresses:ingress-0", "r.local", TUNNEL_B)
    state = running(ingress_raw(redis={"addr": redis_server.addr}))
    redis_server.stop()
    assert wait_until(lambda: "redis source failed" in caplog.text, 3)
    assert hosts(state.ingress())["r.local"] == TUNNEL_B
    redis_server.start()        # empty: nothing is saved to disk
    redis_server.command("HSET", "gost:ingresses:ingress-0", "back.local", UUID_C)
    assert wait_until(lambda: hosts(state.ingress()) == {"inline.local": TUNNEL_A, "back.local": UUID_C}, 5)
    assert "redis source is back" in caplog.text


def test_a_source_down_at_start_does_not_stop_the_start(running, http_body, caplog):
    body = http_body("late.local %s\n" % TUNNEL_B, status=503)
    state = running(ingress_raw(http={"url": body.url}))
    assert hosts(state.ingress()) == {"inline.local": TUNNEL_A}
    assert "going on without it" in caplog.text
    body.status = 200
    assert wait_until(lambda: "late.local" in hosts(state.ingress()), 2)


# -- API edits, reloads, stopping ------------------------------------------------------

def rule(host, endpoint):
    return Rule(parse_rule_host(host), parse_endpoint(endpoint))


def test_api_edits_stay_on_top_of_refreshes_until_a_reload_changes_the_ingress():
    ingress = Ingress("i", [rule("a.local", TUNNEL_A), rule("b.local", TUNNEL_A)])
    ingress.set_rule(rule("a.local", TUNNEL_B))
    ingress.set_rule(rule("api.local", TUNNEL_B))
    assert ingress.remove_rule("b.local").endpoint == parse_endpoint(TUNNEL_A)
    ingress.refresh([rule("a.local", UUID_C), rule("b.local", UUID_C), rule("c.local", UUID_C)])
    assert hosts(ingress) == {"a.local": TUNNEL_B, "c.local": UUID_C, "api.local": TUNNEL_B}
    ingress.set_rule(rule("b.local", TUNNEL_A))       # set again: the deletion is forgotten
    ingress.remove_rule("b.local")
    assert ingress.lookup("b.local") is None
    ingress.replace([rule("a.local", UUID_C), rule("b.local", UUID_C)])
    assert hosts(ingress) == {"a.local": UUID_C, "b.local": UUID_C}


def test_reload_replaces_refreshers_a_refused_one_keeps_them_and_stop_ends_them(running, tmp_path):
    rules = tmp_path / "rules.txt"
    rules.write_text("a.local %s\n" % TUNNEL_A)
    state = running(ingress_raw(file={"path": str(rules)}))
    first = state.runtime.sources.refreshers()
    assert state.runtime.reload()[0]
    second = state.runtime.sources.refreshers()
    assert first.keys() == second.keys() and all(first[k] is not second[k] for k in first)
    assert all(r._greenlet is None for r in first.values())
    state.raw["ingresses"][0]["reload"] = "never"
    assert not state.runtime.reload()[0]
    assert state.runtime.sources.refreshers() == second
    greenlets = [r._greenlet for r in second.values()]
    assert all(not g.dead for g in greenlets)
    state.runtime.stop(0)
    assert all(g.dead for g in greenlets) and state.runtime.sources.refreshers() == {}


def test_a_changed_ingress_drops_api_edits_and_a_same_one_keeps_them(running, tmp_path):
    rules = tmp_path / "rules.txt"
    rules.write_text("a.local %s\n" % TUNNEL_A)
    state = running(ingress_raw(file={"path": str(rules)}))
    state.ingress().set_rule(rule("api.local", TUNNEL_B))
    assert state.runtime.reload()[0]
    assert "api.local" in hosts(state.ingress())
    state.raw["ingresses"][0]["reload"] = "0.3s"
    assert state.runtime.reload()[0]
    assert hosts(state.ingress()) == {"inline.local": TUNNEL_A, "a.local": TUNNEL_A}


# -- authers ---------------------------------------------------------------------------

def test_live_users_follow_the_kept_table_and_merge_in_order():
    old, new = LiveUsers("a", [User("u", "old")]), LiveUsers("a", [User("u", "new")])
    store = AutherStore()
    store.commit([type("C", (), {"name": "a", "live": old})()])
    held = Auther([User("u", "single"), User("x", "x"), old])       # e.g. the API's, from the first config
    current = Auther([new, User("x", "later")])
    store.commit([type("C", (), {"name": "a", "live": new})()])
    assert held.check("u", "old") and current.check("u", "old") and current.check("x", "later")
    store.get("a").replace([User("u", "fresh", frozenset({b"k" * 16}))])
    assert held.check("u", "fresh") and current.check("u", "fresh") and not held.check("u", "old")
    assert current.may_bind("u", b"k" * 16) and not current.may_bind("x", b"k" * 16)
    assert len(held) == 2


def test_a_tunnel_client_authenticates_with_a_user_added_in_redis(running, start_services, redis_server, backend):
    site = backend(name_responder("site"))
    raw = server_config([("site.local", TUNNEL_A)])
    raw["services"][0]["handler"]["auther"] = "auther-0"
    raw["authers"] = [{"name": "auther-0", "auths": [{"username": "admin", "password": "x"}],
                       "redis": {"addr": redis_server.addr}, "reload": PERIOD}]
    state = running(raw)
    server = state.runtime.services["server"]
    port, entrypoint = server.address[1], server.handler.entrypoints[0].address[1]

    def bind(password):
        with connect(port) as sock:
            sock.sendall(relay.Request(cmd=relay.BIND, addrs=("127.0.0.1:1", ":0"), username="tom",
                                       password=password, tunnel_id=relay.TunnelID.parse(UUID_C)).encode())
            return recv_all(sock)

    unauthorized = relay.Response(relay.UNAUTHORIZED).encode()
    assert bind("pw") == unauthorized
    client = client_config("c", port, TUNNEL_A, [{"name": "n", "addr": site.addr}])
    client["chains"][0]["hops"][0]["nodes"][0]["connector"]["auth"] = {"username": "tom", "password": "pw"}
    redis_server.command("HSET", "gost:authers:auther-0", "tom", "pw")
    assert wait_until(lambda: state.users() == {"admin": "x", "tom": "pw"}, 2)
    start_services(client)
    assert wait_until(lambda: http_get(entrypoint, "site.local")[0] == 200, 10)
    redis_server.command("HDEL", "gost:authers:auther-0", "tom")
    assert wait_until(lambda: bind("pw") == unauthorized, 2)


def test_an_https_source_verifies_the_certificate_without_blocking(cert_files):
    """The handshake runs in gevent (the server here is in this process) and an untrusted
    certificate is a failed read, not a hang."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*cert_files)

    def handle(sock, _address):
        try:
            context.wrap_socket(sock, server_side=True).recv(4096)
        except OSError:
            pass            # the client refuses the certificate

    server = StreamServer(("127.0.0.1", 0), handle)
    server.start()
    try:
        source = HTTPSource(HTTPSourceConfig(url="https://127.0.0.1:%d/r" % server.address[1], timeout=5))
        started = time.monotonic()
        with pytest.raises(SourceError, match="certificate verify failed"):
            source.read(INGRESS)
        assert time.monotonic() - started < 2
    finally:
        server.stop(timeout=1)
