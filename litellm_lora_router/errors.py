"""Exceptions raised by litellm-lora-router.

    LoraRouterError
     ├── ConfigError           bad router_config.yaml (file, key path, expected, got)
     ├── ClassifierError       a classifier broke (method)
     │    └── ClassifierTimeout  it ran past its time budget
     ├── CacheUnavailable      the shared cache cannot be reached
     └── RequestShapeError     an auto-model request is malformed (param: the field's path)

"No match" and "low confidence" are values, never exceptions: only breakage raises.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "LoraRouterError",
    "ConfigError",
    "ConfigIssue",
    "ClassifierError",
    "ClassifierTimeout",
    "CacheUnavailable",
    "RequestShapeError",
]


class LoraRouterError(Exception):
    """Root of every error this package raises."""


@dataclass(frozen=True)
class ConfigIssue:
    """One problem found in a config file, located by its key path."""

    key_path: str
    expected: str
    got: str = ""

    def __str__(self) -> str:
        got = f", got {self.got}" if self.got else ""
        return f"{self.key_path or '<root>'}: expected {self.expected}{got}"


class ConfigError(LoraRouterError, ValueError):
    """A config file is invalid; lists every issue found, each with its key path."""

    def __init__(self, file: str, issues: list[ConfigIssue]) -> None:
        self.file = file
        self.issues = issues
        super().__init__("\n".join(f"{file}: {issue}" for issue in issues))

    @property
    def key_paths(self) -> list[str]:
        return [issue.key_path for issue in self.issues]


class ClassifierError(LoraRouterError):
    """A classifier could not produce a result (as opposed to finding no match)."""

    def __init__(self, method: str, message: str) -> None:
        self.method = method
        super().__init__(f"{method}: {message}")


class ClassifierTimeout(ClassifierError):
    """A classifier ran past its time budget."""


class CacheUnavailable(LoraRouterError):
    """The shared classification cache could not be reached."""


class RequestShapeError(LoraRouterError, ValueError):
    """A request cannot be routed because a field has the wrong shape: the caller's error (a 400).

    `param` is the field's path as OpenAI's error bodies name it (`messages[0].content`).
    """

    def __init__(self, param: str, expected: str) -> None:
        self.param = param
        self.expected = expected
        super().__init__(f"Invalid value for '{param}': expected {expected}.")
