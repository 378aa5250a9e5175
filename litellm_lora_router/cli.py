"""`lora-router`: check configs, classify a text, run the demo."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

import httpx
import yaml

from .adapters import AdapterRegistry, VllmServer, servers_from_deployments, servers_from_endpoints
from .config import RouterConfig, load_config
from .errors import ConfigError, LoraRouterError
from .extras import missing, require_training
from .router import LoraRouter

__all__ = ["check_litellm_config", "direct_access_warnings", "main", "probe_adapters", "servers_from_litellm_config"]

DEMO_QUERIES = (
    "Explain async/await in JavaScript",
    "What causes high blood pressure?",
    "Can my landlord keep the deposit if the contract says nothing?",
    "How do I fix a segfault in my C++ code?",
    "Can I break my apartment lease early if I move for work?",
    "How long should a sprained wrist take to heal?",
    "Tell me a fun fact about octopuses",
)


def default_config_path(name: str) -> Path:
    """`name` in the working directory, else the copy embedded in the package."""
    local = Path(name)
    return local if local.exists() else Path(str(resources.files(__package__) / "defaults" / name))


def _litellm_model_list(litellm_path: Path) -> tuple[dict[str, Any], list[Any], list[str]]:
    """(whole file, model_list entries, problems reading them)."""
    try:
        raw = yaml.safe_load(litellm_path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        return {}, [], [f"{litellm_path}: cannot read: {exc}"]
    entries = raw.get("model_list") if isinstance(raw, dict) else None
    if not isinstance(entries, list):
        return {}, [], [f"{litellm_path}: model_list: expected a list of models"]
    return raw, entries, []


def check_litellm_config(config: RouterConfig, litellm_path: Path) -> list[str]:
    """Cross-check: every name the router can pick must be a `model_name` LiteLLM knows."""
    _, entries, problems = _litellm_model_list(litellm_path)
    if problems:
        return problems
    names = {e.get("model_name") for e in entries if isinstance(e, dict)}
    needed = [(f"model_config.*.loras ({a})", a) for a in sorted(config.adapter_names)]
    needed += [("default_model", config.default_model), ("auto_model_name", config.auto_model_name)]
    if config.lora_router.adapter_discovery:  # an adapter that is not loaded is served by its base model
        needed += [(f"model_config.{base} (serves its adapters' requests when one is not loaded)", base)
                   for base, model in config.models.items() if model.loras and base != config.default_model]
    for where, name in needed:
        if name not in names:
            hint = " (the base model, so keys can be granted it)" if where == "auto_model_name" else ""
            problems.append(f"{litellm_path}: model_list: expected a model_name {name!r} for {where}{hint}")
    return problems


def direct_access_warnings(config: RouterConfig, litellm_path: Path) -> list[str]:
    """Where keys can reach an adapter without the plugin seeing the adapter's own name, so that
    `allowed_adapters` (enforced on requests naming a declared adapter) cannot hold them."""
    raw, entries, problems = _litellm_model_list(litellm_path)
    if problems:
        return []
    adapters = config.adapter_names
    warnings = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        name = str(entry.get("model_name"))
        params = entry.get("litellm_params")
        target = str(params.get("model", "")) if isinstance(params, dict) else ""
        served = target.rsplit("/", 1)[-1]
        if "*" in name or "*" in served:
            warnings.append(f"{litellm_path}: model_list[{i}]: wildcard {name!r} -> {target!r} lets keys call any "
                            "adapter by a name the plugin does not check; list each adapter instead")
        elif served in adapters and name != served:
            warnings.append(f"{litellm_path}: model_list[{i}]: model_name {name!r} reaches adapter {served!r} under "
                            f"another name, so lora_router.allowed_adapters is not enforced for it; name it {served!r}")
    for section in ("router_settings", "litellm_settings"):
        settings = raw.get(section)
        fallbacks = settings.get("fallbacks") if isinstance(settings, dict) else None
        for rule in fallbacks if isinstance(fallbacks, list) else []:
            for source, targets in (rule.items() if isinstance(rule, dict) else ()):
                for target in (t for t in (targets if isinstance(targets, list) else []) if t in adapters):
                    warnings.append(f"{litellm_path}: {section}.fallbacks: {source!r} falls back to adapter {target!r} "
                                    "after the plugin ran, so lora_router.allowed_adapters is not checked for it")
    return warnings


def servers_from_litellm_config(litellm_path: Path) -> dict[str, list[VllmServer]]:
    """Model name -> the servers its `model_list` entries send it to (as the proxy reads them)."""
    _, entries, _ = _litellm_model_list(litellm_path)
    return servers_from_deployments(entries)


async def probe_adapters(
    config: RouterConfig, servers: dict[str, list[VllmServer]], where: str
) -> tuple[list[str], list[str]]:
    """(problems, notes): unreachable servers and declared adapters they lack, as `check` prints them."""
    registry = AdapterRegistry(config, lambda: servers)
    try:
        await registry.refresh()
    finally:
        await registry.aclose()
    problems: list[str] = []
    notes: list[str] = []
    for server in {s.api_base: s for found in registry.servers.values() for s in found}.values():
        state = registry.states[server.api_base]
        if not state.reachable:
            sent = sorted(name for name, found in registry.servers.items() if server in found)
            what = "is unreachable" if state.conclusive else "gave no usable answer to GET /v1/models"
            problems.append(f"{where}: vLLM server {server.display} {what} ({state.error}); "
                            f"adapters sent there: {', '.join(sent)}")
    for name, lacking in sorted(registry.missing().items()):
        declared = config.adapter(name)
        path = declared.path if declared is not None else None
        for server in lacking:
            if path and config.lora_router.load_missing_adapters:
                notes.append(f"{where}: adapter {name!r} is not loaded on {server.display}; "
                             f"it will be loaded on first use from {path!r}")
            else:
                loaded = sorted(registry.states[server.api_base].adapters)
                why = "no path to load it from" if not path else "lora_router.load_missing_adapters is off"
                problems.append(f"{where}: adapter {name!r} (model_config.{config.base_model_of(name)}.loras) is not "
                                f"loaded on {server.display} ({why}); it serves: {', '.join(loaded) or 'no adapters'}")
    return problems, notes


def cmd_check(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 1
    problems = [f"{args.config}: {issue}" for issue in missing(config)]  # extras the config needs
    warnings: list[str] = []
    notes: list[str] = []
    if args.litellm_config:
        problems += check_litellm_config(config, Path(args.litellm_config))
        warnings = direct_access_warnings(config, Path(args.litellm_config))
    if args.probe:
        where = args.litellm_config or args.config
        servers = (servers_from_litellm_config(Path(args.litellm_config)) if args.litellm_config
                   else servers_from_endpoints(config))
        found, notes = asyncio.run(probe_adapters(config, servers, where))
        problems += found
    for line in [*problems, *(f"warning: {w}" for w in warnings)]:
        print(line, file=sys.stderr)
    for note in notes:
        print(note)
    if problems:
        return 1
    probed = ", every declared adapter loaded or loadable" if args.probe else ""
    print(f"{args.config}: OK ({len(config.categories)} categories, {len(config.adapter_names)} adapters{probed})")
    return 0


async def _route_once(router: LoraRouter, body: dict[str, Any]) -> Any:
    """Connect first, as the proxy does at start-up (an MCP server takes seconds to start)."""
    await router.start()
    try:
        return await router.route(body)
    finally:
        await router.aclose()


def cmd_classify(args: argparse.Namespace) -> int:
    router = LoraRouter.from_config(args.config)
    body = {"model": router.config.auto_model_name, "messages": [{"role": "user", "content": args.text}]}
    routed = asyncio.run(_route_once(router, body))
    decision = asdict(routed.decision)
    decision.pop("reasoning")
    print(json.dumps({**decision, "elapsed_ms": round(routed.elapsed_ms, 3), "error": routed.error}, indent=2))
    return 0


def _table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_demo(args: argparse.Namespace) -> int:
    from .processes import start_proxy, start_standin

    router_config = Path(args.config) if args.config else default_config_path("router_config.yaml")
    litellm_config = Path(args.litellm_config) if args.litellm_config else default_config_path("litellm_config.yaml")
    ensure_default_models()
    LoraRouter.from_config(router_config)  # fail here, with the clear message, before starting anything
    logs = Path(tempfile.mkdtemp(prefix="lora-router-demo-"))
    print(f"starting the vLLM stand-in and a LiteLLM proxy (logs in {logs}) ...", flush=True)
    standin = start_standin(logs)
    key = "sk-" + secrets.token_hex(16)
    try:
        proxy = start_proxy(litellm_config, router_config, standin.url + "/v1", key, logs)
    except RuntimeError:
        standin.stop()
        raise
    rows = [["query", "category", "adapter", "method", "cache", "route ms", "total ms", "vLLM saw"]]
    queries = list(args.queries or DEMO_QUERIES)
    try:
        with httpx.Client(timeout=60, headers={"Authorization": f"Bearer {key}"}) as client:
            for query in queries + queries[:2]:  # the repeats are answered from the classification cache
                started = time.perf_counter()
                response = client.post(proxy.url + "/v1/chat/completions",
                                       json={"model": "MoM", "messages": [{"role": "user", "content": query}]})
                total = (time.perf_counter() - started) * 1000
                response.raise_for_status()
                h = response.headers
                seen: list[dict[str, Any]] = client.get(standin.url + "/_devserver/requests").json()
                rows.append([
                    query[:48], h.get("x-lora-router-category", "-"), h.get("x-lora-router-adapter", "-"),
                    h.get("x-lora-router-method", "-") + (f" ({h['x-lora-router-fallback']})" if "x-lora-router-fallback" in h else ""),
                    h.get("x-lora-router-cache", "-"), h.get("x-lora-router-time-ms", "-"), f"{total:.1f}",
                    seen[-1]["model"],
                ])
    finally:
        proxy.stop()
        standin.stop()
    print(_table(rows))
    caches = [row[4] for row in rows[1:]]
    print(f"\nclassification cache: {caches.count('hit')} hits, {caches.count('miss')} misses "
          f"(in-process; set classification_cache.redis_url to share it across replicas)")
    return 0


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def ensure_default_models(models_dir: Path = Path("models"), retrain: bool = False) -> list[Path]:
    """Put the guide's default classifiers in place (the shipped build, the cache, or a new one)."""
    from .training import train_defaults

    try:
        return train_defaults(models_dir, _stderr, retrain)
    except ModuleNotFoundError as exc:  # a build of our own (no shipped or cached copy) in a slim install
        failed = (exc.name or "").partition(".")[0]
        require_training(modules=[m for m in ("sklearn", "onnxruntime", "tokenizers", failed) if m])
        raise


