"""The MCP classifier against real MCP servers (the example tenant router) over stdio and HTTP."""

from __future__ import annotations

import asyncio
import copy
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import yaml

from litellm_lora_router import LoraRouter, parse_config
from litellm_lora_router.cache import SECRET_ENV, ClassificationCache, ClassificationCodec
from litellm_lora_router.classifiers import Caller
from litellm_lora_router.classifiers.mcp import McpClassifier, discover_tool
from litellm_lora_router.cli import main as cli
from litellm_lora_router.errors import ClassifierError
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
        acme = await router.route(request(), caller=Caller(tenant="team:acme"))
        globex = await router.route(request(), caller=Caller(tenant="team:globex"))
        anyone = await router.route(request(), caller=Caller(tenant="team:other"))
        assert (acme.decision.model, globex.decision.model, anyone.decision.model) == (
            "acme-support-lora", "globex-support-lora", "technical-lora")
        assert acme.decision.method == "mcp" and acme.decision.category == "technical"
        # the config's technical category has no system prompt: list_categories supplies one
        assert acme.decision.system_prompt == "You are a senior engineer."
        rogue = await router.route(request(), caller=Caller(tenant="team:rogue"))
        assert (rogue.decision.model, rogue.decision.reason) == ("llama2-7b", "undeclared_adapter")
    finally:
        await router.aclose()


async def test_slow_server_times_out_into_a_fallback() -> None:
    raw = example_raw(timeout_seconds=0.3, env={"MCP_TENANT_ROUTER_DELAY": "1.5"})
    router = LoraRouter.from_config(parse_config(raw))
    try:
        routed = await router.route(request(), caller=Caller(tenant="team:acme"))
        assert (routed.decision.model, routed.decision.reason) == ("llama2-7b", "timeout")
    finally:
        await router.aclose()


async def routed_once_ready(router: LoraRouter, caller: Caller | None = None, text: str = QUESTION) -> Any:
    """Route until the MCP server answers (a restarted stdio server takes seconds on a busy host,
    and a loaded CI machine has taken more than 20)."""
    deadline = time.monotonic() + 90
    while True:
        routed = await router.route(request(text), caller=caller)
        if routed.decision.reason is None or time.monotonic() > deadline:
            return routed
        await asyncio.sleep(0.5)


async def test_crashing_server_is_restarted_and_routing_resumes() -> None:
    router = LoraRouter.from_config(parse_config(example_raw()))
    try:
        await router.start()
        first = await router.route(request(), caller=Caller(tenant="team:acme"))
        assert first.decision.model == "acme-support-lora"
        crashed = await router.route(request("CRASH-NOW please"), caller=Caller(tenant="team:acme"))
        assert crashed.decision.reason == "classifier_error" and crashed.decision.model == "llama2-7b"
        again = await routed_once_ready(router, Caller(tenant="team:acme"))
        assert again.decision.model == "acme-support-lora"
    finally:
        await router.aclose()


async def test_a_tool_error_or_plain_text_answer_keeps_the_session() -> None:
    """A tool that fails or answers something other than JSON is the server answering: the call
    falls back and counts in the breaker, and the session (a stdio server process) is kept; it
    used to be replaced, restarting the server on every such answer."""
    router = LoraRouter.from_config(parse_config(example_raw()))
    classifier = router.classifiers[0]
    assert isinstance(classifier, McpClassifier)
    try:
        await router.start()
        session = classifier._session.current
        assert session is not None
        for text in ("TOOL-ERROR please", "NOT-JSON please"):
            routed = await router.route(request(text), caller=Caller(tenant="team:acme"))
            assert (routed.decision.model, routed.decision.reason) == ("llama2-7b", "classifier_error")
        assert classifier.breaker.consecutive == 2 and classifier._session.current is session
        fine = await router.route(request(), caller=Caller(tenant="team:acme"))
        assert (fine.decision.model, fine.decision.reason) == ("acme-support-lora", None)
    finally:
        await router.aclose()


@pytest.mark.parametrize("reply", [
    {"class": "technical", "confidence": "high"},
    {"class": "technical", "confidence": float("nan")},
    {"class": "technical", "confidence": 7.0},
    {"class": "technical", "confidence": 0.9, "system_prompt": {"role": "system"}},
    {"class": "technical", "confidence": 0.9, "system_prompt": "x" * 100_000},
    {"class": "x\r\nset-cookie: a=b", "confidence": 0.9, "lora_name": "technical-lora"},
    {"class": "c" * 5000, "confidence": 0.9, "lora_name": "technical-lora"},
    {"class": "technical", "confidence": 0.9, "lora_name": "l\r\nx: y"},
    {"class": ["technical"], "confidence": 0.9},
])
async def test_an_unusable_reply_is_a_classifier_error(monkeypatch: pytest.MonkeyPatch, reply: dict[str, Any]) -> None:
    """A confidence that is no probability (it would pass any threshold), a system prompt that is
    not a bounded string, or a label or name that could not be a header value (control characters,
    unbounded length: they reach response headers and logs) fails the call (the router falls back) and counts in the breaker."""
    classifier = McpClassifier(parse_config(example_raw()).classifier.mcp_category_model)

    async def answer(connection: Any, arguments: dict[str, Any]) -> dict[str, Any]:
        return reply

    monkeypatch.setattr(classifier, "_call", answer)
    monkeypatch.setattr(classifier._session, "connection", lambda: None)
    with pytest.raises(ClassifierError):
        await classifier.classify([QUESTION])
    assert classifier.breaker.consecutive == 1


