"""Classification cache shared by every proxy replica: a local LRU in front of Redis.

The only module that imports `redis`. Nothing in Redis lets a reader confirm a guessed prompt: keys
hold an HMAC of the text under a secret that Redis never sees, values hold the compact
classification with keyword-rule indexes instead of the words that matched. A config change
changes the key (its fingerprint is part of it), so a decision made under an old config is never
served. Redis being slow or down never fails or delays a request for long: each call has a short
timeout, and a circuit breaker skips Redis for a while after repeated failures, then tries again by
itself. A value that cannot be decoded is a miss.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
import unicodedata
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cachetools import TTLCache

from .breaker import CircuitBreaker
from .classifiers.base import Classification
from .config import CacheConfig, RouterConfig
from .errors import CacheUnavailable
from .telemetry import NullTelemetry, Telemetry

__all__ = ["SECRET_ENV", "CacheStats", "ClassificationCache", "ClassificationCodec", "cache_key"]

logger = logging.getLogger("litellm_lora_router")

#: Bump when the stored value's shape changes: old entries are then simply never read.
FORMAT_VERSION = "v2"
#: The longest value this codec writes or reads: a longer one is not stored, and read it is a miss
#: (nothing read from Redis is parsed unbounded on the event loop).
MAX_VALUE_BYTES = 64 * 1024
#: Where the HMAC secret comes from when `classification_cache.hash_secret` is not set.
SECRET_ENV = "LORA_ROUTER_CACHE_SECRET"


def cache_key(prefix: str, fingerprint: str, text: str, scope: str | None, secret: bytes) -> str:
    """prefix:version:config-fingerprint:tenant-scope:HMAC-SHA256(secret, normalised text)."""
    normalised = unicodedata.normalize("NFC", text).strip()
    digest = hmac.new(secret, normalised.encode(), hashlib.sha256).hexdigest()
    scope_part = hmac.new(secret, scope.encode(), hashlib.sha256).hexdigest()[:16] if scope else "-"
    return f"{prefix}:{FORMAT_VERSION}:{fingerprint[:16]}:{scope_part}:{digest}"


#: Drawn once per process, so the caches a hot reload builds keep finding the entries of the last one.
_PROCESS_SECRET = secrets.token_bytes(32)


def hash_secret(config: CacheConfig) -> bytes:
    """`hash_secret` from the config, else `$LORA_ROUTER_CACHE_SECRET`, else one generated for
    this process: entries are then not shared with other replicas (set it the same on every replica)."""
    if config.hash_secret is not None:
        return config.hash_secret.get_secret_value().encode()
    if os.environ.get(SECRET_ENV):
        return os.environ[SECRET_ENV].encode()
    if config.redis_url or os.environ.get("REDIS_URL"):
        logger.warning("classification cache: neither classification_cache.hash_secret nor %s is set; using a "
                       "secret generated for this process, so replicas do not share entries. Set it the same on "
                       "every replica.", SECRET_ENV)
    return _PROCESS_SECRET


class ClassificationCodec:
    """Classification <-> compact JSON. Matched keywords travel as rule and keyword indexes into
    `keyword_rules` (the config fingerprint in the key guarantees the same rules on decode)."""

    def __init__(self, keyword_rules: Sequence[tuple[str, Sequence[str]]] = ()) -> None:
        self._rules = [(category, list(keywords)) for category, keywords in keyword_rules]

    @classmethod
    def for_config(cls, config: RouterConfig) -> ClassificationCodec:
        return cls([(rule.category, rule.keywords) for rule in config.keyword_rules])

    def encode(self, c: Classification) -> str | None:
        """None when matched keywords cannot be expressed as indexes, or the value would be longer
        than `MAX_VALUE_BYTES` (then nothing is stored)."""
        matched = self._indexes(c.category, c.matched_keywords)
        if matched is None:
            return None
        value = json.dumps(
            {"c": c.category, "p": round(c.confidence, 6), "m": c.method, "r": c.reason, "x": c.candidate,
             "k": matched, "t": c.truncated, "l": c.lora_name, "o": c.model, "u": c.use_reasoning,
             "s": c.system_prompt},
            separators=(",", ":"),
        )
        return value if len(value.encode()) <= MAX_VALUE_BYTES else None

    def decode(self, value: str | bytes) -> Classification | None:
        """None for anything that is not a value this codec wrote (then it is a miss)."""
        if len(value) > MAX_VALUE_BYTES:
            return None
        try:
            d = json.loads(value)
            if not isinstance(d, Mapping) or not isinstance(d["p"], int | float) or not isinstance(d["m"], str):
                return None
            if not 0.0 <= d["p"] <= 1.0:  # also refuses NaN
                return None
            text_fields = [d[k] for k in ("c", "r", "x", "l", "o", "s")]
            if not all(v is None or isinstance(v, str) for v in text_fields) or not isinstance(d["t"], bool):
                return None
            if d["u"] is not None and not isinstance(d["u"], bool):
                return None
            words = self._words(d["k"])
        except (ValueError, KeyError, TypeError, IndexError):
            return None
        return Classification(d["c"], float(d["p"]), d["m"], reason=d["r"], candidate=d["x"], matched_keywords=words,
                              truncated=d["t"], lora_name=d["l"], model=d["o"], use_reasoning=d["u"],
                              system_prompt=d["s"])

    def _indexes(self, category: str | None, words: Sequence[str]) -> list[Any] | None:
        if not words:
            return []
        for i, (rule_category, keywords) in enumerate(self._rules):
            if rule_category == category and all(w in keywords for w in words):
                return [i, [keywords.index(w) for w in words]]
        return None

    def _words(self, indexes: Any) -> tuple[str, ...]:
        if indexes == []:
            return ()
        rule, positions = indexes
        if not isinstance(rule, int) or not 0 <= rule < len(self._rules):
            raise IndexError(rule)
        keywords = self._rules[rule][1]
        if not all(isinstance(p, int) and 0 <= p < len(keywords) for p in positions):
            raise IndexError(rule)
        return tuple(keywords[p] for p in positions)


@dataclass
class CacheStats:
    hits_local: int = 0
    hits_redis: int = 0
    misses: int = 0
    errors: int = 0
    coalesced: int = 0
    undecodable: int = 0
    breaker: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(3, 5.0), repr=False)

    def snapshot(self) -> dict[str, Any]:
        """Counters and breaker state, for metrics and the demo."""
        return {"hits_local": self.hits_local, "hits_redis": self.hits_redis, "misses": self.misses,
                "errors": self.errors, "coalesced": self.coalesced, "undecodable": self.undecodable,
                "breaker": self.breaker.state}


#: Classifies on a miss: (classification, error class name or None). Errors are not cached.
Compute = Callable[[], Awaitable[tuple[Classification | None, str | None]]]
Result = tuple[Classification | None, str | None, str]


class ClassificationCache:
    """get-or-classify with a local TTL-LRU, Redis, single flight and a circuit breaker."""

    def __init__(self, config: CacheConfig, redis_client: Any | None, codec: ClassificationCodec,
                 telemetry: Telemetry | None = None) -> None:
        self.config = config
        self._telemetry = telemetry or NullTelemetry()
        self._local: TTLCache[str, Classification] | None = (
            TTLCache(maxsize=config.local_max_entries, ttl=config.ttl_seconds) if config.local_max_entries else None
        )
        self._redis = redis_client
        self._codec = codec
        self._secret = hash_secret(config)
        self._inflight: dict[str, asyncio.Future[Result]] = {}
        self.stats = CacheStats(breaker=CircuitBreaker(config.breaker_failures, config.breaker_reset_seconds))

    @property
    def uses_redis(self) -> bool:
        return self._redis is not None

    @classmethod
    def from_config(cls, config: CacheConfig, codec: ClassificationCodec,
                    telemetry: Telemetry | None = None) -> ClassificationCache:
        url = config.redis_url or os.environ.get("REDIS_URL")
        client = None
        if url:
            import redis.asyncio as aioredis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            # a blocking pool: at most `max_connections` sockets; a request that finds none free
            # waits for one (bounded by the call's timeout) instead of opening more
            pool = aioredis.BlockingConnectionPool.from_url(
                url, max_connections=config.max_connections, timeout=config.timeout_seconds,
                socket_timeout=config.timeout_seconds, socket_connect_timeout=config.timeout_seconds,
                retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0,
            )
            client = aioredis.Redis(connection_pool=pool)
        return cls(config, client, codec, telemetry)

    def key(self, fingerprint: str, text: str, scope: str | None = None) -> str:
        return cache_key(self.config.key_prefix, fingerprint, text, scope, self._secret)

    async def get_or_classify(self, key: str, compute: Compute) -> Result:
        """(classification, error, "hit"|"miss"). Concurrent misses for one key share one
        classification (single flight), which runs in its own task: a waiter that is cancelled
        (its client went away) leaves it running for the others."""
        local = self._local.get(key) if self._local is not None else None
        if local is not None:
            self.stats.hits_local += 1
            return local, None, "hit"
        shared = self._inflight.get(key)
        if shared is None:
            shared = asyncio.ensure_future(self._lookup_or_compute(key, compute))
            self._inflight[key] = shared
            shared.add_done_callback(lambda done: self._settle(key, done))
        else:
            self.stats.coalesced += 1
        return await asyncio.shield(shared)

    def _settle(self, key: str, done: asyncio.Future[Result]) -> None:
        if self._inflight.get(key) is done:
            del self._inflight[key]
        if not done.cancelled():
            done.exception()  # mark retrieved: every waiter re-raises it itself

    async def _lookup_or_compute(self, key: str, compute: Compute) -> Result:
        try:
            stored = await self._redis_get(key)
        except CacheUnavailable:
            stored = None
        if stored is not None:
            self.stats.hits_redis += 1
            self._remember(key, stored)
            return stored, None, "hit"
        self.stats.misses += 1
        classification, error = await compute()
        if classification is not None and error is None:
            self._remember(key, classification)
            try:
                await self._redis_set(key, classification)
            except CacheUnavailable:
                pass
        return classification, error, "miss"

    def _remember(self, key: str, classification: Classification) -> None:
        if self._local is not None:
            self._local[key] = classification

    async def _call(self, name: str, operation: Callable[[], Awaitable[Any]]) -> Any:
        breaker = self.stats.breaker
        if self._redis is None or not breaker.allow():
            raise CacheUnavailable("redis skipped")
        started = time.perf_counter()
        try:
            result = await asyncio.wait_for(operation(), self.config.timeout_seconds)
        except Exception as exc:
            self.stats.errors += 1
            before = breaker.state
            breaker.record_failure()
            if breaker.state != before:
                logger.warning("classification cache: redis unavailable (%s); circuit breaker %s",
                               type(exc).__name__, breaker.state)
            raise CacheUnavailable(type(exc).__name__) from exc
        finally:
            self._telemetry.cache_operation("redis", name, time.perf_counter() - started)
        if breaker.state != "closed":
            logger.info("classification cache: redis is back; circuit breaker closed")
        breaker.record_success()
        return result

    async def _redis_get(self, key: str) -> Classification | None:
        value = await self._call("get", lambda: self._redis.get(key))  # type: ignore[union-attr]
        if value is None:
            return None
        decoded = self._codec.decode(value)
        if decoded is None:
            self.stats.undecodable += 1
        return decoded

    async def _redis_set(self, key: str, classification: Classification) -> None:
        value = self._codec.encode(classification)
        if value is None:
            return
        ttl_ms = int(self.config.ttl_seconds * 1000)
        await self._call("set", lambda: self._redis.set(key, value, px=ttl_ms))  # type: ignore[union-attr]

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose(close_connection_pool=True)
