"""Reading text out of OpenAI-style chat messages."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["content_text", "text_to_classify"]


def content_text(content: Any) -> str:
    """A message's text: the string itself, or the text parts of a content array joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [
            part.get("text", "")
            for part in content
            if isinstance(part, Mapping) and part.get("type") in ("text", "input_text") and isinstance(part.get("text"), str)
        ]
        return "\n".join(p for p in parts if p)
    return ""


def text_to_classify(messages: Any, history_window: int = 0) -> str:
    """The last user message's text, preceded by up to `history_window` earlier user turns (a
    follow-up such as "and how do I skip two rows?" carries no domain words of its own); without
    any user text, the other messages' text."""
    if not isinstance(messages, Sequence) or isinstance(messages, str):
        return ""
    dicts = [m for m in messages if isinstance(m, Mapping)]
    user_texts = [t for t in (content_text(m.get("content")).strip() for m in dicts if m.get("role") == "user") if t]
    if user_texts:
        return "\n".join(user_texts[-(history_window + 1):])
    return "\n".join(t for t in (content_text(m.get("content")).strip() for m in dicts) if t)
