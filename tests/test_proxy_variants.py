"""The proxy with other configs: reasoning families, guardrail mode, audit log, broken config."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from litellm_lora_router.classifiers.base import Classifier
from litellm_lora_router.processes import free_port, proxy_env, start_standin

from .conftest import DEFAULT_LITELLM_CONFIG, DEFAULT_ROUTER_CONFIG, Proxy, StandIn, launch_proxy, new_master_key
from .test_decision_rewrite import QWEN


def hosted(name: str, api_base: str) -> dict[str, object]:
    return {"model_name": name, "litellm_params": {"model": f"hosted_vllm/{name}", "api_base": api_base}}


@pytest.fixture(scope="module")
def reasoning_setup(tmp_path_factory: pytest.TempPathFactory, logs_dir: Path) -> Iterator[tuple[Proxy, StandIn, StandIn]]:
    """Two vLLM servers: a qwen3 base (chat_template_kwargs) and a gpt-oss base (reasoning_effort)."""
    qwen = StandIn(start_standin(logs_dir, "qwen3-8b", ["code-lora", "math-lora"]))
    oss = StandIn(start_standin(logs_dir, "gpt-oss-20b", ["law-lora"]))
    tmp = tmp_path_factory.mktemp("reasoning")
    raw = json.loads(json.dumps(QWEN))
    raw["categories"][1]["model_scores"][0]["reasoning_effort"] = "medium"
    raw["keyword_rules"].append({"category": "chat", "keywords": ["hello"]})  # chat: qwen3-8b, use_reasoning false
    (tmp / "router.yaml").write_text(yaml.safe_dump(raw))
    litellm_config = {
        "model_list": [
            {**hosted("qwen3-8b", qwen.api_base), "model_name": "MoM"},
            hosted("qwen3-8b", qwen.api_base), hosted("code-lora", qwen.api_base), hosted("math-lora", qwen.api_base),
            hosted("gpt-oss-20b", oss.api_base), hosted("law-lora", oss.api_base),
        ],
        "litellm_settings": {"callbacks": "litellm_lora_router.proxy_handler_instance"},
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    (tmp / "litellm.yaml").write_text(yaml.safe_dump(litellm_config))
    proxy = launch_proxy(qwen, logs_dir, router_config=tmp / "router.yaml", litellm_config=tmp / "litellm.yaml")
    yield proxy, qwen, oss
    for service in (proxy.service, qwen.service, oss.service):
        service.stop()


def chat_received(
    proxy: Proxy, server: StandIn, text: str, model: str = "MoM", **extra: object
) -> tuple[httpx.Response, dict[str, Any]]:
    """Send one chat request; return the response and the one request `server` (vLLM) received."""
    server.clear()
    response = proxy.chat({"model": model, "messages": [{"role": "user", "content": text}], **extra})
    assert response.status_code == 200, response.text
    [received] = server.received()
    return response, received


def test_chat_template_kwargs_reach_vllm_merged(reasoning_setup: tuple[Proxy, StandIn, StandIn]) -> None:
    proxy, qwen, _ = reasoning_setup
    response, received = chat_received(proxy, qwen, "python decorators?", chat_template_kwargs={"custom": "kept"})
    assert received["model"] == "code-lora"
    assert received["chat_template_kwargs"] == {"custom": "kept", "enable_thinking": True}
    assert received["messages"][0] == {"role": "system", "content": "You code."}
    assert response.headers["x-vsr-selected-reasoning"] == "on"


def test_reasoning_off_is_sent_as_false(reasoning_setup: tuple[Proxy, StandIn, StandIn]) -> None:
    proxy, qwen, _ = reasoning_setup
    response, received = chat_received(proxy, qwen, "hello there", model="auto")
    assert received["model"] == "qwen3-8b" and response.headers["x-lora-router-category"] == "chat"
    assert received["chat_template_kwargs"] == {"enable_thinking": False}  # sent, and false: qwen3 thinks by default
    assert response.headers["x-vsr-selected-reasoning"] == "off"


def test_fallback_sends_no_reasoning_fields(reasoning_setup: tuple[Proxy, StandIn, StandIn]) -> None:
    proxy, qwen, _ = reasoning_setup
    response, received = chat_received(proxy, qwen, "good morning", model="auto")
    assert received["model"] == "qwen3-8b" and "chat_template_kwargs" not in received
    assert "reasoning_effort" not in received and "reasoning" not in received
    assert response.headers["x-lora-router-fallback"] == "no_match"
    assert response.headers["x-vsr-selected-reasoning"] == "off"


def test_reasoning_effort_reaches_vllm(reasoning_setup: tuple[Proxy, StandIn, StandIn]) -> None:
    proxy, _, oss = reasoning_setup
    _, received = chat_received(proxy, oss, "is this contract valid?")
    assert received["model"] == "law-lora"
    assert received["reasoning_effort"] == "medium"


def test_callers_explicit_thinking_flag_reaches_vllm(reasoning_setup: tuple[Proxy, StandIn, StandIn]) -> None:
    """Issue 11, item 16: fails on the old code, which overwrote it with the category's value."""
    proxy, qwen, _ = reasoning_setup
    _, received = chat_received(proxy, qwen, "python decorators?", chat_template_kwargs={"enable_thinking": False})
    assert received["model"] == "code-lora" and received["chat_template_kwargs"] == {"enable_thinking": False}


