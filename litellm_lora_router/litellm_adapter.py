"""The LiteLLM proxy hooks: the only module that imports LiteLLM.

Use it either way in `litellm_config.yaml`:

    litellm_settings:
      callbacks: litellm_lora_router.proxy_handler_instance   # config from $LORA_ROUTER_CONFIG

    guardrails:                                               # admins can opt keys out in the UI
      - guardrail_name: lora-router
        litellm_params:
          guardrail: litellm_lora_router.litellm_adapter.LoraRouterHook
          mode: pre_call
          default_on: true
          router_config_path: router_config.yaml
"""

from __future__ import annotations

import asyncio
import atexit
import dataclasses
import functools
import hashlib
import logging
import os
from typing import Any

from cachetools import TTLCache
from litellm.integrations.custom_guardrail import CustomGuardrail
from litellm.proxy._types import ProxyErrorTypes, ProxyException, UserAPIKeyAuth
from litellm.types.guardrails import GuardrailEventHooks

from . import readiness
from .adapters import VllmServer, servers_from_deployments
from .classifiers.base import Caller
from .config import RouterConfig
from .decision import TenantPolicy, fallback_decision
from .errors import RequestShapeError
from .formats import ApiFormat, check_shape
from .metrics import RouterMetrics, process_metrics, serve_metrics
from .reload import ConfigReloader
from .report import audit_line, decision_headers, decision_tags, served_model_headers, spend_logs_metadata
from .rewrite import rewrite_request
from .router import LoraRouter, Routed
from .tracing import route_span

__all__ = ["DecisionHeaders", "LoraRouterHook", "proxy_handler_instance"]  # noqa: F822 (built lazily by __getattr__)

logger = logging.getLogger("litellm_lora_router")
audit_logger = logging.getLogger("litellm_lora_router.audit")

#: Where the decision's headers wait, inside the request's metadata, for the response hook.
HEADERS_KEY = "lora_router_headers"
#: Spend-log fields and (with `decision_tags`) tags the plugin writes; a client's own are dropped.
SPEND_FIELD_PREFIX = "lora_router_"
TAG_PREFIXES = ("lora:", "lora-method:", "lora-category:", "lora-fallback:", "lora-variant:")
CONFIG_ENV = "LORA_ROUTER_CONFIG"
METRICS_PORT_ENV = "LORA_ROUTER_METRICS_PORT"
#: LiteLLM call types (1.108.7 `CallTypes`) that carry a prompt for a chat model, and their request
#: format. The proxy passes `acompletion` (/v1/chat/completions), `atext_completion`
#: (/v1/completions), `aresponses` (/v1/responses) and `anthropic_messages` (/v1/messages); the
#: other names are the same APIs called through the SDK. Every other call type (embeddings, images,
#: audio, rerank, batches, files, the Responses WebSocket...) leaves the auto model untouched.
CALL_TYPE_FORMATS: dict[str, ApiFormat] = {
    "completion": "chat",
    "acompletion": "chat",
    "text_completion": "completion",
    "atext_completion": "completion",
    "responses": "responses",
    "aresponses": "responses",
    "anthropic_messages": "anthropic",
    "aanthropic_messages": "anthropic",
}


class DecisionHeaders(dict[str, str]):
    """The headers computed for one request. A client's JSON body can hold dicts but never an
    instance of this class, so the response hook sends only what the plugin computed."""


