"""Adapter-aware routing against the vLLM stand-in: missing, loaded on demand, server down.

vLLM never gets a request for an adapter it does not serve: every test checks what it received.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from litellm_lora_router import RouterConfig, parse_config
from litellm_lora_router.adapters import AdapterRegistry, VllmServer
from litellm_lora_router.processes import free_port, start_standin

from .conftest import DEFAULT_ROUTER_CONFIG, Proxy, StandIn, launch_proxy
from .support.answering_server import AnsweringServer

LOAD_LATENCY_S = 0.5
EXTRA = {  # adapter -> (category keyword, path vLLM loads it from or None)
    "research-lora": ("research", "/adapters/research"),
    "finance-lora": ("stock", None),
    "ocean-lora": ("ocean", "/adapters/ocean"),
    "slow-lora": ("slowly", "/adapters/slow"),
    "batch-lora": ("batch", "/adapters/batch"),
}


def adapter_config(**options: Any) -> dict[str, Any]:
    """The guide's config (keyword rules only) plus one category per adapter of EXTRA."""
    raw: dict[str, Any] = yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text())
    del raw["classifier"]
    for name, (keyword, path) in EXTRA.items():
        raw["model_config"]["llama2-7b"]["loras"].append({"name": name, **({"path": path} if path else {})})
        category = name.removesuffix("-lora")
        raw["categories"].append({"name": category, "system_prompt": f"You know {category}.",
                                  "model_scores": [{"model": "llama2-7b", "lora_name": name, "score": 1.0}]})
        raw["keyword_rules"].insert(0, {"category": category, "keywords": [keyword]})
    raw["lora_router"] = {"load_missing_adapters": True, **options}
    return raw


@pytest.fixture(scope="module")
def vllm(logs_dir: Path) -> Iterator[StandIn]:
    """A vLLM stand-in whose runtime loads take LOAD_LATENCY_S."""
    service = start_standin(logs_dir, extra_args=["--load-latency", str(LOAD_LATENCY_S)])
    yield StandIn(service)
    service.stop()


def lora_calls(vllm: StandIn, name: str) -> list[dict[str, Any]]:
    calls = httpx.get(vllm.service.url + "/_devserver/lora_requests").json()
    return [c for c in calls if c.get("lora_name") == name]


def served(vllm: StandIn) -> set[str]:
    return {card["id"] for card in httpx.get(vllm.api_base + "/models").json()["data"]}


def registry(config: RouterConfig, servers: dict[str, list[VllmServer]]) -> AdapterRegistry:
    return AdapterRegistry(config, lambda: servers)


async def test_a_lone_load_slower_than_the_budget_falls_back_then_serves(vllm: StandIn) -> None:
    config = parse_config(adapter_config(adapter_load_timeout_seconds=0.1))
    server = VllmServer(vllm.api_base)
    adapters = registry(config, {"slow-lora": [server], "technical-lora": [server]})
    try:
        await adapters.refresh()
        assert await adapters.ensure("technical-lora") is None
        assert await adapters.ensure("slow-lora") == "adapter_not_loaded"  # still loading
        deadline = time.monotonic() + 30  # the stand-in is a real process: on a busy host the load takes longer
        while (reason := await adapters.ensure("slow-lora")) is not None and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert reason is None
        assert len(lora_calls(vllm, "slow-lora")) == 1 and "slow-lora" in served(vllm)
    finally:
        await adapters.aclose()


async def test_concurrent_requests_share_one_load(vllm: StandIn) -> None:
    config = parse_config(adapter_config())
    adapters = registry(config, {"batch-lora": [VllmServer(vllm.api_base)]})
    try:
        results = await asyncio.gather(*(adapters.ensure("batch-lora") for _ in range(8)))
        assert results == [None] * 8
        assert [c["action"] for c in lora_calls(vllm, "batch-lora")] == ["load"]
    finally:
        await adapters.aclose()


async def test_without_a_path_or_permission_nothing_is_loaded(vllm: StandIn) -> None:
    server = VllmServer(vllm.api_base)
    off = parse_config(adapter_config(load_missing_adapters=False))
    for config, name in ((off, "research-lora"), (parse_config(adapter_config()), "finance-lora")):
        adapters = registry(config, {name: [server]})
        try:
            assert await adapters.ensure(name) == "adapter_not_loaded"
            assert adapters.missing() == {name: [server]}
        finally:
            await adapters.aclose()
    assert not lora_calls(vllm, "research-lora") and not lora_calls(vllm, "finance-lora")


