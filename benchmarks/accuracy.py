"""Every accuracy figure of the README, in one run: `python benchmarks/accuracy.py`.

Builds (or copies) the default models, then evaluates through the real router, the way requests are
classified (text extraction, history, thresholds, fallback counted as wrong):

1. the shipped `router_config.yaml` and the alternatives we compared, on the chat corpus's dev split
   and second dev set (where choices are made) and test split (reported, never tuned on), per kind
   and per language;
2. each keyword rule of the previous shipped config, added alone in front of the default (dev);
3. robustness: the shipped default on the held-out rows rewritten as people also type them (in
   capitals, in lower case, without punctuation, with typos, inside a greeting and a thank-you,
   after a sentence of small talk), against the rows as written;
4. vLLM Semantic Router's 418 `task: domain` queries with `examples/mmlu_router_config.yaml`: the
   shipped 14-label head, and (for the record) the same recipe plus the 280 questions of
   `benchmarks/data/mmlu_pro_style_vsr_informed.jsonl`, which were written after looking at which kinds
   of those queries failed and are therefore not shipped.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import random
import re
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from litellm_lora_router import LoraRouter, parse_config  # noqa: E402
from litellm_lora_router.cli import ensure_default_models  # noqa: E402
from litellm_lora_router.datasets import corpus_split, seed_rows  # noqa: E402
from litellm_lora_router.evaluation import evaluate, load_rows, select_rows  # noqa: E402

USE = "universal-sentence-encoder-multilingual-3"

#: The keyword rules shipped before this comparison (each is measured alone in section 2).
PREVIOUS_KEYWORD_RULES: list[dict[str, Any]] = [
    {
        "category": "technical",
        "keywords": [
            "javascript",
            "typescript",
            "python",
            "java",
            "golang",
            "rust",
            "c++",
            "c#",
            ".net",
            "node.js",
            "react",
            "async/await",
            "async",
            "await",
            "api",
            "sql",
            "database",
            "docker",
            "kubernetes",
            "linux",
            "git",
            "compiler",
            "algorithm",
            "function",
            "debug",
            "bug",
            "code",
            "programming",
            "software",
            "regex",
            "http",
            "json",
            "css",
            "html",
        ],
    },
    {
        "category": "medical",
        "keywords": [
            "blood pressure",
            "hypertension",
            "symptom",
            "symptoms",
            "disease",
            "diabetes",
            "doctor",
            "medication",
            "medicine",
            "dose",
            "diagnosis",
            "treatment",
            "cancer",
            "infection",
            "vaccine",
            "heart",
            "pain",
            "fever",
            "allergy",
            "cholesterol",
            "surgery",
        ],
    },
    {
        "category": "legal",
        "keywords": [
            "law",
            "legal",
            "lawsuit",
            "contract",
            "attorney",
            "lawyer",
            "court",
            "sue",
            "liability",
            "copyright",
            "trademark",
            "patent",
            "gdpr",
            "tenant",
            "landlord",
            "divorce",
            "custody",
            "statute",
            "regulation",
            "compliance",
        ],
    },
]


def shipped() -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "router_config.yaml").read_text())
    for key in ("model_id", "category_mapping_path"):
        raw["classifier"]["category_model"][key] = str(ROOT / raw["classifier"]["category_model"][key])
    raw["classification_cache"] = {"enabled": False}
    raw.setdefault("lora_router", {})["classification_timeout_seconds"] = 30
    return dict(raw)


def variant(**options: Any) -> dict[str, Any]:
    raw = copy.deepcopy(shipped())
    raw["lora_router"].update(options)
    return raw


def hand_written_knn() -> dict[str, Any]:
    """The issue's quick baseline: nearest example among the project's 160 hand-written queries, USE
    encoder, the last two user turns (embedding rules, max similarity, no threshold)."""
    phrases: dict[str, list[str]] = {}
    for text, label in seed_rows():
        phrases.setdefault(label, []).append(text)
    for row in load_rows(ROOT / "benchmarks" / "data" / "chat_eval_mom.jsonl"):
        phrases.setdefault(row["expected_category"], []).append(row["text"])
    raw = copy.deepcopy(shipped())
    raw.pop("classifier")
    raw["embedding_rules"] = [{"category": c, "threshold": -1.0, "keywords": p} for c, p in sorted(phrases.items())]
    raw["lora_router"].update(history_window=1, history_blend=False, encoder={"model": USE})
    return raw


def _typos(text: str, rng: random.Random) -> str:
    """One swap of two neighbouring letters per 25 characters."""
    chars = list(text)
    for _ in range(max(1, len(text) // 25)):
        i = rng.randrange(max(1, len(chars) - 1))
        if i + 1 < len(chars) and chars[i].isalpha() and chars[i + 1].isalpha():
            chars[i], chars[i + 1] = chars[i + 1], chars[i]
    return "".join(chars)


#: How a user turn is rewritten (seeded), for section 3.
Rewrite = Callable[[str, random.Random], str]

#: How each robustness variant rewrites a user turn (section 3). The frames are not training frames.
REWRITES: dict[str, Rewrite] = {
    "in capitals": lambda text, rng: text.upper(),
    "in lower case": lambda text, rng: text.lower(),
    "without punctuation": lambda text, rng: re.sub(r"[?!.,;:¿¡？！。、]", "", text),
    "with typos": _typos,
    "after 'hey, quick question:'": lambda text, rng: f"hey, quick question: {text}",
    "in a greeting and thanks": lambda text, rng: f"Hi there, hope you are well. {text} Thanks in advance!",
    "after a sentence of small talk": lambda text, rng: f"Morning! Lovely weather today, isn't it? Anyway, {text}",
}


def rewritten(rows: list[dict[str, Any]], rewrite: Rewrite) -> list[dict[str, Any]]:
    """The rows with every user turn rewritten (seeded, so every run rewrites alike)."""
    rng = random.Random(1)
    out = []
    for row in rows:
        if "messages" in row:
            messages = [{**m, "content": rewrite(m["content"], rng)} if m["role"] == "user" else m
                        for m in row["messages"]]
            out.append({**row, "messages": messages})
        else:
            out.append({**row, "text": rewrite(row["text"], rng)})
    return out


def with_rules(rules: list[dict[str, Any]]) -> dict[str, Any]:
    raw = copy.deepcopy(shipped())
    raw["keyword_rules"] = rules
    return raw


async def score(raw: dict[str, Any], rows: list[dict[str, Any]], by: tuple[str, ...] = ("kind",)) -> dict[str, Any]:
    router = LoraRouter.from_config(parse_config(raw))
    try:
        return await evaluate(router, rows, by)
    finally:
        await router.aclose()


def line(name: str, part: str, report: dict[str, Any]) -> str:
    kinds = report["by"].get("kind", {})
    cells = [
        f"{kinds[k]['accuracy']:.3f}" if k in kinds else "-" for k in ("plain", "hard", "multilingual", "multiturn")
    ]
    return (
        f"| {name} | {part} | **{report['accuracy']:.3f}** | {report['coverage']:.3f} | "
        + " | ".join(cells)
        + f" | {report['latency_ms']['p50']:.1f} |"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    shared = next(
        (d / "shared" for d in ROOT.parents if (d / "shared" / "vsr_test_queries.jsonl").is_file()),
        ROOT.parent / "shared",
    )
    parser.add_argument(
        "--vsr",
        default=str(shared / "vsr_test_queries.jsonl"),
        help="vLLM Semantic Router's test queries (section 3; skipped when missing)",
    )
    args = parser.parse_args()
    ensure_default_models(ROOT / "models")
    split = corpus_split()
    candidates = {
        "shipped default (USE head + fine-tuned MiniLM, history blend)": shipped(),
        "same head, last user turn only": variant(history_blend=False),
        "same head, last two user turns joined": variant(history_blend=False, history_window=1),
        "same head + previous keyword rules first": with_rules(PREVIOUS_KEYWORD_RULES),
        "quick baseline: nearest of 160 hand-written queries (USE, last two turns)": hand_written_knn(),
    }
    print("1. chat corpus (accuracy; a fallback counts as wrong)\n")
    print("| classifier | split | accuracy | coverage | plain | hard | multilingual | multiturn | p50 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    languages: dict[str, dict[str, Any]] = {}
    for name, raw in candidates.items():
        for part in ("dev", "dev2", "test"):
            report = await score(raw, split[part], ("kind", "language"))
            print(line(name, part, report), flush=True)
            if name.startswith("shipped"):
                languages[part] = report["by"]["language"]
    print("\n   shipped default per language (accuracy dev / test):")
    for language in sorted(languages["dev"]):
        dev, test = languages["dev"][language], languages["test"][language]
        print(f"   {language}: {dev['accuracy']:.3f} / {test['accuracy']:.3f}  (n={dev['n']} / {test['n']})")

    print("\n2. each previous keyword rule alone in front of the default, dev accuracy (default alone first)")
    base = await score(shipped(), split["dev"])
    print(f"   none: {base['accuracy']:.3f}")
    for rule in PREVIOUS_KEYWORD_RULES:
        report = await score(with_rules([rule]), split["dev"])
        from litellm_lora_router.classifiers.keyword import CompiledRule
        from litellm_lora_router.config import KeywordRule

        compiled = CompiledRule.from_rule(KeywordRule(**rule))
        fired = [r for r in split["dev"] if compiled.matches(r.get("text") or r["messages"][-1]["content"])[0]]
        precision = sum(r["label"] == rule["category"] for r in fired) / len(fired) if fired else 0.0
        print(
            f"   {rule['category']} rule: accuracy {report['accuracy']:.3f} "
            f"(fires on {len(fired)} rows, precision {precision:.3f})"
        )

    print("\n3. robustness: the shipped default on rewritten rows (accuracy dev / dev2 / test)")
    as_written: dict[str, Rewrite] = {"as written": lambda text, rng: text}
    for name, rewrite in {**as_written, **REWRITES}.items():
        parts = ("dev", "dev2", "test")
        cells = [(await score(shipped(), rewritten(split[part], rewrite), ()))["accuracy"] for part in parts]
        print(f"   {name}: " + " / ".join(f"{c:.3f}" for c in cells), flush=True)

    vsr = Path(args.vsr)
    if not vsr.is_file():
        print(f"\n4. skipped: no {vsr}")
        return
    raw = yaml.safe_load((ROOT / "examples" / "mmlu_router_config.yaml").read_text())
    for key in ("model_id", "category_mapping_path"):
        raw["classifier"]["category_model"][key] = str(ROOT / raw["classifier"]["category_model"][key])
    raw["classification_cache"] = {"enabled": False}
    raw.setdefault("lora_router", {})["classification_timeout_seconds"] = 30  # a busy machine must not time out a row
    rows = select_rows(load_rows(vsr), ["task=domain"])
    report = await score(raw, rows, ())
    print(
        f"\n4. vLLM Semantic Router task=domain ({report['n']} rows, 14 labels): accuracy {report['accuracy']:.3f}, "
        f"macro-F1 {report['macro_f1']:.3f}"
    )
    with tempfile.TemporaryDirectory() as scratch:
        head = Path(scratch) / "mmlu-informed"
        added = build_with_informed_rows(head)
        raw["classifier"]["category_model"]["model_id"] = str(head)
        raw["classifier"]["category_model"]["category_mapping_path"] = str(head / "category_mapping.json")
        informed = await score(raw, rows, ())
    print(
        f"   not shipped: + {added} VSR-informed questions: accuracy {informed['accuracy']:.3f}, "
        f"macro-F1 {informed['macro_f1']:.3f}"
    )
    print(json.dumps({"vsr_domain_accuracy": report["accuracy"], "with_informed_rows": informed["accuracy"]}))


def build_with_informed_rows(out: Path) -> int:
    """The shipped 14-label recipe plus the VSR-informed questions (weighted as the shipped style rows),
    less any that is itself one of vLLM Semantic Router's test queries; returns how many were added."""
    from litellm_lora_router import training

    model = next(m for m in training.DEFAULT_MODELS if m.name == "mmlu-domain-classifier")
    data = training.default_datasets()[model.name]
    lines = (ROOT / "benchmarks" / "data" / "mmlu_pro_style_vsr_informed.jsonl").read_text(encoding="utf-8")
    informed = [(r["text"], r["label"]) for r in map(json.loads, lines.splitlines())]
    kept = training.datasets.drop_excluded(informed, training.datasets.excluded_hashes())  # no VSR query, ever
    data["train"] += [(text, label, training.STYLE_WEIGHT) for text, label in kept]
    training.build_default(model, data, out, lambda line: print(line, file=sys.stderr), "not-shipped")
    return len(kept)


if __name__ == "__main__":
    asyncio.run(main())
