"""Classifiers served by other servers, so the GPU fleet does the model work instead of every proxy.

The only module that calls pooling servers. Two documented APIs:

- OpenAI-compatible embeddings, `POST {base_url}/embeddings` with `base_url` ending in `/v1`
  (vLLM `vllm serve <embedding model>`; Hugging Face text-embeddings-inference; LiteLLM's own
  embedding deployments). Request `{"model", "input": [str, ...], "encoding_format": "float"}`;
  answer `{"object": "list", "data": [{"object": "embedding", "index": i, "embedding": [float,
  ...]}], "model", "usage"}`. Shapes: OpenAI https://platform.openai.com/docs/api-reference/embeddings;
  vLLM `vllm/entrypoints/pooling/embed/protocol.py` (`EmbeddingCompletionRequest`,
  `EmbeddingResponseData`), which also takes `truncate_prompt_tokens`; TEI
  `router/src/http/types.rs` (`OpenAICompatRequest`: input, model, user, encoding_format,
  dimensions; unknown fields are ignored) served at `/v1/embeddings`.
- vLLM's classification API, `POST {server root}/classify` (no `/v1`), for a sequence
  classification model served by the pooling runner (`vllm serve <dir> --runner pooling`).
  Request `{"model", "input": [str, ...]}` (plus `truncate_prompt_tokens`); answer `{"id",
  "object": "list", "created", "model", "data": [{"index", "label", "probs": [float, ...],
  "num_classes"}], "usage"}`, where `label` is the model's `id2label` of the arg-max (None without
  one). Shapes: vLLM `vllm/entrypoints/pooling/classify/protocol.py` (`ClassificationData`,
  `ClassificationResponse`) and `classify/serving.py`; example
  https://docs.vllm.ai/en/latest/examples/pooling/classify/.

Calls are blocking and run on a micro-batcher's worker thread (never on the event loop), one batch
per request. Each call is bounded by `timeout_seconds` (the connect, each read, and the whole body
from the call's start), cut to the routing budget (`classification_timeout_seconds`) on the request
path; a circuit breaker stops calling a failing
server for `breaker_reset_seconds`; every failure raises `ClassifierError`, which the router turns
into a fallback. Answers are input like any other: their shape is checked before use.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import httpx
import numpy as np

from ..batching import MicroBatcher
from ..breaker import CircuitBreaker
from ..config import CategoryModelConfig, EncoderConfig, RemoteEndpoint
from ..errors import ClassifierError, ClassifierTimeout
from .base import reply_name

__all__ = ["OpenAIEmbeddingsEncoder", "PoolingClient", "VllmClassifyModel"]

logger = logging.getLogger("litellm_lora_router")

#: Statuses that blame the input, not the server: they fail the batch but leave the breaker alone.
INPUT_ERRORS = frozenset({400, 413, 422})
#: The most of an answer read: 32 embeddings of 4,096 floats as JSON take about 3 MB.
MAX_ANSWER_BYTES = 16 * 1024 * 1024

Encoded = tuple[np.ndarray, bool]
Probabilities = tuple[np.ndarray, bool]


class PoolingClient:
    """POSTs JSON to one endpoint of one server, with a timeout and a circuit breaker.

    Blocking on purpose: it runs on a micro-batcher's worker thread, never on the event loop.
    """

    def __init__(self, endpoint: RemoteEndpoint, url: str, method: str, budget_seconds: float | None = None) -> None:
        headers = {"Authorization": f"Bearer {endpoint.api_key.get_secret_value()}"} if endpoint.api_key else {}
        # a call never outlives the router's budget: the router would give up on it unseen, leaving
        # the worker thread blocked and the breaker uncounted (a late success even resets it)
        self._timeout = min(endpoint.timeout_seconds, budget_seconds) if budget_seconds else endpoint.timeout_seconds
        self._client = httpx.Client(headers=headers)
        self._url = url
        self._where = httpx.URL(url).copy_with(username=None, password=None, query=None)  # no secret in a message
        self._method = method
        self.breaker = CircuitBreaker(endpoint.breaker_failures, endpoint.breaker_reset_seconds)

    def post(self, body: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """The answer's JSON; `timeout` (start-up work) instead of the request budget."""
        if not self.breaker.allow():
            raise ClassifierError(self._method, f"circuit breaker open for {self._where}")
        timeout = timeout or self._timeout
        try:
            status, answer = self._read(body, timeout)
        except httpx.TimeoutException as exc:
            self.breaker.record_failure()
            raise ClassifierTimeout(self._method, f"no answer from {self._where} within {timeout}s") from exc
        except httpx.HTTPError as exc:
            self.breaker.record_failure()
            raise ClassifierError(self._method, f"{type(exc).__name__} calling {self._where}") from exc
        if status in INPUT_ERRORS:
            raise ClassifierError(self._method, f"{self._where} refused the input (HTTP {status})")
        if status != 200:
            self.breaker.record_failure()
            raise ClassifierError(self._method, f"HTTP {status} from {self._where}")
        if answer is None:
            self.breaker.record_failure()
            raise ClassifierError(self._method, f"{self._where} answered with over {MAX_ANSWER_BYTES} bytes")
        try:
            payload = json.loads(answer)
        except (ValueError, RecursionError) as exc:
            self.breaker.record_failure()
            raise ClassifierError(self._method, f"{self._where} answered with something other than JSON") from exc
        if not isinstance(payload, dict) or not isinstance(payload.get("data"), list):
            self.breaker.record_failure()
            raise ClassifierError(self._method, f"{self._where} answered without a `data` list")
        self.breaker.record_success()
        return payload

    def _read(self, body: dict[str, Any], timeout: float) -> tuple[int, bytes | None]:
        """(status, answer body; None when over MAX_ANSWER_BYTES). httpx's `timeout` bounds the
        connect and each read; the body must also be in within `timeout` of the call's start, so a
        trickling server holds the worker thread at most about twice `timeout`, not for ever."""
        deadline = time.monotonic() + timeout
        with self._client.stream("POST", self._url, json=body, timeout=timeout) as response:
            if response.status_code != 200:
                return response.status_code, b""
            answer = bytearray()
            for chunk in response.iter_bytes():
                answer += chunk
                if len(answer) > MAX_ANSWER_BYTES:
                    return response.status_code, None
                if time.monotonic() > deadline:
                    raise httpx.ReadTimeout("the answer took longer than timeout_seconds")
            return response.status_code, bytes(answer)

    def close(self) -> None:
        self._client.close()


