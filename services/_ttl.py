"""A small bounded cache with a time to live, for answers a service may reuse for a while.

Why: on the three-service read, the gateway introspected every bearer token at auth and orders asked auth
for the same user again and again: two of the three hops repeated an answer that cannot have changed
(a signed token's claims; a user's name, which no endpoint changes).  ``benchmarks/chain.py`` measures it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    """Least recently used beyond `size` entries; each entry expires at its own monotonic time."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._items: OrderedDict[K, tuple[float, V]] = OrderedDict()

    def get(self, key: K) -> V | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] <= time.monotonic():
            del self._items[key]
            return None
        self._items.move_to_end(key)
        return item[1]

    def put(self, key: K, value: V, ttl: float) -> None:
        if ttl <= 0:
            return
        self._items[key] = (time.monotonic() + ttl, value)
        self._items.move_to_end(key)
        while len(self._items) > self._size:
            self._items.popitem(last=False)
