"""End to end: a real LiteLLM proxy process with the plugin, in front of the vLLM stand-in.

Assertions read what the stand-in received: what vLLM itself would have seen.
"""

from __future__ import annotations

import json

import httpx
import pytest

from .conftest import (
    DIRECT_KEY,
    MALFORMED_KEY,
    MEDICAL_ONLY_KEY,
    MOM_ONLY_KEY,
    NARROWING_KEY,
    OPTED_OUT_KEY,
    ROUTING_OFF_KEY,
    TEAM_OFF_KEY,
    TEAM_OFF_KEY_ON,
    Proxy,
    StandIn,
)

TECH = "Explain async/await in JavaScript"
MEDICAL = "What causes high blood pressure?"


def ask(proxy: Proxy, standin: StandIn, text: str, key: str | None = None, **extra: object) -> tuple[httpx.Response, dict]:
    standin.clear()
    response = proxy.chat({"model": "MoM", "messages": [{"role": "user", "content": text}], **extra}, key=key)
    assert response.status_code == 200, response.text
    [received] = standin.received()
    return response, received


@pytest.mark.parametrize(("text", "adapter", "prompt"), [
    (TECH, "technical-lora", "You are an expert software engineer."),
    (MEDICAL, "medical-lora", "You are a medical expert."),
])
def test_guide_sample_queries_reach_their_adapters(proxy: Proxy, standin: StandIn, text: str, adapter: str, prompt: str) -> None:
    response, received = ask(proxy, standin, text)
    assert received["model"] == adapter
    assert received["messages"] == [{"role": "system", "content": prompt}, {"role": "user", "content": text}]
    assert response.json()["choices"][0]["message"]["content"].startswith(f"[{adapter}]")
    assert response.headers["x-lora-router-adapter"] == adapter
    assert response.headers["x-lora-router-method"] == "keyword"
    assert response.headers["x-lora-router-category"] == adapter.removesuffix("-lora")
    assert float(response.headers["x-lora-router-confidence"]) == 1.0
    assert response.headers["x-vsr-selected-model"] == adapter
    assert response.headers["x-vsr-selected-category"] == adapter.removesuffix("-lora")
    assert response.headers["x-vsr-selected-reasoning"] == "on"
    assert "x-lora-router-fallback" not in response.headers


def test_other_models_pass_untouched(proxy: Proxy, standin: StandIn) -> None:
    standin.clear()
    body = {"model": "legal-lora", "messages": [{"role": "user", "content": TECH}]}
    response = proxy.chat(body)
    assert response.status_code == 200
    [received] = standin.received()
    assert received["model"] == "legal-lora"
    assert received["messages"] == body["messages"]
    assert "x-lora-router-adapter" not in response.headers


def test_no_keyword_goes_to_the_domain_classifier(proxy: Proxy, standin: StandIn) -> None:
    response, received = ask(proxy, standin, "Tell me a fun fact about octopuses")
    assert received["model"] == "llama2-7b"  # general: the base model, with its system prompt
    assert received["messages"][0] == {"role": "system", "content": "You are a helpful assistant."}
    assert response.headers["x-lora-router-method"] == "domain"
    assert response.headers["x-lora-router-category"] == "general"
    assert float(response.headers["x-lora-router-confidence"]) >= 0.6


def test_streaming_is_routed_and_carries_headers(proxy: Proxy, standin: StandIn) -> None:
    standin.clear()
    body = {"model": "MoM", "stream": True, "messages": [{"role": "user", "content": MEDICAL}]}
    with httpx.stream("POST", proxy.url + "/v1/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {proxy.master_key}"}, timeout=60) as response:
        assert response.status_code == 200
        assert response.headers["x-lora-router-adapter"] == "medical-lora"
        assert response.headers["x-lora-router-category"] == "medical"
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    text = "".join(
        (json.loads(e[6:])["choices"] or [{}])[0].get("delta", {}).get("content") or "" for e in events[:-1]
    )
    assert text.startswith("[medical-lora]")
    [received] = standin.received()
    assert received["model"] == "medical-lora" and received["stream"] is True


