"""Routing accuracy machinery: the corpus split, evaluation exclusions, the shipped default models and
their cache, `lora-router eval --by/--where/--split`, conversations, languages, the installed wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from litellm_lora_router import LoraRouter, parse_config
from litellm_lora_router.cli import main as cli
from litellm_lora_router.datasets import (
    corpus_rows,
    corpus_split,
    excluded_hashes,
    normalized_hash,
    row_text,
    train_extra_rows,
)
from litellm_lora_router.training import DEFAULT_MODELS, SHIPPED_DIR, default_datasets, train_defaults, training_key

from .conftest import ROOT
from .conftest import SHIPPED_ROUTER_CONFIG as DEFAULT_ROUTER_CONFIG

VSR_QUERIES = next(
    (
        d / "shared" / "vsr_test_queries.jsonl"
        for d in ROOT.parents
        if (d / "shared" / "vsr_test_queries.jsonl").is_file()
    ),
    ROOT.parent / "shared" / "vsr_test_queries.jsonl",
)


def test_split_is_disjoint_complete_and_keeps_conversations_together() -> None:
    split = corpus_split()
    ids = [set(r["id"] for r in split[p]) for p in ("train", "dev", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set().union(*ids) == {r["id"] for r in corpus_rows()}
    first_turn = {
        p: {normalized_hash(row_text(r, 0) if "text" in r else r["messages"][0]["content"]) for r in split[p]}
        for p in ("train", "dev", "test")
    }
    assert not (first_turn["train"] & first_turn["test"]) and not (first_turn["dev"] & first_turn["test"])
    for kind in ("plain", "hard", "multilingual", "multiturn"):
        test_share = sum(r["kind"] == kind for r in split["test"]) / sum(r["kind"] == kind for r in corpus_rows())
        assert 0.15 <= test_share <= 0.25, kind


@pytest.mark.skipif(not VSR_QUERIES.is_file(), reason="needs ../shared/vsr_test_queries.jsonl")
def test_no_vsr_query_nor_held_out_text_is_trained_on_from_any_directory(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Neither head trains on a VSR test query, nor on any text the router reads of a dev, dev2 or
    test row: the last turn, the last two user turns, the whole conversation (a held-out
    conversation's last turn, a short follow-up, was once trained on as a text of its own)."""
    monkeypatch.chdir(tmp_path)  # the exclusion ships with the package: the working directory does not matter
    vsr = {normalized_hash(json.loads(line)["text"]) for line in VSR_QUERIES.read_text().splitlines() if line.strip()}
    assert vsr <= excluded_hashes()
    data = default_datasets()
    trained = {normalized_hash(text) for model in data.values()
               for text, _, _ in model["train"] + model.get("framed", [])}
    assert data["mom-domain-classifier"]["framed"] and not trained & vsr
    split = corpus_split()
    held_out = {normalized_hash(row_text(r, w)) for p in ("dev", "dev2", "test") for r in split[p] for w in (0, 1, 9)}
    assert not trained & held_out


def test_training_only_rows_that_repeat_or_nearly_repeat_a_held_out_row_are_dropped(tmp_path: Path) -> None:
    split = corpus_split()
    dev, test = split["dev"][0], next(r for r in split["test"] if "messages" in r)
    plain = next(r for r in split["dev"] if "text" in r and len(str(r["text"]).split()) >= 8)
    words = str(plain["text"]).split()
    near = {**plain, "id": "x-near", "text": " ".join([*words[:-1], "zzyzx"])}  # one word changed: no hash matches
    fresh = {"id": "x-new", "text": "which cheese goes best with a dry riesling", "label": "general",
             "kind": "plain", "language": "en"}
    lines = [json.dumps(r) for r in (dev, near, {**test, "id": "x-copy"}, fresh)]
    assert normalized_hash(near["text"]) != normalized_hash(str(plain["text"]))
    (tmp_path / "extra.jsonl").write_text("\n".join(lines) + "\n")
    assert [r["id"] for r in train_extra_rows(tmp_path)] == ["x-new"]
    trained = {normalized_hash(t) for t, _, _ in default_datasets()["mom-domain-classifier"]["train"]}
    held_out = {normalized_hash(row_text(r, 9)) for p in ("dev", "dev2", "test") for r in split[p]}
    assert len(train_extra_rows()) > 7000 and len(split["dev2"]) > 600 and not trained & held_out
    dev2 = split["dev2"][0]
    (tmp_path / "extra.jsonl").write_text(json.dumps({**dev2, "id": "x-dev2"}) + "\n")
    assert train_extra_rows(tmp_path) == []  # the second dev set is held out too


