"""The chart's RBAC on the real API server, for the identity of the chart's operator ServiceAccount: what the
operator does is allowed (the end-to-end tests fail on any 403 in its log), what is outside its job is denied,
and it can read no Secret at all."""

from __future__ import annotations

import json

import pytest

from eftcluster_support import E2E_NS, EFT_PATH, OPERATOR_NS, PLURAL, RELEASE


def _review(kube, verb: str, resource: str, group: str = "", namespace: str | None = E2E_NS,
            sub: str = "") -> bool:
    """SubjectAccessReview for the operator's ServiceAccount user (the API server's own RBAC answer)."""
    attrs = {"verb": verb, "resource": resource, "group": group, "subresource": sub}
    if namespace:
        attrs["namespace"] = namespace
    sar = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview",
           "spec": {"user": kube.cp.operator_user,
                    "groups": ["system:serviceaccounts", f"system:serviceaccounts:{OPERATOR_NS}",
                               "system:authenticated"],
                    "resourceAttributes": attrs}}
    r = kube.api.post("/apis/authorization.k8s.io/v1/subjectaccessreviews", json=sar)
    r.raise_for_status()
    return bool(r.json()["status"].get("allowed"))


ALLOWED = [
    ("list", "embeddingfinetunes", "finetune.embeddings.io", ""),
    ("watch", "embeddingfinetunes", "finetune.embeddings.io", ""),
    ("patch", "embeddingfinetunes", "finetune.embeddings.io", "status"),
    ("create", "jobs", "batch", ""),
    ("delete", "jobs", "batch", ""),
    ("watch", "deployments", "apps", ""),
    ("create", "configmaps", "", ""),
    ("create", "persistentvolumeclaims", "", ""),
    ("list", "pods", "", ""),
    ("watch", "pods", "", ""),
    ("create", "events", "", ""),
]
DENIED = [
    ("get", "secrets", "", ""),
    ("list", "secrets", "", ""),
    ("watch", "secrets", "", ""),
    ("update", "embeddingfinetunes", "finetune.embeddings.io", ""),   # never writes spec
    ("delete", "embeddingfinetunes", "finetune.embeddings.io", ""),
    ("create", "pods", "", ""),                                         # only Jobs and Deployments make pods
    ("get", "pods", "", "log"),
    ("create", "pods", "", "exec"),
    ("update", "configmaps", "", ""),
    ("delete", "services", "", ""),
    ("create", "rolebindings", "rbac.authorization.k8s.io", ""),
    ("delete", "namespaces", "", ""),
]


@pytest.mark.parametrize("verb, resource, group, sub", ALLOWED, ids=[f"{v}-{r}{'/' + s if s else ''}"
                                                                      for v, r, _, s in ALLOWED])
def test_operator_identity_may_do_its_job(operator_release, verb, resource, group, sub):
    assert _review(operator_release, verb, resource, group, sub=sub)


@pytest.mark.parametrize("verb, resource, group, sub", DENIED, ids=[f"{v}-{r}{'/' + s if s else ''}"
                                                                     for v, r, _, s in DENIED])
def test_operator_identity_is_denied_outside_its_job(operator_release, verb, resource, group, sub):
    assert not _review(operator_release, verb, resource, group, sub=sub)


def test_requests_as_the_operator_outside_its_job_are_forbidden(operator_release):
    """Real requests with the ServiceAccount's token: 403 from the API server, naming the ServiceAccount."""
    kube = operator_release
    op = kube.cp.as_operator()
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db-password", "namespace": E2E_NS},
              "stringData": {"password": "hunter2"}}
    assert kube.api.post(f"/api/v1/namespaces/{E2E_NS}/secrets", json=secret).status_code in (201, 409)
    for method, path in [("GET", f"/api/v1/namespaces/{E2E_NS}/secrets/db-password"),
                         ("GET", "/api/v1/secrets"),
                         ("GET", f"/api/v1/namespaces/{OPERATOR_NS}/secrets"),
                         ("DELETE", f"/api/v1/namespaces/{E2E_NS}"),
                         ("POST", f"/api/v1/namespaces/{E2E_NS}/pods")]:
        r = op.request(method, path, json={} if method == "POST" else None)
        assert r.status_code == 403, (method, path, r.status_code, r.text[:200])
        assert kube.cp.operator_user in r.json()["message"]
    assert "hunter2" not in json.dumps(op.get("/api/v1/secrets").json())
    # kubectl as the operator says the same.
    out = kube.kubectl("get", "secret", "db-password", "-n", E2E_NS, "-o", "yaml", check=False,
                       kubeconfig=kube.cp.operator_kubeconfig)
    assert out.returncode != 0 and "forbidden" in out.stderr.lower() and "hunter2" not in out.stdout
    # ... while what it does is allowed: listing the resources it watches.
    assert op.get(f"{EFT_PATH}/{PLURAL}").status_code == 200


def test_the_chart_binds_the_roles_to_its_service_account(operator_release):
    kube = operator_release
    bindings = kube.items("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings",
                          f"app.kubernetes.io/instance={RELEASE}")
    subjects = {(s["kind"], s["namespace"], s["name"]) for b in bindings for s in b["subjects"]}
    assert subjects == {("ServiceAccount", OPERATOR_NS, RELEASE)}
    sa = kube.get(f"/api/v1/namespaces/{OPERATOR_NS}/serviceaccounts/{RELEASE}")
    assert sa is not None
