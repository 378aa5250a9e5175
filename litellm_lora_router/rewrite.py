"""Apply a `Decision` to a request of any routed API: a pure function that returns a new dict.

Each API keeps the system prompt and the reasoning switches in its own place, and LiteLLM carries
each of them to vLLM in its own way (checked with the vLLM stand-in, LiteLLM 1.108.7):

- chat completions: the first `system`/`developer` message; `chat_template_kwargs` (qwen3,
  deepseek) or `reasoning_effort` (gpt-oss).
- Responses: `instructions` (or a `system`/`developer` input item); `extra_body.chat_template_kwargs`
  (LiteLLM drops a top-level one and sends `extra_body` on) or `reasoning.effort`.
- Anthropic Messages: top-level `system` (a string or text blocks); `chat_template_kwargs` (passed
  through to the chat request LiteLLM makes) or `reasoning_effort` (wins over `thinking`).
- text completions: the model only; vLLM applies no chat template to a `prompt`.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from .decision import Decision
from .formats import ApiFormat

__all__ = ["ReasoningPrecedence", "rewrite_request"]

ReasoningPrecedence = Literal["caller", "category"]

_SYSTEM_ROLES = ("system", "developer")


def _prefixed(content: Any, prompt: str, mode: str, part_type: str) -> Any:
    """A system message's content with the prompt applied: replaced, or put in front (`insert`);
    array-form content keeps its other parts."""
    if mode == "replace":
        return prompt
    if isinstance(content, list):
        return [{"type": part_type, "text": prompt}, *content]
    return f"{prompt}\n\n{content}" if content else prompt


def _with_system_message(messages: list[Any], prompt: str, mode: str, part_type: str = "text") -> list[Any] | None:
    """`replace` swaps the content of the first system (or `developer`, OpenAI's newer name for it)
    message where it stands; `insert` prepends the prompt to that content. None: there is none.
    The message keeps its position, so one that is not first is neither lost nor duplicated."""
    index = next((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") in _SYSTEM_ROLES), None)
    if index is None:
        return None
    message = dict(messages[index])
    message["content"] = _prefixed(message.get("content"), prompt, mode, part_type)
    return [*messages[:index], message, *messages[index + 1:]]


def _system_prompt_chat(request: dict[str, Any], decision: Decision) -> None:
    messages = request.get("messages")
    if not decision.system_prompt or not isinstance(messages, list):
        return
    updated = _with_system_message(messages, decision.system_prompt, decision.system_prompt_mode)
    request["messages"] = updated if updated is not None else [{"role": "system", "content": decision.system_prompt},
                                                               *messages]


def _system_prompt_responses(request: dict[str, Any], decision: Decision) -> None:
    """`instructions`, unless the caller keeps the system prompt as an input item instead."""
    prompt, mode = decision.system_prompt, decision.system_prompt_mode
    if not prompt:
        return
    items = request.get("input")
    if not request.get("instructions") and isinstance(items, list):
        updated = _with_system_message(items, prompt, mode, part_type="input_text")
        if updated is not None:
            request["input"] = updated
            return
    request["instructions"] = _prefixed(request.get("instructions"), prompt, mode, "input_text")


def _system_prompt_anthropic(request: dict[str, Any], decision: Decision) -> None:
    if decision.system_prompt:
        request["system"] = _prefixed(request.get("system"), decision.system_prompt, decision.system_prompt_mode,
                                      "text")


def _merged(container: Any, key: str, value: Any, keep_existing: bool) -> dict[str, Any]:
    """`container` (a dict or anything else) as a new dict with `key` set, unless it is there and kept."""
    merged = dict(container) if isinstance(container, dict) else {}
    if not (keep_existing and key in merged):
        merged[key] = value
    return merged


def _apply_reasoning(request: dict[str, Any], decision: Decision, api_format: ApiFormat, caller_first: bool) -> None:
    """Switch reasoning the way the base model's family and the API take it. With `caller_first`,
    a value the caller set explicitly for the same switch is left as it is."""
    family = decision.reasoning
    if family is None or api_format == "completion":
        return
    if family.type == "chat_template_kwargs":
        if api_format == "responses":
            extra = dict(request["extra_body"]) if isinstance(request.get("extra_body"), dict) else {}
            extra["chat_template_kwargs"] = _merged(extra.get("chat_template_kwargs"), family.parameter,
                                                    decision.use_reasoning, caller_first)
            request["extra_body"] = extra
        else:
            request["chat_template_kwargs"] = _merged(request.get("chat_template_kwargs"), family.parameter,
                                                      decision.use_reasoning, caller_first)
        return
    if not (decision.use_reasoning and decision.reasoning_effort):
        return
    if api_format == "responses":
        caller_set = isinstance(request.get("reasoning"), dict) and "effort" in request["reasoning"]
        if not (caller_first and (caller_set or "reasoning_effort" in request)):
            request["reasoning"] = _merged(request.get("reasoning"), "effort", decision.reasoning_effort, False)
            request.pop("reasoning_effort", None)
    elif api_format == "anthropic":
        if not (caller_first and ("thinking" in request or "reasoning_effort" in request)):
            request[family.parameter] = decision.reasoning_effort
    elif not (caller_first and family.parameter in request):
        request[family.parameter] = decision.reasoning_effort


_SYSTEM_PROMPT = {
    "chat": _system_prompt_chat,
    "responses": _system_prompt_responses,
    "anthropic": _system_prompt_anthropic,
}


def rewrite_request(
    request: dict[str, Any],
    decision: Decision,
    api_format: ApiFormat = "chat",
    reasoning_precedence: ReasoningPrecedence = "caller",
) -> dict[str, Any]:
    """The request as the chosen adapter should receive it: model, system prompt, reasoning.

    A fallback only changes the model: the default model gets the request unchanged otherwise.
    Plain text completions get the model only: vLLM applies no chat template to a `prompt`.
    """
    rewritten = copy.copy(request)
    rewritten["model"] = decision.model
    if decision.is_fallback or api_format == "completion":
        return rewritten
    _SYSTEM_PROMPT[api_format](rewritten, decision)
    _apply_reasoning(rewritten, decision, api_format, reasoning_precedence == "caller")
    return rewritten
