"""The LiteLLM hook in process: which call types are routed, where the decision is written, which
headers clients get. The request bodies are the shapes LiteLLM 1.108.7's proxy passes to
`async_pre_call_hook` (recorded through a real proxy; see README, "APIs")."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from litellm.proxy._types import ProxyException, UserAPIKeyAuth

from litellm_lora_router.classifiers import KeywordClassifier
from litellm_lora_router.config import parse_config
from litellm_lora_router.litellm_adapter import CALL_TYPE_FORMATS, LoraRouterHook
from litellm_lora_router.router import LoraRouter

from .test_decision_rewrite import QWEN

CHAT = {"model": "MoM", "messages": [{"role": "user", "content": "python decorators?"}], "metadata": {"tags": ["mine"]}}
RESPONSES = {"model": "MoM", "input": "python decorators?", "litellm_metadata": {"tags": ["mine"]}}
ANTHROPIC = {"model": "MoM", "max_tokens": 8, "messages": [{"role": "user", "content": "python decorators?"}],
             "metadata": {"user_id": "user_abc"}, "litellm_metadata": {"requester_metadata": {"user_id": "user_abc"}}}
COMPLETION = {"model": "MoM", "prompt": "python decorators?", "metadata": {}}
BODIES = {"chat": CHAT, "responses": RESPONSES, "anthropic": ANTHROPIC, "completion": COMPLETION}


def hook(**options: Any) -> LoraRouterHook:
    config = parse_config({**copy.deepcopy(QWEN), "lora_router": options})
    return LoraRouterHook(router=LoraRouter(config, [KeywordClassifier(config.keyword_rules)]))


async def pre_call(target: LoraRouterHook, body: dict[str, Any], call_type: str) -> dict[str, Any] | None:
    return await target.async_pre_call_hook(UserAPIKeyAuth(), None, copy.deepcopy(body), call_type)


@pytest.mark.parametrize("call_type", sorted(CALL_TYPE_FORMATS))
async def test_every_prompt_call_type_is_routed_sync_and_async(call_type: str) -> None:
    """Fails on the old code for all but `completion`/`acompletion`."""
    body = BODIES[CALL_TYPE_FORMATS[call_type]]
    routed = await pre_call(hook(), body, call_type)
    assert routed is not None and routed["model"] == "code-lora"


@pytest.mark.parametrize("call_type", [
    "embedding", "aembedding", "aimage_generation", "aimage_edit", "atranscription", "aspeech", "arerank",
    "acreate_batch", "aretrieve_batch", "acreate_file", "afile_content", "amoderation", "_aresponses_websocket",
    "aget_responses", "adelete_responses", "pass_through_endpoint",
])
async def test_other_call_types_leave_the_auto_model_alone(call_type: str) -> None:
    body = {"model": "MoM", "input": "python decorators?", "messages": CHAT["messages"], "metadata": {}}
    assert await pre_call(hook(), body, call_type) is None


async def test_decision_goes_to_litellm_metadata_and_the_callers_metadata_is_left_alone() -> None:
    """On /v1/messages and /v1/responses `metadata` is the caller's and is sent on to the model."""
    routed = await pre_call(hook(), ANTHROPIC, "anthropic_messages")
    assert routed is not None
    assert routed["metadata"] == {"user_id": "user_abc"}
    assert routed["litellm_metadata"]["spend_logs_metadata"]["lora_router_adapter"] == "code-lora"
    assert routed["litellm_metadata"]["requester_metadata"] == {"user_id": "user_abc"}


async def test_decision_tags_are_opt_in_and_callers_tags_are_kept() -> None:
    """Fails on the old code, which always added `lora:*` tags (LiteLLM's tag filtering then refuses)."""
    routed = await pre_call(hook(), CHAT, "acompletion")
    assert routed is not None and routed["metadata"]["tags"] == ["mine"]
    tagged = await pre_call(hook(decision_tags=True), RESPONSES, "aresponses")
    assert tagged is not None and tagged["litellm_metadata"]["tags"][0] == "mine"
    assert "lora:code-lora" in tagged["litellm_metadata"]["tags"]


