"""LiteLLM features teams already run, which routing must not break: tag filtering, router
fallbacks (5xx and timeouts), and `--num_workers`. Keyword rules only, so no model is needed."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from litellm_lora_router.processes import start_proxy

from .conftest import DEFAULT_LITELLM_CONFIG, DEFAULT_ROUTER_CONFIG, Proxy, StandIn, new_master_key

TECH = "Explain async/await in JavaScript"
MEDICAL = "What causes high blood pressure?"
LEGAL = "Is a verbal contract binding?"


@pytest.fixture(scope="session")
def default_models() -> None:
    """Keyword rules only: these tests need no trained model, so they do not wait for one."""


def deployment(name: str, served: str | None = None, **params: Any) -> dict[str, Any]:
    return {"model_name": name, "litellm_params": {"model": f"hosted_vllm/{served or name}",
                                                   "api_base": "os.environ/VLLM_API_BASE", **params}}


def keyword_only_router_config(tmp: Path) -> Path:
    raw = yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text())
    del raw["classifier"]
    path = tmp / "router_config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def features_proxy(standin: StandIn, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """Tag filtering on (technical-lora serves team-a only), fallbacks from two adapters to the base
    model (as `MoM`, the README's advice, and as `llama2-7b`), and a short timeout on legal-lora."""
    tmp = tmp_path_factory.mktemp("features")
    config = {
        "model_list": [
            deployment("MoM", "llama2-7b", tags=["team-a", "team-b"]),
            deployment("llama2-7b", tags=["team-a", "team-b"]),
            deployment("technical-lora", tags=["team-a"]),
            deployment("medical-lora"),
            deployment("legal-lora", timeout=2),
        ],
        "litellm_settings": {"callbacks": "litellm_lora_router.proxy_handler_instance"},
        "router_settings": {"enable_tag_filtering": True, "num_retries": 0,
                            "fallbacks": [{"technical-lora": ["MoM"]}, {"legal-lora": ["llama2-7b"]}]},
        "general_settings": {"master_key": "os.environ/LITELLM_MASTER_KEY"},
    }
    (tmp / "litellm.yaml").write_text(yaml.safe_dump(config))
    key = new_master_key()
    service = start_proxy(tmp / "litellm.yaml", keyword_only_router_config(tmp), standin.api_base, key, logs_dir)
    yield Proxy(service, key)
    service.stop()


def ask(proxy: Proxy, text: str, **extra: Any) -> httpx.Response:
    return proxy.chat({"model": "MoM", "messages": [{"role": "user", "content": text}], **extra})


def test_tag_filtering_does_not_refuse_routed_requests(features_proxy: Proxy, standin: StandIn) -> None:
    """Fails on the old code: its `lora:*` tags matched no deployment, and LiteLLM answered 401."""
    standin.clear()
    response = ask(features_proxy, MEDICAL)
    assert response.status_code == 200, response.text
    assert standin.received()[0]["model"] == "medical-lora"


@pytest.mark.parametrize("tags", [["team-a"], ["team-b"], ["&team-b"], ["!team-a"]])
def test_callers_own_tags_filter_as_before(features_proxy: Proxy, standin: StandIn, tags: list[str]) -> None:
    """A routed request meets LiteLLM's tag filter exactly as the same request sent to the adapter
    directly does: same status, same deployment (technical-lora carries team-a only)."""
    outcomes = []
    for model in ("MoM", "technical-lora"):
        standin.clear()
        response = features_proxy.chat({"model": model, "metadata": {"tags": tags},
                                         "messages": [{"role": "user", "content": TECH}]})
        outcomes.append((response.status_code, [r["model"] for r in standin.received()]))
    assert outcomes[0] == outcomes[1]
    if tags == ["team-a"]:
        assert outcomes[0] == (200, ["technical-lora"])


@pytest.mark.parametrize(
    ("adapter", "text", "fault", "fallback_group"),
    [
        ("technical-lora", TECH, {"status": 503}, "MoM"),  # the fallback group serving the base model as `MoM`
        ("legal-lora", LEGAL, {"delay_s": 8}, "llama2-7b"),  # past the deployment's 2 s timeout
    ],
    ids=["answering_5xx", "timing_out"],
)
def test_adapter_failing_falls_back_to_the_base_model(
    features_proxy: Proxy, standin: StandIn, adapter: str, text: str, fault: dict[str, Any], fallback_group: str
) -> None:
    standin.clear()
    standin.fault(adapter, **fault)
    try:
        response = ask(features_proxy, text)
    finally:
        standin.fault(adapter)
    assert response.status_code == 200, response.text
    assert [r["model"] for r in standin.received()] == [adapter, "llama2-7b"]
    assert response.json()["choices"][0]["message"]["content"].startswith("[llama2-7b]")
    assert response.headers["x-lora-router-adapter"] == adapter  # what the router chose
    assert response.headers["x-lora-router-served-model"] == fallback_group  # what finally answered


def worker_pids(parent: int) -> list[int]:
    """uvicorn's worker processes under the `litellm` process (multiprocessing spawn children)."""
    children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
    return [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def test_num_workers_each_route(standin: StandIn, logs_dir: Path, tmp_path: Path) -> None:
    """`litellm --num_workers 2`: every worker loads the plugin and routes; nothing is shared. Workers
    import LiteLLM and load the plugin before they answer uvicorn's health check, so the README's
    `--timeout_worker_healthcheck` is part of the command (uvicorn's 5 s kills slow starters forever)."""
    litellm_cli = str(Path(sys.executable).parent / "litellm")
    key = new_master_key()
    command = [litellm_cli, "--config", str(DEFAULT_LITELLM_CONFIG), "--host", "127.0.0.1", "--port", "{port}",
               "--num_workers", "2", "--timeout_worker_healthcheck", "120"]
    router_config = keyword_only_router_config(tmp_path)
    raw = yaml.safe_load(router_config.read_text())
    # adapter discovery on (the default), said outright: a worker starting up blocks its event loop,
    # and a probe's connect that timed out meanwhile once made it take the stand-in for down
    raw.setdefault("lora_router", {})["adapter_discovery"] = True
    router_config.write_text(yaml.safe_dump(raw))
    service = start_proxy(DEFAULT_LITELLM_CONFIG, router_config, standin.api_base, key,
                          logs_dir, command=command, timeout_s=300)
    proxy = Proxy(service, key)
    try:
        standin.clear()
        with httpx.Client(timeout=60) as client:  # new connections, so both workers get requests
            for _ in range(6):
                response = client.post(proxy.url + "/v1/chat/completions", headers={"Authorization": f"Bearer {key}",
                                                                                  "Connection": "close"},
                                       json={"model": "MoM", "messages": [{"role": "user", "content": TECH}]})
                assert response.status_code == 200, response.text
                lora_headers = {k: v for k, v in response.headers.items() if "lora" in k}
                assert response.headers["x-lora-router-adapter"] == "technical-lora", lora_headers
        assert {r["model"] for r in standin.received()} == {"technical-lora"}
        assert len(worker_pids(service.process.pid)) == 2  # both alive, none restarted in a loop
    finally:
        service.stop()
