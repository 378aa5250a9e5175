"""The deployment files agree with the configs they run, and the readiness signal works.

No container runtime runs here, so the compose stack, the image and the Kubernetes manifests are
checked as files: every mounted file exists, every host a config names is a service, ports and
environment names agree with litellm_config.yaml and router_config.yaml, and the Dockerfile installs
through the one install script the README and scripts/dev.sh use.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
import yaml

from litellm_lora_router import load_config
from litellm_lora_router.litellm_adapter import METRICS_PORT_ENV
from litellm_lora_router.processes import free_port
from litellm_lora_router.readiness import READY_FILE_ENV

from .conftest import DEFAULT_LITELLM_CONFIG, ROOT, StandIn, launch_proxy

DOCKER = ROOT / "docker"
#: What the compose stack, the image and the README run (the tests' own configs live in tests/data).
REPO_ROUTER_CONFIG = ROOT / "router_config.yaml"
DOCKERFILE = (DOCKER / "Dockerfile").read_text()
ENV_EXAMPLE = dict(line.split("=", 1) for line in (DOCKER / ".env.example").read_text().splitlines()
                   if line.strip() and not line.startswith("#"))
COMPOSE_VARIABLE = re.compile(r"(?<!\$)\$\{(\w+)(?:(:[-?])([^}]*))?\}")


def interpolate(text: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR:?error}` and `$$`, with `env` as docker/.env."""
    def value(match: re.Match[str]) -> str:
        name, operator, argument = match.groups()
        if env.get(name):
            return env[name]
        assert operator == ":-", f"${{{name}}} is required: {argument}"
        return str(argument)

    return COMPOSE_VARIABLE.sub(value, text).replace("$$", "$")


