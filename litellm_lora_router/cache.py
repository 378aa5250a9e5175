"""Classification cache shared by every proxy replica: a local LRU in front of Redis.

The only module that imports `redis`. Keys hold hashes, values hold the compact classification:
prompt text is never written. A config change changes the key (its fingerprint is part of it), so a
decision made under an old config is never served. Redis being slow or down never fails or delays a
request for long: each call has a short timeout, and a circuit breaker skips Redis for a while after
repeated failures, then tries again by itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import unicodedata
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cachetools import TTLCache

from .breaker import CircuitBreaker
from .classifiers.base import Classification
from .config import CacheConfig
from .errors import CacheUnavailable

__all__ = ["CacheStats", "ClassificationCache", "cache_key"]

logger = logging.getLogger("litellm_lora_router")

#: Bump when the stored value's shape changes: old entries are then simply never read.
FORMAT_VERSION = "v1"


def cache_key(prefix: str, fingerprint: str, text: str, scope: str | None = None) -> str:
    """prefix:version:config-fingerprint:tenant-scope:sha256(normalised text)."""
    normalised = unicodedata.normalize("NFC", text).strip()
    digest = hashlib.sha256(normalised.encode()).hexdigest()
    scope_part = hashlib.sha256(scope.encode()).hexdigest()[:16] if scope else "-"
    return f"{prefix}:{FORMAT_VERSION}:{fingerprint[:16]}:{scope_part}:{digest}"


def encode(classification: Classification) -> str:
    c = classification
    return json.dumps(
        {"c": c.category, "p": round(c.confidence, 6), "m": c.method, "r": c.reason, "x": c.candidate,
         "k": list(c.matched_keywords), "t": c.truncated},
        separators=(",", ":"),
    )


def decode(value: str | bytes) -> Classification:
    d = json.loads(value)
    return Classification(d["c"], float(d["p"]), d["m"], reason=d["r"], candidate=d["x"],
                          matched_keywords=tuple(d["k"]), truncated=bool(d["t"]))


@dataclass
class CacheStats:
    hits_local: int = 0
    hits_redis: int = 0
    misses: int = 0
    errors: int = 0
    coalesced: int = 0
    breaker: CircuitBreaker = field(default_factory=lambda: CircuitBreaker(3, 5.0), repr=False)

    def snapshot(self) -> dict[str, Any]:
        """Counters and breaker state, for metrics and the demo."""
        return {"hits_local": self.hits_local, "hits_redis": self.hits_redis, "misses": self.misses,
                "errors": self.errors, "coalesced": self.coalesced, "breaker": self.breaker.state}


#: Classifies on a miss: (classification, error class name or None). Errors are not cached.
Compute = Callable[[], Awaitable[tuple[Classification | None, str | None]]]
Result = tuple[Classification | None, str | None, str]


class ClassificationCache:
    """get-or-classify with a local TTL-LRU, Redis, single flight and a circuit breaker."""

    def __init__(self, config: CacheConfig, redis_client: Any | None = None) -> None:
        self.config = config
        self._local: TTLCache[str, Classification] | None = (
            TTLCache(maxsize=config.local_max_entries, ttl=config.ttl_seconds) if config.local_max_entries else None
        )
        self._redis = redis_client
        self._inflight: dict[str, asyncio.Future[Result]] = {}
        self.stats = CacheStats(breaker=CircuitBreaker(config.breaker_failures, config.breaker_reset_seconds))

    @classmethod
    def from_config(cls, config: CacheConfig) -> ClassificationCache:
        url = config.redis_url or os.environ.get("REDIS_URL")
        client = None
        if url:
            import redis.asyncio as aioredis
            from redis.backoff import NoBackoff
            from redis.retry import Retry

            client = aioredis.Redis.from_url(
                url, socket_timeout=config.timeout_seconds, socket_connect_timeout=config.timeout_seconds,
                retry=Retry(NoBackoff(), 0), retry_on_timeout=False, health_check_interval=0,
            )
        return cls(config, client)

    async def get_or_classify(self, key: str, compute: Compute) -> Result:
        """(classification, error, "hit"|"miss"). Concurrent misses for one key share one
        classification (single flight)."""
        local = self._local.get(key) if self._local is not None else None
        if local is not None:
            self.stats.hits_local += 1
            return local, None, "hit"
        pending = self._inflight.get(key)
        if pending is not None:
            self.stats.coalesced += 1
            return await asyncio.shield(pending)
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            result = await self._lookup_or_compute(key, compute)
            future.set_result(result)
            return result
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            del self._inflight[key]

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

    async def _call(self, operation: Callable[[], Awaitable[Any]]) -> Any:
        breaker = self.stats.breaker
        if self._redis is None or not breaker.allow():
            raise CacheUnavailable("redis skipped")
        try:
            result = await asyncio.wait_for(operation(), self.config.timeout_seconds)
        except Exception as exc:
            self.stats.errors += 1
            before = breaker.state
            breaker.record_failure()
            if breaker.state != before:
                logger.warning("classification cache: redis unavailable (%s); circuit breaker %s", type(exc).__name__, breaker.state)
            raise CacheUnavailable(type(exc).__name__) from exc
        if breaker.state != "closed":
            logger.info("classification cache: redis is back; circuit breaker closed")
        breaker.record_success()
        return result

    async def _redis_get(self, key: str) -> Classification | None:
        value = await self._call(lambda: self._redis.get(key))  # type: ignore[union-attr]
        return decode(value) if value is not None else None

    async def _redis_set(self, key: str, classification: Classification) -> None:
        ttl_ms = int(self.config.ttl_seconds * 1000)
        await self._call(lambda: self._redis.set(key, encode(classification), px=ttl_ms))  # type: ignore[union-attr]

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
