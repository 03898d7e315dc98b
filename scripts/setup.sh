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

# Documentation packages whose authors wrote FAQs: the real-question benchmark (bench/realq) and the default
# general-ability guard of the promotion gate (built below from the Django FAQ).
FAQ_DOCS="python-django-doc git-doc sqlite3-doc"
if [ ! -f /usr/share/doc/python-django-doc/html/faq/usage.html ] || [ ! -f /usr/share/doc/git-doc/gitfaq.html ] \
   || [ ! -f /usr/share/doc/sqlite3/faq.html ]; then
  echo "==> installing FAQ documentation packages ($FAQ_DOCS)"
  $SUDO apt-get update -qq || true
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $FAQ_DOCS \
    || echo "warning: $FAQ_DOCS not available here; the real-question benchmark and its tests need them"
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
GENERAL="${EFT_GENERAL_ABILITY_DIR:-$HOME/.cache/eft/general-ability/django/beir}"
if [ ! -f "$GENERAL/corpus.jsonl" ] && [ -f /usr/share/doc/python-django-doc/html/faq/usage.html ]; then
  echo "==> building the general-ability set of the promotion gate (Django FAQ) in ${GENERAL%/django/beir}"
  PYTHONPATH=operator .venv/bin/python bench/realq/build.py --sets django --words 15000 --no-links \
    --out "${GENERAL%/django/beir}" >/dev/null
fi
echo "==> ready: . .venv/bin/activate && eft --help"
