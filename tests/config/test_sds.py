"""The ``sds`` section and a tunnel handler's ``sd`` keys: what loads, and what each mistake names."""

import pytest

from gostgev.components import build_config
from gostgev.errors import ConfigError

UUID = "4d21094e-b74c-4916-86c1-d9fa36ea677b"


def config(sds, **metadata):
    md = {"entrypoint": "10.0.0.1:80", "tunnel": "a.local:" + UUID, "sd": "sd-0", **metadata}
    return {"sds": sds, "services": [{"name": "t", "addr": ":0", "handler": {"type": "tunnel", "metadata": md},
                                      "listener": {"type": "tcp"}}]}


def options(raw):
    return build_config(raw, []).services[0].handler.options


def test_redis_sd_with_defaults():
    cluster = options(config([{"name": "sd-0", "redis": {"addr": "127.0.0.1"}}], **{"sd.node": "n1"})).cluster
    assert cluster.node == "n1" and cluster.address == "10.0.0.1:80" and cluster.ttl == 15.0
    assert cluster.sd.redis.addr == "127.0.0.1" and cluster.sd.redis.key == "gostgev:sd"


def test_gost_http_plugin_sd():
    sd = options(config([{"name": "sd-0", "plugin": {"type": "http", "addr": "http://127.0.0.1:8000/sd"}}])).cluster.sd
    assert sd.plugin_addr == "http://127.0.0.1:8000/sd" and sd.redis is None


def test_the_loop_guard_is_on_for_a_cluster_node():
    forwarding = options(config([{"name": "sd-0", "redis": {"addr": "r:6379"}}], **{"sd.node": "n1"})).forwarding
    assert forwarding.node == "n1"


@pytest.mark.parametrize("sds, metadata, path, words", [
    ([{"name": "sd-0"}], {}, "sds[0]", "either redis or plugin"),
    ([{"name": "sd-0", "plugin": {"addr": "http://x/"}}], {}, "sds[0].plugin.type", "only the http plugin"),
    ([{"name": "sd-0", "plugin": {"type": "http", "addr": "x:1"}}], {}, "sds[0].plugin.addr", "http://"),
    ([{"name": "sd-0", "redis": {"addr": "r:notaport"}}], {}, "sds[0].redis.addr", ""),
    ([{"name": "sd-0", "redis": {"addr": "r:1"}}], {"sd": "sd-9"}, "services[0].handler.metadata", "no sds entry"),
    ([{"name": "sd-0", "redis": {"addr": "r:1"}}], {"entrypoint": ":80"}, "services[0].handler.metadata",
     "sd.address"),
    ([{"name": "sd-0", "redis": {"addr": "r:1"}}], {"tunnel.ttl": "0.5s"}, "services[0].handler.metadata",
     "tunnel.ttl"),
    ([{"name": "sd-0", "redis": {"addr": "r:1"}}], {"sd.node": "a,b"}, "services[0].handler.metadata", "sd.node"),
])
def test_mistakes_name_their_key(sds, metadata, path, words):
    with pytest.raises(ConfigError) as caught:
        options(config(sds, **metadata))
    assert str(caught.value).startswith(path + ":") and words in str(caught.value)
