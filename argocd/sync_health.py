#!/usr/bin/env python3
"""Write the Argo CD health snippet everywhere it is shipped, from the one source `argocd/health.lua`.

    python argocd/sync_health.py          # rewrite argocd/argocd-cm-health.yaml and the marked doc blocks
    python argocd/sync_health.py --check  # exit 1 if any copy differs (the packaging tests do the same)

Copies: argocd/argocd-cm-health.yaml (an argocd-cm patch), and the block between
`<!-- argocd-health:begin -->` and `<!-- argocd-health:end -->` in docs/deploying.md and the chart's README.md.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LUA = ROOT / "argocd" / "health.lua"
CM = ROOT / "argocd" / "argocd-cm-health.yaml"
DOCS = [ROOT / "docs" / "deploying.md", ROOT / "charts" / "embedding-finetune-operator" / "README.md"]
KEY = "resource.customizations.health.finetune.embeddings.io_EmbeddingFinetune"
BEGIN, END = "<!-- argocd-health:begin -->", "<!-- argocd-health:end -->"


def configmap_snippet() -> str:
    lua = LUA.read_text()
    body = "".join(("    " + line) if line.strip() else "\n" for line in lua.splitlines(keepends=True))
    return (
        "# Argo CD health check for EmbeddingFinetune: merge into the argocd-cm ConfigMap\n"
        "# (kubectl -n argocd patch configmap argocd-cm --patch-file argocd/argocd-cm-health.yaml),\n"
        "# or put the same key under `configs.cm` of the argo-cd Helm chart.\n"
        "# Generated from argocd/health.lua by argocd/sync_health.py; do not edit by hand.\n"
        "apiVersion: v1\n"
        "kind: ConfigMap\n"
        "metadata:\n"
        "  name: argocd-cm\n"
        "  namespace: argocd\n"
        "  labels:\n"
        "    app.kubernetes.io/name: argocd-cm\n"
        "    app.kubernetes.io/part-of: argocd\n"
        "data:\n"
        f"  {KEY}: |\n"
        f"{body}"
    )


def doc_block() -> str:
    return f"{BEGIN}\n```yaml\n{configmap_snippet()}```\n{END}"


def expected() -> dict[Path, str]:
    out = {CM: configmap_snippet()}
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    for doc in DOCS:
        if doc.exists():
            text = doc.read_text()
            if BEGIN in text:
                out[doc] = pattern.sub(lambda _m: doc_block(), text)
    return out


def main(argv: list[str]) -> int:
    stale = [p for p, text in expected().items() if not p.exists() or p.read_text() != text]
    if "--check" in argv:
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)} (run python argocd/sync_health.py)", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        p.write_text(expected()[p])
        print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
