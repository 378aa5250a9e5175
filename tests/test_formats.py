"""Per-API request formats: the person's turns, the character budget, shape checks, the rewrite."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from litellm_lora_router.classifiers.base import Caller, Classification, Classifier
from litellm_lora_router.classifiers.encoders import cut_for_tokenizer
from litellm_lora_router.config import ReasoningFamily, parse_config
from litellm_lora_router.decision import Decision
from litellm_lora_router.errors import RequestShapeError
from litellm_lora_router.formats import check_shape, person_turns, strip_scaffolding
from litellm_lora_router.messages import classified_text, clip
from litellm_lora_router.rewrite import rewrite_request
from litellm_lora_router.router import LoraRouter

from .test_decision_rewrite import QWEN

FIXTURES = Path(__file__).parent / "fixtures" / "claude_code"
QWEN3 = ReasoningFamily(type="chat_template_kwargs", parameter="enable_thinking")
GPT_OSS = ReasoningFamily(type="reasoning_effort", parameter="reasoning_effort")


def decision(prompt: str | None = "You code.", mode: str = "replace", family: ReasoningFamily | None = QWEN3,
             use_reasoning: bool = True) -> Decision:
    return Decision(model="code-lora", method="keyword", base_model="base", category="technical", confidence=1.0,
                    lora_name="code-lora", use_reasoning=use_reasoning,
                    reasoning_effort="medium" if use_reasoning else None,
                    reasoning=family, system_prompt=prompt, system_prompt_mode=mode)


def fixture(name: str) -> dict[str, Any]:
    return dict(json.loads((FIXTURES / name).read_text()))


# --- the person's turns, per format -------------------------------------------------------------

def test_strip_scaffolding_drops_reminders_and_unclosed_ones() -> None:
    assert strip_scaffolding("<system-reminder>tools: python</system-reminder>\nWhy?") == "\nWhy?"
    assert strip_scaffolding("a<system-reminder>x</system-reminder>b<system-reminder>y</system-reminder>c") == "abc"
    assert strip_scaffolding("keep <system-reminder>never closed") == "keep "


@pytest.mark.parametrize(("fmt", "request_body", "turns"), [
    ("chat", {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
                           {"role": "tool", "tool_call_id": "1", "content": "python"},
                           {"role": "user", "content": "c"}]},
     ["a", "c"]),
    ("responses", {"input": "just a string"}, ["just a string"]),
    ("responses", {"input": [{"role": "user", "content": [{"type": "input_text", "text": "first"}]},
                             {"type": "function_call_output", "call_id": "c1", "output": "python code"},
                             {"type": "message", "role": "user", "content": "second"}]}, ["first", "second"]),
    ("anthropic", {"messages": [{"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>python docker git</system-reminder>"},
        {"type": "text", "text": "my question"}]}]}, ["my question"]),
    ("completion", {"prompt": "def fib(n):"}, ["def fib(n):"]),
    ("completion", {"prompt": ["one", "two"]}, ["one", "two"]),
    ("completion", {"prompt": [1, 2, 3]}, []),
])
def test_person_turns_per_format(fmt: Any, request_body: dict[str, Any], turns: list[str]) -> None:
    assert person_turns(request_body, fmt) == turns


def test_claude_code_tool_loop_is_classified_on_the_words_that_started_it() -> None:
    first, followup = fixture("first_turn.json"), fixture("tool_result_followup.json")
    question = first["messages"][0]["content"][1]["text"]
    assert person_turns(first, "anthropic") == [question]
    assert person_turns(followup, "anthropic", newest=1) == [question]


def test_person_turns_stops_reading_at_the_newest_needed() -> None:
    messages = [{"role": "user", "content": f"turn {i}"} for i in range(10_000)]
    assert person_turns({"messages": messages}, "chat", newest=2) == ["turn 9998", "turn 9999"]


# --- the character budget (issue 11, item 6) ----------------------------------------------------

def test_clip_keeps_head_and_tail() -> None:
    text = "QUESTION " + "x" * 10_000 + " TAIL?"
    clipped = clip(text, 100)
    assert len(clipped) == 100 and clipped.startswith("QUESTION") and clipped.endswith("TAIL?")


def test_classified_text_is_bounded_and_fills_history_newest_first() -> None:
    result = classified_text(["old " * 50, "previous", "y" * 5000], history_window=2, max_chars=200)
    assert len(result.text) <= 200 and result.clipped
    assert classified_text(["a", "b"], history_window=1, max_chars=200).text == "a\nb"
    assert not classified_text(["a", "b"], history_window=1, max_chars=200).clipped


class _Recorder(Classifier):
    method = "keyword"

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def classify(self, texts: list[str], caller: Caller | None = None, contexts: object = None) -> list[Classification]:
        self.seen.extend(texts)
        return [Classification("code", 1.0, self.method) for _ in texts]


async def test_a_megabyte_prompt_reaches_classifiers_bounded() -> None:
    """Fails on the old code: the whole megabyte went to every classifier, inline on the loop."""
    config = parse_config({**QWEN, "lora_router": {"max_text_chars": 1000}})
    recorder = _Recorder()
    body = {"model": "MoM", "messages": [{"role": "user", "content": "python " + "filler " * 150_000 + "why?"}]}
    routed = await LoraRouter(config, [recorder]).route(body)
    [seen] = recorder.seen
    assert len(seen) <= 1000 and seen.startswith("python") and seen.endswith("why?")
    assert routed.decision.truncated


def test_tokenizer_input_is_cut_before_tokenizing() -> None:
    cut, was_cut = cut_for_tokenizer(["short", "z" * 1_000_000], max_length=256)
    assert cut[0] == "short" and len(cut[1]) == 256 * 16 and was_cut == [False, True]


# --- shape checks (issue 11, item 14) -----------------------------------------------------------

@pytest.mark.parametrize(("fmt", "body", "param"), [
    ("chat", {"messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
    ("chat", {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "hologram"}]}]},
     "messages[0].content[1].type"),
    ("chat", {"messages": [{"role": "user", "content": [{"type": "text", "text": 7}]}]}, "messages[0].content[0].text"),
    ("chat", {"messages": "hello"}, "messages"),
    ("chat", {"messages": [{"content": "no role"}]}, "messages[0].role"),
    ("responses", {"input": 42}, "input"),
    ("responses", {"input": [{"role": "user", "content": [{"type": "text", "text": "x"}]}]},
     "input[0].content[0].type"),
    ("responses", {"input": "ok", "instructions": ["x"]}, "instructions"),
    ("anthropic", {"messages": [{"role": "system", "content": "x"}]}, "messages[0].role"),
    ("anthropic", {"messages": [{"role": "user", "content": [{"type": "input_text", "text": "x"}]}]},
     "messages[0].content[0].type"),
    ("anthropic", {"messages": [{"role": "user", "content": "x"}], "system": [{"type": "image"}]}, "system[0]"),
    ("completion", {"prompt": {"text": "x"}}, "prompt"),
    ("completion", {"prompt": [1, "mixed"]}, "prompt"),
])
def test_bad_shapes_name_the_field(fmt: Any, body: dict[str, Any], param: str) -> None:
    with pytest.raises(RequestShapeError) as caught:
        check_shape(body, fmt)
    assert caught.value.param == param and param in str(caught.value)


@pytest.mark.parametrize(("fmt", "body"), [
    ("chat", {"messages": [{"role": "system", "content": None}, {"role": "user", "content": [
        {"type": "text", "text": "a"}, {"type": "image_url", "image_url": {"url": "data:,"}}]},
        {"role": "assistant", "content": None, "tool_calls": []}, {"role": "tool", "content": "r"}]}),
    ("responses", {"input": [{"type": "function_call_output", "call_id": "c", "output": "x"},
                             {"role": "user", "content": "hi"}]}),
    ("completion", {"prompt": [[1, 2], [3]]}),
])
def test_good_shapes_pass(fmt: Any, body: dict[str, Any]) -> None:
    check_shape(body, fmt)


def test_claude_code_fixtures_pass_the_shape_check() -> None:
    check_shape(fixture("first_turn.json"), "anthropic")
    check_shape(fixture("tool_result_followup.json"), "anthropic")


# --- the rewrite, per format --------------------------------------------------------------------

def test_developer_message_is_the_system_message() -> None:
    """Issue 11, item 15: fails on the old code, which put a second instruction message in front."""
    body = {"messages": [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "python?"}]}
    assert rewrite_request(body, decision())["messages"] == [{"role": "developer", "content": "You code."},
                                                            {"role": "user", "content": "python?"}]
    inserted = rewrite_request(body, decision(mode="insert"))["messages"]
    assert inserted == [{"role": "developer", "content": "You code.\n\nBe brief."},
                        {"role": "user", "content": "python?"}]


def test_callers_explicit_reasoning_flag_wins_by_default() -> None:
    """Issue 11, item 16: fails on the old code, which overwrote the caller's flag."""
    body = {"messages": [{"role": "user", "content": "python?"}], "chat_template_kwargs": {"enable_thinking": False}}
    assert rewrite_request(body, decision())["chat_template_kwargs"] == {"enable_thinking": False}
    assert rewrite_request(body, decision(), reasoning_precedence="category")["chat_template_kwargs"] == {
        "enable_thinking": True}
    effort = {"messages": [{"role": "user", "content": "x"}], "reasoning_effort": "low"}
    assert rewrite_request(effort, decision(family=GPT_OSS))["reasoning_effort"] == "low"
    enforced = rewrite_request(effort, decision(family=GPT_OSS), reasoning_precedence="category")
    assert enforced["reasoning_effort"] == "medium"