async def test_a_slow_server_is_not_taken_for_a_down_one() -> None:
    """A server that accepts but does not answer in time (an overloaded vLLM) leaves decisions alone;
    only a refused connection says it is down."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(8)  # connections complete in the backlog; nothing ever answers
        slow = VllmServer(f"http://127.0.0.1:{listening.getsockname()[1]}/v1")
        down = VllmServer(f"http://127.0.0.1:{free_port()}/v1")
        config = parse_config(adapter_config(adapter_probe_timeout_seconds=0.2))
        adapters = registry(config, {"research-lora": [slow], "ocean-lora": [down]})
        try:
            await adapters.refresh()
            assert adapters.states[slow.api_base].error == "ReadTimeout" and not adapters.states[slow.api_base].conclusive
            assert await adapters.ensure("research-lora") is None
            assert await adapters.ensure("ocean-lora") == "adapter_server_down"
        finally:
            await adapters.aclose()



async def test_a_connect_timed_out_by_a_busy_event_loop_is_not_a_down_server() -> None:
    """A worker starting up blocks its event loop for seconds (imports, models); a probe whose
    connect was under way meanwhile times out although the server accepted at once. That says
    nothing about the server: the decision is left alone (it used to be `adapter_server_down`)."""
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(64)
        up = VllmServer(f"http://127.0.0.1:{listening.getsockname()[1]}/v1")
        config = parse_config(adapter_config(adapter_probe_timeout_seconds=0.1))
        for steps in range(16):  # how far the probe gets before the loop blocks: into its connect
            adapters = registry(config, {"research-lora": [up]})
            try:
                probing = asyncio.create_task(adapters.refresh())
                for _ in range(steps):
                    await asyncio.sleep(0)
                time.sleep(0.3)  # the loop is busy past the probe timeout
                await probing
                state = adapters.states[up.api_base]
                if state.error == "ConnectTimeout":
                    assert not state.conclusive, state
                    assert await adapters.ensure("research-lora") is None
                    return
            finally:
                await adapters.aclose()
        pytest.fail("no probe was caught connecting")

# --- through a running proxy --------------------------------------------------------------------


@pytest.fixture(scope="module")
def adapter_setup(vllm: StandIn, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, Path, Path]]:
    """LiteLLM sends every adapter to the stand-in, except ocean-lora: to a server that is down."""
    tmp = tmp_path_factory.mktemp("adapters")
    (tmp / "router.yaml").write_text(yaml.safe_dump(adapter_config()))
    down = f"http://127.0.0.1:{free_port()}/v1"
    names = ["MoM", "llama2-7b", "technical-lora", "medical-lora", "legal-lora", *EXTRA]
    model_list = [{"model_name": name, "litellm_params": {
        "model": f"hosted_vllm/{'llama2-7b' if name == 'MoM' else name}",
        "api_base": down if name == "ocean-lora" else vllm.api_base}} for name in names]
    (tmp / "litellm.yaml").write_text(yaml.safe_dump({
        "model_list": model_list,
        "litellm_settings": {"callbacks": "litellm_lora_router.proxy_handler_instance", "num_retries": 0},
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }))
    proxy = launch_proxy(vllm, logs_dir, router_config=tmp / "router.yaml", litellm_config=tmp / "litellm.yaml")
    yield proxy, tmp / "router.yaml", tmp / "litellm.yaml"
    proxy.service.stop()


def ask(proxy: Proxy, vllm: StandIn, text: str) -> tuple[httpx.Response, str]:
    response = proxy.chat({"model": "MoM", "messages": [{"role": "user", "content": text}]})
    assert response.status_code == 200, response.text
    return response, response.json()["choices"][0]["message"]["content"]


def assert_vllm_never_saw_an_unserved_model(vllm: StandIn) -> None:
    assert {r["model"] for r in vllm.received()} <= served(vllm)


def test_check_probe_lists_adapters_declared_but_missing(adapter_setup: tuple[Proxy, Path, Path]) -> None:
    _, router_config, litellm_config = adapter_setup
    cli = str(Path(sys.executable).parent / "lora-router")
    result = subprocess.run([cli, "check", "--probe", "--config", str(router_config), "--litellm-config", str(litellm_config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    problems = result.stderr.splitlines()
    assert any("adapter 'finance-lora'" in p and "not loaded on http://127.0.0.1:" in p and "no path" in p for p in problems)
    assert any("is unreachable (ConnectError); adapters sent there: ocean-lora" in p for p in problems)
    assert not any("research-lora" in p for p in problems)
    assert "adapter 'research-lora' is not loaded on" in result.stdout and "loaded on first use from '/adapters/research'" in result.stdout


@pytest.mark.parametrize(
    ("text", "category", "fallback"),
    [("Which stock should I buy?", "finance", "adapter_not_loaded"),
     ("How deep is the ocean?", "ocean", "adapter_server_down")],
    ids=["missing", "server_down"],
)
def test_an_adapter_it_cannot_serve_goes_to_the_base_model(
    adapter_setup: tuple[Proxy, Path, Path], vllm: StandIn, text: str, category: str, fallback: str
) -> None:
    proxy = adapter_setup[0]
    vllm.clear()
    response, answer = ask(proxy, vllm, text)
    assert answer.startswith("[llama2-7b]")
    assert response.headers["x-lora-router-fallback"] == fallback
    assert response.headers["x-lora-router-category"] == category
    assert response.headers["x-lora-router-adapter"] == "llama2-7b"
    assert [r["model"] for r in vllm.received()] == ["llama2-7b"]
    assert_vllm_never_saw_an_unserved_model(vllm)


def test_an_adapter_is_loaded_on_demand_once(adapter_setup: tuple[Proxy, Path, Path], vllm: StandIn) -> None:
    proxy = adapter_setup[0]
    vllm.clear()
    assert "research-lora" not in served(vllm)
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: ask(proxy, vllm, "Summarise this research paper")[1], range(6)))
    assert all(a.startswith("[research-lora]") for a in answers), answers
    assert [c["action"] for c in lora_calls(vllm, "research-lora")] == ["load"]
    assert [c["lora_path"] for c in lora_calls(vllm, "research-lora")] == ["/adapters/research"]
    assert {r["model"] for r in vllm.received()} == {"research-lora"}
    assert_vllm_never_saw_an_unserved_model(vllm)


async def test_a_models_answer_whose_data_is_not_a_list_is_inconclusive() -> None:
    """A server whose /v1/models `data` is an object is not a server with no adapters loaded."""

    server = AnsweringServer(json.dumps({"object": "list", "data": {"id": "technical-lora", "parent": "llama2-7b"}}).encode())
    api_base = server.url + "/v1"
    adapters = registry(parse_config(adapter_config()), {"technical-lora": [VllmServer(api_base)]})
    try:
        await adapters.refresh()
        assert not adapters.states[api_base].conclusive
        assert await adapters.ensure("technical-lora") is None  # nothing known against it: route as decided
    finally:
        await adapters.aclose()
        server.close()


async def test_an_adapter_no_deployment_serves_probes_nothing_on_the_request_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """`research-lora` is declared but LiteLLM sends it nowhere: a request for it used to probe
    every server (at most once a second, waiting for the answers) on the request path."""
    import litellm_lora_router.adapters as adapters_module

    monkeypatch.setattr(adapters_module, "PROBE_ON_DEMAND_EVERY_S", 0.0)
    models = AnsweringServer(json.dumps({"data": [{"id": "technical-lora", "parent": "llama2-7b"}]}).encode())
    adapters = registry(parse_config(adapter_config()), {"technical-lora": [VllmServer(models.url + "/v1")]})
    try:
        await adapters.refresh()
        assert models.requests == 1
        for _ in range(3):
            assert await adapters.ensure("research-lora") is None  # nothing known against it
        assert await adapters.ensure("technical-lora") is None
        assert models.requests == 1
    finally:
        await adapters.aclose()
        models.close()


async def test_a_large_models_answer_is_read_off_the_event_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    """An answer just under the cap (about 4 MiB, tens of thousands of adapters) takes tens of
    milliseconds to parse: it used to be parsed on the event loop, stalling every request meanwhile."""
    import threading

    import litellm_lora_router.adapters as adapters_module
    from litellm_lora_router.adapters import MAX_MODELS_ANSWER_BYTES

    cards = [{"id": f"adapter-{i:07d}", "parent": "llama2-7b"} for i in range(MAX_MODELS_ANSWER_BYTES // 60)]
    big = json.dumps({"data": [{"id": "technical-lora", "parent": "llama2-7b"}, *cards]}).encode()
    assert MAX_MODELS_ANSWER_BYTES // 2 < len(big) <= MAX_MODELS_ANSWER_BYTES
    parsed_on: list[int] = []
    real_loads = json.loads

    def loads(data: Any, **kwargs: Any) -> Any:
        if len(data) == len(big):  # the probe's answer, not another JSON read on the way
            parsed_on.append(threading.get_ident())
        return real_loads(data, **kwargs)

    monkeypatch.setattr(adapters_module.json, "loads", loads)
    models = AnsweringServer(big)
    adapters = registry(parse_config(adapter_config()), {"technical-lora": [VllmServer(models.url + "/v1")]})
    try:
        await adapters.refresh()
        state = adapters.states[models.url + "/v1"]
        assert state.conclusive and "technical-lora" in state.adapters and len(state.adapters) == len(cards) + 1
        assert parsed_on and threading.get_ident() not in parsed_on
    finally:
        await adapters.aclose()
        models.close()


async def test_a_models_answer_over_the_byte_cap_is_inconclusive_and_not_kept() -> None:
    from litellm_lora_router.adapters import MAX_MODELS_ANSWER_BYTES

    cards = [{"id": f"adapter-{i:07d}", "parent": "llama2-7b"} for i in range(MAX_MODELS_ANSWER_BYTES // 40)]
    huge = json.dumps({"data": cards}).encode()
    assert len(huge) > MAX_MODELS_ANSWER_BYTES
    models = AnsweringServer(huge)
    adapters = registry(parse_config(adapter_config()), {"technical-lora": [VllmServer(models.url + "/v1")]})
    try:
        await adapters.refresh()
        state = adapters.states[models.url + "/v1"]
        assert (state.conclusive, state.error, state.models) == (False, "ValueError", frozenset())
    finally:
        await adapters.aclose()
        models.close()


def test_check_reads_hosted_vllm_deployments_as_the_proxy_does(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A `hosted_vllm/` deployment without `api_base` goes to LiteLLM's `$HOSTED_VLLM_API_BASE`:
    `check --probe` used to skip it (only the running proxy read it), so it probed nothing."""
    from litellm_lora_router.cli import servers_from_litellm_config

    monkeypatch.setenv("HOSTED_VLLM_API_BASE", "http://vllm:8000/v1")
    monkeypatch.setenv("HOSTED_VLLM_API_KEY", "sk-vllm")
    monkeypatch.setenv("OTHER_BASE", "http://other:8000/v1")
    litellm_config = tmp_path / "litellm_config.yaml"
    litellm_config.write_text(yaml.safe_dump({"model_list": [
        {"model_name": "technical-lora", "litellm_params": {"model": "hosted_vllm/technical-lora"}},
        {"model_name": "legal-lora", "litellm_params": {"model": "hosted_vllm/legal-lora", "api_base": "os.environ/OTHER_BASE"}},
        {"model_name": "gpt", "litellm_params": {"model": "openai/gpt-4o"}},
    ]}))
    servers = servers_from_litellm_config(litellm_config)
    assert servers == {"technical-lora": [VllmServer("http://vllm:8000/v1", "sk-vllm")],
                       "legal-lora": [VllmServer("http://other:8000/v1")]}
    assert servers["technical-lora"][0].api_key == "sk-vllm"
    assert servers["legal-lora"][0].api_key is None  # its own api_base: LiteLLM's default key is not its


