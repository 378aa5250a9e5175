"""Model-based routing through the real proxy: concurrency, a free event loop, failing classifiers."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from .conftest import Proxy, StandIn, launch_proxy
from .test_models import guide_raw

CHAT = [json.loads(line) for line in (Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "chat_eval_mom.jsonl").read_text().splitlines()]
ADAPTER = {"technical": "technical-lora", "medical": "medical-lora", "legal": "legal-lora", "general": "llama2-7b"}


def proxy_for(raw: dict[str, Any], standin: StandIn, logs_dir: Path, tmp: Path) -> Proxy:
    path = tmp / "router_config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return launch_proxy(standin, logs_dir, router_config=path)


@pytest.fixture(scope="module")
def domain_proxy(standin: StandIn, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """The guide's config without keyword rules: every decision is the domain classifier's; the
    torch encoder with small batches makes classification work long enough to watch the loop."""
    # a budget no burst reaches on a busy host: these tests are about concurrency, not speed
    raw = guide_raw(lora_router={"encoder": {"backend": "torch", "max_batch": 4, "batch_window_ms": 1},
                                 "classification_timeout_seconds": 10})
    raw["classifier"]["category_model"]["threshold"] = 0.0
    proxy = proxy_for(raw, standin, logs_dir, tmp_path_factory.mktemp("domain"))
    yield proxy
    proxy.service.stop()


async def _post(client: httpx.AsyncClient, proxy: Proxy, body: dict[str, Any]) -> httpx.Response:
    return await client.post(proxy.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {proxy.master_key}"})


def test_concurrent_requests_reach_their_adapters(domain_proxy: Proxy, standin: StandIn) -> None:
    # queries the classifier gets right on their own (see benchmarks/data): here only concurrency is tested
    rows = [r for r in CHAT if r["text"] in {
        "Explain async/await in JavaScript", "What does a segmentation fault mean?", "How does garbage collection work in Go?",
        "What causes high blood pressure?", "How long does a cold usually last?", "Can stress cause chest pain?",
        "Is a verbal agreement legally binding?", "Do I need a lawyer to write a will?", "How long does a divorce take to finalize?",
        "Tell me a fun fact about octopuses", "How do I make a perfect cup of coffee?", "Can you write a short poem about autumn?"}]
    assert len(rows) == 12

    async def burst() -> list[httpx.Response]:
        async with httpx.AsyncClient(timeout=60) as client:
            return await asyncio.gather(*(_post(client, domain_proxy, {"model": "MoM", "messages": [{"role": "user", "content": r["text"]}]})
                                          for r in rows * 2))

    standin.clear()
    responses = asyncio.run(burst())
    assert all(r.status_code == 200 for r in responses)
    received = {(b["messages"][-1]["content"], b["model"]) for b in standin.received()}
    assert received == {(r["text"], ADAPTER[r["expected_category"]]) for r in rows}


def test_other_models_are_not_slowed_by_classification_work(domain_proxy: Proxy, standin: StandIn) -> None:
    """While a burst of long queries is being classified (inference on a worker thread), a request
    for another model is answered first: the event loop stays free."""
    long_text = "Please review this function and explain every line of the stack trace it prints. " * 12
    order: list[str] = []

    async def run() -> None:
        async with httpx.AsyncClient(timeout=120) as client:
            async def routed(i: int) -> None:
                response = await _post(client, domain_proxy, {"model": "MoM", "messages": [{"role": "user", "content": f"{i} {long_text}"}]})
                assert response.status_code == 200
                order.append("routed")

            async def direct() -> None:
                await asyncio.sleep(0.2)  # the burst is queued and being classified
                response = await _post(client, domain_proxy, {"model": "legal-lora", "messages": [{"role": "user", "content": "hi"}]})
                assert response.status_code == 200
                order.append("direct")

            await asyncio.gather(*(routed(i) for i in range(48)), direct())

    asyncio.run(run())
    assert order.index("direct") < len(order) // 2, order


@pytest.fixture(scope="module")
def broken_proxies(standin: StandIn, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, Proxy]]:
    tmp = tmp_path_factory.mktemp("broken")
    # a classifier that raises on every request: its mapping names more labels than the head has outputs
    broken_dir = tmp / "broken-classifier"
    shutil.copytree(Path(guide_raw()["classifier"]["category_model"]["model_id"]), broken_dir)
    mapping = json.loads((broken_dir / "category_mapping.json").read_text())
    mapping["idx_to_category"]["4"] = "astrology"
    (broken_dir / "category_mapping.json").write_text(json.dumps(mapping))
    raising = guide_raw()
    raising["classifier"]["category_model"] = {"model_id": str(broken_dir), "category_mapping_path": str(broken_dir / "category_mapping.json")}
    (tmp / "raising").mkdir()
    # a classifier that cannot answer within the routing budget
    hanging = guide_raw(lora_router={"classification_timeout_seconds": 0.0001})
    (tmp / "hanging").mkdir()
    first = proxy_for(raising, standin, logs_dir, tmp / "raising")
    second = proxy_for(hanging, standin, logs_dir, tmp / "hanging")
    yield first, second
    first.service.stop()
    second.service.stop()


@pytest.mark.parametrize(("which", "reason"), [(0, "classifier_error"), (1, "timeout")])
def test_failing_classifier_falls_back(broken_proxies: tuple[Proxy, Proxy], standin: StandIn, which: int, reason: str) -> None:
    proxy = broken_proxies[which]
    standin.clear()
    response = proxy.chat({"model": "MoM", "messages": [{"role": "user", "content": "What causes high blood pressure?"}]})
    assert response.status_code == 200, response.text
    assert response.headers["x-lora-router-fallback"] == reason
    assert response.headers["x-lora-router-method"] == "fallback"
    [received] = standin.received()
    assert received["model"] == "llama2-7b"
    assert received["messages"] == [{"role": "user", "content": "What causes high blood pressure?"}]
