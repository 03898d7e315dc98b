"""What goes wrong, on the real control plane: invalid input (exit 2) failing the Job through podFailurePolicy,
transient failures (exit 1) retried by the real Job controller up to backoffLimit, admission by the CRD schema
(422), specs the schema admits but the models reject (SpecValid=False), resource names, and a missing Secret
reported from the pod without the operator reading Secrets."""

from __future__ import annotations

import sys

import pytest

from eftcluster_support import E2E_NS, EFT_PATH, GROUP, PLURAL, ROOT, VERSION, tiny_resource, wait_for

sys.path.insert(0, str(ROOT / "tests" / "packaging"))
from eftpkg_support import run_health_lua  # noqa: E402

HEALTH_LUA = (ROOT / "argocd" / "health.lua").read_text()


def _post(kube, doc):
    return kube.api.post(f"{EFT_PATH}/namespaces/{doc['metadata']['namespace']}/{PLURAL}", json=doc)


def _delete(kube, name):
    kube.api.delete(f"{EFT_PATH}/namespaces/{E2E_NS}/{PLURAL}/{name}")


def _degraded(kube, name, timeout=300):
    def check():
        c = kube.condition(E2E_NS, name, "Degraded")
        return c if c and c["status"] == "True" else None

    return wait_for(check, timeout, f"{name} Degraded=True", 0.5, lambda: kube.describe(E2E_NS, name))


def _pods_of(pod: dict, resource: str, stage: str) -> bool:
    labels = pod["metadata"].get("labels") or {}
    return labels.get(f"{GROUP}/resource") == resource and labels.get(f"{GROUP}/stage") == stage


def test_exit_2_fails_the_job_through_pod_failure_policy_without_retry(operator_release):
    """A corpus with no supported document: the real sdg stage exits 2, the Job controller fails the Job at once
    (podFailurePolicy FailJob), and the resource goes Degraded naming the stage and the pod's message."""
    kube = operator_release
    cm = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "slides-only", "namespace": E2E_NS},
          "data": {"slides.pptx": "not a document"}}
    assert kube.api.post(f"/api/v1/namespaces/{E2E_NS}/configmaps", json=cm).status_code in (201, 409)
    name = "bad-corpus"
    kube.apply(tiny_resource(name, "slides-only"))
    degraded = _degraded(kube, name)
    assert degraded["reason"] in ("PodFailurePolicy", "JobFailed"), degraded
    assert "sdg" in degraded["message"] and "no supported documents" in degraded["message"], degraded
    (job,) = kube.jobs(E2E_NS, name)
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["status"] == "True" and failed["reason"] == "PodFailurePolicy", failed
    assert job["status"].get("failed") == 1  # no retry
    obj = kube.eft(E2E_NS, name)
    assert obj["status"]["stages"]["sdg"]["phase"] == "Failed"
    assert run_health_lua(HEALTH_LUA, obj)["status"] == "Degraded"
    _delete(kube, name)


