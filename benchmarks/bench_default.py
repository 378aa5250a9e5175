"""Cache-miss cost of the shipped default vs the previous default, side by side in one run.

Previous default: keyword rules, then a linear head over int8 ONNX MiniLM. New default: the guide's
config, a linear head over the multilingual USE and MiniLM encoders, and for a conversation with
earlier user turns a USE-only head over the user turns joined (one more USE pass, micro-batched with
the last turn's); a last turn of several sentences is also read by its longest sentence (one more
text in each encoder's micro-batch). Rounds interleave the two so machine load hits both alike;
each sentence of a request's last turn gets the round's number in front, so no text, nor a turn's
longest sentence, is served from the encoders' recent results (and no sentence is added).
`python benchmarks/bench_default.py [--rounds 300]`
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.accuracy import PREVIOUS_KEYWORD_RULES, shipped  # noqa: E402
from litellm_lora_router import LoraRouter, parse_config  # noqa: E402
from litellm_lora_router.cli import ensure_default_models  # noqa: E402
from litellm_lora_router.datasets import corpus_split, seed_rows  # noqa: E402
from litellm_lora_router.training import train_domain  # noqa: E402


def previous_default(head_dir: Path) -> dict[str, Any]:
    raw = shipped()
    raw["keyword_rules"] = PREVIOUS_KEYWORD_RULES
    raw["classifier"]["category_model"].update(
        model_id=str(head_dir), category_mapping_path=str(head_dir / "category_mapping.json")
    )
    raw["lora_router"]["history_blend"] = False
    return raw


def numbered(text: str, i: int) -> str:
    """`text` with `#i` in front of each of its sentences: a new text whose sentences are new too."""
    return f"#{i} " + re.sub(r"(?<=[.!?])\s+|(?<=[。！？])", f" #{i} ", text)


async def one(router: LoraRouter, request: dict[str, Any]) -> float:
    started = time.perf_counter()
    await router.classify_request(request)
    return (time.perf_counter() - started) * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    ensure_default_models(ROOT / "models")
    with tempfile.TemporaryDirectory() as tmp:
        train_domain(seed_rows(), Path(tmp) / "minilm-head")  # speed does not depend on what it learnt
        routers = {
            "previous (keywords + MiniLM int8 head)": LoraRouter.from_config(
                parse_config(previous_default(Path(tmp) / "minilm-head"))
            ),
            "new default (USE head + fine-tuned MiniLM, history blend)": LoraRouter.from_config(parse_config(shipped())),
        }
        rows = corpus_split()["dev"]
        random.Random(0).shuffle(rows)  # sorted by id, the first rows are one category
        requests = [{"messages": r.get("messages") or [{"role": "user", "content": r["text"]}]} for r in rows]
        single = [q for q, r in zip(requests, rows, strict=True) if "text" in r]
        times: dict[str, dict[str, list[float]]] = {name: {"single": [], "all": []} for name in routers}
        for router in routers.values():
            for request in requests[:8]:
                await one(router, request)
        for i in range(args.rounds):
            for name, router in routers.items():  # interleaved: the same load hits both
                request = requests[i % len(requests)]
                unique = {
                    "messages": [
                        *request["messages"][:-1],
                        {"role": "user", "content": numbered(request["messages"][-1]["content"], i)},
                    ]
                }
                elapsed = await one(router, unique)
                times[name]["all"].append(elapsed)
                if request in single:
                    times[name]["single"].append(elapsed)
        for router in routers.values():
            await router.aclose()
    print(f"cache-miss classification time, {args.rounds} dev-split requests (ms; unique texts, no cache):")
    print(f"  {'router':<46} {'p50':>7} {'p99':>7} {'single-turn p50':>16} {'single-turn p99':>16}")
    summary = {}
    for name, t in times.items():
        p50, p99 = float(np.percentile(t["all"], 50)), float(np.percentile(t["all"], 99))
        summary[name] = (p50, p99, statistics.median(t["single"]), float(np.percentile(t["single"], 99)))
        print(f"  {name:<46} {p50:>7.2f} {p99:>7.2f} {summary[name][2]:>16.2f} {summary[name][3]:>16.2f}")
    (old, new) = summary.values()
    print(
        f"  ratio new/previous: p50 {new[0] / old[0]:.2f}, p99 {new[1] / old[1]:.2f}, "
        f"single-turn p50 {new[2] / old[2]:.2f}, single-turn p99 {new[3] / old[3]:.2f}"
    )
    print(json.dumps({"ratio_p50": new[0] / old[0], "ratio_p99": new[1] / old[1]}))


if __name__ == "__main__":
    asyncio.run(main())
