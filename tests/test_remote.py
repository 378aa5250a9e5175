"""Classifiers served remotely: an OpenAI-compatible /v1/embeddings encoder and vLLM's /classify,
against the vLLM stand-in's pooling endpoints, which compute with the same local models."""

from __future__ import annotations

import asyncio
import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from litellm_lora_router import LoraRouter, parse_config
from litellm_lora_router.classifiers.encoders import ENCODER_ID
from litellm_lora_router.processes import Service, free_port, start_standin

from .conftest import ROOT
from .support.answering_server import AnsweringServer
from .test_models import EMBEDDING_RULES, guide_raw, request

pytestmark = pytest.mark.usefixtures("default_models")

API_KEY = "sk-pooling-test-key"
MOM_DIR = ROOT / "models" / "mom-domain-classifier"
CHAT_EVAL_FILE = ROOT / "benchmarks" / "data" / "chat_eval_mom.jsonl"
CHAT_EVAL = [json.loads(line) for line in CHAT_EVAL_FILE.read_text().splitlines() if line.strip()]


def pooling_args(api_key: str | None = API_KEY) -> list[str]:
    args = ["--embedding-model", ENCODER_ID, "--classify-model", str(MOM_DIR),
            "--classify-model-name", "mom-classifier"]
    return [*args, "--api-key", api_key] if api_key else args


@pytest.fixture(scope="module")
def pooling(logs_dir: Path, default_models: Path) -> Iterator[Service]:
    """The stand-in serving /v1/embeddings (local ONNX MiniLM) and /classify (the guide's classifier)."""
    service = start_standin(logs_dir, extra_args=pooling_args())
    yield service
    service.stop()


def received(service: Service) -> list[dict[str, Any]]:
    return list(httpx.get(service.url + "/_devserver/requests").json())


def remote(url: str, **options: Any) -> dict[str, Any]:
    return {"base_url": url, "api_key": API_KEY, **options}


