"""Invalid specs, edits after success, suspend/resume, hand-deleted children and deletion (real operator + kmock)."""

from __future__ import annotations

import time

import pytest

from eftop_harness import (
    Cluster,
    drive_stage,
    drive_to_ready,
    job_for_stage,
    sample_resource,
    secrets_for,
    wait_for,
)

NS = "default"


def spec_invalid(cluster: Cluster, name: str) -> dict:
    return wait_for(lambda: (c := cluster.condition(NS, name, "SpecValid")) and c["status"] == "False" and c,
                    what=f"SpecValid=False on {name}")


@pytest.mark.parametrize("name, patch, field, reason, words", [
    ("wrong-type", {"training": {"epochs": "three"}}, "spec.training.epochs", "InvalidSpec", "valid integer"),
    ("out-of-bounds", {"training": {"epochs": 500}}, "spec.training.epochs", "InvalidSpec", "less than or equal to 100"),
    ("bad-model", {"baseModel": {"name": "s3://bucket/model"}}, "spec.baseModel.name", "InvalidSpec",
     "unknown base model format"),
])
def test_invalid_spec_reports_field_and_starts_nothing(cluster: Cluster, operator, name, patch, field, reason, words):
    secrets_for(cluster)
    res = sample_resource(name)
    for key, value in patch.items():
        res["spec"][key] = {**res["spec"].get(key, {}), **value}
    cluster.apply(res)
    cond = spec_invalid(cluster, name)
    assert cond["reason"] == reason
    assert field in cond["message"] and words in cond["message"], cond["message"]
    st = cluster.eft(NS, name)["status"]
    assert st["phase"] == "Failed"
    assert {c["type"]: c["status"] for c in st["conditions"]} == {
        "Ready": "False", "Progressing": "False", "Degraded": "True", "SpecValid": "False"}
    events = cluster.events(NS, name)
    assert any(e["type"] == "Warning" and e["reason"] == reason and field in e["message"] for e in events)
    time.sleep(1.0)
    assert not cluster.jobs(NS, name) and not cluster.list("configmaps", NS, name)
    # Fixing the spec resumes: SpecValid=True and the first Job. (A missing Secret is no spec problem the operator
    # can see, since it never reads Secrets: the pod's CreateContainerConfigError reports it, see tests/cluster.)
    cluster.patch("embeddingfinetunes", NS, name, {"spec": sample_resource(name)["spec"]})
    wait_for(lambda: job_for_stage(cluster, NS, name, "sdg"), what="sdg Job after the fix")
    assert cluster.condition(NS, name, "SpecValid")["status"] == "True"


def test_editing_epochs_after_success_reruns_only_downstream(cluster: Cluster, operator):
    secrets_for(cluster)
    cluster.apply(sample_resource("demo"))
    first = drive_to_ready(cluster, NS, "demo")
    before = set(cluster.job_names(NS, "demo"))
    ready_ltt = cluster.condition(NS, "demo", "Ready")["lastTransitionTime"]
    cluster.patch("embeddingfinetunes", NS, "demo", {"spec": {"training": {"epochs": 5}}})
    wait_for(lambda: cluster.eft(NS, "demo")["status"]["observedGeneration"] == 2, what="observedGeneration 2")
    assert cluster.condition(NS, "demo", "Ready")["status"] == "False"
    # The old server keeps serving (endpoint kept) while train/eval/export re-run.
    assert cluster.eft(NS, "demo")["status"]["endpoint"] == "http://demo-server.default.svc:8000"
    second = drive_to_ready(cluster, NS, "demo", stages=("train", "eval", "export"))
    after = set(cluster.job_names(NS, "demo"))
    new = after - before
    assert sorted(n.rsplit("-", 2)[1] for n in new) == ["eval", "export", "train", "verify"]
    assert not any(n.startswith(("demo-sdg-", "demo-prep-")) for n in new)
    for stage in ("train", "eval", "export", "deploy", "verify"):
        assert second[stage] != first[stage], stage
    # The superseded Deployment is removed once the new one is available.
    wait_for(lambda: [d["metadata"]["name"] for d in cluster.list("deployments", NS, "demo")] == [second["deploy"]],
             what="old Deployment removed")
    st = cluster.eft(NS, "demo")["status"]
    assert st["stages"]["sdg"]["job"] == first["sdg"] and st["stages"]["train"]["job"] == second["train"]
    ready = cluster.condition(NS, "demo", "Ready")
    assert ready["status"] == "True" and ready["observedGeneration"] == 2 and ready["lastTransitionTime"] >= ready_ltt


