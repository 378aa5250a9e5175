"""What the router reports while it works, without knowing who listens.

The core calls a `Telemetry` it was given; `metrics.py` implements it with prometheus-client, and
`NullTelemetry` (the default) drops everything, so the core imports no metrics library and a test
builds a router without one. Every argument is a bounded name (a method, a backend, an operation,
an adapter declared in the config), never request text.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["NullTelemetry", "Telemetry"]


class Telemetry(Protocol):
    def classifier_latency(self, method: str, seconds: float) -> None:
        """One classifier call, successful or not."""
        ...

    def cache_operation(self, backend: str, operation: str, seconds: float) -> None:
        """One call to a classification-cache backend (`redis` get/set)."""
        ...

    def encoder_batch(self, size: int, queue_depth: int) -> None:
        """One encoder pass over `size` texts, with `queue_depth` texts still waiting."""
        ...

    def adapter_load(self, adapter: str, result: str) -> None:
        """One runtime load of an adapter on one vLLM server: `ok`, `failed` or `timeout`."""
        ...

    def vllm_server(self, server: str, up: bool) -> None:
        """The outcome of one `GET /v1/models` probe of a vLLM server (`host:port`)."""
        ...


class NullTelemetry:
    """Reports nothing."""

    def classifier_latency(self, method: str, seconds: float) -> None:
        return None

    def cache_operation(self, backend: str, operation: str, seconds: float) -> None:
        return None

    def encoder_batch(self, size: int, queue_depth: int) -> None:
        return None

    def adapter_load(self, adapter: str, result: str) -> None:
        return None

    def vllm_server(self, server: str, up: bool) -> None:
        return None
