"""Shared fixtures: a real vLLM stand-in process and real LiteLLM proxy processes."""

from __future__ import annotations

import json
import os
import secrets
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from litellm_lora_router.processes import Service, start_proxy, start_standin

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_ROUTER_CONFIG = ROOT / "router_config.yaml"
#: The guide's config plus keyword rules (the shipped one has none): what plugin tests route with.
DEFAULT_ROUTER_CONFIG = ROOT / "tests" / "data" / "keyword_router_config.yaml"
DEFAULT_LITELLM_CONFIG = ROOT / "litellm_config.yaml"


@dataclass
class StandIn:
    service: Service

    @property
    def api_base(self) -> str:
        return self.service.url + "/v1"

    def received(self) -> list[dict[str, Any]]:
        return list(httpx.get(self.service.url + "/_devserver/requests").json())

    def calls(self) -> list[dict[str, Any]]:
        """Every request received: `{"path": ..., "body": ...}`."""
        return list(httpx.get(self.service.url + "/_devserver/calls").json())

    def clear(self) -> None:
        httpx.delete(self.service.url + "/_devserver/requests")

    def fault(self, model: str, status: int | None = None, delay_s: float = 0.0) -> None:
        """Make `model` answer `status` or stall `delay_s` seconds; no arguments clears it."""
        httpx.post(self.service.url + "/_devserver/faults", json={"model": model, "status": status, "delay_s": delay_s})


@dataclass
class Proxy:
    service: Service
    master_key: str

    @property
    def url(self) -> str:
        return self.service.url

    def chat(self, body: dict[str, Any], key: str | None = None) -> httpx.Response:
        return httpx.post(
            self.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {key or self.master_key}"},
            timeout=60,
        )


def new_master_key() -> str:
    return "sk-" + secrets.token_hex(16)


@pytest.fixture(scope="session")
def default_models() -> Path:
    """The guide's config names models/mom-domain-classifier: put both defaults in place once (a copy
    of the build the package ships, or of the cached one). Only tests that load them ask for it."""
    from litellm_lora_router.cli import ensure_default_models

    ensure_default_models(ROOT / "models")
    return ROOT / "models"


@pytest.fixture(scope="session")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service-logs")


@pytest.fixture(scope="session")
def standin(logs_dir: Path, default_models: Path) -> Iterator[StandIn]:
    """The vLLM stand-in; proxies started against it load the default router config, hence the models."""
    service = start_standin(logs_dir)
    yield StandIn(service)
    service.stop()


#: Virtual keys seeded into the proxy's auth cache, as LiteLLM's own tests do.
MOM_ONLY_KEY = "sk-mom-only-" + secrets.token_hex(6)
ROUTING_OFF_KEY = "sk-routing-off-" + secrets.token_hex(6)
TEAM_OFF_KEY = "sk-team-off-" + secrets.token_hex(6)
TEAM_OFF_KEY_ON = "sk-team-off-key-on-" + secrets.token_hex(6)
MEDICAL_ONLY_KEY = "sk-medical-only-" + secrets.token_hex(6)
OPTED_OUT_KEY = "sk-opted-out-" + secrets.token_hex(6)
NARROWING_KEY = "sk-narrowing-" + secrets.token_hex(6)
MALFORMED_KEY = "sk-malformed-" + secrets.token_hex(6)
DIRECT_KEY = "sk-direct-" + secrets.token_hex(6)

SEEDED_KEYS: list[dict[str, Any]] = [
    {"key": MOM_ONLY_KEY, "models": ["MoM"]},
    {"key": ROUTING_OFF_KEY, "models": ["MoM"], "metadata": {"lora_router": {"enabled": False}}},
    {"key": TEAM_OFF_KEY, "models": ["MoM"], "team_id": "team-off", "team_metadata": {"lora_router": {"enabled": False}}},
    {
        "key": TEAM_OFF_KEY_ON,
        "models": ["MoM"],
        "team_id": "team-off",
        "team_metadata": {"lora_router": {"enabled": False}},
        "metadata": {"lora_router": {"enabled": True}},
    },
    {
        "key": MEDICAL_ONLY_KEY,
        "models": ["MoM"],
        "team_id": "team-med",
        "team_metadata": {"lora_router": {"allowed_adapters": ["medical-lora"]}},
    },
    {"key": OPTED_OUT_KEY, "models": ["MoM"], "metadata": {"opted_out_global_guardrails": ["lora-router"]}},
    {   # the key lists an adapter its team does not allow: it may only narrow, never widen
        "key": NARROWING_KEY,
        "models": ["MoM"],
        "team_id": "team-med",
        "team_metadata": {"lora_router": {"allowed_adapters": ["medical-lora"]}},
        "metadata": {"lora_router": {"allowed_adapters": ["medical-lora", "technical-lora"]}},
    },
    {   # a string where a list belongs: fails closed
        "key": MALFORMED_KEY,
        "key_alias": "malformed-key",
        "models": ["MoM"],
        "metadata": {"lora_router": {"allowed_adapters": "technical-lora"}, "tier": "secret-tier-value"},
    },
    {   # may call adapters directly, but its team allows only medical-lora
        "key": DIRECT_KEY,
        "models": ["MoM", "llama2-7b", "technical-lora", "medical-lora"],
        "team_id": "team-direct",
        "team_metadata": {"lora_router": {"allowed_adapters": ["medical-lora"]}},
    },
]


def launch_proxy(
    standin: StandIn,
    logs_dir: Path,
    router_config: Path = DEFAULT_ROUTER_CONFIG,
    litellm_config: Path = DEFAULT_LITELLM_CONFIG,
    keys: list[dict[str, Any]] | None = None,
    extra_env: dict[str, str] | None = None,
) -> Proxy:
    master_key = new_master_key()
    command = None
    if keys is not None:
        command = [sys.executable, "-m", "tests.support.proxy_launcher", str(litellm_config), "{port}", json.dumps(keys)]
    # test callbacks (`tests.support.*`) must import in the `litellm` process too, whose sys.path
    # does not hold the working directory
    inherited = os.environ.get("PYTHONPATH")
    env = {"PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), inherited) if p), **(extra_env or {})}
    # generous: on a shared 2-core host LiteLLM alone can take a minute or more to start
    service = start_proxy(litellm_config, router_config, standin.api_base, master_key, logs_dir, command, env,
                          timeout_s=300)
    return Proxy(service, master_key)


@pytest.fixture(scope="session")
def proxy(standin: StandIn, logs_dir: Path) -> Iterator[Proxy]:
    """The default configs, with seeded virtual keys."""
    running = launch_proxy(standin, logs_dir, keys=[dict(k) for k in SEEDED_KEYS])
    yield running
    running.service.stop()
