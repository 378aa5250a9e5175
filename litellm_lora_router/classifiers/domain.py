"""The domain classifier of `classifier.category_model`: two directory formats, or vLLM.

1. A Hugging Face sequence-classification model (BERT, ModernBERT, ...), as users of vLLM Semantic
   Router have: `AutoModelForSequenceClassification` + its tokenizer, batched on a worker thread.
2. Our own light format written by `lora-router train-domain`: `lora_router_head.json` names the
   sentence encoder(s) whose unit vectors, concatenated, the head reads, and a softmax temperature
   calibrated on held-out data; `head.npz` holds a linear head. It reuses the shared encoder passes,
   so it costs a small matrix product on top of the embedding rules. A head may carry a second,
   cheaper head for the conversation (`context_encoders`, `context_weight`, `context_bias`), so that
   reading a conversation costs one fast encoder pass rather than a second pass of every encoder;
   and a `sentence_weight`: a turn of several sentences is also read by its longest sentence, whose
   logits weigh that much, so that a sentence of small talk around the question weighs less.
3. `backend: vllm`: a format-1 model served by vLLM's pooling runner, asked over `/classify`
   (`classifiers/remote.py`).

Labels come from `category_mapping.json` (vLLM Semantic Router's `idx_to_category`), else the
model's `id2label`, and map onto categories by name or through `mmlu_categories`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..batching import MicroBatcher
from ..config import CategoryModelConfig, EncoderConfig, RouterConfig
from ..errors import ClassifierError, ConfigError, ConfigIssue
from .base import Caller, Classification, Classifier
from .encoders import (
    ENCODER_IDS,
    TUNED_MINILM_PREFIX,
    EncodingService,
    cut_for_tokenizer,
    limit_torch_threads,
    longest_sentence,
    tuned_minilm_file,
)

__all__ = ["HEAD_FILE", "DomainClassifier", "HeadModel", "SequenceClassifierModel", "build", "head_encoders",
           "is_head_dir", "read_labels", "read_mapping"]

HEAD_FILE = "lora_router_head.json"

Probabilities = tuple[np.ndarray, bool]  # (softmax over labels, input was truncated)


def is_head_dir(path: Path) -> bool:
    return (path / HEAD_FILE).is_file()


def read_mapping(mapping_path: Path) -> list[str]:
    """Index -> label from vLLM Semantic Router's `category_mapping.json`."""
    mapping = json.loads(mapping_path.read_text(encoding="utf-8"))
    if "idx_to_category" in mapping:
        pairs = {int(k): v for k, v in mapping["idx_to_category"].items()}
    else:
        pairs = {int(v): k for k, v in mapping["category_to_idx"].items()}
    return [pairs[i] for i in range(len(pairs))]


def read_labels(model_dir: Path, mapping_path: Path | None) -> list[str]:
    """Index -> label, from the mapping file, else the model's config (`id2label`)."""
    if mapping_path is not None:
        return read_mapping(mapping_path)
    for name in (HEAD_FILE, "config.json"):
        path = model_dir / name
        if path.is_file():
            data = json.loads(path.read_text(encoding="utf-8"))
            if "labels" in data:
                return list(data["labels"])
            if "id2label" in data:
                return [data["id2label"][str(i)] for i in range(len(data["id2label"]))]
    raise ValueError("no category_mapping_path and no id2label/labels in the model directory")


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def head_encoders(meta: dict[str, Any], key: str = "encoders", model_dir: Path | None = None) -> list[str]:
    """The encoder ids a head reads, in order (format 2 v1 names one as `encoder`); with
    `key="context_encoders"`, those of its conversation head (none: the main head reads it too).
    With `model_dir`, a `tuned-minilm:FILE` id becomes the path of that file in the directory."""
    encoders = [str(e) for e in meta.get(key) or ([meta.get("encoder")] if key == "encoders" else [])]
    unknown = [e for e in encoders if e not in ENCODER_IDS and not _is_file_name(tuned_minilm_file(e))]
    if unknown or (key == "encoders" and not encoders):
        raise ValueError(f"head trained for encoder(s) {unknown or encoders!r}, expected some of {list(ENCODER_IDS)!r} "
                         f"or {TUNED_MINILM_PREFIX}FILE (a file in the head's directory)")
    if model_dir is None:
        return encoders
    files = {e: model_dir / name for e in encoders if (name := tuned_minilm_file(e))}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise ValueError(f"the head's fine-tuned encoder {missing[0]!r} is missing")
    return [f"{TUNED_MINILM_PREFIX}{files[e].resolve()}" if e in files else e for e in encoders]


def _is_file_name(name: str | None) -> bool:
    """A plain file name: a head directory does not reach outside itself."""
    return bool(name) and Path(name).name == name and name not in (".", "..")


