"""`select_adapter` and `rewrite_request`: pure functions, tested without LiteLLM."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from typing import Any

import pytest
import yaml

from litellm_lora_router import (
    Classification,
    LoraRouter,
    TenantPolicy,
    parse_config,
    rewrite_request,
    select_adapter,
    text_to_classify,
)
from litellm_lora_router.classifiers import KeywordClassifier
from litellm_lora_router.classifiers.base import Classifier
from litellm_lora_router.messages import request_texts, since_topic_switch, switches_topic

from .conftest import DEFAULT_ROUTER_CONFIG

QWEN = {
    "model_config": {
        "qwen3-8b": {"reasoning_family": "qwen3", "loras": [{"name": "code-lora"}, {"name": "math-lora"}]},
        "gpt-oss-20b": {"reasoning_family": "gpt-oss", "loras": [{"name": "law-lora"}]},
    },
    "default_model": "qwen3-8b",
    "categories": [
        {"name": "code", "system_prompt": "You code.", "system_prompt_mode": "insert",
         "model_scores": [
             {"model": "qwen3-8b", "lora_name": "math-lora", "score": 0.5},
             {"model": "qwen3-8b", "lora_name": "code-lora", "score": 0.9, "use_reasoning": True},
             {"model": "qwen3-8b", "score": 0.9},
         ]},
        {"name": "law", "model_scores": [{"model": "gpt-oss-20b", "lora_name": "law-lora", "score": 1, "use_reasoning": True}]},
        {"name": "chat", "system_prompt": "Be nice.", "model_scores": [{"model": "qwen3-8b", "score": 1}]},
    ],
    "keyword_rules": [{"category": "code", "keywords": ["python"]}, {"category": "law", "keywords": ["contract"]}],
}


def config(raw: dict[str, Any] | None = None):  # type: ignore[no-untyped-def]
    return parse_config(copy.deepcopy(raw or QWEN))


def hit(category: str, method: str = "keyword", confidence: float = 1.0) -> Classification:
    return Classification(category, confidence, method)


def test_highest_score_wins_first_on_ties() -> None:
    decision = select_adapter(config(), hit("code"))
    assert (decision.model, decision.lora_name, decision.base_model) == ("code-lora", "code-lora", "qwen3-8b")
    assert decision.use_reasoning and decision.reasoning_effort == "high"  # default_reasoning_effort
    assert decision.reasoning is not None and decision.reasoning.parameter == "enable_thinking"


def test_entry_without_lora_targets_the_base_model() -> None:
    decision = select_adapter(config(), hit("chat"))
    assert decision.model == "qwen3-8b" and decision.lora_name is None and not decision.use_reasoning


@pytest.mark.parametrize(("classification", "reason"), [
    (None, "no_match"),
    (Classification.no_match("keyword"), "no_match"),
    (Classification.no_match("domain", 0.3, candidate="code"), "low_confidence"),
    (hit("astronomy"), "unknown_category"),
])
def test_fallbacks_carry_a_reason(classification: Classification | None, reason: str) -> None:
    decision = select_adapter(config(), classification)
    assert (decision.model, decision.method, decision.reason) == ("qwen3-8b", "fallback", reason)


def test_allowed_adapters_filter_before_scoring() -> None:
    only_math = TenantPolicy(allowed_adapters=frozenset({"math-lora"}))
    assert select_adapter(config(), hit("code"), only_math).model == "qwen3-8b"  # best allowed: the base entry
    nothing = TenantPolicy(allowed_adapters=frozenset())
    assert select_adapter(config(), hit("law"), nothing).reason == "adapter_not_allowed"


KNOWN = frozenset({"a", "b", "c"})
NONE_ALLOWED = TenantPolicy(True, frozenset())


def policy(key: object = None, team: object = None) -> TenantPolicy:
    return TenantPolicy.from_metadata(
        {"lora_router": key} if key is not None else {}, {"lora_router": team} if team is not None else {},
        KNOWN, key_name="key 'k1'", team_name="team 't1'")


def test_key_may_only_narrow_its_team() -> None:
    team = {"enabled": False, "allowed_adapters": ["a", "b"]}
    assert policy(team=team) == TenantPolicy(False, frozenset({"a", "b"}))
    assert policy({"enabled": True}, team).enabled is False  # a key cannot switch back on what its team switched off
    assert policy({"enabled": False}, {"enabled": True}).enabled is False
    # the intersection, never the key's own list
    assert policy({"allowed_adapters": ["b", "c"]}, team).allowed_adapters == {"b"}
    assert policy({"allowed_adapters": ["c"]}, {"allowed_adapters": ["a"]}).allowed_adapters == frozenset()
    assert policy({"allowed_adapters": ["c"]}).allowed_adapters == {"c"}
    assert policy() == TenantPolicy()


@pytest.mark.parametrize(("key", "problem", "expected"), [
    ({"allowed_adapters": "a"}, "allowed_adapters: expected a list of adapter names", NONE_ALLOWED),
    ({"allowed_adapters": ["a", 7]}, "allowed_adapters: expected a list of adapter names", NONE_ALLOWED),
    ({"allowed_adapters": ["a", "typo-lora"]}, "allowed_adapters: unknown adapter 'typo-lora'",
     TenantPolicy(True, frozenset({"a"}))),
    ({"enabled": "false"}, "enabled: expected true or false", TenantPolicy(False, frozenset({"a", "b"}))),
    ("off", "expected an object", TenantPolicy(False, frozenset())),
    ({"allowed_adapter": ["a"]}, "unknown key 'allowed_adapter'", TenantPolicy(False, frozenset())),
])
def test_malformed_tenant_metadata_fails_closed(key: object, problem: str, expected: TenantPolicy) -> None:
    result = policy(key, {"allowed_adapters": ["a", "b"]})
    assert result == expected
    [message] = result.problems
    assert message.startswith("key 'k1': lora_router") and problem in message
    assert "team 't1'" not in message


def test_malformed_team_metadata_is_named() -> None:
    result = policy(team={"enabled": "no"})
    assert result.enabled is False
    assert [p.split(":")[0] for p in result.problems] == ["team 't1'"]


def test_text_to_classify() -> None:
    assert text_to_classify([{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                             {"role": "user", "content": "c"}]) == "c"
    parts = [{"type": "text", "text": "look"}, {"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "here"}]
    assert text_to_classify([{"role": "user", "content": parts}]) == "look\nhere"
    assert text_to_classify([{"role": "system", "content": "sys"}, {"role": "user", "content": [{"type": "image_url"}]}]) == "sys"
    assert text_to_classify(None) == ""


@pytest.mark.parametrize(("turn", "switches"), [
    ("ok thanks. unrelated, my landlord kept my deposit", True),
    ("Cool. On another note: how do I undo a git commit?", True),
    ("thanks! by the way, any board games for four?", True),
    ("danke. Übrigens, mein Vermieter will die Kaution behalten", True),
    ("perfetta. cambiando argomento, ho comprato un frigo online", True),
    ("好了解决了，谢谢！顺便问一下，周末去成都吃什么？", True),
    ("わかりました。ところで、庭の盆栽の手入れは？", True),
    ("non c’entra, ma il mio capo non mi paga", True),  # a typographic apostrophe
    ("Übrigens, mein Vermieter", True),  # a decomposed accent
    ("and what if he still refuses?", False),  # follow-ups on the same subject:
    ("btw I already tried restarting the router", False),
    ("could the rash be unrelated to the antibiotics?", False),
    ("I have another question about the same contract", False),
    ("Y a-t-il autre chose que je puisse faire ?", False),
    ("Übrigens habe ich Windows 11", False),
    ("你说对了，那第二步呢？", False),
    ("how do I switch gears on a hill?", False),
    ("my unrelatedness test", False),  # whole words only
    ("I told my landlord about the leak weeks ago and he did nothing at all, not once. By the way, can he", False),
])
def test_switches_topic(turn: str, switches: bool) -> None:
    assert switches_topic(turn) is switches


def test_a_conversation_is_read_from_its_newest_topic_switch() -> None:
    """The turns before one that changes the subject are not read, by the conversation nor by the
    history window; a follow-up after the switch keeps the switch's turn."""
    cooking, switch, follow_up = "best pasta for a quick dinner?", "ok. unrelated, my landlord kept my deposit", "and then?"
    assert since_topic_switch([cooking, switch, follow_up]) == [switch, follow_up]
    assert since_topic_switch([cooking, "btw, the oven is electric", switch, follow_up]) == [switch, follow_up]  # the newest
    classified, context = request_texts([cooking, switch])
    assert (classified.text, context) == (switch, None)  # the switch alone: no conversation to blend
    classified, context = request_texts([cooking, switch, follow_up], history_window=2)
    assert (classified.text, context) == (f"{switch}\n{follow_up}", None)
    classified, context = request_texts([cooking, "and for kids?"])
    assert (classified.text, context) == ("and for kids?", f"{cooking}\nand for kids?")


