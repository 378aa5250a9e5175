"""Config hot reload: in process (in-flight requests, refused files, debounce) and through a proxy."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from litellm_lora_router import Classification, LoraRouter, RouterConfig, load_config
from litellm_lora_router.classifiers import KeywordClassifier
from litellm_lora_router.cli import main as cli_main
from litellm_lora_router.processes import free_port
from litellm_lora_router.reload import ConfigReloader

from .conftest import DEFAULT_ROUTER_CONFIG, Proxy, StandIn, launch_proxy
from .support.prometheus_text import parse_samples, series, value

MEDICAL = "What causes high blood pressure?"
BODY = {"model": "MoM", "messages": [{"role": "user", "content": MEDICAL}]}


def keyword_config(medical_adapter: str = "medical-lora", **options: Any) -> str:
    """The guide's config with keyword rules only (a rebuild takes milliseconds)."""
    raw = yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text())
    del raw["classifier"]
    raw["categories"][1]["model_scores"][0]["lora_name"] = medical_adapter
    raw["lora_router"] = options
    return yaml.safe_dump(raw)


BROKEN = keyword_config().replace("lora_name: legal-lora", "lora_nmae: legal-lora").replace("score: 0.8", "scor: 0.8")


def publish(folder: Path, text: str) -> None:
    """Update the way the kubelet updates a ConfigMap volume: a new folder, then `..data` swapped."""
    version = folder / f"..{time.time_ns()}"
    version.mkdir()
    (version / "router_config.yaml").write_text(text)
    (folder / "..data_tmp").symlink_to(version.name)
    os.replace(folder / "..data_tmp", folder / "..data")
    link = folder / "router_config.yaml"
    if not link.is_symlink():
        link.symlink_to("..data/router_config.yaml")


class Holder:
    def __init__(self, router: LoraRouter) -> None:
        self.router = router


class Listener:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def reload(self, ok: bool) -> None:
        self.events.append(("reload", ok))

    def config_loaded(self, fingerprint: str) -> None:
        self.events.append(("config", fingerprint))


class GatedKeywords(KeywordClassifier):
    """Keyword rules that wait for `gate` first: a request held in flight."""

    def __init__(self, config: RouterConfig, gate: asyncio.Event) -> None:
        super().__init__(config.keyword_rules)
        self.gate = gate

    async def classify(self, texts: Sequence[str], caller: object = None, contexts: object = None) -> list[Classification]:
        await self.gate.wait()
        return await super().classify(texts)


def keyword_router(config: RouterConfig) -> LoraRouter:
    return LoraRouter(config, [KeywordClassifier(config.keyword_rules)])


async def test_a_request_in_flight_finishes_on_the_old_router_which_closes_after(tmp_path: Path) -> None:
    path = tmp_path / "router_config.yaml"
    path.write_text(keyword_config())
    gate = asyncio.Event()
    config = load_config(path)
    old = LoraRouter(config, [GatedKeywords(config, gate)])
    closed: list[str] = []

    async def record_close() -> None:
        closed.append("old")

    old.aclose = record_close  # type: ignore[method-assign]
    holder = Holder(old)
    reloader = ConfigReloader(path, holder, keyword_router)
    in_flight = asyncio.create_task(old.route(BODY))
    await asyncio.sleep(0.01)
    path.write_text(keyword_config("legal-lora"))
    assert await reloader.reload() is True
    assert holder.router is not old and not closed
    assert holder.router.fingerprint != old.fingerprint  # so no cached classification carries over
    assert (await holder.router.route(BODY)).decision.model == "legal-lora"
    gate.set()
    assert (await in_flight).decision.model == "medical-lora"
    await reloader.aclose()  # waits for the drain
    assert closed == ["old"]


