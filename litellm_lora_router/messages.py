"""From the person's turns to the one text that is classified: history window and character budget.

The budget bounds all work done per request, whatever a client sends: the keyword rules, the cache
key's hash and the tokenizer only ever see `max_chars` characters.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import RouterOptions
from .formats import content_text, person_turns

__all__ = ["ClassifiedText", "classified_text", "clip", "content_text", "text_to_classify"]

#: `lora_router.max_text_chars` default: about twice what the sentence encoder reads (256 tokens).
DEFAULT_MAX_CHARS: int = RouterOptions.model_fields["max_text_chars"].default


@dataclass(frozen=True, slots=True)
class ClassifiedText:
    text: str
    clipped: bool = False  # the budget cut something out


def clip(text: str, max_chars: int) -> str:
    """The head and the tail of `text` within `max_chars`: a question often opens or closes a long paste."""
    if len(text) <= max_chars:
        return text
    head = max_chars // 2
    tail = max_chars - head - 1  # one character joins them
    return f"{text[:head]}\n{text[len(text) - tail:]}" if tail > 0 else text[:max_chars]


def classified_text(
    turns: Sequence[str], history_window: int = 0, max_chars: int = DEFAULT_MAX_CHARS
) -> ClassifiedText:
    """The last turn, preceded by up to `history_window` earlier turns (a follow-up such as "and how
    do I skip two rows?" carries no domain words of its own), within `max_chars` in all: the last
    turn keeps head and tail, earlier turns fill what budget is left, newest first."""
    chosen = list(turns[-(history_window + 1):]) if turns else []
    budget = max_chars
    kept: list[str] = []
    clipped = False
    for turn in reversed(chosen):
        if budget <= 0:
            clipped = True
            break
        piece = clip(turn, budget)
        clipped = clipped or piece is not turn
        kept.append(piece)
        budget -= len(piece) + 1
    return ClassifiedText("\n".join(reversed(kept)), clipped)


def text_to_classify(messages: Any, history_window: int = 0, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The text classified for OpenAI chat `messages` (the person's words; see `formats`)."""
    turns = person_turns({"messages": messages}, "chat", newest=history_window + 1)
    return classified_text(turns, history_window, max_chars).text
