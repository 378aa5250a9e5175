"""Classification methods, one module each, behind the `Classifier` protocol.

`CLASSIFIER_FACTORIES` names, per method, the function that builds it from a config (None when the
config does not use it). Modules are imported on first use, so a deployment that only uses keyword
rules never imports numpy, torch, onnxruntime or the MCP SDK.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .base import Caller, Classification, Classifier
from .keyword import KeywordClassifier

if TYPE_CHECKING:
    from ..config import RouterConfig

__all__ = ["CLASSIFIER_FACTORIES", "Caller", "Classification", "Classifier", "KeywordClassifier", "build_classifier"]

#: method -> "module:function" with the signature `(config, encoding) -> Classifier | None`, where
#: `encoding()` gives the router's one shared `EncodingService`.
CLASSIFIER_FACTORIES: Mapping[str, str] = MappingProxyType({
    "keyword": ".keyword:build",
    "embedding": ".embedding:build",
    "domain": ".domain:build",
    "mcp": ".mcp:build",
})


def build_classifier(method: str, config: RouterConfig, encoding: Callable[[], Any]) -> Classifier | None:
    """Build one method's classifier, importing its module only now."""
    module, _, function = CLASSIFIER_FACTORIES[method].partition(":")
    factory = getattr(importlib.import_module(module, __name__), function)
    classifier: Classifier | None = factory(config, encoding)
    return classifier
