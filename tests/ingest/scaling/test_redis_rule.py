"""Auto mode's Redis rule: any trigger of the model switches to Redis at once; back only after the dwell."""

import math

from ingest.config import RedisThresholds
from ingest.scaling.redis_rule import MEMORY, REDIS, RedisDecider, RedisSignals, p99_ms, triggers

T = RedisThresholds(min_dwell_seconds=60)
QUIET = RedisSignals(flows_per_s=2_000, users=3, api_p99_ms=40, websocket_clients=0)


def test_each_trigger_of_the_model_calls_for_redis():
    assert triggers(T, QUIET) == []
    assert triggers(T, RedisSignals(12_000, 3, 40, 0)) == ["rate 12,000 flows/s >= 10,000"]
    assert triggers(T, RedisSignals(2_000, 20, 40, 0)) == ["20 users >= 20"]
    assert triggers(T, RedisSignals(2_000, 3, 250, 0)) == ["API p99 250 ms >= 200 ms"]
    assert triggers(T, RedisSignals(2_000, 3, 40, 2)) == ["2 WebSocket client(s)"]
    assert triggers(T.model_copy(update={"enable_for_websocket": False}), RedisSignals(2_000, 3, 40, 2)) == []
    assert triggers(T, RedisSignals(2_000, 3, 40, 0, api_processes=2)) == ["2 API processes share one cache"]
    assert triggers(T, RedisSignals(None, 3, None, 0)) == []  # nothing measured yet: no trigger


def test_redis_at_once_and_back_only_after_the_dwell_without_a_trigger():
    decider = RedisDecider(T, now=0)
    assert decider.using == MEMORY and decider.decide(0, QUIET) is None
    up = decider.decide(5, RedisSignals(2_000, 25, 40, 0))
    assert (up.source, up.target) == (MEMORY, REDIS) and "25 users" in up.reason
    decider.commit(up)
    assert decider.decide(10, QUIET) is None  # quiet from 10 s on
    assert decider.decide(40, RedisSignals(2_000, 3, 300, 0)) is None  # a trigger again: the dwell restarts
    assert decider.decide(50, QUIET) is None
    assert decider.decide(109, QUIET) is None  # 59 s quiet
    down = decider.decide(110, QUIET)
    assert (down.source, down.target) == (REDIS, MEMORY) and "60s" in down.reason


def test_p99_is_the_bucket_holding_the_99th_percentile_of_the_requests_in_between():
    bounds = (0.01, 0.1, 0.5, math.inf)
    before = [10, 10, 10, 10]
    assert p99_ms(bounds, before, before) is None  # no request in between
    # 100 new requests: 90 under 10 ms, 9 more under 100 ms, 1 under 500 ms
    assert p99_ms(bounds, before, [100, 109, 110, 110]) == 100
    # 2 of 100 slower than 100 ms: the 99th percentile is in the 500 ms bucket
    assert p99_ms(bounds, before, [100, 108, 110, 110]) == 500
    assert p99_ms(bounds, before, [10, 10, 10, 11]) == math.inf  # beyond the last bound