def test_shipped_default_models_match_the_code_and_data() -> None:
    """The builds in the package are what `train-defaults --retrain` would build now (else retrain)."""
    for model in DEFAULT_MODELS:
        meta = json.loads((SHIPPED_DIR / model.name / "lora_router_head.json").read_text())
        assert meta["training_key"] == training_key(model), (
            f"stale shipped build of {model.name}: run train-defaults --retrain"
        )


async def test_temperature_is_calibrated_on_the_logits_the_router_computes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The int8 encoders quantize per batch, so a text's vector depends on its batch companions: the
    calibration logits must be the router's own, a conversation's texts encoded together, and a turn
    of several sentences read by its longest sentence too, as the head's `sentence_weight` says."""
    import numpy as np

    from litellm_lora_router import training

    captured: list[Any] = []
    real = training.calibrate_temperature
    monkeypatch.setattr(training, "calibrate_temperature", lambda logits, target: captured.append(logits) or real(logits, target))
    turns = ("my knee has been swollen since the hike", "ok", "and what then?")
    rows = [(t, label, 1.0) for t, label in training.datasets.seed_rows()]
    polite = "Good morning! How do I undo my last git commit without losing the changes? Thanks a lot."
    calibrate = [(turns[2], "\n".join(turns[::2]), "medical"), ("undo my last git commit", "undo my last git commit", "technical"),
                 ("best pizza dough flour", "best pizza dough flour", "general"), (polite, polite, "technical")]
    model = next(m for m in training.DEFAULT_MODELS if m.name == "mom-domain-classifier")
    head = tmp_path / "head"
    training.build_default(model, {"train": rows, "calibrate": calibrate}, head, lambda _: None, "k")
    raw = {**yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text()), "classification_cache": {"enabled": False}}
    raw["classifier"]["category_model"].update(model_id=str(head), category_mapping_path=str(head / "category_mapping.json"),
                                               threshold=0.0)
    router = LoraRouter.from_config(parse_config(raw))
    meta = json.loads((head / "lora_router_head.json").read_text())
    temperature = meta["temperature"]
    assert meta["sentence_weight"] == model.sentence_weight > 0
    try:
        for (last, _, _), logits in zip(calibrate, captured[0], strict=True):
            request = convo(*turns) if last == turns[2] else convo(last)
            classification, _ = await router.classify_request(request)
            expected = np.exp(logits / temperature - (logits / temperature).max())
            assert classification.confidence == pytest.approx(float(expected.max() / expected.sum()), abs=1e-5)
    finally:
        await router.aclose()


@pytest.mark.usefixtures("default_models")
async def test_calibration_requests_are_what_the_router_reads_of_each_dev_row() -> None:
    """The temperature is fitted on (last turn, conversation) pairs: for every dev row they are
    the texts the router classifies (a topic switch starts the conversation there too)."""
    from litellm_lora_router.training import calibration_request

    router = guide_router()
    try:
        switched = 0
        for row in corpus_split()["dev"]:
            request = convo(row["text"]) if "text" in row else {"model": "MoM", "messages": row["messages"]}
            classified, context = router.texts_to_classify(request)
            assert calibration_request(row) == (classified.text, context or classified.text, row["label"]), row["id"]
            switched += "messages" in row and context is None
        assert switched > 0  # dev has conversations whose last turn changes the subject
    finally:
        await router.aclose()


def test_train_defaults_copies_a_build_and_replaces_a_stale_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LORA_ROUTER_CACHE_DIR", str(tmp_path / "cache"))
    lines: list[str] = []
    built = train_defaults(tmp_path / "models", lines.append)
    assert sorted(p.name for p in built) == ["mmlu-domain-classifier", "mom-domain-classifier"]
    assert any("copied" in line for line in lines)
    assert train_defaults(tmp_path / "models", lines.append) == []  # second run: nothing to do
    head = tmp_path / "models" / "mom-domain-classifier" / "lora_router_head.json"
    head.write_text(json.dumps({**json.loads(head.read_text()), "training_key": "old"}))
    assert [p.name for p in train_defaults(tmp_path / "models", lines.append)] == ["mom-domain-classifier"]
    (tmp_path / "models" / "mom-domain-classifier" / "encoder.onnx").unlink()  # a head that is not whole is stale
    assert [p.name for p in train_defaults(tmp_path / "models", lines.append)] == ["mom-domain-classifier"]
    assert (tmp_path / "models" / "mom-domain-classifier" / "encoder.onnx").is_file()
    own = tmp_path / "models2" / "mom-domain-classifier"
    own.mkdir(parents=True)
    (own / "config.json").write_text("{}")  # a user's own HF model directory is never overwritten
    train_defaults(tmp_path / "models2", lines.append)
    assert (own / "config.json").is_file() and not (own / "lora_router_head.json").exists()


