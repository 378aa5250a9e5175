"""Config loading: the guide's file loads unchanged; errors name file, key path, expected, got."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import pytest
import yaml

from litellm_lora_router import ConfigError, load_config, parse_config
from litellm_lora_router.config import BUILTIN_REASONING_FAMILIES

from .conftest import DEFAULT_ROUTER_CONFIG

GUIDE_TEXT = (Path(__file__).resolve().parents[2] / "shared" / "seed" / "intelligent-lora-routing-guide.txt")


def base() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text()))


def issues_of(raw: Any) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "router_config.yaml")
    assert str(info.value).startswith("router_config.yaml: ")
    return {issue.key_path: str(issue) for issue in info.value.issues}


def test_guide_example_loads_unchanged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The `config/config.yaml` block of the guide, cut out of the guide's own text."""
    if GUIDE_TEXT.exists():
        text = GUIDE_TEXT.read_text()
        block = text[text.index("# Category classifier"): text.index("How It Works")]
        assert "llama2-7b" in block
    raw = base()
    del raw["keyword_rules"]
    with caplog.at_level(logging.WARNING, logger="litellm_lora_router"):
        config = parse_config(raw, "config.yaml")
    assert config.default_model == "llama2-7b"
    assert config.classifier.category_model is not None
    assert config.classifier.category_model.threshold == 0.6
    assert config.adapter_names == {"technical-lora", "medical-lora", "legal-lora"}
    assert config.category("general") is not None and config.category("general").best_score.target == "llama2-7b"
    assert "reasoning_family: 'llama2' is not defined" in caplog.text  # a warning, not a crash


def test_defaults_as_in_vllm_semantic_router() -> None:
    config = load_config(DEFAULT_ROUTER_CONFIG)
    assert config.auto_model_name == "MoM"
    assert config.auto_model_names == {"MoM", "auto"}
    assert config.reasoning_families["qwen3"] == BUILTIN_REASONING_FAMILIES["qwen3"]
    assert config.reasoning_families["deepseek"].parameter == "thinking"
    assert config.reasoning_families["gpt-oss"].type == "reasoning_effort"
    assert config.source == DEFAULT_ROUTER_CONFIG.resolve()


def test_score_must_be_positive() -> None:
    raw = base()
    raw["categories"][0]["model_scores"][0]["score"] = 0
    issues = issues_of(raw)
    assert "categories[0].model_scores[0].score" in issues
    assert "greater than 0" in issues["categories[0].model_scores[0].score"]


def test_lora_name_must_be_declared() -> None:
    raw = base()
    raw["categories"][2]["model_scores"][0]["lora_name"] = "tech-lora"
    issues = issues_of(raw)
    assert issues == {
        "categories[2].model_scores[0].lora_name": "categories[2].model_scores[0].lora_name: expected an adapter "
        "listed under model_config.llama2-7b.loras, got 'tech-lora'"
    }


def test_default_model_must_be_defined() -> None:
    raw = base()
    raw["default_model"] = "gpt-9"
    assert "default_model" in issues_of(raw)
    del raw["default_model"]
    assert "default_model" in issues_of(raw)


def test_unknown_keys_are_reported_all_at_once() -> None:
    raw = base()
    raw["categories"][0]["model_scores"][0]["lora_nmae"] = "x"
    raw["model_config"]["llama2-7b"]["lorass"] = []
    raw["categoires"] = []
    issues = issues_of(raw)
    assert set(issues) == {"categories[0].model_scores[0].lora_nmae", "model_config.llama2-7b.lorass", "categoires"}
    assert "unknown key" in issues["categoires"]


def test_vsr_sections_we_do_not_use_are_accepted() -> None:
    raw = base()
    raw["semantic_cache"] = {"enabled": True}
    raw["prompt_guard"] = {"enabled": False}
    assert set(parse_config(raw).ignored_sections) == {"semantic_cache", "prompt_guard"}


def test_invalid_regex_is_a_config_error() -> None:
    raw = base()
    raw["keyword_rules"] = [{"category": "legal", "method": "regex", "keywords": ["(unclosed"]}]
    issues = issues_of(raw)
    assert "keyword_rules[0].keywords[0]" in issues
    assert "valid regular expression" in issues["keyword_rules[0].keywords[0]"]


def test_keyword_rule_category_must_exist() -> None:
    raw = base()
    raw["keyword_rules"] = [{"category": "finance", "keywords": ["stock"]}]
    assert "keyword_rules[0].category" in issues_of(raw)


@pytest.mark.parametrize(("text", "expected"), [
    ("", "an empty file"),
    ("- a\n- b\n", "list"),
    ("categories: [\n", "valid YAML"),
])
def test_file_level_errors_name_the_file(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "router_config.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="expected a readable file"):
        load_config("/nonexistent/router_config.yaml")


def test_fingerprint_changes_with_rules() -> None:
    raw = base()
    first = parse_config(raw).fingerprint()
    raw["keyword_rules"][0]["keywords"].append("haskell")
    assert parse_config(raw).fingerprint() != first
    assert parse_config(base()).fingerprint() == first
