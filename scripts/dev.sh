#!/usr/bin/env bash
# Install everything into ./.venv (once per pyproject change), then run the demo or the tests.
#   bash scripts/dev.sh demo [queries...]
#   bash scripts/dev.sh test [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."

# Tests start their own redis-server on a free loopback port; it only has to be installed.
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get update -qq && apt-get install -y -qq redis-server) >/dev/null
  else
    sudo sh -c 'apt-get update -qq && apt-get install -y -qq redis-server' >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=".venv/.installed-$(cat pyproject.toml requirements-models.txt scripts/install.sh scripts/dev.sh | sha256sum | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  python -m pip install -q --upgrade pip
  bash scripts/install.sh full --dev
  rm -f .venv/.installed-*
  touch "$stamp"
fi

export LITELLM_LOCAL_MODEL_COST_MAP=True HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_HUB_DISABLE_PROGRESS_BARS=1

cmd="${1:-test}"
shift || true
case "$cmd" in
  demo) exec lora-router demo "$@" ;;
  test) exec python -m pytest -q "$@" ;;
  *) echo "usage: bash scripts/dev.sh demo|test [args]" >&2; exit 2 ;;
esac
