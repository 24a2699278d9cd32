"""A bounded, thread-safe LRU of per-session state (draft-head and target KV caches) inside one replica.

Replicas serve many generation requests at once (Ray Serve runs sync methods in a thread pool) and each session
pins memory for as long as its state is kept, so the number of sessions is capped and the least recently used one
is dropped first. Dropping is always safe: every request carries what a replica needs to rebuild a session it no
longer holds (services/drafter_server.py, services/verifier_server.py), so eviction costs compute, never
correctness.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Callable, Generic, TypeVar

S = TypeVar("S")


class SessionCache(Generic[S]):
    """Session id -> state, at most `capacity` entries; `get`/`put` mark an entry as most recently used.

    `on_drop` is called with each state that leaves (evicted or popped), e.g. to free its slot of a shared cache.
    """

    def __init__(self, capacity: int, on_drop: Callable[[S], None] | None = None) -> None:
        if capacity < 1:
            raise ValueError(f"session cache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self.on_drop = on_drop
        self.evictions = 0
        self._entries: OrderedDict[str, S] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __contains__(self, session_id: str) -> bool:
        with self._lock:
            return session_id in self._entries

    def get(self, session_id: str) -> S | None:
        with self._lock:
            state = self._entries.get(session_id)
            if state is not None:
                self._entries.move_to_end(session_id)
            return state

    def put(self, session_id: str, state: S) -> None:
        with self._lock:
            replaced = self._entries.get(session_id)
            if replaced is not None and replaced is not state:
                self._dropped(replaced)
            self._entries[session_id] = state
            self._entries.move_to_end(session_id)
            self._evict(self.capacity)

    def make_room(self) -> None:
        """Evict least recently used entries until one more fits (before allocating the new entry's memory)."""
        with self._lock:
            self._evict(self.capacity - 1)

    def _evict(self, keep: int) -> None:
        while len(self._entries) > keep:
            self._dropped(self._entries.popitem(last=False)[1])
            self.evictions += 1

    def pop(self, session_id: str) -> S | None:
        with self._lock:
            state = self._entries.pop(session_id, None)
            if state is not None:
                self._dropped(state)
            return state

    def _dropped(self, state: S) -> None:
        if self.on_drop is not None:
            self.on_drop(state)