@pytest.mark.parametrize(("level", "expected"), [
    ("all", {"x-lora-router-adapter", "x-lora-router-category", "x-lora-router-method", "x-lora-router-confidence",
             "x-lora-router-time-ms", "x-vsr-selected-model", "x-vsr-selected-category", "x-vsr-selected-reasoning"}),
    ("minimal", {"x-lora-router-category", "x-vsr-selected-category", "x-vsr-selected-reasoning"}),
    ("none", set()),
])
async def test_header_levels_leave_spend_logs_whole(level: str, expected: set[str]) -> None:
    target = hook(response_headers=level)
    routed = await pre_call(target, CHAT, "acompletion")
    assert routed is not None
    headers = await target.async_post_call_response_headers_hook(routed, UserAPIKeyAuth(), response=None)
    assert set(headers or {}) == expected
    spend = routed["metadata"]["spend_logs_metadata"]
    assert spend["lora_router_adapter"] == "code-lora" and spend["lora_router_method"] == "keyword"


async def test_served_model_header_follows_litellms_model_group() -> None:
    target = hook()
    routed = await pre_call(target, CHAT, "acompletion")

    class Response:
        _hidden_params = {"additional_headers": {"x-litellm-model-group": "qwen3-8b"}}

    headers = await target.async_post_call_response_headers_hook(routed or {}, UserAPIKeyAuth(), response=Response())
    assert headers is not None
    assert headers["x-lora-router-adapter"] == "code-lora" and headers["x-lora-router-served-model"] == "qwen3-8b"


async def test_client_cannot_write_the_plugins_headers_fields_or_tags() -> None:
    """A client's `lora_router_headers`, `lora_router_*` spend-log fields and (when the plugin writes
    tags) `lora:*` tags are dropped, on routed requests and others alike."""
    forged = {"lora_router_headers": {"access-control-allow-origin": "https://evil.example"},
              "spend_logs_metadata": {"lora_router_adapter": "forged-lora", "team": "kept"},
              "tags": ["lora:forged-lora", "mine"]}
    target = hook(decision_tags=True)
    for body, call_type in ((RESPONSES, "aresponses"), ({"model": "qwen3-8b", "input": "hi"}, "aresponses"),
                            ({"model": "MoM", "input": [0.1]}, "aembedding")):
        data = {**copy.deepcopy(body), "litellm_metadata": copy.deepcopy(forged)}
        routed = await target.async_pre_call_hook(UserAPIKeyAuth(), None, data, call_type) or data
        metadata = routed["litellm_metadata"]
        assert "forged-lora" not in str(metadata) and metadata["spend_logs_metadata"]["team"] == "kept"
        assert "mine" in metadata["tags"]
        headers = await target.async_post_call_response_headers_hook(routed, UserAPIKeyAuth(), response=None)
        assert "access-control-allow-origin" not in (headers or {})


@pytest.mark.parametrize("model", ["code-lora,math-lora", " code-lora", ["code-lora"], ["math-lora, code-lora"]])
async def test_adapter_in_a_model_list_is_held_to_allowed_adapters(model: Any) -> None:
    """LiteLLM reads `model` as a comma-separated list (batch completions) and takes lists of names:
    every adapter named in it is checked. Fails on the old code, which matched the whole value."""
    auth = UserAPIKeyAuth(metadata={"lora_router": {"allowed_adapters": ["math-lora"]}})
    body = {"model": model, "messages": CHAT["messages"], "metadata": {}}
    with pytest.raises(ProxyException) as refused:
        await hook().async_pre_call_hook(auth, None, body, "acompletion")
    assert refused.value.code == "403" and "code-lora" in refused.value.message
    allowed = {"model": "math-lora, qwen3-8b", "messages": CHAT["messages"], "metadata": {}}
    assert await hook().async_pre_call_hook(auth, None, allowed, "acompletion") is None
