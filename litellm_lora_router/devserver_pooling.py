"""The vLLM stand-in's pooling endpoints: `/v1/embeddings` and `/classify`.

Real vLLM runs an embedding or a classification model in a server of its own (`vllm serve <model>
--runner pooling`); the stand-in adds both endpoints to the chat server when asked
(`--embedding-model ENCODER_ID ...`, `--classify-model DIR`), computed by this package's own local
models, so that a test shows remote and local classification give the same decisions. Request and response
bodies follow vLLM's `EmbeddingCompletionRequest`/`EmbeddingResponse` and
`ClassificationCompletionRequest`/`ClassificationResponse` (see `classifiers/remote.py`). With
`--api-key`, requests without `Authorization: Bearer <key>` get vLLM's 401 `{"error": "Unauthorized"}`.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from .classifiers.encoders import ENCODER_IDS, Encoder, EncodingService, build_encoder
from .config import EncoderConfig
from .devserver import StandInState, error_response

__all__ = ["PoolingModels", "add_pooling_routes", "load_pooling_models"]


@dataclass
class PoolingModels:
    """What the stand-in's pooling endpoints serve, under which names."""

    api_key: str | None = None
    encoders: dict[str, Encoder] = field(default_factory=dict)  # served name (an encoder id) -> encoder
    classify_name: str | None = None
    classify_model: Any = None  # a HeadModel or SequenceClassifierModel: `await probabilities(text)`
    classify_labels: list[str] = field(default_factory=list)


def load_pooling_models(embedding_names: list[str], classify_dir: Path | None, classify_name: str | None,
                        api_key: str | None) -> PoolingModels:
    """The local encoders (as the router builds them by default) and a domain classifier directory."""
    from .classifiers.domain import HeadModel, SequenceClassifierModel, is_head_dir, read_labels

    unknown = [n for n in embedding_names if n not in ENCODER_IDS]
    if unknown:
        raise SystemExit(f"--embedding-model: unknown encoder(s) {unknown}; known: {', '.join(ENCODER_IDS)}")
    options = EncoderConfig()
    models = PoolingModels(api_key, {name: build_encoder(options, model=name) for name in embedding_names})
    if classify_dir is not None:
        services: dict[str, EncodingService] = {}

        def encoding(encoder_id: str) -> EncodingService:
            if encoder_id not in services:
                services[encoder_id] = EncodingService(build_encoder(options, model=encoder_id), options)
            return services[encoder_id]

        models.classify_name = classify_name or str(classify_dir)
        models.classify_labels = read_labels(classify_dir, None)
        models.classify_model = (HeadModel(classify_dir, encoding) if is_head_dir(classify_dir)
                                 else SequenceClassifierModel(classify_dir, True, options))
    return models


def _inputs(body: dict[str, Any]) -> list[str] | None:
    """`input` as vLLM's completion-style pooling requests take it: a string or a list of strings."""
    value = body.get("input")
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def _usage(texts: list[str]) -> dict[str, Any]:
    tokens = sum(len(t.split()) for t in texts)
    return {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0, "prompt_tokens_details": None}


def add_pooling_routes(app: FastAPI, state: StandInState, models: PoolingModels) -> None:
    async def receive(request: Request,
                      served: Sequence[str]) -> tuple[dict[str, Any], str, list[str], Response | None]:
        """The body, the served model it names (vLLM takes a missing `model` as its own), its texts,
        or the refusal vLLM would answer with."""
        if models.api_key and request.headers.get("authorization") != f"Bearer {models.api_key}":
            return {}, "", [], JSONResponse({"error": "Unauthorized"}, status_code=401)
        body = await request.json()
        state.record(request.url.path, body)
        model = body.get("model", served[0] if served else None)
        if model not in served:
            message = f"The model `{body.get('model')}` does not exist."
            return body, "", [], error_response(message, "NotFoundError", 404, "model")
        texts = _inputs(body)
        if texts is None:
            message = "`input` must be a string or a list of strings."
            return body, model, [], error_response(message, "BadRequestError", 400, "input")
        refused = await state.inject(model)  # POST /_devserver/faults, as for the chat models
        return body, model, texts if refused is None else [], refused

    @app.post("/v1/embeddings", response_model=None)
    async def embeddings(request: Request) -> Response:
        body, model, texts, refused = await receive(request, list(models.encoders))
        if refused is not None:
            return refused
        encoded = await asyncio.to_thread(models.encoders[model].encode, texts)
        data = [{"index": i, "object": "embedding", "embedding": vector.tolist()}
                for i, (vector, _) in enumerate(encoded)]
        return JSONResponse({"id": f"embd-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                             "model": model, "data": data, "usage": _usage(texts)})

    @app.post("/classify", response_model=None)
    async def classify(request: Request) -> Response:
        body, model, texts, refused = await receive(request, [models.classify_name] if models.classify_name else [])
        if refused is not None:
            return refused
        results = await asyncio.gather(*(models.classify_model.probabilities(t) for t in texts))
        data = []
        for i, (probs, _) in enumerate(results):
            best = int(probs.argmax())
            label = models.classify_labels[best] if best < len(models.classify_labels) else None
            data.append({"index": i, "label": label, "probs": [float(p) for p in probs], "num_classes": len(probs)})
        return JSONResponse({"id": f"classify-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()),
                             "model": model, "data": data, "usage": _usage(texts)})
