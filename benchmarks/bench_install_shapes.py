"""Install size and proxy start-up time of the slim and the full install, side by side in one run.

Give it two virtual environments made by `scripts/install.sh slim` and `scripts/install.sh` (full):

    python benchmarks/bench_install_shapes.py --slim /tmp/lrr-slim --full /tmp/lrr-full [--rounds 3]

It prints each environment's site-packages size, then starts a real `litellm` proxy with the plugin
from each environment, rounds interleaved so that a busy machine weighs on every shape alike, and
reports the median time until LiteLLM's liveness route answers and until the plugin's readiness file
appears (its models loaded), the proxy's resident memory then, and the plugin's own share: a Python
process that imports it, builds the classifiers and waits until they are ready, without LiteLLM.
Configs: the shipped `router_config.yaml` with keyword rules instead of its domain classifier (what a
slim install runs), and the shipped one as it is (the guide's domain classifier, a head over
multilingual USE: full install only).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
#: Rules in the guide's keyword section format, for the configs a slim install runs.
KEYWORD_RULES = [
    {"category": "technical", "keywords": ["python", "javascript", "sql", "docker", "kubernetes", "bug", "code"]},
    {"category": "medical", "keywords": ["blood pressure", "symptom", "fever", "medication", "diagnosis"]},
    {"category": "legal", "keywords": ["contract", "lawyer", "lawsuit", "tenant", "landlord", "copyright"]},
]


def site_packages_mb(venv: Path) -> float:
    [site] = list(venv.glob("lib/python*/site-packages"))
    total = sum(f.stat().st_size for f in site.rglob("*") if f.is_file() and not f.is_symlink())
    return total / 2**20


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


PLUGIN_START = """
import asyncio, sys, time
started = time.perf_counter()
from litellm_lora_router import LoraRouter
router = LoraRouter.from_config(sys.argv[1])
asyncio.run(router.until_ready())
print(time.perf_counter() - started)
"""


def plugin_start_s(venv: Path, router_config: Path) -> float:
    """The plugin alone, without LiteLLM: import, build the classifiers, connect and warm them."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"})
    out = subprocess.run([str(venv / "bin" / "python"), "-c", PLUGIN_START, str(router_config)], env=env, cwd="/",
                         capture_output=True, text=True, check=True).stdout
    return float(out.strip().splitlines()[-1])


def start_once(venv: Path, router_config: Path, work: Path) -> tuple[float, float, float]:
    """Seconds to liveness, seconds to readiness, MB resident at readiness."""
    port = free_port()
    ready = work / f"ready-{port}"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({"LORA_ROUTER_CONFIG": str(router_config), "LORA_ROUTER_READY_FILE": str(ready),
                "VLLM_API_BASE": "http://127.0.0.1:9/v1", "LITELLM_MASTER_KEY": "sk-bench-" + os.urandom(8).hex(),
                "LITELLM_LOCAL_MODEL_COST_MAP": "True", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                "LITELLM_LOG": "ERROR", "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"})
    command = [str(venv / "bin" / "litellm"), "--config", str(ROOT / "litellm_config.yaml"),
               "--host", "127.0.0.1", "--port", str(port)]
    started = time.perf_counter()
    log = (work / f"proxy-{port}.log").open("wb")
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    live = None
    try:
        while time.perf_counter() - started < 300:
            if process.poll() is not None:
                raise RuntimeError(f"proxy exited: {(work / f'proxy-{port}.log').read_text()[-2000:]}")
            if live is None:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/health/liveliness", timeout=1).status_code == 200:
                        live = time.perf_counter() - started
                except httpx.HTTPError:
                    pass
            if live is not None and ready.exists():
                return live, time.perf_counter() - started, rss_mb(process.pid)
            time.sleep(0.05)
        raise RuntimeError("proxy not ready within 300 s")
    finally:
        process.terminate()
        process.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slim", type=Path, required=True)
    parser.add_argument("--full", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-install-"))
    keyword_only = yaml.safe_load((ROOT / "router_config.yaml").read_text())
    del keyword_only["classifier"]
    keyword_only["keyword_rules"] = KEYWORD_RULES
    (work / "router_config.yaml").write_text(yaml.safe_dump(keyword_only))
    runs = {("slim", "keyword rules"): (args.slim, work / "router_config.yaml"),
            ("full", "keyword rules"): (args.full, work / "router_config.yaml"),
            ("full", "the guide's domain classifier"): (args.full, ROOT / "router_config.yaml")}
    sizes = {"slim": site_packages_mb(args.slim), "full": site_packages_mb(args.full)}
    print(f"site-packages: slim {sizes['slim']:.0f} MB, full {sizes['full']:.0f} MB "
          f"(ratio {sizes['full'] / sizes['slim']:.2f})")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    results: dict[tuple[str, str], list[tuple[float, float, float, float]]] = {key: [] for key in runs}
    for round_ in range(args.rounds):
        for key, (venv, config) in runs.items():
            results[key].append((*start_once(venv, config, work), plugin_start_s(venv, config)))
            print(f"round {round_ + 1} {key}: {results[key][-1]}", flush=True)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print("| install | config | proxy live s | plugin ready s | RSS MB at ready | plugin alone s |")
    print("|---|---|---|---|---|---|")
    for (shape, config), samples in results.items():
        live, ready, rss, alone = (statistics.median(s[i] for s in samples) for i in range(4))
        spread = f"{min(s[0] for s in samples):.0f}-{max(s[0] for s in samples):.0f}"
        print(f"| {shape} | {config} | {live:.1f} ({spread}) | {ready:.1f} | {rss:.0f} | {alone:.2f} |")


if __name__ == "__main__":
    main()
