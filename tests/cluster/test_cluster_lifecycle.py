"""Lifecycle truths on the real control plane (issue 13, docs/operator.md "Lifecycle rules"): what a real cluster
takes away from the operator (names, pods, Jobs, its own earlier status) and what the resource must say then.

One resource, `life`, goes through the tests of this module in order (each stage is real work on CPU, so the
chain runs once): it ends not promoted (a final Argo CD health), an edit re-runs eval while the operator is
stopped and the eval pod is deleted (the result is re-read), serving follows replicas and resources, a server
that never becomes available is Degraded, and finally it is deleted and re-created under the same name while a
finalizer holds one of its Jobs. Each serving test first makes sure `life` is served (`_served`), so each one
also runs alone. `sticky` checks that a failed Job deleted by a TTL is not re-created; `grows` and `fixed` that an
edited storage size reaches a bound workspace claim where Kubernetes allows it, and says why not elsewhere.
"""

from __future__ import annotations

import signal
import sys
import time
import uuid

import pytest

from eftcluster_support import E2E_NS, EFT_PATH, GROUP, OPERATOR_NS, PLURAL, ROOT, tiny_resource, wait_for

sys.path.insert(0, str(ROOT / "tests" / "packaging"))
from eftpkg_support import run_health_lua  # noqa: E402 - the packaging tests' Lua runner (real Lua 5.1, lupa)

HEALTH_LUA = (ROOT / "argocd" / "health.lua").read_text()
MERGE = {"Content-Type": "application/merge-patch+json"}
RETRY = f"{GROUP}/retry"
NAME = "life"
#: Never promoted at first (fine-tuned must beat base by 1000%; the tiny corpus's test split is small, so the query
#: floor is lowered), no live verification (not what is tested here).
LIFE = {"evaluation": {"promotion": {"minRelativeImprovement": 10.0, "minTestQueries": 1}},
        "deploy": {"verification": {"enabled": False}}}


def _path(name: str) -> str:
    return f"{EFT_PATH}/namespaces/{E2E_NS}/{PLURAL}/{name}"


def _patch(kube, path: str, patch: dict) -> dict:
    r = kube.api.patch(path, json=patch, headers=MERGE)
    r.raise_for_status()
    return r.json()


def _current(kube, name: str) -> dict | None:
    """The status once the operator has observed the latest generation (None before)."""
    obj = kube.eft(E2E_NS, name) or {}
    st = obj.get("status") or {}
    return st if obj and st.get("observedGeneration") == obj["metadata"]["generation"] else None


def _cond(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c["type"] == type_), {})


def _stage_jobs(kube, name: str, stage: str) -> list[dict]:
    return [j for j in kube.jobs(E2E_NS, name) if j["metadata"]["labels"].get(f"{GROUP}/stage") == stage]


def _warnings(kube, name: str, type_: str = "Warning") -> list[tuple[str, str]]:
    """(reason, message) of the resource's Events of `type_`."""
    events = kube.items(f"/api/v1/namespaces/{E2E_NS}/events")
    return [(e["reason"], e["message"]) for e in events
            if e["involvedObject"].get("name") == name and e["involvedObject"].get("kind") == "EmbeddingFinetune"
            and e["type"] == type_]


def _job_done(kube, name: str) -> dict | None:
    job = kube.get(f"/apis/batch/v1/namespaces/{E2E_NS}/jobs/{name}") or {}
    conds = (job.get("status") or {}).get("conditions") or []
    return job if any(c["type"] == "Complete" and c["status"] == "True" for c in conds) else None


def _served(kube) -> dict:
    """`life` promoted (any margin accepted) and Ready; what the serving tests start from."""
    obj = kube.eft(E2E_NS, NAME)
    if obj["spec"]["evaluation"]["promotion"].get("minRelativeImprovement") != -1.0:
        _patch(kube, _path(NAME), {"spec": {"evaluation": {"promotion": {"minRelativeImprovement": -1.0}}}})

    def ready():
        st = _current(kube, NAME)
        return kube.eft(E2E_NS, NAME) if st and _cond(st, "Ready").get("status") == "True" else None

    return wait_for(ready, 600, f"{NAME} Ready", 1.0, lambda: kube.describe(E2E_NS, NAME))


