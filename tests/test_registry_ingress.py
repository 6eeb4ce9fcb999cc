"""The tunnel registry and ingress rules, with fake connectors (no I/O)."""

import pytest

from gostgev.codec.relay import TunnelID
from gostgev.ingress import Ingress, Rule, parse_endpoint, parse_rule_host
from gostgev.tunnel import NoConnector, TunnelRegistry

A = "4d21094e-b74c-4916-86c1-d9fa36ea677b"
B = "ac74d9dd-3125-442a-a7c1-f9e49e05faca"


class FakeConnector:
    def __init__(self, name, weight=0, udp=False, fail=False):
        self.name, self.weight, self.udp, self.fail = name, weight, udp, fail
        self.closed = self.stalled = False
        self.opened = 0

    def open_stream(self):
        if self.fail:
            raise ConnectionError("session gone")
        self.opened += 1
        return "stream-from-" + self.name

    def __repr__(self):
        return self.name


def registry_with(*connectors, tunnel=A):
    registry = TunnelRegistry()
    for connector in connectors:
        registry.add(TunnelID.parse(tunnel), connector)
    return registry


def picks(registry, count, tunnel=A, network="tcp"):
    return [registry.open_stream(TunnelID.parse(tunnel), network)[1].name for _ in range(count)]


def test_equal_weights_are_plain_round_robin():
    registry = registry_with(FakeConnector("a"), FakeConnector("b"), FakeConnector("c"))
    assert picks(registry, 6) == ["a", "b", "c", "a", "b", "c"]


def test_weights_are_smooth():
    registry = registry_with(FakeConnector("a", weight=3), FakeConnector("b", weight=1))
    assert picks(registry, 8) == ["a", "a", "b", "a"] * 2


def test_weight_zero_counts_as_one():
    registry = registry_with(FakeConnector("a", weight=0), FakeConnector("b", weight=1))
    assert sorted(picks(registry, 4)) == ["a", "a", "b", "b"]


def test_weight_255_is_exclusive_while_it_lives():
    boss = FakeConnector("boss", weight=255)
    registry = registry_with(FakeConnector("a"), boss, FakeConnector("b"))
    assert picks(registry, 3) == ["boss"] * 3
    boss.closed = True
    assert sorted(picks(registry, 2)) == ["a", "b"]


def test_closed_connectors_are_skipped_and_pruned():
    a, b = FakeConnector("a"), FakeConnector("b")
    registry = registry_with(a, b)
    a.closed = True
    assert picks(registry, 3) == ["b"] * 3
    assert registry.get(TunnelID.parse(A)).connectors == [b]


def test_failed_open_moves_to_the_next_connector():
    registry = registry_with(FakeConnector("broken", fail=True), FakeConnector("ok"))
    assert picks(registry, 3) == ["ok"] * 3


def test_udp_requests_only_use_udp_connections():
    registry = registry_with(FakeConnector("tcp"), FakeConnector("udp", udp=True))
    assert picks(registry, 2, network="udp") == ["udp", "udp"]
    assert picks(registry, 2) == ["tcp", "tcp"]
    only_tcp = registry_with(FakeConnector("tcp"))
    with pytest.raises(NoConnector):
        only_tcp.open_stream(TunnelID.parse(A), "udp")   # GOST would hand it to the TCP client


def test_no_connector_and_cleanup():
    registry = registry_with(FakeConnector("a"))
    with pytest.raises(NoConnector):
        registry.open_stream(TunnelID.parse(B))
    connector = registry.get(TunnelID.parse(A)).connectors[0]
    connector.closed = True
    with pytest.raises(NoConnector):
        registry.open_stream(TunnelID.parse(A))
    assert registry.tunnels() == []


def test_flags_and_weight_do_not_change_which_tunnel_is_meant():
    registry = registry_with(FakeConnector("a"))
    weighted = TunnelID(TunnelID.parse(A).uuid, 0x80, 7)
    assert registry.open_stream(weighted)[1].name == "a"


def ingress(*rules):
    return Ingress("i", [Rule(parse_rule_host(h), parse_endpoint(e)) for h, e in rules])


@pytest.mark.parametrize("host, expected", [
    ("srv-0.local", A), ("SRV-0.Local", A), ("srv-0.local:8080", A), ("srv-0.local.", A),
    ("x.example.com", B), ("example.com", B), ("deep.x.example.com", B),
    ("api.example.com", A), ("badexample.com", None), ("other", None), ("", None), (None, None),
])
def test_ingress_lookup(host, expected):
    table = ingress(("srv-0.local", A), ("*.example.com", B), ("api.example.com", A))
    rule = table.lookup(host)
    assert (rule.endpoint.text if rule else None) == expected


