#!/usr/bin/env bash
# Sets up everything on a fresh Debian/Ubuntu machine: the PostgreSQL manual (quickstart corpus), a virtualenv in
# .venv with CPU torch installed first (so pip never pulls a multi-GB CUDA build), then the project with all extras.
# Idempotent: re-running only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null; then SUDO="sudo"; fi

if [ ! -d /usr/share/doc/postgresql-doc-15/html ]; then
  echo "==> installing Debian's postgresql-doc-15 (the quickstart corpus)"
  $SUDO apt-get update -qq || true
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-doc-15 \
    || echo "warning: postgresql-doc-15 is not available here; point spec.corpus.source.path at your own documents"
fi

PYTHON="${PYTHON:-python3}"
if ! "$PYTHON" -m venv --help >/dev/null 2>&1; then
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install -q --upgrade pip

# CPU torch first. TORCH_SPEC overrides (e.g. a CUDA build on a GPU workstation).
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "==> installing torch (${TORCH_SPEC:-torch==2.13.0})"
  $PIP install -q ${TORCH_SPEC:-torch==2.13.0}
fi
echo "==> installing embedding-finetune-operator with all extras"
$PIP install -q -e '.[all]'
echo "==> ready: . .venv/bin/activate && eft --help"
