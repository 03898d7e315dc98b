"""`kubectl apply` of an EmbeddingFinetune on the real control plane: the whole chain sdg → prep → train → eval →
export → deploy → verify to Ready=True, with the operator SIGKILLed mid-chain, printer columns, the Argo CD
health check on the live object, an epochs edit re-running train onward, and garbage collection of every child.

The tests of this module run in order on one resource (each stage is real work on CPU: keep them few)."""

from __future__ import annotations

import signal
import sys

import pytest
import yaml

from eftcluster_support import E2E_NS, EFT_PATH, OPERATOR_NS, PLURAL, ROOT, tiny_resource, wait_for

sys.path.insert(0, str(ROOT / "tests" / "packaging"))
from eftpkg_support import run_health_lua  # noqa: E402 - the packaging tests' Lua runner (real Lua 5.1, lupa)

NAME = "chain"
STAGES = ("sdg", "prep", "train", "eval", "export", "verify")
HEALTH_LUA = (ROOT / "argocd" / "health.lua").read_text()
#: ONNX export on (fp32 only, to stay quick); promotion always (a few CPU steps on a handful of test questions need
#: not beat the base model: these tests are about the chain on the cluster, not about quality).
CHAIN = {"export": {"onnx": {"enabled": True, "int8": False}},
         "evaluation": {"promotion": {"minRelativeImprovement": -1.0, "minTestQueries": 1}}}


def health(kube) -> str:
    return run_health_lua(HEALTH_LUA, kube.eft(E2E_NS, NAME))["status"]


def stage_jobs(kube) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for job in kube.jobs(E2E_NS, NAME):
        stage = job["metadata"]["labels"]["finetune.embeddings.io/stage"]
        out.setdefault(stage, []).append(job["metadata"]["name"])
    return out


@pytest.fixture(scope="module")
def chain(operator_release, corpus_configmap):
    """Apply the resource, SIGKILL the operator while the chain runs, wait for Ready=True."""
    kube = operator_release
    out = kube.apply(tiny_resource(NAME, corpus_configmap, **CHAIN))
    assert f"embeddingfinetune.finetune.embeddings.io/{NAME} created" in out
    seen = {"health_while_running": None, "killed_during": None}

    def running_stage():
        obj = kube.eft(E2E_NS, NAME) or {}
        stage = (obj.get("status") or {}).get("currentStage")
        return stage if stage in ("prep", "train") else None

    seen["killed_during"] = wait_for(running_stage, 600, "the chain to reach prep or train", 0.5,
                                     lambda: kube.describe(E2E_NS, NAME))
    seen["health_while_running"] = health(kube)
    pod = kube.operator_pod()
    assert kube.agent.kill(OPERATOR_NS, pod, signal.SIGKILL) == 1
    ready = kube.wait_ready(E2E_NS, NAME, timeout=1200)
    seen["operator_pod"] = pod
    return kube, ready, seen


def test_apply_runs_every_stage_to_ready(chain):
    kube, obj, _ = chain
    st = obj["status"]
    assert st["phase"] == "Succeeded" and st["observedGeneration"] == obj["metadata"]["generation"]
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["SpecValid"]["status"] == "True"
    assert conds["Degraded"]["status"] == "False" and conds["Progressing"]["status"] == "False"
    for stage in STAGES:
        assert st["stages"][stage]["phase"] == "Succeeded", (stage, st["stages"][stage])
    assert st["stages"]["deploy"]["phase"] == "Succeeded"
    # The stage summaries came from the termination messages the real pods wrote.
    assert st["stages"]["sdg"]["summary"]["questions"] > 0
    assert st["stages"]["train"]["summary"]
    assert set(st["metrics"]["base"]) >= {"ndcg@10"} and set(st["metrics"]["finetuned"]) >= {"ndcg@10"}
    assert "→" in st["metrics"]["ndcg10"]
    assert st["endpoint"] == f"http://{NAME}-server.{E2E_NS}.svc:8000"
    assert st["model"]["claimName"] == f"{NAME}-workspace"


def test_kubectl_get_prints_the_columns(chain):
    kube, obj, _ = chain
    out = kube.kubectl("get", "eft", NAME, "-n", E2E_NS, "-o", "wide").stdout.splitlines()
    header, row = out[0].split(), out[1]
    assert header[:5] == ["NAME", "STAGE", "PHASE", "READY", "NDCG@10"], header
    assert "ENDPOINT" in header and header[-1] == "AGE"
    assert row.split()[0] == NAME and "Succeeded" in row and "True" in row
    assert obj["status"]["metrics"]["ndcg10"].split()[0] in row
    assert obj["status"]["endpoint"] in row


