"""An MCP server that routes each tenant to its own LoRA adapter, from a small table.

    python server.py                                 # stdio (the router starts it)
    python server.py --transport http --port 8765    # streamable HTTP at http://127.0.0.1:8765/mcp

Tools:
- `classify_text(text, with_probabilities, context)`: the category from a few word lists, and the
  adapter from the tenant table.
- `list_categories()`: categories with descriptions and system prompts.

`context` is what the router says about the caller:
- `tenant`: `"team:<LiteLLM team id>"`, else `"key:<key alias>"`, else null. The prefix is part of
  the value, so a key whose alias is `acme` (`key:acme`) can never pose as team `acme` (`team:acme`):
  match tenants on the whole string, as the table below does.
- `user`: the LiteLLM user id, or null.
- `key_metadata`: only the key-metadata fields listed in the router config's
  `classifier.mcp_category_model.context_metadata_keys` (none by default: key metadata can hold
  per-key logging credentials).

For tests: `MCP_TENANT_ROUTER_DELAY=<seconds>` answers slowly, and so does a text containing
`DELAY=<seconds>`; a text containing `CRASH-NOW` makes the server process exit, `TOOL-ERROR`
makes the tool fail (an error result) and `NOT-JSON` makes it answer plain text;
`MCP_TENANT_ROUTER_LOG=<file>` appends each call's `context` to that file as a JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import time
from typing import Any

from mcp.server.mcpserver import MCPServer

#: tenant -> adapter for every category; an unknown tenant gets the router config's adapter.
TENANT_ADAPTERS = {
    "team:acme": "acme-support-lora",
    "team:globex": "globex-support-lora",
    "team:rogue": "not-declared-lora",  # refused by the router: not in model_config
}

CATEGORIES = {
    "technical": ("Programming and IT questions", "You are a senior engineer.",
                  ["code", "python", "javascript", "server", "database", "bug", "api", "password", "login"]),
    "medical": ("Health questions", "You are a careful medical assistant.",
                ["pain", "blood", "doctor", "symptom", "medicine", "fever"]),
    "legal": ("Law and contracts", "You are a legal assistant.", ["contract", "law", "court", "lawyer"]),
}

server = MCPServer("tenant-router")


@server.tool()
def classify_text(text: str, with_probabilities: bool = False, context: dict[str, Any] | None = None) -> str:
    """Classify a user query into a category and pick the tenant's LoRA adapter."""
    if "CRASH-NOW" in text:
        os._exit(1)
    if "TOOL-ERROR" in text:
        raise ValueError("the tool failed")
    if "NOT-JSON" in text:
        return "technical, I think"
    if os.environ.get("MCP_TENANT_ROUTER_LOG"):
        with open(os.environ["MCP_TENANT_ROUTER_LOG"], "a", encoding="utf-8") as log:
            log.write(json.dumps(context) + "\n")
    delay = re.search(r"DELAY=([0-9.]+)", text)
    time.sleep(float(delay.group(1)) if delay else float(os.environ.get("MCP_TENANT_ROUTER_DELAY", "0")))
    words = {w.strip(".,?!:;").lower() for w in text.split()}
    scores = {name: len(words & set(keys)) for name, (_, _, keys) in CATEGORIES.items()}
    best = max(scores, key=lambda name: scores[name])
    category, confidence = (best, 0.9) if scores[best] else ("general", 0.6)
    result: dict[str, Any] = {"class": category, "confidence": confidence}
    if with_probabilities:
        total = sum(scores.values()) or 1
        result["probabilities"] = {name: s / total for name, s in scores.items()}
    tenant = (context or {}).get("tenant")
    if tenant in TENANT_ADAPTERS:
        result["lora_name"] = TENANT_ADAPTERS[tenant]
    return json.dumps(result)


@server.tool()
def list_categories() -> str:
    """The categories this server can return."""
    return json.dumps({"categories": [
        {"name": name, "description": desc, "system_prompt": prompt} for name, (desc, prompt, _) in CATEGORIES.items()
    ]})


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--transport", choices=["stdio", "http"], default="stdio")
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    if args.transport == "http":
        server.run("streamable-http", host="127.0.0.1", port=args.port)
    else:
        server.run()


if __name__ == "__main__":
    main()
