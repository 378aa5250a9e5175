"""`lora-router check` and `classify`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from litellm_lora_router.cli import main

from .conftest import DEFAULT_LITELLM_CONFIG, DEFAULT_ROUTER_CONFIG

pytestmark = pytest.mark.usefixtures("default_models")


def test_check_default_configs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(DEFAULT_ROUTER_CONFIG), "--litellm-config", str(DEFAULT_LITELLM_CONFIG)]) == 0
    assert "OK (4 categories, 3 adapters)" in capsys.readouterr().out


def test_check_reports_missing_model_names(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = yaml.safe_load(DEFAULT_LITELLM_CONFIG.read_text())
    raw["model_list"] = [m for m in raw["model_list"] if m["model_name"] not in ("MoM", "legal-lora")]
    path = tmp_path / "litellm_config.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["check", "--config", str(DEFAULT_ROUTER_CONFIG), "--litellm-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}: model_list: expected a model_name 'legal-lora'" in err
    assert "expected a model_name 'MoM' for auto_model_name (the base model" in err


def test_check_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "router_config.yaml"
    path.write_text(DEFAULT_ROUTER_CONFIG.read_text().replace("score: 0.8", "score: -1"))
    assert main(["check", "--config", str(path)]) == 1
    assert f"{path}: categories[3].model_scores[0].score: expected input should be greater than 0" in capsys.readouterr().err


def test_classify_prints_the_decision(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["classify", "--config", str(DEFAULT_ROUTER_CONFIG), "Explain async/await in JavaScript"]) == 0
    decision = json.loads(capsys.readouterr().out)
    assert decision["model"] == "technical-lora" and decision["method"] == "keyword"
    assert decision["category"] == "technical" and decision["reason"] is None


def test_check_warns_where_keys_reach_adapters_around_the_plugin(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", "--config", str(DEFAULT_ROUTER_CONFIG), "--litellm-config", str(DEFAULT_LITELLM_CONFIG)]) == 0
    assert "warning" not in capsys.readouterr().err  # every adapter under its own name: enforced
    raw = yaml.safe_load(DEFAULT_LITELLM_CONFIG.read_text())
    api_base = "http://vllm:8000/v1"
    raw["model_list"] += [
        {"model_name": "tech", "litellm_params": {"model": "hosted_vllm/technical-lora", "api_base": api_base}},
        {"model_name": "vllm/*", "litellm_params": {"model": "hosted_vllm/*", "api_base": api_base}},
    ]
    raw["router_settings"] = {"fallbacks": [{"MoM": ["legal-lora"]}]}
    path = tmp_path / "litellm_config.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["check", "--config", str(DEFAULT_ROUTER_CONFIG), "--litellm-config", str(path)]) == 0  # warnings only
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 3
    assert "model_list[5]: model_name 'tech' reaches adapter 'technical-lora' under another name" in warnings[0]
    assert "model_list[6]: wildcard 'vllm/*'" in warnings[1]
    assert "router_settings.fallbacks: 'MoM' falls back to adapter 'legal-lora'" in warnings[2]


def test_check_requires_the_base_model_of_adapters(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An adapter that is not loaded is served by its base model, so LiteLLM must know that one too."""
    from .test_decision_rewrite import QWEN

    router = tmp_path / "router_config.yaml"
    router.write_text(yaml.safe_dump(QWEN))
    litellm = tmp_path / "litellm_config.yaml"
    names = ["MoM", "qwen3-8b", "code-lora", "math-lora", "law-lora"]
    litellm.write_text(yaml.safe_dump({"model_list": [{"model_name": n, "litellm_params": {"model": f"hosted_vllm/{n}"}}
                                                      for n in names]}))
    assert main(["check", "--config", str(router), "--litellm-config", str(litellm)]) == 1
    assert ("expected a model_name 'gpt-oss-20b' for model_config.gpt-oss-20b (serves its adapters' requests when "
            "one is not loaded)") in capsys.readouterr().err