COMPOSE = yaml.safe_load(interpolate((DOCKER / "compose.yaml").read_text(), ENV_EXAMPLE))
SERVICES: dict[str, Any] = COMPOSE["services"]
K8S = [doc for path in sorted((DOCKER / "k8s").glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def option(args: list[str], name: str) -> str:
    """`--name value` or `--name=value` from an argument list."""
    for i, arg in enumerate(args):
        if arg == name:
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    raise KeyError(name)


def lora_modules(args: list[str]) -> set[str]:
    start = args.index("--lora-modules") + 1
    names = set()
    for arg in args[start:]:
        if arg.startswith("--"):
            break
        names.add(arg.split("=", 1)[0])
    return names


def network_names() -> set[str]:
    names = set(SERVICES)
    for service in SERVICES.values():
        for network in (service.get("networks") or {}).values():
            names |= set((network or {}).get("aliases", []))
    return names


def container_path(volume: str) -> tuple[str, str]:
    source, target, *_ = volume.split(":")
    return source, target


def test_every_bind_mount_exists() -> None:
    mounts = [container_path(v) for s in SERVICES.values() for v in s.get("volumes", [])]
    binds = [source for source, _ in mounts if source.startswith((".", "/"))]
    assert binds, "the stack mounts this repository's config files"
    for source in binds:
        assert (DOCKER / source).exists(), source
    adapters_default = re.search(r"\$\{ADAPTERS_DIR:-([^}]+)\}", (DOCKER / "compose.yaml").read_text())
    assert adapters_default and ENV_EXAMPLE["ADAPTERS_DIR"] == adapters_default.group(1)


def test_proxy_mounts_the_repository_configs_where_it_reads_them() -> None:
    proxy = SERVICES["proxy"]
    mounts = map(container_path, proxy["volumes"])
    targets = {target: Path(os.path.normpath(DOCKER / source)) for source, target in mounts}
    assert targets[proxy["environment"]["LORA_ROUTER_CONFIG"]] == REPO_ROUTER_CONFIG
    assert targets[option(proxy["command"], "--config")] == DEFAULT_LITELLM_CONFIG


def test_every_host_a_config_names_is_a_service() -> None:
    env = SERVICES["proxy"]["environment"]
    hosts = {name: urlparse(env[name]).hostname for name in ("VLLM_API_BASE", "REDIS_URL", "DATABASE_URL")}
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    for job in prometheus["scrape_configs"]:
        targets = [t for c in job.get("static_configs", []) for t in c["targets"]]
        hosts |= {f"{job['job_name']} target": t.split(":")[0] for t in targets}
        hosts |= {f"{job['job_name']} dns": n for c in job.get("dns_sd_configs", []) for n in c["names"]}
    for where, host in hosts.items():
        assert host in network_names(), f"{where}: {host}"
    # each profile puts a vLLM behind the name the proxy calls
    assert SERVICES["vllm"]["profiles"] == ["gpu"] and SERVICES["vllm-standin"]["profiles"] == ["cpu"]
    assert SERVICES["vllm-standin"]["networks"]["default"]["aliases"] == [hosts["VLLM_API_BASE"]] == ["vllm"]


def test_vllm_serves_what_the_configs_route_to() -> None:
    router = load_config(REPO_ROUTER_CONFIG)
    litellm = yaml.safe_load(DEFAULT_LITELLM_CONFIG.read_text())
    served_by_litellm = {m["litellm_params"]["model"].removeprefix("hosted_vllm/") for m in litellm["model_list"]}
    vllm_port = urlparse(SERVICES["proxy"]["environment"]["VLLM_API_BASE"]).port
    for name in ("vllm", "vllm-standin"):
        args = [str(a) for a in SERVICES[name]["command"]]
        assert lora_modules(args) == set(router.adapter_names)
        base = option(args, "--served-model-name") if name == "vllm" else args[0]
        assert base == router.default_model and served_by_litellm == set(router.adapter_names) | {base}
        assert int(option(args, "--port")) == vllm_port
    assert SERVICES["vllm"]["environment"]["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    assert "--enable-lora" in SERVICES["vllm"]["command"]


def test_ports_agree() -> None:
    proxy = SERVICES["proxy"]
    port = int(option(proxy["command"], "--port"))
    assert all(p.endswith(f":{port}") for p in proxy["ports"])
    assert f"127.0.0.1:{port}/health/liveliness" in DOCKERFILE and f"EXPOSE {port}" in DOCKERFILE
    assert proxy["deploy"]["replicas"] == 2 and proxy["ports"] == ["4000-4001:4000"]


def test_prometheus_scrapes_every_proxy_replica_on_its_metrics_port() -> None:
    prometheus = yaml.safe_load((DOCKER / "prometheus.yml").read_text())
    [job] = [j for j in prometheus["scrape_configs"] if j["job_name"] == "lora-router"]
    [sd] = job["dns_sd_configs"]
    assert sd["names"] == ["proxy"] and sd["port"] == int(SERVICES["proxy"]["environment"][METRICS_PORT_ENV])
    assert job["metrics_path"] == "/metrics"


def test_environment_names_agree() -> None:
    proxy_env = SERVICES["proxy"]["environment"]
    litellm_refs = set(re.findall(r"os\.environ/(\w+)", DEFAULT_LITELLM_CONFIG.read_text()))
    assert litellm_refs <= set(proxy_env), litellm_refs - set(proxy_env)
    assert load_config(REPO_ROUTER_CONFIG).classification_cache.redis_url is None  # so REDIS_URL is what it reads
    compose_refs = {m.group(1) for m in COMPOSE_VARIABLE.finditer((DOCKER / "compose.yaml").read_text())}
    assert compose_refs <= set(ENV_EXAMPLE), compose_refs - set(ENV_EXAMPLE)
    assert ENV_EXAMPLE["LITELLM_MASTER_KEY"].startswith("sk-")
    assert proxy_env["LORA_ROUTER_READY_FILE"] in DOCKERFILE


def test_one_install_script_for_the_image_the_readme_and_dev() -> None:
    steps = [line for line in DOCKERFILE.splitlines() if line.startswith(("RUN", " "))]
    assert any("bash scripts/install.sh" in line for line in steps)
    assert "pip install" not in DOCKERFILE  # every install goes through the script
    dev = (ROOT / "scripts" / "dev.sh").read_text()
    assert "bash scripts/install.sh full --dev" in dev and "pip install -q -e" not in dev
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/install.sh" in readme and "bash scripts/install.sh slim" in readme
    assert "lora-router train-defaults" in DOCKERFILE
    user = re.search(r"^USER (\d+):(\d+)$", DOCKERFILE, re.MULTILINE)
    assert user and int(user.group(1)) != 0  # numeric, so Kubernetes' runAsNonRoot can check it
    [deployment] = [doc for doc in K8S if doc["kind"] == "Deployment" and doc["metadata"]["name"] == "lora-router"]
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(user.group(1))


def test_image_holds_the_models_the_config_names() -> None:
    """A mounted config resolves `models/...` against its own folder, then the working directory."""
    workdir = re.search(r"^WORKDIR (\S+)", DOCKERFILE, re.MULTILINE)
    models_dir = re.search(r"lora-router train-defaults --models-dir (\S+);", DOCKERFILE)
    assert workdir and models_dir and Path(models_dir.group(1)) == Path(workdir.group(1)) / "models"
    model = load_config(REPO_ROUTER_CONFIG).classifier.category_model
    assert model is not None and Path(model.model_id).parts[0] == "models"


def test_kubernetes_example_agrees_with_the_configs() -> None:
    kinds = {(doc["kind"], doc["metadata"]["name"]): doc for doc in K8S}
    deployment = kinds[("Deployment", "lora-router")]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    [config_mount] = [m for m in container["volumeMounts"] if m["name"] == "config"]
    assert "subPath" not in config_mount  # ConfigMap updates only reach directory mounts
    [config_volume] = [v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == "config"]
    assert Path(env["LORA_ROUTER_CONFIG"]).parent == Path(config_mount["mountPath"])
    assert Path(option(container["args"], "--config")).parent == Path(config_mount["mountPath"])
    assert config_volume["configMap"]["name"] == "lora-router-config"
    assert container["readinessProbe"]["exec"]["command"] == ["test", "-f", env[READY_FILE_ENV]]
    port = int(option(container["args"], "--port"))
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["http"] == port
    assert container["startupProbe"]["httpGet"]["path"] == "/health/liveliness"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert int(annotations["prometheus.io/port"]) == int(env[METRICS_PORT_ENV]) == ports["metrics"]
    assert annotations["prometheus.io/path"] == "/metrics"
    redis_host = urlparse(env["REDIS_URL"]).hostname
    assert ("Service", redis_host) in kinds and ("Service", "lora-router") in kinds
    selector = kinds[("Service", "lora-router")]["spec"]["selector"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    readme = (DOCKER / "README.md").read_text()
    assert "kubectl create configmap lora-router-config --from-file=router_config.yaml" in readme


@pytest.mark.usefixtures("default_models")
def test_a_starting_proxy_is_not_ready_until_its_router_is(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file left by an earlier process (an emptyDir survives a container restart) must not count."""
    from litellm_lora_router import LoraRouter
    from litellm_lora_router.litellm_adapter import LoraRouterHook

    ready = tmp_path / "ready"
    ready.write_text('{"ready": true}')
    monkeypatch.setenv(READY_FILE_ENV, str(ready))
    LoraRouterHook(router=LoraRouter.from_config(REPO_ROUTER_CONFIG))  # no event loop: nothing connects yet
    assert not ready.exists()


def test_proxy_signals_readiness_and_serves_metrics_where_the_env_says(standin: StandIn, logs_dir: Path,
                                                                     tmp_path: Path) -> None:
    ready = tmp_path / "state" / "ready"
    ready.parent.mkdir()
    ready.write_text("left by an earlier process")
    metrics_port = free_port()
    env = {READY_FILE_ENV: str(ready), METRICS_PORT_ENV: str(metrics_port)}
    proxy = launch_proxy(standin, logs_dir, extra_env=env)
    try:
        deadline = time.monotonic() + 60
        while not (ready.exists() and ready.read_text().startswith("{")) and time.monotonic() < deadline:
            time.sleep(0.1)
        signal = json.loads(ready.read_text())
        assert signal["ready"] is True and signal["methods"] == ["keyword", "domain"]
        assert signal["pid"] == proxy.service.process.pid  # written by the proxy process itself
        routed = proxy.chat({"model": "MoM", "messages": [{"role": "user", "content": "python decorators?"}]})
        assert routed.status_code == 200
        metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
        assert 'llm_routing_reason_codes_total{' in metrics  # the plugin's metrics, on the env's port
    finally:
        proxy.service.stop()
