"""The reconciler on its own: no Kopf, no cluster, an in-memory API that records the calls, and children
observed through plain dictionaries (what Kopf's indices hold in the running operator)."""

from __future__ import annotations

import asyncio
import copy
import subprocess
import sys
from typing import Any

import pytest

from eft.controller import kube
from eft.controller.config import OperatorConfig
from eft.controller.kube import Res
from eft.api import parse_resource
from eft.controller.plan import JobObs, blocked_pod, observe_deployment
from eft.hashing import plan_hashes
from eft.controller.reconciler import ChildRejected, Reconciler
from eftop_harness import STAGE_SUMMARIES, sample_resource

NS, NAME = "team-a", "demo"


def _merge(target: dict, patch: dict) -> None:
    for key, value in patch.items():
        if value is None:
            target.pop(key, None)
        elif isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge(target[key], value)
        else:
            target[key] = value


class MemoryApi:
    """Objects by (plural, namespace, name); create of an existing name is a no-op like a 409."""

    def __init__(self, *objects: tuple[str, dict]) -> None:
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.calls: list[tuple[str, str, str]] = []
        self.propagation: dict[str, str] = {}  # name -> propagationPolicy of its delete
        for plural, obj in objects:
            self.objects[(plural, obj["metadata"].get("namespace", NS), obj["metadata"]["name"])] = obj

    async def get(self, res: Res, namespace: str, name: str) -> dict | None:
        self.calls.append(("get", res.plural, name))
        return self.objects.get((res.plural, namespace, name))

    async def list(self, res: Res, namespace: str | None, label_selector: str | None = None) -> list[dict]:
        self.calls.append(("list", res.plural, label_selector or ""))
        wanted = [term.partition("=")[::2] for term in (label_selector or "").split(",") if term]
        return [o for (p, ns, _), o in self.objects.items() if p == res.plural and ns == namespace
                and all((o["metadata"].get("labels") or {}).get(k) == v for k, v in wanted)]

    async def create(self, res: Res, namespace: str, body: dict) -> tuple[dict | None, bool]:
        self.calls.append(("create", res.plural, body["metadata"].get("name", "")))
        key = (res.plural, namespace, body["metadata"]["name"])
        if key in self.objects:
            return None, False
        self.objects[key] = body
        return body, True

    async def patch(self, res: Res, namespace: str, name: str, body: dict, sub: str | None = None) -> dict:
        self.calls.append(("patch", f"{res.plural}/{sub}" if sub else res.plural, name))
        obj = self.objects[(res.plural, namespace, name)]
        _merge(obj, body)  # a JSON merge patch (RFC 7386)
        return obj

    async def delete(self, res: Res, namespace: str, name: str, propagation: str = "Background") -> bool:
        self.calls.append(("delete", res.plural, name))
        self.propagation[name] = propagation
        return self.objects.pop((res.plural, namespace, name), None) is not None

    async def close(self) -> None:
        pass

    def created(self, plural: str) -> list[str]:
        return [n for verb, p, n in self.calls if verb == "create" and p == plural]

    def did(self, verb: str, plural: str) -> list[str]:
        return [n for v, p, n in self.calls if v == verb and p == plural]


def _setup(**spec_overrides: Any) -> tuple[Reconciler, MemoryApi]:
    body = sample_resource(NAME, NS, **spec_overrides)
    body["metadata"].update(uid="u-1", generation=1)
    secrets = [("secrets", {"metadata": {"name": n, "namespace": NS}, "data": {k: "eA=="}})
               for n, k in (("llm-api", "api-key"), ("hf", "token"))]
    api = MemoryApi(("embeddingfinetunes", body), *secrets)
    reconciler = Reconciler(OperatorConfig(pipeline_image="p:1", ref_cache_seconds=0), api)
    reconciler.jobs_index, reconciler.deployments_index = {}, {}
    reconciler.resource_changed((NS, NAME), body)
    return reconciler, api


def _job_obs(name: str, stage: str, state: str, owner_uid: str = "u-1", **kw: Any) -> JobObs:
    """A Job as Kopf's index holds it: owned (controller reference) by the resource incarnation `owner_uid`."""
    return JobObs(name=name, stage=stage, config_hash="", generation=kw.pop("generation", 1), state=state,
                  uid=f"{name}-uid", owner_uid=owner_uid, **kw)


def _status(api: MemoryApi) -> dict:
    return api.objects[("embeddingfinetunes", NS, NAME)]["status"]


