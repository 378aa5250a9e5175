"""From the person's turns to the texts that are classified: history window, conversation, topic
switches and character budget.

The budget bounds all work done per request, whatever a client sends: the keyword rules, the cache
key's hash and the tokenizer only ever see `max_chars` characters.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .config import RouterOptions
from .formats import content_text, person_turns

__all__ = ["MAX_TURNS", "TOPIC_SWITCH_HEAD_CHARS", "TOPIC_SWITCH_MARKERS", "ClassifiedText", "classified_text", "clip",
           "content_text", "request_texts", "since_topic_switch", "switches_topic", "text_to_classify", "turns_read"]

#: `lora_router.max_text_chars` default: about twice what the sentence encoder reads (256 tokens).
DEFAULT_MAX_CHARS: int = RouterOptions.model_fields["max_text_chars"].default

#: With `history_blend`, the conversation a domain classifier reads: at most this many newest user turns.
MAX_TURNS = 8

#: What people write to say that a turn starts a new subject, in the languages of the default
#: classifier (English, Spanish, French, German, Portuguese, Italian, Chinese, Japanese). Words that
#: also open a follow-up on the same subject ("another question", "something else", "aliás",
#: "对了") are left out.
TOPIC_SWITCH_MARKERS = (
    "unrelated", "separate question", "separate thing", "separate issue", "different question",
    "different topic", "different note", "different matter", "different thing", "different subject",
    "random question", "random q", "totally different", "completely different", "change of topic",
    "change of subject", "changing the subject", "changing topics", "switching gears", "switching topics",
    "new topic", "off topic", "off-topic", "on another note", "by the way", "btw",
    "cambiando de tema", "cambio de tema", "otro tema", "por cierto", "nada que ver", "pregunta aparte",
    "autre sujet", "changement de sujet", "changer de sujet", "rien à voir", "rien a voir", "au fait",
    "sans rapport", "tout autre chose",
    "anderes thema", "themawechsel", "übrigens", "uebrigens", "was anderes", "ganz andere frage",
    "mudando de assunto", "mudar de assunto", "outro assunto", "nada a ver",
    "cambiando argomento", "cambiare argomento", "cambio argomento", "altro argomento", "a proposito",
    "non c'entra", "tutt'altro",
    "顺便问", "顺便说", "换个话题", "另外问", "题外话",
    "ところで", "話は変わ", "別の質問", "別件", "話題を変え", "それとは別に",
)
#: A marker counts in a turn's first characters ("ok thanks. unrelated, ..."), not deep in a story.
TOPIC_SWITCH_HEAD_CHARS = 80
#: A marker in Latin script counts as a whole phrase followed by a break or a "but" ("unrelated,",
#: "btw:", "unrelated but"), not inside a sentence ("could it be unrelated to the pills?", "Übrigens
#: habe ich Windows 11"); in Chinese and Japanese, which put no spaces between words, as it stands.
_TOPIC_SWITCH = re.compile("|".join(
    rf"\b{re.escape(m)}(?=\s*[,.:;!?—–-]|\s+(?:but|pero|mais|aber|mas|ma)\b)" if ord(m[0]) < 0x2E80
    else re.escape(m) for m in TOPIC_SWITCH_MARKERS), re.IGNORECASE)


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


def switches_topic(turn: str) -> bool:
    """Whether a turn says, in its first words, that it starts a new subject (composed accents and
    straight apostrophes, however it was typed)."""
    head = unicodedata.normalize("NFC", turn[:TOPIC_SWITCH_HEAD_CHARS]).replace("’", "'")
    return _TOPIC_SWITCH.search(head) is not None


def since_topic_switch(turns: Sequence[str]) -> list[str]:
    """The turns from the newest that starts a new subject on: the ones before it are about something
    else ("...carbonara?", "perfetta. cambiando argomento, ho comprato un frigo online..."), and
    reading them would drag the new question back to the old subject."""
    start = next((i for i in range(len(turns) - 1, 0, -1) if switches_topic(turns[i])), 0)
    return list(turns[start:])


def turns_read(history_window: int = 0, blend: bool = True) -> int:
    """How many of the newest turns a router reads."""
    return max(history_window + 1, MAX_TURNS if blend else 0)


def request_texts(turns: Sequence[str], history_window: int = 0, blend: bool = True,
                  max_chars: int = DEFAULT_MAX_CHARS) -> tuple[ClassifiedText, str | None]:
    """What a router classifies of a person's turns (oldest first): the last turn with up to
    `history_window` earlier ones; and, with `blend`, the conversation (at most `MAX_TURNS` newest
    turns joined), or None where it is that same text. Both start at the newest topic switch."""
    turns = since_topic_switch(turns[-turns_read(history_window, blend):])
    classified = classified_text(turns, history_window, max_chars)
    if not blend:
        return classified, None
    context = classified_text(turns, MAX_TURNS - 1, max_chars).text
    return classified, context if context != classified.text else None


def text_to_classify(messages: Any, history_window: int = 0, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The text classified for OpenAI chat `messages` (the person's words; see `formats`), the
    last turn with up to `history_window` earlier ones, whatever they say (`request_texts` also
    starts at a topic switch, as a router does)."""
    turns = person_turns({"messages": messages}, "chat", newest=history_window + 1)
    return classified_text(turns, history_window, max_chars).text
