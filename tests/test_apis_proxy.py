"""Every API that carries a prompt, through a real LiteLLM proxy, with the clients people use:
the `openai` SDK for chat, Responses and completions, the `anthropic` SDK and raw HTTP (a replay
of Claude Code's requests) for Anthropic Messages. Assertions read what the vLLM stand-in received.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import openai
import pytest

from .conftest import ROUTING_OFF_KEY, SEEDED_KEYS, Proxy, StandIn, launch_proxy
from .test_litellm_features import keyword_only_router_config

TECH = "Explain async/await in JavaScript"
MEDICAL = "What causes high blood pressure?"
TECH_PROMPT = "You are an expert software engineer."
MEDICAL_PROMPT = "You are a medical expert."
FIXTURES = Path(__file__).parent / "fixtures" / "claude_code"
CASES = [(TECH, "technical-lora", TECH_PROMPT), (MEDICAL, "medical-lora", MEDICAL_PROMPT)]


@pytest.fixture(scope="session")
def default_models() -> None:
    """Keyword rules decide every query here: no trained model is needed, none is waited for."""


@pytest.fixture(scope="module")
def proxy(standin: StandIn, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """The shipped configs less the domain classifier, with the seeded virtual keys."""
    router_config = keyword_only_router_config(tmp_path_factory.mktemp("apis"))
    running = launch_proxy(standin, logs_dir, router_config=router_config, keys=[dict(k) for k in SEEDED_KEYS])
    yield running
    running.service.stop()


def openai_client(proxy: Proxy, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(api_key=key or proxy.master_key, base_url=proxy.url + "/v1", max_retries=0, timeout=60)


def anthropic_client(proxy: Proxy, key: str | None = None) -> anthropic.Anthropic:
    return anthropic.Anthropic(api_key=key or proxy.master_key, base_url=proxy.url, max_retries=0, timeout=60)


def only_call(standin: StandIn) -> dict[str, Any]:
    [call] = standin.calls()
    return call


def assert_decision_headers(headers: httpx.Headers, adapter: str, served_model_header: bool = True) -> None:
    """The decision headers, and the model that served it. LiteLLM 1.108.7 hands the headers hook no
    model group for non-streaming Anthropic responses; its own `x-litellm-model-group` says it."""
    assert headers["x-lora-router-adapter"] == adapter
    assert headers["x-lora-router-category"] == adapter.removesuffix("-lora")
    assert headers["x-lora-router-method"] == "keyword"
    assert headers["x-vsr-selected-model"] == adapter
    assert headers["x-litellm-model-group"] == adapter
    if served_model_header:
        assert headers["x-lora-router-served-model"] == adapter


# --- Responses API -------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "adapter", "prompt"), CASES)
def test_responses_api_is_routed(proxy: Proxy, standin: StandIn, text: str, adapter: str, prompt: str) -> None:
    standin.clear()
    raw = openai_client(proxy).responses.with_raw_response.create(model="MoM", input=text, instructions="Be brief.")
    response = raw.parse()
    call = only_call(standin)
    assert call["path"] == "/v1/responses"
    assert call["body"]["model"] == adapter and call["body"]["input"] == text
    assert call["body"]["instructions"] == prompt  # replace: where vLLM reads the system prompt
    assert response.output_text.startswith(f"[{adapter}]")
    assert_decision_headers(raw.headers, adapter)


def test_responses_api_streams(proxy: Proxy, standin: StandIn) -> None:
    standin.clear()
    items = [{"role": "user", "content": [{"type": "input_text", "text": MEDICAL}]}]
    with openai_client(proxy).responses.with_streaming_response.create(model="MoM", input=items, stream=True) as raw:
        assert_decision_headers(raw.headers, "medical-lora")
        events = list(raw.parse())
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text.startswith("[medical-lora]") and events[-1].type == "response.completed"
    call = only_call(standin)
    assert call["body"]["model"] == "medical-lora" and call["body"]["stream"] is True
    assert call["body"]["instructions"] == MEDICAL_PROMPT


def test_responses_api_with_routing_off_reaches_the_base_model(proxy: Proxy, standin: StandIn) -> None:
    standin.clear()
    raw = openai_client(proxy, ROUTING_OFF_KEY).responses.with_raw_response.create(model="MoM", input=TECH)
    call = only_call(standin)
    assert call["body"]["model"] == "llama2-7b" and "instructions" not in call["body"]
    assert raw.headers["x-lora-router-fallback"] == "routing_disabled"


# --- text completions ----------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "adapter", "prompt"), CASES)
def test_text_completions_are_routed(proxy: Proxy, standin: StandIn, text: str, adapter: str, prompt: str) -> None:
    standin.clear()
    raw = openai_client(proxy).completions.with_raw_response.create(model="MoM", prompt=text, max_tokens=16)
    completion = raw.parse()
    call = only_call(standin)
    assert call["path"] == "/v1/completions"
    assert call["body"]["model"] == adapter
    assert call["body"]["prompt"] == text  # no chat template: the prompt is sent as it came
    assert completion.choices[0].text.startswith(f"[{adapter}]")
    assert_decision_headers(raw.headers, adapter)


def test_text_completions_stream(proxy: Proxy, standin: StandIn) -> None:
    standin.clear()
    with openai_client(proxy).completions.with_streaming_response.create(
            model="MoM", prompt=[TECH], max_tokens=16, stream=True) as raw:
        assert_decision_headers(raw.headers, "technical-lora")
        text = "".join(chunk.choices[0].text or "" for chunk in raw.parse() if chunk.choices)
    assert text.startswith("[technical-lora]")
    assert only_call(standin)["body"]["model"] == "technical-lora"


def test_text_completions_with_routing_off_reach_the_base_model(proxy: Proxy, standin: StandIn) -> None:
    standin.clear()
    raw = openai_client(proxy, ROUTING_OFF_KEY).completions.with_raw_response.create(model="MoM", prompt=TECH)
    assert only_call(standin)["body"]["model"] == "llama2-7b"
    assert raw.headers["x-lora-router-fallback"] == "routing_disabled"


# --- Anthropic Messages --------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "adapter", "prompt"), CASES)
def test_anthropic_messages_are_routed(proxy: Proxy, standin: StandIn, text: str, adapter: str, prompt: str) -> None:
    standin.clear()
    raw = anthropic_client(proxy).messages.with_raw_response.create(
        model="MoM", max_tokens=64, system="Be brief.", messages=[{"role": "user", "content": text}])
    message = raw.parse()
    call = only_call(standin)
    # LiteLLM sends Anthropic-format requests for hosted_vllm to vLLM's chat completions
    assert call["path"] == "/v1/chat/completions" and call["body"]["model"] == adapter
    assert call["body"]["messages"][0] == {"role": "system", "content": prompt}
    assert message.content[0].text.startswith(f"[{adapter}]")
    assert_decision_headers(httpx.Headers(raw.headers), adapter, served_model_header=False)


def test_anthropic_messages_stream(proxy: Proxy, standin: StandIn) -> None:
    standin.clear()
    with anthropic_client(proxy).messages.with_streaming_response.create(
            model="MoM", max_tokens=64, stream=True, messages=[{"role": "user", "content": MEDICAL}]) as raw:
        assert_decision_headers(httpx.Headers(raw.headers), "medical-lora")
        events = list(raw.parse())
    text = "".join(e.delta.text for e in events if e.type == "content_block_delta" and e.delta.type == "text_delta")
    assert text.startswith("[medical-lora]") and events[-1].type == "message_stop"
    assert only_call(standin)["body"]["model"] == "medical-lora"


def test_anthropic_messages_with_routing_off_reach_the_base_model(proxy: Proxy, standin: StandIn) -> None:
    standin.clear()
    raw = anthropic_client(proxy, ROUTING_OFF_KEY).messages.with_raw_response.create(
        model="MoM", max_tokens=64, messages=[{"role": "user", "content": TECH}])
    body = only_call(standin)["body"]
    assert body["model"] == "llama2-7b" and body["messages"] == [{"role": "user", "content": TECH}]
    assert raw.headers["x-lora-router-fallback"] == "routing_disabled"


def replay(proxy: Proxy, name: str) -> Iterator[str]:
    """Send a Claude Code request as that client does (x-api-key, streaming SSE); yield its lines."""
    body = json.loads((FIXTURES / name).read_text())
    headers = {"x-api-key": proxy.master_key, "anthropic-version": "2023-06-01",
               "anthropic-beta": "claude-code-20250219", "user-agent": "claude-cli/1.0.0 (external, cli)"}
    with httpx.stream("POST", proxy.url + "/v1/messages", json=body, headers=headers, timeout=60) as response:
        assert response.status_code == 200, response.read()
        assert_decision_headers(response.headers, "medical-lora")
        yield from response.iter_lines()


def test_claude_code_first_turn_is_classified_on_the_persons_words(proxy: Proxy, standin: StandIn) -> None:
    """The reminder block is full of technical words; the person asks a medical question."""
    standin.clear()
    lines = list(replay(proxy, "first_turn.json"))
    assert "event: message_stop" in lines
    body = only_call(standin)["body"]
    assert body["model"] == "medical-lora" and body["stream"] is True
    assert body["messages"][0] == {"role": "system", "content": MEDICAL_PROMPT}
    assert [t["function"]["name"] for t in body["tools"]] == ["Bash", "Read"]


def test_claude_code_tool_result_follow_up_stays_on_its_adapter(proxy: Proxy, standin: StandIn) -> None:
    """The last user turn holds only a tool_result (a file of code) and a reminder."""
    standin.clear()
    list(replay(proxy, "tool_result_followup.json"))
    body = only_call(standin)["body"]
    assert body["model"] == "medical-lora"
    assert "tool" in [m["role"] for m in body["messages"]]  # the tool result reached vLLM as a tool message


# --- chat completions: developer messages, bad shapes --------------------------------------------

def test_developer_message_is_replaced_not_doubled(proxy: Proxy, standin: StandIn) -> None:
    """Issue 11, item 15: vLLM must get one system message (LiteLLM turns `developer` into `system`)."""
    standin.clear()
    openai_client(proxy).chat.completions.create(
        model="MoM", messages=[{"role": "developer", "content": "Be brief."}, {"role": "user", "content": TECH}])
    messages = only_call(standin)["body"]["messages"]
    assert messages == [{"role": "system", "content": TECH_PROMPT}, {"role": "user", "content": TECH}]


@pytest.mark.parametrize(("path", "body", "param"), [
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": 42}]}, "messages[0].content"),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": [{"type": "hologram", "data": "x"}]}]},
     "messages[0].content[0].type"),
    ("/v1/responses", {"input": [{"role": "user", "content": 42}]}, "input[0].content"),
])
def test_bad_message_shapes_get_a_400_naming_the_field(proxy: Proxy, standin: StandIn, path: str,
                                                        body: dict[str, Any], param: str) -> None:
    """Issue 11, item 14: fails on the old code (LiteLLM's 500, or routing a broken request)."""
    standin.clear()
    response = httpx.post(proxy.url + path, json={"model": "MoM", **body},
                          headers={"Authorization": f"Bearer {proxy.master_key}"}, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and param in error["message"]
    assert error["type"] == "invalid_request_error"
    assert standin.calls() == []


def test_bad_anthropic_shape_gets_a_400_in_anthropics_format(proxy: Proxy, standin: StandIn) -> None:
    """LiteLLM's /v1/messages answers errors as Anthropic does; the message names the field."""
    standin.clear()
    body = {"model": "MoM", "max_tokens": 8, "messages": [{"role": "user", "content": [{"type": "hologram"}]}]}
    response = httpx.post(proxy.url + "/v1/messages", json=body, headers={"x-api-key": proxy.master_key}, timeout=60)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert "messages[0].content[0].type" in payload["error"]["message"]
    assert standin.calls() == []


# --- APIs that are not routed --------------------------------------------------------------------

def test_embeddings_for_the_auto_model_are_left_alone(proxy: Proxy, standin: StandIn) -> None:
    standin.clear()
    response = httpx.post(proxy.url + "/v1/embeddings", json={"model": "MoM", "input": TECH},
                          headers={"Authorization": f"Bearer {proxy.master_key}"}, timeout=60)
    assert "x-lora-router-adapter" not in response.headers
    assert {c["path"] for c in standin.calls()} == {"/v1/embeddings"}
    assert {c["body"]["model"] for c in standin.calls()} == {"llama2-7b"}  # the MoM deployment, not an adapter
