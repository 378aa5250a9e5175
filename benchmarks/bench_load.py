"""Does routing slow down everyone else? Other-model latency under a fixed load of routed requests.

    python benchmarks/bench_load.py [--rate 15] [--rounds 30] [--seconds 3]

Two LiteLLM proxies in front of one vLLM stand-in: one with the plugin, one without. In each round,
one proxy at a time gets a fixed load of routed requests (`model: MoM`, a new text each time, so
every one is a cache miss that runs the domain classifier) while a probe sends small requests for
another model (`legal-lora`, which the plugin does not route) one after the other and times them.
Short rounds alternate between the proxies, so both see the same machine (and the same neighbours on
a shared one). Printed: the probe's median latency with and without the plugin, per round and over
all rounds, their ratio, and the median of the per-round ratios. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import tempfile
import time
from itertools import count
from pathlib import Path
from typing import Any

import httpx
import yaml

from litellm_lora_router.cli import ensure_default_models
from litellm_lora_router.processes import Service, start_proxy, start_standin

ROOT = Path(__file__).resolve().parent.parent
PROBE = {"model": "legal-lora", "messages": [{"role": "user", "content": "Is a verbal agreement binding?"}]}


def routed_texts() -> list[str]:
    """Chat queries; a number makes each one new (a cache miss), so each runs the domain classifier."""
    lines = (ROOT / "benchmarks" / "data" / "chat_eval_mom.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    return [row["text"] for row in rows]


async def one_round(client: httpx.AsyncClient, url: str, rate: float, seconds: float, texts: list[str],
                    serial: count[int], failures: list[int]) -> list[float]:
    """Probe latencies (ms) while `rate` routed requests a second go to the same proxy."""
    stop = time.monotonic() + seconds
    load: set[asyncio.Task[Any]] = set()

    def settled(task: asyncio.Task[Any]) -> None:
        load.discard(task)
        if task.cancelled() or task.exception() is not None or task.result().status_code != 200:
            failures.append(1)

    async def send_load() -> None:
        while time.monotonic() < stop:
            n = next(serial)
            body = {"model": "MoM", "messages": [{"role": "user", "content": f"{texts[n % len(texts)]} (#{n})"}]}
            task = asyncio.create_task(client.post(url + "/v1/chat/completions", json=body))
            load.add(task)
            task.add_done_callback(settled)
            await asyncio.sleep(1 / rate)

    async def probe() -> list[float]:
        times = []
        while time.monotonic() < stop:
            started = time.perf_counter()
            (await client.post(url + "/v1/chat/completions", json=PROBE)).raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
            await asyncio.sleep(0.05)
        return times

    _, times = await asyncio.gather(send_load(), probe())
    await asyncio.gather(*list(load), return_exceptions=True)
    return times


async def measure(on: Service, off: Service, key: str, args: argparse.Namespace) -> None:
    texts = routed_texts()
    serial = count()
    failures: list[int] = []
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=50)
    async with httpx.AsyncClient(timeout=60, limits=limits, headers={"Authorization": f"Bearer {key}"}) as client:
        for url in (on.url, off.url):  # warm both (first requests load models, open connections)
            await one_round(client, url, args.rate, 3, texts, serial, failures)
        with_plugin: list[float] = []
        without: list[float] = []
        ratios: list[float] = []
        print(f"{args.rate:g} routed requests/s on the proxy under test; probe: {PROBE['model']} requests, median ms")
        print("round  with plugin  without  ratio")
        for r in range(args.rounds):
            order = [(on, with_plugin), (off, without)] if r % 2 == 0 else [(off, without), (on, with_plugin)]
            medians = {}
            for service, sink in order:
                times = await one_round(client, service.url, args.rate, args.seconds, texts, serial, failures)
                sink.extend(times)
                medians[service.url] = statistics.median(times)
            ratios.append(medians[on.url] / medians[off.url])
            print(f"{r + 1:>5}  {medians[on.url]:>11.2f}  {medians[off.url]:>7.2f}  {ratios[-1]:>5.2f}")
        m_on, m_off = statistics.median(with_plugin), statistics.median(without)
        print(f"all    {m_on:>11.2f}  {m_off:>7.2f}  {m_on / m_off:>5.2f}   "
              f"({len(with_plugin)} and {len(without)} probes; ratio = other-model latency with/without the plugin)")
        print(f"median of the per-round ratios: {statistics.median(ratios):.2f}; "
              f"{len(failures)} of {next(serial)} routed requests failed")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=15.0)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="bench-load-"))
    plain = yaml.safe_load((ROOT / "litellm_config.yaml").read_text())
    del plain["litellm_settings"]
    (logs / "litellm_plain.yaml").write_text(yaml.safe_dump(plain))
    router = yaml.safe_load((ROOT / "router_config.yaml").read_text())
    router["lora_router"] = {"audit_log": False}
    router["classification_cache"] = {"enabled": False}  # every routed request is classified
    (logs / "router_config.yaml").write_text(yaml.safe_dump(router))
    ensure_default_models(ROOT / "models")
    (logs / "models").symlink_to(ROOT / "models")  # the config's relative model paths
    key = "sk-" + secrets.token_hex(16)
    standin = start_standin(logs)
    services: list[Service] = [standin]
    try:
        on = start_proxy(ROOT / "litellm_config.yaml", logs / "router_config.yaml", standin.url + "/v1", key, logs)
        services.append(on)
        off = start_proxy(logs / "litellm_plain.yaml", logs / "router_config.yaml", standin.url + "/v1", key, logs)
        services.append(off)
        asyncio.run(measure(on, off, key, args))
    finally:
        for service in reversed(services):
            service.stop()


if __name__ == "__main__":
    main()
