"""Embedding rules: cosine similarity of the query to each rule's example phrases."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..config import EmbeddingRule
from .base import Caller, Classification
from .encoders import EncodingService

__all__ = ["EmbeddingClassifier"]


class EmbeddingClassifier:
    """The best aggregate score over all rules wins, if it clears that rule's threshold.

    Example phrases are encoded once, at construction; a request costs one encoder pass (shared
    with a domain head) and one small matrix product.
    """

    method = "embedding"

    def __init__(self, rules: Sequence[EmbeddingRule], encoding: EncodingService) -> None:
        self._rules = tuple(rules)
        self._encoding = encoding
        phrases = [phrase for rule in self._rules for phrase in rule.keywords]
        vectors = np.stack([v for v, _ in encoding.encoder.encode(phrases)])
        self._examples: list[np.ndarray] = []
        start = 0
        for rule in self._rules:
            self._examples.append(vectors[start : start + len(rule.keywords)])
            start += len(rule.keywords)

    def scores(self, vector: np.ndarray) -> list[float]:
        """One aggregate similarity per rule (`any` aggregates like `max`)."""
        out = []
        for rule, examples in zip(self._rules, self._examples, strict=True):
            sims = examples @ vector
            out.append(float(sims.mean() if rule.aggregation_method == "mean" else sims.max()))
        return out

    async def classify(self, texts: Sequence[str], caller: Caller | None = None) -> list[Classification]:
        results = []
        for text in texts:
            vector, truncated = await self._encoding.encode(text)
            scores = self.scores(vector)
            passing = [(s, i) for i, s in enumerate(scores) if s >= self._rules[i].threshold]
            if passing:
                score, index = max(passing)
                results.append(Classification(self._rules[index].category, score, self.method, truncated=truncated))
            else:
                best = int(np.argmax(scores))
                results.append(Classification(None, scores[best], self.method, reason="low_confidence",
                                              candidate=self._rules[best].category, truncated=truncated))
        return results

    async def aclose(self) -> None:
        self._encoding.close()
