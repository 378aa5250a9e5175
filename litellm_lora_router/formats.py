"""The request formats of the APIs that carry a prompt: what the person wrote, and shape checks.

Four formats reach a chat model through LiteLLM: OpenAI chat completions (`messages`), the Responses
API (`input`, `instructions`), Anthropic Messages (`messages` of content blocks, top-level `system`)
and legacy text completions (`prompt`). `person_turns` gives the person's own words per user turn,
oldest first; how many turns are combined and how much text is classified is decided elsewhere
(`messages.classified_text`), the same way for every format.

Agent clients wrap the person's words in scaffolding: Claude Code puts `<system-reminder>` blocks
(tool lists, project notes, often far longer than the question) into user turns, and in a tool loop
a user turn holds only `tool_result` blocks. Reminder text is dropped and a turn with nothing left is
no turn at all, so a tool-loop request is classified on the words that started the loop: it stays on
the adapter its conversation started on, on every replica, without any state.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import islice
from typing import Any, Literal

from .errors import RequestShapeError

__all__ = [
    "API_FORMATS",
    "ApiFormat",
    "SCAFFOLDING_TAGS",
    "check_shape",
    "content_text",
    "person_turns",
    "strip_scaffolding",
]

ApiFormat = Literal["chat", "responses", "anthropic", "completion"]
API_FORMATS: tuple[ApiFormat, ...] = ("chat", "responses", "anthropic", "completion")

#: Tags whose content an agent client adds to user turns; never the person's words.
SCAFFOLDING_TAGS: tuple[str, ...] = ("system-reminder",)

#: Text part types per format (the parts classified); other known types are kept but not read.
_TEXT_PARTS: dict[ApiFormat, frozenset[str]] = {
    "chat": frozenset({"text"}),
    "responses": frozenset({"input_text", "output_text"}),
    "anthropic": frozenset({"text"}),
    "completion": frozenset(),
}

#: Content part types each API accepts (OpenAI's, plus vLLM's multimodal extensions for chat).
_KNOWN_PARTS: dict[ApiFormat, frozenset[str]] = {
    "chat": frozenset({"text", "image_url", "input_audio", "file", "refusal", "audio_url", "video_url",
                       "image_embeds", "thinking", "redacted_thinking"}),
    "responses": frozenset({"input_text", "input_image", "input_file", "input_audio", "output_text", "refusal",
                            "summary_text", "reasoning_text"}),
    "anthropic": frozenset({"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking",
                            "server_tool_use", "web_search_tool_result", "web_fetch_tool_result", "search_result",
                            "container_upload", "mcp_tool_use", "mcp_tool_result", "code_execution_tool_result",
                            "bash_code_execution_tool_result", "text_editor_code_execution_tool_result",
                            "tool_search_tool_result"}),
    "completion": frozenset(),
}


def strip_scaffolding(text: str) -> str:
    """`text` without `<system-reminder>...</system-reminder>` spans; an unclosed one runs to the end.

    Linear in the text (`str.find`, no regex), so a megabyte of scaffolding costs microseconds.
    """
    for tag in SCAFFOLDING_TAGS:
        opening, closing = f"<{tag}>", f"</{tag}>"
        if opening not in text:
            continue
        kept: list[str] = []
        position = 0
        while (start := text.find(opening, position)) != -1:
            kept.append(text[position:start])
            end = text.find(closing, start + len(opening))
            position = len(text) if end == -1 else end + len(closing)
        kept.append(text[position:])
        text = "".join(kept)
    return text


def content_text(content: Any, text_types: frozenset[str] = frozenset({"text", "input_text"})) -> str:
    """A message's text: the string itself, or its text parts joined; scaffolding left in."""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = [part["text"] for part in content
                 if isinstance(part, Mapping) and part.get("type") in text_types and isinstance(part.get("text"), str)]
        return "\n".join(p for p in parts if p)
    return ""


def _person_text(content: Any, fmt: ApiFormat) -> str:
    """The person's words in one message: text parts without scaffolding (each part on its own, so
    an unclosed reminder in one part cannot swallow the next)."""
    if isinstance(content, str):
        return strip_scaffolding(content).strip()
    if not isinstance(content, Sequence):
        return ""
    types = _TEXT_PARTS[fmt]
    parts = (strip_scaffolding(part["text"]).strip() for part in content
             if isinstance(part, Mapping) and part.get("type") in types and isinstance(part.get("text"), str))
    return "\n".join(p for p in parts if p)


def _messages(request: Mapping[str, Any], fmt: ApiFormat) -> Sequence[Any]:
    """The list of conversation items of a format (empty for completions and malformed requests)."""
    items = request.get("input") if fmt == "responses" else request.get("messages")
    return items if isinstance(items, list) else []