def _rows(payload: dict[str, Any], count: int, field: str, method: str) -> list[Any]:
    """`data[*][field]` ordered by `index`, checked to hold exactly one row per input."""
    rows: list[Any] = [None] * count
    for item in payload["data"]:
        index = item.get("index") if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < count or rows[index] is not None:
            raise ClassifierError(method, "answer rows do not match the inputs")
        rows[index] = item
    if any(row is None for row in rows):
        raise ClassifierError(method, "answer rows do not match the inputs")
    return [row.get(field) for row in rows]


def _vector(values: Any, method: str) -> np.ndarray:
    if not isinstance(values, list) or not values or not all(isinstance(v, int | float) for v in values):
        raise ClassifierError(method, "an answer row is not a list of numbers")
    vector = np.asarray(values, dtype=np.float32)
    if not np.isfinite(vector).all():
        raise ClassifierError(method, "an answer row holds a non-finite number")
    return vector


def _cut(texts: Sequence[str], endpoint: RemoteEndpoint) -> tuple[list[str], list[bool]]:
    limit = endpoint.max_input_chars
    return [t[:limit] for t in texts], [len(t) > limit for t in texts]


def _request(model: str, texts: list[str], endpoint: RemoteEndpoint, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "input": texts, **extra}
    if endpoint.truncate_prompt_tokens is not None:
        body["truncate_prompt_tokens"] = endpoint.truncate_prompt_tokens
    return body


