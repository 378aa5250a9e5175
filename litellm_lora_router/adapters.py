"""Which adapters each vLLM server has loaded, and loading the missing ones at run time.

vLLM lists what it serves at `GET /v1/models` (adapters carry a `parent`: their base model). The
registry asks every server LiteLLM sends a declared adapter to, at start-up and every
`adapter_refresh_seconds`, off the request path. A decision for an adapter that a reachable server
lacks is either served after `POST /v1/load_lora_adapter` (the adapter has a `path`, and
`load_missing_adapters` is on; one load per server and adapter however many requests wait, each
request waiting at most `adapter_load_timeout_seconds`), or sent to the adapter's base model
(`adapter_not_loaded`). vLLM never gets to answer 404 for an adapter the router chose.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx

from .config import RouterConfig
from .telemetry import NullTelemetry, Telemetry

__all__ = ["AdapterRegistry", "ServerSource", "ServerState", "VllmServer", "servers_from_deployments",
           "servers_from_endpoints"]

logger = logging.getLogger("litellm_lora_router")

#: How long one load call may take on the server; requests stop waiting after their own budget.
LOAD_HTTP_TIMEOUT_S = 120.0
#: A request for an adapter on servers never probed yet (just after start-up) probes them first,
#: at most this often.
PROBE_ON_DEMAND_EVERY_S = 1.0
#: The most of a `/v1/models` answer read (a card is about 200 bytes): a server that sends more is
#: not answering the question, and the answer is not kept in memory.
MAX_MODELS_ANSWER_BYTES = 4 * 1024 * 1024
#: The most of a `/v1/load_lora_adapter` answer read (a status line or a short error).
MAX_LOAD_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class VllmServer:
    """One OpenAI-compatible vLLM base URL, as in a LiteLLM deployment (`http://host:8000/v1`)."""

    api_base: str
    api_key: str | None = field(default=None, repr=False, compare=False)

    @property
    def label(self) -> str:
        """`host:port`: no credentials, no path; safe for logs and metric labels."""
        parts = urlsplit(self.api_base)
        return f"{parts.hostname or '?'}:{parts.port or (443 if parts.scheme == 'https' else 80)}"

    @property
    def display(self) -> str:
        """The URL without any credentials it may carry."""
        parts = urlsplit(self.api_base)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return parts._replace(netloc=netloc).geturl().rstrip("/")

    def url(self, path: str) -> str:
        return self.api_base.rstrip("/") + path

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}


#: Adapter name -> the servers LiteLLM may send it to (read again at every refresh).
ServerSource = Callable[[], Mapping[str, Sequence[VllmServer]]]


@dataclass(frozen=True, slots=True)
class ServerState:
    """What one probe of a server found. Only a refused connection says a server is down
    (`conclusive`); a slow or failing answer says nothing about what it serves, and neither does a
    connect that timed out: the timer also runs out when the proxy's own event loop is busy (a
    worker starting up, or under load) while the server accepted at once."""

    reachable: bool
    models: frozenset[str] = frozenset()  # every id it serves, base models and adapters
    adapters: frozenset[str] = frozenset()  # the ids with a `parent`
    error: str | None = None
    conclusive: bool = True


def _env_value(value: object) -> str | None:
    """LiteLLM's `os.environ/NAME` indirection, resolved as the proxy resolves it."""
    if isinstance(value, str) and value.startswith("os.environ/"):
        return os.environ.get(value.removeprefix("os.environ/"))
    return value if isinstance(value, str) else None


def servers_from_deployments(deployments: Iterable[object]) -> dict[str, list[VllmServer]]:
    """Model name -> the servers of LiteLLM deployments (`model_list` entries): their `api_base`,
    or for a `hosted_vllm/` model without one, LiteLLM's default `$HOSTED_VLLM_API_BASE` (and
    `$HOSTED_VLLM_API_KEY`). One reading for the running proxy and for `lora-router check`."""
    servers: dict[str, list[VllmServer]] = {}
    for deployment in deployments:
        if not isinstance(deployment, Mapping):
            continue
        params = deployment.get("litellm_params")
        params = params if isinstance(params, Mapping) else {}
        name = deployment.get("model_name")
        api_base, api_key = _env_value(params.get("api_base")), _env_value(params.get("api_key"))
        if api_base is None and str(params.get("model", "")).startswith("hosted_vllm/"):
            api_base, api_key = os.environ.get("HOSTED_VLLM_API_BASE"), api_key or os.environ.get("HOSTED_VLLM_API_KEY")
        if isinstance(name, str) and api_base:
            server = VllmServer(api_base, api_key)
            if server not in servers.setdefault(name, []):
                servers[name].append(server)
    return servers


