"""Start local services (the vLLM stand-in, a LiteLLM proxy) on free loopback ports.

Used by `lora-router demo` and by the tests, which run the same real processes.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import httpx

__all__ = ["Service", "free_port", "start_proxy", "start_redis", "start_service", "start_standin"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    """A child process serving HTTP on loopback; `stop()` ends it."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


def http_ready(url: str) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            return httpx.get(url, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    return ready


def tcp_ready(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    return ready


def start_service(
    name: str,
    command: Sequence[str],
    url: str,
    ready: Callable[[], bool],
    log_dir: Path,
    env: Mapping[str, str] | None = None,
    timeout_s: float = 90.0,
    cwd: Path | None = None,
) -> Service:
    """Start `command` and wait until `ready()`; raise with the process's log if it never is."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log: IO[bytes] = log_path.open("wb")
    process = subprocess.Popen(
        list(command), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}, cwd=cwd
    )
    service = Service(name, process, url, log_path)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{service.log()[-4000:]}")
        if ready():
            return service
        time.sleep(0.1)
    service.stop()
    raise RuntimeError(f"{name} did not start within {timeout_s}s:\n{service.log()[-4000:]}")


def start_standin(
    log_dir: Path, base_model: str = "llama2-7b", adapters: Sequence[str] = ("technical-lora", "medical-lora", "legal-lora"),
    extra_args: Sequence[str] = (), port: int | None = None,
) -> Service:
    """The vLLM stand-in serving `base_model` plus the named adapters (`extra_args`: more devserver
    options, such as its pooling endpoints)."""
    port = port or free_port()
    command = [
        sys.executable, "-m", "litellm_lora_router.devserver", base_model, "--enable-lora", "--port", str(port),
        *extra_args, "--lora-modules", *(f"{name}=/adapters/{name}" for name in adapters),
    ]
    url = f"http://127.0.0.1:{port}"
    return start_service(f"vllm-standin-{port}", command, url, http_ready(url + "/health"), log_dir)


def start_redis(log_dir: Path, port: int | None = None) -> Service:
    """A throwaway `redis-server` on loopback, no persistence."""
    port = port or free_port()
    command = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return start_service(f"redis-{port}", command, f"redis://127.0.0.1:{port}/0", tcp_ready(port), log_dir)


def proxy_env(router_config: Path, vllm_api_base: str, master_key: str) -> dict[str, str]:
    return {
        "LORA_ROUTER_CONFIG": str(router_config),
        "VLLM_API_BASE": vllm_api_base,
        "LITELLM_MASTER_KEY": master_key,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_LOG": os.environ.get("LITELLM_LOG", "ERROR"),
    }


def start_proxy(
    litellm_config: Path,
    router_config: Path,
    vllm_api_base: str,
    master_key: str,
    log_dir: Path,
    command: Sequence[str] | None = None,
    extra_env: Mapping[str, str] | None = None,
    timeout_s: float = 90.0,
) -> Service:
    """A real `litellm` proxy process with the plugin; `command` may replace the `litellm` CLI."""
    port = free_port()
    litellm_cli = str(Path(sys.executable).parent / "litellm")
    argv = list(command) if command else [litellm_cli, "--config", str(litellm_config), "--host", "127.0.0.1", "--port"]
    argv = [*argv, str(port)] if command is None else [a.replace("{port}", str(port)) for a in argv]
    env = {**proxy_env(router_config, vllm_api_base, master_key), **(extra_env or {})}
    url = f"http://127.0.0.1:{port}"
    return start_service(f"litellm-{port}", argv, url, http_ready(url + "/health/liveliness"), log_dir, env, timeout_s)
