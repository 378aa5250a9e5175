"""Big prompts must not slow down anyone else: small requests for another model, measured alone and
while one client keeps sending 1 MB auto-model prompts, with the character budget and without it.

    python benchmarks/bench_big_prompts.py [--requests 40] [--megabytes 1]

Everything is measured side by side in one run and printed as ratios; nothing is asserted.
"Without the budget" sets `lora_router.max_text_chars` to 1,000,000, which classifies the whole
megabyte as the plugin did before the budget existed (keyword scans on the event loop, a
megabyte for the tokenizer). Both proxies use the shipped configs (keyword rules, then the domain
classifier) in front of the same vLLM stand-in.
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from litellm_lora_router.processes import Service, start_proxy, start_standin

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"model": "llama2-7b", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}


def big_prompt(megabytes: float, model: str) -> dict[str, Any]:
    """Prose with no keyword of any rule, so every rule scans all of it."""
    sentence = "the quiet harbour town woke slowly as fishing boats drifted past the old stone pier. "
    text = sentence * int(megabytes * 1_000_000 / len(sentence))
    return {"model": model, "messages": [{"role": "user", "content": text + "What do you think?"}], "max_tokens": 8}


def small_latencies(url: str, key: str, n: int) -> list[float]:
    times = []
    with httpx.Client(timeout=120, headers={"Authorization": f"Bearer {key}"}) as client:
        for _ in range(n):
            started = time.perf_counter()
            client.post(url + "/v1/chat/completions", json=SMALL).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
            time.sleep(0.02)
    return times


def measure(url: str, key: str, n: int, megabytes: float, model: str) -> tuple[list[float], list[float], int]:
    """Small-request latencies alone, then while one client sends big prompts for `model` back to back."""
    small_latencies(url, key, 10)  # warm-up
    quiet = small_latencies(url, key, n)
    stop = threading.Event()
    sent = [0]
    body = big_prompt(megabytes, model)

    def flood() -> None:
        with httpx.Client(timeout=300, headers={"Authorization": f"Bearer {key}"}) as client:
            while not stop.is_set():
                client.post(url + "/v1/chat/completions", json=body).raise_for_status()
                sent[0] += 1

    flooder = threading.Thread(target=flood, daemon=True)
    flooder.start()
    time.sleep(1.0)
    loaded = small_latencies(url, key, n)
    stop.set()
    flooder.join(timeout=300)
    return quiet, loaded, sent[0]


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--megabytes", type=float, default=1.0)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="bench-big-"))
    standin = start_standin(logs)
    services: list[Service] = [standin]
    key = "sk-" + secrets.token_hex(16)
    rows = []
    try:
        for label, budget in (("budget 2048 chars (default)", 2048), ("no budget (1,000,000)", 1_000_000)):
            raw = yaml.safe_load((ROOT / "router_config.yaml").read_text())
            raw.setdefault("lora_router", {})["max_text_chars"] = budget
            raw["classifier"]["category_model"]["model_id"] = str(ROOT / "models/mom-domain-classifier")
            raw["classifier"]["category_model"]["category_mapping_path"] = str(
                ROOT / "models/mom-domain-classifier/category_mapping.json")
            config = logs / f"router_{budget}.yaml"
            config.write_text(yaml.safe_dump(raw))
            proxy = start_proxy(ROOT / "litellm_config.yaml", config, standin.url + "/v1", key, logs)
            services.append(proxy)
            print(f"{label}: measuring ...", flush=True)
            quiet, loaded, sent = measure(proxy.url, key, args.requests, args.megabytes, "MoM")
            rows.append((f"MoM, {label}", quiet, loaded, sent))
            if budget == 2048:  # LiteLLM's own cost of a big body: the same prompts for a model not routed
                quiet, loaded, sent = measure(proxy.url, key, args.requests, args.megabytes, "llama2-7b")
                rows.append(("llama2-7b, not routed", quiet, loaded, sent))
            proxy.stop()
    finally:
        for service in services:
            service.stop()
    print(f"\nsmall requests for another model (llama2-7b), {args.requests} each, alone and while one client "
          f"sends {args.megabytes:g} MB prompts back to back (ms)")
    print(f"{'big prompts for':32} {'alone p50':>10} {'p95':>8} {'loaded p50':>11} {'p95':>8} "
          f"{'ratio p50':>10} {'big sent':>9}")
    for label, quiet, loaded, sent in rows:
        q50, l50 = statistics.median(quiet), statistics.median(loaded)
        print(f"{label:32} {q50:10.1f} {p(quiet, 95):8.1f} {l50:11.1f} {p(loaded, 95):8.1f} "
              f"{l50 / q50:10.2f} {sent:9d}")


if __name__ == "__main__":
    main()
