"""The candidate comparisons behind the four-label default (README, "Accuracy"), on dev and dev2 only.

`python benchmarks/candidates.py [--fine-tune]` (about 4 minutes on 2 cores; `--fine-tune` adds
all-MiniLM-L6-v2 fine-tuned end to end as `train-defaults` does, about 9 more: 13 in all). Test rows are never
read.

A scratch comparison, not the router: every text is embedded once in batches (the router embeds a
request's texts in their own micro-batch, and the int8 encoders quantize per batch), heads are fitted
on the shipped training rows, and each candidate's softmax temperature is calibrated on dev as
`train-defaults` does. Figures land within a few rows of `benchmarks/accuracy.py`'s.

Sections 1 and 2 are the previous round's comparison, whose last-turn head was the previous default
(USE + MiniLM, C=1). Compared, for the conversation (the last turn through that head):
- the same USE + MiniLM head on the user turns joined (the previous default: a second MiniLM pass);
- a USE-only conversation head, C=1 and C=4 (shipped: C=4);
- MiniLM reading only the earlier turns, or reusing the last turn's MiniLM vector;
then, with the shipped conversation head: character n-gram TF-IDF beside the encoders; skipping the
conversation when the last turn alone is confident; a learned blend of both heads' logits (fitted on
out-of-fold logits of the training conversations). Section 3 (`--fine-tune`): all-MiniLM-L6-v2
fine-tuned on the same rows (the shipped recipe, its int8 export read back), alone and blended with
the USE head (C=4) on the last turn at several weights (shipped: 0.35), the conversation read by that
USE head.
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from litellm_lora_router.classifiers.encoders import MINILM_ID, TUNED_MINILM_PREFIX, USE_ID  # noqa: E402
from litellm_lora_router.datasets import corpus_split, row_text, train_extra_rows  # noqa: E402
from litellm_lora_router.messages import text_to_classify  # noqa: E402
from litellm_lora_router.messages import MAX_TURNS  # noqa: E402
from litellm_lora_router.training import (  # noqa: E402
    TUNED_FILE,
    _softmax,
    calibrate_temperature,
    default_datasets,
    embed_all,
    fine_tune_minilm,
    fit_head,
)

Rows = list[dict[str, Any]]
PARTS = ("dev", "dev2")


def earlier_turns(row: dict[str, Any]) -> str:
    """A conversation's user turns before the last one, joined (the last turn for a single text)."""
    if "messages" not in row:
        return str(row["text"])
    messages = row["messages"]
    last = max(i for i, m in enumerate(messages) if m["role"] == "user")
    return text_to_classify(messages[:last], MAX_TURNS - 1) or row_text(row, 0)


class Vectors:
    """Unit vectors of every text any candidate reads, per encoder, embedded once."""

    def __init__(self, texts: Sequence[str]) -> None:
        self._by = {e: embed_all(texts, e, progress=print) for e in (USE_ID, MINILM_ID)}

    def __call__(self, encoder: str, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._by[encoder][t] for t in texts])

    def both(self, texts: Sequence[str]) -> np.ndarray:
        return np.hstack([self(USE_ID, texts), self(MINILM_ID, texts)])


def score(logits: np.ndarray, rows: Rows, labels: list[str], temperature: float) -> str:
    """Accuracy (a fallback below the guide's 0.6 counts as wrong), then per kind."""
    target = np.array([labels.index(r["label"]) for r in rows])
    probs = _softmax(logits / temperature)
    right = (probs.argmax(1) == target) & (probs.max(1) >= 0.6)
    kinds = collections.defaultdict(list)
    for ok, row in zip(right, rows, strict=True):
        kinds[row["kind"]].append(ok)
    return f"{right.mean():.3f} (" + ", ".join(f"{k} {np.mean(v):.3f}" for k, v in sorted(kinds.items())) + ")"


def report(name: str, logits_for: Callable[[str], np.ndarray], split: dict[str, Rows], labels: list[str]) -> None:
    dev_target = np.array([labels.index(r["label"]) for r in split["dev"]])
    temperature = calibrate_temperature(logits_for("dev"), dev_target)
    figures = " | ".join(f"{part} {score(logits_for(part), split[part], labels, temperature)}" for part in PARTS)
    print(f"{name:<58} T={temperature:.2f} | {figures}", flush=True)