def test_eval_by_where_split_and_coverage(capsys: pytest.CaptureFixture[str], default_models: Path) -> None:
    assert (
        cli(
            [
                "eval",
                "--split",
                "dev",
                "--where",
                "kind=multiturn",
                "--by",
                "language",
                "--config",
                str(DEFAULT_ROUTER_CONFIG),
                "--json",
            ]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    dev_multiturn = [r for r in corpus_split()["dev"] if r["kind"] == "multiturn"]
    assert report["n"] == len(dev_multiturn)
    assert set(report["by"]["language"]) == {r["language"] for r in dev_multiturn}
    assert sum(v["n"] for v in report["by"]["language"].values()) == report["n"]
    assert 0.0 <= report["coverage"] <= 1.0 and report["accuracy"] <= report["coverage"]
    assert cli(["eval", "--split", "dev2", "--where", "kind=multiturn", "--where", "language=de",
                "--config", str(DEFAULT_ROUTER_CONFIG), "--json"]) == 0
    dev2 = json.loads(capsys.readouterr().out)
    assert dev2["n"] == sum(r["kind"] == "multiturn" and r["language"] == "de" for r in corpus_split()["dev2"]) > 0
    assert cli(["eval", "--split", "dev", "--where", "kind", "--config", str(DEFAULT_ROUTER_CONFIG)]) == 2
    assert "FIELD=VALUE" in capsys.readouterr().err


def guide_router() -> LoraRouter:
    import yaml

    raw = yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text())
    for key in ("model_id", "category_mapping_path"):
        raw["classifier"]["category_model"][key] = str(ROOT / raw["classifier"]["category_model"][key])
    raw["classification_cache"] = {"enabled": False}
    return LoraRouter.from_config(parse_config(raw))


def convo(*turns: str) -> dict[str, Any]:
    messages = [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]
    return {"model": "MoM", "messages": messages}


@pytest.mark.usefixtures("default_models")
async def test_follow_up_routes_by_the_conversation_and_a_topic_switch_by_its_last_turn() -> None:
    conversations = {
        "follow-up": (
            ("My knee swells up after every run and it aches at night.",
             "That can come from overuse or a meniscus problem.",
             "and how long should I rest it?"),
            "medical",
        ),
        "topic switch": (
            ("My landlord won't give back my deposit.",
             "You can send a formal demand letter.",
             "thanks! unrelated: how do I undo my last git commit but keep the changes?"),
            "technical",
        ),
    }
    router = guide_router()  # one router for both: building it loads the domain model
    try:
        for name, (turns, category) in conversations.items():
            routed = await router.route(convo(*turns))
            assert routed.decision.category == category, name
    finally:
        await router.aclose()


@pytest.mark.usefixtures("default_models")
@pytest.mark.parametrize(
    ("category", "queries"),
    [
        (
            "medical",
            [
                "My child has had a fever of 39 degrees since yesterday, should I see a doctor?",
                "Mi hijo tiene fiebre de 39 grados desde ayer, ¿debería llevarlo al médico?",
                "Mein Kind hat seit gestern 39 Grad Fieber, sollte ich zum Arzt gehen?",
                "我的孩子从昨天开始发烧39度，需要去看医生吗？",
            ],
        ),
        (
            "legal",
            [
                "Can my landlord keep my whole deposit for normal wear and tear?",
                "Mon propriétaire peut-il garder toute ma caution pour une usure normale ?",
                "Il mio padrone di casa può trattenere tutta la cauzione per la normale usura?",
                "大家は通常の損耗で敷金を全額返さないことができますか？",
            ],
        ),
    ],
)
async def test_a_query_in_another_language_routes_like_its_english_equivalent(
    category: str, queries: list[str]
) -> None:
    router = guide_router()
    try:
        for query in queries:
            routed = await router.route(convo(query))
            assert routed.decision.category == category, query
    finally:
        await router.aclose()


#: Conversations whose last turn changes the subject (the last one asks a follow-up after the
#: switch), and the category of the new subject. None is a corpus row.
TOPIC_SWITCHES = [
    (["My Python script keeps throwing KeyError when it reads a JSON config file, how do I debug it?",
      "that fixed it. separate question, do we need a privacy policy if we only collect staff emails?"], "legal"),
    (["How do I treat a mild burn on my hand from hot oil?", "ok. unrelated, what's a nice weekend trip from Madrid?"],
     "general"),
    (["My landlord is keeping my deposit for normal wear and tear, what are my rights in the UK?",
      "got it. totally different, what should I plant in a shady corner of the garden?"], "general"),
    (["My toddler has a fever of 39 and is not eating, when should I worry?",
      "thanks. unrelated but how do I move my photos from an old iPhone to a new Android phone?"], "technical"),
    (["Can you recommend a good sci-fi series?", "nice. random question, can my landlord enter my flat without telling me first?"],
     "legal"),
    (["Mein Kubernetes-Pod startet ständig neu, wie finde ich den Grund?",
      "läuft jetzt. anderes Thema, was koche ich heute Abend für vier Personen?"], "general"),
    (["Mon employeur refuse de me payer mes heures supplémentaires, que faire ?",
      "merci. au fait, tu as une idée de dessert rapide pour ce soir ?"], "general"),
    (["我的房东不退押金，我该怎么办？", "明白了。换个话题，我最近老是头晕，需要看医生吗？"], "medical"),
    (["Como faço backup do meu WhatsApp no Android?", "deu certo. mudando de assunto, posso ser demitida durante a gravidez?"],
     "legal"),
    (["¿Qué ver en Sevilla en dos días?", "genial. cambiando de tema, ¿cómo configuro una VPN en mi router de casa?"],
     "technical"),
    (["Is it normal to feel dizzy after donating blood?",
      "ok good. switching gears, how do I set up a python virtual environment on windows?"], "technical"),
    (["What's a good pasta for a quick dinner?", "ok. unrelated, my landlord won't return my deposit after I moved out",
      "and if he still refuses?"], "legal"),
]


@pytest.mark.usefixtures("default_models")
async def test_a_turn_that_changes_the_subject_routes_by_the_new_subject() -> None:
    """Read with the earlier turns, 3 of these 12 went back to the old subject ("...separate
    question, do we need a privacy policy..." to technical); a turn that says it changes the subject
    now starts the conversation the router reads. At most one may miss."""
    router = guide_router()
    try:
        missed = []
        for turns, category in TOPIC_SWITCHES:
            routed = await router.route(convo(*[t for turn in turns for t in (turn, "Sure, here is what I suggest.")][:-1]))
            if routed.decision.category != category:
                missed.append((turns[-1], category, routed.decision.category))
        assert len(missed) <= 1, missed
    finally:
        await router.aclose()


#: Queries and the frames put around them in the tests below: none of these frames is one the heads
#: are trained with (`training.OPENERS`, `training.CLOSERS`).
FRAMED_QUERIES = [
    "my kubernetes pod keeps restarting, how do i find out why",
    "can my landlord keep my whole deposit for a stained carpet",
    "is it safe to take ibuprofen with my blood pressure pills",
    "why does my sql query get slower every week",
    "my employer has not paid me for three weeks, what can i do",
    "my toddler has had a fever of 39 for two days",
    "how do i stop a memory leak in my node app",
    "can i copy a logo i found on google for my shop",
    "what are the side effects of metformin",
    "how do I set up port forwarding on my router",
    "do I need a lawyer to write a will",
    "my knee hurts when I climb stairs",
    "mi jefe no me paga las horas extra, que puedo hacer",
    "mein kind hat seit gestern ausschlag am bauch",
    "what should i cook for a dinner party of eight",
]
#: Greetings and thanks around a question; and a sentence of small talk before it.
FRAMES = ["Hi there, hope you are well. {} Thanks in advance!", "hey, quick question: {}",
          "{} Many thanks, have a lovely day!"]
SMALL_TALK_FRAME = "Good afternoon! Hope your week is going great. {}"


async def changed_routes(frames: list[str]) -> list[tuple[str, str | None, str | None]]:
    """(framed query, bare category, framed category) wherever a frame changed the route."""
    router = guide_router()
    try:
        changed = []
        for query in FRAMED_QUERIES:
            bare = (await router.route(convo(query))).decision.category
            for frame in frames:
                framed = (await router.route(convo(frame.format(query)))).decision.category
                if framed != bare:
                    changed.append((frame.format(query), bare, framed))
        return changed
    finally:
        await router.aclose()


@pytest.mark.usefixtures("default_models")
async def test_a_greeting_or_thanks_rarely_changes_the_route() -> None:
    """A polite frame says nothing about the domain. Before the heads learned from framed copies,
    5 of these 45 framed queries left their bare query's category (for general, as small talk, or a
    fallback); at most 5% (2) may."""
    changed = await changed_routes(FRAMES)
    assert len(changed) <= 2, changed


@pytest.mark.usefixtures("default_models")
async def test_a_sentence_of_small_talk_before_the_question_rarely_changes_the_route() -> None:
    """A turn is read by its longest sentence too: before, 5 of these 15 queries left their bare
    query's category when a sentence of small talk came first (for general, or a fallback)."""
    changed = await changed_routes([SMALL_TALK_FRAME])
    assert len(changed) <= 1, changed


def test_no_test_frame_is_a_training_frame() -> None:
    """No test frame begins with a training greeting or ends with a training thank-you (words such
    as "thanks" are shared): the frames above measure what the heads learned, not what they were
    shown."""
    from litellm_lora_router.training import CLOSERS, OPENERS

    for frame in [*FRAMES, SMALL_TALK_FRAME]:
        head, tail = (part.strip().lower() for part in frame.split("{}"))
        assert not any(head.startswith(o.strip().lower()) for o in OPENERS if head), frame
        assert not any(tail.endswith(c.strip().lower()) for c in CLOSERS if tail), frame


@pytest.mark.usefixtures("default_models")
async def test_embedding_rules_and_domain_head_over_one_encoder_share_one_service() -> None:
    import yaml

    raw = yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text())
    for key in ("model_id", "category_mapping_path"):
        raw["classifier"]["category_model"][key] = str(ROOT / raw["classifier"]["category_model"][key])
    raw["embedding_rules"] = [{"category": "technical", "threshold": 0.99, "keywords": ["kubernetes pod crash loop"]}]
    raw["lora_router"] = {"encoder": {"model": "universal-sentence-encoder-multilingual-3"}}
    router = LoraRouter.from_config(parse_config(raw))
    try:
        embedding, domain = router.classifiers
        assert embedding._encoding is domain._model._encodings[0]  # type: ignore[attr-defined]
        result, _ = await router.classify("wie setze ich einen kubernetes pod zurück, der ständig abstürzt?")
        assert result is not None and result.category == "technical"
    finally:
        await router.aclose()


