"""`lora-router eval`: accuracy, macro-F1, per-category precision/recall, confusion, latency."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .messages import text_to_classify
from .router import LoraRouter

__all__ = ["evaluate", "load_rows"]

NONE_LABEL = "(fallback)"


def load_rows(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if "expected_category" in r and ("text" in r or "messages" in r)]


async def evaluate(router: LoraRouter, rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Classify every row the way a request would be (same text extraction, order, thresholds)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    expected, predicted, times = [], [], []
    for row in rows:
        messages = row.get("messages") or [{"role": "user", "content": row["text"]}]
        text = text_to_classify(messages, router.config.lora_router.history_window)
        started = time.perf_counter()
        classification, _ = await router.classify(text)
        times.append((time.perf_counter() - started) * 1000)
        expected.append(str(row["expected_category"]))
        predicted.append(classification.category if classification and classification.category else NONE_LABEL)
    labels = sorted(set(expected) | set(predicted))
    precision, recall, f1, support = precision_recall_fscore_support(expected, predicted, labels=labels, zero_division=0)
    matrix = confusion_matrix(expected, predicted, labels=labels)
    expected_labels = sorted(set(expected))
    return {
        "n": len(rows),
        "accuracy": float(accuracy_score(expected, predicted)),
        "macro_f1": float(f1_score(expected, predicted, labels=expected_labels, average="macro", zero_division=0)),
        "per_category": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion": {"labels": labels, "matrix": matrix.tolist()},
        "latency_ms": {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))},
    }


def format_report(report: dict[str, Any]) -> str:
    lines = [f"n={report['n']}  accuracy={report['accuracy']:.3f}  macro-F1={report['macro_f1']:.3f}  "
             f"p50={report['latency_ms']['p50']:.2f} ms  p99={report['latency_ms']['p99']:.2f} ms", "",
             f"{'category':<20} {'precision':>9} {'recall':>7} {'f1':>6} {'n':>5}"]
    for label, m in report["per_category"].items():
        lines.append(f"{label:<20} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>6.3f} {m['support']:>5}")
    labels = report["confusion"]["labels"]
    short = [label[:6] for label in labels]
    lines += ["", "confusion (rows: expected, columns: predicted)", " " * 21 + " ".join(f"{s:>6}" for s in short)]
    for label, row in zip(labels, report["confusion"]["matrix"], strict=True):
        lines.append(f"{label[:20]:<20} " + " ".join(f"{v:>6}" for v in row))
    return "\n".join(lines)
