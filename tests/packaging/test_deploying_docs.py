"""docs/deploying.md: the metric tables list exactly what the code exports, the alerts parse and use only
exported metrics, and the generated blocks (values table, Argo CD snippet) are current."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest
import yaml

from eftpkg_support import CHART, ROOT

DOC = (ROOT / "docs" / "deploying.md").read_text()
METRIC_TYPES = {"Counter": "counter", "Gauge": "gauge", "Histogram": "histogram", "Summary": "summary"}


def exported_metrics(path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Exposed name -> (type, label names) of every prometheus_client metric constructed in a module."""
    out = {}
    for node in ast.walk(ast.parse(path.read_text())):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in METRIC_TYPES):
            continue
        if not (node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            continue  # e.g. collections.Counter()
        name, kind = node.args[0].value, METRIC_TYPES[node.func.id]
        labels = node.args[2] if len(node.args) > 2 else next(
            (k.value for k in node.keywords if k.arg == "labelnames"), None)
        label_names = tuple(ast.literal_eval(labels)) if labels is not None else ()
        if kind == "counter" and not name.endswith("_total"):
            name += "_total"  # prometheus_client exposes counters with the _total suffix
        out[name] = (kind, label_names)
    return out


def documented(marker: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    block = re.search(rf"<!-- {marker}:begin -->(.*?)<!-- {marker}:end -->", DOC, re.S)
    assert block, f"docs/deploying.md has no {marker} block"
    out = {}
    for line in block.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`"):
            out[cells[0].strip("`")] = (cells[1], tuple(re.findall(r"`([^`]+)`", cells[2])))
    return out


@pytest.mark.parametrize("marker, module", [("operator-metrics", "operator/eft/controller/metrics.py"),
                                            ("server-metrics", "operator/eft/serve/metrics.py")])
def test_metric_tables_match_the_code(marker, module):
    path = ROOT / module
    assert path.exists(), f"{module} is missing"
    code = exported_metrics(path)
    assert code, f"no metrics found in {module}"
    assert documented(marker) == code


def _alerts():
    block = re.search(r"### Alerts \(PromQL\)\s+```yaml\n(.*?)```", DOC, re.S)
    assert block
    return yaml.safe_load(block.group(1))


def test_alerts_parse_and_use_exported_metrics():
    known = set(exported_metrics(ROOT / "operator/eft/controller/metrics.py")) | \
        set(exported_metrics(ROOT / "operator/eft/serve/metrics.py"))
    rules = [r for g in _alerts()["groups"] for r in g["rules"]]
    names = {r["alert"] for r in rules}
    assert {"EmbeddingFinetuneStageFailed", "EmbeddingServerHighP99Latency"} <= names
    for rule in rules:
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        for metric in re.findall(r"\b(eft_[a-z0-9_]+)", rule["expr"]):
            base = re.sub(r"_(bucket|sum|count)$", "", metric)
            assert metric in known or base in known, f"{rule['alert']}: {metric} is not exported"
    p99 = next(r for r in rules if r["alert"] == "EmbeddingServerHighP99Latency")
    assert "histogram_quantile(0.99" in p99["expr"] and "_bucket" in p99["expr"]
    # The label the alert filters on is one the histogram has.
    kind, labels = exported_metrics(ROOT / "operator/eft/serve/metrics.py")["eft_request_duration_seconds"]
    assert kind == "histogram" and "route" in labels and 'route="/v1/embeddings"' in p99["expr"]
    failed = next(r for r in rules if r["alert"] == "EmbeddingFinetuneStageFailed")
    assert 'outcome="failed"' in failed["expr"]


def test_stage_outcome_label_values_match_the_alert():
    """The operator counts outcomes as the lower-cased stage phase: 'failed' is a value it really writes."""
    source = (ROOT / "operator/eft/controller/metrics.py").read_text()
    assert 'st["phase"].lower()' in source and '"Failed"' in source


@pytest.mark.parametrize("section", ["## Install", "## Upgrade", "## Uninstall", "## Values", "## RBAC",
                                     "## Argo CD", "## Observability"])
def test_sections_present(section):
    assert section in DOC


def test_generated_blocks_are_current():
    for script in ("charts/sync.py", "argocd/sync_health.py"):
        result = subprocess.run([sys.executable, str(ROOT / script), "--check"], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


def test_values_table_lists_every_value():
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())

    def leaves(node, path=()):
        if isinstance(node, dict) and node and path[:1] not in (("stageDefaults",), ("serverDefaults",)) and \
                path[-1:] not in (("resources",), ("nodeSelector",), ("podAnnotations",), ("podLabels",),
                                  ("affinity",), ("labels",), ("annotations",)):
            for k, v in node.items():
                yield from leaves(v, path + (k,))
        else:
            yield ".".join(path)

    for text in (DOC, (CHART / "README.md").read_text()):
        table = re.search(r"<!-- values-table:begin -->(.*?)<!-- values-table:end -->", text, re.S).group(1)
        keys = set(re.findall(r"^\| `([^`]+)`", table, re.M))
        for leaf in leaves(defaults):
            top = leaf.split(".")[0]
            assert leaf in keys or (top in ("stageDefaults", "serverDefaults") and
                                    any(k.startswith(top + ".") for k in keys)), f"{leaf} missing from the table"


@pytest.mark.parametrize("module", ["operator/eft/controller/metrics.py", "operator/eft/serve/metrics.py"])
def test_readme_names_every_exported_metric(module):
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`(eft_[a-z0-9_]+)`", readme))
    missing = set(exported_metrics(ROOT / module)) - named
    assert not missing, f"README.md does not list {sorted(missing)}"
