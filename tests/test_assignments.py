"""Assignment cache: key derivation, the in-process TTL/LRU cache, and Redis, real and failing."""

import logging
import socket
import time

import pytest
import redis

from services.assignments import (Assignment, LocalAssignmentCache, RedisAssignmentCache, assignment_key,
                                  first_turn, make_assignment_cache)

TARGET = "smollm2-135m-instruct"


def _assignment(drafter="math", **kw) -> Assignment:
    return Assignment(drafter=drafter, scores={"math": 0.6, "chat": 0.3}, **kw)


# --- keys -----------------------------------------------------------------------------------------------------------

def test_same_conversation_start_same_key():
    a = assignment_key(TARGET, system="Be brief.", first_user="What is 2+2?")
    assert a == assignment_key(TARGET, system="Be brief.", first_user="What is 2+2?")
    assert len(a) == 64 and int(a, 16) >= 0


def test_different_inputs_different_keys():
    base = dict(system="Be brief.", first_user="What is 2+2?")
    keys = {
        assignment_key(TARGET, **base),
        assignment_key(TARGET, system="Be verbose.", first_user=base["first_user"]),
        assignment_key(TARGET, system=base["system"], first_user="What is 3+3?"),
        assignment_key("other-target", **base),
        # concatenation must not collide
        assignment_key(TARGET, system="Be brief.W", first_user="hat is 2+2?"),
    }
    assert len(keys) == 5


def test_conversation_id_wins():
    by_id = assignment_key(TARGET, conversation_id="c-1", system="x", first_user="y")
    assert by_id == assignment_key(TARGET, conversation_id="c-1", system="other", first_user="prompt")
    assert by_id != assignment_key(TARGET, conversation_id="c-2", system="x", first_user="y")
    assert by_id != assignment_key(TARGET, system="x", first_user="y")
    assert by_id != assignment_key("other-target", conversation_id="c-1")


