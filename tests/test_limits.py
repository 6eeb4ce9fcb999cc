"""gostgev.limits and gostgev.netio.throttle: rates, buckets, who is charged."""

import time

import pytest

from gostgev.limits import BandwidthLimiter, RateLimiter, parse_rate
from gostgev.netio.throttle import TokenBucket


@pytest.mark.parametrize("text, rate", [("128KB", 128 << 10), ("10MB", 10 << 20), ("1GB", 1 << 30),
                                        ("1.5MiB", 1.5 * (1 << 20)), ("100", 100), ("100B", 100),
                                        ("0", None), ("-1", None), ("512kb", 512 << 10)])
def test_rates_in_gost_units(text, rate):
    assert parse_rate(text) == rate


@pytest.mark.parametrize("text", ["fast", "10 MB/s", "1e6", "MB", ""])
def test_bad_rates_are_refused(text):
    with pytest.raises(ValueError):
        parse_rate(text)


def test_a_bucket_gives_a_seconds_worth_at_once_then_makes_the_taker_wait_for_the_rest():
    bucket = TokenBucket(1000)
    assert bucket.take(1000) == 0.0
    assert bucket.take(500) == pytest.approx(0.5, abs=0.01)
    assert bucket.take(500) == pytest.approx(1.0, abs=0.01)   # in debt: each taker waits its turn


def test_each_connection_gets_its_own_bucket_and_shares_the_services_and_its_ips():
    limiter = BandwidthLimiter.parse(["$ 10MB", "$$ 1MB 2MB", "127.0.0.0/8 512KB", "127.0.0.1 256KB 128KB"])
    first_in, first_out = limiter.buckets("127.0.0.1")
    second_in, second_out = limiter.buckets("127.0.0.1")
    other_in, _ = limiter.buckets("127.0.0.2")
    assert [b.rate for b in first_in] == [10 << 20, 1 << 20, 256 << 10]     # the most specific network wins
    assert first_in[0] is second_in[0] and first_in[2] is second_in[2]       # the service's and the IP's
    assert first_in[1] is not second_in[1]                                   # the connection's own
    assert [b.rate for b in first_out] == [2 << 20, 128 << 10]
    assert other_in[2].rate == 512 << 10 and other_in[2] is not first_in[2]


def test_the_connection_rate_refills_with_the_clock():
    limiter = RateLimiter.parse(["$$ 10"])
    assert [limiter.allow("10.0.0.1") for _ in range(10)] == [None] * 10
    assert "10.0.0.1" in limiter.allow("10.0.0.1")
    assert limiter.allow("10.0.0.2") is None                                 # another client: its own bucket
    time.sleep(0.15)
    assert limiter.allow("10.0.0.1") is None                                 # a tenth of a second: one more
