"""`lora-router eval`: accuracy, coverage, macro-F1, per-category precision/recall, confusion, latency,
and the same per value of a row field (`--by kind`), on the rows that match `--where FIELD=VALUE`."""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .router import LoraRouter

__all__ = ["evaluate", "expected_label", "format_report", "load_rows", "select_rows"]

NONE_LABEL = "(fallback)"


def expected_label(row: Mapping[str, Any]) -> str | None:
    """The row's true category: `expected_category` (eval sets), else `label` (training corpora)."""
    value = row.get("expected_category", row.get("label"))
    return None if value is None else str(value)


def load_rows(path: Path) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in rows if expected_label(r) is not None and ("text" in r or "messages" in r)]


def select_rows(rows: Sequence[dict[str, Any]], where: Sequence[str]) -> list[dict[str, Any]]:
    """Rows whose every `FIELD=VALUE` condition holds (values compared as strings)."""
    conditions = []
    for condition in where:
        field, sep, value = condition.partition("=")
        if not sep or not field:
            raise ValueError(f"--where expects FIELD=VALUE, got {condition!r}")
        conditions.append((field, value))
    return [r for r in rows if all(str(r.get(f)) == v for f, v in conditions)]


def _scores(expected: Sequence[str], predicted: Sequence[str]) -> dict[str, Any]:
    routed = [p != NONE_LABEL for p in predicted]
    correct = [e == p for e, p in zip(expected, predicted, strict=True)]
    n_routed = sum(routed)
    return {
        "n": len(expected),
        "accuracy": float(np.mean(correct)) if expected else 0.0,
        "coverage": n_routed / len(expected) if expected else 0.0,
        "accuracy_routed": sum(c for c, r in zip(correct, routed, strict=True) if r) / n_routed if n_routed else 0.0,
    }


async def evaluate(router: LoraRouter, rows: Sequence[dict[str, Any]], by: Sequence[str] = ()) -> dict[str, Any]:
    """Classify every row the way a request would be (same text extraction, history, order,
    thresholds), without the classification cache. A fallback counts as wrong; `coverage` is the
    share of rows routed to a category rather than falling back."""
    from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

    expected, predicted, times = [], [], []
    for row in rows:
        messages = row.get("messages") or [{"role": "user", "content": row["text"]}]
        started = time.perf_counter()
        classification, _ = await router.classify_request({"messages": messages})
        times.append((time.perf_counter() - started) * 1000)
        expected.append(str(expected_label(row)))
        predicted.append(classification.category if classification and classification.category else NONE_LABEL)
    labels = sorted(set(expected) | set(predicted))
    precision, recall, f1, support = precision_recall_fscore_support(
        expected, predicted, labels=labels, zero_division=0
    )
    matrix = confusion_matrix(expected, predicted, labels=labels)
    expected_labels = sorted(set(expected))
    groups: dict[str, dict[str, Any]] = {}
    for field in by:
        values = sorted({str(r.get(field)) for r in rows})
        groups[field] = {}
        for value in values:
            picked = [i for i, r in enumerate(rows) if str(r.get(field)) == value]
            groups[field][value] = _scores([expected[i] for i in picked], [predicted[i] for i in picked])
    return {
        **_scores(expected, predicted),
        "macro_f1": float(f1_score(expected, predicted, labels=expected_labels, average="macro", zero_division=0)),
        "per_category": {
            label: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
        },
        "confusion": {"labels": labels, "matrix": matrix.tolist()},
        "latency_ms": {"p50": float(np.percentile(times, 50)), "p99": float(np.percentile(times, 99))} if times else {},
        "by": groups,
    }


def format_report(report: dict[str, Any]) -> str:
    latency = report["latency_ms"]
    lines = [
        f"n={report['n']}  accuracy={report['accuracy']:.3f}  coverage={report['coverage']:.3f}  "
        f"accuracy-when-routed={report['accuracy_routed']:.3f}  macro-F1={report['macro_f1']:.3f}  "
        f"p50={latency.get('p50', 0):.2f} ms  p99={latency.get('p99', 0):.2f} ms"
    ]
    for field, values in report["by"].items():
        lines += ["", f"{field:<20} {'n':>5} {'accuracy':>9} {'coverage':>9}"]
        for value, m in values.items():
            lines.append(f"{value[:20]:<20} {m['n']:>5} {m['accuracy']:>9.3f} {m['coverage']:>9.3f}")
    lines += ["", f"{'category':<20} {'precision':>9} {'recall':>7} {'f1':>6} {'n':>5}"]
    for label, m in report["per_category"].items():
        lines.append(f"{label:<20} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>6.3f} {m['support']:>5}")
    labels = report["confusion"]["labels"]
    short = [label[:6] for label in labels]
    lines += ["", "confusion (rows: expected, columns: predicted)", " " * 21 + " ".join(f"{s:>6}" for s in short)]
    for label, row in zip(labels, report["confusion"]["matrix"], strict=True):
        lines.append(f"{label[:20]:<20} " + " ".join(f"{v:>6}" for v in row))
    return "\n".join(lines)