class OpenAIEmbeddingsEncoder:
    """An `Encoder` whose vectors come from an OpenAI-compatible `/v1/embeddings` server.

    Same interface as the local encoders (blocking `encode`, run by `EncodingService` on its worker
    thread), so the micro-batcher, the shared encoder pass and the heads over it work unchanged.
    Vectors are L2-normalised here, whatever the server does.
    """

    backend = "openai"
    remote = True  # example phrases are encoded when the server answers, not at construction

    def __init__(self, config: EncoderConfig, model: str, budget_seconds: float | None = None) -> None:
        assert config.remote is not None and config.remote.base_url is not None  # checked at config load
        self.endpoint = config.remote
        self.model = config.remote.model or model
        self.dim = 0  # known after the first answer
        self._max_batch = config.max_batch
        self.client = PoolingClient(config.remote, f"{config.remote.base_url}/embeddings", "encoder", budget_seconds)

    def encode(self, texts: Sequence[str]) -> list[Encoded]:
        """Blocking, for requests: each call within the routing budget."""
        return self._encode(texts, None)

    def encode_examples(self, texts: Sequence[str]) -> list[Encoded]:
        """Blocking, start-up work (example phrases): each call within the endpoint's own timeout."""
        return self._encode(texts, self.endpoint.timeout_seconds)

    def _encode(self, texts: Sequence[str], timeout: float | None) -> list[Encoded]:
        """One request per `max_batch` texts (TEI refuses bigger client batches)."""
        encoded: list[Encoded] = []
        for start in range(0, len(texts), self._max_batch):
            cut, truncated = _cut(texts[start : start + self._max_batch], self.endpoint)
            payload = self.client.post(_request(self.model, cut, self.endpoint, encoding_format="float"), timeout)
            vectors = [_vector(v, "encoder") for v in _rows(payload, len(cut), "embedding", "encoder")]
            if len({len(v) for v in vectors}) != 1 or (self.dim and len(vectors[0]) != self.dim):
                raise ClassifierError("encoder", "vectors of different sizes in the answers")
            self.dim = len(vectors[0])
            for vector, cut_off in zip(vectors, truncated, strict=True):
                norm = float(np.linalg.norm(vector))
                encoded.append((vector / norm if norm > 0 else vector, cut_off))
        return encoded

    def close(self) -> None:
        self.client.close()


class VllmClassifyModel:
    """Class probabilities from vLLM's `/classify`, micro-batched like a local model.

    Labels come from `category_mapping_path` when the config gives one; otherwise from the `label`
    vLLM reports for the arg-max (its `id2label`), remembered per class index in `reported_labels`.
    """

    def __init__(self, config: CategoryModelConfig, batching: EncoderConfig,
                 budget_seconds: float | None = None, reads_labels: bool = True) -> None:
        assert config.remote is not None and config.remote.base_url is not None  # checked at config load
        self.endpoint = config.remote
        self.model = config.served_model
        root = config.remote.base_url.removesuffix("/v1")  # vLLM serves /classify at the root
        self.client = PoolingClient(config.remote, f"{root}/classify", "domain", budget_seconds)
        self.reported_labels: dict[int, str] = {}
        self._reads_labels = reads_labels  # without a category_mapping_path, vLLM's labels name the classes
        self._batcher: MicroBatcher[Probabilities] = MicroBatcher(
            self._run, "domain", batching.batch_window_ms / 1000, batching.max_batch, batching.max_queue,
            batching.batching)

    def _run(self, texts: Sequence[str]) -> list[Probabilities]:
        cut, truncated = _cut(texts, self.endpoint)
        payload = self.client.post(_request(self.model, cut, self.endpoint))
        results: list[Probabilities] = []
        for row, cut_off in zip(_rows(payload, len(cut), "probs", "domain"), truncated, strict=True):
            probs = _vector(row, "domain")
            if not math.isclose(float(probs.sum()), 1.0, abs_tol=1e-3) or (probs < 0).any():
                raise ClassifierError("domain", "`probs` is not a probability distribution (softmax activation off?)")
            results.append((probs, cut_off))
        if self._reads_labels:
            for item, (probs, _) in zip(sorted(payload["data"], key=lambda item: item["index"]), results, strict=True):
                self._remember_label(int(np.argmax(probs)), item.get("label"))
        return results

    def _remember_label(self, index: int, label: object) -> None:
        """A label that could not be a name (a header value) is not remembered: the class stays
        unnamed, and a request that picks it falls back."""
        try:
            name = reply_name(label, "domain", "label")
        except ClassifierError as exc:
            logger.warning("vLLM /classify: %s; class %d left unnamed", exc, index)
            return
        if name is not None:
            self.reported_labels.setdefault(index, name)

    async def probabilities(self, text: str) -> Probabilities:
        return await self._batcher.submit(text)

    conversation_probabilities = probabilities  # one model reads both

    async def connect(self) -> None:
        """One small request: readiness waits until the server answers."""
        await self.probabilities("ready")

    def close(self) -> None:
        self._batcher.close()
        self.client.close()
