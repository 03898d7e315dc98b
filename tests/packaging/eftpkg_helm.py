"""Render the chart with the real `helm template` (the binary `scripts/testbin.sh` installs).

`render_chart` returns {template path: rendered text} (from helm's `# Source:` markers) and `manifests` the parsed
documents, for the packaging tests' checks of the templates against the operator's contracts. A missing helm
binary fails the test (run `bash scripts/testbin.sh`). The module name is unique on purpose (pytest's default
import mode, no `__init__.py`).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "cluster"))
from eftcluster_controlplane import testbin_dir  # noqa: E402

KUBE_VERSION = "1.37.0"


class HelmError(Exception):
    pass


def helm(*args: str) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory() as home:
        env = {"PATH": "/usr/bin:/bin", "HOME": home, "HELM_CACHE_HOME": home, "HELM_CONFIG_HOME": home,
               "HELM_DATA_HOME": home}
        return subprocess.run([str(testbin_dir(("helm",)) / "helm"), *args], capture_output=True, text=True, env=env,
                              timeout=120)


def render_chart(chart_dir: Path, values: dict | None = None, release: str = "eft",
                 namespace: str = "eft-system") -> dict[str, str]:
    """`helm template` with `values` as a values file: {"templates/<file>": text}. HelmError on failure."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(values or {}, f)
        f.flush()
        out = helm("template", release, str(chart_dir), "--namespace", namespace, "--kube-version", KUBE_VERSION,
                   "-f", f.name)
    if out.returncode != 0:
        raise HelmError(out.stderr.strip())
    chart_name = yaml.safe_load((chart_dir / "Chart.yaml").read_text())["name"]
    rendered: dict[str, str] = {}
    current = None
    for line in out.stdout.splitlines(keepends=True):
        if line.startswith(f"# Source: {chart_name}/"):
            current = line.split("/", 1)[1].strip()
            rendered.setdefault(current, "")
            if rendered[current]:
                rendered[current] += "---\n"
            continue
        if current is not None and line.strip() != "---":
            rendered[current] += line
    return rendered


def manifests(rendered: dict[str, str]) -> list[tuple[str, dict]]:
    """All YAML documents of the rendered templates as (template path, document)."""
    docs = []
    for name, text in rendered.items():
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                docs.append((name, doc))
    return docs


def deep_merge(base: dict, override: dict) -> dict:
    """Helm's merge of user values over the chart's defaults: maps merge, a null removes the key."""
    out = dict(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
