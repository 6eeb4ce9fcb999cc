"""gostgev.redisconn: redis-py on gevent sockets, against a real redis-server."""

import time

import gevent
import pytest
from gevent import socket

from gostgev.config.model import RedisConfig
from gostgev.redisconn import RedisError, client


def test_commands_reach_a_real_redis(redis_server):
    r = client(RedisConfig(addr=redis_server.addr, db=3))
    r.set("k", "v")
    assert r.get("k") == "v"
    assert redis_server.command("SELECT", 3) == b"+OK\r\n"


def test_a_silent_redis_costs_one_timeout_and_never_blocks_other_greenlets():
    # A server that accepts and never answers: the command must wait in gevent, not in the kernel.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    ticks = []
    ticker = gevent.spawn(lambda: [ticks.append(gevent.sleep(0.05)) for _ in range(100)])
    r = client(RedisConfig(addr="127.0.0.1:%d" % listener.getsockname()[1]), timeout=0.5)
    started = time.monotonic()
    with pytest.raises(RedisError):
        r.get("k")
    elapsed = time.monotonic() - started
    ticker.kill()
    listener.close()
    assert 0.4 < elapsed < 2.0
    assert len(ticks) >= 5, "the hub was blocked while the command waited"


def test_a_refused_connection_fails_at_once():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    r = client(RedisConfig(addr="127.0.0.1:%d" % port))
    started = time.monotonic()
    with pytest.raises(RedisError):
        r.ping()
    assert time.monotonic() - started < 1.0
