"""`LoraRouter`: text -> classifiers in order, within a time budget -> `Decision`.

Knows nothing of LiteLLM. Routing never raises: breakage, timeouts and low confidence all
become a fallback `Decision` whose `reason` says what happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .adapters import AdapterRegistry, ServerSource
from .cache import ClassificationCache, ClassificationCodec
from .classifiers import build_classifier
from .classifiers.base import Caller, Classification, Classifier
from .config import RouterConfig, load_config
from .decision import Decision, TenantPolicy, fallback_decision, select_adapter, without_adapter
from .errors import ConfigError, ConfigIssue
from .extras import require_extras
from .formats import ApiFormat, person_turns
from .messages import ClassifiedText, request_texts, turns_read
from .telemetry import NullTelemetry, Telemetry

__all__ = ["LoraRouter", "Routed"]

logger = logging.getLogger("litellm_lora_router")


@dataclass(frozen=True, slots=True)
class Routed:
    """A decision plus what it cost; `error` names the exception class when a method broke."""

    decision: Decision
    elapsed_ms: float
    error: str | None = None
    cache: str | None = None  # "hit" | "miss"; None without a cache


class LoraRouter:
    """Holds the config and the classifiers built from it; one instance per proxy process."""

    def __init__(self, config: RouterConfig, classifiers: Sequence[Classifier],
                 cache: ClassificationCache | None = None, model_files: Sequence[Path] = (),
                 telemetry: Telemetry | None = None, adapters: AdapterRegistry | None = None) -> None:
        self.config = config
        self.classifiers = tuple(classifiers)
        self.cache = cache
        self.telemetry = telemetry or NullTelemetry()
        self.adapters = adapters
        self._in_flight = 0
        self._idle: asyncio.Event | None = None
        self._unconnected: list[str] | None = None  # what the last start() could not connect; None: not started
        self._closed = False
        # fixed by the classifiers: whether any reads a conversation, whether any sees the caller
        self._reads_context = any(c.reads_context for c in self.classifiers)
        self._caller_scoped = any(c.caller_dependent for c in self.classifiers)
        # cache keys change with the config and with the content of the model files it uses, so
        # retraining (same paths, new weights) never serves a decision of the old model
        self.fingerprint = hashlib.sha256(f"{config.fingerprint()}:{files_digest(model_files)}".encode()).hexdigest()

    @classmethod
    def from_config(cls, config: RouterConfig | str | Path, telemetry: Telemetry | None = None,
                    servers: ServerSource | None = None) -> LoraRouter:
        """Build the classifiers `lora_router.classification_order` names, in that order (methods
        left out of it are not loaded; each module is imported by the registry in
        `classifiers/__init__.py` only when built). A config that needs a missing extra fails
        here, naming it.

        `servers` tells where LiteLLM sends each adapter; with it (and `adapter_discovery` on) the
        router checks that a chosen adapter is loaded there.
        """
        if not isinstance(config, RouterConfig):
            config = load_config(config)
        require_extras(config)
        telemetry = telemetry or NullTelemetry()
        encoding = _SharedEncoding(config, telemetry)
        built = (build_classifier(method, config, encoding) for method in config.lora_router.classification_order)
        ordered = [classifier for classifier in built if classifier is not None]
        model_files = [*_domain_files(config), *encoding.files()]
        cache = (ClassificationCache.from_config(config.classification_cache, ClassificationCodec.for_config(config),
                                                 telemetry)
                 if config.classification_cache.enabled else None)
        adapters = None
        if servers is not None and config.lora_router.adapter_discovery:
            adapters = AdapterRegistry(config, servers, telemetry)
        return cls(config, ordered, cache, model_files, telemetry, adapters)

    def caller(self, team_id: str | None, key_alias: str | None, user: str | None, key_metadata: Any) -> Caller:
        """Who is asking, with only the key metadata the config lets classifiers see."""
        mcp = self.config.classifier.mcp_category_model
        keys = mcp.context_metadata_keys if mcp is not None else ()
        return Caller.of(team_id, key_alias, user, key_metadata, keys)

    def is_auto_model(self, model: Any) -> bool:
        return isinstance(model, str) and model in self.config.auto_model_names

    async def start(self, methods: Sequence[str] | None = None) -> list[str]:
        """Connect classifiers that talk to servers (MCP, remote models), so the first request does
        not wait for it; returns the methods that could not connect. `methods`: retry only these."""
        failed = []
        for classifier in self.classifiers:
            if methods is not None and classifier.method not in methods:
                continue
            try:
                await classifier.connect()
            except Exception as exc:  # routing falls back until the server answers
                logger.warning("%s classifier could not connect at start-up: %s", classifier.method, exc)
                failed.append(classifier.method)
        if methods is None and self.adapters is not None:
            await self.adapters.start()
        self._unconnected = failed
        return failed

    @property
    def unconnected(self) -> list[str]:
        """The methods the last `start()` could not connect."""
        return list(self._unconnected or [])

    async def until_ready(self, retry_seconds: float = 2.0) -> bool:
        """Connect every classifier, retrying the ones a `start()` could not connect: what readiness
        waits for. Returns False, and stops retrying, once the router is closed (a reload replaced
        it): a retry must not reopen a closed router's sessions."""
        failed = await self.start() if self._unconnected is None else self._unconnected
        while failed and not self._closed:
            await asyncio.sleep(retry_seconds)
            if not self._closed:
                failed = await self.start(failed)
        return not self._closed

    async def aclose(self) -> None:
        self._closed = True
        for resource in (*self.classifiers, self.cache, self.adapters):
            if resource is not None:
                await resource.aclose()

    async def aclose_when_idle(self, timeout_s: float) -> None:
        """Close once the requests being routed have finished (at most `timeout_s` from now): a
        router swapped out by a reload lets its requests in flight finish on it."""
        if self._in_flight:
            self._idle = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout_s)
        await self.aclose()

    def dependency_states(self) -> dict[str, str]:
        """Circuit-breaker state per dependency (`redis`, `mcp`): closed, half_open or open."""
        states: dict[str, str] = {}
        if self.cache is not None and self.cache.uses_redis:
            states["redis"] = self.cache.stats.breaker.state
        for classifier in self.classifiers:
            if classifier.breaker is not None:
                states[classifier.method] = classifier.breaker.state
        return states

    async def classify(self, text: str, caller: Caller | None = None,
                       context: str | None = None) -> tuple[Classification | None, str | None]:
        """The first confident result in method order, or (last no-match, error class name).
        `context` (the conversation's user turns) goes to classifiers that read it (`reads_context`)."""
        budget = self.config.lora_router.classification_timeout_seconds
        deadline = time.monotonic() + budget
        last: Classification | None = None
        error: str | None = None
        for classifier in self.classifiers:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                error = error or "ClassifierTimeout"
                break
            started = time.perf_counter()
            try:
                contexts = [context] if context is not None and classifier.reads_context else None
                [result] = await asyncio.wait_for(classifier.classify([text], caller, contexts), remaining)
            except TimeoutError:
                logger.warning("%s classifier ran past its %.3fs budget", classifier.method, budget)
                classifier.record_timeout()
                error = error or "ClassifierTimeout"
                continue
            except Exception as exc:  # a broken classifier must not break the request
                logger.warning("%s classifier failed: %s", classifier.method, type(exc).__name__)
                error = error or type(exc).__name__
                continue
            finally:
                self.telemetry.classifier_latency(classifier.method, time.perf_counter() - started)
            if result.category is not None:
                return result, None
            last = result
        return last, error

    async def route(
        self,
        request: dict[str, Any],
        policy: TenantPolicy | None = None,
        caller: Caller | None = None,
        api_format: ApiFormat = "chat",
    ) -> Routed:
        """Decide where an auto-model request of `api_format` goes. Never raises."""
        self._in_flight += 1
        try:
            return await self._decide(request, policy, caller, api_format)
        finally:
            self._in_flight -= 1
            if not self._in_flight and self._idle is not None:
                self._idle.set()

    async def _decide(self, request: dict[str, Any], policy: TenantPolicy | None, caller: Caller | None,
                      api_format: ApiFormat) -> Routed:
        started = time.perf_counter()
        policy = policy or TenantPolicy()
        if not policy.enabled:
            decision = Decision(model=self.config.auto_model_name, method="fallback",
                                base_model=self.config.auto_model_name, reason="routing_disabled")
            return Routed(decision, _ms_since(started))
        classified, context = self.texts_to_classify(request, api_format)
        if not classified.text:
            return Routed(fallback_decision(self.config, "no_text"), _ms_since(started))
        caller = caller or Caller()
        classification, error, cache_status = await self._classify_cached(classified.text, context, caller)
        if classification is not None and classification.category is not None:
            decision = select_adapter(self.config, classification, policy, caller.sticky_key)
        elif error == "ClassifierTimeout":
            decision = fallback_decision(self.config, "timeout", classification)
        elif error is not None:
            decision = fallback_decision(self.config, "classifier_error", classification)
        else:
            decision = select_adapter(self.config, classification, policy, caller.sticky_key)
        if classified.clipped and not decision.truncated:
            decision = dataclasses.replace(decision, truncated=True)
        return Routed(await self._servable(decision), _ms_since(started), error, cache_status)

    async def _servable(self, decision: Decision) -> Decision:
        """The decision, or its base model when the chosen adapter is not loaded and cannot be."""
        if self.adapters is None or decision.lora_name is None or decision.is_fallback:
            return decision
        reason = await self.adapters.ensure(decision.lora_name)
        return decision if reason is None else without_adapter(decision, reason)

    def texts_to_classify(self, request: dict[str, Any], api_format: ApiFormat = "chat") -> tuple[ClassifiedText, str | None]:
        """The last user turn (with `history_window` earlier ones), within the character budget; and,
        with `history_blend`, the newest user turns joined (at most `MAX_TURNS`), which a domain
        classifier also reads and averages with the last turn: a follow-up such as "and for kids?"
        only makes sense with them, while a topic switch in the last turn still wins; the turns
        before one that says it changes the subject ("unrelated, ...") are not read."""
        options = self.config.lora_router
        blend = options.history_blend and self._reads_context  # no classifier reads it: no context, no key part
        turns = person_turns(request, api_format, newest=turns_read(options.history_window, blend))
        return request_texts(turns, options.history_window, blend, options.max_text_chars)

    async def classify_request(self, request: dict[str, Any], api_format: ApiFormat = "chat",
                               caller: Caller | None = None) -> tuple[Classification | None, str | None]:
        """What `route` concludes for a request, without the cache (for `lora-router eval`)."""
        classified, context = self.texts_to_classify(request, api_format)
        return await self.classify(classified.text, caller, context)

    async def _classify_cached(self, text: str, context: str | None,
                               caller: Caller) -> tuple[Classification | None, str | None, str | None]:
        if self.cache is None:
            return (*await self.classify(text, caller, context), None)
        keyed = text if context is None else f"{context}\x00{text}"
        key = self.cache.key(self.fingerprint, keyed, self._cache_scope(caller))
        return await self.cache.get_or_classify(key, lambda: self.classify(text, caller, context))

    def _cache_scope(self, caller: Caller) -> str | None:
        """Classifications are made before the tenant's allow-list is applied, so they are shared
        across tenants, unless a classifier sees the caller (MCP): then they are scoped to it."""
        if self._caller_scoped:
            return caller.scope()
        return None


