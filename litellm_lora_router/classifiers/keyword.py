"""Keyword rules: ordered, first match wins, confidence 1.0 — auditable routing."""

from __future__ import annotations

from collections.abc import Sequence

from ..config import KeywordRule
from .base import Caller, Classification

__all__ = ["KeywordClassifier"]


class KeywordClassifier:
    """Evaluates `keyword_rules` in order, as vLLM Semantic Router does.

    Patterns are compiled at config load; matching a short query takes microseconds, so it runs
    inline on the event loop (a thread hop would cost more than the work).
    """

    method = "keyword"

    def __init__(self, rules: Sequence[KeywordRule]) -> None:
        self._rules = tuple(rules)

    def classify_one(self, text: str) -> Classification:
        for rule in self._rules:
            fired, matched = rule.matches(text)
            if fired:
                return Classification(rule.category, 1.0, self.method, matched_keywords=matched)
        return Classification.no_match(self.method)

    async def classify(self, texts: Sequence[str], caller: Caller | None = None) -> list[Classification]:
        return [self.classify_one(text) for text in texts]