def test_existing_system_message_is_replaced_in_place(proxy: Proxy, standin: StandIn) -> None:
    standin.clear()
    messages = [
        {"role": "user", "content": "hi"},
        {"role": "system", "content": [{"type": "text", "text": "Be brief."}]},
        {"role": "user", "content": [{"type": "text", "text": TECH}, {"type": "image_url", "image_url": {"url": "data:,"}}]},
    ]
    response = proxy.chat({"model": "MoM", "messages": messages})
    assert response.status_code == 200, response.text
    [received] = standin.received()
    assert received["model"] == "technical-lora"
    assert [m["role"] for m in received["messages"]] == ["user", "system", "user"]
    assert received["messages"][1]["content"] == "You are an expert software engineer."


def test_key_allowed_only_mom_is_routed(proxy: Proxy, standin: StandIn) -> None:
    response, received = ask(proxy, standin, TECH, key=MOM_ONLY_KEY)
    assert received["model"] == "technical-lora"
    assert response.headers["x-lora-router-adapter"] == "technical-lora"


def test_key_metadata_switches_routing_off(proxy: Proxy, standin: StandIn) -> None:
    response, received = ask(proxy, standin, TECH, key=ROUTING_OFF_KEY)
    assert received["model"] == "llama2-7b"  # the MoM deployment: the base model
    assert received["messages"] == [{"role": "user", "content": TECH}]
    assert response.headers["x-lora-router-fallback"] == "routing_disabled"
    assert response.headers["x-lora-router-adapter"] == "MoM"


def test_team_off_cannot_be_switched_back_on_by_a_key(proxy: Proxy, standin: StandIn) -> None:
    _, received = ask(proxy, standin, TECH, key=TEAM_OFF_KEY)
    assert received["model"] == "llama2-7b"
    response, received = ask(proxy, standin, TECH, key=TEAM_OFF_KEY_ON)  # team off, key `enabled: true`
    assert received["model"] == "llama2-7b"
    assert response.headers["x-lora-router-fallback"] == "routing_disabled"


def test_key_cannot_widen_its_teams_adapters(proxy: Proxy, standin: StandIn) -> None:
    response, received = ask(proxy, standin, TECH, key=NARROWING_KEY)
    assert received["model"] == "llama2-7b"
    assert response.headers["x-lora-router-fallback"] == "adapter_not_allowed"
    _, received = ask(proxy, standin, MEDICAL, key=NARROWING_KEY)
    assert received["model"] == "medical-lora"


def test_malformed_key_metadata_fails_closed_with_a_warning(proxy: Proxy, standin: StandIn) -> None:
    response, received = ask(proxy, standin, TECH, key=MALFORMED_KEY)
    assert received["model"] == "llama2-7b"
    assert response.headers["x-lora-router-fallback"] == "adapter_not_allowed"
    log = proxy.service.log()
    warnings = [line for line in log.splitlines() if "malformed metadata" in line]
    expected = "key 'malformed-key': lora_router.allowed_adapters: expected a list"
    assert any(expected in line for line in warnings), log[-3000:]
    assert "secret-tier-value" not in log


def test_direct_adapter_calls_are_held_to_allowed_adapters(proxy: Proxy, standin: StandIn) -> None:
    standin.clear()
    refused = proxy.chat({"model": "technical-lora", "messages": [{"role": "user", "content": TECH}]}, key=DIRECT_KEY)
    assert refused.status_code == 403, refused.text
    error = refused.json()["error"]
    assert error["code"] == "403" and error["param"] == "model" and error["type"] == "key_model_access_denied"
    assert "technical-lora" in error["message"] and "allowed_adapters" in error["message"]
    assert standin.received() == []
    for model in ("medical-lora", "llama2-7b"):  # an allowed adapter, and the base model
        allowed = proxy.chat({"model": model, "messages": [{"role": "user", "content": TECH}]}, key=DIRECT_KEY)
        assert allowed.status_code == 200, allowed.text
    routed = proxy.chat({"model": "MoM", "messages": [{"role": "user", "content": MEDICAL}]}, key=DIRECT_KEY)
    assert routed.headers["x-lora-router-adapter"] == "medical-lora"


