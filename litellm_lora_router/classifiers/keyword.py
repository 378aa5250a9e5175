"""Keyword rules: ordered, first match wins, confidence 1.0 — auditable routing.

The rules are data in `config.KeywordRule`; this module compiles them once, at start-up, and
matches them. Keywords match as whole words in every script that separates words with spaces (also
`C++`, `.NET`, `node.js`, `café`), anywhere in scripts that do not (Chinese, Japanese, Thai).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ..config import KeywordRule, RouterConfig
from .base import Caller, Classification, Classifier

__all__ = ["CompiledRule", "KeywordClassifier", "build", "keyword_pattern", "normalize_text"]


def normalize_text(text: str, case_sensitive: bool) -> str:
    """NFC, and casefold unless case matters: the same form for keywords and queries."""
    text = unicodedata.normalize("NFC", text)
    return text if case_sensitive else text.casefold()


def _is_spaced_word_char(char: str) -> bool:
    """True for a word character of a script that separates words with spaces.

    Han, kana, Thai and similar scripts write words without spaces, so a keyword in them can
    only match as a substring; demanding a word boundary there would never match.
    """
    if not (char.isalnum() or char == "_"):
        return False
    name = unicodedata.name(char, "")
    return not name.startswith(("CJK", "HIRAGANA", "KATAKANA", "THAI", "LAO", "KHMER", "MYANMAR"))


def keyword_pattern(keyword: str) -> str:
    """A whole-word regex for a literal keyword, correct for `C++`, `.NET`, `café`, `node.js`.

    A boundary is demanded only on a side where the keyword itself ends in a word character,
    because `\\b` next to `+` or `.` is wrong and Python's `\\w` is Unicode-aware.
    """
    left = r"(?<!\w)" if _is_spaced_word_char(keyword[0]) else ""
    right = r"(?!\w)" if _is_spaced_word_char(keyword[-1]) else ""
    return f"{left}{re.escape(keyword)}{right}"


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A `KeywordRule` with its patterns compiled (keywords NFC-normalised and casefolded once)."""

    rule: KeywordRule
    patterns: tuple[re.Pattern[str], ...]

    @classmethod
    def from_rule(cls, rule: KeywordRule) -> CompiledRule:
        if rule.method == "regex":
            flags = 0 if rule.case_sensitive else re.IGNORECASE
            patterns = [re.compile(unicodedata.normalize("NFC", k), flags) for k in rule.keywords]
        else:
            patterns = [re.compile(keyword_pattern(normalize_text(k, rule.case_sensitive))) for k in rule.keywords]
        return cls(rule, tuple(patterns))

    def matches(self, text: str) -> tuple[bool, tuple[str, ...]]:
        """Whether the rule fires on `text`, and which keywords matched."""
        rule = self.rule
        if rule.method == "regex":
            subject = unicodedata.normalize("NFC", text)
        else:
            subject = normalize_text(text, rule.case_sensitive)
        found = tuple(k for k, p in zip(rule.keywords, self.patterns, strict=True) if p.search(subject))
        if rule.operator == "OR":
            return bool(found), found
        if rule.operator == "AND":
            return len(found) == len(rule.keywords), found
        return not found, ()


class KeywordClassifier(Classifier):
    """Evaluates `keyword_rules` in order, as vLLM Semantic Router does.

    Patterns are compiled at start-up. Matching runs inline on the event loop: the text is bounded
    by `lora_router.max_text_chars` before it gets here, so a scan costs well under a millisecond
    and a thread hop would cost more than the work.
    """

    method = "keyword"

    def __init__(self, rules: Sequence[KeywordRule]) -> None:
        self._rules = tuple(CompiledRule.from_rule(rule) for rule in rules)

    def classify_one(self, text: str) -> Classification:
        for compiled in self._rules:
            fired, matched = compiled.matches(text)
            if fired:
                return Classification(compiled.rule.category, 1.0, self.method, matched_keywords=matched)
        return Classification.no_match(self.method)

    async def classify(self, texts: Sequence[str], caller: Caller | None = None,
                       contexts: Sequence[str | None] | None = None) -> list[Classification]:
        return [self.classify_one(text) for text in texts]


def build(config: RouterConfig, encoding: Callable[[], Any]) -> KeywordClassifier | None:
    return KeywordClassifier(config.keyword_rules) if config.keyword_rules else None
