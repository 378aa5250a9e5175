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

from .conftest import DEFAULT_ROUTER_CONFIG, ROOT

#: The guide's config block, verbatim (indentation restored): what its users bring over.
GUIDE_CONFIG = Path(__file__).resolve().parent / "fixtures" / "guide_router_config.yaml"
GUIDE_NAME = Path("seed") / "intelligent-lora-routing-guide.txt"
BLOCK_START, BLOCK_END = "# Category classifier", "How It Works"


def guide_text() -> str | None:
    """The guide itself: in ../shared beside the repository (CI), or beside the worktrees."""
    for shared in (ROOT.parent / "shared", ROOT.parent.parent / "shared"):
        if (shared / GUIDE_NAME).is_file():
            return (shared / GUIDE_NAME).read_text(encoding="utf-8")
    return None


def words_by_line(text: str) -> list[str]:
    """Each non-blank line with its whitespace collapsed (the guide's text dump lost indentation)."""
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def base() -> dict[str, Any]:
    return copy.deepcopy(yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text()))


def issues_of(raw: Any) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, "router_config.yaml")
    assert str(info.value).startswith("router_config.yaml: ")
    return {issue.key_path: str(issue) for issue in info.value.issues}


def test_guide_config_fixture_is_the_guides_block_word_for_word() -> None:
    text = guide_text()
    if text is None:
        pytest.skip(f"../shared/{GUIDE_NAME} is not beside this checkout")
    block = text[text.index(BLOCK_START): text.index(BLOCK_END)]
    fixture = GUIDE_CONFIG.read_text(encoding="utf-8")
    assert words_by_line(fixture[fixture.index(BLOCK_START):]) == words_by_line(block)


def test_guide_config_loads_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="litellm_lora_router"):
        config = load_config(GUIDE_CONFIG)
    assert config.default_model == "llama2-7b"
    assert config.classifier.category_model is not None
    assert config.classifier.category_model.model_id == "models/mom-domain-classifier"
    assert config.classifier.category_model.threshold == 0.6
    assert [e.name for e in config.vllm_endpoints] == ["vllm-primary"]
    assert config.models["llama2-7b"].preferred_endpoints == ["vllm-primary"]
    assert config.adapter_names == {"technical-lora", "medical-lora", "legal-lora"}
    assert [c.name for c in config.categories] == ["technical", "medical", "legal", "general"]
    technical = config.category("technical")
    assert technical is not None and technical.system_prompt == "You are an expert software engineer."
    best = technical.best_score
    assert (best.lora_name, best.use_reasoning, best.reasoning_effort) == ("technical-lora", True, "medium")
    general = config.category("general")
    assert general is not None and general.best_score.target == "llama2-7b" and general.best_score.score == 0.8
    assert "reasoning_family: 'llama2' is not defined" in caplog.text  # a warning, not a crash


def test_shipped_router_config_is_the_guide_unchanged() -> None:
    """The shipped `router_config.yaml` (and the package's copy the demo embeds) is the guide's file:
    its keyword rules lowered accuracy and were removed (README, "Accuracy")."""
    guide = load_config(GUIDE_CONFIG).model_dump(exclude={"source"})
    for shipped in (ROOT / "router_config.yaml", ROOT / "litellm_lora_router" / "defaults" / "router_config.yaml"):
        assert load_config(shipped).model_dump(exclude={"source"}) == guide, shipped


def test_the_tests_keyword_config_is_the_guide_plus_keyword_rules() -> None:
    config = load_config(DEFAULT_ROUTER_CONFIG)
    assert config.keyword_rules
    assert config.model_dump(exclude={"keyword_rules", "source"}) == load_config(GUIDE_CONFIG).model_dump(
        exclude={"keyword_rules", "source"})


def test_defaults_as_in_vllm_semantic_router() -> None:
    config = load_config(DEFAULT_ROUTER_CONFIG)
    assert config.auto_model_name == "MoM"
    assert config.auto_model_names == {"MoM", "auto"}
    assert config.reasoning_families["qwen3"] == BUILTIN_REASONING_FAMILIES["qwen3"]
    assert config.reasoning_families["deepseek"].parameter == "thinking"
    assert config.reasoning_families["gpt-oss"].type == "reasoning_effort"
    assert config.source == DEFAULT_ROUTER_CONFIG.absolute()


def test_a_symlinked_config_resolves_paths_beside_the_link(tmp_path: Path) -> None:
    """As a Kubernetes ConfigMap mounts it: `router_config.yaml -> ..data/router_config.yaml`, where
    `..data` points to a folder the next update replaces."""
    versioned = tmp_path / "..2026_01_01"
    versioned.mkdir()
    (versioned / "router_config.yaml").write_text(DEFAULT_ROUTER_CONFIG.read_text())
    (tmp_path / "..data").symlink_to(versioned.name)
    (tmp_path / "router_config.yaml").symlink_to("..data/router_config.yaml")
    (tmp_path / "models").mkdir()
    config = load_config(tmp_path / "router_config.yaml")
    assert config.source == tmp_path / "router_config.yaml"
    assert config.resolve_path("models") == tmp_path / "models"


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


def test_fingerprint_changes_with_rules_not_with_cache_settings() -> None:
    raw = base()
    first = parse_config(raw).fingerprint()
    raw["keyword_rules"][0]["keywords"].append("haskell")
    assert parse_config(raw).fingerprint() != first
    assert parse_config(base()).fingerprint() == first
    tuned = base()
    tuned["classification_cache"] = {"ttl_seconds": 60, "hash_secret": "s", "local_max_entries": 0}
    assert parse_config(tuned).fingerprint() == first