def test_first_reconcile_creates_the_first_job_and_writes_status_once():
    reconciler, api = _setup()
    asyncio.run(reconciler.reconcile((NS, NAME)))
    assert api.created("persistentvolumeclaims") == ["demo-workspace"]
    [job] = api.created("jobs")
    assert job.startswith("demo-sdg-")
    assert api.objects[("jobs", NS, job)]["spec"]["template"]["spec"]["containers"][0]["image"] == "p:1"
    status = _status(api)
    assert status["phase"] == "Running" and status["currentStage"] == "sdg"
    conds = {c["type"]: (c["status"], c["reason"]) for c in status["conditions"]}
    assert conds == {"Ready": ("False", "StageRunning"), "Progressing": ("True", "StageRunning"),
                     "Degraded": ("False", "AsExpected"), "SpecValid": ("True", "Valid")}
    assert "StageStarted" in [o["reason"] for (p, _, _), o in api.objects.items() if p == "events"]

    # The Job shows up in the index: no second Job; once nothing changes, no status write either.
    reconciler.jobs_index = {(NS, NAME): [_job_obs(job, "sdg", "Pending")]}
    for _ in range(2):
        reconciler.bodies[(NS, NAME)] = api.objects[("embeddingfinetunes", NS, NAME)]
        asyncio.run(reconciler.reconcile((NS, NAME)))
    assert api.created("jobs") == [job]
    assert _status(api)["stages"]["sdg"]["message"] == f"Job {job} is pending"
    before = list(api.calls)
    asyncio.run(reconciler.reconcile((NS, NAME)))
    assert not [c for c in api.calls[len(before):] if c[0] in ("patch", "create")]


def test_a_finished_job_moves_the_chain_on_with_its_termination_summary():
    reconciler, api = _setup()
    asyncio.run(reconciler.reconcile((NS, NAME)))
    [sdg] = api.created("jobs")
    pod = {"metadata": {"name": f"{sdg}-x", "namespace": NS, "labels": {"job-name": sdg},
                        "ownerReferences": [{"kind": "Job", "name": sdg, "uid": f"{sdg}-uid", "controller": True}]},
           "status": {"containerStatuses": [{"name": "stage", "state": {"terminated": {
               "exitCode": 0, "finishedAt": "2026-01-01T00:00:00Z",
               "message": '{"summary": {"chunks": 1500, "questions": 600}, "durationSeconds": 12.5}'}}}]}}
    api.objects[("pods", NS, pod["metadata"]["name"])] = pod
    reconciler.jobs_index = {(NS, NAME): [_job_obs(sdg, "sdg", "Succeeded", attempts=1)]}
    reconciler.bodies[(NS, NAME)] = api.objects[("embeddingfinetunes", NS, NAME)]
    asyncio.run(reconciler.reconcile((NS, NAME)))
    status = _status(api)
    assert status["stages"]["sdg"]["phase"] == "Succeeded"
    assert status["stages"]["sdg"]["summary"] == STAGE_SUMMARIES["sdg"]
    assert status["stages"]["sdg"]["durationSeconds"] == 12.5
    assert status["currentStage"] == "prep" and api.created("jobs")[-1].startswith("demo-prep-")


def _reconcile_with_waiting_pod(reconciler: Reconciler, api: MemoryApi, waiting: tuple) -> tuple[dict, dict]:
    """Reconcile once with the Kopf pod index holding `waiting` (pod, stage, reason, message): the status and its
    Degraded condition."""
    reconciler.pods_index = {(NS, NAME): [waiting]}
    reconciler.bodies[(NS, NAME)] = api.objects[("embeddingfinetunes", NS, NAME)]
    asyncio.run(reconciler.reconcile((NS, NAME)))
    status = _status(api)
    return status, next(c for c in status["conditions"] if c["type"] == "Degraded")


def test_a_pod_waiting_for_a_missing_secret_gives_secret_not_found_without_reading_secrets():
    reconciler, api = _setup()
    del api.objects[("secrets", NS, "llm-api")]
    asyncio.run(reconciler.reconcile((NS, NAME)))
    [sdg] = api.created("jobs")  # nothing blocks the Job: the operator cannot (and does not) read Secrets
    assert not [c for c in api.calls if "secrets" in str(c)]
    # The kubelet reports the pod waiting in CreateContainerConfigError (the Kopf pod index holds it).
    status, cond = _reconcile_with_waiting_pod(reconciler, api, (f"{sdg}-x", "sdg", "CreateContainerConfigError",
                                                                 'secret "llm-api" not found'))
    assert (status["phase"], cond["status"], cond["reason"]) == ("Failed", "True", "SecretNotFound")
    assert 'secret "llm-api" not found' in cond["message"] and "spec.sdg.apiKeySecretRef" in cond["message"]
    # The Secret appears, the pod starts: the condition clears.
    reconciler.pods_index = {(NS, NAME): []}
    reconciler.bodies[(NS, NAME)] = api.objects[("embeddingfinetunes", NS, NAME)]
    asyncio.run(reconciler.reconcile((NS, NAME)))
    cond = next(c for c in _status(api)["conditions"] if c["type"] == "Degraded")
    assert cond["reason"] != "SecretNotFound"


def _waiting(reason: str, message: str) -> dict:
    return {"containerStatuses": [{"name": "stage", "state": {"waiting": {"reason": reason, "message": message}}}]}