def post(proxy: Proxy, path: str, body: dict[str, object]) -> None:
    response = httpx.post(proxy.url + path, json=body, headers={"Authorization": f"Bearer {proxy.master_key}"},
                          timeout=60)
    assert response.status_code == 200, response.text


def test_reasoning_reaches_vllm_through_the_responses_api(reasoning_setup: tuple[Proxy, StandIn, StandIn]) -> None:
    """LiteLLM drops a top-level `chat_template_kwargs` on /v1/responses; `extra_body` gets through."""
    proxy, qwen, oss = reasoning_setup
    qwen.clear()
    oss.clear()
    post(proxy, "/v1/responses", {"model": "MoM", "input": "python decorators?"})
    post(proxy, "/v1/responses", {"model": "MoM", "input": "is this contract valid?"})
    [code] = qwen.received()
    assert code["model"] == "code-lora" and code["chat_template_kwargs"] == {"enable_thinking": True}
    assert code["instructions"] == "You code."
    [law] = oss.received()
    assert law["model"] == "law-lora" and law["reasoning"] == {"effort": "medium"}


def test_reasoning_reaches_vllm_through_anthropic_messages(reasoning_setup: tuple[Proxy, StandIn, StandIn]) -> None:
    proxy, qwen, oss = reasoning_setup
    qwen.clear()
    oss.clear()
    post(proxy, "/v1/messages", {"model": "MoM", "max_tokens": 8,
                                 "messages": [{"role": "user", "content": "python decorators?"}]})
    post(proxy, "/v1/messages", {"model": "MoM", "max_tokens": 8,
                                 "messages": [{"role": "user", "content": "is this contract valid?"}]})
    [code] = qwen.received()
    assert code["model"] == "code-lora" and code["chat_template_kwargs"] == {"enable_thinking": True}
    assert code["messages"][0] == {"role": "system", "content": "You code."}
    [law] = oss.received()
    assert law["model"] == "law-lora" and law["reasoning_effort"] == "medium"


