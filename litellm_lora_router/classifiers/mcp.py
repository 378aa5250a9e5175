"""A tool on an MCP server decides the category (or the adapter) with logic the operator owns.

The only module that imports the `mcp` SDK. One long-lived session per server, owned by a
background task (the SDK's context managers must be entered and left in one task); a call that
fails marks the session broken and the next call reconnects (a dead stdio server is restarted).
Each call is bounded by `timeout_seconds`, and a circuit breaker stops calling a failing server for
a while. Every failure raises `ClassifierError`, which the router turns into a fallback.

Protocol (vLLM Semantic Router's, plus a `context` object this plugin adds):
    call   tool(text=..., with_probabilities=true, context={"tenant", "user", "key_metadata"})
    result JSON text {"class", "confidence", "probabilities"?, "model"?, "lora_name"?,
                      "use_reasoning"?, "system_prompt"?}
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

from ..breaker import CircuitBreaker
from ..config import McpCategoryModelConfig
from ..errors import ClassifierError, ClassifierTimeout
from .base import Caller, Classification

__all__ = ["McpClassifier", "discover_tool"]

logger = logging.getLogger("litellm_lora_router")

PREFERRED_TOOL_NAMES = ("classify_text", "classify", "categorize", "categorize_text")


def discover_tool(tools: Sequence[tuple[str, str]]) -> str | None:
    """The classification tool among (name, description) pairs, in vLLM Semantic Router's order."""
    names = [name for name, _ in tools]
    for preferred in PREFERRED_TOOL_NAMES:
        if preferred in names:
            return preferred
    for name, description in tools:
        if "classif" in name.lower() or "classif" in description.lower():
            return name
    return None


def _result_json(result: Any) -> dict[str, Any]:
    if getattr(result, "is_error", False):
        raise ValueError("the tool reported an error")
    if isinstance(getattr(result, "structured_content", None), Mapping) and "class" in result.structured_content:
        return dict(result.structured_content)
    for block in getattr(result, "content", []) or []:
        text = getattr(block, "text", None)
        if isinstance(text, str):
            parsed = json.loads(text)
            if isinstance(parsed, dict):
                return parsed
    raise ValueError("no JSON object in the tool result")


