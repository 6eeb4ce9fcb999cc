"""GOST command-line URLs (-L, -F) into raw config."""

import pytest

from gostgev.components import build_config
from gostgev.config.spec import apply_cli, hop_from_url, service_from_url


def test_service_url_with_targets_and_query():
    raw = service_from_url("tcp://:8080/10.0.0.1:80,10.0.0.2:80?sniffing=true&handler.idleTimeout=30s", 0)
    assert raw["name"] == "service-0" and raw["addr"] == ":8080"
    assert raw["handler"]["type"] == "tcp" and raw["listener"]["type"] == "tcp"
    assert [n["addr"] for n in raw["forwarder"]["nodes"]] == ["10.0.0.1:80", "10.0.0.2:80"]
    assert [n["name"] for n in raw["forwarder"]["nodes"]] == ["target-0", "target-1"]
    for scope in (raw["handler"], raw["listener"], raw):
        assert scope["metadata"]["sniffing"] == "true"
    assert raw["handler"]["metadata"]["idleTimeout"] == "30s"
    assert "idleTimeout" not in raw["listener"]["metadata"]


def test_one_word_schemes_follow_gost():
    assert service_from_url("file://:8000?dir=.", 0)["listener"]["type"] == "tcp"
    assert service_from_url("tunnel://:8443", 0)["listener"]["type"] == "tcp"
    assert service_from_url("tunnel+tls://:8443", 0)["listener"]["type"] == "tls"
    assert service_from_url("rtcp://:0/192.168.1.1:80", 0)["listener"]["type"] == "rtcp"
    # Targets force a forwarding handler matching the listener.
    assert service_from_url("auto+tcp://:1/a:1", 0)["handler"]["type"] == "tcp"


def test_selector_keys_and_userinfo():
    raw = service_from_url("tcp://user:p%40ss@:1/a:1?strategy=fifo&max_fails=3", 0)
    assert raw["forwarder"]["selector"] == {"strategy": "fifo", "maxFails": "3", "failTimeout": "30s"}
    assert raw["handler"]["auth"] == {"username": "user", "password": "p@ss"}


def test_node_url_builds_a_hop():
    hop = hop_from_url("tunnel+tls://u:p@h1:8443,h2:8443?tunnel.id=abc&dialer.x=1&serverName=srv&secure=true", 0)
    assert [n["addr"] for n in hop["nodes"]] == ["h1:8443", "h2:8443"]
    node = hop["nodes"][0]
    assert node["connector"]["type"] == "tunnel" and node["dialer"]["type"] == "tls"
    assert node["connector"]["metadata"]["tunnel.id"] == "abc"
    assert node["dialer"]["metadata"] == {"tunnel.id": "abc", "x": "1"}
    assert node["dialer"]["tls"] == {"serverName": "srv", "secure": "true"}
    assert "x" not in node["connector"]["metadata"]
    assert node["connector"]["auth"] == {"username": "u", "password": "p"}


def test_chain_is_attached_where_gost_puts_it():
    raw = apply_cli({}, ["rtcp://:0/10.0.0.1:80", "tcp://:2222/ssh.local"], ["tunnel://srv:8443"])
    assert raw["services"][0]["listener"]["chain"] == "chain-0"
    assert raw["services"][1]["handler"]["chain"] == "chain-0"
    assert raw["chains"][0]["hops"][0]["name"] == "hop-0"


def test_cli_urls_build_the_same_model_as_yaml():
    from_cli = build_config(apply_cli({}, ["tcp://127.0.0.1:8080/10.0.0.1:80?sniffing=true"], []), [])
    from_yaml = build_config({"services": [{
        "name": "service-0", "addr": "127.0.0.1:8080",
        "handler": {"type": "tcp", "metadata": {"sniffing": True}},
        "forwarder": {"nodes": [{"name": "target-0", "addr": "10.0.0.1:80"}]}}]}, [])
    a, b = from_cli.services[0], from_yaml.services[0]
    assert a.handler.options == b.handler.options
    assert a.forwarder == b.forwarder
    assert (a.name, a.addr, a.listener.type) == (b.name, b.addr, b.listener.type)


@pytest.mark.parametrize("url", ["tcp://", "tcp://:8000-8010/a:1"])
def test_bad_urls(url):
    with pytest.raises(ValueError):
        service_from_url(url, 0)