@pytest.fixture(scope="module")
def guardrail_proxy(standin: StandIn, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """The same class configured as a `guardrails:` entry with a router_config_path parameter."""
    raw = yaml.safe_load(DEFAULT_LITELLM_CONFIG.read_text())
    del raw["litellm_settings"]
    raw["guardrails"] = [{
        "guardrail_name": "lora-router",
        "litellm_params": {
            "guardrail": "litellm_lora_router.litellm_adapter.LoraRouterHook",
            "mode": "pre_call",
            "default_on": True,
            "router_config_path": str(DEFAULT_ROUTER_CONFIG),
        },
    }]
    path = tmp_path_factory.mktemp("guardrail") / "litellm.yaml"
    path.write_text(yaml.safe_dump(raw))
    proxy = launch_proxy(standin, logs_dir, router_config=Path("/nonexistent.yaml"), litellm_config=path)
    yield proxy
    proxy.service.stop()


def test_guardrail_mode_routes(guardrail_proxy: Proxy, standin: StandIn) -> None:
    standin.clear()
    response = guardrail_proxy.chat({"model": "MoM", "messages": [{"role": "user", "content": "What causes high blood pressure?"}]})
    assert response.status_code == 200, response.text
    assert standin.received()[0]["model"] == "medical-lora"
    assert response.headers["x-lora-router-adapter"] == "medical-lora"


def test_audit_line_is_json_without_prompt(proxy: Proxy, standin: StandIn) -> None:
    secret = "Explain async/await in JavaScript for project zebra-7731"
    assert proxy.chat({"model": "MoM", "messages": [{"role": "user", "content": secret}]}).status_code == 200
    lines = [json.loads(line) for line in proxy.service.log().splitlines() if line.startswith('{"adapter"')]
    assert lines, proxy.service.log()[-2000:]
    last = lines[-1]
    assert last["event"] == "lora_route" and last["adapter"] == "technical-lora" and last["method"] == "keyword"
    assert "javascript" in last["matched_keywords"] and last["time_ms"] >= 0
    assert "zebra-7731" not in proxy.service.log()


def test_broken_router_config_fails_startup_with_clear_message(tmp_path: Path) -> None:
    bad = tmp_path / "router_config.yaml"
    bad.write_text(DEFAULT_ROUTER_CONFIG.read_text().replace('lora_name: "technical-lora"', 'lora_name: "tech-lora"'))
    env = proxy_env(bad, "http://127.0.0.1:9/v1", new_master_key())
    litellm_cli = str(Path(sys.executable).parent / "litellm")
    result = subprocess.run(
        [litellm_cli, "--config", str(DEFAULT_LITELLM_CONFIG), "--host", "127.0.0.1", "--port", str(free_port())],
        env={**__import__("os").environ, **env}, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode != 0
    assert (f"{bad}: categories[0].model_scores[0].lora_name: expected an adapter listed under "
            "model_config.llama2-7b.loras, got 'tech-lora'") in result.stdout + result.stderr


def test_decision_reaches_the_spend_log_payload(standin: StandIn, logs_dir: Path, tmp_path: Path) -> None:
    """LiteLLM's standard logging payload (what spend logs and the UI's Logs page store)."""
    raw = yaml.safe_load(DEFAULT_LITELLM_CONFIG.read_text())
    raw["litellm_settings"]["callbacks"] = [
        "litellm_lora_router.proxy_handler_instance", "tests.support.spend_recorder.spend_recorder",
    ]
    config = tmp_path / "litellm.yaml"
    config.write_text(yaml.safe_dump(raw))
    record_file = tmp_path / "spend.jsonl"
    proxy = launch_proxy(standin, logs_dir, litellm_config=config, extra_env={"SPEND_RECORD_FILE": str(record_file)})
    try:
        body = {"model": "MoM", "messages": [{"role": "user", "content": "What causes high blood pressure?"}]}
        assert proxy.chat(body).status_code == 200
        # a client writing the plugin's own spend-log fields, on a request the plugin does not route
        forged = {"model": "legal-lora", "messages": [{"role": "user", "content": "hi"}],
                  "metadata": {"spend_logs_metadata": {"lora_router_adapter": "forged-lora", "team": "kept"},
                               "tags": ["mine"]}}
        assert proxy.chat(forged).status_code == 200
        deadline = time.monotonic() + 15

        def recorded() -> int:
            return len(record_file.read_text().splitlines()) if record_file.exists() else 0

        while time.monotonic() < deadline and recorded() < 2:
            time.sleep(0.2)
        records = [json.loads(line) for line in record_file.read_text().splitlines()]
        [record] = [r for r in records if r["model_group"] == "medical-lora"]
        [other] = [r for r in records if r["model_group"] == "legal-lora"]
    finally:
        proxy.service.stop()
    assert other["spend_logs_metadata"] == {"team": "kept"}  # the client's own fields stay, the plugin's go
    assert "mine" in other["request_tags"]
    assert record["model_group"] == "medical-lora"
    metadata = record["spend_logs_metadata"]
    assert metadata["lora_router_adapter"] == "medical-lora" and metadata["lora_router_category"] == "medical"
    assert metadata["lora_router_method"] == "keyword" and metadata["lora_router_fallback"] is None
    # no `lora:*` tags unless `decision_tags: true`: tags take part in LiteLLM's tag filtering
    assert not [t for t in record["request_tags"] or [] if t.startswith("lora")]


def test_router_is_closed_when_the_proxy_event_loop_shuts_down() -> None:
    """uvicorn serves the proxy inside `asyncio.run`, which cancels what is left when it stops."""
    import asyncio

    from litellm_lora_router import LoraRouter, parse_config
    from litellm_lora_router.litellm_adapter import LoraRouterHook

    events: list[str] = []

    class Server(Classifier):
        method = "mcp"

        async def connect(self) -> None:
            events.append("connected")

        async def classify(self, texts: object, caller: object = None, contexts: object = None) -> list[object]:
            return []

        async def aclose(self) -> None:
            events.append("closed")

    router = LoraRouter(parse_config(yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text())), [Server()])

    async def serve() -> None:
        LoraRouterHook(router=router)
        await asyncio.sleep(0.1)

    asyncio.run(serve())
    assert events == ["connected", "closed"]