class _Session:
    """One connection to one MCP server, kept open by a background task."""

    def __init__(self, config: McpCategoryModelConfig, cwd: Path | None) -> None:
        self._config = config
        self._cwd = cwd
        self._ready: asyncio.Future[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._stop: asyncio.Event | None = None

    def _transport(self) -> AbstractAsyncContextManager[Any]:
        if self._config.transport_type == "http":
            from mcp.client.streamable_http import streamable_http_client

            assert self._config.url is not None
            return streamable_http_client(self._config.url)
        from mcp.client.stdio import StdioServerParameters, stdio_client

        assert self._config.command is not None
        params = StdioServerParameters(command=self._config.command, args=list(self._config.args),
                                       env=dict(self._config.env) or None, cwd=self._cwd)
        return stdio_client(params)

    async def _own(self, ready: asyncio.Future[Any], stop: asyncio.Event) -> None:
        from mcp import ClientSession

        try:
            async with self._transport() as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                ready.set_result(session)
                await stop.wait()
        except BaseException as exc:
            if not ready.done():
                ready.set_exception(exc)
                ready.exception()
            if not isinstance(exc, Exception):
                raise

    async def get(self) -> Any:
        """The open session, connecting (or reconnecting) first when needed."""
        if self._ready is None or (self._ready.done() and self._ready.exception() is not None) or (
            self._task is not None and self._task.done()
        ):
            await self.reset()
            self._ready = asyncio.get_running_loop().create_future()
            self._stop = asyncio.Event()
            self._task = asyncio.create_task(self._own(self._ready, self._stop), name="lora-router-mcp")
        return await asyncio.shield(self._ready)

    async def reset(self) -> None:
        """Drop the connection; the next `get` opens a new one (and restarts a stdio server)."""
        task, stop = self._task, self._stop
        self._ready = self._task = self._stop = None
        if stop is not None:
            stop.set()
        if task is not None and not task.done():
            try:
                await asyncio.wait_for(task, 2.0)
            except Exception:  # includes TimeoutError: a stuck transport is cancelled
                task.cancel()


class McpClassifier:
    """Classification by an MCP tool; its answer may depend on the caller (tenant)."""

    method = "mcp"
    caller_dependent = True

    def __init__(self, config: McpCategoryModelConfig, cwd: Path | None = None,
                 configured_prompts: Mapping[str, str | None] | None = None) -> None:
        self.config = config
        self._session = _Session(config, cwd)
        self._tool: str | None = config.tool_name
        self._configured_prompts = dict(configured_prompts or {})
        self.server_categories: dict[str, dict[str, Any]] = {}
        self._breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset_seconds)
        self._connect_lock = asyncio.Lock()
        self._discovered: Any = None  # the session the tool list was read from

    async def connect(self) -> Any:
        """The open session; on a new one, find the tool and read `list_categories` (once per
        session, not per request)."""
        session = await self._session.get()
        if session is self._discovered:
            return session
        async with self._connect_lock:
            if session is not self._discovered:
                await self._discover(session)
                self._discovered = session
        return session

    async def _discover(self, session: Any) -> None:
        listed = await session.list_tools()
        tools = [(t.name, t.description or "") for t in listed.tools]
        if self._tool is None:
            self._tool = discover_tool(tools)
            if self._tool is None:
                raise ClassifierError(self.method, f"no classification tool among {[n for n, _ in tools]}")
        if "list_categories" in {n for n, _ in tools}:
            categories = _result_json_categories(await session.call_tool("list_categories", {}))
            self.server_categories = {c["name"]: c for c in categories if isinstance(c, dict) and "name" in c}

    async def classify(self, texts: Sequence[str], caller: Caller | None = None) -> list[Classification]:
        return [await self._classify_one(text, caller or Caller()) for text in texts]

    async def _classify_one(self, text: str, caller: Caller) -> Classification:
        if not self._breaker.allow():
            raise ClassifierError(self.method, "circuit breaker open")
        arguments = {"text": text, "with_probabilities": True, "context": caller.as_context()}
        try:
            payload = await asyncio.wait_for(self._call(arguments), self.config.timeout_seconds)
        except TimeoutError as exc:
            self._breaker.record_failure()
            await self._session.reset()
            raise ClassifierTimeout(self.method, f"no answer within {self.config.timeout_seconds}s") from exc
        except ClassifierError:
            self._breaker.record_failure()
            raise
        except Exception as exc:
            self._breaker.record_failure()
            await self._session.reset()
            raise ClassifierError(self.method, f"{type(exc).__name__}: {exc}") from exc
        self._breaker.record_success()
        return self._classification(payload)

    async def _call(self, arguments: dict[str, Any]) -> dict[str, Any]:
        session = await self.connect()
        assert self._tool is not None
        return _result_json(await session.call_tool(self._tool, arguments))

    def _classification(self, payload: Mapping[str, Any]) -> Classification:
        label = payload.get("class")
        label = str(label) if label is not None else None
        confidence = float(payload.get("confidence", 1.0 if label else 0.0))
        if label is None:
            return Classification.no_match(self.method)
        if confidence < self.config.threshold:
            return Classification.no_match(self.method, confidence, candidate=label)
        prompt = payload.get("system_prompt")
        if not prompt and not self._configured_prompts.get(label):
            prompt = (self.server_categories.get(label) or {}).get("system_prompt")
        reasoning = payload.get("use_reasoning")
        return Classification(
            label, confidence, self.method,
            lora_name=_str_or_none(payload.get("lora_name")),
            model=_str_or_none(payload.get("model")),
            use_reasoning=bool(reasoning) if reasoning is not None else None,
            system_prompt=str(prompt) if prompt else None,
        )

    async def aclose(self) -> None:
        await self._session.reset()


def _str_or_none(value: Any) -> str | None:
    return str(value) if value else None


def _result_json_categories(result: Any) -> list[Any]:
    """`list_categories` answers `{"categories": [...]}` or a bare list."""
    for block in getattr(result, "content", []) or []:
        text = getattr(block, "text", None)
        if isinstance(text, str):
            parsed = json.loads(text)
            if isinstance(parsed, dict):
                parsed = parsed.get("categories", [])
            return parsed if isinstance(parsed, list) else []
    return []