def cmd_train_defaults(args: argparse.Namespace) -> int:
    built = ensure_default_models(Path(args.models_dir), args.retrain)
    print("\n".join(f"built {p}" for p in built) or f"{args.models_dir}: already built")
    return 0


def cmd_train_domain(args: argparse.Namespace) -> int:
    require_training()
    from .config import EncoderConfig
    from .training import train_domain

    rows = [json.loads(line) for line in Path(args.data).read_text(encoding="utf-8").splitlines() if line.strip()]
    stats = train_domain([(r["text"], str(r["label"])) for r in rows], Path(args.out), EncoderConfig(backend=args.encoder),
                         encoders=args.encoders or ["sentence-transformers/all-MiniLM-L6-v2"])
    print(f"{args.out}: {int(stats['rows'])} rows, train accuracy {stats['train_accuracy']:.3f}")
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    require_training("lora-router eval", ("sklearn",))
    from .evaluation import format_report, load_rows, select_rows

    try:
        rows = [row for path in args.input for row in load_rows(Path(path))] if args.input else []
        if args.split:
            from .datasets import corpus_split

            rows = rows or [r for part in corpus_split().values() for r in part]
            wanted = {r["id"] for r in corpus_split()[args.split]}
            rows = [r for r in rows if r.get("id") in wanted]
        rows = select_rows(rows, args.where)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not rows:
        print(f"{' '.join(args.input) or 'the chat corpus'}: no labelled rows"
              f"{' match ' + ' '.join(args.where) if args.where else ''}", file=sys.stderr)
        return 1
    router = LoraRouter.from_config(args.config)  # evaluate() classifies directly, never from the cache
    report = asyncio.run(_evaluate_and_close(router, rows, args.by))
    print(json.dumps(report) if args.json else format_report(report))
    return 0


