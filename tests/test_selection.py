"""Host routing tables, selector strategies and failure marking (no I/O)."""

import pytest

from gostgev.config.model import ForwarderConfig, NodeConfig, SelectorConfig
from gostgev.forwarder import Forwarder
from gostgev.hostmatch import HostRouter


def router(*patterns):
    table = HostRouter()
    for pattern in patterns:
        table.add(pattern, pattern)
    return table


@pytest.mark.parametrize("host, expected", [
    ("a.example.com", ["a.example.com"]),
    ("A.Example.Com.", ["a.example.com"]),
    ("b.example.com", [".example.com"]),
    ("example.com", [".example.com"]),
    ("x.y.example.com", [".y.example.com"]),
    ("y.example.com", [".y.example.com"]),
    ("badexample.com", [None]),
    ("example.org", [None]),
    (None, [None]),
    ("", [None]),
])
def test_most_specific_tier_wins(host, expected):
    table = router("a.example.com", ".example.com", ".y.example.com", None)
    assert table.best(host) == expected


def test_tiers_are_ordered_exact_longest_wildcard_then_any():
    table = router(None, ".com", ".example.com", "a.example.com", ".a.example.com")
    assert list(table.tiers("a.example.com")) == [
        ["a.example.com"], [".a.example.com"], [".example.com"], [".com"], [None]]


def test_no_match_without_fallback():
    assert router("a.example.com").best("b.example.com") == []


def forwarder(*nodes, strategy="round", max_fails=1, fail_timeout=10.0):
    return Forwarder(ForwarderConfig(
        nodes=tuple(NodeConfig(**n) for n in nodes),
        selector=SelectorConfig(strategy=strategy, max_fails=max_fails, fail_timeout=fail_timeout)))


def names(nodes):
    return [n.name for n in nodes]


def test_round_robin_rotates_and_lists_the_rest_for_failover():
    fwd = forwarder({"name": "a", "addr": "x:1"}, {"name": "b", "addr": "x:2"}, {"name": "c", "addr": "x:3"})
    orders = [names(fwd.route()) for _ in range(3)]
    assert orders == [["a", "b", "c"], ["b", "c", "a"], ["c", "a", "b"]]


def test_fifo_sticks_to_the_first_healthy_node():
    fwd = forwarder({"name": "a", "addr": "x:1"}, {"name": "b", "addr": "x:2"}, strategy="fifo")
    assert [names(fwd.route())[0] for _ in range(3)] == ["a", "a", "a"]
    fwd.nodes[0].mark_failed()
    assert names(fwd.route()) == ["b"]
    fwd.nodes[0].mark_ok()
    assert names(fwd.route())[0] == "a"


def test_hash_is_stable_per_client():
    fwd = forwarder(*({"name": str(i), "addr": "x:%d" % i} for i in range(5)), strategy="hash")
    first = [names(fwd.route(client_ip="10.0.0.%d" % i))[0] for i in range(20)]
    again = [names(fwd.route(client_ip="10.0.0.%d" % i))[0] for i in range(20)]
    assert first == again
    assert len(set(first)) > 1


def test_rand_respects_weights():
    fwd = forwarder({"name": "heavy", "addr": "x:1", "weight": 50}, {"name": "light", "addr": "x:2"},
                    strategy="rand")
    picks = [names(fwd.route())[0] for _ in range(300)]
    assert picks.count("heavy") > picks.count("light") * 5


def test_failed_nodes_are_skipped_until_fail_timeout(monkeypatch):
    import gostgev.selector as selector

    clock = [1000.0]
    monkeypatch.setattr(selector.time, "monotonic", lambda: clock[0])
    fwd = forwarder({"name": "a", "addr": "x:1"}, {"name": "b", "addr": "x:2"}, max_fails=2, fail_timeout=5)
    a = fwd.nodes[0]
    a.mark_failed()
    assert "a" in names(fwd.route())          # one failure < maxFails 2
    a.mark_failed()
    assert names(fwd.route()) == ["b"]
    clock[0] += 5
    assert "a" in names(fwd.route())          # failTimeout elapsed


def test_all_failed_is_a_last_resort_not_a_refusal():
    fwd = forwarder({"name": "a", "addr": "x:1"}, {"name": "b", "addr": "x:2"})
    for node in fwd.nodes:
        node.mark_failed()
    assert sorted(names(fwd.route())) == ["a", "b"]


def test_backup_nodes_come_after_primaries():
    fwd = forwarder({"name": "spare", "addr": "x:1", "backup": True}, {"name": "main", "addr": "x:2"})
    assert names(fwd.route()) == ["main", "spare"]
    fwd.nodes[1].mark_failed()
    assert names(fwd.route()) == ["spare"]


def test_protocol_and_path_filters_fall_through_to_less_specific_tiers():
    fwd = forwarder({"name": "api-tls", "addr": "x:1", "host": "api.example.com", "protocol": "tls"},
                    {"name": "api-v2", "addr": "x:2", "host": "api.example.com", "path": "/v2"},
                    {"name": "any", "addr": "x:3", "host": ".example.com"})
    assert names(fwd.candidates("api.example.com", "tls")) == ["api-tls"]
    assert names(fwd.candidates("api.example.com", "http", "/v2/users")) == ["api-v2"]
    assert names(fwd.candidates("api.example.com", "http", "/v1")) == ["any"]


def test_failover_never_crosses_tiers():
    fwd = forwarder({"name": "exact", "addr": "x:1", "host": "a.example.com"},
                    {"name": "wild", "addr": "x:2", "host": ".example.com"},
                    {"name": "any", "addr": "x:3"})
    assert names(fwd.route("a.example.com")) == ["exact"]
