"""The Argo CD health check (argocd/health.lua), executed by a real Lua 5.1 runtime (lupa) on sample resources."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml

from eftpkg_support import ARGOCD, ROOT, run_health_lua

LUA = (ARGOCD / "health.lua").read_text()
CASES = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]

#: The status each sample must get, stated here independently of health_test.yaml (which also pins messages).
EXPECTED_STATUS = {
    "no-status": "Progressing",
    "never-observed": "Progressing",
    "pending": "Progressing",
    "running": "Progressing",
    "running-no-conditions": "Progressing",
    "generation-not-observed": "Progressing",
    "suspended": "Suspended",
    "failed": "Degraded",
    "failed-phase-only": "Degraded",
    "ready": "Healthy",
    "bad-status-string": "Progressing",
    "bad-observed-generation": "Progressing",
    "bad-conditions-map": "Progressing",
    "bad-conditions-entries": "Progressing",
    "bad-stages-shape": "Degraded",
    "bad-metadata": "Progressing",
    "not-promoted": "Degraded",  # a final state (documented in docs/operator.md), never Progressing forever
    "deploy-gave-up": "Degraded",
    "waiting-previous-children": "Progressing",
}


def _sample(name):
    return yaml.safe_load((ARGOCD / "testdata" / f"{name}.yaml").read_text())


def test_every_sample_is_listed():
    listed = {c["inputPath"].removeprefix("testdata/").removesuffix(".yaml") for c in CASES}
    on_disk = {p.stem for p in (ARGOCD / "testdata").glob("*.yaml")}
    assert listed == on_disk == set(EXPECTED_STATUS)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c["inputPath"])
def test_health_of_sample(case):
    name = case["inputPath"].removeprefix("testdata/").removesuffix(".yaml")
    result = run_health_lua(LUA, yaml.safe_load((ARGOCD / case["inputPath"]).read_text()))
    assert result["status"] == EXPECTED_STATUS[name]
    assert result == case["healthStatus"]
    assert isinstance(result["message"], str) and result["message"]


def test_all_argo_health_states_are_reachable():
    assert set(EXPECTED_STATUS.values()) == {"Healthy", "Progressing", "Degraded", "Suspended"}


def test_generation_check_comes_first():
    """A spec edit not yet observed wins over every other signal, including Ready and Failed."""
    for name in ("ready", "failed", "suspended"):
        obj = _sample(name)
        obj["metadata"]["generation"] = obj["status"]["observedGeneration"] + 1
        assert run_health_lua(LUA, obj)["status"] == "Progressing", name


def test_suspend_in_spec_wins_over_failure_and_ready():
    for name in ("failed", "ready", "running"):
        obj = _sample(name)
        obj["spec"]["suspend"] = True
        assert run_health_lua(LUA, obj)["status"] == "Suspended", name


def test_degraded_wins_over_ready():
    obj = _sample("ready")
    obj["status"]["conditions"].append({"type": "Degraded", "status": "True", "reason": "JobFailed", "message": "x"})
    assert run_health_lua(LUA, obj) == {"status": "Degraded", "message": "JobFailed: x"}


def test_ready_false_is_not_healthy():
    obj = _sample("ready")
    for c in obj["status"]["conditions"]:
        if c["type"] == "Ready":
            c["status"] = "False"
    # Finished (phase Succeeded, Progressing=False) without being Ready: a final Degraded, never Progressing.
    assert run_health_lua(LUA, obj)["status"] == "Degraded"
    obj["status"]["phase"] = "Running"
    for c in obj["status"]["conditions"]:
        if c["type"] == "Progressing":
            c["status"] = "True"
    assert run_health_lua(LUA, obj)["status"] == "Progressing"


@pytest.mark.parametrize("status", [None, 0, "", [], {}, [1, 2], {"conditions": None}, {"phase": None},
                                    {"conditions": [None]}, {"stages": {"train": 3}, "phase": "Failed",
                                                             "currentStage": "train"},
                                    {"observedGeneration": "1", "phase": "Running"},
                                    {"observedGeneration": 1.0, "endpoint": 8, "conditions": [
                                        {"type": "Ready", "status": "True", "message": {"a": 1}}]}])
def test_odd_status_shapes_never_crash(status):
    obj = _sample("running")
    obj["status"] = copy.deepcopy(status)
    result = run_health_lua(LUA, obj)
    assert result["status"] in {"Progressing", "Degraded", "Healthy"}
    assert isinstance(result["message"], str) and result["message"]
    if not isinstance(status, dict) or not status:
        assert result["status"] == "Progressing"


def test_runtime_error_inside_the_check_answers_progressing():
    """Even an object whose field access raises (not possible from JSON, but the guard must hold) is caught."""
    from lupa import lua51

    lua = lua51.LuaRuntime()
    g = lua.globals()
    env = lua.table()
    for name in ("type", "tostring", "tonumber", "ipairs", "pairs", "next", "pcall", "string", "table", "math"):
        env[name] = g[name]
    env["obj"] = lua.eval("setmetatable({}, {__index = function(t, k) error('boom on ' .. k) end})")
    result = lua.eval("function(src, env) local f = assert(loadstring(src)); setfenv(f, env); return f() end")(LUA, env)
    assert result["status"] == "Progressing"
    assert "Unexpected status shape" in result["message"] and "boom" in result["message"]


def test_non_object_inputs():
    assert run_health_lua(LUA, None)["status"] == "Progressing"
    assert run_health_lua(LUA, "text")["status"] == "Progressing"


def test_snippets_match_the_lua():
    """argocd-cm-health.yaml and the doc blocks are generated from health.lua and must not drift."""
    cm = yaml.safe_load((ARGOCD / "argocd-cm-health.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"]["resource.customizations.health.finetune.embeddings.io_EmbeddingFinetune"] == LUA
    check = subprocess.run([sys.executable, str(ARGOCD / "sync_health.py"), "--check"], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr


@pytest.mark.parametrize("doc", ["docs/deploying.md", "charts/embedding-finetune-operator/README.md"])
def test_docs_ship_the_snippet(doc):
    text = (ROOT / doc).read_text()
    assert "<!-- argocd-health:begin -->" in text, f"{doc} lacks the Argo CD health snippet"
    assert "resource.customizations.health.finetune.embeddings.io_EmbeddingFinetune" in text


@pytest.mark.parametrize("path", ["application.yaml", "application-operator.yaml"])
def test_example_applications(path):
    app = yaml.safe_load((ARGOCD / path).read_text())
    assert app["apiVersion"] == "argoproj.io/v1alpha1" and app["kind"] == "Application"
    spec = app["spec"]
    assert {"project", "source", "destination"} <= set(spec)
    assert {"repoURL", "targetRevision", "path"} <= set(spec["source"])
    assert spec["destination"].get("server") or spec["destination"].get("name")
    if path == "application-operator.yaml":
        assert spec["source"]["path"] == "charts/embedding-finetune-operator"
        assert (ROOT / spec["source"]["path"] / "Chart.yaml").exists()
        assert "ServerSideApply=true" in spec["syncPolicy"]["syncOptions"]


#: Argo CD health of the status the controller writes for each plan outcome: every ending is final (Healthy,
#: Degraded or Suspended); only work in flight is Progressing.
OUTCOME_HEALTH = {"Pending": "Progressing", "Running": "Progressing", "Suspended": "Suspended", "Failed": "Degraded",
                  "NotPromoted": "Degraded", "Complete": "Healthy", "Ready": "Healthy"}


@pytest.mark.parametrize("outcome", sorted(OUTCOME_HEALTH))
def test_health_of_every_status_the_controller_writes(outcome):
    from eft.controller.plan import Outcome, Plan
    from eft.controller.status import compute_status

    plan = Plan(outcome=Outcome(outcome), reason=None, message="m")
    obj = {"metadata": {"generation": 1}, "spec": {"suspend": outcome == "Suspended"},
           "status": compute_status({}, plan, 1, None, "T")}
    assert run_health_lua(LUA, obj)["status"] == OUTCOME_HEALTH[outcome]
    # An invalid spec or a missing Secret/claim: Degraded too.
    obj["status"] = compute_status(obj["status"], plan, 1, ("SecretNotFound", "no Secret"), "T")
    assert run_health_lua(LUA, obj)["status"] == ("Suspended" if outcome == "Suspended" else "Degraded")