async def test_a_usable_reply_through_the_same_stand_in_classifies(monkeypatch: pytest.MonkeyPatch) -> None:
    """The control for the test above: the same replacement of the call, with a good reply."""
    classifier = McpClassifier(parse_config(example_raw()).classifier.mcp_category_model)

    async def answer(connection: Any, arguments: dict[str, Any]) -> dict[str, Any]:
        return {"class": "technical", "confidence": 0.9, "lora_name": "technical-lora", "system_prompt": "Be exact."}

    monkeypatch.setattr(classifier, "_call", answer)
    monkeypatch.setattr(classifier._session, "connection", lambda: None)
    [result] = await classifier.classify([QUESTION])
    assert (result.category, result.confidence, result.lora_name, result.system_prompt) == (
        "technical", 0.9, "technical-lora", "Be exact.")
    assert classifier.breaker.consecutive == 0


def calls_logged(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


async def test_timeouts_count_in_the_breaker_even_past_the_router_budget(tmp_path: Path) -> None:
    """The MCP timeout (2 s) is longer than the router budget (0.4 s): the budget cuts each call,
    and the breaker still counts it, so a hung server stops being called."""
    log = tmp_path / "calls.jsonl"
    raw = example_raw(breaker_failures=2, breaker_reset_seconds=1.0, env={"MCP_TENANT_ROUTER_LOG": str(log)})
    raw["lora_router"] = {"classification_timeout_seconds": 0.4}
    router = LoraRouter.from_config(parse_config(raw))
    try:
        await router.start()
        reasons = [(await router.route(request(f"{QUESTION} DELAY=1.5 #{i}"))).decision.reason for i in range(4)]
        assert reasons == ["timeout", "timeout", "classifier_error", "classifier_error"]  # then the breaker is open
        assert len(calls_logged(log)) == 2  # the server was not called while the breaker was open
        recovered = await routed_once_ready(router)  # then a fresh session (a restarted server) answers
        assert (recovered.decision.model, recovered.decision.method) == ("technical-lora", "mcp")
    finally:
        await router.aclose()


async def test_a_timeout_does_not_fail_other_calls_in_flight() -> None:
    raw = example_raw(timeout_seconds=1.0)
    router = LoraRouter.from_config(parse_config(raw))
    try:
        await router.start()
        slow = asyncio.create_task(router.route(request(f"{QUESTION} DELAY=3"), caller=Caller(tenant="team:acme")))
        await asyncio.sleep(0.5)
        # in flight when the slow call times out (at 1.0 s), and answered at about 1.3 s
        fine = await router.route(request(f"{QUESTION} DELAY=0.8"), caller=Caller(tenant="team:acme"))
        assert (await slow).decision.reason == "timeout"
        assert (fine.decision.model, fine.decision.reason) == ("acme-support-lora", None)
        after = await router.route(request(), caller=Caller(tenant="team:acme"))
        assert after.decision.model == "acme-support-lora"
    finally:
        await router.aclose()


async def test_context_holds_only_allow_listed_key_metadata(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    metadata = {"tier": "gold", "logging": [{"callback_vars": {"langfuse_secret_key": "sk-lf-do-not-send"}}]}
    for keys, expected in (([], {}), (["tier"], {"tier": "gold"})):
        raw = example_raw(env={"MCP_TENANT_ROUTER_LOG": str(log)}, context_metadata_keys=keys)
        router = LoraRouter.from_config(parse_config(raw))
        try:
            await router.start()
            caller = router.caller(team_id="acme", key_alias="acme-key", user="u1", key_metadata=metadata)
            assert (await router.route(request(), caller=caller)).decision.model == "acme-support-lora"
        finally:
            await router.aclose()
        assert calls_logged(log)[-1] == {"tenant": "team:acme", "user": "u1", "key_metadata": expected}
    assert "sk-lf-do-not-send" not in log.read_text()


async def test_cache_hit_on_another_replica_keeps_the_mcp_decision(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SECRET_ENV, "one-deployment")
    redis_client = fakeredis.FakeAsyncRedis()
    raw = example_raw()
    raw["classification_cache"] = {"local_max_entries": 0}
    raw["categories"][0]["model_scores"][0]["use_reasoning"] = True
    replicas = []
    for _ in range(2):
        config = parse_config(copy.deepcopy(raw))
        router = LoraRouter.from_config(config)
        codec = ClassificationCodec.for_config(config)
        router.cache = ClassificationCache(config.classification_cache, redis_client, codec)
        replicas.append(router)
    try:
        await asyncio.gather(*(router.start() for router in replicas))
        a = await replicas[0].route(request(), caller=Caller(tenant="team:acme"))
        b = await replicas[1].route(request(), caller=Caller(tenant="team:acme"))
        assert (a.cache, b.cache) == ("miss", "hit")
        assert b.decision == a.decision
        assert (b.decision.model, b.decision.system_prompt) == ("acme-support-lora", "You are a senior engineer.")
    finally:
        for router in replicas:
            await router.aclose()


def test_classify_and_eval_cli_connect_first(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The server takes longer to start than one call may take: the CLI connects first, as the proxy does."""
    config = tmp_path / "router_config.yaml"
    config.write_text(yaml.safe_dump(example_raw(timeout_seconds=0.5)))
    assert cli(["classify", "--config", str(config), QUESTION]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert (decision["model"], decision["method"], decision["reason"]) == ("technical-lora", "mcp", None)
    rows = tmp_path / "rows.jsonl"
    labelled = [{"text": QUESTION, "expected_category": "technical"},
                {"text": "my fever will not go down", "expected_category": "medical"}]
    rows.write_text("\n".join(json.dumps(r) for r in labelled))
    assert cli(["eval", "--config", str(config), "--input", str(rows), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == 1.0


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
        await router.start()
        acme = await router.route(request(), caller=Caller(tenant="team:acme"))
        globex = await router.route(request(), caller=Caller(tenant="team:globex"))
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
POSER_KEY = "sk-alias-poses-as-team"  # no team; its alias is a team's tenant name of old


@pytest.fixture(scope="module")
def tenant_proxy(logs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, StandIn, Path]]:
    adapters = ["technical-lora", "medical-lora", "legal-lora", "acme-support-lora", "globex-support-lora"]
    standin = StandIn(start_standin(logs_dir, "llama2-7b", adapters))
    tmp = tmp_path_factory.mktemp("mcp")
    raw = example_raw(env={"MCP_TENANT_ROUTER_LOG": str(tmp / "calls.jsonl")})
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
    secret_metadata = {"logging": [{"callback_name": "langfuse",
                                    "callback_vars": {"langfuse_secret_key": "sk-lf-key-secret"}}]}
    keys = [{"key": ACME_KEY, "models": ["MoM"], "team_id": "acme", "metadata": secret_metadata},
            {"key": GLOBEX_KEY, "models": ["MoM"], "team_id": "globex"},
            {"key": POSER_KEY, "models": ["MoM"], "key_alias": "team:acme"}]
    proxy = launch_proxy(standin, logs_dir, router_config=tmp / "router.yaml", litellm_config=tmp / "litellm.yaml", keys=keys)
    yield proxy, standin, tmp / "calls.jsonl"
    proxy.service.stop()
    standin.service.stop()


def test_tenants_through_the_proxy(tenant_proxy: tuple[Proxy, StandIn, Path]) -> None:
    proxy, standin, _ = tenant_proxy
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


def test_key_alias_cannot_pose_as_a_team(tenant_proxy: tuple[Proxy, StandIn, Path]) -> None:
    proxy, standin, log = tenant_proxy
    standin.clear()
    response = proxy.chat(request("a python question from a key with a tricky alias"), key=POSER_KEY)
    assert response.status_code == 200, response.text
    [received] = standin.received()
    assert received["model"] == "technical-lora"  # the config's adapter, not team acme's
    assert calls_logged(log)[-1]["tenant"] == "key:team:acme"


def test_key_metadata_is_not_sent_to_the_server_by_default(tenant_proxy: tuple[Proxy, StandIn, Path]) -> None:
    proxy, _, log = tenant_proxy
    assert proxy.chat(request("another python question"), key=ACME_KEY).status_code == 200
    context = calls_logged(log)[-1]
    assert context == {"tenant": "team:acme", "user": None, "key_metadata": {}}
    assert "sk-lf-key-secret" not in log.read_text()


def test_a_tool_reply_nested_too_deep_to_parse_is_a_classifier_error() -> None:
    """It used to raise RecursionError, which replaced the session like a broken transport."""
    from types import SimpleNamespace

    from litellm_lora_router.classifiers.mcp import _result_json

    assert _result_json(SimpleNamespace(content=[SimpleNamespace(text='{"class": "legal"}')])) == {"class": "legal"}
    with pytest.raises(ClassifierError):
        _result_json(SimpleNamespace(content=[SimpleNamespace(text="[" * 100_000)]))