async def test_before_any_deployment_is_known_requests_do_not_each_read_litellms_list() -> None:
    """Until LiteLLM has a model list, every request used to run a refresh (LiteLLM's list read on
    the event loop, per request); the background refresher polls every second meanwhile."""
    reads: list[int] = []

    def source() -> dict[str, list[VllmServer]]:
        reads.append(1)
        return {}

    adapters = AdapterRegistry(parse_config(adapter_config()), source)
    try:
        await adapters.refresh()
        for _ in range(3):
            assert await adapters.ensure("technical-lora") is None
        assert len(reads) == 1
    finally:
        await adapters.aclose()


async def test_a_load_answer_is_read_only_up_to_its_cap() -> None:
    from litellm_lora_router.adapters import MAX_LOAD_ANSWER_BYTES

    config = parse_config(adapter_config())
    for body, loaded in ((b"The lora adapter has already been loaded.", True),  # the control: vLLM's answer
                         (b"x" * MAX_LOAD_ANSWER_BYTES + b" has already been loaded.", False)):
        server = AnsweringServer(body, status=400)
        adapters = registry(config, {"research-lora": [VllmServer(server.url + "/v1")]})
        try:
            assert await adapters._load(VllmServer(server.url + "/v1"), "research-lora", "/adapters/research") is loaded
        finally:
            await adapters.aclose()
            server.close()
