"""Embedding rules: cosine similarity of the query to each rule's example phrases."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import numpy as np

from ..config import EmbeddingRule, RouterConfig
from .base import Caller, Classification, Classifier
from .encoders import EncodingService

__all__ = ["EmbeddingClassifier", "build"]


class EmbeddingClassifier(Classifier):
    """The best aggregate score over all rules wins, if it clears that rule's threshold.

    Example phrases are encoded once: at construction with a local encoder, on `connect()` (or the
    first request) with a remote one, whose server may not be up yet. A request costs one encoder
    pass (shared with a domain head) and one small matrix product.
    """

    method = "embedding"

    def __init__(self, rules: Sequence[EmbeddingRule], encoding: EncodingService) -> None:
        self._rules = tuple(rules)
        self._encoding = encoding
        self._examples: list[np.ndarray] | None = None
        self._preparing: asyncio.Future[list[np.ndarray]] | None = None
        if not getattr(encoding.encoder, "remote", False):
            self._examples = self._encode_examples()

    def _encode_examples(self) -> list[np.ndarray]:
        """Blocking: the encoder pass over every rule's example phrases, split back per rule."""
        phrases = [phrase for rule in self._rules for phrase in rule.keywords]
        vectors = np.stack([v for v, _ in self._encoding.encoder.encode_examples(phrases)])
        examples, start = [], 0
        for rule in self._rules:
            examples.append(vectors[start : start + len(rule.keywords)])
            start += len(rule.keywords)
        return examples

    async def _ready_examples(self) -> list[np.ndarray]:
        """One preparation shared by every caller, and not cancelled with the request that started
        it (its thread would go on anyway, and the next request would start another)."""
        if self._examples is None:
            preparing = self._preparing
            failed = preparing is not None and preparing.done() and (
                preparing.cancelled() or preparing.exception() is not None)
            if preparing is None or failed or preparing.get_loop() is not asyncio.get_running_loop():
                preparing = self._preparing = asyncio.ensure_future(asyncio.to_thread(self._encode_examples))
                preparing.add_done_callback(_retrieved)  # its failure is the waiters' to report, if any wait
            self._examples = await asyncio.shield(preparing)
        return self._examples

    async def connect(self) -> None:
        await self._ready_examples()

    def scores(self, vector: np.ndarray, examples: Sequence[np.ndarray]) -> list[float]:
        """One aggregate similarity per rule (`any` aggregates like `max`)."""
        out = []
        for rule, rule_examples in zip(self._rules, examples, strict=True):
            sims = rule_examples @ vector
            out.append(float(sims.mean() if rule.aggregation_method == "mean" else sims.max()))
        return out

    async def classify(self, texts: Sequence[str], caller: Caller | None = None,
                       contexts: Sequence[str | None] | None = None) -> list[Classification]:
        examples = await self._ready_examples()
        results = []
        for text in texts:
            vector, truncated = await self._encoding.encode(text)
            scores = self.scores(vector, examples)
            passing = [(s, i) for i, s in enumerate(scores) if s >= self._rules[i].threshold]
            if passing:
                score, index = max(passing)
                results.append(Classification(self._rules[index].category, score, self.method, truncated=truncated))
            else:
                best = int(np.argmax(scores))
                results.append(Classification(None, scores[best], self.method, reason="low_confidence",
                                              candidate=self._rules[best].category, truncated=truncated))
        return results

    @property
    def breaker(self) -> object | None:
        """The remote encoder's circuit breaker (None for a local encoder)."""
        client = getattr(self._encoding.encoder, "client", None)
        return client.breaker if client is not None else None

    async def aclose(self) -> None:
        if self._preparing is not None:
            self._preparing.cancel()
        self._encoding.close()


def _retrieved(future: asyncio.Future[list[np.ndarray]]) -> None:
    if not future.cancelled():
        future.exception()


def build(config: RouterConfig, encoding: Callable[[], EncodingService]) -> EmbeddingClassifier | None:
    return EmbeddingClassifier(config.embedding_rules, encoding()) if config.embedding_rules else None
