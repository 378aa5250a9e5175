"""The one interface every classification method implements."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["Classification", "Classifier"]


@dataclass(frozen=True, slots=True)
class Classification:
    """What one method concluded about one text.

    `category=None` is "no match" (a value, not an error); `reason` then says why
    (`no_match` or `low_confidence`), and `candidate` keeps the best label for the audit log.
    """

    category: str | None
    confidence: float
    method: str
    reason: str | None = None
    candidate: str | None = None
    matched_keywords: tuple[str, ...] = ()
    truncated: bool = False

    @classmethod
    def no_match(cls, method: str, confidence: float = 0.0, candidate: str | None = None) -> Classification:
        reason = "low_confidence" if candidate is not None else "no_match"
        return cls(None, confidence, method, reason=reason, candidate=candidate)


@runtime_checkable
class Classifier(Protocol):
    """Batch-first so a micro-batcher can hand a model many texts in one pass."""

    method: str

    async def classify(self, texts: Sequence[str]) -> list[Classification]:
        """One `Classification` per text, in order. Raises `ClassifierError` only on breakage."""
        ...