def test_first_turn_of_a_chat():
    chat = [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
            {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]
    assert first_turn(chat) == ("S", "U1")
    assert first_turn(chat, system="explicit") == ("explicit", "U1")
    assert first_turn([{"role": "user", "content": "U"}]) == ("", "U")
    # a growing conversation keeps its key
    grown = chat + [{"role": "assistant", "content": "A2"}, {"role": "user", "content": "U3"}]
    system, user = first_turn(grown)
    assert assignment_key(TARGET, system=system, first_user=user) == assignment_key(TARGET, system="S",
                                                                                    first_user="U1")


def test_assignment_json_round_trip_and_garbage():
    a = _assignment(requests=3)
    assert Assignment.from_json(a.to_json()) == a
    for bad in ("not json", "{}", '{"drafter": "m", "scores": [1], "requests": 1, "created": 0}', "[]"):
        with pytest.raises(ValueError, match="not an assignment"):
            Assignment.from_json(bad)


# --- in-process cache -----------------------------------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_local_hit_miss_and_ttl():
    clock = FakeClock()
    cache = LocalAssignmentCache(ttl_s=10, clock=clock)
    assert cache.get("k") is None
    cache.put("k", _assignment())
    assert cache.get("k") == _assignment(created=cache.get("k").created)
    clock.now += 9.9
    assert cache.get("k").drafter == "math"
    clock.now += 0.2
    assert cache.get("k") is None and len(cache) == 0
    assert cache.stats.as_dict() == {"hits": 3, "misses": 2, "errors": 0, "bypassed": 0}


def test_local_put_refreshes_ttl_and_returns_copies():
    clock = FakeClock()
    cache = LocalAssignmentCache(ttl_s=10, clock=clock)
    cache.put("k", _assignment())
    clock.now += 8
    cache.put("k", _assignment("chat"))
    clock.now += 8
    got = cache.get("k")
    assert got.drafter == "chat"
    got.scores["chat"] = 99.0  # callers cannot change the cached value
    assert cache.get("k").scores["chat"] == 0.3


def test_local_lru_eviction():
    cache = LocalAssignmentCache(ttl_s=60, max_entries=2)
    cache.put("a", _assignment("a"))
    cache.put("b", _assignment("b"))
    assert cache.get("a").drafter == "a"   # a is now the most recently used
    cache.put("c", _assignment("c"))       # evicts b
    assert cache.get("b") is None
    assert cache.get("a").drafter == "a" and cache.get("c").drafter == "c"
    assert len(cache) == 2


def test_local_rejects_bad_settings():
    with pytest.raises(ValueError):
        LocalAssignmentCache(ttl_s=0)
    with pytest.raises(ValueError):
        LocalAssignmentCache(ttl_s=1, max_entries=0)


def test_factory_picks_backend(redis_server):
    assert isinstance(make_assignment_cache(None, 60), LocalAssignmentCache)
    assert isinstance(make_assignment_cache("", 60), LocalAssignmentCache)
    cache = make_assignment_cache(redis_server, 60)
    assert isinstance(cache, RedisAssignmentCache)
    cache.close()


# --- Redis ----------------------------------------------------------------------------------------------------------

def test_redis_hit_miss_and_shared_between_instances(redis_server):
    writer = RedisAssignmentCache(redis_server, ttl_s=60, prefix="t-shared:")
    reader = RedisAssignmentCache(redis_server, ttl_s=60, prefix="t-shared:")  # another router replica
    key = assignment_key(TARGET, first_user="hello")
    assert reader.get(key) is None
    a = _assignment(requests=2)
    writer.put(key, a)
    assert reader.get(key) == a
    assert reader.stats.as_dict() == {"hits": 1, "misses": 1, "errors": 0, "bypassed": 0}
    raw = redis.Redis.from_url(redis_server)
    assert raw.exists("t-shared:" + key) and 0 < raw.pttl("t-shared:" + key) <= 60_000
    other_prefix = RedisAssignmentCache(redis_server, ttl_s=60, prefix="t-other:")
    assert other_prefix.get(key) is None


def test_redis_ttl_expiry(redis_server):
    cache = RedisAssignmentCache(redis_server, ttl_s=1, prefix="t-ttl:")
    cache.put("k", _assignment())
    assert cache.get("k") is not None
    time.sleep(1.3)
    assert cache.get("k") is None


def test_redis_corrupt_value_is_a_counted_miss(redis_server):
    cache = RedisAssignmentCache(redis_server, ttl_s=60, prefix="t-corrupt:")
    redis.Redis.from_url(redis_server).set("t-corrupt:k", b"\xff garbage")
    assert cache.get("k") is None
    assert cache.stats.errors == 1 and cache.stats.bypassed == 0
    cache.put("k", _assignment())  # no back-off after a bad value: Redis itself is fine
    assert cache.get("k").drafter == "math"


def test_redis_stopped_mid_run_is_bypassed(own_redis_server, caplog):
    cache = RedisAssignmentCache(own_redis_server.url, ttl_s=60, retry_after_s=0)
    cache.put("k", _assignment())
    assert cache.get("k").drafter == "math"
    own_redis_server.stop()
    with caplog.at_level(logging.WARNING, logger="services.assignments"):
        for _ in range(3):
            start = time.monotonic()
            assert cache.get("k") is None
            cache.put("k", _assignment("chat"))   # must not raise
            assert time.monotonic() - start < 2
    assert cache.stats.errors == 6 and cache.stats.hits == 1
    warnings = [r for r in caplog.records if "bypassing the cache" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited


def test_redis_backs_off_after_an_error_then_retries(own_redis_server):
    cache = RedisAssignmentCache(own_redis_server.url, ttl_s=60, retry_after_s=0.3)
    own_redis_server.stop()
    assert cache.get("k") is None
    assert cache.stats.errors == 1
    assert cache.get("k") is None
    cache.put("k", _assignment())
    assert cache.stats.errors == 1 and cache.stats.bypassed == 2
    time.sleep(0.35)
    assert cache.get("k") is None
    assert cache.stats.errors == 2


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(params=["refused", "silent"])
def unreachable_url(request):
    """Nothing listening (connection refused), or a listener that never answers (only the timeout ends it)."""
    if request.param == "refused":
        yield f"redis://127.0.0.1:{_closed_port()}/0"
        return
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)  # the kernel completes handshakes; nobody ever reads or writes
        yield f"redis://127.0.0.1:{silent.getsockname()[1]}/0"


def test_unreachable_redis_from_the_start(unreachable_url):
    cache = make_assignment_cache(unreachable_url, ttl_s=60)
    cache.retry_after_s = 0
    start = time.monotonic()
    assert cache.get("k") is None
    cache.put("k", _assignment())
    assert cache.get("k") is None
    assert time.monotonic() - start < 3  # three short socket timeouts at most
    assert cache.stats.errors == 3 and cache.stats.hits == 0


def test_redis_over_tls_with_a_password_works(tmp_path):
    """rediss:// against a redis-server that speaks only TLS (self-signed certificate passed as ssl_ca_certs)."""
    from conftest import RedisProcess

    server = RedisProcess(tmp_path / "redis", password="tls-pw", tls=True)
    try:
        assert server.url.startswith("rediss://")
        cache = make_assignment_cache(server.url, 60)
        cache.put("k", _assignment())
        assert cache.get("k").drafter == "math" and cache.stats.errors == 0
        plain = RedisAssignmentCache(server.url.replace("rediss://", "redis://").split("?")[0], ttl_s=60)
        assert plain.get("k") is None and plain.stats.errors == 1, "no plain-text connection to a TLS-only server"
    finally:
        server.stop()


def test_redis_with_a_password_works_with_the_right_url_and_is_bypassed_with_a_wrong_one(tmp_path, caplog):
    from conftest import RedisProcess

    server = RedisProcess(tmp_path / "redis", password="s3cret-pw")
    try:
        cache = make_assignment_cache(server.url, 60)
        cache.put("k", _assignment())
        assert cache.get("k").drafter == "math" and cache.stats.errors == 0
        wrong = RedisAssignmentCache(server.url.replace("s3cret-pw", "guess"), ttl_s=60)
        with caplog.at_level(logging.WARNING, logger="services.assignments"):
            assert wrong.get("k") is None
        assert wrong.stats.errors == 1
        logged = " ".join(r.getMessage() for r in caplog.records)
        assert "bypassing the cache" in logged and "guess" not in logged and ":***@" in logged
    finally:
        server.stop()