@pytest.fixture(scope="module")
def life(operator_release, corpus_configmap):
    """`life` applied and run to its end: sdg, prep, train, eval, and no promotion."""
    kube = operator_release
    kube.apply(tiny_resource(NAME, corpus_configmap, **LIFE))

    def finished():
        st = _current(kube, NAME)
        return st if st and st.get("phase") in ("Succeeded", "Failed") else None

    wait_for(finished, 900, f"{NAME} to finish", 1.0, lambda: kube.describe(E2E_NS, NAME))
    return kube


def test_a_run_that_is_not_promoted_has_a_final_health(life):
    """Item 6: phase Succeeded, Ready=False (EvalBelowThreshold) is a final state for Argo CD, not Progressing."""
    kube = life
    obj = kube.eft(E2E_NS, NAME)
    st = obj["status"]
    assert st["phase"] == "Succeeded", kube.describe(E2E_NS, NAME)
    assert (_cond(st, "Ready")["status"], _cond(st, "Ready")["reason"]) == ("False", "EvalBelowThreshold")
    assert st["stages"]["deploy"]["phase"] == "Skipped"
    health = run_health_lua(HEALTH_LUA, obj)
    assert health["status"] == "Degraded" and health["message"].startswith("EvalBelowThreshold: not promoted"), health


def test_an_eval_result_whose_pod_is_gone_is_read_again(life):
    """Item 2: an edit re-runs eval; the operator is stopped (SIGSTOP) while the eval Job completes and its pod is
    deleted, then continued. The summary is recovered (the Job re-run, whose skip path re-emits
    eval/_SUCCESS.json), the model is promoted and served: never a permanent SummaryMissing."""
    kube = life
    earlier = {j["metadata"]["uid"] for j in kube.jobs(E2E_NS, NAME)}
    _patch(kube, _path(NAME), {"spec": {"evaluation": {"promotion": {"minRelativeImprovement": -1.0}}}})
    job = wait_for(lambda: next((j for j in _stage_jobs(kube, NAME, "eval") if j["metadata"]["uid"] not in earlier),
                                None), 120, "the new eval Job", 0.2, lambda: kube.describe(E2E_NS, NAME))
    jn = job["metadata"]["name"]
    operator = kube.operator_pod()
    assert kube.agent.kill(OPERATOR_NS, operator, signal.SIGSTOP) == 1
    try:
        wait_for(lambda: _job_done(kube, jn), 600, f"Job {jn} to complete", 1.0)
        pods = f"/api/v1/namespaces/{E2E_NS}/pods"
        for pod in kube.items(pods, f"job-name={jn}"):
            kube.api.delete(f"{pods}/{pod['metadata']['name']}")
        wait_for(lambda: not kube.items(pods, f"job-name={jn}"), 60, "the eval pod to be gone")
    finally:
        kube.agent.kill(OPERATOR_NS, operator, signal.SIGCONT)
    ready = kube.wait_ready(E2E_NS, NAME, timeout=600)
    ev = ready["status"]["stages"]["eval"]
    assert ev["phase"] == "Succeeded" and ev["summary"]["promotion"]["promoted"] is True, ev
    assert ev["message"] == "skipped: output already current"  # read again from eval/_SUCCESS.json
    assert ready["status"]["metrics"]["promotion"]["promoted"] is True
    [rerun] = [j for j in _stage_jobs(kube, NAME, "eval") if j["metadata"]["uid"] not in earlier]
    assert rerun["metadata"]["name"] == jn and rerun["metadata"]["uid"] != job["metadata"]["uid"]