@pytest.fixture(scope="module")
def minilm_head(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A head over all-MiniLM-L6-v2, an encoder vLLM and text-embeddings-inference can serve (the
    shipped heads read multilingual USE, which they cannot), trained on the package's seed queries."""
    from litellm_lora_router.training import train_domain

    seed = ROOT / "litellm_lora_router" / "defaults" / "seed_chat_queries.jsonl"
    rows = [(r["text"], r["label"]) for r in map(json.loads, seed.read_text().splitlines()) if r]
    out = tmp_path_factory.mktemp("minilm-head")
    train_domain(rows, out, encoders=[ENCODER_ID])
    return out


def minilm_raw(head: Path, **changes: Any) -> dict[str, Any]:
    """Embedding rules and a MiniLM head, the encoder local (ONNX)."""
    raw = guide_raw(embedding_rules=EMBEDDING_RULES, **changes)
    raw["classifier"]["category_model"].update(model_id=str(head),
                                               category_mapping_path=str(head / "category_mapping.json"))
    return raw


def encoder_raw(url: str, head: Path, **options: Any) -> dict[str, Any]:
    """Embedding rules and a MiniLM head, both over the remote encoder."""
    return minilm_raw(head, lora_router={"encoder": {"backend": "openai", "remote": remote(url + "/v1", **options)}})


def classify_raw(url: str, mapping: bool = True, **options: Any) -> dict[str, Any]:
    raw = guide_raw()
    raw["classifier"]["category_model"].update(backend="vllm", model_id="mom-classifier", remote=remote(url, **options))
    if not mapping:
        del raw["classifier"]["category_model"]["category_mapping_path"]
    return raw


async def decisions(raw: dict[str, Any]) -> list[tuple[Any, ...]]:
    """(category, adapter, method, fallback reason, error, confidence) for each chat eval query.
    The budgets are long: these tests compare decisions, and a loaded CI machine can take longer
    than the default half second to answer one (a timeout would be a fallback the other side lacks)."""
    raw = copy.deepcopy(raw)
    raw["lora_router"] = {**raw.get("lora_router", {}), "classification_timeout_seconds": 30}
    if "remote" in raw["lora_router"].get("encoder", {}):
        raw["lora_router"]["encoder"]["remote"]["timeout_seconds"] = 30
    if "remote" in raw["classifier"]["category_model"]:
        raw["classifier"]["category_model"]["remote"]["timeout_seconds"] = 30
    router = LoraRouter.from_config(parse_config(raw))
    out = []
    for row in CHAT_EVAL:
        routed = await router.route(request(row["text"]))
        d = routed.decision
        out.append((d.category, d.model, d.method, d.reason, routed.error, d.confidence))
    return out


def assert_same(served: list[tuple[Any, ...]], local: list[tuple[Any, ...]]) -> None:
    assert [d[:-1] for d in served] == [d[:-1] for d in local]
    assert [d[-1] for d in served] == pytest.approx([d[-1] for d in local], abs=1e-5)


async def test_remote_encoder_gives_the_local_decisions(pooling: Service, minilm_head: Path) -> None:
    local = await decisions(minilm_raw(minilm_head))
    served = await decisions(encoder_raw(pooling.url, minilm_head))
    assert_same(served, local)
    assert {d[2] for d in local} >= {"embedding", "domain"}  # both methods used the encoder


@pytest.mark.parametrize("mapping", [True, False], ids=["labels-from-mapping", "labels-from-vllm"])
async def test_vllm_classify_gives_the_local_decisions(pooling: Service, mapping: bool) -> None:
    local = await decisions(guide_raw())
    served = await decisions(classify_raw(pooling.url, mapping))
    assert_same(served, local)
    assert sum(d[2] == "domain" for d in local) > 30


async def test_requests_have_the_documented_shapes(pooling: Service, minilm_head: Path) -> None:
    httpx.delete(pooling.url + "/_devserver/requests")
    raw = encoder_raw(pooling.url, minilm_head, truncate_prompt_tokens=256)
    raw["classifier"]["category_model"] = classify_raw(pooling.url)["classifier"]["category_model"]
    router = LoraRouter.from_config(parse_config(raw))
    assert await router.start() == []  # example phrases encoded, /classify answered
    httpx.delete(pooling.url + "/_devserver/requests")
    routed = await router.route(request("Is a verbal agreement legally binding?"))
    assert routed.decision.model == "legal-lora"
    embed, classify = received(pooling)
    assert embed == {"model": ENCODER_ID, "input": ["Is a verbal agreement legally binding?"],
                     "encoding_format": "float", "truncate_prompt_tokens": 256}
    assert classify == {"model": "mom-classifier", "input": ["Is a verbal agreement legally binding?"]}


async def test_wrong_key_falls_back_and_the_key_stays_secret(pooling: Service,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LORA_ROUTER_CLASSIFIER_API_KEY", "sk-wrong")
    raw = classify_raw(pooling.url)
    del raw["classifier"]["category_model"]["remote"]["api_key"]  # read from the environment
    config = parse_config(raw)
    assert "sk-wrong" not in repr(config) and "sk-wrong" not in json.dumps(config.model_dump(mode="json"))
    routed = await LoraRouter.from_config(config).route(request("What causes high blood pressure?"))
    assert (routed.decision.model, routed.decision.reason) == ("llama2-7b", "classifier_error")  # vLLM's 401


async def test_cached_remote_decisions_skip_the_server(pooling: Service) -> None:
    raw = classify_raw(pooling.url)
    raw["classification_cache"] = {"enabled": True}
    router = LoraRouter.from_config(parse_config(raw))
    httpx.delete(pooling.url + "/_devserver/requests")
    first = await router.route(request("How long should a sprained wrist take to heal?"))
    again = await router.route(request("How long should a sprained wrist take to heal?"))
    assert (first.cache, again.cache) == ("miss", "hit")
    assert again.decision == first.decision and first.decision.model == "medical-lora"
    assert len(received(pooling)) == 1


async def test_dead_remote_falls_back_opens_the_breaker_and_recovers(logs_dir: Path) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    raw = classify_raw(url, breaker_failures=2, breaker_reset_seconds=1.0)
    router = LoraRouter.from_config(parse_config(raw))
    [domain] = router.classifiers
    results = [await router.route(request(f"What causes high blood pressure? {i}")) for i in range(4)]
    assert {(r.decision.model, r.decision.reason) for r in results} == {("llama2-7b", "classifier_error")}
    breaker = domain.breaker  # type: ignore[attr-defined]
    assert (breaker.state, breaker.consecutive) == ("open", 2)  # the last two never called the server
    server = start_standin(logs_dir, extra_args=pooling_args(), port=port)
    try:
        await asyncio.sleep(max(0.0, 1.05 - (time.monotonic() - breaker.opened_at)))
        recovered = await router.route(request("What causes high blood pressure? 4"))
        assert (recovered.decision.model, recovered.decision.method) == ("medical-lora", "domain")
        assert domain.breaker.state == "closed"  # type: ignore[attr-defined]
    finally:
        server.stop()


async def test_slow_remote_falls_back_within_the_budget(pooling: Service, minilm_head: Path) -> None:
    stall = {"delay_s": 3}  # the stand-in's injected fault: its pooling models answer after 3 s
    for model in (ENCODER_ID, "mom-classifier"):
        httpx.post(pooling.url + "/_devserver/faults", json={"model": model, **stall})
    try:
        for raw in (classify_raw(pooling.url, timeout_seconds=5),
                    encoder_raw(pooling.url, minilm_head, timeout_seconds=5)):
            raw["lora_router"] = {**raw.get("lora_router", {}), "classification_timeout_seconds": 0.3}
            router = LoraRouter.from_config(parse_config(raw))
            started = time.monotonic()
            routed = await router.route(request("What causes high blood pressure?"))
            assert (routed.decision.model, routed.decision.reason) == ("llama2-7b", "timeout")
            assert time.monotonic() - started < stall["delay_s"]  # it did not wait for the server's answer
            await router.aclose()
    finally:
        for model in (ENCODER_ID, "mom-classifier"):
            httpx.post(pooling.url + "/_devserver/faults", json={"model": model})


async def test_remote_readiness_waits_for_the_server(logs_dir: Path, minilm_head: Path) -> None:
    port = free_port()
    router = LoraRouter.from_config(parse_config(encoder_raw(f"http://127.0.0.1:{port}", minilm_head)))
    waiting = asyncio.ensure_future(router.until_ready(retry_seconds=0.2))
    await asyncio.sleep(1.0)
    assert not waiting.done()  # no server: not ready
    server = start_standin(logs_dir, extra_args=pooling_args(), port=port)
    try:
        await asyncio.wait_for(waiting, 30)
        routed = await router.route(request("my program crashes with a stack overflow"))
        assert (routed.decision.model, routed.decision.method) == ("technical-lora", "embedding")
    finally:
        server.stop()


def test_remote_backend_needs_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    from litellm_lora_router import ConfigError

    monkeypatch.delenv("LORA_ROUTER_ENCODER_BASE_URL", raising=False)
    raw = guide_raw(lora_router={"encoder": {"backend": "openai"}})
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "router_config.yaml")
    assert str(info.value) == ("router_config.yaml: lora_router.encoder: expected a `remote.base_url` "
                               "(or $LORA_ROUTER_ENCODER_BASE_URL) for backend openai")
    monkeypatch.setenv("LORA_ROUTER_ENCODER_BASE_URL", "http://embeddings:8000/v1/")
    remote_config = parse_config(raw).lora_router.encoder.remote
    assert remote_config is not None and remote_config.base_url == "http://embeddings:8000/v1"


async def reason_for_classify_answer(answer: dict[str, Any], mapping: bool = True) -> str | None:
    """The fallback reason of a request whose `/classify` call gets `answer` from a real HTTP server
    (None: routed; a fallback always goes to the default model)."""
    server = AnsweringServer(json.dumps(answer).encode())
    router = LoraRouter.from_config(parse_config(classify_raw(server.url, mapping=mapping)))
    try:
        routed = await router.route(request("Is a verbal agreement legally binding?"))
        assert routed.decision.reason is None or routed.decision.model == "llama2-7b"
        return routed.decision.reason
    finally:
        await router.aclose()
        server.close()


@pytest.mark.parametrize("label", ["technical\r\nx-lora-router-category: legal", "x" * 129])
async def test_a_vllm_label_that_could_not_be_a_name_fails_closed(label: str) -> None:
    """Without a mapping, vLLM's `label` names the category; one with a line break or of any
    length used to be taken (up to 200 characters) into decisions, headers and metric labels."""
    answer = {"data": [{"index": 0, "label": label, "probs": [0.0, 0.9, 0.05, 0.05], "num_classes": 4}]}
    assert await reason_for_classify_answer(answer, mapping=False) == "classifier_error"  # the class has no name
    assert await reason_for_classify_answer(answer, mapping=True) is None  # the mapping names it: labels unread


async def test_a_remote_answer_over_the_byte_cap_fails_closed() -> None:
    """A well-formed answer (legal, 0.98) padded past the cap: it used to be read whole and used."""
    from litellm_lora_router.classifiers.remote import MAX_ANSWER_BYTES

    answer = {"data": [{"index": 0, "label": None, "probs": [0.0, 0.98, 0.01, 0.01]}]}
    assert await reason_for_classify_answer(answer) is None  # routed (legal) without the padding
    assert await reason_for_classify_answer({**answer, "padding": "x" * MAX_ANSWER_BYTES}) == "classifier_error"


async def test_a_stalled_remote_is_cut_at_the_budget_and_opens_its_breaker(pooling: Service) -> None:
    """`timeout_seconds` (5 s) longer than the routing budget (0.3 s): each call is cut at the
    budget, so the breaker counts the stalls and opens. The call used to run on for the full 3 s
    stall behind the router's back (the worker thread blocked, the late success resetting the breaker)."""
    raw = classify_raw(pooling.url, timeout_seconds=5, breaker_failures=2, breaker_reset_seconds=30)
    raw["lora_router"] = {**raw.get("lora_router", {}), "classification_timeout_seconds": 0.3}
    router = LoraRouter.from_config(parse_config(raw))
    try:
        httpx.post(pooling.url + "/_devserver/faults", json={"model": "mom-classifier", "delay_s": 3})
        reasons = [(await router.route(request(f"What causes high blood pressure? #{i}"))).decision.reason
                   for i in range(3)]
        assert reasons == ["timeout", "timeout", "classifier_error"]  # the breaker opened after two
    finally:
        httpx.post(pooling.url + "/_devserver/faults", json={"model": "mom-classifier"})
        await router.aclose()


async def test_example_phrases_are_prepared_once_even_when_requests_give_up(pooling: Service, minilm_head: Path) -> None:
    """Requests that time out while the remote encoder prepares the example phrases share one
    preparation; each used to start its own (the cancelled one's thread going on regardless)."""
    raw = encoder_raw(pooling.url, minilm_head, timeout_seconds=5)
    raw["lora_router"]["classification_timeout_seconds"] = 0.2
    router = LoraRouter.from_config(parse_config(raw))
    try:
        httpx.post(pooling.url + "/_devserver/faults", json={"model": ENCODER_ID, "delay_s": 1.0})
        httpx.delete(pooling.url + "/_devserver/requests")
        for i in range(3):
            routed = await router.route(request(f"my program crashes with a stack overflow #{i}"))
            assert routed.decision.reason == "timeout"
        phrases = sorted(p for rule in EMBEDDING_RULES for p in rule.get("candidates", rule.get("keywords", [])))
        assert [sorted(r["input"]) for r in received(pooling)] == [phrases]  # one preparation call so far
    finally:
        httpx.post(pooling.url + "/_devserver/faults", json={"model": ENCODER_ID})
        await router.aclose()
