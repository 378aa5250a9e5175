"""The routing step as an OpenTelemetry span (`lora_router.route`), inside LiteLLM's request trace.

LiteLLM's `otel` callback starts a span per proxy request and hands it to hooks as
`user_api_key_dict.parent_otel_span`; without that callback there is no parent and nothing is
traced. The span comes from the global tracer provider, which LiteLLM's callback sets (unless it is
told to keep a private one). Its attributes are the decision's names and numbers, never prompt text.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from .router import Routed

__all__ = ["SPAN_NAME", "decision_attributes", "route_span"]

SPAN_NAME = "lora_router.route"
TRACER_NAME = "litellm_lora_router"


def decision_attributes(routed: Routed) -> dict[str, str | float | bool]:
    """Span attributes for one decision; unset fields are left out (OTel has no null)."""
    d = routed.decision
    values: dict[str, str | float | bool | None] = {
        "lora_router.category": d.category,
        "lora_router.adapter": d.model,
        "lora_router.base_model": d.base_model,
        "lora_router.method": d.method,
        "lora_router.confidence": round(d.confidence, 4),
        "lora_router.cache": routed.cache,
        "lora_router.fallback_reason": d.reason,
        "lora_router.variant": d.variant,
        "lora_router.reasoning": d.use_reasoning,
        "lora_router.error": routed.error,
        "lora_router.time_ms": round(routed.elapsed_ms, 3),
    }
    return {key: value for key, value in values.items() if value is not None}


@contextlib.contextmanager
def route_span(parent: Any) -> Iterator[Callable[[Routed], None]]:
    """A child span of `parent` around the routing step; call what it yields with the decision.
    Without a parent (or without OpenTelemetry installed) it records nothing."""
    if parent is None:
        yield _ignore
        return
    try:
        from opentelemetry import trace
    except ImportError:
        yield _ignore
        return
    span = trace.get_tracer(TRACER_NAME).start_span(SPAN_NAME, context=trace.set_span_in_context(parent))
    try:
        yield lambda routed: span.set_attributes(decision_attributes(routed))
    finally:
        span.end()


def _ignore(routed: Routed) -> None:
    return None