def test_serving_follows_replicas_and_resources_and_ready_counts_them(life):
    """Item 4: after Ready, replicas and resources edited: the same Deployment is patched (no 409-and-done) and
    Ready is True only with the replicas the spec asks for."""
    kube = life
    dn = _served(kube)["status"]["stages"]["deploy"]["job"]
    dep_path = f"/apis/apps/v1/namespaces/{E2E_NS}/deployments/{dn}"
    obj = _patch(kube, _path(NAME), {"spec": {"deploy": {"replicas": 2, "resources": {"requests": {"cpu": "50m"}}}}})
    generation = obj["metadata"]["generation"]
    wait_for(lambda: kube.get(dep_path)["spec"]["replicas"] == 2, 60, "the Deployment to get 2 replicas", 0.5,
             lambda: kube.describe(E2E_NS, NAME))
    container = kube.get(dep_path)["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["requests"]["cpu"] == "50m"

    def ready_with_two():
        st = _current(kube, NAME)
        if not st or st["observedGeneration"] != generation or _cond(st, "Ready").get("status") != "True":
            return None
        # Ready at this generation must count what the spec asks for.
        assert st["stages"]["deploy"]["message"] == "2/2 replicas available", st["stages"]["deploy"]
        return st

    wait_for(ready_with_two, 300, "Ready with 2/2 replicas", 0.5, lambda: kube.describe(E2E_NS, NAME))
    assert kube.get(dep_path)["status"]["availableReplicas"] == 2
    assert [d["metadata"]["name"] for d in kube.items(f"/apis/apps/v1/namespaces/{E2E_NS}/deployments",
                                                      f"{GROUP}/resource={NAME}")] == [dn]


def test_a_server_that_never_becomes_available_is_degraded(life):
    """Item 5: a changed server whose pods crash at start (the node agent makes them exit) never becomes available:
    Degraded with the pods' reason, then the Deployment's own ProgressDeadlineExceeded, a Warning Event, Argo CD
    Degraded; the previous server keeps serving. Reverting the edit makes the resource Ready again."""
    kube = life
    before = _served(kube)["status"]
    old_dn, endpoint = before["stages"]["deploy"]["job"], before["endpoint"]
    old_hash = old_dn.rsplit("-", 1)[1]

    def new_server_pod(pod):
        labels = pod["metadata"].get("labels") or {}
        return (labels.get(f"{GROUP}/resource") == NAME and labels.get("app.kubernetes.io/component") == "server"
                and labels.get(f"{GROUP}/config-hash") != old_hash)

    kube.agent.fail_next(new_server_pod, 1, "OSError: model load failed (injected)", times=10_000)
    try:
        _patch(kube, _path(NAME), {"spec": {"deploy": {"maxBatchSize": 32, "progressDeadlineSeconds": 10}}})

        def degraded_by_the_deployment():
            st = _current(kube, NAME) or {}
            c = _cond(st, "Degraded")
            return st if c.get("status") == "True" and c["reason"] == "ProgressDeadlineExceeded" else None

        st = wait_for(degraded_by_the_deployment, 180, "Degraded=True, ProgressDeadlineExceeded", 0.5,
                      lambda: kube.describe(E2E_NS, NAME))
        new_dn = st["stages"]["deploy"]["job"]
        assert new_dn != old_dn and st["phase"] == "Failed" and st["currentStage"] == "deploy"
        message = _cond(st, "Degraded")["message"]
        assert new_dn in message and "has timed out progressing" in message  # the Deployment's own message
        assert "model load failed" in message  # and what its pods say
        assert st["endpoint"] == endpoint and kube.get(f"/apis/apps/v1/namespaces/{E2E_NS}/deployments/{old_dn}")
        assert run_health_lua(HEALTH_LUA, kube.eft(E2E_NS, NAME))["status"] == "Degraded"
        reasons = {r for r, _ in _warnings(kube, NAME)}
        assert "ProgressDeadlineExceeded" in reasons, reasons
    finally:
        for injection in kube.agent.injections:
            if injection.match is new_server_pod:
                injection.remaining = 0
        _patch(kube, _path(NAME), {"spec": {"deploy": {"maxBatchSize": None, "progressDeadlineSeconds": None}}})
    st = wait_for(lambda: (s := _current(kube, NAME)) and _cond(s, "Ready").get("status") == "True" and s, 300,
                  "Ready again after the revert", 0.5, lambda: kube.describe(E2E_NS, NAME))
    assert st["stages"]["deploy"]["job"] == old_dn and _cond(st, "Degraded")["status"] == "False"
    wait_for(lambda: [d["metadata"]["name"] for d in kube.items(f"/apis/apps/v1/namespaces/{E2E_NS}/deployments",
                                                                f"{GROUP}/resource={NAME}")] == [old_dn],
             60, "the broken Deployment to be deleted")


def test_a_recreated_resource_neither_counts_nor_adopts_the_earlier_children(life):
    """Item 1: `life` deleted while a finalizer (someone else's) holds its sdg Job, and re-created with the same
    name and spec: the new resource says it waits for that Job, counts no stage, creates nothing; once the Job
    is gone it starts clean with its own sdg Job."""
    kube = life
    old = _served(kube)
    [sdg] = _stage_jobs(kube, NAME, "sdg")
    sdg_name = sdg["metadata"]["name"]
    job_path = f"/apis/batch/v1/namespaces/{E2E_NS}/jobs/{sdg_name}"
    _patch(kube, job_path, {"metadata": {"finalizers": ["example.com/hold"]}})
    try:
        kube.kubectl("delete", "eft", NAME, "-n", E2E_NS, "--wait=true", "--timeout=120s")
        wait_for(lambda: (kube.get(job_path) or {}).get("metadata", {}).get("deletionTimestamp"), 120,
                 "the garbage collector to delete the old sdg Job")
        doc = {"apiVersion": old["apiVersion"], "kind": old["kind"],
               "metadata": {"name": NAME, "namespace": E2E_NS}, "spec": old["spec"]}
        r = kube.api.post(f"{EFT_PATH}/namespaces/{E2E_NS}/{PLURAL}", json=doc)
        assert r.status_code == 201, r.text
        new_uid = r.json()["metadata"]["uid"]

        def waiting():
            st = _current(kube, NAME) or {}
            return st if _cond(st, "Ready").get("reason") == "WaitingForPreviousChildren" else None

        st = wait_for(waiting, 60, "WaitingForPreviousChildren", 0.5, lambda: kube.describe(E2E_NS, NAME))
        assert f"Job {sdg_name}" in _cond(st, "Ready")["message"] and st["phase"] == "Pending"
        time.sleep(12)  # two resyncs (EFT_RESYNC_SECONDS=5 in the test values): still nothing counted or created
        st = kube.eft(E2E_NS, NAME)["status"]
        assert not st.get("stages") and _cond(st, "Ready")["reason"] == "WaitingForPreviousChildren", st
        owners = [[o["uid"] for o in j["metadata"].get("ownerReferences") or []] for j in kube.jobs(E2E_NS, NAME)]
        assert owners == [[old["metadata"]["uid"]]], owners
        assert run_health_lua(HEALTH_LUA, kube.eft(E2E_NS, NAME))["status"] == "Progressing"
    finally:
        _patch(kube, job_path, {"metadata": {"finalizers": None}})
    # The old Job goes: the new incarnation runs sdg itself, in its own workspace.
    job = wait_for(lambda: next((j for j in _stage_jobs(kube, NAME, "sdg")
                                 if j["metadata"]["ownerReferences"][0]["uid"] == new_uid), None),
                   180, "the new incarnation's sdg Job", 0.5, lambda: kube.describe(E2E_NS, NAME))
    assert job["metadata"]["name"] == sdg_name
    st = wait_for(lambda: (s := _current(kube, NAME)) and (s.get("stages") or {}).get("sdg") and s, 60, "sdg status")
    assert st["stages"]["sdg"]["phase"] in ("Running", "Succeeded") and st["currentStage"] in ("sdg", "prep")
    kube.kubectl("delete", "eft", NAME, "-n", E2E_NS, "--wait=true", "--timeout=120s")


def test_a_failed_job_deleted_by_a_ttl_stays_failed_until_the_retry_annotation(operator_release, corpus_configmap):
    """Item 3: sdg fails (exit 2, no retry); a cluster policy sets the failed Job's TTL to 0 and the TTL controller
    deletes it. The failure stays recorded (reason, message), no Job is re-created and no Event repeated; the
    documented retry annotation starts one new Job. Our own Jobs carry the spec's TTL."""
    kube = operator_release
    name = "sticky"

    def sdg_pod(pod):
        labels = pod["metadata"].get("labels") or {}
        return labels.get(f"{GROUP}/resource") == name and labels.get(f"{GROUP}/stage") == "sdg"

    kube.agent.fail_next(sdg_pod, 2, "invalid input (injected by the test)", times=1)
    kube.apply(tiny_resource(name, corpus_configmap, runtime={"defaults": {"ttlSecondsAfterFinished": 3600}}))

    def failed():
        st = _current(kube, name) or {}
        return st if _cond(st, "Degraded").get("status") == "True" else None

    st = wait_for(failed, 120, f"{name} Degraded", 0.5, lambda: kube.describe(E2E_NS, name))
    [job] = kube.jobs(E2E_NS, name)
    assert job["spec"]["ttlSecondsAfterFinished"] == 3600
    record, degraded, warnings = st["stages"]["sdg"], _cond(st, "Degraded"), _warnings(kube, name)
    assert record["phase"] == "Failed" and "invalid input" in record["message"]
    job_path = f"/apis/batch/v1/namespaces/{E2E_NS}/jobs/{job['metadata']['name']}"
    _patch(kube, job_path, {"spec": {"ttlSecondsAfterFinished": 0}})
    wait_for(lambda: kube.get(job_path) is None, 60, "the TTL controller to delete the failed Job")
    deadline = time.monotonic() + 12  # two resyncs (EFT_RESYNC_SECONDS=5)
    while time.monotonic() < deadline:
        assert kube.jobs(E2E_NS, name) == [], "the failed Job was re-created"
        time.sleep(0.5)
    st = kube.eft(E2E_NS, name)["status"]
    assert st["stages"]["sdg"] == record and _cond(st, "Degraded") == degraded and st["phase"] == "Failed"
    assert _warnings(kube, name) == warnings
    kube.kubectl("annotate", "eft", name, "-n", E2E_NS, f"{RETRY}=1")
    [job] = wait_for(lambda: kube.jobs(E2E_NS, name), 60, "one new sdg Job after the retry annotation")
    assert job["metadata"]["annotations"][RETRY] == "1"
    kube.kubectl("delete", "eft", name, "-n", E2E_NS, "--wait=true", "--timeout=120s")


def _claim_request(kube, name: str) -> str | None:
    pvc = kube.get(f"/api/v1/namespaces/{E2E_NS}/persistentvolumeclaims/{name}-workspace") or {}
    return (((pvc.get("spec") or {}).get("resources") or {}).get("requests") or {}).get("storage")


def test_an_edited_storage_size_grows_a_bound_claim_where_its_class_allows_and_says_why_not_elsewhere(
        operator_release, corpus_configmap):
    """Two workspace claims bound by the real PersistentVolume binder to static volumes: one of a StorageClass with
    allowVolumeExpansion, one with no class. A larger spec.storage.size is patched onto the first (the API server's
    own admission and validation accept it) with a Normal Event; the second's refusal (PersistentVolumeClaimResize
    admission) and a size at the first's capacity are Warning Events in the API server's or the operator's words,
    and both claims keep what they had; a size between its capacity and its request is patched on (the API
    server's RecoverVolumeExpansionFailure). The runs end at sdg (an injected exit 2), so no stage work is done."""
    kube = operator_release
    run = uuid.uuid4().hex[:6]  # cluster-scoped objects of their own, should the test run again on this cluster
    expandable = f"eft-expandable-{run}"
    sc = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": expandable},
          "provisioner": "kubernetes.io/no-provisioner", "allowVolumeExpansion": True,
          "volumeBindingMode": "Immediate"}
    pvs = {name: {"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": f"eft-{name}-pv-{run}"},
                  "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                           "persistentVolumeReclaimPolicy": "Retain", "storageClassName": cls,
                           "hostPath": {"path": f"/tmp/eft-{name}-pv-{run}"},
                           # reserved for this claim: another test's claim without a class would take it
                           "claimRef": {"namespace": E2E_NS, "name": f"{name}-workspace"}}}
           for name, cls in (("grows", expandable), ("fixed", ""))}
    for path, obj in [("/apis/storage.k8s.io/v1/storageclasses", sc)] + [("/api/v1/persistentvolumes", pv)
                                                                           for pv in pvs.values()]:
        r = kube.api.post(path, json=obj)
        assert r.status_code in (201, 409), r.text

    def sdg_pod(pod):
        labels = pod["metadata"].get("labels") or {}
        return labels.get(f"{GROUP}/resource") in pvs and labels.get(f"{GROUP}/stage") == "sdg"

    # every sdg pod of theirs fails at once, the ones a size edit starts again included (a spec change retries a
    # failed stage): no stage work beside the test
    kube.agent.fail_next(sdg_pod, 2, "invalid input (injected by the test)", times=8)
    try:
        for name, cls in (("grows", expandable), ("fixed", "")):
            kube.apply(tiny_resource(name, corpus_configmap, storage={"size": "1Gi", "storageClassName": cls}))
        for name in pvs:
            claim = f"/api/v1/namespaces/{E2E_NS}/persistentvolumeclaims/{name}-workspace"
            wait_for(lambda: ((kube.get(claim) or {}).get("status") or {}).get("phase") == "Bound", 120,
                     f"the claim of {name} bound to its volume", 0.5, lambda: str(kube.get(claim)))

        _patch(kube, _path("grows"), {"spec": {"storage": {"size": "2Gi"}}})
        wait_for(lambda: _claim_request(kube, "grows") == "2Gi", 60, "the claim of grows to ask for 2Gi", 0.5,
                 lambda: kube.describe(E2E_NS, "grows"))
        [(_, message)] = wait_for(
            lambda: [e for e in _warnings(kube, "grows", "Normal") if e[0] == "ClaimExpansionRequested"], 30,
            "ClaimExpansionRequested")
        assert "grow from 1Gi to 2Gi" in message

        _patch(kube, _path("fixed"), {"spec": {"storage": {"size": "2Gi"}}})
        [(_, message)] = wait_for(
            lambda: [e for e in _warnings(kube, "fixed") if e[0] == "ClaimExpansionRefused"], 60,
            "ClaimExpansionRefused", 0.5, lambda: kube.describe(E2E_NS, "fixed"))
        assert "cannot go from 1Gi to 2Gi" in message and "storageclass" in message.lower(), message
        assert _claim_request(kube, "fixed") == "1Gi"

        # Nothing here resizes volumes, so the claim is still 1Gi: like an expansion the driver could not finish.
        # The API server (RecoverVolumeExpansionFailure) takes a request lowered to above that capacity ...
        _patch(kube, _path("grows"), {"spec": {"storage": {"size": "1536Mi"}}})
        wait_for(lambda: _claim_request(kube, "grows") == "1536Mi", 60, "the claim of grows to ask for 1536Mi", 0.5,
                 lambda: kube.describe(E2E_NS, "grows"))
        assert any("request 1536Mi instead of 2Gi, above its capacity 1Gi" in m
                   for r, m in _warnings(kube, "grows", "Normal") if r == "ClaimExpansionRequested")
        # ... and nothing at or below it.
        _patch(kube, _path("grows"), {"spec": {"storage": {"size": "1Gi"}}})
        [(_, message)] = wait_for(
            lambda: [e for e in _warnings(kube, "grows") if e[0] == "ClaimShrinkUnsupported"], 60,
            "ClaimShrinkUnsupported", 0.5, lambda: kube.describe(E2E_NS, "grows"))
        assert "not above PersistentVolumeClaim grows-workspace's capacity 1Gi" in message, message
        assert "keeps its request of 1536Mi" in message, message
        time.sleep(6)  # a resync (EFT_RESYNC_SECONDS=5) checks both claims again
        assert _claim_request(kube, "grows") == "1536Mi" and _claim_request(kube, "fixed") == "1Gi"
        assert [r for r, _ in _warnings(kube, "grows")].count("ClaimShrinkUnsupported") == 1
        assert [r for r, _ in _warnings(kube, "fixed")].count("ClaimExpansionRefused") == 1
    finally:
        for name in pvs:
            kube.kubectl("delete", "eft", name, "-n", E2E_NS, "--ignore-not-found", "--wait=true", "--timeout=120s")
        for name in pvs:
            kube.api.delete(f"/api/v1/persistentvolumes/eft-{name}-pv-{run}")
        kube.api.delete(f"/apis/storage.k8s.io/v1/storageclasses/{expandable}")
