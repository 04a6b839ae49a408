import time

from services._ttl import TTLCache


def test_entries_expire_and_the_least_recently_used_goes_first():
    cache: TTLCache[str, int] = TTLCache(2)
    cache.put("a", 1, 60)
    cache.put("b", 2, 60)
    assert cache.get("a") == 1  # a is now the most recently used
    cache.put("c", 3, 60)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    cache.put("short", 4, 0.05)
    deadline = time.monotonic() + 10
    while cache.get("short") is not None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cache.get("short") is None
    cache.put("never", 5, 0)  # a token already past its exp is not kept
    assert cache.get("never") is None
