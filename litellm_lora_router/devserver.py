"""A vLLM-compatible stand-in server for tests and the demo (there is no GPU here).

It answers the way vLLM's OpenAI server does for LoRA: `/v1/models` lists the base model and
each adapter with its `parent`; an unknown model gets vLLM's 404 body; adapters can be loaded and
unloaded at run time. It records every request body it receives, so tests assert what vLLM would
really have seen (`GET /_devserver/requests`, cleared by `DELETE`).

    python -m litellm_lora_router.devserver --served-model-name llama2-7b \\
        --lora-modules technical-lora=/adapters/technical medical-lora=/adapters/medical --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from .messages import content_text

__all__ = ["StandInState", "create_app", "main", "parse_lora_modules"]


@dataclass
class StandInState:
    """What the server serves and what it has received."""

    base_model: str
    base_root: str
    adapters: dict[str, str] = field(default_factory=dict)  # name -> path
    requests: list[dict[str, Any]] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))
    latency_s: float = 0.0
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def lock(self, name: str) -> asyncio.Lock:
        """One lock per adapter name makes load/unload atomic, as vLLM's resolver lock does."""
        return self.locks.setdefault(name, asyncio.Lock())

    def serves(self, model: str) -> bool:
        return model == self.base_model or model in self.adapters


def error_response(message: str, err_type: str, status: int, param: str | None = None) -> JSONResponse:
    """vLLM's `ErrorResponse`: `{"error": {"message", "type", "param", "code"}}`."""
    return JSONResponse({"error": {"message": message, "type": err_type, "param": param, "code": status}}, status_code=status)


def _model_card(model_id: str, root: str, parent: str | None, created: int) -> dict[str, Any]:
    return {
        "id": model_id,
        "object": "model",
        "created": created,
        "owned_by": "vllm",
        "root": root,
        "parent": parent,
        "max_model_len": 4096 if parent is None else None,
        "permission": [
            {
                "id": f"modelperm-{model_id}",
                "object": "model_permission",
                "created": created,
                "allow_create_engine": False,
                "allow_sampling": True,
                "allow_logprobs": True,
                "allow_search_indices": False,
                "allow_view": True,
                "allow_fine_tuning": False,
                "organization": "*",
                "group": None,
                "is_blocking": False,
            }
        ],
    }


def _reply_text(body: dict[str, Any]) -> str:
    """Deterministic text naming the model that answered, so a reader sees the routing."""
    messages = body.get("messages") or []
    last = content_text(messages[-1].get("content")) if messages and isinstance(messages[-1], dict) else ""
    return f"[{body.get('model')}] answer to: {last[:60]}"


def _usage(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt = sum(len(content_text(m.get("content")).split()) for m in body.get("messages") or [] if isinstance(m, dict))
    completion = len(text.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


async def _stream(body: dict[str, Any], text: str) -> AsyncIterator[bytes]:
    chunk_id = f"chatcmpl-{uuid.uuid4().hex}"
    created = int(time.time())
    base = {"id": chunk_id, "object": "chat.completion.chunk", "created": created, "model": body["model"]}
    words = text.split(" ")
    first = {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]}
    yield f"data: {json.dumps(first)}\n\n".encode()
    for i, word in enumerate(words):
        piece = word if i == 0 else f" {word}"
        chunk = {**base, "choices": [{"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}]}
        yield f"data: {json.dumps(chunk)}\n\n".encode()
    last = {**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]}
    yield f"data: {json.dumps(last)}\n\n".encode()
    if (body.get("stream_options") or {}).get("include_usage"):
        usage = {**base, "choices": [], "usage": _usage(body, text)}
        yield f"data: {json.dumps(usage)}\n\n".encode()
    yield b"data: [DONE]\n\n"


def create_app(state: StandInState) -> FastAPI:
    app = FastAPI(title="vLLM stand-in")
    app.state.standin = state

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        cards = [_model_card(state.base_model, state.base_root, None, state.created)]
        cards += [_model_card(name, path, state.base_model, state.created) for name, path in state.adapters.items()]
        return {"object": "list", "data": cards}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Response:
        body = await request.json()
        state.requests.append(body)
        model = body.get("model")
        if not isinstance(model, str) or not state.serves(model):
            return error_response(f"The model `{model}` does not exist.", "NotFoundError", 404, "model")
        if state.latency_s:
            await asyncio.sleep(state.latency_s)
        text = _reply_text(body)
        if body.get("stream"):
            return StreamingResponse(_stream(body, text), media_type="text/event-stream")
        return JSONResponse(
            {
                "id": f"chatcmpl-{uuid.uuid4().hex}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None, "finish_reason": "stop"}],
                "usage": _usage(body, text),
            }
        )

    @app.post("/v1/load_lora_adapter", response_model=None)
    async def load_lora_adapter(request: Request) -> Response:
        body = await request.json()
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return error_response("Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput", 400)
        async with state.lock(name):
            if name in state.adapters:
                return error_response(f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput", 400)
            state.adapters[name] = path
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    @app.post("/v1/unload_lora_adapter", response_model=None)
    async def unload_lora_adapter(request: Request) -> Response:
        body = await request.json()
        name = body.get("lora_name")
        async with state.lock(str(name)):
            if name not in state.adapters:
                return error_response(f"The lora adapter '{name}' cannot be found.", "NotFoundError", 404)
            del state.adapters[name]
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    @app.get("/_devserver/requests")
    async def recorded() -> list[dict[str, Any]]:
        return state.requests

    @app.delete("/_devserver/requests")
    async def clear() -> Response:
        state.requests.clear()
        return Response(status_code=204)

    return app


def parse_lora_modules(specs: Sequence[str]) -> dict[str, str]:
    """vLLM's `--lora-modules name=path` syntax (JSON objects are accepted too)."""
    adapters: dict[str, str] = {}
    for spec in specs:
        if spec.startswith("{"):
            obj = json.loads(spec)
            adapters[obj["name"]] = obj["path"]
            continue
        name, sep, path = spec.partition("=")
        if not sep or not name or not path:
            raise argparse.ArgumentTypeError(f"--lora-modules expects name=path, got {spec!r}")
        adapters[name] = path
    return adapters


def main(argv: Sequence[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="llama2-7b", help="base model path or name (as `vllm serve MODEL`)")
    parser.add_argument("--served-model-name", default=None)
    parser.add_argument("--enable-lora", action="store_true", help="accepted for vLLM parity")
    parser.add_argument("--lora-modules", nargs="*", default=[])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds to wait before answering")
    args = parser.parse_args(argv)
    state = StandInState(
        base_model=args.served_model_name or args.model,
        base_root=args.model,
        adapters=parse_lora_modules(args.lora_modules),
        latency_s=args.latency,
    )
    uvicorn.run(create_app(state), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
