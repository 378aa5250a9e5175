"""The MCP classifier against real MCP servers (the example tenant router) over stdio and HTTP."""

from __future__ import annotations

import copy
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from litellm_lora_router import LoraRouter, parse_config
from litellm_lora_router.classifiers import Caller
from litellm_lora_router.classifiers.mcp import discover_tool
from litellm_lora_router.processes import Service, free_port, start_service, start_standin, tcp_ready

from .conftest import ROOT, Proxy, StandIn, launch_proxy

EXAMPLE = ROOT / "examples" / "mcp_tenant_router"
QUESTION = "my python server crashes on login"


def example_raw(**mcp: Any) -> dict[str, Any]:
    raw = yaml.safe_load((EXAMPLE / "router_config.yaml").read_text())
    raw["classifier"]["mcp_category_model"].update(
        {"command": sys.executable, "args": [str(EXAMPLE / "server.py")], **mcp}
    )
    raw["classification_cache"] = {"enabled": False}
    return raw


def request(text: str = QUESTION) -> dict[str, Any]:
    return {"model": "MoM", "messages": [{"role": "user", "content": text}]}


def test_tool_discovery_order() -> None:
    assert discover_tool([("categorize", ""), ("classify_text", "")]) == "classify_text"
    assert discover_tool([("foo", ""), ("route_it", "Classifies a query into a domain")]) == "route_it"
    assert discover_tool([("foo", "bar")]) is None


async def test_stdio_tenants_reach_their_own_adapters() -> None:
    router = LoraRouter.from_config(parse_config(example_raw()))
    try:
        await router.start()
        acme = await router.route(request(), caller=Caller(tenant="team-acme"))
        globex = await router.route(request(), caller=Caller(tenant="team-globex"))
        anyone = await router.route(request(), caller=Caller(tenant="team-other"))
        assert (acme.decision.model, globex.decision.model, anyone.decision.model) == (
            "acme-support-lora", "globex-support-lora", "technical-lora")
        assert acme.decision.method == "mcp" and acme.decision.category == "technical"
        # the config's technical category has no system prompt: list_categories supplies one
        assert acme.decision.system_prompt == "You are a senior engineer."
        rogue = await router.route(request(), caller=Caller(tenant="team-rogue"))
        assert (rogue.decision.model, rogue.decision.reason) == ("llama2-7b", "undeclared_adapter")
    finally:
        await router.aclose()


async def test_slow_server_times_out_into_a_fallback() -> None:
    raw = example_raw(timeout_seconds=0.3, env={"MCP_TENANT_ROUTER_DELAY": "1.5"})
    router = LoraRouter.from_config(parse_config(raw))
    try:
        routed = await router.route(request(), caller=Caller(tenant="team-acme"))
        assert (routed.decision.model, routed.decision.reason) == ("llama2-7b", "timeout")
    finally:
        await router.aclose()


async def test_crashing_server_is_restarted_and_routing_resumes() -> None:
    router = LoraRouter.from_config(parse_config(example_raw()))
    try:
        first = await router.route(request(), caller=Caller(tenant="team-acme"))
        assert first.decision.model == "acme-support-lora"
        crashed = await router.route(request("CRASH-NOW please"), caller=Caller(tenant="team-acme"))
        assert crashed.decision.reason == "classifier_error" and crashed.decision.model == "llama2-7b"
        again = await router.route(request(), caller=Caller(tenant="team-acme"))
        assert again.decision.model == "acme-support-lora"
    finally:
        await router.aclose()


@pytest.fixture(scope="module")
def http_server(logs_dir: Path) -> Iterator[Service]:
    port = free_port()
    command = [sys.executable, str(EXAMPLE / "server.py"), "--transport", "http", "--port", str(port)]
    server = start_service(f"mcp-http-{port}", command, f"http://127.0.0.1:{port}/mcp", tcp_ready(port), logs_dir)
    yield server
    server.stop()


async def test_http_transport(http_server: Service) -> None:
    raw = example_raw()
    raw["classifier"]["mcp_category_model"] = {"enabled": True, "transport_type": "http", "url": http_server.url}
    router = LoraRouter.from_config(parse_config(raw))
    try:
        acme = await router.route(request(), caller=Caller(tenant="team-acme"))
        globex = await router.route(request(), caller=Caller(tenant="team-globex"))
        assert (acme.decision.model, globex.decision.model) == ("acme-support-lora", "globex-support-lora")
    finally:
        await router.aclose()


def test_config_requires_a_command_or_url() -> None:
    raw = example_raw()
    raw["classifier"]["mcp_category_model"] = {"enabled": True, "transport_type": "http"}
    with pytest.raises(ValueError, match=r"classifier.mcp_category_model: expected a `url` for transport_type http"):
        parse_config(copy.deepcopy(raw))


ACME_KEY = "sk-acme-tenant-key"
GLOBEX_KEY = "sk-globex-tenant-key"


@pytest.fixture(scope="module")
def tenant_proxy(logs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, StandIn]]:
    adapters = ["technical-lora", "medical-lora", "legal-lora", "acme-support-lora", "globex-support-lora"]
    standin = StandIn(start_standin(logs_dir, "llama2-7b", adapters))
    tmp = tmp_path_factory.mktemp("mcp")
    raw = example_raw()
    raw["classification_cache"] = {}  # tenant-scoped cache keys
    (tmp / "router.yaml").write_text(yaml.safe_dump(raw))
    models = [{"model_name": n, "litellm_params": {"model": f"hosted_vllm/{n}", "api_base": standin.api_base}}
              for n in ["llama2-7b", *adapters]]
    models.append({"model_name": "MoM", "litellm_params": {"model": "hosted_vllm/llama2-7b", "api_base": standin.api_base}})
    (tmp / "litellm.yaml").write_text(yaml.safe_dump({
        "model_list": models,
        "litellm_settings": {"callbacks": "litellm_lora_router.proxy_handler_instance"},
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }))
    keys = [{"key": ACME_KEY, "models": ["MoM"], "team_id": "team-acme"},
            {"key": GLOBEX_KEY, "models": ["MoM"], "team_id": "team-globex"}]
    proxy = launch_proxy(standin, logs_dir, router_config=tmp / "router.yaml", litellm_config=tmp / "litellm.yaml", keys=keys)
    yield proxy, standin
    proxy.service.stop()
    standin.service.stop()


def test_tenants_through_the_proxy(tenant_proxy: tuple[Proxy, StandIn]) -> None:
    proxy, standin = tenant_proxy
    seen = {}
    for key in (ACME_KEY, GLOBEX_KEY, ACME_KEY):
        standin.clear()
        response = proxy.chat(request(), key=key)
        assert response.status_code == 200, response.text
        assert response.headers["x-lora-router-method"] == "mcp"
        [received] = standin.received()
        seen.setdefault(key, set()).add((received["model"], response.headers["x-lora-router-cache"]))
    assert {m for m, _ in seen[ACME_KEY]} == {"acme-support-lora"}
    assert {m for m, _ in seen[GLOBEX_KEY]} == {"globex-support-lora"}
    assert {c for _, c in seen[ACME_KEY]} == {"miss", "hit"}  # cached per tenant, never across