@pytest.mark.parametrize("model", ["legal-lora", "MoM"])
def test_client_cannot_forge_response_headers(proxy: Proxy, model: str) -> None:
    forged = {"access-control-allow-origin": "https://evil.example", "x-lora-router-adapter": "forged-lora"}
    body = {"model": model, "messages": [{"role": "user", "content": MEDICAL}],
            "metadata": {"lora_router_headers": forged}}
    response = proxy.chat(body)
    assert response.status_code == 200, response.text
    assert "access-control-allow-origin" not in response.headers
    assert response.headers.get("x-lora-router-adapter") != "forged-lora"
    if model == "MoM":
        assert response.headers["x-lora-router-adapter"] == "medical-lora"
    else:
        assert "x-lora-router-adapter" not in response.headers


def test_allowed_adapters_keep_a_tenant_inside_its_list(proxy: Proxy, standin: StandIn) -> None:
    response, received = ask(proxy, standin, MEDICAL, key=MEDICAL_ONLY_KEY)
    assert received["model"] == "medical-lora"
    response, received = ask(proxy, standin, TECH, key=MEDICAL_ONLY_KEY)
    assert received["model"] == "llama2-7b"
    assert response.headers["x-lora-router-fallback"] == "adapter_not_allowed"


def test_guardrail_opt_out_in_key_metadata(proxy: Proxy, standin: StandIn) -> None:
    """`opted_out_global_guardrails: [lora-router]`, LiteLLM's own switch, also turns routing off."""
    _, received = ask(proxy, standin, TECH, key=OPTED_OUT_KEY)
    assert received["model"] == "llama2-7b"


def test_unknown_adapter_gets_vllms_404(standin: StandIn) -> None:
    response = httpx.post(standin.api_base + "/chat/completions", json={"model": "nope-lora", "messages": []})
    assert response.status_code == 404
    assert response.json()["error"] == {
        "message": "The model `nope-lora` does not exist.", "type": "NotFoundError", "param": "model", "code": 404,
    }


def test_routing_metadata_never_reaches_vllm(proxy: Proxy, standin: StandIn) -> None:
    """Spend-log fields and tags stay in LiteLLM (see test_proxy_variants); vLLM gets none of them."""
    _, received = ask(proxy, standin, TECH)
    assert "metadata" not in received and "spend_logs_metadata" not in json.dumps(received)


def test_standin_lists_adapters_and_loads_them_at_run_time(standin: StandIn) -> None:
    cards = {c["id"]: c for c in httpx.get(standin.api_base + "/models").json()["data"]}
    assert cards["llama2-7b"]["parent"] is None
    assert cards["technical-lora"]["parent"] == "llama2-7b" and cards["technical-lora"]["root"] == "/adapters/technical-lora"
    load = httpx.post(standin.api_base + "/load_lora_adapter", json={"lora_name": "new-lora", "lora_path": "/a/new"})
    assert load.status_code == 200 and load.text == "Success: LoRA adapter 'new-lora' added successfully."
    again = httpx.post(standin.api_base + "/load_lora_adapter", json={"lora_name": "new-lora", "lora_path": "/a/new"})
    assert again.status_code == 400
    assert again.json()["error"]["message"] == "The lora adapter 'new-lora' has already been loaded."
    chat = httpx.post(standin.api_base + "/chat/completions", json={"model": "new-lora", "messages": []})
    assert chat.status_code == 200
    unload = httpx.post(standin.api_base + "/unload_lora_adapter", json={"lora_name": "new-lora"})
    assert unload.status_code == 200
    missing = httpx.post(standin.api_base + "/unload_lora_adapter", json={"lora_name": "new-lora"})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "NotFoundError"
