"""The assignment cache: which drafter suits a conversation, remembered across requests and router replicas.

The sticky and probe policies explore (score every drafter on the prompt, or on the first steps' output) once per
conversation; later requests of the same conversation, on any router replica, reuse the stored choice, whichever of
the two made it. Keys come from a client-supplied conversation id or, without one, from a hash of what stays fixed
while a conversation grows: the system prompt and the first user turn (and the target, whose drafter names the
assignment refers to).

The cache is an optimisation, never a dependency: `RedisAssignmentCache` logs and bypasses every Redis error
(refused connection, timeout, a server gone mid-run) so requests never fail because of it, and after an error it
leaves Redis alone for `retry_after_s` so a dead or black-holed Redis does not add a socket timeout to every
request. Without a Redis URL, `LocalAssignmentCache` keeps assignments in process (one node).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
import urllib.parse
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Callable, Protocol, Sequence

log = logging.getLogger(__name__)


@dataclass
class Assignment:
    drafter: str
    scores: dict[str, float] = field(default_factory=dict)  # e.g. prompt agreement per drafter
    requests: int = 1                                        # requests served under this assignment
    created: float = field(default_factory=time.time)        # unix time of the first assignment

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> "Assignment":
        """ValueError for anything that is not a stored assignment."""
        try:
            raw = json.loads(text)
            return cls(drafter=str(raw["drafter"]), scores={str(k): float(v) for k, v in raw["scores"].items()},
                       requests=int(raw["requests"]), created=float(raw["created"]))
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"not an assignment: {text[:80]!r}") from e


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    errors: int = 0      # backend failures (each one bypassed)
    bypassed: int = 0    # calls skipped while backing off after an error

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class AssignmentCache(Protocol):
    stats: CacheStats

    def get(self, key: str) -> Assignment | None: ...

    def put(self, key: str, assignment: Assignment) -> None: ...


def _digest(kind: str, *parts: str) -> str:
    # JSON keeps the parts apart: ("ab", "c") and ("a", "bc") hash differently
    return hashlib.sha256(json.dumps([kind, *parts]).encode()).hexdigest()


def assignment_key(target: str, *, conversation_id: str = "", system: str = "", first_user: str = "") -> str:
    """A conversation id wins; otherwise system prompt + first user turn. Always scoped to the target."""
    if conversation_id:
        return _digest("conversation", target, conversation_id)
    return _digest("prompt", target, system, first_user)


def first_turn(messages: Sequence[dict], system: str = "") -> tuple[str, str]:
    """(system prompt, first user turn) of a chat: an explicit `system` wins over a system message."""
    if not system:
        system = next((m["content"] for m in messages if m.get("role") == "system"), "")
    user = next((m["content"] for m in messages if m.get("role") == "user"), "")
    return system, user


class LocalAssignmentCache:
    """In-process TTL + LRU cache (thread-safe): the single-node default."""

    def __init__(self, ttl_s: float, max_entries: int = 100_000, clock: Callable[[], float] = time.monotonic):
        if ttl_s <= 0 or max_entries < 1:
            raise ValueError(f"need ttl_s > 0 and max_entries >= 1, got {ttl_s} and {max_entries}")
        self.ttl_s, self.max_entries, self.clock = ttl_s, max_entries, clock
        self.stats = CacheStats()
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> Assignment | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] <= self.clock():
                del self._entries[key]
                entry = None
            if entry is None:
                self.stats.misses += 1
                return None
            self._entries.move_to_end(key)
            self.stats.hits += 1
        return Assignment.from_json(entry[1])  # stored as JSON: callers cannot mutate the cached copy

    def put(self, key: str, assignment: Assignment) -> None:
        with self._lock:
            self._entries[key] = (self.clock() + self.ttl_s, assignment.to_json())
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


class RedisAssignmentCache:
    """Assignments in Redis as JSON strings with a TTL; every Redis error is logged, counted and bypassed."""

    def __init__(self, redis_url: str, ttl_s: float, prefix: str = "taps:assignment:", timeout_s: float = 0.2,
                 retry_after_s: float = 1.0, log_every_s: float = 30.0) -> None:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        self.ttl_ms = max(1, round(ttl_s * 1000))
        self.prefix = prefix
        self.retry_after_s = retry_after_s
        self.log_every_s = log_every_s
        self.stats = CacheStats()
        self.url = redacted(redis_url)  # for log lines: never the password
        self._errors = (redis.RedisError, OSError, ValueError)
        self._down_until = 0.0
        self._last_log = -float("inf")
        self._suppressed = 0
        self._lock = threading.Lock()
        # no client-side retries: one short attempt, then the request goes on without the cache
        self.client = redis.Redis.from_url(redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                           retry=Retry(NoBackoff(), 0), retry_on_timeout=False)

    def _available(self) -> bool:
        if time.monotonic() < self._down_until:
            with self._lock:
                self.stats.bypassed += 1
            return False
        return True

    def _failed(self, op: str, error: Exception, back_off: bool = True) -> None:
        now = time.monotonic()
        with self._lock:
            self.stats.errors += 1
            if back_off:
                self._down_until = now + self.retry_after_s
            if now - self._last_log < self.log_every_s:
                self._suppressed += 1
                return
            suppressed, self._suppressed, self._last_log = self._suppressed, 0, now
        more = f" ({suppressed} similar errors not logged)" if suppressed else ""
        log.warning("assignment cache: redis %s at %s failed, bypassing the cache: %s: %s%s", op, self.url,
                    type(error).__name__, error, more)

    def get(self, key: str) -> Assignment | None:
        if not self._available():
            return None
        try:
            raw = self.client.get(self.prefix + key)
        except self._errors as e:
            self._failed("GET", e)
            return None
        if raw is None:
            with self._lock:
                self.stats.misses += 1
            return None
        try:
            assignment = Assignment.from_json(raw)
        except ValueError as e:  # a foreign or corrupted value: treat as a miss, the next put overwrites it
            self._failed("decode", e, back_off=False)
            return None
        with self._lock:
            self.stats.hits += 1
        return assignment

    def put(self, key: str, assignment: Assignment) -> None:
        if not self._available():
            return
        try:
            self.client.set(self.prefix + key, assignment.to_json(), px=self.ttl_ms)
        except self._errors as e:
            self._failed("SET", e)

    def close(self) -> None:
        try:
            self.client.close()
        except self._errors:
            pass


def redacted(url: str) -> str:
    """`url` with its password (if any) replaced by `***`."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def make_assignment_cache(redis_url: str | None, ttl_s: float, max_entries: int = 100_000,
                          prefix: str = "taps:assignment:") -> AssignmentCache:
    """Redis when a URL is configured (shared by all router replicas), else the in-process cache."""
    if redis_url:
        return RedisAssignmentCache(redis_url, ttl_s, prefix=prefix)
    return LocalAssignmentCache(ttl_s, max_entries)
