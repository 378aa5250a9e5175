"""The plugin's readiness signal: a file that exists once every classifier is loaded and connected.

LiteLLM's own `/health/readiness` says nothing about a callback, and a callback cannot add a route,
so the hook writes `$LORA_ROUTER_READY_FILE` (JSON: the methods, the process) when `LoraRouter`
has built its models and connected its servers (MCP, remote encoders and classifiers), and removes
it when the process starts (a stale one) and exits. A Kubernetes readiness probe checks it with
`test -f`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["READY_FILE_ENV", "clear", "mark_ready", "ready_file"]

READY_FILE_ENV = "LORA_ROUTER_READY_FILE"


def ready_file() -> Path | None:
    """Where this process signals readiness, if the deployment asked for it."""
    value = os.environ.get(READY_FILE_ENV)
    return Path(value) if value else None


def clear(path: Path) -> None:
    """Not ready (yet): a file left by an earlier process must not count."""
    path.unlink(missing_ok=True)


def mark_ready(path: Path, methods: Sequence[str]) -> None:
    """Write the signal atomically, so a probe never reads half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps({"ready": True, "methods": list(methods), "pid": os.getpid(), "since": time.time()}))
    os.replace(partial, path)
