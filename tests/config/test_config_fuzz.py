"""Config front ends under arbitrary input: -L/-F URLs and raw config data give a Config or ConfigError.

The checkers come from scripts/fuzz_targets.py, the same ones scripts/fuzz.py
runs, so "anything but ConfigError is a bug" is stated once.
"""

import copy

import pytest
import yaml
from fuzz_targets import ERROR, OUTCOMES, VALUE, check_config_raw, check_config_yaml, check_urls
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gostgev.config.load import read_file
from gostgev.errors import ConfigError

TUNNEL = "4d21094e-b74c-4916-86c1-d9fa36ea677b"
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# -- -L / -F URLs ---------------------------------------------------------------------

_schemes = st.sampled_from(["tcp", "relay", "tunnel", "rtcp", "file", "forward", "ws", "tls", "auto", "nope",
                            "TCP", "relay+ws", "tunnel+tls", "tcp+rtcp", "http", ""])
_hosts = st.sampled_from(["", "127.0.0.1", "[::1]", "::1", "example.com", "a.b", "[", "]", "[::1", "0.0.0.0",
                          "srv-0.local", "10.0.0.1"])
_ports = st.one_of(st.integers(0, 70000).map(str), st.sampled_from(["", "8000-8010", "x", "-1", "080"]))
_query_keys = st.sampled_from(["sniffing", "entrypoint", "tunnel", "tunnel.id", "strategy", "maxFails", "failTimeout",
                               "retries", "dir", "file.dir", "bind", "certFile", "keyFile", "secure", "serverName",
                               "handler.sniffing", "listener.x", "service.y", "hop.z", "node.w", "ingress",
                               "proxyProtocol", "mux.version", "path", "host", "x"])
_values = st.one_of(st.sampled_from(["true", "false", "1", "0", "10s", "1m30s", "-1", "round", "hash", TUNNEL,
                                     "$" + TUNNEL, "srv-0.local:" + TUNNEL, "*.a.local:" + TUNNEL, ":8000", "/",
                                     "/ws", ""]),
                    st.text(max_size=12))
_query = st.lists(st.tuples(_query_keys, _values), max_size=4).map(
    lambda pairs: "&".join("%s=%s" % pair for pair in pairs))


@st.composite
def _urls(draw):
    scheme = draw(_schemes)
    userinfo = draw(st.sampled_from(["", "user:pass@", "u@", ":@", "a%zz:b@"]))
    addr = draw(_hosts) + draw(st.sampled_from([":", ""])) + draw(_ports)
    targets = draw(st.lists(st.sampled_from(["10.0.0.1:80", "a:80", "[::1]:22", "ssh.local", ":", "x:y"]),
                            max_size=3))
    query = draw(_query)
    url = (scheme + "://" if scheme else "") + userinfo + addr
    url += ("/" + ",".join(targets)) if targets else ""
    return url + ("?" + query if query else "")


@st.composite
def _command_lines(draw):
    lines = ["-L " + url for url in draw(st.lists(_urls(), min_size=1, max_size=2))]
    lines += ["-F " + url for url in draw(st.lists(_urls(), max_size=2))]
    return "\n".join(draw(st.permutations(lines)))


@SETTINGS
@given(st.text(max_size=200))
def test_arbitrary_text_as_urls(text):
    assert check_urls(text.encode("utf-8")) in (VALUE, ERROR)


@SETTINGS
@given(_command_lines())
def test_url_shaped_command_lines(text):
    assert check_urls(text.encode("utf-8")) in (VALUE, ERROR)


def test_url_generator_reaches_both_outcomes():
    """The URL strategy is only useful if some of what it builds loads."""
    assert check_urls(b"-L relay://:8420?bind=true") == VALUE
    assert check_urls(b"-L tcp://:0/a:80\n-F tunnel://127.0.0.1:1?tunnel.id=" + TUNNEL.encode()) == VALUE
    assert check_urls(b"-L tcp://[::1:80") == ERROR


# -- raw config data -------------------------------------------------------------------

_KEYS = ("services name addr handler listener type metadata forwarder nodes selector strategy maxFails failTimeout "
         "host protocol path filter chain chains hops hop connector dialer auth username password auther authers "
         "auths tunnels admission admissions matchers whitelist climiter climiters limits ingresses ingress rules "
         "hostname endpoint tls certFile keyFile caFile secure serverName log level format output metrics api "
         "entrypoint sniffing tunnel.id file.dir weight backup proxyProtocol network file bind").split()
_leaves = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                    st.sampled_from(["tcp", "relay", "tunnel", "rtcp", "file", "forward", ":8080", "127.0.0.1:80",
                                     "10s", TUNNEL, "round", "chain-0", "ingress-0", "a.example.com"]))
