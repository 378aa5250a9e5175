"""A vLLM-compatible stand-in server for tests and the demo (there is no GPU here).

It answers the way vLLM's OpenAI server does for LoRA: `/v1/chat/completions`, `/v1/completions`
and `/v1/responses` (each streaming too) take an adapter's name as `model`; `/v1/models` lists the
base model and each adapter with its `parent`; an unknown model gets vLLM's 404 body; adapters can be
loaded and unloaded at run time (taking `--load-latency` seconds, as a real load takes time). It
records every request body it receives, so tests assert what vLLM would really have seen (`GET
/_devserver/requests`: the bodies; `GET /_devserver/calls`: path and body; both cleared by `DELETE
/_devserver/requests`; load and unload calls at `GET /_devserver/lora_requests`). `POST
/_devserver/faults` makes a model answer with an error status or stall, to exercise LiteLLM's
fallbacks. With `--embedding-model` and `--classify-model` it also serves vLLM's pooling endpoints
(`devserver_pooling.py`).

    python -m litellm_lora_router.devserver --served-model-name llama2-7b \\
        --lora-modules technical-lora=/adapters/technical medical-lora=/adapters/medical --port 8000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from .messages import content_text

if TYPE_CHECKING:
    from .devserver_pooling import PoolingModels

__all__ = ["Fault", "StandInState", "create_app", "main", "parse_lora_modules"]


@dataclass(frozen=True)
class Fault:
    """An injected failure for one model: an HTTP error status, or a stall before answering."""

    status: int | None = None
    delay_s: float = 0.0


@dataclass
class StandInState:
    """What the server serves and what it has received."""

    base_model: str
    base_root: str
    adapters: dict[str, str] = field(default_factory=dict)  # name -> path
    requests: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    created: int = field(default_factory=lambda: int(time.time()))
    latency_s: float = 0.0
    load_latency_s: float = 0.0
    lora_requests: list[dict[str, Any]] = field(default_factory=list)  # load/unload calls, in order
    faults: dict[str, Fault] = field(default_factory=dict)  # model -> injected failure
    locks: dict[str, asyncio.Lock] = field(default_factory=dict)

    def lock(self, name: str) -> asyncio.Lock:
        """One lock per adapter name makes load/unload atomic, as vLLM's resolver lock does."""
        return self.locks.setdefault(name, asyncio.Lock())

    def serves(self, model: str) -> bool:
        return model == self.base_model or model in self.adapters

    def record(self, path: str, body: dict[str, Any]) -> None:
        self.requests.append(body)
        self.paths.append(path)

    async def inject(self, model: str) -> JSONResponse | None:
        """The model's injected fault (a stall, then an error status), then the server-wide
        latency; the error response when the fault has a status."""
        fault = self.faults.get(model)
        if fault is not None and fault.delay_s:
            await asyncio.sleep(fault.delay_s)
        if fault is not None and fault.status:
            return error_response("Injected failure (stand-in fault).", "InternalServerError", fault.status)
        if self.latency_s:
            await asyncio.sleep(self.latency_s)
        return None


def error_response(message: str, err_type: str, status: int, param: str | None = None) -> JSONResponse:
    """vLLM's `ErrorResponse`: `{"error": {"message", "type", "param", "code"}}`."""
    body = {"error": {"message": message, "type": err_type, "param": param, "code": status}}
    return JSONResponse(body, status_code=status)


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


def _last_text(body: dict[str, Any]) -> str:
    """The prompt's last text, whichever API the body follows (chat, completions, responses)."""
    if isinstance(body.get("prompt"), str):
        return str(body["prompt"])
    if isinstance(body.get("prompt"), list) and body["prompt"] and isinstance(body["prompt"][-1], str):
        return str(body["prompt"][-1])
    if isinstance(body.get("input"), str):
        return str(body["input"])
    items = body.get("messages") if isinstance(body.get("messages"), list) else body.get("input")
    if isinstance(items, list) and items and isinstance(items[-1], dict):
        return content_text(items[-1].get("content"))
    return ""