def test_operator_killed_mid_chain_restarted_without_duplicate_jobs(chain):
    kube, _, seen = chain
    assert seen["killed_during"] in ("prep", "train")
    pod = kube.get(f"/api/v1/namespaces/{OPERATOR_NS}/pods/{seen['operator_pod']}")
    operator = next(c for c in pod["status"]["containerStatuses"] if c["name"] == "operator")
    assert operator["restartCount"] >= 1 and operator["lastState"]["terminated"]["exitCode"] == 137
    jobs = stage_jobs(kube)
    assert {s: len(n) for s, n in jobs.items()} == {s: 1 for s in STAGES}, jobs
    for job in kube.jobs(E2E_NS, NAME):
        assert (job["status"].get("succeeded") or 0) == 1 and not job["status"].get("failed"), job["status"]


def test_argocd_health_of_the_live_object(chain):
    kube, _, seen = chain
    assert seen["health_while_running"] == "Progressing"
    assert health(kube) == "Healthy"
    patch = {"spec": {"suspend": True}}
    kube.api.patch(f"{EFT_PATH}/namespaces/{E2E_NS}/{PLURAL}/{NAME}", json=patch,
                   headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()
    wait_for(lambda: health(kube) == "Suspended", 60, "Argo CD health Suspended", 0.5,
             lambda: kube.describe(E2E_NS, NAME))
    patch = {"spec": {"suspend": False}}
    kube.api.patch(f"{EFT_PATH}/namespaces/{E2E_NS}/{PLURAL}/{NAME}", json=patch,
                   headers={"Content-Type": "application/merge-patch+json"}).raise_for_status()
    wait_for(lambda: health(kube) == "Healthy", 120, "Argo CD health Healthy again", 0.5,
             lambda: kube.describe(E2E_NS, NAME))


def test_epochs_edit_reruns_train_onward_only(chain):
    kube, _, _ = chain
    before = stage_jobs(kube)
    doc = tiny_resource(NAME, "tiny-corpus", **CHAIN)
    doc["spec"]["training"]["epochs"] = 2
    kube.apply(doc)
    obj = wait_for(lambda: (o := kube.eft(E2E_NS, NAME)) and o["metadata"]["generation"] >= 2
                   and o["status"].get("observedGeneration") == o["metadata"]["generation"] and o,
                   60, "the edit to be observed")
    generation = obj["metadata"]["generation"]
    ready = kube.wait_ready(E2E_NS, NAME, timeout=900)
    assert ready["status"]["observedGeneration"] == generation
    after = stage_jobs(kube)
    assert after["sdg"] == before["sdg"] and after["prep"] == before["prep"]  # not re-run
    for stage in ("train", "eval", "export", "verify"):
        new = set(after[stage]) - set(before[stage])
        assert len(new) == 1, (stage, before[stage], after[stage])
        assert ready["status"]["stages"][stage]["job"] in new
    deployments = kube.items(f"/apis/apps/v1/namespaces/{E2E_NS}/deployments",
                             f"finetune.embeddings.io/resource={NAME}")
    assert [d["metadata"]["name"] for d in deployments] == [ready["status"]["stages"]["deploy"]["job"]]


def test_operator_log_has_no_forbidden_request(chain):
    """Every request the operator made as the chart's ServiceAccount was allowed by the chart's RBAC."""
    kube, _, _ = chain
    log = kube.operator_log()
    assert "eft operator" in log or "kopf" in log.lower(), log[-3000:]
    bad = [line for line in log.splitlines()
           if " 403" in line or "orbidden" in line or "APIClientError" in line or "Bad Request" in line]
    assert not bad, "\n".join(bad[:20])


def test_delete_lets_the_garbage_collector_remove_every_child(chain):
    kube, _, _ = chain
    kube.kubectl("delete", "eft", NAME, "-n", E2E_NS, "--wait=true", "--timeout=120s")
    sel = f"finetune.embeddings.io/resource={NAME}"
    paths = [f"/apis/batch/v1/namespaces/{E2E_NS}/jobs", f"/apis/apps/v1/namespaces/{E2E_NS}/deployments",
             f"/apis/apps/v1/namespaces/{E2E_NS}/replicasets", f"/api/v1/namespaces/{E2E_NS}/pods",
             f"/api/v1/namespaces/{E2E_NS}/configmaps", f"/api/v1/namespaces/{E2E_NS}/services",
             f"/api/v1/namespaces/{E2E_NS}/persistentvolumeclaims"]

    def left():
        return {p.rsplit("/", 1)[1]: [o["metadata"]["name"] for o in kube.items(p, sel)] for p in paths}

    wait_for(lambda: not any(left().values()), 180, "the garbage collector to delete every child", 1.0,
             lambda: yaml.safe_dump(left()))
    assert kube.eft(E2E_NS, NAME) is None