async def _capped_body(response: httpx.Response, limit: int) -> bytes | None:
    """A streamed answer's body, or None past `limit` bytes (the rest is not read)."""
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def servers_from_endpoints(config: RouterConfig) -> dict[str, list[VllmServer]]:
    """vLLM Semantic Router's `vllm_endpoints`: a base model's adapters are on its
    `preferred_endpoints`, else on every endpoint."""
    urls = {e.name: VllmServer(f"http://{e.address}:{e.port}/v1") for e in config.vllm_endpoints}
    mapping: dict[str, list[VllmServer]] = {}
    for model in config.models.values():
        endpoints = [urls[name] for name in model.preferred_endpoints if name in urls] or list(urls.values())
        for lora in model.loras:
            mapping[lora.name] = endpoints
    return mapping


def _read_models(body: bytes) -> tuple[frozenset[str], frozenset[str]]:
    """(model ids, adapter ids: those with a `parent`) of a `GET /v1/models` answer."""
    data = json.loads(body)["data"]
    if not isinstance(data, list):  # an answer we cannot read says nothing about the adapters
        raise TypeError("GET /v1/models: `data` is not a list")
    cards = [c for c in data if isinstance(c, dict) and isinstance(c.get("id"), str)]
    return frozenset(c["id"] for c in cards), frozenset(c["id"] for c in cards if c.get("parent"))