def test_which_waiting_pods_block_a_resource():
    from eft.controller.manifests import LABEL_RESOURCE, LABEL_STAGE

    stage = {LABEL_RESOURCE: NAME, LABEL_STAGE: "train"}
    server = {LABEL_RESOURCE: NAME}
    pull = _waiting("ImagePullBackOff", 'Back-off pulling image "registry/eft:typo"')
    assert blocked_pod("p", stage, pull) == ("p", "train", "ImagePullBackOff",
                                             'Back-off pulling image "registry/eft:typo"')
    assert blocked_pod("p", stage, _waiting("ErrImagePull", "429 Too Many Requests")) is None  # may pass
    assert blocked_pod("p", server, pull) is None  # the server's rollout reports its own image problems
    secret = _waiting("CreateContainerConfigError", 'secret "hf" not found')
    assert blocked_pod("p", server, secret) == ("p", "server", "CreateContainerConfigError", 'secret "hf" not found')
    assert blocked_pod("p", stage, _waiting("ContainerCreating", "")) is None
    assert blocked_pod("p", stage, {}) is None


def test_a_stage_pod_whose_image_cannot_be_pulled_is_reported_and_a_fixed_image_reaches_it():
    reconciler, api = _setup()
    asyncio.run(reconciler.reconcile((NS, NAME)))
    [sdg] = api.created("jobs")
    stamp = api.objects[("jobs", NS, sdg)]["metadata"]["annotations"]["finetune.embeddings.io/spec-hash"]
    reconciler.jobs_index = {(NS, NAME): [_job_obs(sdg, "sdg", "Pending", ready=0, spec_hash=stamp)]}
    status, cond = _reconcile_with_waiting_pod(reconciler, api,
                                               (f"{sdg}-x", "sdg", "ImagePullBackOff", 'pull access denied for "p:1"'))
    assert (status["phase"], cond["status"], cond["reason"]) == ("Failed", "True", "ImagePullBackOff")
    assert 'pull access denied for "p:1"' in cond["message"] and "spec.runtime.stages.sdg.image" in cond["message"]
    assert status["stages"]["sdg"]["reason"] == "ImagePullBackOff"
    # the user fixes the image: planning still runs, so the Job that never started is replaced (JobOutdated)
    body = api.objects[("embeddingfinetunes", NS, NAME)]
    body["spec"]["runtime"]["image"] = "registry/eft:fixed"
    body["metadata"]["generation"] = 2
    _reconcile_with_waiting_pod(reconciler, api, (f"{sdg}-x", "sdg", "ImagePullBackOff", "still backing off"))
    assert api.did("delete", "jobs") == [sdg]
    # a first ErrImagePull (a registry's passing rate limit) is not a failure yet
    reconciler2, api2 = _setup()
    asyncio.run(reconciler2.reconcile((NS, NAME)))
    [sdg2] = api2.created("jobs")
    status, cond = _reconcile_with_waiting_pod(reconciler2, api2, (f"{sdg2}-x", "sdg", "ErrImagePull", "429"))
    assert status["phase"] == "Running" and cond["status"] == "False"


def test_workers_reconcile_each_enqueued_key_once():
    reconciler, api = _setup()

    async def run() -> None:
        reconciler.start()
        for _ in range(5):
            reconciler.enqueue((NS, NAME))
        for _ in range(100):
            await asyncio.sleep(0.01)
            if api.created("jobs") and not reconciler.queued and not reconciler.processing:
                break
        await reconciler.stop()

    asyncio.run(run())
    assert len([c for c in api.calls if c[0] == "patch"]) == 1


def test_the_reconciler_imports_no_kopf():
    code = "import sys, eft.controller.reconciler; sys.exit(1 if 'kopf' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ----------------------------------------------------------------------------- lifecycle truths (issue 13)
def _again(reconciler: Reconciler, api: MemoryApi) -> dict:
    """Reconcile once more from a copy of the stored body (as the next watch event delivers it); the new status."""
    reconciler.bodies[(NS, NAME)] = copy.deepcopy(api.objects[("embeddingfinetunes", NS, NAME)])
    asyncio.run(reconciler.reconcile((NS, NAME)))
    return _status(api)


def _events(api: MemoryApi) -> list[tuple[str, str]]:
    return [(o["type"], o["reason"]) for (p, _, _), o in api.objects.items() if p == "events"]


