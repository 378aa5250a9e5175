"""A small circuit breaker: stop calling a failing dependency for a while, then try again."""

from __future__ import annotations

import time
from dataclasses import dataclass

__all__ = ["CircuitBreaker"]


@dataclass
class CircuitBreaker:
    """Closed -> open after `failures` in a row -> half-open after `reset_seconds` (one try)."""

    failures: int
    reset_seconds: float
    consecutive: int = 0
    opened_at: float | None = None

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half_open" if time.monotonic() - self.opened_at >= self.reset_seconds else "open"

    def allow(self) -> bool:
        return self.state != "open"

    def record_success(self) -> None:
        self.consecutive = 0
        self.opened_at = None

    def record_failure(self) -> None:
        self.consecutive += 1
        if self.consecutive >= self.failures or self.opened_at is not None:
            self.opened_at = time.monotonic()