class LoraRouterHook(CustomGuardrail):
    """Routes `model: MoM` requests of every API that carries a prompt (chat, Responses, Anthropic
    Messages, text completions) to a LoRA adapter before LiteLLM picks a deployment."""

    def __init__(
        self,
        router_config_path: str | None = None,
        router: LoraRouter | None = None,
        guardrail_name: str = "lora-router",
        event_hook: Any = GuardrailEventHooks.pre_call,
        default_on: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(guardrail_name=guardrail_name, event_hook=event_hook, default_on=default_on, **kwargs)
        _ensure_audit_handler()
        self.metrics: RouterMetrics = process_metrics()
        path = router_config_path or os.environ.get(CONFIG_ENV, "router_config.yaml")
        self._swapped = asyncio.Event()
        self._router = router or self._build(path)
        # a router handed in (tests) is not reloaded; one built from a file follows that path (not
        # the file it resolves to: a ConfigMap update swaps the symlink in between)
        self.reloader = None if router is not None else ConfigReloader(
            path, self, self._build, self.metrics, self.router.config.lora_router.reload_debounce_seconds)
        self._metrics_server: Any = None
        self._warned: TTLCache[str, bool] = TTLCache(maxsize=1024, ttl=600)
        self._lifetime: asyncio.Task[None] | None = None
        self._ready_file = readiness.ready_file()
        if self._ready_file is not None:
            readiness.clear(self._ready_file)  # left by an earlier process: not ready until this one is
            atexit.register(readiness.clear, self._ready_file)
        try:
            self._lifetime = asyncio.get_running_loop().create_task(self._live(), name="lora-router-lifetime")
        except RuntimeError:  # no loop yet: classifiers connect on first use
            pass

    @property
    def router(self) -> LoraRouter:
        return self._router

    @router.setter
    def router(self, router: LoraRouter) -> None:
        """A reload swaps the router in: readiness follows the new one."""
        self._router = router
        self._swapped.set()

    def _build(self, config: RouterConfig | str) -> LoraRouter:
        return LoraRouter.from_config(config, telemetry=self.metrics, servers=_litellm_vllm_servers)

    async def _live(self) -> None:
        """Connect (classifiers, vLLM probes), serve metrics and follow the config file at
        start-up; close everything when the proxy's event loop shuts down, which cancels this task."""
        try:
            options = self.router.config.lora_router
            await self.router.start()
            self.metrics.config_loaded(self.router.fingerprint)
            metrics_port = metrics_port_from_env() or options.metrics_port
            if metrics_port is not None:
                self._metrics_server = serve_metrics(metrics_port, options.metrics_host)
            if self.reloader is not None:
                self.reloader.start(watch=options.watch_config)
            while True:
                await self._follow_readiness()
        finally:
            await self.aclose()

    async def _follow_readiness(self) -> None:
        """Retry what the serving router could not connect and mark the process ready once it has;
        return when a reload swaps a new router in (the old one's retries stop). The ready file is
        cleared while the serving router has something unconnected."""
        router = self.router
        self._swapped.clear()
        if self._ready_file is not None and router.unconnected:
            readiness.clear(self._ready_file)
        retrying = asyncio.ensure_future(router.until_ready())
        swapped = asyncio.ensure_future(self._swapped.wait())
        try:
            await asyncio.wait({retrying, swapped}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            retrying.cancel()
            swapped.cancel()
            await asyncio.gather(retrying, swapped, return_exceptions=True)
        if router is not self.router:
            return
        failure = None if retrying.cancelled() else retrying.exception()
        if failure is not None or retrying.cancelled() or not retrying.result():
            logger.error("lora-router: could not finish connecting (%s); not marked ready",
                         type(failure).__name__ if failure else "closed")
        elif self._ready_file is not None:
            readiness.mark_ready(self._ready_file, [c.method for c in router.classifiers])
        await self._swapped.wait()

    async def aclose(self) -> None:
        """Stop following the config, stop serving metrics, close the router in use."""
        if self._ready_file is not None:
            readiness.clear(self._ready_file)
        if self.reloader is not None:
            await self.reloader.aclose()
        if self._metrics_server is not None:
            await asyncio.to_thread(self._metrics_server.shutdown)
            self._metrics_server.server_close()
            self._metrics_server = None
        await self.router.aclose()

    async def async_pre_call_hook(
        self, user_api_key_dict: UserAPIKeyAuth, cache: Any, data: dict[str, Any], call_type: str
    ) -> dict[str, Any] | None:
        router = self.router  # a reload swaps self.router; this request stays on the one it began with
        options = router.config.lora_router
        key = metadata_key(data)
        if isinstance(data.get(key), dict):
            data[key] = _without_plugin_fields(data[key], options.decision_tags)
        model = data.get("model")
        api_format = CALL_TYPE_FORMATS.get(str(getattr(call_type, "value", call_type)))
        routed_request = api_format is not None and router.is_auto_model(model)
        if not routed_request:
            self._check_direct_call(router, user_api_key_dict, model)
            return None
        policy = self._policy(router, user_api_key_dict)
        assert api_format is not None
        try:
            check_shape(data, api_format)
        except RequestShapeError as exc:  # the caller's error: a 400 naming the field, before routing
            raise ProxyException(str(exc), "invalid_request_error", exc.param, 400) from exc
        try:
            with route_span(user_api_key_dict.parent_otel_span) as record_span:
                routed = await router.route(data, policy, _caller(router, user_api_key_dict), api_format)
                record_span(routed)
            rewritten = rewrite_request(data, routed.decision, api_format, options.reasoning_precedence)
        except Exception as exc:  # the one broad handler: routing never breaks a request
            logger.exception("lora-router failed; falling back (%s)", type(exc).__name__)
            routed = Routed(fallback_decision(router.config, "error"), 0.0, type(exc).__name__)
            rewritten = rewrite_request(data, routed.decision, api_format)
        rewritten[key] = _with_decision(data.get(key), routed, options.response_headers, options.decision_tags)
        self.metrics.observe_routed(routed, str(model), router.config)
        self.metrics.dependency_states(router.dependency_states())
        if options.audit_log:
            audit_logger.info(audit_line(routed))
        return rewritten

    async def async_post_call_response_headers_hook(
        self,
        data: dict[str, Any],
        user_api_key_dict: UserAPIKeyAuth,
        response: Any,
        request_headers: dict[str, str] | None = None,
    ) -> dict[str, str] | None:
        metadata = data.get(metadata_key(data))
        headers = metadata.get(HEADERS_KEY) if isinstance(metadata, dict) else None
        if not isinstance(headers, DecisionHeaders):  # only what this plugin computed, never the client's
            return None
        return {**headers, **served_model_headers(headers, _served_model_group(response))}

    def _check_direct_call(self, router: LoraRouter, auth: UserAPIKeyAuth, model: Any) -> None:
        """A request that names adapters itself is refused (403) when one is outside the key's or
        team's `allowed_adapters`; every name in a model list counts."""
        declared = router.config.adapter_names
        adapters = [name for name in _requested_models(model) if name in declared]
        if not adapters:
            return
        policy = self._policy(router, auth)
        refused = next((name for name in adapters if not policy.allows_adapter(name)), None)
        if refused is not None:
            raise ProxyException(
                message=f"This key may not call the adapter `{refused}` directly: it is outside the key's or "
                f"team's lora_router.allowed_adapters. Ask for `{router.config.auto_model_name}` instead.",
                type=ProxyErrorTypes.key_model_access_denied, param="model", code=403)

    def _policy(self, router: LoraRouter, auth: UserAPIKeyAuth) -> TenantPolicy:
        """The key's and team's policy; what is malformed is logged (once in a while), naming the
        key or team, never its metadata."""
        key_name = f"key {auth.key_alias!r}" if auth.key_alias else f"key with token hash {str(auth.token)[:12]}..."
        policy = TenantPolicy.from_metadata(auth.metadata, auth.team_metadata, router.config.adapter_names,
                                            key_name=key_name, team_name=f"team {auth.team_id!r}")
        for problem in policy.problems:
            if problem not in self._warned:
                self._warned[problem] = True
                logger.warning("lora-router: malformed metadata of %s", problem)
        return policy


def _caller(router: LoraRouter, auth: UserAPIKeyAuth) -> Caller:
    """The MCP classifier's `context`: the tenant is `team:<id>`, else `key:<alias>`. Traffic splits
    stick to the user id, else to the key (its hash, as LiteLLM stores it)."""
    caller = router.caller(team_id=auth.team_id, key_alias=auth.key_alias, user=auth.user_id,
                           key_metadata=auth.metadata)
    identity = f"user:{auth.user_id}" if auth.user_id else f"key:{auth.token or auth.api_key or ''}"
    return dataclasses.replace(caller, sticky_key=hashlib.sha256(identity.encode()).hexdigest())


def _litellm_vllm_servers() -> dict[str, list[VllmServer]]:
    """Model name -> the `api_base`s of LiteLLM's deployments for it (read from the proxy's
    router, the one place LiteLLM keeps its model list; empty before the proxy has one)."""
    from litellm.proxy import proxy_server

    llm_router = getattr(proxy_server, "llm_router", None)
    if llm_router is None:
        return {}
    try:
        deployments = list(llm_router.get_model_list() or [])
    except (AttributeError, TypeError, ValueError) as exc:  # a LiteLLM release that changed its router
        logger.warning("cannot read LiteLLM's deployments (%s); adapter checks are off", type(exc).__name__)
        return {}
    return servers_from_deployments(deployments)


def _requested_models(model: Any) -> list[str]:
    """The model names a request's `model` asks for, read the way LiteLLM's key checks and batch
    completions read it: a comma-separated string, or a list of such strings."""
    values = model if isinstance(model, (list, tuple, set)) else [model]
    return [name.strip() for value in values if isinstance(value, str) for name in value.split(",") if name.strip()]


def metadata_key(data: dict[str, Any]) -> str:
    """Where LiteLLM keeps its request metadata: `litellm_metadata` on the Responses and Anthropic
    endpoints (their `metadata` is the caller's, sent on to the model), `metadata` elsewhere."""
    return "litellm_metadata" if isinstance(data.get("litellm_metadata"), dict) else "metadata"


def _served_model_group(response: Any) -> str | None:
    """The model group that finally answered (another one after a LiteLLM fallback), as LiteLLM
    reports it in the response's `x-litellm-model-group`."""
    hidden = getattr(response, "_hidden_params", None)
    if hidden is None and isinstance(response, dict):  # Anthropic-format responses are dicts
        hidden = response.get("_hidden_params")
    extra = hidden.get("additional_headers") if isinstance(hidden, dict) else None
    group = extra.get("x-litellm-model-group") if isinstance(extra, dict) else None
    return group if isinstance(group, str) and group else None


def _without_plugin_fields(metadata: dict[str, Any], decision_tags: bool) -> dict[str, Any]:
    """Client-sent metadata minus anything under the plugin's own keys: the headers slot, the
    `lora_router_*` spend-log fields, and the `lora:*` tags when the plugin writes tags."""
    cleaned = {k: v for k, v in metadata.items() if k != HEADERS_KEY}
    spend = cleaned.get("spend_logs_metadata")
    if isinstance(spend, dict):
        cleaned["spend_logs_metadata"] = {k: v for k, v in spend.items() if not str(k).startswith(SPEND_FIELD_PREFIX)}
    tags = cleaned.get("tags")
    if decision_tags and isinstance(tags, list):
        cleaned["tags"] = [t for t in tags if not (isinstance(t, str) and t.startswith(TAG_PREFIXES))]
    return cleaned


def _with_decision(metadata: Any, routed: Routed, header_level: str, tags: bool) -> dict[str, Any]:
    """Request metadata plus the decision: spend-log fields (kept by LiteLLM's spend log, shown in
    the UI), tags when the operator opted in (they take part in LiteLLM's tag filtering), and the
    headers for the response hook."""
    merged = dict(metadata) if isinstance(metadata, dict) else {}
    spend = merged.get("spend_logs_metadata")
    merged["spend_logs_metadata"] = {**(spend if isinstance(spend, dict) else {}), **spend_logs_metadata(routed)}
    if tags:
        existing = merged.get("tags")
        merged["tags"] = [*(existing if isinstance(existing, list) else []), *decision_tags(routed)]
    merged[HEADERS_KEY] = DecisionHeaders(decision_headers(routed, header_level))
    return merged


def metrics_port_from_env() -> int | None:
    """`$LORA_ROUTER_METRICS_PORT`: the metrics port a deployment sets (a container's env), which
    wins over `lora_router.metrics_port`, so the mounted router config can stay the guide's file."""
    value = os.environ.get(METRICS_PORT_ENV, "").strip()
    if not value:
        return None
    if not value.isdigit() or not 0 < int(value) < 65536:
        logger.warning("%s=%r is not a port number; ignored", METRICS_PORT_ENV, value)
        return None
    return int(value)


def _ensure_audit_handler() -> None:
    """Audit lines go to stderr as JSON unless the operator configured a handler of their own."""
    if not audit_logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        audit_logger.addHandler(handler)
        audit_logger.setLevel(logging.INFO)
        audit_logger.propagate = False


@functools.cache
def _default_instance() -> LoraRouterHook:
    return LoraRouterHook()


def __getattr__(name: str) -> Any:
    """`proxy_handler_instance` is built on first access, so importing this module stays cheap."""
    if name == "proxy_handler_instance":
        return _default_instance()
    raise AttributeError(name)
