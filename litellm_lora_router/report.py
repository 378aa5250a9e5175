"""How a decision is shown to callers and operators: headers, spend-log metadata, audit line.

Nothing here carries prompt text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from .router import Routed

__all__ = [
    "HeaderLevel",
    "MINIMAL_HEADERS",
    "audit_line",
    "decision_headers",
    "decision_tags",
    "served_model_headers",
    "spend_logs_metadata",
]

HeaderLevel = Literal["all", "minimal", "none"]

#: `response_headers: minimal`: what kind of question it was and whether reasoning is on; no adapter
#: names, methods, confidences, fallback reasons or timings.
MINIMAL_HEADERS = frozenset({"x-lora-router-category", "x-vsr-selected-category", "x-vsr-selected-reasoning"})


def decision_headers(routed: Routed, level: HeaderLevel | str = "all") -> dict[str, str]:
    """The headers clients see, at the operator's `lora_router.response_headers` level; spend logs,
    the audit line and metrics are the same at every level."""
    if level == "none":
        return {}
    headers = _all_headers(routed)
    return headers if level == "all" else {k: v for k, v in headers.items() if k in MINIMAL_HEADERS}


def served_model_headers(sent: Mapping[str, str], served_model_group: str | None) -> dict[str, str]:
    """`x-lora-router-served-model`: the model group that finally answered, which differs from the
    adapter after a LiteLLM fallback. Only at the `all` level (where the adapter is shown too)."""
    if served_model_group is None or "x-lora-router-adapter" not in sent:
        return {}
    return {"x-lora-router-served-model": served_model_group}


def _all_headers(routed: Routed) -> dict[str, str]:
    """`x-lora-router-*`, plus the `x-vsr-selected-*` headers vLLM Semantic Router users know."""
    d = routed.decision
    headers = {
        "x-lora-router-adapter": d.model,
        "x-lora-router-method": d.method,
        "x-lora-router-confidence": f"{d.confidence:.4f}",
        "x-lora-router-time-ms": f"{routed.elapsed_ms:.2f}",
        "x-vsr-selected-model": d.model,
        "x-vsr-selected-reasoning": "on" if d.use_reasoning else "off",
    }
    if d.category is not None:
        headers["x-lora-router-category"] = d.category
        headers["x-vsr-selected-category"] = d.category
    if d.reason is not None:
        headers["x-lora-router-fallback"] = d.reason
    if routed.cache is not None:
        headers["x-lora-router-cache"] = routed.cache
    if d.truncated:
        headers["x-lora-router-truncated"] = "true"
    if d.variant is not None:
        headers["x-lora-router-variant"] = d.variant
    return headers


def spend_logs_metadata(routed: Routed) -> dict[str, Any]:
    """The facts the LiteLLM UI shows with each logged request."""
    d = routed.decision
    return {
        "lora_router_category": d.category,
        "lora_router_adapter": d.model,
        "lora_router_method": d.method,
        "lora_router_confidence": round(d.confidence, 4),
        "lora_router_fallback": d.reason,
        "lora_router_reasoning": d.use_reasoning,
        "lora_router_time_ms": round(routed.elapsed_ms, 2),
        "lora_router_cache": routed.cache,
        "lora_router_truncated": d.truncated,
        "lora_router_variant": d.variant,
    }


def decision_tags(routed: Routed) -> list[str]:
    """Short tags for filtering spend logs: `lora:<adapter>`, `lora-category:<name>`, ..."""
    d = routed.decision
    tags = [f"lora:{d.model}", f"lora-method:{d.method}"]
    if d.category is not None:
        tags.append(f"lora-category:{d.category}")
    if d.reason is not None:
        tags.append(f"lora-fallback:{d.reason}")
    if d.variant is not None:
        tags.append(f"lora-variant:{d.variant}")
    return tags


def audit_line(routed: Routed) -> str:
    """One JSON object per decision, for log pipelines; the prompt is never included."""
    d = routed.decision
    return json.dumps(
        {
            "event": "lora_route",
            "category": d.category,
            "adapter": d.model,
            "base_model": d.base_model,
            "method": d.method,
            "confidence": round(d.confidence, 4),
            "matched_keywords": list(d.matched_keywords),
            "fallback_reason": d.reason,
            "error": routed.error,
            "use_reasoning": d.use_reasoning,
            "truncated": d.truncated,
            "time_ms": round(routed.elapsed_ms, 3),
            "cache": routed.cache,
            "variant": d.variant,
        },
        sort_keys=True,
    )
