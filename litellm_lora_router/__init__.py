"""litellm-lora-router: intent-aware LoRA adapter routing for the LiteLLM proxy.

The package root exports the pure core only; importing it loads no litellm, redis, mcp or torch.
`litellm_lora_router.proxy_handler_instance` (for `litellm_settings.callbacks`) is resolved lazily.
"""

from typing import Any

from .classifiers import Classification, Classifier, KeywordClassifier
from .config import RouterConfig, load_config, parse_config
from .decision import Decision, TenantPolicy, fallback_decision, select_adapter
from .errors import CacheUnavailable, ClassifierError, ClassifierTimeout, ConfigError, LoraRouterError
from .messages import text_to_classify
from .rewrite import rewrite_request
from .router import LoraRouter, Routed

__all__ = [
    "CacheUnavailable",
    "Classification",
    "Classifier",
    "ClassifierError",
    "ClassifierTimeout",
    "ConfigError",
    "Decision",
    "KeywordClassifier",
    "LoraRouter",
    "LoraRouterError",
    "Routed",
    "RouterConfig",
    "TenantPolicy",
    "fallback_decision",
    "load_config",
    "parse_config",
    "rewrite_request",
    "select_adapter",
    "text_to_classify",
]


def __getattr__(name: str) -> Any:
    if name == "proxy_handler_instance":
        from . import litellm_adapter

        return litellm_adapter.proxy_handler_instance
    raise AttributeError(name)
