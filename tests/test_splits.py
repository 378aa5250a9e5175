"""Traffic splits between adapter versions: shares follow the weights, each caller sticks to one."""

from __future__ import annotations

import copy
import hashlib
from collections import Counter
from typing import Any

import pytest
import yaml

from litellm_lora_router import Classification, ConfigError, TenantPolicy, parse_config, select_adapter
from litellm_lora_router.config import RouterConfig

from .conftest import DEFAULT_ROUTER_CONFIG

#: Over 20,000 callers a share is within 0.01 of its weight (binomial sd at p=0.1 is 0.002).
TOLERANCE = 0.01
CALLERS = [hashlib.sha256(f"key:{i}".encode()).hexdigest() for i in range(20_000)]


def split_config(weights: dict[str, float], unweighted: tuple[str, ...] = ()) -> RouterConfig:
    raw: dict[str, Any] = yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text())
    names = [*weights, *unweighted]
    raw["model_config"]["llama2-7b"]["loras"] += [{"name": n} for n in names if n != "legal-lora"]
    legal = next(c for c in raw["categories"] if c["name"] == "legal")
    legal["model_scores"] = [{"model": "llama2-7b", "lora_name": n, "score": 1.0, "weight": w} for n, w in weights.items()]
    legal["model_scores"] += [{"model": "llama2-7b", "lora_name": n, "score": 0.5} for n in unweighted]
    return parse_config(raw)


def legal(config: RouterConfig, key: str | None, policy: TenantPolicy | None = None) -> str:
    return select_adapter(config, Classification("legal", 1.0, "keyword"), policy or TenantPolicy(), key).model


@pytest.mark.parametrize("weights", [
    {"legal-lora": 90, "legal-lora-v2": 10},
    {"legal-lora": 0.5, "legal-lora-v2": 0.3, "legal-lora-v3": 0.2},
])
def test_split_follows_the_weights_within_tolerance(weights: dict[str, float]) -> None:
    config = split_config(weights)
    shares = Counter(legal(config, key) for key in CALLERS)
    total = sum(weights.values())
    for name, weight in weights.items():
        assert abs(shares[name] / len(CALLERS) - weight / total) < TOLERANCE, (name, shares)


def test_one_key_always_gets_the_same_variant() -> None:
    config = split_config({"legal-lora": 50, "legal-lora-v2": 50})
    for key in CALLERS[:200]:
        first = legal(config, key)
        assert {legal(config, key) for _ in range(5)} == {first}
        assert legal(split_config({"legal-lora": 50, "legal-lora-v2": 50}), key) == first  # a reload keeps it


def test_the_decision_names_the_variant() -> None:
    config = split_config({"legal-lora": 1, "legal-lora-v2": 1})
    decisions = {select_adapter(config, Classification("legal", 1.0, "keyword"), TenantPolicy(), k) for k in CALLERS[:50]}
    assert {d.variant for d in decisions} == {"legal-lora", "legal-lora-v2"}
    assert all(d.variant == d.model and d.reason is None for d in decisions)
    unsplit = select_adapter(config, Classification("medical", 1.0, "keyword"), TenantPolicy(), CALLERS[0])
    assert unsplit.variant is None


def test_raising_a_canary_only_moves_callers_onto_it() -> None:
    before = split_config({"legal-lora": 90, "legal-lora-v2": 10})
    after = split_config({"legal-lora": 70, "legal-lora-v2": 30})
    moved = [(legal(before, k), legal(after, k)) for k in CALLERS[:5000]]
    assert ("legal-lora-v2", "legal-lora") not in set(moved)
    assert ("legal-lora", "legal-lora-v2") in set(moved)


def test_tenant_allow_list_applies_before_the_split() -> None:
    config = split_config({"legal-lora": 50, "legal-lora-v2": 50}, unweighted=("legal-lora-old",))
    only_v1 = TenantPolicy(allowed_adapters=frozenset({"legal-lora"}))
    assert {legal(config, k, only_v1) for k in CALLERS[:300]} == {"legal-lora"}
    # no weighted entry allowed: the unweighted entries are used, by score
    only_old = TenantPolicy(allowed_adapters=frozenset({"legal-lora-old"}))
    assert {legal(config, k, only_old) for k in CALLERS[:50]} == {"legal-lora-old"}


def test_weight_zero_drains_a_variant() -> None:
    config = split_config({"legal-lora": 1, "legal-lora-v2": 0})
    assert {legal(config, k) for k in CALLERS[:500]} == {"legal-lora"}


def test_all_weights_zero_is_a_config_error() -> None:
    raw = yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text())
    raw["categories"][2]["model_scores"][0]["weight"] = 0
    with pytest.raises(ConfigError) as info:
        parse_config(copy.deepcopy(raw), "router_config.yaml")
    assert info.value.key_paths == ["categories[2]"]
    assert "at least one model_scores weight above 0" in str(info.value)
    raw["categories"][2]["model_scores"][0]["weight"] = -1
    with pytest.raises(ConfigError) as negative:
        parse_config(raw, "router_config.yaml")
    assert negative.value.key_paths == ["categories[2].model_scores[0].weight"]