class AdapterRegistry:
    """Knows which declared adapters each server has loaded; makes sure a chosen one is."""

    def __init__(self, config: RouterConfig, servers: ServerSource, telemetry: Telemetry | None = None,
                 client: httpx.AsyncClient | None = None) -> None:
        self._config = config
        self._options = config.lora_router
        self._source = servers
        self._telemetry = telemetry or NullTelemetry()
        self._client = client
        self._servers: dict[str, tuple[VllmServer, ...]] = {}
        self.states: dict[str, ServerState] = {}  # api_base -> last probe
        self._loads: dict[tuple[str, str], asyncio.Task[bool]] = {}
        self._failed_at: dict[tuple[str, str], float] = {}
        self._refresher: asyncio.Task[None] | None = None
        self._refreshing: asyncio.Task[None] | None = None
        self._refreshed_at = float("-inf")

    @property
    def servers(self) -> Mapping[str, Sequence[VllmServer]]:
        return self._servers

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            self._client = httpx.AsyncClient()
        return self._client

    async def start(self) -> None:
        """Probe once now (bounded by the probe timeout), then keep refreshing in the background."""
        await self.refresh()
        if self._refresher is None:
            self._refresher = asyncio.create_task(self._refresh_forever(), name="lora-router-adapters")

    async def _refresh_forever(self) -> None:
        while True:
            # until the source names any server (LiteLLM builds its model list after the plugin
            # starts), ask it again every second: that costs no network call
            every = self._options.adapter_refresh_seconds
            await asyncio.sleep(every if self._servers else min(1.0, every))
            await self.refresh()

    async def refresh(self) -> None:
        """Read the servers each declared adapter goes to, then ask each server what it serves.
        Concurrent callers share one refresh."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._refresh(), name="lora-router-probe")
        await asyncio.shield(self._refreshing)

    async def _refresh(self) -> None:
        self._refreshed_at = time.monotonic()
        declared = self._config.adapter_names
        self._servers = {name: tuple(found) for name, found in self._source().items() if name in declared and found}
        distinct = {server.api_base: server for found in self._servers.values() for server in found}
        states = await asyncio.gather(*(self._probe(server) for server in distinct.values()))
        for server, state in zip(distinct.values(), states, strict=True):
            previous = self.states.get(server.api_base)
            if not state.conclusive:
                logger.info("vLLM server %s: no usable GET /v1/models answer (%s)", server.display, state.error)
                if previous is not None and previous.conclusive:
                    continue  # an overloaded server is not a down one: keep what it last said
            elif previous is None or not previous.conclusive:
                if not state.reachable:  # the first conclusive answer: a down server is news
                    logger.warning("vLLM server %s is down (%s)", server.display, state.error)
            elif previous.reachable != state.reachable:
                now = "back" if state.reachable else f"down ({state.error})"
                logger.warning("vLLM server %s is %s", server.display, now)
            self.states[server.api_base] = state
            if state.conclusive:
                self._telemetry.vllm_server(server.label, state.reachable)

    async def _models_answer(self, server: VllmServer) -> bytes:
        """The body of `GET /v1/models`, at most MAX_MODELS_ANSWER_BYTES of it."""
        async with self._http().stream("GET", server.url("/models"), headers=server.headers(),
                                       timeout=self._options.adapter_probe_timeout_seconds) as response:
            response.raise_for_status()
            body = await _capped_body(response, MAX_MODELS_ANSWER_BYTES)
            if body is None:
                raise ValueError(f"GET /v1/models: answer over {MAX_MODELS_ANSWER_BYTES} bytes")
            return body

    async def _probe(self, server: VllmServer) -> ServerState:
        timeout = self._options.adapter_probe_timeout_seconds
        try:  # httpx's timeout bounds each read; this bounds a server that trickles its answer
            body = await asyncio.wait_for(self._models_answer(server), timeout + 1.0)
            # up to 4 MiB of JSON takes tens of milliseconds to parse: not on the event loop
            models, adapters = await asyncio.to_thread(_read_models, body)
        except httpx.ConnectError as exc:  # refused (or no route): down
            return ServerState(reachable=False, error=type(exc).__name__)
        except (httpx.HTTPError, ValueError, KeyError, TypeError, TimeoutError, RecursionError) as exc:
            return ServerState(reachable=False, error=type(exc).__name__, conclusive=False)
        return ServerState(reachable=True, models=models, adapters=adapters)

    def missing(self) -> dict[str, list[VllmServer]]:
        """Declared adapters absent from reachable servers that LiteLLM sends them to."""
        found: dict[str, list[VllmServer]] = {}
        for name, servers in self._servers.items():
            for server in servers:
                state = self.states.get(server.api_base)
                if state is not None and state.reachable and name not in state.models:
                    found.setdefault(name, []).append(server)
        return found

    async def ensure(self, adapter: str) -> str | None:
        """None when the adapter can be served (or nothing is known against it); else the reason
        the request goes to the base model instead."""
        servers = self._servers.get(adapter, ())
        # no server known yet at all (LiteLLM builds its model list after the plugin starts), or one
        # of this adapter's never probed; an adapter no deployment serves probes nothing
        unprobed = not self._servers or any(s.api_base not in self.states for s in servers)
        due = time.monotonic() - self._refreshed_at > PROBE_ON_DEMAND_EVERY_S  # reads LiteLLM's list too: not per request
        if unprobed and due:
            with contextlib.suppress(TimeoutError):  # each probe has its own timeout; this bounds the rest
                await asyncio.wait_for(self.refresh(), self._options.adapter_probe_timeout_seconds + 1.0)
        states = [(s, self.states.get(s.api_base)) for s in self._servers.get(adapter, ())]
        known = [(s, state) for s, state in states if state is not None and state.conclusive]
        if not known:
            return None
        up = [(s, state) for s, state in known if state.reachable]
        if not up:
            return "adapter_server_down"
        lacking = [s for s, state in up if adapter not in state.models]
        if not lacking:
            return None
        declared = self._config.adapter(adapter)
        if not self._options.load_missing_adapters or declared is None or declared.path is None:
            return "adapter_not_loaded"
        loads = [self._load_once(server, adapter, declared.path) for server in lacking]
        running = [load for load in loads if load is not None]
        if len(running) < len(loads):
            return "adapter_not_loaded"  # a recent load failed: do not hammer the server
        try:
            results = await asyncio.wait_for(asyncio.shield(asyncio.gather(*running)),
                                             self._options.adapter_load_timeout_seconds)
        except TimeoutError:
            return "adapter_not_loaded"  # the load goes on; later requests will find the adapter
        return None if all(results) else "adapter_not_loaded"

    def _load_once(self, server: VllmServer, adapter: str, path: str) -> asyncio.Task[bool] | None:
        """The load in progress for this server and adapter, or a new one; None while a failed
        load is recent (retried after `adapter_refresh_seconds`)."""
        key = (server.api_base, adapter)
        running = self._loads.get(key)
        if running is not None:
            return running
        failed_at = self._failed_at.get(key)
        if failed_at is not None and time.monotonic() - failed_at < self._options.adapter_refresh_seconds:
            return None
        task = asyncio.create_task(self._load(server, adapter, path), name=f"lora-router-load-{adapter}")
        self._loads[key] = task
        task.add_done_callback(lambda _: self._loads.pop(key, None))
        return task

    async def _load(self, server: VllmServer, adapter: str, path: str) -> bool:
        key = (server.api_base, adapter)
        try:
            async with self._http().stream("POST", server.url("/load_lora_adapter"), headers=server.headers(),
                                           json={"lora_name": adapter, "lora_path": path},
                                           timeout=LOAD_HTTP_TIMEOUT_S) as response:
                status, body = response.status_code, await _capped_body(response, MAX_LOAD_ANSWER_BYTES) or b""
        except httpx.HTTPError as exc:
            return self._load_failed(server, adapter, type(exc).__name__)
        if status == 200 or (status == 400 and b"already been loaded" in body):
            state = self.states.get(server.api_base, ServerState(reachable=True))
            self.states[server.api_base] = ServerState(True, state.models | {adapter}, state.adapters | {adapter})
            self._failed_at.pop(key, None)
            self._telemetry.adapter_load(adapter, "ok")
            logger.info("loaded adapter %s on %s", adapter, server.display)
            return True
        refused = status in (404, 405)
        hint = " (is vLLM started with VLLM_ALLOW_RUNTIME_LORA_UPDATING=True?)" if refused else ""
        return self._load_failed(server, adapter, f"HTTP {status}{hint}")

    def _load_failed(self, server: VllmServer, adapter: str, why: str) -> bool:
        self._failed_at[(server.api_base, adapter)] = time.monotonic()
        self._telemetry.adapter_load(adapter, "failed")
        logger.warning("could not load adapter %s on %s: %s", adapter, server.display, why)
        return False

    async def aclose(self) -> None:
        tasks = [t for t in (self._refresher, self._refreshing, *self._loads.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._refresher = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None