def request(*messages: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"model": "MoM", "messages": list(messages), **extra}


def test_rewrite_is_pure_and_sets_model_prompt_reasoning() -> None:
    original = request({"role": "user", "content": "python?"}, chat_template_kwargs={"foo": 1})
    snapshot = copy.deepcopy(original)
    out = rewrite_request(original, select_adapter(config(), hit("code")))
    assert original == snapshot
    assert out["model"] == "code-lora"
    assert out["messages"][0] == {"role": "system", "content": "You code."}
    assert out["chat_template_kwargs"] == {"foo": 1, "enable_thinking": True}
    off = rewrite_request(request({"role": "user", "content": "hi"}), select_adapter(config(), hit("chat")))
    assert off["chat_template_kwargs"] == {"enable_thinking": False}


def test_reasoning_effort_family() -> None:
    raw = copy.deepcopy(QWEN)
    raw["categories"][1]["model_scores"][0]["reasoning_effort"] = "low"
    out = rewrite_request(request({"role": "user", "content": "x"}), select_adapter(config(raw), hit("law")))
    assert out["reasoning_effort"] == "low" and "chat_template_kwargs" not in out


def test_unknown_family_sends_no_reasoning_fields() -> None:
    guide = parse_config(yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text()))
    out = rewrite_request(request({"role": "user", "content": "x"}), select_adapter(guide, hit("technical")))
    assert out["model"] == "technical-lora"
    assert "chat_template_kwargs" not in out and "reasoning_effort" not in out


