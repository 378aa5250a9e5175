"""A LiteLLM logging callback that writes what the spend log would store, for tests."""

from __future__ import annotations

import json
import os
from typing import Any

from litellm.integrations.custom_logger import CustomLogger


class SpendRecorder(CustomLogger):
    async def async_log_success_event(self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any) -> None:
        payload = kwargs.get("standard_logging_object") or {}
        record = {
            "model_group": payload.get("model_group"),
            "spend_logs_metadata": (payload.get("metadata") or {}).get("spend_logs_metadata"),
            "request_tags": payload.get("request_tags"),
        }
        with open(os.environ["SPEND_RECORD_FILE"], "a", encoding="utf-8") as out:
            out.write(json.dumps(record) + "\n")


spend_recorder = SpendRecorder()
