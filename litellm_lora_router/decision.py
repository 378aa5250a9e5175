"""From a classification to the model vLLM should serve: one small record, one pure function."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .classifiers.base import Classification
from .config import CategoryConfig, ModelScore, ReasoningFamily, RouterConfig

__all__ = ["Decision", "TenantPolicy", "choose_weighted", "fallback_decision", "select_adapter", "split_point",
           "without_adapter"]

#: Key/team metadata key that admins edit in the LiteLLM UI.
METADATA_KEY = "lora_router"


POLICY_KEYS = frozenset({"enabled", "allowed_adapters"})


@dataclass(frozen=True, slots=True)
class TenantPolicy:
    """Per key/team routing controls from LiteLLM metadata: `{"lora_router": {...}}`.

    `problems` lists what was malformed, each naming the key or team (for a warning); a malformed
    value fails closed, never open.
    """

    enabled: bool = True
    allowed_adapters: frozenset[str] | None = None
    problems: tuple[str, ...] = field(default=(), compare=False)

    @classmethod
    def from_metadata(
        cls,
        key_metadata: Mapping[str, Any] | None,
        team_metadata: Mapping[str, Any] | None,
        known_adapters: frozenset[str] | None = None,
        key_name: str = "key",
        team_name: str = "team",
    ) -> TenantPolicy:
        """A key may only narrow its team: routing is on only when neither says off, and the
        allowed adapters are the intersection of both lists."""
        enabled = True
        allowed: frozenset[str] | None = None
        problems: list[str] = []
        for who, metadata in ((team_name, team_metadata), (key_name, key_metadata)):
            section = metadata.get(METADATA_KEY) if isinstance(metadata, Mapping) else None
            if section is None:
                continue
            section_enabled, section_allowed, issues = _read_section(section, known_adapters)
            problems += [f"{who}: {METADATA_KEY}{issue}" for issue in issues]
            enabled = enabled and section_enabled
            if section_allowed is not None:
                allowed = section_allowed if allowed is None else allowed & section_allowed
        return cls(enabled=enabled, allowed_adapters=allowed, problems=tuple(problems))

    def allows(self, entry: ModelScore) -> bool:
        """Entries without an adapter (the base model) are always allowed."""
        return entry.lora_name is None or self.allows_adapter(entry.lora_name)

    def allows_adapter(self, adapter: str) -> bool:
        return self.allowed_adapters is None or adapter in self.allowed_adapters


def _read_section(section: Any, known_adapters: frozenset[str] | None) -> tuple[bool, frozenset[str] | None, list[str]]:
    """(enabled, allowed adapters or None, problems) of one `lora_router` metadata object.

    Anything malformed fails closed: routing off for a bad object, a bad `enabled` or an unknown key
    (a misspelt `allowed_adapter` must not leave the tenant unrestricted); no adapter for a bad
    list; unknown adapter names are dropped.
    """
    if not isinstance(section, Mapping):
        return False, frozenset(), [": expected an object {enabled, allowed_adapters}, routing off"]
    problems: list[str] = []
    enabled = True
    allowed: frozenset[str] | None = None
    unknown_keys = sorted(str(k) for k in section if k not in POLICY_KEYS)
    if unknown_keys:
        problems += [f": unknown key {k!r}, routing off" for k in unknown_keys]
        enabled, allowed = False, frozenset()
    value = section.get("enabled")
    if value is not None and not isinstance(value, bool):
        problems.append(".enabled: expected true or false, routing off")
        enabled = False
    elif value is False:
        enabled = False
    names = section.get("allowed_adapters")
    if names is not None:
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            problems.append(".allowed_adapters: expected a list of adapter names, no adapter allowed")
            listed: frozenset[str] = frozenset()
        else:
            listed = frozenset(names)
            for name in sorted(listed - known_adapters if known_adapters is not None else ()):
                problems.append(f".allowed_adapters: unknown adapter {name!r}, ignored")
            listed = listed & known_adapters if known_adapters is not None else listed
        allowed = listed if allowed is None else allowed & listed
    return enabled, allowed, problems


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
    variant: str | None = None  # the entry a weighted traffic split chose (its adapter or model)

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


def without_adapter(decision: Decision, reason: str) -> Decision:
    """The same decision served by the adapter's base model, because the adapter cannot be."""
    return dataclasses.replace(decision, model=decision.base_model, lora_name=None, reason=reason)


def split_point(category: str, sticky_key: str | None) -> float:
    """A caller's stable position in [0, 1) for one category's split: the same caller always lands
    on the same point, and the category salts it so that one caller's canaries are independent."""
    digest = hashlib.sha256(f"{category}\0{sticky_key or ''}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def choose_weighted(entries: Sequence[ModelScore], point: float) -> ModelScore:
    """The entry whose share of [0, 1) holds `point`, shares in proportion to the weights.

    Shares are laid out in config order, so raising a canary's weight only moves callers from the
    other entries onto it: nobody already on the canary is moved back.
    """
    total = sum(entry.weight or 0.0 for entry in entries)
    edge = point * total
    reached = 0.0
    for entry in entries:
        reached += entry.weight or 0.0
        if edge < reached:
            return entry
    return next(entry for entry in reversed(entries) if entry.weight)


def select_adapter(config: RouterConfig, classification: Classification | None, policy: TenantPolicy = TenantPolicy(),
                   sticky_key: str | None = None) -> Decision:
    """Category -> its best allowed `model_scores` entry -> adapter (or base model).

    A classifier that names the adapter or model itself (an MCP server) offers a single entry,
    which must be declared in `model_config`. Either way the tenant's allow-list filters entries
    before scoring, so a tenant can never reach an adapter outside its list; when nothing is left
    the request falls back. Entries with a `weight` split the category's traffic among themselves,
    by the caller's `sticky_key` (a hash of its key or user id); entries without one are used only
    when no weighted entry is allowed.
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
    weighted = [entry for entry in allowed if entry.weight]
    unweighted = [entry for entry in allowed if entry.weight is None]
    if weighted:
        entry = choose_weighted(weighted, split_point(classification.category, sticky_key))
    elif unweighted:
        entry = max(unweighted, key=lambda e: e.score)
    else:
        return fallback_decision(config, "adapter_not_allowed", classification)
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
        variant=entry.target if weighted else None,
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
