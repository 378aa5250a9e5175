"""Classification cache: routing overhead through the real proxy, and hit vs miss time.

    python benchmarks/bench_cache.py [--requests 200]

Everything is measured side by side in one run and printed as ratios; nothing is asserted.
1. Proxy: the same chat request through a LiteLLM proxy with the plugin (warm cache) and through one
   without it (asking the adapter directly), interleaved, against the same vLLM stand-in.
2. Router: one `route()` on a miss (classified), a Redis hit (local LRU off) and a local hit.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

from litellm_lora_router import LoraRouter, parse_config
from litellm_lora_router.cache import ClassificationCache, ClassificationCodec
from litellm_lora_router.processes import Service, start_proxy, start_redis, start_standin

ROOT = Path(__file__).resolve().parent.parent
QUERY = "Explain async/await in JavaScript"


def timed(client: httpx.Client, url: str, body: dict[str, Any]) -> float:
    started = time.perf_counter()
    client.post(url, json=body).raise_for_status()
    return (time.perf_counter() - started) * 1000


def bench_proxy(n: int, logs: Path) -> None:
    standin = start_standin(logs)
    plain = yaml.safe_load((ROOT / "litellm_config.yaml").read_text())
    del plain["litellm_settings"]
    plain_path = logs / "litellm_plain.yaml"
    plain_path.write_text(yaml.safe_dump(plain))
    key = "sk-" + secrets.token_hex(16)
    services: list[Service] = [standin]
    try:
        on = start_proxy(ROOT / "litellm_config.yaml", ROOT / "router_config.yaml", standin.url + "/v1", key, logs)
        services.append(on)
        off = start_proxy(plain_path, ROOT / "router_config.yaml", standin.url + "/v1", key, logs)
        services.append(off)
        routed = {"model": "MoM", "messages": [{"role": "user", "content": QUERY}]}
        direct = {"model": "technical-lora", "messages": [{"role": "user", "content": QUERY}]}
        with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
            for _ in range(20):  # warm both proxies and the classification cache
                timed(client, on.url + "/v1/chat/completions", routed)
                timed(client, off.url + "/v1/chat/completions", direct)
            t_on, t_off = [], []
            for _ in range(n):
                t_on.append(timed(client, on.url + "/v1/chat/completions", routed))
                t_off.append(timed(client, off.url + "/v1/chat/completions", direct))
        m_on, m_off = statistics.median(t_on), statistics.median(t_off)
        print(f"proxy, {n} sequential requests each (median ms):")
        print(f"  plugin on, warm cache : {m_on:7.2f}")
        print(f"  plugin off (direct)   : {m_off:7.2f}")
        print(f"  ratio on/off          : {m_on / m_off:7.3f}  (overhead {m_on - m_off:+.2f} ms)")
    finally:
        for service in reversed(services):
            service.stop()


async def bench_router(n: int, logs: Path) -> None:
    raw = yaml.safe_load((ROOT / "router_config.yaml").read_text())
    redis_server = start_redis(logs) if shutil.which("redis-server") else None
    try:
        raw["classification_cache"] = {"redis_url": redis_server.url if redis_server else None, "local_max_entries": 0}
        config = parse_config(raw)
        cache = ClassificationCache.from_config(config.classification_cache, ClassificationCodec.for_config(config))
        router = LoraRouter.from_config(config)
        router.cache = cache
        body = {"model": "MoM", "messages": [{"role": "user", "content": QUERY}]}

        async def median(make_body: Any) -> float:
            times = []
            for i in range(n):
                started = time.perf_counter()
                await router.route(make_body(i))
                times.append((time.perf_counter() - started) * 1000)
            return statistics.median(times)

        miss = await median(lambda i: {"model": "MoM", "messages": [{"role": "user", "content": f"{QUERY} {i}"}]})
        await router.route(body)
        shared_hit = await median(lambda i: body)
        raw["classification_cache"]["local_max_entries"] = 1024
        router.cache = ClassificationCache.from_config(parse_config(raw).classification_cache,
                                                      ClassificationCodec.for_config(config))
        await router.route(body)
        local_hit = await median(lambda i: body)
        where = "redis" if redis_server else "no redis-server installed; shared = in-process"
        print(f"router.route(), {n} calls each (median ms; keyword rules; {where}):")
        print(f"  miss (classified)     : {miss:7.3f}")
        print(f"  shared hit            : {shared_hit:7.3f}  ratio hit/miss {shared_hit / miss:6.3f}")
        print(f"  local LRU hit         : {local_hit:7.3f}  ratio hit/miss {local_hit / miss:6.3f}")
        await cache.aclose()
    finally:
        if redis_server:
            redis_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    logs = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    asyncio.run(bench_router(args.requests, logs))
    bench_proxy(args.requests, logs)


if __name__ == "__main__":
    main()