async def _evaluate_and_close(router: LoraRouter, rows: list[dict[str, Any]], by: list[str]) -> dict[str, Any]:
    from .evaluation import evaluate

    await router.start()  # connect first, as the proxy does
    try:
        return await evaluate(router, rows, by)
    finally:
        await router.aclose()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lora-router", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    check = sub.add_parser("check", help="validate router_config.yaml (and cross-check litellm_config.yaml)")
    check.add_argument("--config", default="router_config.yaml")
    check.add_argument("--litellm-config", default=None)
    check.add_argument("--probe", action="store_true",
                       help="ask each vLLM server (GET /v1/models) which declared adapters it lacks")
    check.set_defaults(func=cmd_check)

    classify = sub.add_parser("classify", help="print the routing decision for a text as JSON")
    classify.add_argument("--config", default="router_config.yaml")
    classify.add_argument("text")
    classify.set_defaults(func=cmd_classify)

    train_defaults = sub.add_parser("train-defaults", help="build models/mom-domain-classifier and models/mmlu-domain-classifier")
    train_defaults.add_argument("--models-dir", default="models")
    train_defaults.add_argument("--retrain", action="store_true", help="train even when a build of the same code and data exists")
    train_defaults.set_defaults(func=cmd_train_defaults)

    train = sub.add_parser("train-domain", help="train a light domain classifier from {text, label} rows")
    train.add_argument("--data", required=True)
    train.add_argument("--out", required=True)
    train.add_argument("--encoder", choices=["onnx", "torch"], default="onnx", help="MiniLM back-end")
    train.add_argument("--encoders", action="append", metavar="ID",
                       choices=["sentence-transformers/all-MiniLM-L6-v2", "universal-sentence-encoder-multilingual-3"],
                       help="encoder(s) whose vectors, concatenated, the head reads (default: MiniLM; repeatable)")
    train.set_defaults(func=cmd_train_domain)

    evaluate = sub.add_parser("eval", help="accuracy, coverage, macro-F1, confusion and latency on labelled rows")
    evaluate.add_argument("--input", action="append", default=[], metavar="ROWS.jsonl",
                          help="labelled rows (`text` or `messages`, and `expected_category` or `label`); repeatable")
    evaluate.add_argument("--split", choices=["train", "dev", "test", "dev2"],
                          help="only rows of this split of the shipped chat corpus (default input: the corpus)")
    evaluate.add_argument("--config", default="router_config.yaml")
    evaluate.add_argument("--json", action="store_true")
    evaluate.add_argument("--by", action="append", default=[], metavar="FIELD",
                          help="also report accuracy and coverage per value of this row field (repeatable)")
    evaluate.add_argument("--where", action="append", default=[], metavar="FIELD=VALUE",
                          help="evaluate only rows whose field has this value (repeatable; all must hold)")
    evaluate.set_defaults(func=cmd_eval)

    demo = sub.add_parser("demo", help="start the vLLM stand-in and a LiteLLM proxy, send queries, print decisions")
    demo.add_argument("--config", default=None, help="router config (default: ./router_config.yaml or embedded)")
    demo.add_argument("--litellm-config", default=None)
    demo.add_argument("queries", nargs="*")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except LoraRouterError as exc:  # a bad config or a missing extra: the message says what to do
        print(exc, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
