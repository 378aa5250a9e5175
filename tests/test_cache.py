"""The classification cache: unit tests on fakeredis, then a real redis-server and real proxies."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
import yaml

from litellm_lora_router import Classification, LoraRouter, parse_config
from litellm_lora_router.breaker import CircuitBreaker
from litellm_lora_router.cache import ClassificationCache, cache_key, decode, encode
from litellm_lora_router.classifiers import KeywordClassifier
from litellm_lora_router.config import CacheConfig
from litellm_lora_router.processes import Service, start_redis

from .conftest import DEFAULT_ROUTER_CONFIG, MEDICAL_ONLY_KEY, Proxy, StandIn, launch_proxy, SEEDED_KEYS

SECRET = "zebra-7731"


def raw_config(**cache: Any) -> dict[str, Any]:
    raw = yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text())
    raw["classification_cache"] = cache
    return raw


def request(text: str) -> dict[str, Any]:
    return {"model": "MoM", "messages": [{"role": "user", "content": text}]}


class CountingClassifier:
    """Wraps the keyword classifier and counts model passes."""

    method = "keyword"

    def __init__(self, rules: Any, delay: float = 0.0) -> None:
        self.inner = KeywordClassifier(rules)
        self.calls = 0
        self.delay = delay

    async def classify(self, texts: Sequence[str], caller: object = None) -> list[Classification]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return await self.inner.classify(texts, None)


def router_with(raw: dict[str, Any], client: Any = None, delay: float = 0.0) -> tuple[LoraRouter, CountingClassifier]:
    config = parse_config(raw)
    counting = CountingClassifier(config.keyword_rules, delay)
    return LoraRouter(config, [counting], ClassificationCache(config.classification_cache, client)), counting


def test_encode_roundtrip_and_key_shape() -> None:
    c = Classification("technical", 0.9, "keyword", matched_keywords=("python",), truncated=True)
    assert decode(encode(c)) == c
    key = cache_key("pfx", "f" * 64, f"hello {SECRET}", scope="team-a")
    assert key.startswith("pfx:v1:ffffffffffffffff:") and SECRET not in key
    assert key != cache_key("pfx", "f" * 64, f"hello {SECRET}", scope="team-b")
    assert cache_key("p", "f", " x ") == cache_key("p", "f", "x")


async def test_single_flight_coalesces_concurrent_misses() -> None:
    router, counting = router_with(raw_config(), fakeredis.FakeAsyncRedis(), delay=0.05)
    results = await asyncio.gather(*(router.route(request("python question")) for _ in range(10)))
    assert counting.calls == 1
    assert {r.decision.model for r in results} == {"technical-lora"}
    assert router.cache is not None and router.cache.stats.coalesced == 9


async def test_hit_applies_the_full_decision() -> None:
    router, counting = router_with(raw_config(), fakeredis.FakeAsyncRedis())
    first = await router.route(request("Explain async/await in JavaScript"))
    second = await router.route(request("Explain async/await in JavaScript"))
    assert (first.cache, second.cache) == ("miss", "hit") and counting.calls == 1
    assert second.decision == first.decision


async def test_errors_are_not_cached() -> None:
    class Broken:
        method = "domain"

        async def classify(self, texts: Sequence[str], caller: object = None) -> list[Classification]:
            raise RuntimeError("boom")

    config = parse_config(raw_config())
    router = LoraRouter(config, [Broken()], ClassificationCache(config.classification_cache, fakeredis.FakeAsyncRedis()))
    for _ in range(2):
        routed = await router.route(request("anything"))
        assert routed.cache == "miss" and routed.decision.reason == "classifier_error"


class DeadRedis:
    def __init__(self) -> None:
        self.calls = 0

    async def get(self, key: str) -> None:
        self.calls += 1
        raise ConnectionError("down")

    async def set(self, *args: Any, **kwargs: Any) -> None:
        self.calls += 1
        raise ConnectionError("down")


async def test_circuit_breaker_skips_redis_then_retries() -> None:
    dead = DeadRedis()
    router, _ = router_with(raw_config(breaker_failures=2, breaker_reset_seconds=0.2, local_max_entries=0), dead)
    for i in range(5):
        routed = await router.route(request(f"python {i}"))
        assert routed.decision.model == "technical-lora"
    assert router.cache is not None
    assert dead.calls == 2 and router.cache.stats.breaker.state == "open"
    time.sleep(0.25)
    assert router.cache.stats.breaker.state == "half_open"
    await router.route(request("python again"))
    assert dead.calls == 3 and router.cache.stats.breaker.state == "open"
    assert router.cache.stats.snapshot()["errors"] == 3


def test_breaker_closes_on_success() -> None:
    breaker = CircuitBreaker(failures=1, reset_seconds=60)
    breaker.record_failure()
    assert not breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"


# --- a real redis-server ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def redis_server(logs_dir: Path) -> Iterator[Service]:
    server = start_redis(logs_dir)
    yield server
    server.stop()


def all_values(url: str) -> dict[str, str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    return {k: client.get(k) or "" for k in client.keys("*")}


async def test_real_redis_shares_across_routers_and_holds_no_prompt(redis_server: Service) -> None:
    raw = raw_config(redis_url=redis_server.url, key_prefix="share")
    a, calls_a = router_with(raw, ClassificationCache.from_config(CacheConfig(redis_url=redis_server.url))._redis)
    b, calls_b = router_with(raw, ClassificationCache.from_config(CacheConfig(redis_url=redis_server.url))._redis)
    text = f"Explain async/await in JavaScript for {SECRET}"
    assert (await a.route(request(text))).cache == "miss"
    routed = await b.route(request(text))
    assert routed.cache == "hit" and routed.decision.model == "technical-lora" and calls_b.calls == 0
    values = all_values(redis_server.url)
    assert any(k.startswith("share:v1:") for k in values)
    assert all(SECRET not in k and SECRET not in v and "JavaScript" not in v for k, v in values.items())
    assert json.loads(next(iter(values.values())))["c"] == "technical"


async def test_ttl_expiry_and_config_change(redis_server: Service) -> None:
    raw = raw_config(redis_url=redis_server.url, key_prefix="ttl", ttl_seconds=0.5, local_max_entries=0)
    client = ClassificationCache.from_config(parse_config(raw).classification_cache)._redis
    router, _ = router_with(raw, client)
    assert (await router.route(request("sql joins"))).cache == "miss"
    assert (await router.route(request("sql joins"))).cache == "hit"
    changed = copy.deepcopy(raw)
    changed["keyword_rules"][0]["keywords"].append("haskell")
    other, _ = router_with(changed, client)
    assert (await other.route(request("sql joins"))).cache == "miss"
    await asyncio.sleep(0.7)
    assert (await router.route(request("sql joins"))).cache == "miss"


# --- through real proxies --------------------------------------------------------------------

@pytest.fixture(scope="module")
def cached_proxies(redis_server: Service, standin: StandIn, logs_dir: Path,
                   tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, Proxy]]:
    path = tmp_path_factory.mktemp("cache") / "router_config.yaml"
    path.write_text(yaml.safe_dump(raw_config(redis_url=redis_server.url, breaker_failures=2, breaker_reset_seconds=0.5)))
    first = launch_proxy(standin, logs_dir, router_config=path, keys=[dict(k) for k in SEEDED_KEYS])
    second = launch_proxy(standin, logs_dir, router_config=path, keys=[dict(k) for k in SEEDED_KEYS])
    yield first, second
    first.service.stop()
    second.service.stop()


def test_two_proxies_share_one_redis(cached_proxies: tuple[Proxy, Proxy], standin: StandIn) -> None:
    first, second = cached_proxies
    body = request("How do I write a python generator for pagination?")
    a = first.chat(body)
    b = second.chat(body)
    assert a.headers["x-lora-router-cache"] == "miss" and b.headers["x-lora-router-cache"] == "hit"
    for response in (a, b):
        assert response.headers["x-lora-router-adapter"] == "technical-lora"
        assert response.headers["x-lora-router-category"] == "technical"
    standin.clear()
    assert second.chat(body).status_code == 200
    [received] = standin.received()
    assert received["model"] == "technical-lora" and received["messages"][0]["role"] == "system"


def test_tenant_decisions_do_not_leak(cached_proxies: tuple[Proxy, Proxy]) -> None:
    first, second = cached_proxies
    body = request("Best way to structure a Kubernetes deployment?")
    restricted = first.chat(body, key=MEDICAL_ONLY_KEY)
    assert restricted.headers["x-lora-router-fallback"] == "adapter_not_allowed"
    open_key = second.chat(body)
    assert open_key.headers["x-lora-router-adapter"] == "technical-lora"
    assert open_key.headers["x-lora-router-cache"] == "hit"
    again = second.chat(body, key=MEDICAL_ONLY_KEY)
    assert again.headers["x-lora-router-adapter"] == "llama2-7b"


def test_redis_killed_and_restarted_while_requests_flow(
    cached_proxies: tuple[Proxy, Proxy], redis_server: Service, logs_dir: Path
) -> None:
    first, _ = cached_proxies
    port = int(redis_server.url.rsplit(":", 1)[1].split("/")[0])
    redis_server.stop()
    for i in range(6):
        response = first.chat(request(f"debug this docker build, attempt {i}"))
        assert response.status_code == 200
        assert response.headers["x-lora-router-adapter"] == "technical-lora"
    restarted = start_redis(logs_dir, port)
    redis_server.process = restarted.process  # the module fixture stops it at the end
    deadline = time.monotonic() + 15
    stored = False
    i = 0
    while time.monotonic() < deadline and not stored:
        i += 1
        assert first.chat(request(f"a fresh javascript question {i}")).status_code == 200
        stored = bool(all_values(restarted.url))
        time.sleep(0.2)
    assert stored, "caching did not resume after redis came back"