async def test_a_refused_file_keeps_the_old_router_and_logs_what_check_prints(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "router_config.yaml"
    path.write_text(keyword_config())
    old = keyword_router(load_config(path))
    holder, listener = Holder(old), Listener()
    reloader = ConfigReloader(path, holder, keyword_router, listener)
    path.write_text(BROKEN)
    assert await reloader.reload() is False
    assert holder.router is old and listener.events == [("reload", False)]
    assert cli_main(["check", "--config", str(path)]) == 1
    printed = capsys.readouterr().err.strip()
    assert "lora_nmae" in printed and "'scor'" in printed and printed.startswith(f"{path}: ")
    assert printed in caplog.text
    assert (await holder.router.route(BODY)).decision.model == "medical-lora"


async def test_an_unchanged_config_is_not_rebuilt_unless_forced(tmp_path: Path) -> None:
    path = tmp_path / "router_config.yaml"
    path.write_text(keyword_config())
    built: list[RouterConfig] = []

    def build(config: RouterConfig) -> LoraRouter:
        built.append(config)
        return keyword_router(config)

    holder = Holder(keyword_router(load_config(path)))
    reloader = ConfigReloader(path, holder, build)
    path.write_text(keyword_config() + "\n# a comment changes nothing\n")
    assert await reloader.reload() is None and not built
    assert await reloader.reload(force=True) is True and len(built) == 1
    await reloader.aclose()


async def wait_for(predicate: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


async def test_the_watcher_follows_a_configmap_swap_and_debounces(tmp_path: Path) -> None:
    folder = tmp_path / "config"
    folder.mkdir()
    publish(folder, keyword_config())
    path = folder / "router_config.yaml"
    holder, listener = Holder(keyword_router(load_config(path))), Listener()
    reloader = ConfigReloader(path, holder, keyword_router, listener, debounce_s=0.3)
    reloader.start(watch=True)
    try:
        await asyncio.sleep(0.3)  # the watcher is up
        for adapter in ("technical-lora", "legal-lora", "technical-lora", "legal-lora"):  # one burst
            publish(folder, keyword_config(adapter))
        await wait_for(lambda: ("reload", True) in listener.events)
        await asyncio.sleep(1.0)  # nothing else is pending
        assert listener.events.count(("reload", True)) == 1, listener.events
        assert (await holder.router.route(BODY)).decision.model == "legal-lora"
    finally:
        await reloader.aclose()


# --- through a running proxy --------------------------------------------------------------------


@pytest.fixture(scope="module")
def reload_setup(standin: StandIn, logs_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Proxy, Path, str]]:
    """A proxy whose router config is a ConfigMap-style folder, metrics on a port of our own."""
    folder = tmp_path_factory.mktemp("configmap")
    metrics_url = f"http://127.0.0.1:{free_port()}/metrics"
    options = {"metrics_port": int(metrics_url.split(":")[2].split("/")[0]), "metrics_host": "127.0.0.1",
               "reload_debounce_seconds": 0.2}
    publish(folder, keyword_config(**options))
    proxy = launch_proxy(standin, logs_dir, router_config=folder / "router_config.yaml")
    yield proxy, folder, metrics_url
    proxy.service.stop()


def scrape(url: str) -> dict[Any, float]:
    return parse_samples(httpx.get(url, timeout=10).text)


def wait_reloads(url: str, result: str, count: float, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while value(scrape(url), "lora_router_config_reloads_total", result=result) < count:
        assert time.monotonic() < deadline, f"no {result} reload within {timeout_s}s"
        time.sleep(0.1)


def ask(proxy: Proxy, standin: StandIn) -> tuple[httpx.Response, str]:
    standin.clear()
    response = proxy.chat(BODY)
    assert response.status_code == 200, response.text
    [received] = standin.received()
    return response, received["model"]


def test_reload_proxy_metrics_are_on_our_own_port(reload_setup: tuple[Proxy, Path, str]) -> None:
    """LiteLLM mounts `/metrics` only with its prometheus callback, absent here (its catch-all
    answers 401)."""
    proxy, _, metrics_url = reload_setup
    assert httpx.get(proxy.url + "/metrics", timeout=10).status_code == 401
    s = scrape(metrics_url)
    assert len(series(s, "lora_router_config_info")) == 1


def test_a_configmap_edit_reaches_the_next_request_without_restart(
    reload_setup: tuple[Proxy, Path, str], standin: StandIn
) -> None:
    proxy, folder, metrics_url = reload_setup
    pid = proxy.service.process.pid
    current = yaml.safe_load((folder / "router_config.yaml").read_text())
    known = keyword_config("medical-lora", **current["lora_router"])
    if yaml.safe_load(known) != current:  # the known state first
        ok = value(scrape(metrics_url), "lora_router_config_reloads_total", result="ok")
        publish(folder, known)
        wait_reloads(metrics_url, "ok", ok + 1)
    options = current["lora_router"]
    assert ask(proxy, standin)[1] == "medical-lora"
    before = scrape(metrics_url)
    [old_fingerprint] = series(before, "lora_router_config_info")
    publish(folder, keyword_config("legal-lora", **options))
    wait_reloads(metrics_url, "ok", value(before, "lora_router_config_reloads_total", result="ok") + 1)
    response, model = ask(proxy, standin)
    assert model == "legal-lora" and response.headers["x-lora-router-category"] == "medical"
    assert proxy.service.process.poll() is None and proxy.service.process.pid == pid
    [new_fingerprint] = series(scrape(metrics_url), "lora_router_config_info")
    assert new_fingerprint != old_fingerprint


def test_a_broken_file_keeps_traffic_flowing_on_the_old_config(
    reload_setup: tuple[Proxy, Path, str], standin: StandIn
) -> None:
    proxy, folder, metrics_url = reload_setup
    path = folder / "router_config.yaml"
    good = path.read_text()
    expected_model = ask(proxy, standin)[1]
    failed = value(scrape(metrics_url), "lora_router_config_reloads_total", result="failed")
    publish(folder, BROKEN)
    try:
        wait_reloads(metrics_url, "failed", failed + 1)
        for _ in range(3):
            assert ask(proxy, standin)[1] == expected_model
        check = subprocess.run([str(Path(sys.executable).parent / "lora-router"), "check", "--config", str(path)],
                               capture_output=True, text=True, timeout=60)
        assert check.returncode == 1
        printed = check.stderr.strip().splitlines()
        assert printed and all(line in proxy.service.log() for line in printed)
    finally:
        publish(folder, good)  # the config still served: a no-op reload


def test_sighup_reloads(reload_setup: tuple[Proxy, Path, str], standin: StandIn) -> None:
    proxy, _, metrics_url = reload_setup
    before = scrape(metrics_url)
    ok = value(before, "lora_router_config_reloads_total", result="ok")
    proxy.service.process.send_signal(signal.SIGHUP)
    wait_reloads(metrics_url, "ok", ok + 1)
    assert proxy.service.process.poll() is None
    assert series(scrape(metrics_url), "lora_router_config_info") == series(before, "lora_router_config_info")
    assert ask(proxy, standin)[0].status_code == 200


async def test_readiness_follows_a_reload_and_the_old_router_is_no_longer_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reload while the first router still retries a server that does not answer: the new router
    is the one made ready, and the old one's retries stop (they used to go on for ever, so the
    process never signalled readiness)."""
    from litellm_lora_router.litellm_adapter import LoraRouterHook

    ready = tmp_path / "ready"
    monkeypatch.setenv("LORA_ROUTER_READY_FILE", str(ready))
    raw = yaml.safe_load(keyword_config(watch_config=False))
    raw["classifier"] = {"mcp_category_model": {"enabled": True, "transport_type": "http",
                                                "url": f"http://127.0.0.1:{free_port()}/mcp"}}
    path = tmp_path / "router_config.yaml"
    path.write_text(yaml.safe_dump(raw))
    hook = LoraRouterHook(router_config_path=str(path))
    old, starts = hook.router, []
    start = old.start
    old.start = lambda methods=None: starts.append(methods) or start(methods)  # type: ignore[method-assign]
    try:
        for _ in range(100):
            if old.unconnected:
                break
            await asyncio.sleep(0.1)
        assert starts == [None] and old.unconnected == ["mcp"] and not ready.exists()
        path.write_text(keyword_config(watch_config=False))
        assert hook.reloader is not None and await hook.reloader.reload() is True
        for _ in range(50):
            if ready.exists():
                break
            await asyncio.sleep(0.1)
        assert ready.exists() and hook.router is not old
        await asyncio.sleep(2.5)  # past the old router's retry interval
        assert starts == [None]
    finally:
        assert hook._lifetime is not None
        hook._lifetime.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hook._lifetime
    assert not ready.exists()
