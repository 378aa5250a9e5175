"""Keyword rules: whole words for every script and punctuation, operators, regex, order."""

from __future__ import annotations

import pytest

from litellm_lora_router.classifiers import KeywordClassifier
from litellm_lora_router.classifiers.keyword import CompiledRule
from litellm_lora_router.config import KeywordRule


def rule(keywords: list[str], operator: str = "OR", **kw: object) -> CompiledRule:
    spec = {"category": "c", "operator": operator, "keywords": keywords, **kw}
    return CompiledRule.from_rule(KeywordRule.model_validate(spec))


@pytest.mark.parametrize(("keyword", "text", "hit"), [
    ("C++", "How do templates work in C++?", True),
    ("C++", "C++ templates", True),
    ("C++", "Is C+ a language?", False),
    ("C++", "I like C++17", True),   # the keyword ends in '+': no boundary is demanded after it
    (".NET", "Deploy a .NET app", True),
    (".NET", "ASP.NET core", True),   # starts with punctuation: anchored there
    (".NET", "the .NETWORK", False),
    ("node.js", "Use node.js streams", True),
    ("node.js", "nodexjs", False),
    ("café", "Best café in town", True),
    ("café", "cafés are nice", False),
    ("cafe", "café", False),
    ("java", "javascript closures", False),
    ("java", "Java generics", True),
    ("api", "rapid growth", False),
    ("机器学习", "我想学习机器学习的基础", True),
    ("東京", "東京タワーはどこ", True),
    ("москва", "Я живу в Москва-сити", True),
    ("москва", "Москвариум", False),
    ("σύμβαση", "Τι είναι μια σύμβαση;", True),
    ("blood pressure", "what causes high blood  pressure", False),
    ("blood pressure", "What causes high Blood Pressure?", True),
    ("straße", "Die STRASSE ist lang", True),  # casefold
])
def test_whole_word_matching(keyword: str, text: str, hit: bool) -> None:
    assert rule([keyword]).matches(text)[0] is hit


def test_case_sensitive() -> None:
    assert rule(["AWS"], case_sensitive=True).matches("deploy on AWS")[0]
    assert not rule(["AWS"], case_sensitive=True).matches("deploy on aws")[0]


def test_operators() -> None:
    assert rule(["contract", "breach"], "AND").matches("breach of contract") == (True, ("contract", "breach"))
    assert rule(["contract", "breach"], "AND").matches("a contract")[0] is False
    assert rule(["contract", "breach"], "or").matches("a contract") == (True, ("contract",))
    assert rule(["spam", "ads"], "NOR").matches("hello there") == (True, ())
    assert rule(["spam", "ads"], "NOR").matches("no spam")[0] is False


def test_regex_method() -> None:
    r = rule([r"\bCVE-\d{4}-\d+\b"], method="regex")
    assert r.matches("patch cve-2024-1234 now")[0]
    assert not r.matches("patch it now")[0]


def test_vsr_name_spelling_is_accepted() -> None:
    assert KeywordRule.model_validate({"name": "legal", "keywords": ["law"]}).category == "legal"


async def test_first_matching_rule_wins() -> None:
    classifier = KeywordClassifier([
        KeywordRule.model_validate({"category": "urgent", "keywords": ["urgent"]}),
        KeywordRule.model_validate({"category": "math", "keywords": ["solve"]}),
    ])
    [first, second, none] = await classifier.classify(["urgent: solve this", "solve x", "hello"])
    assert (first.category, first.confidence, first.matched_keywords) == ("urgent", 1.0, ("urgent",))
    assert second.category == "math"
    assert none.category is None and none.reason == "no_match"
