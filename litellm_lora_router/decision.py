"""From a classification to the model vLLM should serve: one small record, one pure function."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .classifiers.base import Classification
from .config import CategoryConfig, ModelScore, ReasoningFamily, RouterConfig

__all__ = ["Decision", "TenantPolicy", "fallback_decision", "select_adapter"]

#: Key/team metadata key that admins edit in the LiteLLM UI.
METADATA_KEY = "lora_router"


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """Per key/team routing controls from LiteLLM metadata: `{"lora_router": {...}}`."""

    enabled: bool = True
    allowed_adapters: frozenset[str] | None = None

    @classmethod
    def from_metadata(cls, key_metadata: Mapping[str, Any] | None, team_metadata: Mapping[str, Any] | None) -> TenantPolicy:
        """A key's setting overrides its team's, field by field."""
        merged: dict[str, Any] = {}
        for metadata in (team_metadata, key_metadata):
            section = (metadata or {}).get(METADATA_KEY)
            if isinstance(section, Mapping):
                merged.update({k: v for k, v in section.items() if v is not None})
        allowed = merged.get("allowed_adapters")
        return cls(
            enabled=merged.get("enabled", True) is not False,
            allowed_adapters=frozenset(str(a) for a in allowed) if isinstance(allowed, list) else None,
        )

    def allows(self, entry: ModelScore) -> bool:
        """Entries without an adapter (the base model) are always allowed."""
        return entry.lora_name is None or self.allowed_adapters is None or entry.lora_name in self.allowed_adapters


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one request goes and why. `model` is exactly the id vLLM serves (no prefix)."""

    model: str
    method: str
    base_model: str
    category: str | None = None
    confidence: float = 0.0
    reason: str | None = None
    lora_name: str | None = None
    use_reasoning: bool = False
    reasoning_effort: str | None = None
    reasoning: ReasoningFamily | None = None
    system_prompt: str | None = None
    system_prompt_mode: str = "replace"
    matched_keywords: tuple[str, ...] = field(default=())
    truncated: bool = False

    @property
    def is_fallback(self) -> bool:
        return self.reason is not None


def fallback_decision(config: RouterConfig, reason: str, classification: Classification | None = None) -> Decision:
    """The default model, unchanged otherwise, with the reason recorded."""
    return Decision(
        model=config.default_model,
        method="fallback",
        base_model=config.default_model,
        category=None,
        confidence=classification.confidence if classification else 0.0,
        reason=reason,
        matched_keywords=classification.matched_keywords if classification else (),
        truncated=classification.truncated if classification else False,
    )


def select_adapter(config: RouterConfig, classification: Classification | None, policy: TenantPolicy = TenantPolicy()) -> Decision:
    """Category -> its best allowed `model_scores` entry -> adapter (or base model).

    A classifier that names the adapter or model itself (an MCP server) offers a single entry,
    which must be declared in `model_config`. Either way the tenant's allow-list filters entries
    before scoring, so a tenant can never reach an adapter outside its list; when nothing is left
    the request falls back.
    """
    if classification is None or classification.category is None:
        reason = classification.reason if classification and classification.reason else "no_match"
        return fallback_decision(config, reason, classification)
    category = config.category(classification.category)
    if classification.lora_name or classification.model:
        named = _named_entry(config, classification, category)
        if isinstance(named, str):
            return fallback_decision(config, named, classification)
        candidates = [named]
    elif category is None:
        return fallback_decision(config, "unknown_category", classification)
    else:
        candidates = category.model_scores
    allowed = [entry for entry in candidates if policy.allows(entry)]
    if not allowed:
        return fallback_decision(config, "adapter_not_allowed", classification)
    entry = max(allowed, key=lambda e: e.score)
    use_reasoning = entry.use_reasoning if classification.use_reasoning is None else classification.use_reasoning
    prompt_enabled = category.system_prompt_enabled if category else True
    return Decision(
        model=entry.target,
        method=classification.method,
        base_model=entry.model,
        category=classification.category,
        confidence=classification.confidence,
        lora_name=entry.lora_name,
        use_reasoning=use_reasoning,
        reasoning_effort=(entry.reasoning_effort or config.default_reasoning_effort) if use_reasoning else None,
        reasoning=config.reasoning_family_of(entry.model),
        # a prompt the classifier supplies (an MCP result, or list_categories where the config has
        # none) comes first; otherwise the category's own
        system_prompt=(classification.system_prompt or (category.system_prompt if category else None)) if prompt_enabled else None,
        system_prompt_mode=category.system_prompt_mode if category else "replace",
        matched_keywords=classification.matched_keywords,
        truncated=classification.truncated,
    )


def _named_entry(config: RouterConfig, classification: Classification, category: CategoryConfig | None) -> ModelScore | str:
    """The entry for an adapter or model a classifier named, or the fallback reason when it is
    not declared in `model_config`. Reasoning defaults come from the category's best entry."""
    if classification.lora_name:
        base = config.base_model_of(classification.lora_name)
        if base is None:
            return "undeclared_adapter"
    elif classification.model in config.models:
        base = classification.model
    else:
        return "undeclared_model"
    template = category.best_score if category else None
    return ModelScore(
        model=base,
        lora_name=classification.lora_name,
        score=1.0,
        use_reasoning=template.use_reasoning if template else False,
        reasoning_effort=template.reasoning_effort if template else None,
    )