def test_installed_wheel_has_its_data_and_routes(tmp_path: Path) -> None:
    """`pip install .` (a wheel, not the editable install): train-defaults, then eval from it."""
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [wheel] = wheels.glob("*.whl")
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    work = tmp_path / "work"
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "LORA_ROUTER_CACHE_DIR": str(tmp_path / "cache")}

    def in_work(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)

    where = in_work("-c", "import litellm_lora_router; print(litellm_lora_router.__file__)")
    assert where.returncode == 0 and where.stdout.startswith(str(site))
    trained = in_work("-m", "litellm_lora_router.cli", "train-defaults")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert "copied the build" in trained.stderr and (work / "models" / "mom-domain-classifier" / "head.npz").is_file()
    config = site / "litellm_lora_router" / "defaults" / "router_config.yaml"
    evaluated = in_work("-m", "litellm_lora_router.cli", "eval", "--split", "test", "--where", "kind=plain",
                        "--config", str(config), "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    assert json.loads(evaluated.stdout)["n"] > 100


def test_fine_tuning_refuses_fewer_rows_than_a_batch(tmp_path: Path) -> None:
    """With fewer than 32 rows no step ran (and the schedule divided by zero steps)."""
    from litellm_lora_router.training import fine_tune_minilm

    with pytest.raises(ValueError, match="at least one epoch of one batch"):
        fine_tune_minilm([("a", "technical"), ("b", "medical")], ["medical", "technical"], tmp_path / "e.onnx", 2)