def test_suspend_and_resume(cluster: Cluster, operator):
    secrets_for(cluster)
    res = sample_resource("demo")
    res["spec"]["suspend"] = True
    cluster.apply(res)
    wait_for(lambda: (cluster.eft(NS, "demo").get("status") or {}).get("phase") == "Suspended", what="Suspended")
    time.sleep(1.0)
    assert not cluster.jobs(NS, "demo")
    assert cluster.condition(NS, "demo", "Progressing")["reason"] == "Suspended"
    cluster.patch("embeddingfinetunes", NS, "demo", {"spec": {"suspend": False}})
    drive_stage(cluster, NS, "demo", "sdg")
    prep = wait_for(lambda: job_for_stage(cluster, NS, "demo", "prep"), what="prep Job")["metadata"]["name"]
    # Suspending mid-chain: the running Job finishes, no further Job starts.
    cluster.patch("embeddingfinetunes", NS, "demo", {"spec": {"suspend": True}})
    wait_for(lambda: cluster.eft(NS, "demo")["status"]["observedGeneration"] == 3, what="generation 3 observed")
    cluster.complete_job(NS, prep, {"train": 1, "test": 1})
    wait_for(lambda: cluster.eft(NS, "demo")["status"]["phase"] == "Suspended", what="Suspended again")
    time.sleep(1.0)
    assert job_for_stage(cluster, NS, "demo", "train") is None
    assert cluster.eft(NS, "demo")["status"]["stages"]["prep"]["phase"] == "Succeeded"
    cluster.patch("embeddingfinetunes", NS, "demo", {"spec": {"suspend": False}})
    wait_for(lambda: job_for_stage(cluster, NS, "demo", "train"), what="train Job after resume")
    # The Events follow the status write, which follows the Job's creation: wait for them.
    wait_for(lambda: [e["reason"] for e in cluster.events(NS, "demo")].count("Resumed") == 2, what="2 Resumed")
    reasons = [e["reason"] for e in cluster.events(NS, "demo")]
    assert reasons.count("Suspended") == 2 and reasons.count("Resumed") == 2


def test_hand_deleted_job_and_deployment_are_recreated(cluster: Cluster, operator):
    secrets_for(cluster)
    cluster.apply(sample_resource("demo"))
    sdg = wait_for(lambda: job_for_stage(cluster, NS, "demo", "sdg"), what="sdg Job")
    uid = sdg["metadata"]["uid"]
    cluster.delete("jobs", NS, sdg["metadata"]["name"])
    again = wait_for(lambda: (j := cluster.get("jobs", NS, sdg["metadata"]["name"])) and j["metadata"]["uid"] != uid
                     and j, what="sdg Job recreated")
    assert again["metadata"]["name"] == sdg["metadata"]["name"]
    created = drive_to_ready(cluster, NS, "demo")
    cluster.delete("deployments", NS, created["deploy"])
    wait_for(lambda: cluster.get("deployments", NS, created["deploy"]), what="Deployment recreated")
    wait_for(lambda: cluster.condition(NS, "demo", "Ready")["status"] == "False", what="Ready=False meanwhile")
    cluster.make_available(NS, created["deploy"])
    wait_for(lambda: cluster.condition(NS, "demo", "Ready")["status"] == "True", what="Ready=True again")
    assert len(cluster.jobs(NS, "demo")) == 6  # verification is not re-run for the same config