def _reply_text(body: dict[str, Any]) -> str:
    """Deterministic text naming the model that answered, so a reader sees the routing."""
    return f"[{body.get('model')}] answer to: {_last_text(body)[:60]}"


def _prompt_words(body: dict[str, Any]) -> int:
    """A stand-in token count: words of every message, the prompt or the input."""
    items = body.get("messages") if isinstance(body.get("messages"), list) else body.get("input")
    if isinstance(items, list):
        return sum(len(content_text(m.get("content")).split()) for m in items if isinstance(m, dict))
    return len(_last_text(body).split())


def _usage(body: dict[str, Any], text: str) -> dict[str, int]:
    prompt = _prompt_words(body)
    completion = len(text.split())
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _pieces(text: str) -> list[str]:
    return [word if i == 0 else f" {word}" for i, word in enumerate(text.split(" "))]


def _sse(payload: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(payload)}\n\n".encode()


async def _stream_chat(body: dict[str, Any], text: str) -> AsyncIterator[bytes]:
    base = {"id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion.chunk", "created": int(time.time()),
            "model": body["model"]}
    yield _sse({**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                     "finish_reason": None}]})
    for piece in _pieces(text):
        delta = {"index": 0, "delta": {"content": piece}, "logprobs": None, "finish_reason": None}
        yield _sse({**base, "choices": [delta]})
    yield _sse({**base, "choices": [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        yield _sse({**base, "choices": [], "usage": _usage(body, text)})
    yield b"data: [DONE]\n\n"


def _chat_completion(body: dict[str, Any], text: str) -> dict[str, Any]:
    """vLLM's `/v1/chat/completions` body (`object: chat.completion`)."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "logprobs": None,
                     "finish_reason": "stop"}],
        "usage": _usage(body, text),
    }


def _completion(body: dict[str, Any], text: str) -> dict[str, Any]:
    """vLLM's `/v1/completions` body (`object: text_completion`)."""
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [{"index": 0, "text": text, "logprobs": None, "finish_reason": "stop", "stop_reason": None}],
        "usage": _usage(body, text),
    }


async def _stream_completion(body: dict[str, Any], text: str) -> AsyncIterator[bytes]:
    base = {"id": f"cmpl-{uuid.uuid4().hex}", "object": "text_completion", "created": int(time.time()),
            "model": body["model"]}
    for piece in _pieces(text):
        yield _sse({**base, "choices": [{"index": 0, "text": piece, "logprobs": None, "finish_reason": None,
                                         "stop_reason": None}]})
    yield _sse({**base, "choices": [{"index": 0, "text": "", "logprobs": None, "finish_reason": "stop",
                                     "stop_reason": None}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        yield _sse({**base, "choices": [], "usage": _usage(body, text)})
    yield b"data: [DONE]\n\n"


def _output_message(text: str, status: str = "completed") -> dict[str, Any]:
    return {
        "id": f"msg_{uuid.uuid4().hex}",
        "type": "message",
        "status": status,
        "role": "assistant",
        "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": None}] if text else [],
    }


def _response(body: dict[str, Any], text: str, status: str = "completed") -> dict[str, Any]:
    """vLLM's `/v1/responses` body (`object: response`), as OpenAI's Responses API defines it."""
    words = _prompt_words(body)
    output = len(text.split())
    return {
        "id": f"resp_{uuid.uuid4().hex}",
        "object": "response",
        "created_at": int(time.time()),
        "model": body["model"],
        "status": status,
        "instructions": body.get("instructions"),
        "output": [_output_message(text)] if status == "completed" else [],
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "temperature": body.get("temperature"),
        "top_p": body.get("top_p"),
        "max_output_tokens": body.get("max_output_tokens"),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": body.get("reasoning"),
        "metadata": body.get("metadata"),
        "text": {"format": {"type": "text"}},
        "truncation": "disabled",
        "incomplete_details": None,
        "error": None,
        "usage": {
            "input_tokens": words, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": output, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": words + output,
        } if status == "completed" else None,
    }


async def _stream_response(body: dict[str, Any], text: str) -> AsyncIterator[bytes]:
    """Responses API streaming events, framed as vLLM frames them: `event: <type>` then `data:`."""
    sequence = 0

    def event(kind: str, **fields: Any) -> bytes:
        nonlocal sequence
        payload = {"type": kind, "sequence_number": sequence, **fields}
        sequence += 1
        return f"event: {kind}\ndata: {json.dumps(payload)}\n\n".encode()

    started = _response(body, "", status="in_progress")
    item = _output_message("", status="in_progress")
    yield event("response.created", response=started)
    yield event("response.in_progress", response=started)
    yield event("response.output_item.added", output_index=0, item=item)
    part = {"type": "output_text", "text": "", "annotations": [], "logprobs": None}
    yield event("response.content_part.added", item_id=item["id"], output_index=0, content_index=0, part=part)
    for piece in _pieces(text):
        yield event("response.output_text.delta", item_id=item["id"], output_index=0, content_index=0, delta=piece,
                    logprobs=[])
    yield event("response.output_text.done", item_id=item["id"], output_index=0, content_index=0, text=text,
                logprobs=[])
    yield event("response.content_part.done", item_id=item["id"], output_index=0, content_index=0,
                part={**part, "text": text})
    done = {**_output_message(text), "id": item["id"]}
    yield event("response.output_item.done", output_index=0, item=done)
    finished = _response(body, text)
    yield event("response.completed", response={**finished, "id": started["id"], "output": [done]})


def create_app(state: StandInState, pooling: PoolingModels | None = None) -> FastAPI:
    app = FastAPI(title="vLLM stand-in")
    app.state.standin = state
    if pooling is not None:
        from .devserver_pooling import add_pooling_routes

        add_pooling_routes(app, state, pooling)

    @app.get("/health")
    async def health() -> Response:
        return Response(status_code=200)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        cards = [_model_card(state.base_model, state.base_root, None, state.created)]
        cards += [_model_card(name, path, state.base_model, state.created) for name, path in state.adapters.items()]
        return {"object": "list", "data": cards}

    async def receive(request: Request) -> tuple[dict[str, Any], Response | None]:
        """Record the body; vLLM's 404 for an unknown model, or an injected fault, come back as a response."""
        body = await request.json()
        state.record(request.url.path, body)
        model = body.get("model")
        if not isinstance(model, str) or not state.serves(model):
            return body, error_response(f"The model `{model}` does not exist.", "NotFoundError", 404, "model")
        return body, await state.inject(model)

    async def answer(request: Request, build: Callable[[dict[str, Any], str], dict[str, Any]],
                     stream: Callable[[dict[str, Any], str], AsyncIterator[bytes]]) -> Response:
        """One generation API: the recorded body's reply text, as one JSON body or as a stream."""
        body, refused = await receive(request)
        if refused is not None:
            return refused
        text = _reply_text(body)
        if body.get("stream"):
            return StreamingResponse(stream(body, text), media_type="text/event-stream")
        return JSONResponse(build(body, text))

    @app.post("/v1/chat/completions", response_model=None)
    async def chat(request: Request) -> Response:
        return await answer(request, _chat_completion, _stream_chat)

    @app.post("/v1/completions", response_model=None)
    async def completions(request: Request) -> Response:
        return await answer(request, _completion, _stream_completion)

    @app.post("/v1/responses", response_model=None)
    async def responses(request: Request) -> Response:
        return await answer(request, _response, _stream_response)

    @app.post("/v1/load_lora_adapter", response_model=None)
    async def load_lora_adapter(request: Request) -> Response:
        body = await request.json()
        state.lora_requests.append({"action": "load", **body})
        name, path = body.get("lora_name"), body.get("lora_path")
        if not name or not path:
            return error_response("Both 'lora_name' and 'lora_path' must be provided.", "InvalidUserInput", 400)
        async with state.lock(name):
            if name in state.adapters:
                return error_response(f"The lora adapter '{name}' has already been loaded.", "InvalidUserInput", 400)
            if state.load_latency_s:
                await asyncio.sleep(state.load_latency_s)
            state.adapters[name] = path
        return PlainTextResponse(f"Success: LoRA adapter '{name}' added successfully.")

    @app.post("/v1/unload_lora_adapter", response_model=None)
    async def unload_lora_adapter(request: Request) -> Response:
        body = await request.json()
        state.lora_requests.append({"action": "unload", **body})
        name = body.get("lora_name")
        async with state.lock(str(name)):
            if name not in state.adapters:
                return error_response(f"The lora adapter '{name}' cannot be found.", "NotFoundError", 404)
            del state.adapters[name]
        return PlainTextResponse(f"Success: LoRA adapter '{name}' removed successfully.")

    @app.get("/_devserver/requests")
    async def recorded() -> list[dict[str, Any]]:
        return state.requests

    @app.get("/_devserver/lora_requests")
    async def recorded_lora_requests() -> list[dict[str, Any]]:
        return state.lora_requests

    @app.get("/_devserver/calls")
    async def calls() -> list[dict[str, Any]]:
        return [{"path": path, "body": body} for path, body in zip(state.paths, state.requests, strict=True)]

    @app.delete("/_devserver/requests")
    async def clear() -> Response:
        state.requests.clear()
        state.paths.clear()
        return Response(status_code=204)

    @app.post("/_devserver/faults")
    async def set_fault(request: Request) -> Response:
        """`{"model": name, "status": 503}` or `{"model": name, "delay_s": 30}`; `{"model": name}` clears it."""
        body = await request.json()
        status, delay = body.get("status"), float(body.get("delay_s") or 0.0)
        if status is None and not delay:
            state.faults.pop(str(body.get("model")), None)
        else:
            state.faults[str(body.get("model"))] = Fault(status=status, delay_s=delay)
        return Response(status_code=204)

    @app.post("/v1/{rest:path}", response_model=None)
    async def not_served(rest: str, request: Request) -> Response:
        """Any other API (embeddings, audio, ...): recorded, then FastAPI's 404 as vLLM answers it
        for a model that does not serve it, so tests can see which model a call was sent for."""
        try:
            body = await request.json()
        except ValueError:
            body = {}
        state.record(request.url.path, body if isinstance(body, dict) else {})
        return JSONResponse({"detail": "Not Found"}, status_code=404)

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
    parser.add_argument("--load-latency", type=float, default=0.0, help="seconds a runtime adapter load takes")
    parser.add_argument("--embedding-model", nargs="+", default=[], metavar="ENCODER_ID",
                        help="also serve /v1/embeddings for these encoder ids, computed by the local encoders")
    parser.add_argument("--classify-model", type=Path, default=None,
                        help="also serve /classify with this domain classifier directory")
    parser.add_argument("--classify-model-name", default=None, help="its served name (default: the directory as given)")
    parser.add_argument("--api-key", default=None,
                        help="pooling endpoints require `Authorization: Bearer KEY`, as vLLM's")
    args = parser.parse_args(argv)
    state = StandInState(
        base_model=args.served_model_name or args.model,
        base_root=args.model,
        adapters=parse_lora_modules(args.lora_modules),
        latency_s=args.latency,
        load_latency_s=args.load_latency,
    )
    pooling = None
    if args.embedding_model or args.classify_model:
        from .devserver_pooling import load_pooling_models

        pooling = load_pooling_models(args.embedding_model, args.classify_model, args.classify_model_name, args.api_key)
    uvicorn.run(create_app(state, pooling), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
