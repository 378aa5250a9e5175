"""Run the real LiteLLM proxy in this process with virtual keys seeded in its auth cache.

There is no Postgres here, so keys are seeded the way LiteLLM's own tests do: a
`UserAPIKeyAuth` under `hash_token(key)` in `user_api_key_cache`, and a placeholder
`prisma_client` so auth looks keys up instead of refusing with "No connected db".

    python -m tests.support.proxy_launcher CONFIG PORT KEYS_JSON
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


class _NoDatabase:
    """Stands in for the Prisma client; any DB call the proxy makes in the background fails."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"no database in tests ({name})")


def main() -> None:
    config, port, keys_json = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.environ["CONFIG_FILE_PATH"] = config
    import uvicorn
    from litellm.proxy import proxy_server
    from litellm.proxy._types import LiteLLM_TeamTableCachedObj, UserAPIKeyAuth, hash_token

    keys: list[dict[str, Any]] = json.loads(keys_json)
    original = proxy_server.app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[Any]:
        async with original(app) as state:
            for spec in keys:
                token = hash_token(spec.pop("key"))
                auth = UserAPIKeyAuth(token=token, last_refreshed_at=time.time(), **spec)
                proxy_server.user_api_key_cache.set_cache(key=token, value=auth)
                if auth.team_id:
                    team = LiteLLM_TeamTableCachedObj(
                        team_id=auth.team_id, models=auth.models, metadata=auth.team_metadata,
                        last_refreshed_at=time.time(),
                    )
                    proxy_server.user_api_key_cache.set_cache(key=f"team_id:{auth.team_id}", value=team)
            proxy_server.prisma_client = _NoDatabase()
            yield state

    proxy_server.app.router.lifespan_context = lifespan
    uvicorn.run(proxy_server.app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