class _LinearHead:
    """One linear head over the concatenated vectors of some shared encoders."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray, encodings: list[EncodingService]) -> None:
        self.weight, self.bias, self.encodings = weight.astype(np.float32), bias.astype(np.float32), encodings

    async def logits(self, text: str) -> tuple[np.ndarray, bool]:
        encoded = await asyncio.gather(*(e.encode(text) for e in self.encodings))
        return self.weight @ np.concatenate([v for v, _ in encoded]) + self.bias, any(t for _, t in encoded)


class HeadModel:
    """Format 2: a linear head over shared sentence encoders, with a calibrated temperature, and
    optionally a head of its own for the conversation."""

    def __init__(self, model_dir: Path, encoding: Callable[[str], EncodingService]) -> None:
        meta = json.loads((model_dir / HEAD_FILE).read_text(encoding="utf-8"))
        weights = np.load(model_dir / "head.npz")
        self._temperature = float(meta.get("temperature", 1.0))
        self._sentence_weight = float(meta.get("sentence_weight", 0.0))
        if not 0.0 <= self._sentence_weight <= 1.0:
            raise ValueError(f"{HEAD_FILE}: sentence_weight {self._sentence_weight} is not between 0 and 1")
        encoders = head_encoders(meta, model_dir=model_dir)
        self._head = _LinearHead(weights["weight"], weights["bias"], [encoding(e) for e in encoders])
        context = head_encoders(meta, "context_encoders", model_dir)
        self._context_head = (_LinearHead(weights["context_weight"], weights["context_bias"],
                                          [encoding(e) for e in context]) if context else self._head)
        for name, head in (("", self._head), ("context_", self._context_head)):
            dims = [e.encoder.dim for e in head.encodings]  # a remote encoder's is known after its first answer
            dim = sum(dims) if all(dims) else head.weight.shape[-1]
            rows = len(self._head.bias)
            if head.weight.shape != (rows, dim) or head.bias.shape != (rows,):
                raise ValueError(f"head.npz: {name}weight {head.weight.shape} / {name}bias {head.bias.shape} do not "
                                 f"fit {rows} labels over {dim} encoder dimensions")
        self._encodings = list({id(e): e for h in (self._head, self._context_head) for e in h.encodings}.values())

    async def probabilities(self, text: str) -> Probabilities:
        """For the text classified (the last turn; with `history_window`, the turns joined): with a
        `sentence_weight`, its logits blended with its longest sentence's."""
        sentence = longest_sentence(text) if self._sentence_weight else None
        if sentence is None:
            return await self._softmax(self._head, text)
        (whole, truncated), (part, _) = await asyncio.gather(self._head.logits(text), self._head.logits(sentence))
        logits = (1 - self._sentence_weight) * whole + self._sentence_weight * part
        return _softmax(logits / self._temperature), truncated

    async def conversation_probabilities(self, text: str) -> Probabilities:
        """For the conversation's user turns joined: the conversation head when the model has one."""
        return await self._softmax(self._context_head, text)

    async def _softmax(self, head: _LinearHead, text: str) -> Probabilities:
        logits, truncated = await head.logits(text)
        return _softmax(logits / self._temperature), truncated

    async def connect(self) -> None:
        """With a remote encoder, one encoder pass: readiness waits until the server answers. (A
        local encoder is loaded already; a warm-up pass here would hold up the first requests of a
        proxy that nobody gates on readiness.)"""
        if any(getattr(e.encoder, "remote", False) for e in self._encodings):
            heads = {id(h): h for h in (self._head, self._context_head)}.values()  # one head: one pass
            await asyncio.gather(*(self._softmax(head, "ready") for head in heads))

    def close(self) -> None:
        for encoding in self._encodings:
            encoding.close()


class SequenceClassifierModel:
    """Format 1: a transformers sequence-classification model, micro-batched on its own thread."""

    def __init__(self, model_dir: Path, use_cpu: bool, batching: EncoderConfig) -> None:
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        limit_torch_threads(torch, batching.threads)
        self._torch = torch
        self._device = "cuda" if not use_cpu and torch.cuda.is_available() else "cpu"
        self._tokenizer = AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True)
        self._model = AutoModelForSequenceClassification.from_pretrained(str(model_dir), local_files_only=True)
        self._model.to(self._device).eval()
        limit = getattr(self._model.config, "max_position_embeddings", 512) or 512
        self._max_length = min(int(self._tokenizer.model_max_length or limit), int(limit))
        self._batcher: MicroBatcher[Probabilities] = MicroBatcher(
            self._run, "domain", batching.batch_window_ms / 1000, batching.max_batch, batching.max_queue, batching.batching
        )

    def _run(self, texts: Sequence[str]) -> list[Probabilities]:
        """Cut, then tokenize once: one token past the model's maximum tells truncation apart."""
        cut, was_cut = cut_for_tokenizer(texts, self._max_length)
        ids = self._tokenizer(cut, truncation=True, max_length=self._max_length + 1)["input_ids"]
        truncated = [c or len(seq) > self._max_length for seq, c in zip(ids, was_cut, strict=True)]
        ids = [seq[: self._max_length - 1] + seq[-1:] if len(seq) > self._max_length else seq for seq in ids]
        batch = self._tokenizer.pad({"input_ids": ids}, padding=True, return_tensors="pt")
        with self._torch.inference_mode():
            logits = self._model(**{k: v.to(self._device) for k, v in batch.items()}).logits.float().cpu().numpy()
        return list(zip(_softmax(logits), truncated, strict=True))

    async def probabilities(self, text: str) -> Probabilities:
        return await self._batcher.submit(text)

    conversation_probabilities = probabilities  # one model reads both

    def close(self) -> None:
        self._batcher.close()


