"""The classification cache: unit tests on fakeredis, then a real redis-server and real proxies."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
import shutil
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
from litellm_lora_router.cache import SECRET_ENV, ClassificationCache, ClassificationCodec, cache_key
from litellm_lora_router.classifiers import KeywordClassifier
from litellm_lora_router.classifiers.base import Classifier
from litellm_lora_router.processes import Service, start_redis

from .conftest import DEFAULT_ROUTER_CONFIG, MEDICAL_ONLY_KEY, ROOT, SEEDED_KEYS, Proxy, StandIn, launch_proxy

SECRET = "zebra-7731"
HASH_SECRET = "test-hash-secret-0451"


@pytest.fixture(autouse=True)
def shared_hash_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    """Routers in one test act as replicas of one deployment: the same HMAC secret."""
    monkeypatch.setenv(SECRET_ENV, HASH_SECRET)


def raw_config(**cache: Any) -> dict[str, Any]:
    """The default config with this cache section. Redis calls get 2 s, not the default 50 ms: on a
    loaded CI machine a set could time out, and a test expecting a shared hit would see a miss."""
    raw = yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text())
    raw["classification_cache"] = {"timeout_seconds": 2.0, **cache}
    return raw


def request(text: str) -> dict[str, Any]:
    return {"model": "MoM", "messages": [{"role": "user", "content": text}]}


class CountingClassifier(Classifier):
    """Wraps the keyword classifier and counts model passes."""

    method = "keyword"

    def __init__(self, rules: Any, delay: float = 0.0) -> None:
        self.inner = KeywordClassifier(rules)
        self.calls = 0
        self.delay = delay

    async def classify(self, texts: Sequence[str], caller: object = None, contexts: object = None) -> list[Classification]:
        self.calls += 1
        await asyncio.sleep(self.delay)
        return await self.inner.classify(texts, None)


def router_with(raw: dict[str, Any], client: Any = None, delay: float = 0.0) -> tuple[LoraRouter, CountingClassifier]:
    config = parse_config(raw)
    counting = CountingClassifier(config.keyword_rules, delay)
    cache = ClassificationCache(config.classification_cache, client, ClassificationCodec.for_config(config))
    return LoraRouter(config, [counting], cache), counting


def test_key_shape_is_keyed_by_the_secret() -> None:
    key = cache_key("pfx", "f" * 64, f"hello {SECRET}", "team:a", b"s1")
    assert key.startswith("pfx:v2:ffffffffffffffff:") and SECRET not in key
    assert key != cache_key("pfx", "f" * 64, f"hello {SECRET}", "team:b", b"s1")
    assert key != cache_key("pfx", "f" * 64, f"hello {SECRET}", "team:a", b"s2")
    assert cache_key("p", "f", " x ", None, b"s") == cache_key("p", "f", "x", None, b"s")
    assert key.rsplit(":", 1)[1] != hashlib.sha256(f"hello {SECRET}".encode()).hexdigest()


def test_codec_keeps_every_decision_field_and_no_words() -> None:
    codec = ClassificationCodec([("medical", ["pain"]), ("technical", ["python", "sql", "javascript"])])
    keyword = Classification("technical", 1.0, "keyword", matched_keywords=("javascript", "python"), truncated=True)
    mcp = Classification("technical", 0.9, "mcp", lora_name="acme-support-lora", model="llama2-7b",
                         use_reasoning=False, system_prompt="You are a senior engineer.")
    for classification in (keyword, mcp, Classification.no_match("domain", 0.3, candidate="legal")):
        value = codec.encode(classification)
        assert value is not None and codec.decode(value) == classification
    assert "javascript" not in (codec.encode(keyword) or "") and "python" not in (codec.encode(keyword) or "")


@pytest.mark.parametrize("value", [
    "not json", "[1, 2]", '{"c": "technical"}', json.dumps({"c": "technical", "p": "high", "m": "keyword"}),
    json.dumps({"c": "technical", "p": 1.0, "m": "keyword", "r": None, "x": None, "k": [9, [0]], "t": False,
                "l": None, "o": None, "u": None, "s": None}),
    json.dumps({"c": "technical", "p": 1.0, "m": "mcp", "r": None, "x": None, "k": [], "t": False,
                "l": 5, "o": None, "u": "yes", "s": None}),
    # a confidence no classifier gives (it would pass any threshold), a rule index counted from
    # the end, and a value bigger than any this codec writes
    json.dumps({"c": "technical", "p": 7.0, "m": "keyword", "r": None, "x": None, "k": [], "t": False,
                "l": None, "o": None, "u": None, "s": None}),
    '{"c": "technical", "p": NaN, "m": "keyword", "r": null, "x": null, "k": [], "t": false, "l": null, '
    '"o": null, "u": null, "s": null}',
    json.dumps({"c": "technical", "p": 1.0, "m": "keyword", "r": None, "x": None, "k": [-1, [0]], "t": False,
                "l": None, "o": None, "u": None, "s": None}),
    json.dumps({"c": "technical", "p": 1.0, "m": "mcp", "r": None, "x": None, "k": [], "t": False,
                "l": None, "o": None, "u": None, "s": "x" * 1_000_000}),
])
async def test_undecodable_value_is_a_miss_not_an_error(value: str) -> None:
    client = fakeredis.FakeAsyncRedis()
    router, counting = router_with(raw_config(), client)
    text = "Explain async/await in JavaScript"
    assert router.cache is not None
    await client.set(router.cache.key(router.fingerprint, text), value)
    routed = await router.route(request(text))
    assert (routed.cache, routed.decision.model, routed.decision.reason) == ("miss", "technical-lora", None)
    assert counting.calls == 1 and router.cache.stats.undecodable == 1
    again, _ = router_with(raw_config(), client)  # another replica: the bad value was replaced
    assert (await again.route(request(text))).cache == "hit"


async def test_single_flight_coalesces_concurrent_misses() -> None:
    router, counting = router_with(raw_config(), fakeredis.FakeAsyncRedis(), delay=0.05)
    results = await asyncio.gather(*(router.route(request("python question")) for _ in range(10)))
    assert counting.calls == 1
    assert {r.decision.model for r in results} == {"technical-lora"}
    assert router.cache is not None and router.cache.stats.coalesced == 9


async def test_followers_get_the_result_when_the_leader_is_cancelled() -> None:
    router, counting = router_with(raw_config(), fakeredis.FakeAsyncRedis(), delay=0.3)
    leader = asyncio.create_task(router.route(request("python question")))
    await asyncio.sleep(0.05)
    followers = [asyncio.create_task(router.route(request("python question"))) for _ in range(3)]
    await asyncio.sleep(0.05)
    leader.cancel()  # its client disconnected
    results = await asyncio.gather(*followers)
    assert [r.decision.model for r in results] == ["technical-lora"] * 3
    assert counting.calls == 1
    with pytest.raises(asyncio.CancelledError):
        await leader


async def test_hit_applies_the_full_decision() -> None:
    router, counting = router_with(raw_config(), fakeredis.FakeAsyncRedis())
    first = await router.route(request("Explain async/await in JavaScript"))
    second = await router.route(request("Explain async/await in JavaScript"))
    assert (first.cache, second.cache) == ("miss", "hit") and counting.calls == 1
    assert second.decision == first.decision


async def test_a_conversation_is_not_part_of_the_key_when_no_classifier_reads_it() -> None:
    """Keyword rules read the last turn only: earlier turns must not split its cache entries."""
    router, counting = router_with(raw_config())
    assert router.config.lora_router.history_blend  # the default, which a domain classifier would use
    first = await router.route(request("Explain async/await in JavaScript"))
    conversation = {"model": "MoM", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                                                 {"role": "user", "content": "Explain async/await in JavaScript"}]}
    second = await router.route(conversation)
    assert (first.cache, second.cache, counting.calls) == ("miss", "hit", 1)


def test_without_a_configured_secret_every_cache_of_a_process_keys_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """A hot reload builds a new cache: a secret drawn per cache would orphan every entry."""
    monkeypatch.delenv(SECRET_ENV)
    config = parse_config(raw_config()).classification_cache
    one, two = (ClassificationCache(config, None, ClassificationCodec()) for _ in range(2))
    assert one.key("f" * 64, "text", None) == two.key("f" * 64, "text", None)


async def test_errors_are_not_cached() -> None:
    class Broken(Classifier):
        method = "domain"

        async def classify(self, texts: Sequence[str], caller: object = None, contexts: object = None) -> list[Classification]:
            raise RuntimeError("boom")

    config = parse_config(raw_config())
    cache = ClassificationCache(config.classification_cache, fakeredis.FakeAsyncRedis(), ClassificationCodec())
    router = LoraRouter(config, [Broken()], cache)
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
    a = LoraRouter.from_config(parse_config(raw))
    b = LoraRouter.from_config(parse_config(raw))
    text = f"Explain async/await in JavaScript for {SECRET}"
    assert (await a.route(request(text))).cache == "miss"
    routed = await b.route(request(text))
    assert routed.cache == "hit" and routed.decision.model == "technical-lora"
    # the words that matched are restored on a hit, from rule indexes
    assert routed.decision.matched_keywords == ("javascript", "async/await", "async", "await")
    values = {k: v for k, v in all_values(redis_server.url).items() if k.startswith("share:")}
    [(key, value)] = values.items()
    assert SECRET not in key and SECRET not in value
    for word in ("javascript", "async", "await", "JavaScript"):  # neither the prompt nor the words that matched
        assert word not in value
    assert json.loads(value)["c"] == "technical"
    assert key.rsplit(":", 1)[1] != hashlib.sha256(text.encode()).hexdigest()  # a guessed prompt cannot be confirmed


async def test_replicas_with_another_secret_do_not_share(redis_server: Service,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    raw = raw_config(redis_url=redis_server.url, key_prefix="secret")
    a = LoraRouter.from_config(parse_config(raw))
    monkeypatch.setenv(SECRET_ENV, "another-deployment")
    b = LoraRouter.from_config(parse_config(raw))
    configured = LoraRouter.from_config(parse_config(raw_config(redis_url=redis_server.url, key_prefix="secret",
                                                                  hash_secret=HASH_SECRET)))
    assert (await a.route(request("sql joins"))).cache == "miss"
    assert (await b.route(request("sql joins"))).cache == "miss"
    assert (await configured.route(request("sql joins"))).cache == "hit"  # config value = the env value of a


async def test_redis_connections_are_bounded(logs_dir: Path) -> None:
    server = start_redis(logs_dir)
    try:
        router = LoraRouter.from_config(parse_config(raw_config(redis_url=server.url, local_max_entries=0,
                                                                timeout_seconds=2.0)))
        admin = redis.Redis.from_url(server.url)
        before = admin.info("stats")["total_connections_received"]
        results = await asyncio.gather(*(router.route(request(f"python question {i}")) for i in range(200)))
        assert {r.decision.model for r in results} == {"technical-lora"}
        assert router.cache is not None and router.cache.stats.errors == 0
        opened = admin.info("stats")["total_connections_received"] - before
        assert 1 <= opened <= 32  # the default max_connections, however many requests at once
        await router.aclose()
    finally:
        server.stop()


async def test_retrained_model_is_not_served_from_the_cache(redis_server: Service, tmp_path: Path) -> None:
    """Same paths, new weights (what `train-defaults` does): the fingerprint follows the files."""
    import numpy as np

    model = tmp_path / "clf"
    shutil.copytree(ROOT / "models" / "mom-domain-classifier", model)
    raw = raw_config(redis_url=redis_server.url, key_prefix="retrain")
    del raw["keyword_rules"]
    raw["classifier"]["category_model"] = {"model_id": str(model),
                                           "category_mapping_path": str(model / "category_mapping.json")}
    text = "Tell me a fun fact about octopuses"
    assert (await LoraRouter.from_config(parse_config(raw)).route(request(text))).cache == "miss"
    assert (await LoraRouter.from_config(parse_config(raw)).route(request(text))).cache == "hit"
    weights = dict(np.load(model / "head.npz"))
    np.savez(model / "head.npz", **{k: v * 1.001 for k, v in weights.items()})
    assert (await LoraRouter.from_config(parse_config(raw)).route(request(text))).cache == "miss"


async def test_ttl_expiry_and_config_change(redis_server: Service) -> None:
    raw = raw_config(redis_url=redis_server.url, key_prefix="ttl", ttl_seconds=0.5, local_max_entries=0)
    client = ClassificationCache.from_config(parse_config(raw).classification_cache, ClassificationCodec())._redis
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
    path.write_text(yaml.safe_dump(raw_config(redis_url=redis_server.url, breaker_failures=2, breaker_reset_seconds=0.5,
                                              hash_secret=HASH_SECRET)))
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