def test_children_of_an_earlier_incarnation_are_neither_counted_nor_adopted():
    """Re-created under the same name (uid u-2) while the old sdg Job (owner u-1, succeeded) and the old
    workspace claim still exist: nothing is counted or created; the status says what it waits for."""
    reconciler, api = _setup()
    body = api.objects[("embeddingfinetunes", NS, NAME)]
    body["metadata"]["uid"] = "u-2"
    reconciler.bodies[(NS, NAME)] = body
    h = plan_hashes(parse_resource(body).spec)
    old_job = f"{NAME}-sdg-{h['sdg'][:8]}"
    reconciler.jobs_index = {(NS, NAME): [_job_obs(old_job, "sdg", "Succeeded", owner_uid="u-1", attempts=1)]}
    api.objects[("persistentvolumeclaims", NS, "demo-workspace")] = {
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": "demo-workspace", "namespace": NS,
                     "ownerReferences": [{"kind": "EmbeddingFinetune", "uid": "u-1", "controller": True}]}}
    status = _again(reconciler, api)
    assert not api.created("jobs") and not api.created("persistentvolumeclaims")
    assert status["phase"] == "Pending" and not status.get("stages")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["reason"] == "WaitingForPreviousChildren"
    assert f"Job {old_job}" in ready["message"] and "PersistentVolumeClaim demo-workspace" in ready["message"]
    # The garbage collector removes them: the new incarnation starts clean, from sdg.
    reconciler.jobs_index = {(NS, NAME): []}
    del api.objects[("persistentvolumeclaims", NS, "demo-workspace")]
    status = _again(reconciler, api)
    assert api.created("persistentvolumeclaims") == ["demo-workspace"] and api.created("jobs") == [old_job]
    assert status["stages"]["sdg"]["phase"] == "Running"


def test_a_pod_of_an_earlier_job_with_the_same_name_is_not_read():
    reconciler, api = _setup()
    asyncio.run(reconciler.reconcile((NS, NAME)))
    [sdg] = api.created("jobs")
    stale = {"metadata": {"name": f"{sdg}-old", "namespace": NS, "labels": {"job-name": sdg},
                          "ownerReferences": [{"kind": "Job", "uid": "earlier-job", "controller": True}]},
             "status": {"containerStatuses": [{"name": "stage", "state": {"terminated": {
                 "exitCode": 0, "finishedAt": "2026-01-01T00:00:00Z", "message": '{"summary": {"stale": 1}}'}}}]}}
    api.objects[("pods", NS, f"{sdg}-old")] = stale
    reconciler.jobs_index = {(NS, NAME): [_job_obs(sdg, "sdg", "Succeeded", attempts=1)]}
    status = _again(reconciler, api)
    # Its own pod is gone: the Job is re-run to re-read sdg/_SUCCESS.json, not the stale pod's summary taken.
    assert status["stages"]["sdg"]["reason"] == "RereadingSummary" and "summary" not in status["stages"]["sdg"]
    assert api.did("delete", "jobs") == [sdg]


def test_a_result_whose_pod_is_gone_is_reread_by_running_the_stage_again():
    """eval succeeded but its pod went before the message was read: the Job is deleted and created again (its
    skip path re-emits the summary from eval/_SUCCESS.json), never a permanent SummaryMissing."""
    reconciler, api = _setup()
    body = api.objects[("embeddingfinetunes", NS, NAME)]
    h = plan_hashes(parse_resource(body).spec)
    body["status"] = {"stages": {s: {"phase": "Succeeded", "job": f"{NAME}-{s}-{h[s][:8]}", "configHash": h[s],
                                     "summary": STAGE_SUMMARIES[s]} for s in ("sdg", "prep", "train")}}
    ev = f"{NAME}-eval-{h['eval'][:8]}"
    reconciler.jobs_index = {(NS, NAME): [_job_obs(ev, "eval", "Succeeded", attempts=1)]}
    status = _again(reconciler, api)
    assert status["stages"]["eval"]["reason"] == "RereadingSummary" and status["phase"] == "Running"
    assert api.did("delete", "jobs") == [ev] and not api.created("jobs")
    reconciler.jobs_index = {(NS, NAME): []}  # the deletion went through
    status = _again(reconciler, api)
    assert api.created("jobs") == [ev] and status["stages"]["eval"]["phase"] == "Running"
    # An old status that already says SummaryMissing is re-read the same way once its Job is deleted.
    body["status"]["stages"]["eval"] = {"phase": "Succeeded", "job": ev, "configHash": h["eval"],
                                        "reason": "SummaryMissing", "summary": {}}
    api.objects.pop(("jobs", NS, ev))
    status = _again(reconciler, api)
    assert api.created("jobs") == [ev, ev] and status["stages"]["eval"]["phase"] == "Running"


def test_a_recorded_failure_stays_failed_when_its_job_is_deleted_until_a_spec_change_or_retry():
    reconciler, api = _setup()
    asyncio.run(reconciler.reconcile((NS, NAME)))
    [sdg] = api.created("jobs")
    reconciler.jobs_index = {(NS, NAME): [_job_obs(sdg, "sdg", "Failed", attempts=3, reason="BackoffLimitExceeded",
                                                   message="Job has reached the specified backoff limit")]}
    failed = _again(reconciler, api)
    assert failed["phase"] == "Failed" and failed["stages"]["sdg"]["generation"] == 1
    warnings = _events(api).count(("Warning", "StageFailed"))
    # A TTL (or a person) deletes the failed Job: still failed, same reason and message, no new Job or Event.
    reconciler.jobs_index = {(NS, NAME): []}
    api.objects.pop(("jobs", NS, sdg))
    for _ in range(3):
        again = _again(reconciler, api)
    assert api.created("jobs") == [sdg]
    assert again["stages"]["sdg"] == failed["stages"]["sdg"] and again["conditions"] == failed["conditions"]
    assert _events(api).count(("Warning", "StageFailed")) == warnings
    # The documented retry annotation: one new Job.
    body = api.objects[("embeddingfinetunes", NS, NAME)]
    body["metadata"]["annotations"] = {"finetune.embeddings.io/retry": "1"}
    status = _again(reconciler, api)
    assert api.created("jobs") == [sdg, sdg] and status["stages"]["sdg"]["phase"] == "Running"
    created = api.objects[("jobs", NS, sdg)]
    assert created["metadata"]["annotations"]["finetune.embeddings.io/retry"] == "1"
    assert created["spec"]["ttlSecondsAfterFinished"] == 7 * 24 * 3600


