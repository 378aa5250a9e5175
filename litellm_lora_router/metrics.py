"""Prometheus metrics: vLLM Semantic Router's names (its dashboards carry over) plus `lora_router_*`.

The only module that imports prometheus-client. Metrics live in the process's default registry, so
LiteLLM's own `/metrics` (mounted when `prometheus` is among its callbacks) shows them; with
`lora_router.metrics_port` they are also served on a port of our own. With several workers
(`litellm --num_workers N`) set `PROMETHEUS_MULTIPROC_DIR` (LiteLLM creates one when its prometheus
callback is configured): every worker writes its samples there and either endpoint adds them up.

Labels are bounded: categories, models, adapters and methods are names from the config or fixed
sets (anything else is `other`), reasons are short codes; never prompt text or key values.
"""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Mapping
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from .config import RouterConfig
from .router import Routed

__all__ = ["RouterMetrics", "process_metrics", "serve_metrics"]

logger = logging.getLogger("litellm_lora_router")

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CACHE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
CONFIDENCE_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
METHODS = frozenset({"keyword", "embedding", "domain", "mcp", "fallback"})
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
_CODE = re.compile(r"[a-z][a-z0-9_]{0,47}")
OTHER = "other"


class RouterMetrics:
    """Every metric the plugin exports; also the `Telemetry` the router reports to."""

    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        r = registry
        # vLLM Semantic Router's metrics, same names and labels
        self.category_classifications = Gauge(  # a gauge so the name stays exactly `..._count` (no `_total`)
            "llm_category_classifications_count", "The total number of times each category is classified",
            ["category"], registry=r, multiprocess_mode="sum")
        self.classifier_latency_seconds = Histogram(
            "llm_classifier_latency_seconds", "The latency of classifier invocations by type",
            ["classifier"], buckets=LATENCY_BUCKETS, registry=r)
        self.classification_confidence = Histogram(
            "llm_classification_confidence", "Distribution of classification confidence scores",
            ["category", "classification_method"], buckets=CONFIDENCE_BUCKETS, registry=r)
        self.routing_modifications = Counter(
            "llm_model_routing_modifications_total",
            "The total number of times a request was rerouted from source model to target model",
            ["source_model", "target_model"], registry=r)
        self.reason_codes = Counter(
            "llm_routing_reason_codes_total", "The total number of routing decisions by reason code and model",
            ["reason_code", "model"], registry=r)
        self.routing_latency = Histogram(
            "llm_model_routing_latency_seconds", "The latency of model routing operations in seconds",
            buckets=LATENCY_BUCKETS, registry=r)
        self.reasoning_decisions = Counter(
            "llm_reasoning_decisions_total",
            "The total number of reasoning mode decisions by category, model, and effort",
            ["category", "model", "enabled", "effort"], registry=r)
        self.cache_hits = Counter("llm_cache_hits_total", "The total number of cache hits", registry=r)
        self.cache_misses = Counter("llm_cache_misses_total", "The total number of cache misses", registry=r)
        self.cache_operation_seconds = Histogram(
            "llm_cache_operation_duration_seconds", "The duration of cache operations in seconds",
            ["backend", "operation"], buckets=CACHE_BUCKETS, registry=r)
        # this plugin's own
        self.fallbacks = Counter(
            "lora_router_fallbacks_total", "Requests not sent to their category's adapter, by reason",
            ["reason"], registry=r)
        self.breaker_state = Gauge(
            "lora_router_circuit_breaker_state", "Circuit breaker per dependency: 0 closed, 1 half-open, 2 open",
            ["dependency"], registry=r, multiprocess_mode="livemax")
        self.encoder_batch_size = Histogram(
            "lora_router_encoder_batch_size", "Texts per encoder pass (micro-batching)",
            buckets=BATCH_BUCKETS, registry=r)
        self.encoder_queue_depth = Gauge(
            "lora_router_encoder_queue_depth", "Texts waiting for the encoder when a pass starts",
            registry=r, multiprocess_mode="livesum")
        self.config_reloads = Counter(
            "lora_router_config_reloads_total", "Router config reloads by result", ["result"], registry=r)
        self.config_info = Gauge(
            "lora_router_config_info", "The loaded router config (value 1), by fingerprint",
            ["fingerprint"], registry=r, multiprocess_mode="livemax")
        self.split_assignments = Counter(
            "lora_router_split_assignments_total", "Requests a weighted traffic split sent to each variant",
            ["category", "variant"], registry=r)
        self.adapter_loads = Counter(
            "lora_router_adapter_loads_total", "Runtime adapter loads on vLLM servers by result",
            ["adapter", "result"], registry=r)
        self.vllm_server_up = Gauge(
            "lora_router_vllm_server_up", "Whether the last GET /v1/models of a vLLM server succeeded",
            ["server"], registry=r, multiprocess_mode="livemin")
        for result in ("ok", "failed"):
            self.config_reloads.labels(result=result)
        self._fingerprint: str | None = None

    # --- Telemetry (called by the core) ---------------------------------------------------------
    def classifier_latency(self, method: str, seconds: float) -> None:
        self.classifier_latency_seconds.labels(classifier=_one_of(method, METHODS)).observe(seconds)

    def cache_operation(self, backend: str, operation: str, seconds: float) -> None:
        self.cache_operation_seconds.labels(backend=_code(backend), operation=_code(operation)).observe(seconds)

    def encoder_batch(self, size: int, queue_depth: int) -> None:
        self.encoder_batch_size.observe(size)
        self.encoder_queue_depth.set(queue_depth)

    def adapter_load(self, adapter: str, result: str) -> None:
        self.adapter_loads.labels(adapter=adapter, result=_code(result)).inc()

    def vllm_server(self, server: str, up: bool) -> None:
        self.vllm_server_up.labels(server=server).set(1 if up else 0)

    # --- called by the hook ---------------------------------------------------------------------
    def observe_routed(self, routed: Routed, source_model: str, config: RouterConfig) -> None:
        """Everything one routing decision tells."""
        d = routed.decision
        models = config.model_names
        model = _one_of(d.model, models)
        self.routing_latency.observe(routed.elapsed_ms / 1000.0)
        self.reason_codes.labels(reason_code=_code(d.reason) if d.reason else "auto_routing", model=model).inc()
        if source_model != d.model:
            self.routing_modifications.labels(source_model=_one_of(source_model, models), target_model=model).inc()
        if d.reason is not None:
            self.fallbacks.labels(reason=_code(d.reason)).inc()
        if routed.cache == "hit":
            self.cache_hits.inc()
        elif routed.cache == "miss":
            self.cache_misses.inc()
        if d.category is None:
            return
        category = _one_of(d.category, config.category_names)
        self.category_classifications.labels(category=category).inc()
        method = _one_of(d.method, METHODS)
        self.classification_confidence.labels(category=category, classification_method=method).observe(d.confidence)
        self.reasoning_decisions.labels(category=category, model=model, enabled=str(d.use_reasoning).lower(),
                                        effort=d.reasoning_effort or "").inc()
        if d.variant is not None:
            self.split_assignments.labels(category=category, variant=_one_of(d.variant, models)).inc()

    def dependency_states(self, states: Mapping[str, str]) -> None:
        for dependency, state in states.items():
            self.breaker_state.labels(dependency=_code(dependency)).set(BREAKER_STATES.get(state, 2))

    def config_loaded(self, fingerprint: str) -> None:
        """The info metric names the config now in use; the previous one reads 0 and is dropped."""
        short = fingerprint[:16]
        if self._fingerprint is not None and self._fingerprint != short:
            self.config_info.labels(fingerprint=self._fingerprint).set(0)
            if not _multiprocess():  # samples on disk cannot be removed: there it stays at 0
                self.config_info.remove(self._fingerprint)
        self.config_info.labels(fingerprint=short).set(1)
        self._fingerprint = short

    def reload(self, ok: bool) -> None:
        self.config_reloads.labels(result="ok" if ok else "failed").inc()


def _multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def _one_of(value: str, allowed: Any) -> str:
    return value if value in allowed else OTHER


def _code(value: str) -> str:
    return value if _CODE.fullmatch(value) else OTHER


@functools.cache
def process_metrics() -> RouterMetrics:
    """The one set of metrics of this process (the default registry allows each name once)."""
    return RouterMetrics(REGISTRY)


def serve_metrics(port: int, host: str) -> Any | None:
    """Serve `/metrics` on our own port, from a daemon thread. With several workers the first to
    bind serves every worker's samples (from `PROMETHEUS_MULTIPROC_DIR`); the others log and skip."""
    registry: Any = REGISTRY
    if _multiprocess():
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    try:
        server, _ = start_http_server(port, host, registry)
    except OSError as exc:
        logger.info("lora-router metrics port %s:%s not bound (%s); another worker may serve it",
                    host, port, exc.strerror)
        return None
    logger.info("lora-router metrics on http://%s:%s/metrics", host, port)
    return server
