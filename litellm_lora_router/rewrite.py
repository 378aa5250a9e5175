"""Apply a `Decision` to an OpenAI chat request: a pure function that returns a new dict."""

from __future__ import annotations

import copy
from typing import Any

from .decision import Decision

__all__ = ["rewrite_request"]


def _with_system_prompt(messages: list[Any], prompt: str, mode: str) -> list[Any]:
    """`replace` swaps the first system message's content (or prepends one); `insert` prepends
    the prompt to that content. The system message keeps its position, so one that is not first
    is neither lost nor duplicated, and array-form content keeps its other parts."""
    index = next((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "system"), None)
    if index is None:
        return [{"role": "system", "content": prompt}, *messages]
    message = dict(messages[index])
    content = message.get("content")
    if mode == "replace":
        message["content"] = prompt
    elif isinstance(content, list):
        message["content"] = [{"type": "text", "text": prompt}, *content]
    elif content:
        message["content"] = f"{prompt}\n\n{content}"
    else:
        message["content"] = prompt
    return [*messages[:index], message, *messages[index + 1 :]]


def _apply_reasoning(request: dict[str, Any], decision: Decision) -> None:
    family = decision.reasoning
    if family is None:
        return
    if family.type == "chat_template_kwargs":
        existing = request.get("chat_template_kwargs")
        kwargs = dict(existing) if isinstance(existing, dict) else {}
        kwargs[family.parameter] = decision.use_reasoning
        request["chat_template_kwargs"] = kwargs
    elif decision.use_reasoning and decision.reasoning_effort:
        request[family.parameter] = decision.reasoning_effort


def rewrite_request(request: dict[str, Any], decision: Decision) -> dict[str, Any]:
    """The request as the chosen adapter should receive it: model, system prompt, reasoning.

    A fallback only changes the model: the default model gets the request unchanged otherwise.
    """
    rewritten = copy.copy(request)
    rewritten["model"] = decision.model
    if decision.is_fallback:
        return rewritten
    messages = request.get("messages")
    if decision.system_prompt and isinstance(messages, list):
        rewritten["messages"] = _with_system_prompt(messages, decision.system_prompt, decision.system_prompt_mode)
    _apply_reasoning(rewritten, decision)
    return rewritten