def blend(last: np.ndarray, context: np.ndarray, conversation: np.ndarray) -> np.ndarray:
    """The router's blend: the mean of the two logits for a conversation, the last turn's alone else."""
    return np.where(conversation[:, None], (last + context) / 2, last)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--fine-tune", action="store_true", help="also fine-tune MiniLM (about 15 minutes)")
    args = parser.parse_args()
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import KFold

    split = corpus_split()
    train = [(t, label) for t, label, _ in default_datasets()["mom-domain-classifier"]["train"]]
    texts, y = [t for t, _ in train], [label for _, label in train]
    conversations = [r for r in split["train"] + train_extra_rows() if "messages" in r]
    last = {p: [row_text(r, 0) for r in split[p]] for p in PARTS}
    joined = {p: [row_text(r, MAX_TURNS) for r in split[p]] for p in PARTS}
    earlier = {p: [earlier_turns(r) for r in split[p]] for p in PARTS}
    is_conversation = {p: np.array([a != b for a, b in zip(last[p], joined[p], strict=True)]) for p in PARTS}
    held = {t for p in PARTS for t in (*last[p], *joined[p], *earlier[p])}
    conversation_texts = [row_text(r, k) for r in conversations for k in (0, 1, MAX_TURNS)]
    print("embedding every text once with USE and MiniLM ...", flush=True)
    vectors = Vectors(sorted({*texts, *held, *conversation_texts}))

    labels, weight, bias = fit_head(vectors.both(texts), y, 1.0)
    _, use1_w, use1_b = fit_head(vectors(USE_ID, texts), y, 1.0)
    _, use4_w, use4_b = fit_head(vectors(USE_ID, texts), y, 4.0)
    last_logits = {p: vectors.both(last[p]) @ weight.T + bias for p in PARTS}
    use4 = {p: vectors(USE_ID, joined[p]) @ use4_w.T + use4_b for p in PARTS}
    w_use, w_minilm = weight[:, :512], weight[:, 512:]

    print("\n1. the conversation's reader (dev / dev2)", flush=True)
    readers: dict[str, Callable[[str], np.ndarray]] = {
        "USE+MiniLM head on the joined turns (previous default)": lambda p: vectors.both(joined[p]) @ weight.T + bias,
        "USE-only conversation head, C=1": lambda p: vectors(USE_ID, joined[p]) @ use1_w.T + use1_b,
        "USE-only conversation head, C=4 (shipped)": lambda p: use4[p],
        "same head, MiniLM reads the earlier turns only": lambda p: (
            vectors(USE_ID, joined[p]) @ w_use.T + vectors(MINILM_ID, earlier[p]) @ w_minilm.T + bias),
        "same head, MiniLM vector of the last turn reused": lambda p: (
            vectors(USE_ID, joined[p]) @ w_use.T + vectors(MINILM_ID, last[p]) @ w_minilm.T + bias),
    }
    for name, context in readers.items():
        report(name, lambda p, c=context: blend(last_logits[p], c(p), is_conversation[p]), split, labels)

    print("\n2. other candidates, each with the shipped conversation head", flush=True)
    tfidf = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True, min_df=2,
                            max_features=50000).fit(texts)

    def with_tfidf(t: Sequence[str]) -> Any:
        return sparse.hstack([sparse.csr_matrix(vectors.both(t)), 0.5 * tfidf.transform(t)]).tocsr()

    lexical = LogisticRegression(C=1.0, max_iter=3000, class_weight="balanced").fit(with_tfidf(texts), y)
    report("character n-gram TF-IDF beside USE and MiniLM",
           lambda p: blend(lexical.decision_function(with_tfidf(last[p])), use4[p], is_conversation[p]), split, labels)
    shipped_t = calibrate_temperature(blend(last_logits["dev"], use4["dev"], is_conversation["dev"]),
                                      np.array([labels.index(r["label"]) for r in split["dev"]]))
    for cut in (0.999, 0.99, 0.95):  # the last turn's confidence as the shipped temperature makes it
        report(f"conversation skipped when the last turn is >= {cut}", lambda p, c=cut: blend(
            last_logits[p], use4[p], is_conversation[p] & (_softmax(last_logits[p] / shipped_t).max(1) < c)),
            split, labels)

    # a learned blend: out-of-fold logits of the training conversations, their rows held out of each fold
    target = np.array([labels.index(r["label"]) for r in conversations])
    out_of_fold = np.zeros((len(conversations), 2 * len(labels)))
    for _, held_out in KFold(5, shuffle=True, random_state=0).split(conversations):
        away = {row_text(conversations[i], k) for i in held_out for k in (0, 1, MAX_TURNS)}
        mask = np.array([t not in away for t in texts])
        fold_y = [label for label, m in zip(y, mask, strict=True) if m]
        _, fw, fb = fit_head(vectors.both(texts)[mask], fold_y, 1.0)
        _, cw, cb = fit_head(vectors(USE_ID, texts)[mask], fold_y, 4.0)
        rows = [conversations[i] for i in held_out]
        out_of_fold[held_out] = np.hstack([vectors.both([row_text(r, 0) for r in rows]) @ fw.T + fb,
                                           vectors(USE_ID, [row_text(r, MAX_TURNS) for r in rows]) @ cw.T + cb])
    stacker = LogisticRegression(C=1.0, max_iter=2000).fit(out_of_fold, target)
    report("learned blend of both heads' logits", lambda p: np.where(
        is_conversation[p][:, None], stacker.decision_function(np.hstack([last_logits[p], use4[p]])), last_logits[p]),
        split, labels)

    if args.fine_tune:
        print("\n3. all-MiniLM-L6-v2 fine-tuned end to end (2 epochs, int8 as shipped)", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            tuned_file = Path(tmp) / TUNED_FILE
            tuned_w, tuned_b = fine_tune_minilm(train, labels, tuned_file, 2, print)
            tuned_vectors = embed_all([t for p in PARTS for t in last[p]], f"{TUNED_MINILM_PREFIX}{tuned_file}")
        tuned = {p: np.stack([tuned_vectors[t] for t in last[p]]) @ tuned_w.T + tuned_b for p in PARTS}
        use_last = {p: vectors(USE_ID, last[p]) @ use4_w.T + use4_b for p in PARTS}
        report("fine-tuned MiniLM alone", lambda p: blend(tuned[p], use4[p], is_conversation[p]), split, labels)
        for share in (0.5, 0.4, 0.35, 0.3):
            name = f"fine-tuned MiniLM {share} + USE head{' (shipped)' if share == 0.35 else ''}"
            report(name, lambda p, a=share: blend(a * tuned[p] + (1 - a) * use_last[p], use4[p], is_conversation[p]),
                   split, labels)


if __name__ == "__main__":
    main()
