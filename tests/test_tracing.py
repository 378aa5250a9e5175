"""The routing span, recorded with OpenTelemetry's in-memory exporter (the proxy's trace is in
test_operations_proxy.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from litellm_lora_router import LoraRouter, load_config
from litellm_lora_router.classifiers import KeywordClassifier
from litellm_lora_router.tracing import SPAN_NAME, route_span

from .conftest import DEFAULT_ROUTER_CONFIG

SECRET = "zebra-7731"
BODY = {"model": "MoM", "messages": [{"role": "user", "content": f"What causes high blood pressure? ({SECRET})"}]}


@pytest.fixture(scope="module")
def exporter() -> Iterator[InMemorySpanExporter]:
    """The global provider, as LiteLLM's otel callback sets it (once per process)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    yield exporter
    provider.shutdown()


def keyword_router() -> LoraRouter:
    config = load_config(DEFAULT_ROUTER_CONFIG)
    return LoraRouter(config, [KeywordClassifier(config.keyword_rules)])


async def test_the_routing_step_is_a_child_span_with_the_decision(exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    parent = trace.get_tracer("litellm").start_span("Received Proxy Server Request")
    with route_span(parent) as record:
        record(await keyword_router().route(BODY))
    parent.end()
    [span] = [s for s in exporter.get_finished_spans() if s.name == SPAN_NAME]
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    assert span.context.trace_id == parent.get_span_context().trace_id
    attributes = dict(span.attributes or {})
    assert attributes.pop("lora_router.time_ms") >= 0
    assert attributes == {
        "lora_router.category": "medical", "lora_router.adapter": "medical-lora", "lora_router.base_model": "llama2-7b",
        "lora_router.method": "keyword", "lora_router.confidence": 1.0,
        "lora_router.reasoning": True,
    }
    assert SECRET not in json.dumps(dict(span.attributes or {})) + span.name


async def test_a_fallback_span_carries_the_reason(exporter: InMemorySpanExporter) -> None:
    exporter.clear()
    parent = trace.get_tracer("litellm").start_span("request")
    with route_span(parent) as record:
        record(await keyword_router().route({"messages": [{"role": "user", "content": "octopus"}]}))
    parent.end()
    [span] = [s for s in exporter.get_finished_spans() if s.name == SPAN_NAME]
    assert span.attributes is not None
    assert span.attributes["lora_router.fallback_reason"] == "no_match"
    assert span.attributes["lora_router.method"] == "fallback" and "lora_router.category" not in span.attributes


async def test_no_parent_span_no_tracing(exporter: InMemorySpanExporter) -> None:
    """Without LiteLLM's otel callback there is no parent: nothing is recorded. (First the control:
    with a parent, this exporter does see the span, so an empty list below means something.)"""
    exporter.clear()
    parent = trace.get_tracer("litellm").start_span("request")
    with route_span(parent) as record:
        record(await keyword_router().route(BODY))
    parent.end()
    assert [s.name for s in exporter.get_finished_spans()] == [SPAN_NAME, "request"]
    exporter.clear()
    with route_span(None) as record:
        record(await keyword_router().route(BODY))
    assert exporter.get_finished_spans() == ()