class DomainClassifier(Classifier):
    method = "domain"
    reads_context = True

    def __init__(self, model: Any, labels: Sequence[str], threshold: float, to_category: Callable[[str], str]) -> None:
        self._model = model  # HeadModel, SequenceClassifierModel or VllmClassifyModel
        self._categories = [to_category(label) for label in labels]  # mapped once, at load
        self._to_category = to_category
        self._threshold = threshold

    @property
    def breaker(self) -> Any:
        """The remote model's circuit breaker (None for a local model)."""
        client = getattr(self._model, "client", None)
        return client.breaker if client is not None else None

    @classmethod
    def load(cls, config: CategoryModelConfig, model_dir: Path, mapping_path: Path | None,
             encoding: Callable[[str], EncodingService], batching: EncoderConfig, to_category: Callable[[str], str]) -> DomainClassifier:
        labels = read_labels(model_dir, mapping_path)
        model: Any = HeadModel(model_dir, encoding) if is_head_dir(model_dir) else SequenceClassifierModel(model_dir, config.use_cpu, batching)
        return cls(model, labels, config.threshold, to_category)

    async def classify(self, texts: Sequence[str], caller: Caller | None = None,
                       contexts: Sequence[str | None] | None = None) -> list[Classification]:
        """With a context (the conversation's user turns joined), the logits for the text and for the
        context are averaged (a geometric mean of the probabilities): agreement stays confident, a
        clear last turn outweighs a vague context."""
        results = []
        for text, context in zip(texts, contexts or [None] * len(texts), strict=True):
            if context is not None and context != text:
                (probs, truncated), (context_probs, _) = await asyncio.gather(
                    self._model.probabilities(text), self._model.conversation_probabilities(context))
                probs = np.sqrt(probs * context_probs)  # the mean of the two logits, softmaxed
                probs = probs / probs.sum()
            else:
                probs, truncated = await self._model.probabilities(text)
            if self._categories and len(probs) != len(self._categories):
                raise ClassifierError(self.method, f"model has {len(probs)} outputs, mapping has {len(self._categories)} labels")
            best = int(np.argmax(probs))
            label, confidence = self._category(best), float(probs[best])
            if confidence < self._threshold:
                results.append(Classification(None, confidence, self.method, reason="low_confidence",
                                              candidate=label, truncated=truncated))
            else:
                results.append(Classification(label, confidence, self.method, truncated=truncated))
        return results

    def _category(self, index: int) -> str:
        if self._categories:
            return self._categories[index]
        reported = getattr(self._model, "reported_labels", {}).get(index)  # vLLM's `label`: id2label
        if reported is None:
            raise ClassifierError(self.method, f"no label for class {index}: set category_mapping_path")
        return self._to_category(reported)

    async def connect(self) -> None:
        connect = getattr(self._model, "connect", None)
        if connect is not None:
            await connect()

    async def aclose(self) -> None:
        self._model.close()


def build(config: RouterConfig, encoding: Callable[[str], EncodingService]) -> DomainClassifier | None:
    """The classifier `classifier.category_model` asks for; a missing file fails start-up, naming
    the key that points at it."""
    model = config.classifier.category_model
    if model is None:
        return None
    file = str(config.source or "router config")
    mapping = config.resolve_path(model.category_mapping_path) if model.category_mapping_path else None
    if mapping is not None and not mapping.is_file():
        raise ConfigError(file, [ConfigIssue("classifier.category_model.category_mapping_path",
                                             "an existing category_mapping.json", repr(str(mapping)))])
    if model.backend == "vllm":
        from .remote import VllmClassifyModel

        labels = read_mapping(mapping) if mapping is not None else []
        remote = VllmClassifyModel(model, config.lora_router.encoder, config.lora_router.classification_timeout_seconds,
                                   reads_labels=not labels)
        return DomainClassifier(remote, labels, model.threshold, config.category_for_label)
    model_dir = config.resolve_path(model.model_id)
    if not model_dir.is_dir():
        raise ConfigError(file, [ConfigIssue(
            "classifier.category_model.model_id",
            "an existing model directory (`lora-router train-defaults` builds the guide's models/ ones)",
            repr(str(model_dir)))])
    try:
        return DomainClassifier.load(model, model_dir, mapping, encoding, config.lora_router.encoder,
                                     config.category_for_label)
    except ConfigError:  # another key's fault (an encoder the head reads), already named
        raise
    except (OSError, ValueError, KeyError) as exc:
        raise ConfigError(file, [ConfigIssue("classifier.category_model.model_id", "a loadable classifier directory",
                                             f"{type(exc).__name__}: {exc}")]) from exc