def _is_message(item: Any, fmt: ApiFormat) -> bool:
    """Responses input mixes messages with other items (`function_call_output`, `reasoning`...)."""
    if not isinstance(item, Mapping):
        return False
    return fmt != "responses" or item.get("type", "message") == "message"


def _user_texts_newest_first(request: Mapping[str, Any], fmt: ApiFormat) -> Iterator[str]:
    if fmt == "completion":
        prompt = request.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else prompt if isinstance(prompt, list) else []
        for text in reversed(prompts):
            if isinstance(text, str) and (words := strip_scaffolding(text).strip()):
                yield words
        return
    if fmt == "responses" and isinstance(request.get("input"), str):
        if words := strip_scaffolding(request["input"]).strip():
            yield words
        return
    for item in reversed(_messages(request, fmt)):
        if _is_message(item, fmt) and item.get("role") == "user":
            if words := _person_text(item.get("content"), fmt):
                yield words


def person_turns(request: Mapping[str, Any], fmt: ApiFormat, newest: int | None = None) -> list[str]:
    """The person's words in each user turn, oldest first, at most the `newest` ones.

    Turns with no words of the person (tool results, scaffolding only) are left out. Without any
    user turn (a request holding only a system prompt) the text of the other messages stands in.
    Reading stops once `newest` turns are found, so a long conversation costs no more than a short one.
    """
    found = list(islice(_user_texts_newest_first(request, fmt), newest))
    if not found:
        others = (_person_text(m.get("content"), fmt) for m in reversed(_messages(request, fmt)) if _is_message(m, fmt))
        found = list(islice((text for text in others if text), newest))
    return found[::-1]


def _check_content(content: Any, param: str, fmt: ApiFormat, allow_none: bool) -> None:
    if isinstance(content, str) or (content is None and allow_none):
        return
    if not isinstance(content, list):
        raise RequestShapeError(param, "a string or an array of content parts")
    known = _KNOWN_PARTS[fmt]
    for j, part in enumerate(content):
        if not isinstance(part, Mapping):
            raise RequestShapeError(f"{param}[{j}]", "a content part object")
        kind = part.get("type")
        if not isinstance(kind, str) or kind not in known:
            raise RequestShapeError(f"{param}[{j}].type", "one of " + ", ".join(sorted(known)))
        if kind in _TEXT_PARTS[fmt] and not isinstance(part.get("text"), str):
            raise RequestShapeError(f"{param}[{j}].text", "a string")


def _check_messages(items: Any, param: str, fmt: ApiFormat) -> None:
    if not isinstance(items, list):
        raise RequestShapeError(param, "an array of messages")
    roles = ("user", "assistant") if fmt == "anthropic" else None
    for i, item in enumerate(items):
        if not isinstance(item, Mapping):
            raise RequestShapeError(f"{param}[{i}]", "an object")
        if fmt == "responses" and not _is_message(item, fmt):
            if not isinstance(item.get("type"), str):
                raise RequestShapeError(f"{param}[{i}].type", "a string")
            continue
        role = item.get("role")
        if not isinstance(role, str) or (roles is not None and role not in roles):
            raise RequestShapeError(f"{param}[{i}].role", " or ".join(roles) if roles else "a string")
        _check_content(item.get("content"), f"{param}[{i}].content", fmt, allow_none=role != "user")


def check_shape(request: Mapping[str, Any], fmt: ApiFormat) -> None:
    """Raise `RequestShapeError` naming the first field whose shape the API does not accept.

    Run before routing, so a malformed auto-model request is the caller's 400 rather than an error
    deep inside the proxy.
    """
    if fmt == "chat":
        _check_messages(request.get("messages"), "messages", fmt)
    elif fmt == "responses":
        if not isinstance(request.get("input"), str):
            _check_messages(request.get("input"), "input", fmt)
        if request.get("instructions") is not None and not isinstance(request.get("instructions"), str):
            raise RequestShapeError("instructions", "a string")
    elif fmt == "anthropic":
        _check_messages(request.get("messages"), "messages", fmt)
        system = request.get("system")
        if system is not None and not isinstance(system, str):
            if not isinstance(system, list):
                raise RequestShapeError("system", "a string or an array of text blocks")
            for j, block in enumerate(system):
                is_text = isinstance(block, Mapping) and block.get("type") == "text"
                if not (is_text and isinstance(block.get("text"), str)):
                    raise RequestShapeError(f"system[{j}]", "a text block")
    else:
        prompt = request.get("prompt")
        if not _is_prompt(prompt):
            raise RequestShapeError("prompt", "a string, an array of strings, or an array of token ids")


def _is_prompt(prompt: Any) -> bool:
    if isinstance(prompt, str):
        return True
    if not isinstance(prompt, list) or not prompt:
        return False
    if all(isinstance(p, str) for p in prompt):
        return True
    if all(isinstance(p, int) and not isinstance(p, bool) for p in prompt):
        return True
    return all(isinstance(p, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in p) for p in prompt)