def files_digest(paths: Sequence[Path]) -> str:
    """sha256 over the relative names and contents of the files (directories walked, sorted)."""
    digest = hashlib.sha256()
    for root in sorted(set(paths)):
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for file in files:
            digest.update(f"{file.relative_to(root) if root.is_dir() else file.name}\0".encode())
            with file.open("rb") as handle:
                digest.update(hashlib.file_digest(handle, "sha256").digest())
    return digest.hexdigest()


def _domain_files(config: RouterConfig) -> list[Path]:
    model = config.classifier.category_model
    if model is None or "domain" not in config.lora_router.classification_order:
        return []
    files = [config.resolve_path(model.model_id)] if model.backend == "local" else []  # vllm: a served name
    if model.category_mapping_path:
        files.append(config.resolve_path(model.category_mapping_path))
    return files


class _SharedEncoding:
    """Builds each encoder a router needs once, on first need (torch/onnx load lazily): embedding
    rules and a domain head over the same encoder share one `EncodingService`, so one pass."""

    def __init__(self, config: RouterConfig, telemetry: Telemetry) -> None:
        self._config = config
        self._telemetry = telemetry
        self._services: dict[str, Any] = {}

    def __call__(self, encoder_id: str | None = None) -> Any:
        options = self._config.lora_router.encoder
        encoder_id = encoder_id or options.model
        if encoder_id not in self._services:
            from .classifiers.encoders import EncodingService, build_encoder, configured_file_key

            model = self._config.classifier.category_model
            try:
                encoder = build_encoder(options, self._config.resolve_path, model.use_cpu if model else True,
                                        encoder_id, self._config.lora_router.classification_timeout_seconds)
            except (OSError, ValueError) as exc:
                key = configured_file_key(options, encoder_id, exc)
                if key is None:  # a package's own file: not the config's to name
                    raise
                expected = ("a sentence-transformers model directory (with tokenizer.json)" if key == "model_path"
                            else "an ONNX file of all-MiniLM-L6-v2 that ONNX Runtime loads")
                raise ConfigError(str(self._config.source or "router config"), [ConfigIssue(
                    f"lora_router.encoder.{key}", expected, f"{type(exc).__name__}: {exc}")]) from exc
            self._services[encoder_id] = EncodingService(encoder, options, self._telemetry)
        return self._services[encoder_id]

    def files(self) -> list[Path]:
        """What the encoders built were built from; nothing when no classifier needed one."""
        from .classifiers.encoders import USE_ID, default_model_dir, encoder_files, tuned_minilm_file, use_onnx_path

        # a head's fine-tuned encoder runs here on any back-end; its file is part of the head's directory
        tuned = any(tuned_minilm_file(e) for e in self._services)
        files: list[Path] = [default_model_dir() / "tokenizer.json"] if tuned else []
        if self._config.lora_router.encoder.backend == "openai":
            return files  # the other encoders run on a server: their identity is the config's remote.model
        if USE_ID in self._services:
            files.append(use_onnx_path())
        if any(e != USE_ID and tuned_minilm_file(e) is None for e in self._services):
            model_dir, onnx_path = encoder_files(self._config.lora_router.encoder, self._config.resolve_path)
            files += [model_dir] if onnx_path is None else [model_dir / "tokenizer.json", onnx_path]
        return files


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000.0
