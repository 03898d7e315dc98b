#!/usr/bin/env bash
# Sets up everything on a fresh Debian/Ubuntu machine: the PostgreSQL manual (quickstart corpus), a virtualenv in
# .venv with torch installed first (PyPI's build, CUDA included, runs on CPU; TORCH_SPEC picks another), then the
# project with all extras.
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
FAQ_DOCS="python-django-doc git-doc sqlite3-doc python-sqlalchemy-doc"
if [ ! -f /usr/share/doc/python-django-doc/html/faq/usage.html ] || [ ! -f /usr/share/doc/git-doc/gitfaq.html ] \
   || [ ! -f /usr/share/doc/sqlite3/faq.html ] || [ ! -f /usr/share/doc/python-sqlalchemy-doc/html/faq/sessions.html ]; then
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
# pip on a flaky network: a dropped connection resumes the download where it stopped (pip >= 25.1 reads
# PIP_RESUME_RETRIES; the pip that upgrades itself ignores it), each request retries, and a whole install that
# still fails is tried twice more before setup gives up.
export PIP_RETRIES="${PIP_RETRIES:-10}" PIP_TIMEOUT="${PIP_TIMEOUT:-60}" PIP_RESUME_RETRIES="${PIP_RESUME_RETRIES:-50}"
pip_install() {
  local attempt
  for attempt in 1 2 3; do
    .venv/bin/python -m pip install -q "$@" && return 0
    echo "warning: pip install $* failed (attempt $attempt of 3)" >&2
    sleep $((attempt * 10))
  done
  return 1
}
pip_install --upgrade pip

# torch first, so nothing later pulls another build. TORCH_SPEC overrides (e.g. a CPU-only or another CUDA build).
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "==> installing torch (${TORCH_SPEC:-torch==2.13.0})"
  pip_install ${TORCH_SPEC:-torch==2.13.0}
fi
echo "==> installing embedding-finetune-operator with all extras"
pip_install -e '.[all]'
GENERAL="${EFT_GENERAL_ABILITY_DIR:-$HOME/.cache/eft/general-ability/django/beir}"
if [ ! -f "$GENERAL/corpus.jsonl" ] && [ -f /usr/share/doc/python-django-doc/html/faq/usage.html ]; then
  echo "==> building the general-ability set of the promotion gate (Django FAQ) in ${GENERAL%/django/beir}"
  PYTHONPATH=operator .venv/bin/python bench/realq/build.py --sets django --words 15000 --no-links \
    --out "${GENERAL%/django/beir}" >/dev/null
fi
echo "==> ready: . .venv/bin/activate && eft --help"
