"""One proxy with LiteLLM's prometheus and otel callbacks, Redis, and a canary split of legal-lora:
scrape LiteLLM's `/metrics` after mixed traffic, follow the split per key, find the routing span."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from litellm.proxy._types import hash_token

from litellm_lora_router import LoraRouter, parse_config
from litellm_lora_router.config import ModelScore
from litellm_lora_router.decision import choose_weighted, split_point
from litellm_lora_router.processes import Service, start_redis, start_standin

from .conftest import (
    DEFAULT_LITELLM_CONFIG,
    DEFAULT_ROUTER_CONFIG,
    ROOT,
    ROUTING_OFF_KEY,
    SEEDED_KEYS,
    Proxy,
    StandIn,
    launch_proxy,
)
from .support.prometheus_text import Samples, parse_samples, series, value

SPLIT = {"legal-lora": 70.0, "legal-lora-v2": 30.0}
SPLIT_KEYS = [f"sk-split-{i:03d}-1d5e0c" for i in range(120)]  # fixed: the expected split is fixed too
SECRET = "zebra-7731"
TECH = f"Explain async/await in JavaScript ({SECRET})"
MEDICAL = "What causes high blood pressure?"
OCTOPUS = "Tell me a fun fact about octopuses"


@pytest.fixture(scope="module")
def ops(logs_dir: Path, tmp_path_factory: pytest.TempPathFactory,
        default_models: Path) -> Iterator[tuple[Proxy, StandIn, Path, Path]]:
    """Its router config names models/mom-domain-classifier (put in place by `default_models`)."""
    tmp = tmp_path_factory.mktemp("ops")
    vllm = StandIn(start_standin(logs_dir, adapters=["technical-lora", "medical-lora", "legal-lora", "legal-lora-v2"]))
    redis: Service = start_redis(logs_dir)
    raw = yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text())
    model = raw["classifier"]["category_model"]
    model["model_id"] = str(ROOT / model["model_id"])  # the config now lives in a temporary folder
    model["category_mapping_path"] = str(ROOT / model["category_mapping_path"])
    raw["model_config"]["llama2-7b"]["loras"].append({"name": "legal-lora-v2"})
    raw["categories"][2]["model_scores"] = [
        {"model": "llama2-7b", "lora_name": name, "score": 1.0, "weight": weight, "use_reasoning": True}
        for name, weight in SPLIT.items()]
    raw["classification_cache"] = {"redis_url": redis.url}
    raw["lora_router"] = {"decision_tags": True}
    (tmp / "router.yaml").write_text(yaml.safe_dump(raw))
    litellm = yaml.safe_load(DEFAULT_LITELLM_CONFIG.read_text())
    litellm["model_list"].append({"model_name": "legal-lora-v2", "litellm_params": {
        "model": "hosted_vllm/legal-lora-v2", "api_base": "os.environ/VLLM_API_BASE"}})
    litellm["litellm_settings"]["callbacks"] = [
        "prometheus", "otel", "litellm_lora_router.proxy_handler_instance", "tests.support.spend_recorder.spend_recorder"]
    litellm["general_settings"]["user_api_key_cache_ttl"] = 3600  # seeded keys outlive the split test
    (tmp / "litellm.yaml").write_text(yaml.safe_dump(litellm))
    keys = [dict(k) for k in SEEDED_KEYS if k["key"] == ROUTING_OFF_KEY] + [{"key": k, "models": ["MoM"]} for k in SPLIT_KEYS]
    proxy = launch_proxy(vllm, logs_dir, router_config=tmp / "router.yaml", litellm_config=tmp / "litellm.yaml", keys=keys,
                         extra_env={"OTEL_EXPORTER": "console", "SPEND_RECORD_FILE": str(tmp / "spend.jsonl")})
    yield proxy, vllm, tmp / "router.yaml", tmp / "spend.jsonl"
    for service in (proxy.service, vllm.service, redis):
        service.stop()


def metrics_text(proxy: Proxy) -> str:
    """LiteLLM 1.108.7 asks for a key on /metrics (unless require_auth_for_metrics_endpoint: false)."""
    response = httpx.get(proxy.url + "/metrics/", headers={"Authorization": f"Bearer {proxy.master_key}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def scrape(proxy: Proxy) -> Samples:
    return parse_samples(metrics_text(proxy))


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def chat(proxy: Proxy, text: str, key: str | None = None) -> httpx.Response:
    response = proxy.chat({"model": "MoM", "messages": [{"role": "user", "content": text}]}, key=key)
    assert response.status_code == 200, response.text
    return response


def test_litellm_metrics_endpoint_shows_routing_after_mixed_traffic(ops: tuple[Proxy, StandIn, Path, Path]) -> None:
    proxy, _, router_config, _ = ops
    before = scrape(proxy)
    assert chat(proxy, TECH).headers["x-lora-router-cache"] == "miss"
    assert chat(proxy, TECH).headers["x-lora-router-cache"] == "hit"
    chat(proxy, MEDICAL)
    assert chat(proxy, OCTOPUS).headers["x-lora-router-method"] == "domain"
    assert chat(proxy, MEDICAL, key=ROUTING_OFF_KEY).headers["x-lora-router-fallback"] == "routing_disabled"
    text = metrics_text(proxy)
    after = parse_samples(text)

    assert delta(after, before, "llm_category_classifications_count", category="technical") == 2
    assert delta(after, before, "llm_category_classifications_count", category="medical") == 1
    assert delta(after, before, "llm_category_classifications_count", category="general") == 1
    assert delta(after, before, "llm_routing_reason_codes_total", reason_code="auto_routing", model="technical-lora") == 2
    assert delta(after, before, "llm_routing_reason_codes_total", reason_code="routing_disabled", model="MoM") == 1
    assert delta(after, before, "lora_router_fallbacks_total", reason="routing_disabled") == 1
    assert delta(after, before, "llm_model_routing_modifications_total", source_model="MoM", target_model="technical-lora") == 2
    assert delta(after, before, "llm_model_routing_modifications_total", source_model="MoM", target_model="llama2-7b") == 1
    assert delta(after, before, "llm_reasoning_decisions_total", category="medical", model="medical-lora", enabled="true",
                 effort="high") == 1
    assert delta(after, before, "llm_cache_hits_total") == 1 and delta(after, before, "llm_cache_misses_total") == 3
    # histograms: a bucket, its +Inf, its count
    keyword = {"category": "technical", "classification_method": "keyword"}
    assert delta(after, before, "llm_classification_confidence_bucket", le="1.0", **keyword) == 2
    assert delta(after, before, "llm_classification_confidence_bucket", le="0.9", **keyword) == 0
    assert delta(after, before, "llm_classifier_latency_seconds_count", classifier="keyword") == 3  # the hit skips it
    assert delta(after, before, "llm_classifier_latency_seconds_count", classifier="domain") == 1
    assert delta(after, before, "llm_classifier_latency_seconds_bucket", classifier="domain", le="+Inf") == 1
    assert delta(after, before, "llm_model_routing_latency_seconds_count") == 5
    assert delta(after, before, "llm_cache_operation_duration_seconds_count", backend="redis", operation="get") == 3
    assert delta(after, before, "llm_cache_operation_duration_seconds_count", backend="redis", operation="set") == 3
    assert delta(after, before, "lora_router_encoder_batch_size_count") == 2  # one pass per encoder of the head (USE, MiniLM)
    assert value(after, "lora_router_circuit_breaker_state", dependency="redis") == 0
    # the router's fingerprint (config and model files), the one its cache keys carry
    fingerprint = LoraRouter.from_config(parse_config(yaml.safe_load(router_config.read_text()))).fingerprint
    assert series(after, "lora_router_config_info") == [{"fingerprint": fingerprint[:16]}]
    assert series(after, "litellm_proxy_total_requests_metric_total")  # LiteLLM's own metrics, same registry
    assert SECRET not in text and proxy.master_key not in text and "javascript" not in text.lower()


def expected_variant(key: str) -> str:
    """What the split must give this key: its (hashed) token, hashed again, placed in the shares."""
    sticky = hashlib.sha256(f"key:{hash_token(key)}".encode()).hexdigest()
    entries = [ModelScore(model="llama2-7b", lora_name=name, score=1.0, weight=weight) for name, weight in SPLIT.items()]
    return choose_weighted(entries, split_point("legal", sticky)).target


def test_split_follows_the_weights_per_key_through_the_proxy(ops: tuple[Proxy, StandIn, Path, Path]) -> None:
    proxy, vllm, _, spend = ops
    before = scrape(proxy)
    seen: dict[str, str] = {}
    for key in SPLIT_KEYS:
        vllm.clear()
        response = chat(proxy, "Is this contract valid?", key=key)
        seen[key] = response.headers["x-lora-router-variant"]
        assert response.headers["x-lora-router-adapter"] == seen[key] == vllm.received()[0]["model"]
    for key in SPLIT_KEYS[:20]:  # a key keeps its variant
        assert chat(proxy, "Can I sue my landlord?", key=key).headers["x-lora-router-variant"] == seen[key]
    assert seen == {key: expected_variant(key) for key in SPLIT_KEYS}
    share = sum(v == "legal-lora-v2" for v in seen.values()) / len(seen)
    assert abs(share - 0.3) < 0.1, share  # 120 keys: one standard deviation is 0.042
    after = scrape(proxy)
    for name in SPLIT:
        expected = sum(v == name for v in seen.values()) + sum(seen[k] == name for k in SPLIT_KEYS[:20])
        assert delta(after, before, "lora_router_split_assignments_total", category="legal", variant=name) == expected
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        records = [json.loads(line) for line in spend.read_text().splitlines()] if spend.exists() else []
        variants = [r for r in records if (r["spend_logs_metadata"] or {}).get("lora_router_variant")]
        if len(variants) >= len(SPLIT_KEYS):
            break
        time.sleep(0.2)
    record = variants[0]
    assert record["model_group"] == record["spend_logs_metadata"]["lora_router_variant"]
    assert f"lora-variant:{record['model_group']}" in record["request_tags"]


def console_spans(log: str) -> list[dict[str, Any]]:
    """Spans the console exporter printed (indented JSON objects) among the proxy's other output."""
    decoder = json.JSONDecoder()
    spans = []
    start = log.find('{\n    "name"')
    while start != -1:
        span, end = decoder.raw_decode(log, start)
        spans.append(span)
        start = log.find('{\n    "name"', end)
    return spans


def test_the_routing_step_is_a_span_in_litellms_trace(ops: tuple[Proxy, StandIn, Path, Path]) -> None:
    proxy = ops[0]
    chat(proxy, f"What causes high blood pressure? ({SECRET}-span)")
    deadline = time.monotonic() + 30  # the console exporter prints in batches
    span: dict[str, Any] | None = None
    parents: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not parents:
        spans = console_spans(proxy.service.log())
        ours = [s for s in spans if s["name"] == "lora_router.route"
                and s["attributes"].get("lora_router.adapter") == "medical-lora"]
        span = ours[-1] if ours else None
        parents = [s for s in spans if span is not None and s["context"]["span_id"] == span["parent_id"]]
        time.sleep(0.5)
    assert span is not None and parents, proxy.service.log()[-3000:]
    assert span["attributes"]["lora_router.category"] == "medical"
    assert span["attributes"]["lora_router.method"] == "keyword"
    assert span["attributes"]["lora_router.confidence"] == 1.0
    assert span["attributes"]["lora_router.cache"] in {"hit", "miss"}
    assert SECRET not in json.dumps(span)
    assert parents[0]["context"]["trace_id"] == span["context"]["trace_id"]