def test_exit_1_is_retried_up_to_backoff_limit(operator_release, corpus_configmap):
    """A container that crashes (exit 1) every time: the Job controller retries it backoffLimit times, then
    the Job fails with BackoffLimitExceeded and the resource is Degraded."""
    kube = operator_release
    name = "flaky"
    kube.agent.fail_next(lambda pod: _pods_of(pod, name, "sdg"), 1, "transient: connection reset", times=10)
    kube.apply(tiny_resource(name, corpus_configmap, runtime={"stages": {"sdg": {"backoffLimit": 1}}}))
    degraded = _degraded(kube, name, timeout=240)
    (job,) = kube.jobs(E2E_NS, name)
    failed = next(c for c in job["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "BackoffLimitExceeded", failed
    assert job["spec"]["backoffLimit"] == 1 and job["status"]["failed"] == 2  # the first try + one retry
    assert "sdg" in degraded["message"]
    assert kube.eft(E2E_NS, name)["status"]["stages"]["sdg"]["attempts"] == 2
    _delete(kube, name)


def test_out_of_bounds_field_is_rejected_at_admission(operator_release, corpus_configmap):
    kube = operator_release
    doc = tiny_resource("too-many-epochs", corpus_configmap, training={"epochs": 1000})
    r = _post(kube, doc)
    assert r.status_code == 422, r.text
    assert "spec.training.epochs" in r.text and "100" in r.text
    out = kube.kubectl("apply", "-f", "-", stdin=__import__("yaml").safe_dump(doc), check=False)
    assert out.returncode != 0 and "spec.training.epochs" in out.stderr


def test_spec_admitted_but_rejected_by_the_models_gets_spec_valid_false(operator_release, corpus_configmap):
    """minTokens >= maxTokens passes the CRD schema (each is in bounds) but not the model: SpecValid=False,
    InvalidSpec naming the field, and no Job is created."""
    kube = operator_release
    name = "bad-chunking"
    doc = tiny_resource(name, corpus_configmap, corpus={"source": {"configMap": {"name": corpus_configmap}},
                                                        "chunking": {"maxTokens": 64, "minTokens": 64}})
    assert _post(kube, doc).status_code == 201

    def invalid():
        c = kube.condition(E2E_NS, name, "SpecValid")
        return c if c and c["status"] == "False" else None

    cond = wait_for(invalid, 60, "SpecValid=False", 0.5, lambda: kube.describe(E2E_NS, name))
    assert cond["reason"] == "InvalidSpec" and "minTokens" in cond["message"], cond
    assert kube.jobs(E2E_NS, name) == []
    _delete(kube, name)


NAMES = [
    # (name, accepted by the API server for the resource?)
    ("a", True),
    ("x" * 40, True),
    ("x" * 41, False),      # the model's limit (a Job <name>-verify-<hash8> must fit 63 characters)
    ("has.dots", False),    # a subdomain, but the Service <name>-server must be a DNS-1035 label
    ("9lives", False),      # DNS-1035 labels start with a letter
    ("a" * 253, False),
]


@pytest.mark.parametrize("name, ok", NAMES, ids=[n[:12] + f"-{len(n)}" for n, _ in NAMES])
def test_resource_names_work_or_are_rejected_up_front(operator_release, corpus_configmap, name, ok):
    """Every name the API server accepts must give children that can be created; the CRD refuses the others
    with a clear reason. Accepted names are checked by creating their longest children with the server's
    dry run (the stage Job, the Service), as admin."""
    from eft.api.loader import parse_resource
    from eft.controller import manifests
    from eft.controller.config import OperatorConfig
    from eft.hashing import plan_hashes

    kube = operator_release
    # Suspended: the operator creates none of these children itself, so the dry runs below cannot meet them (409).
    doc = tiny_resource(name, corpus_configmap, suspend=True)
    r = _post(kube, doc)
    if not ok:
        assert r.status_code == 422, (name, r.status_code, r.text[:300])
        assert "metadata.name" in r.text, r.text
        return
    assert r.status_code == 201, r.text
    body = r.json()
    try:
        spec = parse_resource(body, source=name).spec
        owner = manifests.Owner.from_body(body)
        hashes = plan_hashes(spec, None)
        cfg = OperatorConfig()
        children = [("/apis/batch/v1", "jobs", manifests.verify_job(owner, spec, hashes, "x", cfg)),
                    ("/apis/batch/v1", "jobs", manifests.stage_job(owner, spec, "export", hashes, "x", cfg)),
                    ("/api/v1", "services", manifests.server_service(owner, spec)),
                    ("/apis/apps/v1", "deployments", manifests.server_deployment(owner, spec, hashes, cfg)),
                    ("/api/v1", "configmaps", manifests.spec_configmap(owner, body, spec)),
                    ("/api/v1", "persistentvolumeclaims", manifests.workspace_pvc(owner, spec))]
        for prefix, plural, obj in children:
            resp = kube.api.post(f"{prefix}/namespaces/{E2E_NS}/{plural}", params={"dryRun": "All"}, json=obj)
            assert resp.status_code == 201, (plural, obj["metadata"]["name"], resp.text[:400])
    finally:
        _delete(kube, name)


def test_missing_secret_is_reported_from_the_pod_and_never_read(operator_release, corpus_configmap):
    """An LLM generator whose API-key Secret does not exist: the sdg pod waits in CreateContainerConfigError
    (the kubelet's message names the Secret), the resource says SecretNotFound; creating the Secret lets the pod
    start. The operator's identity is denied reading that Secret."""
    kube = operator_release
    name = "needs-key"
    kube.agent.fail_next(lambda pod: _pods_of(pod, name, "sdg"), 1, "stopped by the test", times=5)
    doc = tiny_resource(name, corpus_configmap, sdg={"generator": "llm", "endpoint": "http://llm.invalid/v1",
                                                     "apiKeySecretRef": {"name": "llm-key", "key": "api-key"}},
                        runtime={"stages": {"sdg": {"backoffLimit": 0}}})
    kube.apply(doc)

    def secret_not_found():
        c = kube.condition(E2E_NS, name, "Degraded")
        return c if c and c["reason"] == "SecretNotFound" else None

    cond = wait_for(secret_not_found, 120, "SecretNotFound", 0.5, lambda: kube.describe(E2E_NS, name))
    assert 'secret "llm-key" not found' in cond["message"] and "sdg" in cond["message"], cond
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "llm-key", "namespace": E2E_NS},
              "stringData": {"api-key": "sk-test"}}
    assert kube.api.post(f"/api/v1/namespaces/{E2E_NS}/secrets", json=secret).status_code == 201
    denied = kube.cp.as_operator().get(f"/api/v1/namespaces/{E2E_NS}/secrets/llm-key")
    assert denied.status_code == 403, denied.text
    # The kubelet (agent) now starts the container: the condition leaves SecretNotFound.
    wait_for(lambda: (kube.condition(E2E_NS, name, "Degraded") or {}).get("reason") != "SecretNotFound", 120,
             "the SecretNotFound condition to clear", 0.5, lambda: kube.describe(E2E_NS, name))
    _delete(kube, name)


def test_crd_of_the_installed_chart_has_the_status_subresource(operator_release):
    crd = operator_release.get(f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{PLURAL}.{GROUP}")
    version = next(v for v in crd["spec"]["versions"] if v["name"] == VERSION)
    assert version["subresources"] == {"status": {}}
    assert [c["name"] for c in version["additionalPrinterColumns"]][:4] == ["Stage", "Phase", "Ready", "nDCG@10"]
