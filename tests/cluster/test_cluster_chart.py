"""The Helm chart through the real `helm` against the real API server: lint, template + kubernetes-validate,
install with the default values and every `ci/` values file, and the values schema refusing bad overrides."""

from __future__ import annotations

import kubernetes_validate
import pytest
import yaml

from eftcluster_support import CHART, RELEASE

CI_VALUES = sorted((CHART / "ci").glob("*.yaml"))
KUBE_VERSION = "1.37.0"
#: The Prometheus Operator's kinds the chart can render (metrics.serviceMonitor / serverPodMonitor). A cluster
#: that enables them has that operator's CRDs; here they are registered (schema-less) so the install is real.
MONITORING_KINDS = (("ServiceMonitor", "servicemonitors"), ("PodMonitor", "podmonitors"))


def _template(kube, *args: str) -> list[dict]:
    out = kube.helm("template", RELEASE, str(CHART), "--namespace", "eft-system", "--kube-version", KUBE_VERSION,
                    "--include-crds", *args).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@pytest.mark.parametrize("values", [None, *CI_VALUES], ids=lambda p: p.name if p else "defaults")
def test_lint_strict_and_rendered_documents_validate(kube, values):
    extra = ["-f", str(values)] if values else []
    lint = kube.helm("lint", "--strict", str(CHART), *extra)
    assert "0 chart(s) failed" in lint.stdout, lint.stdout
    docs = _template(kube, *extra)
    assert {"CustomResourceDefinition", "Deployment", "ClusterRole"} <= {d["kind"] for d in docs}
    for doc in docs:
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue  # not a built-in kind; kubernetes-validate has no schema for it
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("values", CI_VALUES, ids=lambda p: p.name)
def test_install_with_ci_values(operator_release, values):
    """`helm install` of each ci/ values file next to the release under test (own namespace; its pods are not
    run: the node agent serves only the namespaces of the e2e tests), then `helm uninstall`."""
    kube = operator_release
    _monitoring_crds(kube)
    doc = yaml.safe_load(values.read_text())
    for ns in (doc.get("rbac") or {}).get("watchNamespaces") or []:
        kube.ensure_namespace(ns, serve=False)
    release, ns = f"ci-{values.stem.removesuffix('-values')}", f"ci-{values.stem.removesuffix('-values')}"
    kube.helm("install", release, str(CHART), "--namespace", ns, "--create-namespace", "-f", str(values))
    try:
        status = kube.helm("status", release, "--namespace", ns, "-o", "json").stdout
        assert '"status":"deployed"' in status.replace(" ", "")
        deployments = kube.items(f"/apis/apps/v1/namespaces/{ns}/deployments")
        assert len(deployments) == 1
        if doc.get("rbac", {}).get("scope") == "namespaced":
            for team in doc["rbac"]["watchNamespaces"]:
                roles = kube.items(f"/apis/rbac.authorization.k8s.io/v1/namespaces/{team}/roles")
                assert roles, f"no Role in {team}"
    finally:
        kube.helm("uninstall", release, "--namespace", ns, "--wait", "--timeout", "60s")


def test_default_install_is_deployed(operator_release):
    out = operator_release.helm("list", "--namespace", "eft-system", "-o", "yaml").stdout
    releases = yaml.safe_load(out)
    assert [(r["name"], r["status"]) for r in releases] == [(RELEASE, "deployed")]
    crd = operator_release.get("/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                               "embeddingfinetunes.finetune.embeddings.io")
    established = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert established.get("Established") == "True" and established.get("NamesAccepted") == "True"


BAD_OVERRIDES = [
    # (--set argument, what helm's schema error must say: the JSON pointer of the key, then the reason)
    ("rbac.scope=clusterwide", "at '/rbac/scope': value must be one of 'cluster', 'namespaced'"),
    ("operator.replicas=3", "at '/operator/replicas': maximum: got 3, want 1"),
    ("images.pullPolicy=Sometimes", "at '/images/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'"),
    ("metrics.service.port=70000", "at '/metrics/service/port': maximum: got 70,000, want 65,535"),
    ("stageDefaults.train.backoffLimit=50", "at '/stageDefaults/train/backoffLimit': maximum: got 50, want 20"),
    ("rbac.scopee=cluster", "at '/rbac': additional properties 'scopee' not allowed"),
    ("serviceAccount.name=Operator", "at '/serviceAccount/name': 'Operator' does not match pattern"),
]


@pytest.mark.parametrize("override, error", BAD_OVERRIDES, ids=[o for o, _ in BAD_OVERRIDES])
def test_values_schema_rejects_bad_overrides_through_helm(kube, override, error):
    for command in (["template", RELEASE], ["install", "bad-values", "--namespace", "eft-system", "--dry-run=server"]):
        out = kube.helm(*command, str(CHART), "--set", override, check=False)
        assert out.returncode != 0, f"helm {command[0]} accepted {override}"
        text = out.stderr + out.stdout
        assert "values don't meet the specifications of the schema" in text and error in text, text


def _monitoring_crds(kube) -> None:
    for kind, plural in MONITORING_KINDS:
        crd = {"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
               "metadata": {"name": f"{plural}.monitoring.coreos.com"},
               "spec": {"group": "monitoring.coreos.com", "scope": "Namespaced",
                        "names": {"kind": kind, "plural": plural, "singular": kind.lower(), "listKind": f"{kind}List"},
                        "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                            "type": "object", "x-kubernetes-preserve-unknown-fields": True}}}]}}
        r = kube.api.post("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", json=crd)
        assert r.status_code in (201, 409), r.text