def _served(reconciler: Reconciler, api: MemoryApi, **deploy: Any) -> tuple[dict, str]:
    """A resource whose stages through export are recorded, reconciled until its Deployment exists."""
    body = api.objects[("embeddingfinetunes", NS, NAME)]
    body["spec"]["deploy"] = {"verification": {"enabled": False}, **deploy}
    h = plan_hashes(parse_resource(body).spec)
    body["status"] = {"stages": {s: {"phase": "Succeeded", "job": f"{NAME}-{s}-{h[s][:8]}", "configHash": h[s],
                                     "summary": STAGE_SUMMARIES[s]} for s in ("sdg", "prep", "train", "eval", "export")}}
    _again(reconciler, api)
    [dn] = api.created("deployments")
    return api.objects[("deployments", NS, dn)], dn


def _observe_live(reconciler: Reconciler, dep: dict, **status: Any) -> None:
    dep["metadata"].update(uid="d-1", generation=dep["metadata"].get("generation", 1))
    dep["status"] = {"observedGeneration": dep["metadata"]["generation"], **status}
    reconciler.deployments_index = {(NS, NAME): [observe_deployment(dep)]}


def test_the_server_deployment_follows_replicas_image_and_resources_and_ready_counts_the_spec():
    reconciler, api = _setup()
    dep, dn = _served(reconciler, api)
    n = 1
    _observe_live(reconciler, dep, replicas=n, updatedReplicas=n, readyReplicas=n, availableReplicas=n,
                  conditions=[{"type": "Available", "status": "True"}])
    status = _again(reconciler, api)
    assert (status["phase"], status["stages"]["deploy"]["message"]) == ("Succeeded", "1/1 replicas available")
    # Edit replicas, image and resources: same Deployment name (no 409-and-done), patched in place.
    body = api.objects[("embeddingfinetunes", NS, NAME)]
    body["spec"]["deploy"].update(replicas=3, image="server:2", resources={"limits": {"memory": "6Gi"}})
    body["metadata"]["generation"] = 2
    status = _again(reconciler, api)
    assert api.did("patch", "deployments") == [dn] and api.created("deployments") == [dn]
    live = api.objects[("deployments", NS, dn)]
    container = live["spec"]["template"]["spec"]["containers"][0]
    assert live["spec"]["replicas"] == 3 and container["image"] == "server:2"
    assert container["resources"]["limits"]["memory"] == "6Gi"
    # Until three replicas are available, Ready is False and the message counts what the spec asks for.
    live["metadata"]["generation"] = 2
    _observe_live(reconciler, live, replicas=3, updatedReplicas=3, readyReplicas=1, availableReplicas=1,
                  conditions=[{"type": "Available", "status": "True"}])
    status = _again(reconciler, api)
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False" and "1/3 replicas available" in ready["message"]
    assert api.did("patch", "deployments") == [dn]  # in sync now: no second patch


def test_an_edited_port_reaches_the_service():
    reconciler, api = _setup()
    _served(reconciler, api)
    body = api.objects[("embeddingfinetunes", NS, NAME)]
    body["spec"]["deploy"]["port"] = 9000
    _again(reconciler, api)
    assert api.objects[("services", NS, "demo-server")]["spec"]["ports"][0]["port"] == 9000
    assert api.did("patch", "services") == ["demo-server"]


