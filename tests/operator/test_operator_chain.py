"""The real operator process (`eft operator`) against kmock's emulator, the test playing the cluster's part."""

from __future__ import annotations

import time

import kubernetes_validate
import yaml

from eft.api import parse_resource
from eft.controller.rbac import allows
from eftop_harness import (
    GROUP,
    Cluster,
    drive_stage,
    drive_to_ready,
    job_for_stage,
    sample_resource,
    secrets_for,
    wait_for,
)

NS = "default"
K8S_VERSION = "1.30"
KINDS = ("jobs", "deployments", "services", "configmaps", "persistentvolumeclaims")


def children(cluster: Cluster, name: str) -> list[dict]:
    return [o for kind in KINDS for o in cluster.list(kind, NS, name)]


def assert_rbac_covers(emulator) -> set:
    """Every request the operator sent (Kopf's and the controller's) is allowed by rbac.REQUIRED_RULES."""
    seen = set()
    for method, path, action, sub, params in emulator.requests():
        parts = path.strip("/").split("/")
        if parts[0] == "api":
            group, rest = "", parts[2:]
        elif parts[0] == "apis" and len(parts) >= 3:
            group, rest = parts[1], parts[3:]
        else:
            continue
        if rest[:1] == ["namespaces"] and len(rest) >= 3:
            rest = rest[2:]
        elif rest[:1] == ["namespaces"]:
            rest = ["namespaces"]
        if not rest:
            continue  # discovery
        resource = rest[0] + (f"/{rest[2]}" if len(rest) >= 3 else "")
        verb = {"WATCH": "watch", "LIST": "list", "FETCH": "get", "CREATE": "create", "UPDATE": "patch",
                "DELETE": "delete"}.get(action or "")
        if verb is None:
            continue
        seen.add((group, resource, verb))
    return seen