def test_system_prompt_insert_string_and_array() -> None:
    decision = select_adapter(config(), hit("code"))
    out = rewrite_request(request({"role": "system", "content": "Be brief."}, {"role": "user", "content": "q"}), decision)
    assert out["messages"] == [{"role": "system", "content": "You code.\n\nBe brief."}, {"role": "user", "content": "q"}]
    array = [{"type": "text", "text": "Be brief."}]
    out = rewrite_request(request({"role": "user", "content": "q"}, {"role": "system", "content": array}), decision)
    assert out["messages"][1] == {"role": "system", "content": [{"type": "text", "text": "You code."}, *array]}
    assert len(out["messages"]) == 2


def test_system_prompt_replace_keeps_position_and_count() -> None:
    decision = select_adapter(config(), hit("chat"))
    msgs = [{"role": "user", "content": "a"}, {"role": "system", "content": [{"type": "text", "text": "old"}]},
            {"role": "user", "content": "b"}]
    out = rewrite_request(request(*msgs), decision)
    assert out["messages"] == [msgs[0], {"role": "system", "content": "Be nice."}, msgs[2]]


def test_fallback_changes_only_the_model() -> None:
    body = request({"role": "user", "content": "q"}, temperature=0.1)
    out = rewrite_request(body, select_adapter(config(), None))
    assert out == {**body, "model": "qwen3-8b"}


class Raising(Classifier):
    method = "domain"

    async def classify(self, texts: Sequence[str], caller: object = None, contexts: object = None) -> list[Classification]:
        raise RuntimeError("model exploded")


class Hanging(Classifier):
    method = "embedding"

    async def classify(self, texts: Sequence[str], caller: object = None, contexts: object = None) -> list[Classification]:
        await asyncio.sleep(30)
        return []


async def test_router_falls_back_on_error_and_timeout() -> None:
    raw = copy.deepcopy(QWEN)
    raw["lora_router"] = {"classification_timeout_seconds": 0.05}
    cfg = config(raw)
    body = request({"role": "user", "content": "no keywords here"})
    routed = await LoraRouter(cfg, [Raising()]).route(body)
    assert routed.decision.reason == "classifier_error" and routed.error == "RuntimeError"
    routed = await LoraRouter(cfg, [Hanging()]).route(body)
    assert routed.decision.reason == "timeout" and routed.decision.model == "qwen3-8b"
    # a later method still wins when an earlier one broke
    routed = await LoraRouter(cfg, [Raising(), KeywordClassifier(cfg.keyword_rules)]).route(
        request({"role": "user", "content": "python"}))
    assert routed.decision.model == "code-lora"


async def test_router_disabled_and_no_text() -> None:
    router = LoraRouter.from_config(config())
    routed = await router.route(request({"role": "user", "content": "python"}), TenantPolicy(enabled=False))
    assert (routed.decision.model, routed.decision.reason) == ("MoM", "routing_disabled")
    routed = await router.route(request())
    assert routed.decision.reason == "no_text"
    assert router.is_auto_model("auto") and router.is_auto_model("MoM") and not router.is_auto_model("code-lora")
