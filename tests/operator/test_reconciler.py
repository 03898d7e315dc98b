"""The reconciler on its own: no Kopf, no cluster, an in-memory API that records the calls, and children
observed through plain dictionaries (what Kopf's indices hold in the running operator)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

from eft.controller.config import OperatorConfig
from eft.controller.kube import Res
from eft.controller.plan import JobObs
from eft.controller.reconciler import Reconciler
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
        for plural, obj in objects:
            self.objects[(plural, obj["metadata"].get("namespace", NS), obj["metadata"]["name"])] = obj

    async def get(self, res: Res, namespace: str, name: str) -> dict | None:
        self.calls.append(("get", res.plural, name))
        return self.objects.get((res.plural, namespace, name))

    async def list(self, res: Res, namespace: str | None, label_selector: str | None = None) -> list[dict]:
        self.calls.append(("list", res.plural, label_selector or ""))
        key, _, value = (label_selector or "").partition("=")
        return [o for (p, ns, _), o in self.objects.items() if p == res.plural and ns == namespace
                and (not key or (o["metadata"].get("labels") or {}).get(key) == value)]

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

    async def delete(self, res: Res, namespace: str, name: str) -> bool:
        self.calls.append(("delete", res.plural, name))
        return self.objects.pop((res.plural, namespace, name), None) is not None

    async def close(self) -> None:
        pass

    def created(self, plural: str) -> list[str]:
        return [n for verb, p, n in self.calls if verb == "create" and p == plural]


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
    reconciler.jobs_index = {(NS, NAME): [JobObs(name=job, stage="sdg", config_hash="", generation=1,
                                                 state="Pending")]}
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
    pod = {"metadata": {"name": f"{sdg}-x", "namespace": NS, "labels": {"job-name": sdg}},
           "status": {"containerStatuses": [{"name": "stage", "state": {"terminated": {
               "exitCode": 0, "finishedAt": "2026-01-01T00:00:00Z",
               "message": '{"summary": {"chunks": 1500, "questions": 600}, "durationSeconds": 12.5}'}}}]}}
    api.objects[("pods", NS, pod["metadata"]["name"])] = pod
    reconciler.jobs_index = {(NS, NAME): [JobObs(name=sdg, stage="sdg", config_hash="", generation=1,
                                                 state="Succeeded", attempts=1)]}
    reconciler.bodies[(NS, NAME)] = api.objects[("embeddingfinetunes", NS, NAME)]
    asyncio.run(reconciler.reconcile((NS, NAME)))
    status = _status(api)
    assert status["stages"]["sdg"]["phase"] == "Succeeded"
    assert status["stages"]["sdg"]["summary"] == STAGE_SUMMARIES["sdg"]
    assert status["stages"]["sdg"]["durationSeconds"] == 12.5
    assert status["currentStage"] == "prep" and api.created("jobs")[-1].startswith("demo-prep-")


def test_a_pod_waiting_for_a_missing_secret_gives_secret_not_found_without_reading_secrets():
    reconciler, api = _setup()
    del api.objects[("secrets", NS, "llm-api")]
    asyncio.run(reconciler.reconcile((NS, NAME)))
    [sdg] = api.created("jobs")  # nothing blocks the Job: the operator cannot (and does not) read Secrets
    assert not [c for c in api.calls if "secrets" in str(c)]
    # The kubelet reports the pod waiting in CreateContainerConfigError (the Kopf pod index holds it).
    reconciler.pods_index = {(NS, NAME): [(f"{sdg}-x", "sdg", 'secret "llm-api" not found')]}
    reconciler.bodies[(NS, NAME)] = api.objects[("embeddingfinetunes", NS, NAME)]
    asyncio.run(reconciler.reconcile((NS, NAME)))
    status = _status(api)
    cond = next(c for c in status["conditions"] if c["type"] == "Degraded")
    assert (status["phase"], cond["status"], cond["reason"]) == ("Failed", "True", "SecretNotFound")
    assert 'secret "llm-api" not found' in cond["message"] and "spec.sdg.apiKeySecretRef" in cond["message"]
    # The Secret appears, the pod starts: the condition clears.
    reconciler.pods_index = {(NS, NAME): []}
    reconciler.bodies[(NS, NAME)] = api.objects[("embeddingfinetunes", NS, NAME)]
    asyncio.run(reconciler.reconcile((NS, NAME)))
    cond = next(c for c in _status(api)["conditions"] if c["type"] == "Degraded")
    assert cond["reason"] != "SecretNotFound"


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
