"""The one interface every classification method implements."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from ..errors import ClassifierError

__all__ = ["MAX_NAME_CHARS", "Caller", "Classification", "Classifier", "reply_name"]


@dataclass(frozen=True, slots=True)
class Caller:
    """Who is asking, for classifiers whose answer may depend on it (the MCP classifier)."""

    tenant: str | None = None
    user: str | None = None
    key_metadata: Mapping[str, Any] = field(default_factory=dict)
    # Stable and opaque (a hash of the user id, else of the key) for sticky traffic splits; never
    # sent to a classifier, never part of a cache key.
    sticky_key: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, team_id: str | None, key_alias: str | None, user: str | None, key_metadata: Any,
           context_keys: Sequence[str] = ()) -> Caller:
        """The tenant is namespaced (`team:<id>`, else `key:<alias>`), so a key alias can never pose
        as a team; of the key's metadata only `context_keys` are kept (it can hold credentials)."""
        tenant = f"team:{team_id}" if team_id else f"key:{key_alias}" if key_alias else None
        metadata = key_metadata if isinstance(key_metadata, Mapping) else {}
        return cls(tenant=tenant, user=user, key_metadata={k: metadata[k] for k in context_keys if k in metadata})

    def as_context(self) -> dict[str, Any]:
        return {"tenant": self.tenant, "user": self.user, "key_metadata": dict(self.key_metadata)}

    def scope(self) -> str:
        """A stable identity for cache keys of caller-dependent classifications."""
        return json.dumps(self.as_context(), sort_keys=True, default=str)


@dataclass(frozen=True, slots=True)
class Classification:
    """What one method concluded about one text.

    `category=None` is "no match" (a value, not an error); `reason` then says why
    (`no_match` or `low_confidence`), and `candidate` keeps the best label for the audit log.
    """

    category: str | None
    confidence: float
    method: str
    reason: str | None = None
    candidate: str | None = None
    matched_keywords: tuple[str, ...] = ()
    truncated: bool = False
    # What an MCP server may decide itself, beyond the category; checked by `select_adapter`.
    lora_name: str | None = None
    model: str | None = None
    use_reasoning: bool | None = None
    system_prompt: str | None = None

    @classmethod
    def no_match(cls, method: str, confidence: float = 0.0, candidate: str | None = None) -> Classification:
        reason = "low_confidence" if candidate is not None else "no_match"
        return cls(None, confidence, method, reason=reason, candidate=candidate)


@runtime_checkable
class Classifier(Protocol):
    """Batch-first so a micro-batcher can hand a model many texts in one pass. Classifiers subclass
    it for the defaults below, so the router asks every one the same questions."""

    method: str
    #: True when the answer may depend on the caller (MCP): cached decisions are then scoped to it.
    caller_dependent: bool = False
    #: True when `contexts` (a conversation's user turns joined) is read; else it is ignored.
    reads_context: bool = False
    #: The circuit breaker of the server this classifier calls (its state is reported), or None.
    breaker: Any = None

    async def classify(self, texts: Sequence[str], caller: Caller | None = None,
                       contexts: Sequence[str | None] | None = None) -> list[Classification]:
        """One `Classification` per text, in order. Raises `ClassifierError` only on breakage."""
        ...

    def record_timeout(self) -> None:
        """The router's budget ran out on this classifier: one with a circuit breaker counts it."""
        return None

    async def connect(self) -> None:
        """Reach the server this classifier talks to, if any: at start-up and until ready."""
        return None

    async def aclose(self) -> None:
        """Release what the classifier holds (sessions, threads)."""
        return None


#: The longest category, label, adapter or model name a server may answer (names reach response
#: headers, spend logs and the audit line).
MAX_NAME_CHARS = 128


def reply_name(value: Any, method: str, field: str) -> str | None:
    """A name from a server's reply (MCP, vLLM), or None when absent; `ClassifierError` for one that
    is not a string, could not be a header value (control characters) or is longer than `MAX_NAME_CHARS`."""
    if value is None or value == "":
        return None
    name = value if isinstance(value, str) else ""
    if not name or len(name) > MAX_NAME_CHARS or not name.isprintable():
        raise ClassifierError(method, f"the reply's {field} is not a printable name of at most "
                                      f"{MAX_NAME_CHARS} characters")
    return name