def test_responses_rewrite_instructions_and_reasoning() -> None:
    body = {"model": "MoM", "input": "python?", "instructions": "Be brief."}
    replaced = rewrite_request(body, decision(), "responses")
    assert replaced["instructions"] == "You code." and replaced["model"] == "code-lora"
    assert replaced["extra_body"] == {"chat_template_kwargs": {"enable_thinking": True}}
    assert rewrite_request(body, decision(mode="insert"), "responses")["instructions"] == "You code.\n\nBe brief."
    assert body["instructions"] == "Be brief." and "extra_body" not in body  # pure: the input is not touched
    with_item = {"input": [{"role": "system", "content": "Sys."}, {"role": "user", "content": "python?"}]}
    rewritten = rewrite_request(with_item, decision(), "responses")
    assert rewritten["input"][0] == {"role": "system", "content": "You code."} and "instructions" not in rewritten
    effort = rewrite_request({"input": "x", "reasoning": {"summary": "auto"}}, decision(family=GPT_OSS), "responses")
    assert effort["reasoning"] == {"summary": "auto", "effort": "medium"}


def test_anthropic_rewrite_system_string_and_blocks() -> None:
    blocks = [{"type": "text", "text": "You are Claude Code.", "cache_control": {"type": "ephemeral"}}]
    body = {"messages": [{"role": "user", "content": "x"}], "system": blocks}
    assert rewrite_request(body, decision(), "anthropic")["system"] == "You code."
    assert rewrite_request(body, decision(mode="insert"), "anthropic")["system"] == [
        {"type": "text", "text": "You code."}, *blocks]
    inserted = rewrite_request({**body, "system": "S."}, decision(mode="insert"), "anthropic")
    assert inserted["system"] == "You code.\n\nS."
    assert rewrite_request({"messages": []}, decision(), "anthropic")["system"] == "You code."
    thinking = {"messages": [], "thinking": {"type": "enabled", "budget_tokens": 1024}}
    assert "reasoning_effort" not in rewrite_request(thinking, decision(family=GPT_OSS), "anthropic")
    assert rewrite_request({"messages": []}, decision(family=GPT_OSS), "anthropic")["reasoning_effort"] == "medium"
    flag = rewrite_request({"messages": []}, decision(), "anthropic")["chat_template_kwargs"]
    assert flag == {"enable_thinking": True}


def test_completions_get_the_model_only() -> None:
    body = {"model": "MoM", "prompt": "def fib(n):"}
    assert rewrite_request(body, decision(), "completion") == {"model": "code-lora", "prompt": "def fib(n):"}