def test_a_deployment_that_gives_up_is_degraded_with_its_own_reason_and_a_warning():
    reconciler, api = _setup()
    dep, dn = _served(reconciler, api)
    message = f'ReplicaSet "{dn}-6b8f" has timed out progressing.'
    _observe_live(reconciler, dep, replicas=1, updatedReplicas=1, conditions=[
        {"type": "Available", "status": "False", "reason": "MinimumReplicasUnavailable"},
        {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded", "message": message}])
    status = _again(reconciler, api)
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert status["phase"] == "Failed" and degraded["status"] == "True"
    assert degraded["reason"] == "ProgressDeadlineExceeded" and message in degraded["message"]
    assert ("Warning", "ProgressDeadlineExceeded") in _events(api)


def test_crash_looping_server_pods_are_degraded_with_the_pod_reason():
    reconciler, api = _setup()
    dep, dn = _served(reconciler, api)
    _observe_live(reconciler, dep, replicas=1, updatedReplicas=1, unavailableReplicas=1,
                  conditions=[{"type": "Progressing", "status": "True", "reason": "ReplicaSetUpdated"}])
    labels = dep["spec"]["template"]["metadata"]["labels"]
    api.objects[("pods", NS, f"{dn}-x")] = {"metadata": {"name": f"{dn}-x", "namespace": NS, "labels": labels},
                                            "status": {"containerStatuses": [{
                                                "name": "server", "ready": False, "restartCount": 5,
                                                "state": {"waiting": {"reason": "CrashLoopBackOff",
                                                                      "message": "back-off 2m40s"}},
                                                "lastState": {"terminated": {"exitCode": 2,
                                                                             "message": "no model in /workspace"}}}]}}
    status = _again(reconciler, api)
    degraded = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert degraded["reason"] == "CrashLoopBackOff" and "no model in /workspace" in degraded["message"]
    assert status["stages"]["deploy"]["phase"] == "Failed"


def test_a_job_that_has_not_started_is_replaced_when_the_spec_changes_how_it_runs():
    """A stage Job whose pods never started (e.g. unschedulable) would never pick up edited resources: it is
    replaced. One that runs is left alone (its pod template is immutable; the next Job gets the new settings)."""
    reconciler, api = _setup()
    asyncio.run(reconciler.reconcile((NS, NAME)))
    [sdg] = api.created("jobs")
    stamp = api.objects[("jobs", NS, sdg)]["metadata"]["annotations"]["finetune.embeddings.io/spec-hash"]
    body = api.objects[("embeddingfinetunes", NS, NAME)]
    body["spec"]["runtime"]["stages"] = {"sdg": {"resources": {"requests": {"memory": "2Gi"}}}}
    body["metadata"]["generation"] = 2
    reconciler.jobs_index = {(NS, NAME): [_job_obs(sdg, "sdg", "Running", ready=1, spec_hash=stamp)]}
    _again(reconciler, api)
    assert not api.did("delete", "jobs")
    reconciler.jobs_index = {(NS, NAME): [_job_obs(sdg, "sdg", "Running", ready=0, spec_hash=stamp)]}
    status = _again(reconciler, api)
    assert api.did("delete", "jobs") == [sdg] and status["stages"]["sdg"]["reason"] == "JobOutdated"
    reconciler.jobs_index = {(NS, NAME): []}
    _again(reconciler, api)
    job = api.objects[("jobs", NS, sdg)]
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["memory"] == "2Gi"
    assert job["metadata"]["annotations"]["finetune.embeddings.io/spec-hash"] != stamp


def _claim(api: MemoryApi) -> dict:
    return api.objects[("persistentvolumeclaims", NS, "demo-workspace")]


def _resize(reconciler: Reconciler, api: MemoryApi, size: str) -> dict:
    """The resource's spec.storage.size edited (a new generation), then one reconcile; the status."""
    body = api.objects[("embeddingfinetunes", NS, NAME)]
    body["spec"]["storage"]["size"] = size
    body["metadata"]["generation"] += 1
    return _again(reconciler, api)


def _event_messages(api: MemoryApi, reason: str) -> list[str]:
    return [o["message"] for (p, _, _), o in api.objects.items() if p == "events" and o["reason"] == reason]


def _refusing_claim_patches(api: MemoryApi, status: int, message) -> list[str]:
    """Claim patches answered with `status` and `message(n)` (n: the refusal's number) from now on; the names."""
    patch, refused = api.patch, []

    async def refuse(res, namespace, name, body, sub=None):
        if res.plural == "persistentvolumeclaims":
            refused.append(name)
            raise kube.ApiError(status, "Refused", message(len(refused)))
        return await patch(res, namespace, name, body, sub)

    api.patch = refuse
    return refused


def test_an_edited_storage_size_grows_the_claim_and_a_smaller_one_is_refused_once():
    reconciler, api = _setup()
    asyncio.run(reconciler.reconcile((NS, NAME)))
    assert _claim(api)["spec"]["resources"]["requests"]["storage"] == "20Gi"
    status = _resize(reconciler, api, "40Gi")
    assert _claim(api)["spec"]["resources"]["requests"]["storage"] == "40Gi"
    assert api.did("patch", "persistentvolumeclaims") == ["demo-workspace"]
    assert ("Normal", "ClaimExpansionRequested") in _events(api)
    assert "grow from 20Gi to 40Gi" in _event_messages(api, "ClaimExpansionRequested")[0]
    assert status["phase"] == "Running"
    # The same size written another way asks for nothing; a smaller one leaves the claim with one Warning,
    # and the resyncs after it neither patch nor warn again.
    _resize(reconciler, api, "40960Mi")
    _resize(reconciler, api, "10Gi")
    for _ in range(2):
        reconciler.ensured.clear()  # what every resync does
        status = _again(reconciler, api)
    assert api.did("patch", "persistentvolumeclaims") == ["demo-workspace"]
    assert _claim(api)["spec"]["resources"]["requests"]["storage"] == "40Gi"
    [message] = _event_messages(api, "ClaimShrinkUnsupported")
    assert "spec.storage.size 10Gi is not above" in message and "keeps its request of 40Gi" in message
    assert status["phase"] == "Running" and status["currentStage"] == "sdg"
    assert len(set(api.created("jobs"))) == 1  # the workspace's size is no stage input: nothing re-runs


def test_a_size_above_the_capacity_retreats_from_an_expansion_that_did_not_finish():
    """Asked for 100Gi, the claim is still 20Gi (the driver could not grow it): 30Gi is patched on (Kubernetes
    >= 1.32 accepts a request lowered to above the capacity), 20Gi is a shrink."""
    reconciler, api = _setup()
    asyncio.run(reconciler.reconcile((NS, NAME)))
    _resize(reconciler, api, "100Gi")
    _claim(api)["status"] = {"phase": "Bound", "capacity": {"storage": "20Gi"}}
    _resize(reconciler, api, "30Gi")
    assert _claim(api)["spec"]["resources"]["requests"]["storage"] == "30Gi"
    assert "request 30Gi instead of 100Gi, above its capacity 20Gi" in _event_messages(api, "ClaimExpansionRequested")[1]
    _resize(reconciler, api, "20Gi")
    assert _claim(api)["spec"]["resources"]["requests"]["storage"] == "30Gi"
    assert "not above PersistentVolumeClaim demo-workspace's capacity 20Gi" in _event_messages(
        api, "ClaimShrinkUnsupported")[0]


def test_a_refused_expansion_is_a_warning_with_the_api_servers_words_and_is_tried_again_at_resync():
    reconciler, api = _setup()
    asyncio.run(reconciler.reconcile((NS, NAME)))
    patch = api.patch
    # a quota's message changes with the namespace's usage: still one Warning for one size
    refusals = _refusing_claim_patches(api, 403, lambda n: f'persistentvolumeclaims "demo-workspace" is forbidden: '
                                                            f"exceeded quota: q, used: requests.storage={n}0Gi")
    status = _resize(reconciler, api, "40Gi")
    assert _claim(api)["spec"]["resources"]["requests"]["storage"] == "20Gi"
    assert status["phase"] == "Running" and status["currentStage"] == "sdg"
    [message] = _event_messages(api, "ClaimExpansionRefused")
    assert "cannot go from 20Gi to 40Gi" in message and "exceeded quota" in message
    _again(reconciler, api)  # no resync yet: not tried again
    reconciler.ensured.clear()
    _again(reconciler, api)  # a resync tries again, without a second Warning
    assert refusals == ["demo-workspace", "demo-workspace"]
    assert _events(api).count(("Warning", "ClaimExpansionRefused")) == 1
    _resize(reconciler, api, "50Gi")  # another size is another outcome
    assert _events(api).count(("Warning", "ClaimExpansionRefused")) == 2
    api.patch = patch  # the quota was raised
    reconciler.ensured.clear()
    _again(reconciler, api)
    assert _claim(api)["spec"]["resources"]["requests"]["storage"] == "50Gi"
    assert ("Normal", "ClaimExpansionRequested") in _events(api)


def test_an_api_server_fault_on_the_claim_neither_loses_the_status_nor_stops_trying():
    reconciler, api = _setup()
    asyncio.run(reconciler.reconcile((NS, NAME)))
    patch = api.patch
    faults = _refusing_claim_patches(api, 500, lambda n: 'Internal error occurred: failed calling webhook "pvc.x"')
    body = api.objects[("embeddingfinetunes", NS, NAME)]
    body["spec"]["storage"]["size"] = "40Gi"
    body["metadata"]["generation"] += 1
    body.pop("status")
    status = _again(reconciler, api)  # no exception: the status is written
    assert status["observedGeneration"] == body["metadata"]["generation"] and status["currentStage"] == "sdg"
    assert not [r for _, r in _events(api) if r.startswith("Claim")]
    _again(reconciler, api)  # not marked done: the next reconcile tries again
    assert faults == ["demo-workspace", "demo-workspace"]
    api.patch = patch
    _again(reconciler, api)
    assert _claim(api)["spec"]["resources"]["requests"]["storage"] == "40Gi"


def test_a_claim_of_an_earlier_incarnation_or_named_by_the_user_is_never_resized():
    # An earlier resource of the same name still owns demo-workspace (uid u-0): reported, never patched.
    reconciler, api = _setup()
    api.objects[("persistentvolumeclaims", NS, "demo-workspace")] = {
        "metadata": {"name": "demo-workspace", "namespace": NS, "ownerReferences": [
            {"kind": "EmbeddingFinetune", "name": NAME, "uid": "u-0", "controller": True}]},
        "spec": {"resources": {"requests": {"storage": "5Gi"}}}}
    asyncio.run(reconciler.reconcile((NS, NAME)))
    progressing = next(c for c in _status(api)["conditions"] if c["type"] == "Progressing")
    assert progressing["reason"] == "WaitingForPreviousChildren", progressing
    assert "PersistentVolumeClaim demo-workspace" in progressing["message"]
    _resize(reconciler, api, "40Gi")
    assert api.did("patch", "persistentvolumeclaims") == []
    assert _claim(api)["spec"]["resources"]["requests"]["storage"] == "5Gi"
    # A claim named in spec.storage.claimName is the user's, even one that names this resource as its owner.
    reconciler, api = _setup(storage={"claimName": "team-ws", "size": "20Gi"})
    api.objects[("persistentvolumeclaims", NS, "team-ws")] = {
        "metadata": {"name": "team-ws", "namespace": NS, "ownerReferences": [
            {"kind": "EmbeddingFinetune", "name": NAME, "uid": "u-1", "controller": True}]},
        "spec": {"resources": {"requests": {"storage": "5Gi"}}}}
    asyncio.run(reconciler.reconcile((NS, NAME)))
    _resize(reconciler, api, "40Gi")
    assert api.did("patch", "persistentvolumeclaims") == [] and api.created("persistentvolumeclaims") == []
    assert api.objects[("persistentvolumeclaims", NS, "team-ws")]["spec"]["resources"]["requests"]["storage"] == "5Gi"


class RefusingApi(MemoryApi):
    """The API server answering every Job create with 422, as for a request above its limit."""

    async def create(self, res: Res, namespace: str, body: dict) -> tuple[dict | None, bool]:
        if res.plural == "jobs":
            self.calls.append(("create", res.plural, body["metadata"]["name"]))
            raise kube.ApiError(422, "Invalid", 'Job.batch "x" is invalid: spec.template.spec.containers[0].resources'
                                               '.requests: Invalid value: "24Gi": must be less than or equal to '
                                               'memory limit of 16Gi')
        return await super().create(res, namespace, body)


def test_a_child_the_api_server_refuses_is_on_the_status_with_its_words_and_retried():
    reconciler, memory = _setup()
    api = RefusingApi()
    api.objects, reconciler.api = memory.objects, api
    with pytest.raises(ChildRejected):  # the worker backs off and retries
        asyncio.run(reconciler.reconcile((NS, NAME)))
    status = _status(api)
    assert status["phase"] == "Failed"
    conds = {c["type"]: (c["status"], c["reason"], c["message"]) for c in status["conditions"]}
    assert conds["Degraded"][:2] == ("True", "ChildRejected")
    assert "must be less than or equal to memory limit of 16Gi" in conds["Degraded"][2]
    sdg = status["stages"]["sdg"]
    assert sdg["phase"] == "Pending" and sdg["reason"] == "ChildRejected" and "422 Invalid" in sdg["message"]
    assert "ChildRejected" in [o["reason"] for (p, _, _), o in api.objects.items() if p == "events"]


def test_a_full_quota_on_an_existing_child_is_no_refusal():
    """A ResourceQuota that is fully used answers 403 even when the object exists (the quota check comes before
    AlreadyExists): a serving resource must stay Ready through its resyncs, not turn ChildRejected."""
    reconciler, api = _setup()
    dep, _ = _served(reconciler, api)
    _observe_live(reconciler, dep, replicas=1, updatedReplicas=1, readyReplicas=1, availableReplicas=1,
                  conditions=[{"type": "Available", "status": "True"}])
    assert _again(reconciler, api)["phase"] == "Succeeded"
    create = api.create

    async def quota_full(res, namespace, body):
        if res.plural in ("services", "persistentvolumeclaims", "configmaps"):
            raise kube.ApiError(403, "Forbidden", f'{res.plural} "{body["metadata"]["name"]}" is forbidden: '
                                                  "exceeded quota: q, requested: 1, used: 1, limited: 1")
        return await create(res, namespace, body)

    api.create = quota_full
    reconciler.ensured.clear()  # what every resync does
    status = _again(reconciler, api)
    assert status["phase"] == "Succeeded"
    assert not [c for c in status["conditions"] if c["reason"] == "ChildRejected"]


def test_a_job_running_for_an_earlier_spec_is_deleted_in_the_foreground():
    """The API server keeps a Job deleted in the foreground until its pods are gone, so the stage (waiting while
    the Job exists) never starts a new Job while an old pod still writes the stage's folder."""
    reconciler, api = _setup()
    old = f"{NAME}-sdg-00000000"
    reconciler.jobs_index = {(NS, NAME): [_job_obs(old, "sdg", "Running", ready=1)]}
    status = _again(reconciler, api)
    assert api.did("delete", "jobs") == [old] and api.propagation[old] == "Foreground"
    assert not api.created("jobs") and status["stages"]["sdg"]["reason"] == "StoppingOutdatedJob"
