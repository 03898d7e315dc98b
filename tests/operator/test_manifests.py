"""The pure builders of every child object: valid against the Kubernetes schemas, runtime layers merged in
the documented order (operator defaults, then the resource's runtime), images from the operator's config."""

from __future__ import annotations

import kubernetes_validate
import yaml

from eft.api import parse_resource
from eft.controller import manifests
from eft.controller.config import OperatorConfig
from eft.controller.manifests import Owner
from eft.hashing import plan_hashes
from eftop_harness import sample_resource, sample_spec

K8S = "1.30"
OWNER = Owner(name="demo", namespace="team-a", uid="0b7c4c1e-0000-4000-8000-000000000001", generation=3)


def test_every_manifest_validates_against_the_kubernetes_schemas():
    spec = sample_spec(training={"gpus": 8, "nodes": 2})
    hashes = plan_hashes(spec)
    cfg = OperatorConfig()
    body = sample_resource("demo", "team-a")
    body["metadata"].update(uid=OWNER.uid, generation=3)
    cm = manifests.spec_configmap(OWNER, body, spec)
    objs = [cm, manifests.workspace_pvc(OWNER, spec), manifests.server_service(OWNER, spec),
            manifests.server_deployment(OWNER, spec, hashes, cfg), manifests.verify_job(OWNER, spec, hashes, "cm", cfg),
            manifests.train_headless_service(OWNER, spec, hashes),
            manifests.event(body, "Normal", "StageStarted", "stage sdg started", "2025-01-01T00:00:00Z")]
    objs += [manifests.stage_job(OWNER, spec, s, hashes, cm["metadata"]["name"], cfg)
             for s in ("sdg", "prep", "train", "eval", "export")]
    for obj in objs:
        kubernetes_validate.validate(obj, K8S, strict=True)
        if obj["kind"] != "Event":
            assert obj["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
            assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "embedding-finetune-operator"
        if obj["kind"] in ("Job", "Deployment"):  # stages and the server make no Kubernetes API calls
            assert obj["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    train = objs[-3]
    assert train["metadata"]["name"] == f"demo-train-{hashes['train'][:8]}"
    assert train["spec"]["completionMode"] == "Indexed" and train["spec"]["completions"] == 2
    env = {e["name"]: e for e in train["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PET_NPROC_PER_NODE"]["value"] == "8" and env["PET_MASTER_PORT"]["value"] == "29500"
    assert env["PET_MASTER_ADDR"]["value"] == f"{train['metadata']['name']}-0.{train['metadata']['name']}"
    assert train["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"


def test_existing_claim_and_configmap_corpus():
    spec = sample_spec(storage={"claimName": "shared-ws"}, corpus={"source": {"configMap": {"name": "docs"}}})
    assert manifests.workspace_pvc(OWNER, spec) is None
    job = manifests.stage_job(OWNER, spec, "sdg", plan_hashes(spec), "cm", OperatorConfig())
    vols = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert vols["workspace"]["persistentVolumeClaim"]["claimName"] == "shared-ws"
    assert vols["corpus"]["configMap"]["name"] == "docs"
    doc = yaml.safe_load(manifests.spec_configmap(OWNER, {"metadata": {"name": "demo"}}, spec)["data"]["resource.yaml"])
    assert parse_resource(doc).spec.corpus.source.path == "/mnt/corpus"


def test_runtime_overrides_and_images_from_the_environment():
    cfg = OperatorConfig.from_env({"EFT_PIPELINE_IMAGE": "p:1", "EFT_SERVER_IMAGE": "s:1"})
    spec = sample_spec(runtime={"stages": {"eval": {"image": "e:2", "backoffLimit": 0}}})
    h = plan_hashes(spec)
    ev = manifests.stage_job(OWNER, spec, "eval", h, "cm", cfg)
    assert ev["spec"]["template"]["spec"]["containers"][0]["image"] == "e:2" and ev["spec"]["backoffLimit"] == 0
    assert manifests.stage_job(OWNER, spec, "prep", h, "cm", cfg)["spec"]["template"]["spec"]["containers"][0][
        "image"] == "p:1"
    assert manifests.server_deployment(OWNER, spec, h, cfg)["spec"]["template"]["spec"]["containers"][0][
        "image"] == "s:1"


def test_the_variables_the_operator_sets_are_the_ones_the_llm_key_may_not_take():
    from eft.api.spec import PIPELINE_ENV, PIPELINE_ENV_PREFIXES

    cfg = OperatorConfig.from_env({})
    spec = sample_spec(training={"nodes": 2, "gpus": 1}, storage={"accessModes": ["ReadWriteMany"]})
    h = plan_hashes(spec)
    names = {e["name"] for stage in ("sdg", "prep", "train", "eval", "export")
             for e in manifests.stage_job(OWNER, spec, stage, h, "cm", cfg)["spec"]["template"]["spec"][
                 "containers"][0]["env"]}
    names -= {spec.sdg.api_key_env, "HF_TOKEN"}  # the key itself; HF_TOKEN is checked against hfTokenSecretRef
    assert names and all(n in PIPELINE_ENV or n.startswith(PIPELINE_ENV_PREFIXES) for n in names), names


def test_the_workspace_claims_storage_class_follows_kubernetes_meaning_of_null_and_empty():
    for given, want in ((None, None), ("", ""), ("fast-ssd", "fast-ssd")):
        spec = sample_spec(storage={"size": "20Gi", "storageClassName": given})
        pvc = manifests.workspace_pvc(OWNER, spec)
        assert pvc["spec"].get("storageClassName", None) == want, given
        kubernetes_validate.validate(pvc, K8S, strict=True)


def test_an_edited_size_is_compared_with_the_claims_request_and_capacity_by_value():
    spec = sample_spec(storage={"size": "20Gi"})
    pvc = manifests.workspace_pvc(OWNER, spec)  # not bound yet: no capacity
    assert manifests.claim_size_change(pvc, "20Gi") is None
    assert manifests.claim_size_change(pvc, "20480Mi") is None  # the same quantity written another way
    assert manifests.claim_size_change(pvc, "0.02Ti") == ("grow", "20Gi", "")  # 20.48Gi
    assert manifests.claim_size_change(pvc, "20G") == ("shrink", "20Gi", "")  # decimal: 20e9 < 20 x 2^30
    assert manifests.claim_size_change({"spec": {}}, "1Gi") == ("grow", "", "")
    # An expansion to 100Gi that did not finish (capacity still 20Gi): a size above the capacity may be asked
    # for instead (RecoverVolumeExpansionFailure); the capacity itself or less is a shrink.
    failed = {**pvc, "spec": {**pvc["spec"], "resources": {"requests": {"storage": "100Gi"}}},
              "status": {"phase": "Bound", "capacity": {"storage": "20Gi"}}}
    assert manifests.claim_size_change(failed, "30Gi") == ("lower", "100Gi", "20Gi")
    assert manifests.claim_size_change(failed, "20Gi") == ("shrink", "100Gi", "20Gi")
    assert manifests.claim_size_change(failed, "200Gi") == ("grow", "100Gi", "20Gi")
    patched = manifests.workspace_pvc(OWNER, spec)
    patched["spec"]["resources"]["requests"].update(manifests.claim_size_patch("30Gi")["spec"]["resources"]["requests"])
    assert manifests.claim_size_change(patched, "30Gi") is None
    kubernetes_validate.validate(patched, K8S, strict=True)


def test_the_llm_key_is_mounted_only_for_the_llm_generator():
    cfg = OperatorConfig.from_env({})
    for generator, mounted in (("llm", True), ("offline", False)):
        spec = sample_spec(sdg={"generator": generator, "apiKeySecretRef": {"name": "llm-api", "key": "api-key"}})
        env = manifests.stage_job(OWNER, spec, "sdg", plan_hashes(spec), "cm", cfg)["spec"]["template"]["spec"][
            "containers"][0]["env"]
        from_secret = [e["name"] for e in env if "secretKeyRef" in (e.get("valueFrom") or {})
                       and e["valueFrom"]["secretKeyRef"]["name"] == "llm-api"]
        assert from_secret == (["EFT_LLM_API_KEY"] if mounted else []), generator


def _restricted_violations(pod: dict) -> list[str]:
    """The controls of the "restricted" Pod Security Standard (kubernetes.io/docs/concepts/security/
    pod-security-standards) that a pod spec fails."""
    out, psc = [], pod.get("securityContext") or {}
    for c in pod["containers"]:
        csc = c.get("securityContext") or {}
        if csc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{c['name']}: allowPrivilegeEscalation")
        if "ALL" not in ((csc.get("capabilities") or {}).get("drop") or []):
            out.append(f"{c['name']}: capabilities.drop ALL")
        if not (csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True):
            out.append(f"{c['name']}: runAsNonRoot")
        if csc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{c['name']}: runAsUser 0")
        seccomp = (csc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{c['name']}: seccompProfile")
    if any("hostPath" in v for v in pod.get("volumes") or []):
        out.append("hostPath volume")
    return out


def test_every_stage_and_server_pod_meets_the_restricted_pod_security_standard():
    cfg = OperatorConfig.from_env({})
    spec = sample_spec()
    h = plan_hashes(spec)
    pods = {stage: manifests.stage_job(OWNER, spec, stage, h, "cm", cfg)["spec"]["template"]["spec"]
            for stage in ("sdg", "prep", "train", "eval", "export")}
    pods["verify"] = manifests.verify_job(OWNER, spec, h, "cm", cfg)["spec"]["template"]["spec"]
    pods["server"] = manifests.server_deployment(OWNER, spec, h, cfg)["spec"]["template"]["spec"]
    for name, pod in pods.items():
        assert _restricted_violations(pod) == [], name
        # the images' user, and the workspace made writable for it
        assert pod["securityContext"]["runAsUser"] == pod["securityContext"]["fsGroup"] == manifests.IMAGE_UID


def test_operator_defaults_file_sits_below_the_resource_runtime(tmp_path):
    path = tmp_path / "defaults.yaml"
    path.write_text(yaml.safe_dump({
        "stages": {"all": {"backoffLimit": 4, "nodeSelector": {"pool": "batch"}},
                   "train": {"activeDeadlineSeconds": 12345, "resources": {"requests": {"cpu": "7", "memory": "1Gi"}}}},
        "server": {"resources": {"limits": {"memory": "2Gi"}}, "tolerations": [{"key": "x", "operator": "Exists"}]}}))
    cfg = OperatorConfig.from_env({"EFT_DEFAULTS_FILE": str(path)})
    spec = sample_spec(runtime={"stages": {"train": {"resources": {"requests": {"memory": "64Gi"}}}}})
    h = plan_hashes(spec)
    job = manifests.stage_job(OWNER, spec, "train", h, "cm", cfg)
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["activeDeadlineSeconds"] == 12345 and job["spec"]["backoffLimit"] == 4
    assert pod["containers"][0]["resources"]["requests"] == {"cpu": "7", "memory": "64Gi", "nvidia.com/gpu": "1"}
    assert pod["nodeSelector"] == {"pool": "batch"}
    dep = manifests.server_deployment(OWNER, spec, h, cfg)["spec"]["template"]["spec"]
    assert dep["containers"][0]["resources"] == {"limits": {"memory": "2Gi"}}
    assert dep["tolerations"][0]["key"] == "x"
    kubernetes_validate.validate(job, K8S, strict=True)
