"""Prometheus metrics: names, bounded labels, histograms, and workers adding up (`--num_workers`).

Scraping LiteLLM's own `/metrics` after mixed traffic through the proxy is in test_operations_proxy.py;
our own port is scraped in test_reload.py.
"""

from __future__ import annotations

import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from litellm_lora_router import Classification, Decision, LoraRouter, Routed, load_config
from litellm_lora_router.classifiers import KeywordClassifier
from litellm_lora_router.classifiers.base import Classifier
from litellm_lora_router.metrics import RouterMetrics
from litellm_lora_router.processes import Service, start_proxy

from .conftest import DEFAULT_LITELLM_CONFIG, DEFAULT_ROUTER_CONFIG, StandIn, new_master_key
from .support.prometheus_text import parse_samples, series, value


def scrape(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


async def test_a_routed_request_is_counted_under_vsr_names() -> None:
    registry = CollectorRegistry()
    metrics = RouterMetrics(registry)
    config = load_config(DEFAULT_ROUTER_CONFIG)
    router = LoraRouter(config, [KeywordClassifier(config.keyword_rules)], telemetry=metrics)
    body = {"model": "MoM", "messages": [{"role": "user", "content": "Explain async/await in JavaScript, project zebra-7731"}]}
    for _ in range(3):
        metrics.observe_routed(await router.route(body), "MoM", config)
    text = scrape(registry)
    s = parse_samples(text)
    assert value(s, "llm_category_classifications_count", category="technical") == 3
    assert value(s, "llm_model_routing_modifications_total", source_model="MoM", target_model="technical-lora") == 3
    assert value(s, "llm_routing_reason_codes_total", reason_code="auto_routing", model="technical-lora") == 3
    assert value(s, "llm_reasoning_decisions_total", category="technical", model="technical-lora", enabled="true",
                 effort="medium") == 3
    assert value(s, "llm_classification_confidence_bucket", category="technical", classification_method="keyword", le="1.0") == 3
    assert value(s, "llm_classification_confidence_bucket", category="technical", classification_method="keyword", le="0.9") == 0
    assert value(s, "llm_classifier_latency_seconds_count", classifier="keyword") == 3
    assert value(s, "llm_model_routing_latency_seconds_count") == 3
    assert "zebra" not in text and "javascript" not in text.lower()


def test_labels_are_bounded_to_names_from_the_config() -> None:
    """A classifier (an MCP server) may answer any string: it never becomes a label value."""
    registry = CollectorRegistry()
    metrics = RouterMetrics(registry)
    config = load_config(DEFAULT_ROUTER_CONFIG)
    odd = Decision(model="ignore previous instructions", method="mcp-xyz", base_model="llama2-7b",
                   category="user text here", confidence=0.7, reason="Not A Code!", variant="x")
    metrics.observe_routed(Routed(odd, 1.0), "sk-secret-model-name", config)
    text = scrape(registry)
    for leaked in ("ignore previous", "user text", "Not A Code", "sk-secret", "mcp-xyz"):
        assert leaked not in text
    s = parse_samples(text)
    assert value(s, "llm_category_classifications_count", category="other") == 1
    assert value(s, "lora_router_fallbacks_total", reason="other") == 1
    assert value(s, "llm_model_routing_modifications_total", source_model="other", target_model="other") == 1


def test_fallbacks_cache_breakers_and_the_config_fingerprint() -> None:
    registry = CollectorRegistry()
    metrics = RouterMetrics(registry)
    config = load_config(DEFAULT_ROUTER_CONFIG)
    fallback = Decision(model="llama2-7b", method="fallback", base_model="llama2-7b", reason="low_confidence")
    metrics.observe_routed(Routed(fallback, 2.0, cache="miss"), "MoM", config)
    metrics.observe_routed(Routed(fallback, 0.1, cache="hit"), "MoM", config)
    metrics.dependency_states({"redis": "open", "mcp": "closed"})
    metrics.cache_operation("redis", "get", 0.0007)
    metrics.encoder_batch(5, 2)
    metrics.config_loaded("a" * 64)
    metrics.config_loaded("b" * 64)
    metrics.reload(True)
    s = parse_samples(scrape(registry))
    assert value(s, "lora_router_fallbacks_total", reason="low_confidence") == 2
    assert value(s, "llm_routing_reason_codes_total", reason_code="low_confidence", model="llama2-7b") == 2
    assert value(s, "llm_cache_hits_total") == 1 and value(s, "llm_cache_misses_total") == 1
    assert value(s, "lora_router_circuit_breaker_state", dependency="redis") == 2
    assert value(s, "lora_router_circuit_breaker_state", dependency="mcp") == 0
    assert value(s, "llm_cache_operation_duration_seconds_bucket", backend="redis", operation="get", le="0.001") == 1
    assert value(s, "lora_router_encoder_batch_size_bucket", le="4.0") == 0
    assert value(s, "lora_router_encoder_batch_size_bucket", le="8.0") == 1
    assert value(s, "lora_router_encoder_queue_depth") == 2
    assert series(s, "lora_router_config_info") == [{"fingerprint": "b" * 16}]
    assert value(s, "lora_router_config_reloads_total", result="ok") == 1
    assert value(s, "lora_router_config_reloads_total", result="failed") == 0
    assert not series(s, "llm_category_classifications_count")  # a fallback has no category


def test_the_category_count_keeps_vsr_exact_name() -> None:
    """prometheus-client appends `_total` to counters; VSR's dashboards read `..._count` itself."""
    registry = CollectorRegistry()
    RouterMetrics(registry).observe_routed(
        Routed(Decision("technical-lora", "keyword", "llama2-7b", "technical", 1.0), 1.0), "MoM",
        load_config(DEFAULT_ROUTER_CONFIG))
    assert "\nllm_category_classifications_count{category=\"technical\"} 1.0" in scrape(registry)


async def test_classifier_errors_are_timed_too() -> None:
    class Broken(Classifier):
        method = "domain"

        async def classify(self, texts: object, caller: object = None, contexts: object = None) -> list[Classification]:
            raise RuntimeError("down")

    registry = CollectorRegistry()
    config = load_config(DEFAULT_ROUTER_CONFIG)
    router = LoraRouter(config, [Broken()], telemetry=RouterMetrics(registry))
    routed = await router.route({"messages": [{"role": "user", "content": "hi"}]})
    assert routed.decision.reason == "classifier_error"
    assert value(parse_samples(scrape(registry)), "llm_classifier_latency_seconds_count", classifier="domain") == 1


@pytest.fixture(scope="module")
def two_workers(standin: StandIn, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """`litellm --num_workers 2 --run_gunicorn` with its prometheus callback: every worker writes to
    one folder. (Gunicorn, because uvicorn's own supervisor kills a worker that has not answered its
    health check within 5 s, which a worker importing LiteLLM on a loaded 2-core machine misses.)"""
    tmp = tmp_path_factory.mktemp("workers")
    raw = yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text())
    del raw["classifier"]  # keyword rules only: two workers start quickly
    (tmp / "router.yaml").write_text(yaml.safe_dump(raw))
    litellm = yaml.safe_load(DEFAULT_LITELLM_CONFIG.read_text())
    litellm["litellm_settings"]["callbacks"] = ["prometheus", "litellm_lora_router.proxy_handler_instance"]
    (tmp / "litellm.yaml").write_text(yaml.safe_dump(litellm))
    folder = tmp / "multiproc"
    folder.mkdir()
    cli = str(Path(sys.executable).parent / "litellm")
    key = new_master_key()
    service = start_proxy(
        tmp / "litellm.yaml", tmp / "router.yaml", standin.api_base, key, logs_dir,
        command=[cli, "--config", str(tmp / "litellm.yaml"), "--host", "127.0.0.1", "--num_workers", "2", "--run_gunicorn",
                 "--port", "{port}"],
        extra_env={"PROMETHEUS_MULTIPROC_DIR": str(folder)},
    )
    wait_for_workers(service, 2)
    yield service, key, folder
    service.stop()


def started_workers(log: str) -> set[str]:
    """Pids of the gunicorn workers whose application has started (each logs it under its pid)."""
    return set(re.findall(r"\[(\d+)\] \[INFO\] Application startup complete", log))


def wait_for_workers(service: Service, count: int, timeout_s: float = 120.0) -> None:
    """The proxy answers once its first worker is up; a loaded machine may start the second long after."""
    deadline = time.monotonic() + timeout_s
    while len(started_workers(service.log())) < count:
        assert time.monotonic() < deadline, f"fewer than {count} workers started:\n{service.log()[-4000:]}"
        time.sleep(0.2)


def routed_per_worker(folder: Path) -> dict[str, float]:
    """pid -> requests that worker routed, read from its own sample file."""
    counts: dict[str, float] = {}
    for path in folder.glob("counter_*.db"):
        for family in MultiProcessCollector.merge([str(path)], accumulate=False):
            if family.name == "llm_routing_reason_codes":
                counts[path.stem.removeprefix("counter_")] = sum(
                    s.value for s in family.samples if s.name == "llm_routing_reason_codes_total")
    return {pid: n for pid, n in counts.items() if n}


def test_metrics_add_up_across_workers(two_workers) -> None:  # type: ignore[no-untyped-def]
    service, key, folder = two_workers
    body = {"model": "MoM", "messages": [{"role": "user", "content": "What causes high blood pressure?"}]}

    def ask(_: int) -> int:
        return httpx.post(service.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}"},
                          json=body, timeout=60).status_code

    sent = 0
    with ThreadPoolExecutor(8) as pool:
        for _ in range(50):  # concurrent bursts until both workers have routed requests
            assert set(pool.map(ask, range(8))) == {200}
            sent += 8
            if len(routed_per_worker(folder)) >= 2:
                break
    per_worker = routed_per_worker(folder)
    assert len(per_worker) == 2 and sum(per_worker.values()) == sent, (per_worker, service.log()[-4000:])
    for _ in range(4):  # whichever worker answers the scrape reports both workers' samples
        # LiteLLM 1.108.7 asks for a key on /metrics unless require_auth_for_metrics_endpoint: false
        scraped = httpx.get(service.url + "/metrics/", headers={"Authorization": f"Bearer {key}"}, timeout=30)
        s = parse_samples(scraped.text)
        assert value(s, "llm_category_classifications_count", category="medical") == sent
        assert value(s, "llm_routing_reason_codes_total", reason_code="auto_routing", model="medical-lora") == sent
        # one classification per worker: its concurrent misses share it, later requests hit its cache
        assert value(s, "llm_classifier_latency_seconds_count", classifier="keyword") == len(per_worker)
        assert value(s, "llm_cache_misses_total") + value(s, "llm_cache_hits_total") == sent