_keys = st.one_of(st.sampled_from(_KEYS), st.text(max_size=8), st.integers(-2, 2), st.none())
_trees = st.recursive(_leaves, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=5)), max_leaves=40)

_SKELETON = {
    "services": [
        {"name": "proxy", "addr": ":8080", "handler": {"type": "tcp", "metadata": {"sniffing": True}},
         "listener": {"type": "tcp"},
         "forwarder": {"selector": {"strategy": "round", "maxFails": 1, "failTimeout": "10s"},
                       "nodes": [{"name": "a", "addr": "127.0.0.1:80", "host": "a.example.com"},
                                 {"name": "b", "addr": "127.0.0.1:81", "filter": {"host": "*.b.example.com"}}]}},
        {"name": "tunnel", "addr": ":8443",
         "handler": {"type": "tunnel", "metadata": {"entrypoint": ":8000", "ingress": "ingress-0"}}},
        {"name": "client", "addr": ":0", "handler": {"type": "rtcp"},
         "listener": {"type": "rtcp", "chain": "chain-0"},
         "forwarder": {"nodes": [{"name": "local", "addr": "127.0.0.1:80"}]}},
    ],
    "chains": [{"name": "chain-0", "hops": [{"name": "hop-0", "nodes": [
        {"name": "node-0", "addr": "127.0.0.1:8443",
         "connector": {"type": "tunnel", "metadata": {"tunnel.id": TUNNEL}}, "dialer": {"type": "tcp"}}]}]}],
    "ingresses": [{"name": "ingress-0", "rules": [{"hostname": "srv-0.local", "endpoint": TUNNEL}]}],
    "authers": [{"name": "auther-0", "auths": [{"username": "u", "password": "p", "tunnels": [TUNNEL]}]}],
    "admissions": [{"name": "admission-0", "matchers": ["127.0.0.1", "10.0.0.0/8"]}],
    "log": {"level": "info", "format": "text"},
}


def _places(tree, path=()):
    """Every (container, key) in ``tree`` whose value could be swapped out."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        yield tree, key
        yield from _places(value, path + (key,))


def test_skeleton_is_valid():
    assert check_config_raw(copy.deepcopy(_SKELETON)) == VALUE


@SETTINGS
@given(_trees)
def test_arbitrary_data_builds_or_raises_config_error(raw):
    assert check_config_raw(raw) in (VALUE, ERROR)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 10**6), _trees), min_size=1, max_size=3))
def test_a_valid_config_with_values_swapped_out(swaps):
    """Wrong types and values at every depth of a working config: reaches the checks a random tree cannot."""
    raw = copy.deepcopy(_SKELETON)
    for index, value in swaps:
        places = list(_places(raw))
        container, key = places[index % len(places)]
        container[key] = value
    assert check_config_raw(raw) in (VALUE, ERROR)


@SETTINGS
@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(_KEYS), _trees), min_size=1, max_size=3))
def test_a_valid_config_with_keys_added(additions):
    raw = copy.deepcopy(_SKELETON)
    for index, key, value in additions:
        mappings = [c for c, _ in _places(raw) if isinstance(c, dict)]
        mappings[index % len(mappings)][key] = value
    assert check_config_raw(raw) in (VALUE, ERROR)


@SETTINGS
@given(_trees)
def test_arbitrary_data_as_yaml_text(raw):
    text = yaml.safe_dump({"services": raw} if not isinstance(raw, dict) else raw, allow_unicode=True)
    assert check_config_yaml(text.encode("utf-8")) in OUTCOMES


# -- read_file: every broken file is a ConfigError -----------------------------------------

@pytest.mark.parametrize("name, content, message", [
    ("gost.yaml", b"services:\n- name: \xff\xfe\n", "not UTF-8: byte 0xff at offset 18"),
    ("gost.yaml", b"log: {level: 2001-13-01}\n", "invalid YAML value: month must be in 1..12"),
    ("gost.yaml", b"x: !!float abc\n", "invalid YAML value: could not convert"),
    ("gost.yaml", b"x: " + b"[" * 600 + b"\n", "nested too deeply"),
    ("gost.json", b"[" * 100000, "nested too deeply"),
    ("gost.json", b'{"x": ' + b"9" * 5000 + b"}", "invalid JSON value: Exceeds the limit"),
    ("gost.yaml", b"admission: 0x" + b"f" * 3700 + b"\n", "1:12: invalid YAML: integer too long"),
    ("gost.yaml", b"? 1" + b":1" * 2500 + b"\n: x\n", "invalid YAML: integer too long"),
])
def test_unreadable_config_file_is_a_config_error(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=message) as info:
        read_file(str(path))
    assert info.value.path.startswith(str(path))
