"""A tool on an MCP server decides the category (or the adapter) with logic the operator owns.

The only module that imports the `mcp` SDK. One long-lived session per server, owned by a
background task (the SDK's context managers must be entered and left in one task). A slow answer
leaves the session alone; a broken call retires it: new calls get a new session (a dead stdio server
is restarted) while calls in flight on the old one finish. Each call is bounded by
`timeout_seconds`, cut to the router's budget; every timeout counts in a circuit breaker that stops
calling a failing server for a while. Every failure raises `ClassifierError`, which the router turns
into a fallback.

Protocol (vLLM Semantic Router's, plus a `context` object this plugin adds):
    call   tool(text=..., with_probabilities=true,
                context={"tenant": "team:<id>"|"key:<alias>"|null, "user", "key_metadata": {allowed keys}})
    result JSON text {"class", "confidence", "probabilities"?, "model"?, "lora_name"?,
                      "use_reasoning"?, "system_prompt"?}
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

from ..breaker import CircuitBreaker
from ..config import McpCategoryModelConfig, RouterConfig
from ..errors import ClassifierError, ClassifierTimeout
from .base import Caller, Classification, Classifier, reply_name

__all__ = ["McpClassifier", "build", "discover_tool"]

logger = logging.getLogger("litellm_lora_router")

#: The longest system prompt a server may set (it goes into the request sent to vLLM).
MAX_SYSTEM_PROMPT_CHARS = 32_768
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
    """The tool's JSON object. A tool error or another answer is the server's answer, not a broken
    session: `ClassifierError` (counted by the breaker; the session is kept)."""
    if getattr(result, "is_error", False):
        raise ClassifierError("mcp", "the tool reported an error")
    if isinstance(getattr(result, "structured_content", None), Mapping) and "class" in result.structured_content:
        return dict(result.structured_content)
    for block in getattr(result, "content", []) or []:
        text = getattr(block, "text", None)
        if isinstance(text, str):
            try:
                parsed = json.loads(text)
            except (ValueError, RecursionError):
                break
            if isinstance(parsed, dict):
                return parsed
    raise ClassifierError("mcp", "no JSON object in the tool result")


class _Connection:
    """One session to the server, owned by a background task (the SDK's context managers must be
    entered and left in one task). A retired connection takes no new calls and closes once the
    calls still in flight on it have ended, so recovering never fails a call that was fine."""

    def __init__(self, transport: AbstractAsyncContextManager[Any]) -> None:
        self._ready: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._calls = 0
        self.retired = False
        self.task = asyncio.create_task(self._own(transport), name="lora-router-mcp")

    @property
    def connected(self) -> bool:
        return self._ready.done() and not self._ready.cancelled() and self._ready.exception() is None

    @property
    def usable(self) -> bool:
        broken = self._ready.done() and (self._ready.cancelled() or self._ready.exception() is not None)
        return not self.retired and not broken and not self.task.done()

    async def _own(self, transport: AbstractAsyncContextManager[Any]) -> None:
        from mcp import ClientSession

        try:
            async with transport as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                self._ready.set_result(session)
                await self._stop.wait()
        except BaseException as exc:
            if not self._ready.done():
                self._ready.set_exception(exc)
                self._ready.exception()
            if not isinstance(exc, Exception):
                raise

    @asynccontextmanager
    async def use(self) -> AsyncIterator[Any]:
        """The open session for one call."""
        self._calls += 1
        try:
            yield await asyncio.shield(self._ready)
        finally:
            self._calls -= 1
            if self.retired and self._calls == 0:
                self._stop.set()

    def retire(self) -> None:
        self.retired = True
        if self._calls == 0:
            self._stop.set()

    async def close(self, grace_seconds: float = 2.0) -> None:
        self.retired = True
        self._stop.set()
        if not self.task.done():
            try:
                await asyncio.wait_for(self.task, grace_seconds)
            except Exception:  # includes TimeoutError: a stuck transport is cancelled
                self.task.cancel()


class _Session:
    """The current connection to one MCP server, plus retired ones still finishing their calls."""

    def __init__(self, config: McpCategoryModelConfig, cwd: Path | None) -> None:
        self._config = config
        self._cwd = cwd
        self._current: _Connection | None = None
        self._open: set[_Connection] = set()

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

    def connection(self) -> _Connection:
        """The current connection, opening a new one (restarting a stdio server) when there is
        none or it broke."""
        if self._current is None or not self._current.usable:
            if self._current is not None:
                self._current.retire()
            self._current = _Connection(self._transport())
            self._open.add(self._current)
            connection = self._current
            connection.task.add_done_callback(lambda _: self._open.discard(connection))
        return self._current

    @property
    def current(self) -> _Connection | None:
        return self._current

    def replace(self, connection: _Connection) -> None:
        """Stop giving out `connection`; calls in flight on it finish. When it was the current one,
        the next opens now, so that it is ready (a stdio server started) by the next call."""
        connection.retire()
        if connection is self._current:
            self._current = None
            self.connection()

    async def aclose(self) -> None:
        self._current = None
        await asyncio.gather(*(c.close() for c in list(self._open)))


class McpClassifier(Classifier):
    """Classification by an MCP tool; its answer may depend on the caller (tenant)."""

    method = "mcp"
    caller_dependent = True

    def __init__(self, config: McpCategoryModelConfig, cwd: Path | None = None,
                 configured_prompts: Mapping[str, str | None] | None = None,
                 budget_seconds: float | None = None) -> None:
        self.config = config
        # a call never outlives the router's budget, so its own timeout (which the breaker counts)
        # fires first instead of the router cancelling it unseen
        self.timeout_seconds = min(config.timeout_seconds, budget_seconds) if budget_seconds else config.timeout_seconds
        self._session = _Session(config, cwd)
        self._tool: str | None = config.tool_name
        self._configured_prompts = dict(configured_prompts or {})
        self.server_categories: dict[str, dict[str, Any]] = {}
        self.breaker = CircuitBreaker(config.breaker_failures, config.breaker_reset_seconds)
        self._discover_lock = asyncio.Lock()
        self._discovered: Any = None  # the session the tool list was read from

    async def connect(self) -> None:
        """Open the session and read the tool list (once per session, not per request)."""
        async with self._session.connection().use() as session:
            await self._ensure_discovered(session)

    async def _ensure_discovered(self, session: Any) -> None:
        if session is self._discovered:
            return
        async with self._discover_lock:
            if session is not self._discovered:
                await self._discover(session)
                self._discovered = session

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

    async def classify(self, texts: Sequence[str], caller: Caller | None = None,
                       contexts: Sequence[str | None] | None = None) -> list[Classification]:
        return [await self._classify_one(text, caller or Caller()) for text in texts]

    def record_timeout(self, connection: _Connection | None = None) -> None:
        """A call ran out of time (its own timeout, or the router's budget). When that opens the
        breaker, a connected session is replaced by a fresh one (one still connecting is kept: the
        server is starting, not stuck)."""
        self.breaker.record_failure()
        connection = connection or self._session.current
        if not self.breaker.allow() and connection is not None and connection.connected:
            self._session.replace(connection)

    async def _classify_one(self, text: str, caller: Caller) -> Classification:
        if not self.breaker.allow():
            raise ClassifierError(self.method, "circuit breaker open")
        arguments = {"text": text, "with_probabilities": True, "context": caller.as_context()}
        connection = self._session.connection()
        try:
            async with asyncio.timeout(self.timeout_seconds):
                payload = await self._call(connection, arguments)
            classification = self._classification(payload)
        except TimeoutError as exc:
            self.record_timeout(connection)
            raise ClassifierTimeout(self.method, f"no answer within {self.timeout_seconds}s") from exc
        except ClassifierError:
            self.breaker.record_failure()
            raise
        except Exception as exc:
            self.breaker.record_failure()
            self._session.replace(connection)
            raise ClassifierError(self.method, f"{type(exc).__name__}: {exc}") from exc
        self.breaker.record_success()
        return classification

    async def _call(self, connection: _Connection, arguments: dict[str, Any]) -> dict[str, Any]:
        async with connection.use() as session:
            await self._ensure_discovered(session)
            assert self._tool is not None
            return _result_json(await session.call_tool(self._tool, arguments))

    def _classification(self, payload: Mapping[str, Any]) -> Classification:
        """The reply as a classification; `ClassifierError` for a confidence that is no
        probability or a system prompt that is not a string of at most `MAX_SYSTEM_PROMPT_CHARS`."""
        label = reply_name(payload.get("class"), self.method, "class")
        confidence = payload.get("confidence")
        confidence = (1.0 if label else 0.0) if confidence is None else confidence
        if isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0.0 <= confidence <= 1.0:
            raise ClassifierError(self.method, "the reply's confidence is not a number in [0, 1]")
        confidence = float(confidence)
        if label is None:
            return Classification.no_match(self.method)
        if confidence < self.config.threshold:
            return Classification.no_match(self.method, confidence, candidate=label)
        prompt = payload.get("system_prompt")
        if not prompt and not self._configured_prompts.get(label):
            prompt = (self.server_categories.get(label) or {}).get("system_prompt")
        if prompt and (not isinstance(prompt, str) or len(prompt) > MAX_SYSTEM_PROMPT_CHARS):
            raise ClassifierError(self.method, f"the reply's system_prompt is not a string of at most "
                                               f"{MAX_SYSTEM_PROMPT_CHARS} characters")
        reasoning = payload.get("use_reasoning")
        return Classification(
            label, confidence, self.method,
            lora_name=reply_name(payload.get("lora_name"), self.method, "lora_name"),
            model=reply_name(payload.get("model"), self.method, "model"),
            use_reasoning=bool(reasoning) if reasoning is not None else None,
            system_prompt=prompt or None,
        )

    async def aclose(self) -> None:
        await self._session.aclose()


def build(config: RouterConfig, encoding: Callable[[], Any]) -> McpClassifier | None:
    """The classifier `classifier.mcp_category_model` asks for; a stdio server starts in the config's folder."""
    mcp = config.classifier.mcp_category_model
    if mcp is None or not mcp.enabled:
        return None
    cwd = config.source.parent if config.source else None
    budget = config.lora_router.classification_timeout_seconds
    if mcp.timeout_seconds > budget:
        logger.warning("%s: classifier.mcp_category_model.timeout_seconds (%s) is longer than "
                       "lora_router.classification_timeout_seconds (%s); MCP calls are cut at %s s",
                       config.source or "router config", mcp.timeout_seconds, budget, budget)
    return McpClassifier(mcp, cwd, {c.name: c.system_prompt for c in config.categories}, budget_seconds=budget)


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