def test_ingress_normalises_like_gost():
    assert parse_rule_host("*.Example.com") == ".example.com"
    assert parse_rule_host("*example.com") == "example.com"   # GOST: an exact key
    for bad in ("", "*", "a b", "a/b"):
        with pytest.raises(ValueError):
            parse_rule_host(bad)


def test_private_rules_and_tunnel_naming():
    table = ingress(("pub.local", A), ("priv.local", "$" + B))
    assert table.lookup("priv.local").endpoint.private
    assert not table.lookup("pub.local").endpoint.private
    assert table.names(TunnelID.parse(B)) and table.names(TunnelID.parse(A))
    assert not table.names(TunnelID.parse("22f43305-5c5d-4a5b-9d1a-3a4d5e6f7a8b"))


def test_later_rules_win_and_rules_can_change():
    table = ingress(("a.local", A), ("a.local", B))
    assert table.lookup("a.local").endpoint.text == B
    table.set_rule(Rule("b.local", parse_endpoint(A)))
    assert table.lookup("b.local").endpoint.text == A
    assert table.remove_rule("A.LOCAL") is not None
    assert table.lookup("a.local") is None


@pytest.mark.parametrize("bad", ["not-a-uuid", "00000000-0000-0000-0000-000000000000", ""])
def test_bad_endpoints(bad):
    with pytest.raises(ValueError):
        parse_endpoint(bad)


class BlockingConnector(FakeConnector):
    """``open_stream`` blocks until released, then fails as a session that died meanwhile."""

    def __init__(self, name):
        super().__init__(name)
        import gevent.event

        self.release = gevent.event.Event()

    def open_stream(self):
        self.release.wait(5)
        self.closed = True
        raise ConnectionError("session died while the visitor waited")


def test_visitors_blocked_on_a_dying_connection_do_not_trip_over_each_other():
    import gevent

    dying = BlockingConnector("dying")
    registry = registry_with(dying)
    tunnel_id = TunnelID.parse(A)
    visitors = [gevent.spawn(registry.open_stream, tunnel_id) for _ in range(30)]
    gevent.sleep(0)                      # every visitor is now blocked inside open_stream
    registry.remove(tunnel_id, dying)    # the session's own unregister runs first
    dying.release.set()
    gevent.joinall(visitors, timeout=5)
    assert all(v.ready() for v in visitors)
    assert all(isinstance(v.exception, NoConnector) for v in visitors), [v.exception for v in visitors]
    assert registry.tunnels() == []


def test_a_stale_visitor_does_not_remove_the_tunnel_a_reconnected_client_registered():
    import gevent

    dying = BlockingConnector("dying")
    registry = registry_with(dying)
    tunnel_id = TunnelID.parse(A)
    visitor = gevent.spawn(registry.open_stream, tunnel_id)
    gevent.sleep(0)                      # a yield: the visitor is now blocked inside open_stream
    registry.remove(tunnel_id, dying)
    fresh = FakeConnector("fresh")
    registry.add(tunnel_id, fresh)       # the client reconnected while the visitor was blocked
    dying.release.set()
    stream, connector = visitor.get(timeout=5)
    assert connector is fresh and stream == "stream-from-fresh"   # the retry found the new tunnel
    assert [c.name for t in registry.tunnels() for c in t.connectors] == ["fresh"]
    registry.remove(tunnel_id, dying)    # a late, second unregister of the dead one
    assert [c.name for t in registry.tunnels() for c in t.connectors] == ["fresh"]


@pytest.mark.parametrize("text, key", [
    ("*.Example.com", ".example.com"), ("a_b.example.com", "a_b.example.com"), ("127.0.0.1", "127.0.0.1"),
    ("[::1]", "::1"), ("münchen.example", "xn--mnchen-3ya.example"), ("*.münchen.example", ".xn--mnchen-3ya.example"),
    ("a" * 63 + ".example.com", "a" * 63 + ".example.com"),
])
def test_rule_hostnames_are_dns_names(text, key):
    assert parse_rule_host(text) == key


@pytest.mark.parametrize("text", [
    "a\x00b.com", "a\x7fb.com", "a\nb.com", "a\udcffb.com", "a" * 64 + ".com", ("a" * 62 + ".") * 4 + "com",
    "-a.com", "a-.com", "a..com", "a:b.com", "a!.com", 5,
])
def test_rule_hostnames_that_are_not_dns_names_are_refused(text):
    with pytest.raises(ValueError):
        parse_rule_host(text)
