"""Model-based classifiers with real models from packages: formats 1 and 2, embedding rules,
the shared encoder pass, history window, micro-batching."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from litellm_lora_router import ConfigError, LoraRouter, load_config, parse_config
from litellm_lora_router.classifiers.encoders import MINILM_ID, longest_sentence, unshouted
from litellm_lora_router.cli import main as cli
from litellm_lora_router.report import decision_headers

from .conftest import DEFAULT_ROUTER_CONFIG, ROOT

pytestmark = pytest.mark.usefixtures("default_models")


def guide_raw(**changes: Any) -> dict[str, Any]:
    raw = yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text())
    raw.pop("keyword_rules")
    raw["classifier"]["category_model"]["model_id"] = str(ROOT / "models" / "mom-domain-classifier")
    raw["classifier"]["category_model"]["category_mapping_path"] = str(ROOT / "models" / "mom-domain-classifier" / "category_mapping.json")
    raw["classification_cache"] = {"enabled": False}
    raw.update(changes)
    return raw


def request(text: str) -> dict[str, Any]:
    return {"model": "MoM", "messages": [{"role": "user", "content": text}]}


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Format 1: a real (tiny, untrained) BertForSequenceClassification with its tokenizer."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    out = tmp_path_factory.mktemp("tiny-bert")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz", "code", "law", "pain"]
    (out / "vocab.txt").write_text("\n".join(vocab))
    BertTokenizerFast(vocab_file=str(out / "vocab.txt")).save_pretrained(out)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=24,
                        id2label={0: "technical", 1: "medical", 2: "legal"}, label2id={"technical": 0, "medical": 1, "legal": 2})
    model = BertForSequenceClassification(config)
    with torch.no_grad():  # untrained, but with a known answer: every text scores label 2 highest
        model.classifier.weight.zero_()
        model.classifier.bias.copy_(torch.tensor([0.0, 0.0, 8.0]))
    model.save_pretrained(out)
    return out


async def test_format1_sequence_classifier(tiny_bert: Path) -> None:
    raw = guide_raw()
    raw["classifier"]["category_model"] = {"model_id": str(tiny_bert), "threshold": 0.0}
    router = LoraRouter.from_config(parse_config(raw))
    short, _ = await router.classify("code law pain")
    assert short is not None and short.method == "domain" and short.category == "legal"  # id2label[2]
    assert short.confidence > 0.99 and not short.truncated
    long, _ = await router.classify("code " * 100)
    assert long is not None and long.truncated  # longer than the model's 24 positions: truncated, and said so
    routed = await router.route(request("code " * 100))
    assert routed.decision.truncated and decision_headers(routed)["x-lora-router-truncated"] == "true"


class _CountingTokenizer:
    """Delegates to the real tokenizer, recording how often and on how much text it runs."""

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = tokenizer
        self.calls: list[int] = []

    def __call__(self, texts: list[str], **kwargs: Any) -> Any:
        self.calls.append(max(len(t) for t in texts))
        return self.tokenizer(texts, **kwargs)

    def pad(self, *args: Any, **kwargs: Any) -> Any:
        return self.tokenizer.pad(*args, **kwargs)


async def test_format1_cuts_before_tokenizing_and_tokenizes_once(tiny_bert: Path) -> None:
    """Issue 11, item 6: fails on the old code, which tokenized a megabyte twice on the model thread."""
    raw = guide_raw()
    raw["classifier"]["category_model"] = {"model_id": str(tiny_bert), "threshold": 0.0}
    router = LoraRouter.from_config(parse_config(raw))
    model = next(c for c in router.classifiers if c.method == "domain")._model  # type: ignore[attr-defined]
    counting = _CountingTokenizer(model._tokenizer)
    model._tokenizer = counting
    [result] = await next(c for c in router.classifiers if c.method == "domain").classify(["code " * 200_000])
    assert result.truncated
    assert len(counting.calls) == 1 and counting.calls[0] <= 24 * 16  # 24 positions, 16 characters a token at most
    await router.aclose()


async def test_format1_with_vsr_category_mapping(tiny_bert: Path, tmp_path: Path) -> None:
    mapping = tmp_path / "category_mapping.json"
    mapping.write_text(json.dumps({"category_to_idx": {"legal": 0, "technical": 1, "medical": 2},
                                   "idx_to_category": {"0": "legal", "1": "technical", "2": "medical"}}))
    raw = guide_raw()
    raw["classifier"]["category_model"] = {"model_id": str(tiny_bert), "threshold": 0.0, "category_mapping_path": str(mapping)}
    router = LoraRouter.from_config(parse_config(raw))
    classification, _ = await router.classify("law")
    assert classification is not None and classification.category == "medical"  # the mapping's 2, not id2label's


def test_train_domain_cli_and_format2(tmp_path: Path) -> None:
    rows = [{"text": t, "label": "technical"} for t in ["python bug in my loop", "compile error in java", "docker container crash", "sql query is slow"]]
    rows += [{"text": t, "label": "medical"} for t in ["my head hurts", "fever and cough for days", "blood pressure medication", "broken arm treatment"]]
    data = tmp_path / "rows.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    assert cli(["train-domain", "--data", str(data), "--out", str(tmp_path / "clf")]) == 0
    assert json.loads((tmp_path / "clf" / "category_mapping.json").read_text())["idx_to_category"] == {"0": "medical", "1": "technical"}
    raw = guide_raw()
    raw["classifier"]["category_model"] = {"model_id": str(tmp_path / "clf"), "threshold": 0.5}
    router = LoraRouter.from_config(parse_config(raw))
    routed = asyncio.run(router.route(request("my javascript function throws an exception")))
    assert routed.decision.model == "technical-lora" and routed.decision.method == "domain"


async def test_relative_model_id_resolves_against_config_dir(tmp_path: Path) -> None:
    import shutil

    shutil.copytree(ROOT / "models" / "mom-domain-classifier", tmp_path / "clf")
    raw = guide_raw()
    raw["classifier"]["category_model"] = {"model_id": "clf", "category_mapping_path": "clf/category_mapping.json"}
    path = tmp_path / "router_config.yaml"
    path.write_text(yaml.safe_dump(raw))
    routed = await LoraRouter.from_config(path).route(request("What causes high blood pressure?"))
    assert routed.decision.model == "medical-lora"


def test_missing_model_dir_fails_startup_with_key_path(tmp_path: Path) -> None:
    raw = guide_raw()
    raw["classifier"]["category_model"]["model_id"] = "models/nope"
    path = tmp_path / "router_config.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        LoraRouter.from_config(path)
    assert info.value.key_paths == ["classifier.category_model.model_id"]
    assert str(info.value).startswith(f"{path}: classifier.category_model.model_id: expected an existing model directory")


async def test_mmlu_labels_map_through_mmlu_categories() -> None:
    raw = guide_raw()
    raw["classifier"]["category_model"] = {"model_id": str(ROOT / "models" / "mmlu-domain-classifier"), "threshold": 0.2}
    raw["categories"][0]["mmlu_categories"] = ["computer science", "engineering"]
    raw["categories"][1]["mmlu_categories"] = ["health", "biology"]
    raw["categories"][2]["mmlu_categories"] = ["law"]
    router = LoraRouter.from_config(parse_config(raw))
    tech = await router.route(request("What is the time complexity of binary search on a sorted array?"))
    law = await router.route(request("Can a contract signed under duress be voided by a court?"))
    assert (tech.decision.category, tech.decision.model) == ("technical", "technical-lora")
    assert (law.decision.category, law.decision.model) == ("legal", "legal-lora")


async def test_low_confidence_falls_back_with_candidate() -> None:
    raw = guide_raw()
    raw["classifier"]["category_model"]["threshold"] = 0.999
    routed = await LoraRouter.from_config(parse_config(raw)).route(request("How do hospitals bill insurance for telemedicine?"))
    assert (routed.decision.model, routed.decision.reason, routed.decision.method) == ("llama2-7b", "low_confidence", "fallback")


EMBEDDING_RULES = [
    {"name": "technical", "threshold": 0.3, "candidates": ["debugging a program", "software bug", "programming language question"],
     "aggregation_method": "max"},
    {"category": "medical", "threshold": 0.2, "keywords": ["what are the symptoms of this disease", "symptoms of an infection", "how is this illness treated"],
     "aggregation_method": "avg"},
]


async def test_embedding_rules() -> None:
    raw = guide_raw(embedding_rules=EMBEDDING_RULES)
    del raw["classifier"]
    router = LoraRouter.from_config(parse_config(raw))
    tech = await router.route(request("my program crashes with a stack overflow"))
    med = await router.route(request("what are the symptoms of measles"))
    other = await router.route(request("recommend a novel for the beach"))
    assert (tech.decision.model, tech.decision.method) == ("technical-lora", "embedding")
    assert (med.decision.model, med.decision.method) == ("medical-lora", "embedding")
    assert other.decision.reason == "low_confidence"
    assert parse_config(raw).embedding_rules[1].aggregation_method == "mean"


async def test_one_encoder_pass_serves_embedding_and_domain() -> None:
    raw = guide_raw(embedding_rules=[{**EMBEDDING_RULES[0], "threshold": 0.99}],
                    lora_router={"encoder": {"model": "universal-sentence-encoder-multilingual-3"}})
    router = LoraRouter.from_config(parse_config(raw))
    embedding, domain = router.classifiers
    batcher = embedding._encoding._batcher  # type: ignore[attr-defined]
    encodings = domain._model._encodings  # type: ignore[attr-defined]
    assert len(encodings) == 2 and encodings[0] is embedding._encoding  # USE shared, MiniLM beside it
    routed = await router.route(request("What causes high blood pressure?"))
    assert routed.decision.method == "domain" and routed.decision.model == "medical-lora"
    assert batcher.batches == 1  # the embedding rules missed, the domain head reused their encoder pass


@pytest.mark.parametrize("backend", ["torch", "onnx"])
async def test_both_encoder_backends(backend: str) -> None:
    """MiniLM of the embedding rules on either back-end; the shipped head (USE and its own fine-tuned
    MiniLM, both ONNX) routes the same whatever the back-end."""
    raw = guide_raw(embedding_rules=EMBEDDING_RULES, lora_router={"encoder": {"backend": backend}})
    router = LoraRouter.from_config(parse_config(raw))
    routed = await router.route(request("my program crashes with a stack overflow"))
    assert (routed.decision.model, routed.decision.method) == ("technical-lora", "embedding")
    assert type(router.classifiers[0]._encoding.encoder).__name__ == f"{backend.title()}Encoder"  # type: ignore[attr-defined]
    routed = await router.route(request("Is a verbal agreement legally binding?"))
    assert (routed.decision.model, routed.decision.method) == ("legal-lora", "domain")


SHOUTABLE = [
    "my kubernetes pod keeps restarting, how do i find out why",
    "can i copy a logo i found on google for my shop",
    "mi jefe no me paga las horas extra, que puedo hacer",
    "mein kind hat seit gestern ausschlag am bauch",
    "quel vin servir avec un poulet rôti",
    "what is the best time of year to visit japan",
]


async def test_a_shouted_query_routes_as_it_does_in_lower_case() -> None:
    """USE is cased: in capitals, the German query went to general (0.78) and the others lost
    confidence. Shouted text is read in lower case, so nothing about the decision changes."""
    router = LoraRouter.from_config(parse_config(guide_raw()))
    for text in SHOUTABLE:
        quiet = await router.route(request(text))
        shouted = await router.route(request(text.upper()))
        assert quiet.decision.category == shouted.decision.category, text
        assert shouted.decision.confidence == pytest.approx(quiet.decision.confidence, abs=1e-4), text


@pytest.mark.parametrize(("text", "read"), [
    ("HOW DO I UNDO A GIT COMMIT", "how do i undo a git commit"),
    ("MY LANDLORD WON'T RETURN MY DEPOSIT!!! what now", "my landlord won't return my deposit!!! what now"),
    ("What's the difference between DELETE, TRUNCATE and DROP?", None),  # acronyms in a sentence
    ("MySQL 和 PostgreSQL 选哪个比较好", None),  # Latin words amid Chinese, mostly lower case
    ("Excel 里 SUM 出来却是 0", None),
    ("NAT VPC", None),  # too few letters to call it shouting
])
def test_only_shouted_text_is_lower_cased(text: str, read: str | None) -> None:
    assert unshouted(text) == (read if read is not None else text)


@pytest.mark.parametrize(("text", "sentence"), [
    ("how do i undo a git commit", None),  # one sentence: read as a whole only
    ("Morning! Lovely weather, isn't it? Anyway, how do I undo a git commit", "Anyway, how do I undo a git commit"),
    ("My node.js app leaks 3.5 GB a day. Any idea why?", "My node.js app leaks 3.5 GB a day."),  # no end in "3.5"
    ("你好。我的膝盖爬楼梯时很疼，怎么办？谢谢！", "我的膝盖爬楼梯时很疼，怎么办？"),  # CJK ends need no space
    ("Hi. Yo.", "Hi."),  # the first of equals
    ("trailing dots... ", None),
])
def test_longest_sentence(text: str, sentence: str | None) -> None:
    assert longest_sentence(text) == sentence


async def test_a_turn_of_several_sentences_is_also_read_by_its_longest_sentence() -> None:
    """The shipped head reads a turn of several sentences whole and by its longest sentence, both
    encoders in one batch each; a turn of one sentence costs one pass, as before."""
    router = LoraRouter.from_config(parse_config(guide_raw()))
    seen: dict[str, list[list[str]]] = {}
    for encoding in router.classifiers[0]._model._encodings:  # type: ignore[attr-defined]
        batcher, encode = encoding._batcher, encoding.encoder.encode
        name = type(encoding.encoder).__name__
        batcher._fn = lambda texts, name=name, encode=encode: seen.setdefault(name, []).append(list(texts)) or encode(texts)
    question = "Can my landlord keep my whole deposit for a stained carpet?"
    turn = f"Good afternoon! Hope your week is going great. {question}"
    routed = await router.route(request(turn))
    assert routed.decision.category == "legal"
    assert {name: sorted(map(sorted, batches)) for name, batches in seen.items()} == {
        "UseEncoder": [sorted([turn, question])], "OnnxEncoder": [sorted([turn, question])]}
    seen.clear()
    other = "Is a verbal agreement to sublet my flat binding?"
    await router.route(request(other))
    assert seen == {"UseEncoder": [[other]], "OnnxEncoder": [[other]]}


@pytest.mark.parametrize("weight", [-0.1, 1.5])
def test_a_sentence_weight_outside_0_to_1_fails_at_load(tmp_path: Path, weight: float) -> None:
    from litellm_lora_router.classifiers.encoders import USE_ID
    from litellm_lora_router.training import save_head

    save_head(tmp_path, ["general", "legal", "medical", "technical"], np.zeros((4, 512), np.float32),
              np.zeros(4, np.float32), [USE_ID], extra={"sentence_weight": weight})
    raw = guide_raw()
    raw["classifier"]["category_model"].update(model_id=str(tmp_path), category_mapping_path=str(tmp_path / "category_mapping.json"))
    with pytest.raises(ConfigError) as info:
        LoraRouter.from_config(parse_config(raw, "router_config.yaml"))
    assert "classifier.category_model.model_id" in str(info.value) and f"sentence_weight {weight}" in str(info.value)


async def test_history_window_classifies_follow_ups() -> None:
    rows = [json.loads(line) for line in (ROOT / "benchmarks" / "data" / "followups_mom.jsonl").read_text().splitlines()]
    window = LoraRouter.from_config(parse_config(guide_raw(lora_router={"history_window": 2, "history_blend": False})))
    blend = LoraRouter.from_config(parse_config(guide_raw()))  # the default
    last_turn_only = LoraRouter.from_config(parse_config(guide_raw(lora_router={"history_blend": False})))
    missed = 0
    for row in rows:
        for router in (window, blend):
            routed = await router.route({"model": "MoM", "messages": row["messages"]})
            assert routed.decision.category == row["expected_category"], row
        alone = await last_turn_only.route({"model": "MoM", "messages": row["messages"]})
        missed += alone.decision.category != row["expected_category"]
    assert missed >= 1  # the follow-ups alone carry no domain words


async def test_a_conversation_costs_one_minilm_pass_and_the_conversation_head_reads_use() -> None:
    """The shipped head reads a conversation with its USE-only conversation head: MiniLM, most of the
    cost, encodes the last turn alone (it used to encode the conversation too: the p99 of a request)."""
    router = LoraRouter.from_config(parse_config(guide_raw()))
    seen: dict[str, list[str]] = {}
    for encoding in router.classifiers[0]._model._encodings:  # type: ignore[attr-defined]
        batcher, encode = encoding._batcher, encoding.encoder.encode
        name = type(encoding.encoder).__name__
        batcher._fn = lambda texts, name=name, encode=encode: seen.setdefault(name, []).extend(texts) or encode(texts)
    turns = ["my knee has been swollen since the hike", "rest, ice and see a doctor if it persists",
             "and how long should I rest it?"]
    routed = await router.route({"model": "MoM", "messages": [
        {"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]})
    assert routed.decision.category == "medical"
    assert seen == {"UseEncoder": [turns[2], f"{turns[0]}\n{turns[2]}"], "OnnxEncoder": [turns[2]]}


async def test_a_head_with_a_conversation_head_reads_the_conversation_with_it(tmp_path: Path) -> None:
    from litellm_lora_router.classifiers.encoders import USE_ID
    from litellm_lora_router.training import save_head

    labels = ["general", "legal", "medical", "technical"]
    zero = np.zeros((4, 512), dtype=np.float32)
    save_head(tmp_path, labels, zero, np.array([0, 0, 0, 2.0], dtype=np.float32), [USE_ID], temperature=1.0,
              context=(zero, np.array([0, 6.0, 0, 0], dtype=np.float32), [USE_ID]))
    raw = guide_raw()
    raw["classifier"]["category_model"].update(model_id=str(tmp_path), category_mapping_path=str(tmp_path / "category_mapping.json"),
                                               threshold=0.0)
    router = LoraRouter.from_config(parse_config(raw))
    alone = await router.route(request("and then?"))
    conversation = await router.route({"model": "MoM", "messages": [
        {"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}, {"role": "user", "content": "and then?"}]})
    assert alone.decision.category == "technical"  # the main head: bias 2 for technical
    assert conversation.decision.category == "legal"  # (2 + 6) / 2 for legal beats 2 / 2 for technical


async def test_micro_batching_shares_passes_and_bounds_the_queue() -> None:
    raw = guide_raw(lora_router={"encoder": {"batch_window_ms": 20, "max_batch": 16}})
    router = LoraRouter.from_config(parse_config(raw))
    texts = [f"question {i} about my python code" for i in range(32)]
    results = await asyncio.gather(*(router.route(request(t)) for t in texts))
    assert {r.decision.model for r in results} == {"technical-lora"}
    batcher = router.classifiers[0]._model._encodings[0]._batcher  # type: ignore[attr-defined]
    assert batcher.batches < 32
    tight = LoraRouter.from_config(parse_config(guide_raw(lora_router={"encoder": {"max_queue": 2, "batch_window_ms": 50}})))
    burst = await asyncio.gather(*(tight.route(request(f"{t} now")) for t in texts))
    reasons = {r.decision.reason for r in burst}
    assert "classifier_error" in reasons and None in reasons  # refused at once when full, never queued forever


async def test_batching_off_bounds_the_work_waiting_for_the_thread() -> None:
    raw = guide_raw(lora_router={"encoder": {"batching": False, "max_queue": 2}})
    tight = LoraRouter.from_config(parse_config(raw))
    texts = [f"question {i} about my python code, unbatched" for i in range(32)]
    burst = await asyncio.gather(*(tight.route(request(text)) for text in texts))
    reasons = {r.decision.reason for r in burst}
    assert "classifier_error" in reasons and None in reasons  # refused at once when full, never queued without bound


async def test_encoder_results_are_kept_under_a_digest_not_the_prompt() -> None:
    router = LoraRouter.from_config(parse_config(guide_raw()))
    await router.route(request("a prompt that must not stay in memory: zebra-7731"))
    recent = router.classifiers[0]._model._encodings[0]._recent  # type: ignore[attr-defined]
    assert recent.maxsize == 1024 and len(recent) == 1
    assert all(isinstance(key, bytes) and len(key) == 16 for key in recent)


def test_inference_threads_are_bounded_and_never_spin() -> None:
    import torch

    from litellm_lora_router.classifiers.encoders import build_encoder
    from litellm_lora_router.config import EncoderConfig

    options = build_encoder(EncoderConfig(backend="onnx"))._session.get_session_options()  # type: ignore[attr-defined]
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert options.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
    build_encoder(EncoderConfig(backend="torch"))
    assert torch.get_num_threads() == 1


def test_eval_cli_json(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "router_config.yaml"
    config.write_text(yaml.safe_dump(guide_raw()))
    assert cli(["eval", "--input", str(ROOT / "benchmarks" / "data" / "chat_eval_mom.jsonl"), "--config", str(config), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"n", "accuracy", "coverage", "accuracy_routed", "macro_f1", "per_category", "confusion",
                           "latency_ms", "by"}
    assert report["n"] == 48 and report["accuracy"] > 0.5 and set(report["latency_ms"]) == {"p50", "p99"}
    assert np.array(report["confusion"]["matrix"]).sum() == 48


async def test_a_conversation_head_that_does_not_fit_fails_at_load(tmp_path: Path) -> None:
    """A conversation head of the wrong width used to load and fail every multi-turn request."""
    from litellm_lora_router.classifiers.encoders import USE_ID
    from litellm_lora_router.training import save_head

    labels = ["general", "legal", "medical", "technical"]
    save_head(tmp_path, labels, np.zeros((4, 512), np.float32), np.zeros(4, np.float32), [USE_ID],
              context=(np.zeros((4, 384), np.float32), np.zeros(4, np.float32), [USE_ID]))
    raw = guide_raw()
    raw["classifier"]["category_model"].update(model_id=str(tmp_path), category_mapping_path=str(tmp_path / "category_mapping.json"))
    with pytest.raises(ConfigError) as info:
        LoraRouter.from_config(parse_config(raw, "router_config.yaml"))
    assert "classifier.category_model.model_id" in str(info.value)
    assert "context_weight (4, 384)" in str(info.value) and "512 encoder dimensions" in str(info.value)


def _tuned_head(directory: Path, encoder_name: str = "encoder.onnx") -> None:
    """A head over USE and a fine-tuned MiniLM file of its own (the int8 MiniLM stands in for one);
    only the bias speaks (technical), so the decision does not depend on the vectors."""
    import shutil

    from litellm_lora_router.classifiers.encoders import USE_ID, default_onnx_path
    from litellm_lora_router.training import save_head

    labels = ["general", "legal", "medical", "technical"]
    save_head(directory, labels, np.zeros((4, 512 + 384), np.float32), np.array([0, 0, 0, 4.0], np.float32),
              [USE_ID, f"tuned-minilm:{encoder_name}"], context=(np.zeros((4, 512), np.float32),
                                                                np.zeros(4, np.float32), [USE_ID]))
    shutil.copy(default_onnx_path(), directory / "encoder.onnx")


def _head_raw(directory: Path, **encoder: Any) -> dict[str, Any]:
    raw = guide_raw(lora_router={"encoder": encoder} if encoder else {})
    raw["classifier"]["category_model"].update(model_id=str(directory),
                                               category_mapping_path=str(directory / "category_mapping.json"))
    return raw


@pytest.mark.parametrize("backend", ["onnx", "openai"])
async def test_a_heads_fine_tuned_encoder_is_read_from_its_directory_on_any_backend(tmp_path: Path, backend: str) -> None:
    from litellm_lora_router.classifiers.encoders import OnnxEncoder

    _tuned_head(tmp_path)
    options = {"backend": backend, **({"remote": {"base_url": "http://127.0.0.1:9/v1"}} if backend == "openai" else {})}
    router = LoraRouter.from_config(parse_config(_head_raw(tmp_path, **options)))
    tuned = router.classifiers[0]._model._head.encodings[1].encoder  # type: ignore[attr-defined]
    assert isinstance(tuned, OnnxEncoder)  # runs here even when the other encoders run on a server
    assert Path(tuned._session._model_path) == (tmp_path / "encoder.onnx").resolve()
    if backend == "onnx":
        assert (await router.route(request("hello there"))).decision.category == "technical"
    await router.aclose()


@pytest.mark.parametrize("name", ["missing.onnx", "../encoder.onnx", "/etc/encoder.onnx"])
def test_a_heads_fine_tuned_encoder_must_be_a_file_in_its_directory(tmp_path: Path, name: str) -> None:
    _tuned_head(tmp_path / "head", name)
    with pytest.raises(ConfigError) as info:
        LoraRouter.from_config(parse_config(_head_raw(tmp_path / "head"), "router_config.yaml"))
    assert "classifier.category_model.model_id" in str(info.value)
    if name == "missing.onnx":
        assert f"fine-tuned encoder {str((tmp_path / 'head' / name).resolve())!r} is missing" in str(info.value)
    else:
        assert "expected some of" in str(info.value) and "or tuned-minilm:FILE" in str(info.value)


def test_a_heads_fine_tuned_encoder_that_onnx_runtime_cannot_load_fails_start_up_naming_the_key(tmp_path: Path) -> None:
    """A file cut short used to escape as ONNX Runtime's own error, naming no key."""
    _tuned_head(tmp_path)
    whole = (tmp_path / "encoder.onnx").read_bytes()
    (tmp_path / "encoder.onnx").write_bytes(whole[: len(whole) // 100])
    with pytest.raises(ConfigError) as info:
        LoraRouter.from_config(parse_config(_head_raw(tmp_path), "router_config.yaml"))
    assert "classifier.category_model.model_id" in str(info.value) and "could not be loaded" in str(info.value)


async def test_a_heads_logits_read_use_then_its_fine_tuned_encoder_in_the_order_it_names(tmp_path: Path) -> None:
    """The head's weight columns are [USE vector, fine-tuned vector]: random weights make a swapped or
    wrong vector show in the probabilities."""
    from litellm_lora_router.classifiers.encoders import USE_ID, build_encoder
    from litellm_lora_router.config import EncoderConfig
    from litellm_lora_router.training import save_head

    _tuned_head(tmp_path)
    rng = np.random.default_rng(0)
    weight, bias = rng.normal(size=(4, 512 + 384)).astype(np.float32), rng.normal(size=4).astype(np.float32)
    save_head(tmp_path, ["general", "legal", "medical", "technical"], weight, bias,
              [USE_ID, "tuned-minilm:encoder.onnx"], temperature=0.5,
              context=(np.zeros((4, 512), np.float32), np.zeros(4, np.float32), [USE_ID]))
    router = LoraRouter.from_config(parse_config(_head_raw(tmp_path)))
    text = "my sourdough starter smells like nail polish"
    probs, _ = await router.classifiers[0]._model.probabilities(text)  # type: ignore[attr-defined]
    vectors = [build_encoder(EncoderConfig(), model=m).encode([text])[0][0]
               for m in (USE_ID, f"tuned-minilm:{tmp_path / 'encoder.onnx'}")]
    logits = (weight @ np.concatenate(vectors) + bias) / 0.5
    expected = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    assert probs == pytest.approx(expected, abs=1e-5)
    await router.aclose()


def _encoder_files(tmp_path: Path, case: str) -> tuple[dict[str, str], str, Path]:
    """(lora_router.encoder settings, the key at fault, the file at fault) for one kind of bad file."""
    from litellm_lora_router.classifiers.encoders import default_model_dir, default_onnx_path

    good_dir, bad_dir = tmp_path / "minilm", tmp_path / "corrupt"
    good_dir.mkdir()
    bad_dir.mkdir()
    (good_dir / "tokenizer.json").write_bytes((default_model_dir() / "tokenizer.json").read_bytes())
    (bad_dir / "tokenizer.json").write_text("version https://git-lfs.github.com/spec/v1")  # an LFS pointer
    missing = tmp_path / "missing.onnx"
    return {
        "missing onnx": ({"onnx_path": str(missing)}, "onnx_path", missing),
        "missing model dir": ({"model_path": str(tmp_path / "no-such-dir")}, "model_path", tmp_path / "no-such-dir"),
        "corrupt tokenizer": ({"model_path": str(bad_dir)}, "model_path", bad_dir / "tokenizer.json"),
        "both set, onnx missing": ({"model_path": str(good_dir), "onnx_path": str(missing)}, "onnx_path", missing),
        "both set, tokenizer corrupt": ({"model_path": str(bad_dir), "onnx_path": str(default_onnx_path())},
                                        "model_path", bad_dir / "tokenizer.json"),
        "both bad": ({"model_path": str(tmp_path / "no-such-dir"), "onnx_path": str(missing)}, "onnx_path",
                     missing),  # ONNX Runtime's file is loaded first
    }[case]


@pytest.mark.parametrize("section", ["embedding_rules", "category_model"])
@pytest.mark.parametrize("case", ["missing onnx", "missing model dir", "corrupt tokenizer", "both set, onnx missing",
                                  "both set, tokenizer corrupt", "both bad"])
def test_an_encoder_file_that_cannot_be_loaded_fails_start_up_naming_its_key(
        tmp_path: Path, section: str, case: str) -> None:
    """`lora_router.encoder.onnx_path` or `model_path` naming nothing loadable used to fail as a bare
    ValueError/OSError, or `tokenizers`' bare Exception for a tokenizer.json it cannot parse (embedding
    rules), or be blamed on `classifier.category_model.model_id` (a head over MiniLM): the message must
    name the key whose file failed to load (with both set, the one that failed), and the file."""
    encoder, key, at_fault = _encoder_files(tmp_path, case)
    raw = guide_raw(lora_router={"encoder": {"backend": "onnx", **encoder}})
    if section == "embedding_rules":
        raw.pop("classifier")
        raw["embedding_rules"] = EMBEDDING_RULES
    else:
        seed = [("how do I fix this python bug", "technical"), ("what are the symptoms of flu", "medical")] * 20
        from litellm_lora_router.training import train_domain

        train_domain(seed, tmp_path / "head", encoders=[MINILM_ID])
        head = tmp_path / "head"
        raw["classifier"]["category_model"].update(model_id=str(head),
                                                   category_mapping_path=str(head / "category_mapping.json"))
    (tmp_path / "router_config.yaml").write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError) as info:
        LoraRouter.from_config(load_config(tmp_path / "router_config.yaml"))
    assert info.value.key_paths == [f"lora_router.encoder.{key}"]
    assert str(at_fault) in str(info.value)
    assert str(info.value).startswith(f"{tmp_path / 'router_config.yaml'}: lora_router.encoder.{key}: expected ")