def test_full_chain_to_ready(emulator, cluster: Cluster, operator):
    secrets_for(cluster)
    cluster.apply(sample_resource("demo"))
    created = drive_to_ready(cluster, NS, "demo")
    st = cluster.eft(NS, "demo")["status"]

    # Status: phase, metrics, endpoint, every stage recorded with its summary.
    assert st["phase"] == "Succeeded" and st["observedGeneration"] == 1
    assert st["endpoint"] == "http://demo-server.default.svc:8000"
    assert st["metrics"]["base"]["ndcg@10"] == 0.55 and st["metrics"]["finetuned"]["ndcg@10"] == 0.61
    assert st["metrics"]["ndcg10"] == "0.550 → 0.610 (+10.9%)"
    assert [s for s in st["stages"]] == ["sdg", "prep", "train", "eval", "export", "deploy", "verify"]
    assert all(s["phase"] == "Succeeded" for s in st["stages"].values())
    assert st["stages"]["sdg"]["summary"] == {"chunks": 1500, "questions": 600}
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["SpecValid"]["status"] == "True"
    assert conds["Degraded"]["status"] == "False" and conds["Progressing"]["status"] == "False"
    assert all(c["observedGeneration"] == 1 and c["lastTransitionTime"] for c in conds.values())

    # Deterministic names, one Job per stage, owner references and labels on every child.
    hashes = {s: st["stages"][s]["configHash"] for s in created}
    for stage, name in created.items():
        assert name == f"demo-{stage}-{hashes[stage][:8]}"
    assert len(cluster.jobs(NS, "demo")) == 6
    uid = cluster.eft(NS, "demo")["metadata"]["uid"]
    objs = children(cluster, "demo")
    assert {o["kind"] for o in objs} == {"Job", "Deployment", "Service", "ConfigMap", "PersistentVolumeClaim"}
    for o in objs:
        refs = o["metadata"]["ownerReferences"]
        assert refs == [{"apiVersion": f"{GROUP}/v1alpha1", "kind": "EmbeddingFinetune", "name": "demo", "uid": uid,
                         "controller": True, "blockOwnerDeletion": True}]
        labels = o["metadata"]["labels"]
        assert labels["app.kubernetes.io/managed-by"] == "embedding-finetune-operator"
        assert labels["app.kubernetes.io/instance"] == "demo"
        clean = {k: v for k, v in o.items() if k != "status"}
        clean["metadata"] = {k: v for k, v in o["metadata"].items() if k not in ("uid", "generation",
                                                                                "resourceVersion",
                                                                                "creationTimestamp")}
        kubernetes_validate.validate(clean, K8S_VERSION, strict=True)

    # The stage Job contract: command, spec ConfigMap, workspace, secrets, GPU, scheduling, retries.
    sdg = cluster.get("jobs", NS, created["sdg"])
    train = cluster.get("jobs", NS, created["train"])
    pod = train["spec"]["template"]["spec"]
    c = pod["containers"][0]
    assert c["command"] == ["eft", "stage", "train", "--spec", "/etc/eft/resource.yaml", "--workdir", "/workspace"]
    assert c["image"] == "registry.test/eft-pipeline:test"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert c["terminationMessagePolicy"] == "FallbackToLogsOnError"
    assert pod["nodeSelector"] == {"pool": "gpu"} and pod["tolerations"][0]["key"] == "nvidia.com/gpu"
    env = {e["name"]: e for e in c["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf", "key": "token"}
    sdg_env = {e["name"]: e for e in sdg["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert sdg_env["EFT_LLM_API_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "llm-api", "key": "api-key"}
    rules = train["spec"]["podFailurePolicy"]["rules"]
    assert rules[0]["action"] == "FailJob" and rules[0]["onExitCodes"]["values"] == [2]
    assert train["spec"]["backoffLimit"] == 2 and train["spec"]["activeDeadlineSeconds"] > 0
    cm_name = next(v["configMap"]["name"] for v in pod["volumes"] if v["name"] == "spec")
    doc = yaml.safe_load(cluster.get("configmaps", NS, cm_name)["data"]["resource.yaml"])
    assert parse_resource(doc).spec.corpus.source.path == "/mnt/corpus/handbook"
    pvc = cluster.get("persistentvolumeclaims", NS, "demo-workspace")
    assert pvc["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert pvc["spec"]["storageClassName"] == "fast-ssd"

    # Serving and verification.
    dep = cluster.get("deployments", NS, created["deploy"])
    sc = dep["spec"]["template"]["spec"]["containers"][0]
    assert sc["command"] == ["eft", "serve", "--model", "/workspace/export", "--host", "0.0.0.0", "--port", "8000"]
    assert sc["readinessProbe"]["httpGet"]["path"] == "/v1/health/ready"
    assert sc["startupProbe"]["failureThreshold"] * sc["startupProbe"]["periodSeconds"] >= 600
    verify = cluster.get("jobs", NS, created["verify"])
    assert verify["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "eft", "verify", "--endpoint", "http://demo-server.default.svc:8000", "--workdir", "/workspace",
        "--spec", "/etc/eft/resource.yaml"]

    # Events on the transitions.
    reasons = [e["reason"] for e in cluster.events(NS, "demo")]
    assert reasons.count("StageStarted") >= 6 and reasons.count("StageSucceeded") >= 7 and "Ready" in reasons

    # Metrics and probes of the operator itself.
    text = operator.metrics()
    assert 'eft_eval_metric{metric="ndcg@10",model="finetuned",name="demo",namespace="default"} 0.61' in text
    assert 'eft_operator_stage_outcomes_total{name="demo",namespace="default",outcome="succeeded",stage="train"} 1.0' in text
    assert 'eft_operator_reconciles_total{result="ok"}' in text
    assert operator.healthz().status_code == 200

    # Kopf put no finalizer or foreign annotations on the resource; every API call is covered by RBAC.
    meta = cluster.eft(NS, "demo")["metadata"]
    assert not meta.get("finalizers")
    assert all(k.startswith(GROUP) for k in (meta.get("annotations") or {}))
    calls = assert_rbac_covers(emulator)
    missing = sorted(c for c in calls if not allows(*c))
    assert not missing, f"RBAC rules miss {missing}"
    assert ("batch", "jobs", "create") in calls and (GROUP, "embeddingfinetunes/status", "patch") in calls


def test_restart_mid_chain_creates_no_duplicates(cluster: Cluster, operator_factory):
    secrets_for(cluster)
    op = operator_factory()
    cluster.apply(sample_resource("demo"))
    drive_stage(cluster, NS, "demo", "sdg")
    prep = wait_for(lambda: job_for_stage(cluster, NS, "demo", "prep"), what="prep Job")
    op.kill()  # right after creating the prep Job, maybe before recording it
    cluster.complete_job(NS, prep["metadata"]["name"], {"train": 480, "test": 120})  # finishes while it is down
    op = operator_factory()
    train = wait_for(lambda: job_for_stage(cluster, NS, "demo", "train"), what="train Job after restart")
    op.kill()  # and once more, with a Job running
    cluster.start_job(NS, train["metadata"]["name"])
    operator_factory()
    created = drive_to_ready(cluster, NS, "demo", stages=("train", "eval", "export"))
    names = cluster.job_names(NS, "demo")
    stages = [n.rsplit("-", 2)[1] for n in names]
    assert sorted(stages) == sorted(["sdg", "prep", "train", "eval", "export", "verify"]), names
    assert train["metadata"]["name"] == created["train"]
    st = cluster.eft(NS, "demo")["status"]
    assert st["stages"]["prep"]["summary"] == {"train": 480, "test": 120}  # read back after the restart
    assert len(cluster.list("deployments", NS, "demo")) == 1


def test_failing_stage_then_spec_fix_resumes_there(cluster: Cluster, operator):
    secrets_for(cluster)
    cluster.apply(sample_resource("demo"))
    sdg = drive_stage(cluster, NS, "demo", "sdg")
    prep = drive_stage(cluster, NS, "demo", "prep")
    train = wait_for(lambda: job_for_stage(cluster, NS, "demo", "train"), what="train Job")["metadata"]["name"]
    cluster.fail_job(NS, train, "RuntimeError: CUDA out of memory (tried to allocate 2.0 GiB)")
    deg = wait_for(lambda: (c := cluster.condition(NS, "demo", "Degraded")) and c["status"] == "True" and c,
                   what="Degraded=True")
    assert deg["reason"] == "BackoffLimitExceeded"
    assert "train" in deg["message"] and "CUDA out of memory" in deg["message"]
    st = cluster.eft(NS, "demo")["status"]
    assert st["phase"] == "Failed" and st["stages"]["train"]["phase"] == "Failed"
    assert st["stages"]["sdg"]["phase"] == "Succeeded" and st["stages"]["prep"]["phase"] == "Succeeded"
    assert cluster.condition(NS, "demo", "Ready")["status"] == "False"
    assert any(e["reason"] == "StageFailed" and e["type"] == "Warning" for e in cluster.events(NS, "demo"))
    time.sleep(1.0)
    assert job_for_stage(cluster, NS, "demo", "eval") is None

    # A fix of the training settings: train runs again under a new name, sdg and prep are not re-run.
    cluster.patch("embeddingfinetunes", NS, "demo", {"spec": {"training": {"globalBatchSize": 32}}})
    new_train = drive_stage(cluster, NS, "demo", "train")
    assert new_train != train
    wait_for(lambda: (c := cluster.condition(NS, "demo", "Degraded")) and c["status"] == "False", what="recovered")
    drive_to_ready(cluster, NS, "demo", stages=("eval", "export"))
    names = cluster.job_names(NS, "demo")
    assert sdg in names and prep in names and sum(n.startswith("demo-sdg-") for n in names) == 1
    assert sum(n.startswith("demo-prep-") for n in names) == 1


def test_invalid_input_exit_2_and_a_runtime_fix_retries_the_same_job(cluster: Cluster, operator):
    secrets_for(cluster)
    cluster.apply(sample_resource("demo"))
    sdg = wait_for(lambda: job_for_stage(cluster, NS, "demo", "sdg"), what="sdg Job")["metadata"]["name"]
    cluster.fail_job(NS, sdg, "error: corpus folder is empty: /mnt/corpus/handbook", exit_code=2,
                     reason="PodFailurePolicy", attempts=1)
    deg = wait_for(lambda: (c := cluster.condition(NS, "demo", "Degraded")) and c["status"] == "True" and c,
                   what="Degraded=True")
    assert deg["reason"] == "PodFailurePolicy" and "exit code 2" in deg["message"]
    assert "corpus folder is empty" in deg["message"]
    # A change outside the sdg config hash (here: its resources) keeps the Job name: the failed Job is replaced.
    cluster.patch("embeddingfinetunes", NS, "demo",
                  {"spec": {"runtime": {"stages": {"sdg": {"resources": {"limits": {"memory": "8Gi"}}}}}}})
    def replaced():
        job = cluster.get("jobs", NS, sdg)
        return job is not None and not (job.get("status") or {}).get("conditions") and job
    job = wait_for(replaced, what="the sdg Job recreated")
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["memory"] == "8Gi"
    assert job["metadata"]["annotations"][f"{GROUP}/generation"] == "2"


def test_not_promoted_stops_before_export(cluster: Cluster, operator):
    secrets_for(cluster)
    cluster.apply(sample_resource("demo"))
    for stage in ("sdg", "prep", "train"):
        drive_stage(cluster, NS, "demo", stage)
    summary = {"base": {"ndcg@10": 0.55}, "finetuned": {"ndcg@10": 0.54}, "relative": {"ndcg@10": -0.018},
               "promotion": {"promoted": False, "metric": "ndcg@10", "reason": "fine-tuned did not beat base"}}
    drive_stage(cluster, NS, "demo", "eval", summary)
    ready = wait_for(lambda: (c := cluster.condition(NS, "demo", "Ready")) and c["reason"] == "EvalBelowThreshold"
                     and c, what="EvalBelowThreshold")
    assert ready["status"] == "False" and "did not beat base" in ready["message"]
    st = cluster.eft(NS, "demo")["status"]
    assert st["phase"] == "Succeeded" and st["stages"]["export"]["phase"] == "Skipped"
    assert st["metrics"]["finetuned"]["ndcg@10"] == 0.54
    time.sleep(1.0)
    assert job_for_stage(cluster, NS, "demo", "export") is None
    assert not cluster.list("deployments", NS, "demo")
