"""The planner: from config hashes, observed children and the recorded status, each stage's state and the
next actions (pure, level-triggered); and the termination messages it reads summaries from."""

from __future__ import annotations

from eft.controller.plan import DeploymentObs, JobObs, Observed, parse_termination, plan_stages
from eft.hashing import plan_hashes
from eftop_harness import sample_spec


def _job(name, stage, h, state, generation=3, reason=None):
    return JobObs(name=name, stage=stage, config_hash=h, generation=generation, state=state, reason=reason,
                  attempts=1)


def test_plan_walks_the_chain_one_job_at_a_time():
    spec = sample_spec()
    h = plan_hashes(spec)
    p = plan_stages("demo", 3, spec, h, {}, Observed(), False, False, "http://e")
    assert [(a.kind, a.stage) for a in p.actions] == [("create_job", "sdg")] and p.outcome == "Running"
    jobs = {f"demo-{s}-{h[s][:8]}": _job(f"demo-{s}-{h[s][:8]}", s, h[s], "Succeeded") for s in ("sdg", "prep")}
    p = plan_stages("demo", 3, spec, h, {}, Observed(jobs=jobs), False, False, "http://e")
    assert [(a.kind, a.stage) for a in p.actions] == [("create_job", "train")]
    assert p.current_stage == "train"
    # Suspended: nothing new is created.
    p = plan_stages("demo", 3, spec, h, {}, Observed(jobs=jobs), True, False, "http://e")
    assert not p.actions and p.outcome == "Suspended"


def test_plan_failed_stage_and_retry_after_a_spec_change():
    spec = sample_spec()
    h = plan_hashes(spec)
    name = f"demo-sdg-{h['sdg'][:8]}"
    obs = Observed(jobs={name: _job(name, "sdg", h["sdg"], "Failed", generation=3, reason="BackoffLimitExceeded")},
                   summaries={name: {"exitCode": 1, "message": "boom"}})
    p = plan_stages("demo", 3, spec, h, {}, obs, False, False, None)
    assert p.outcome == "Failed" and p.reason == "BackoffLimitExceeded" and "boom" in p.message
    assert not p.actions
    # Once recorded, a later reconcile (pod message no longer read) keeps the same message, not a nested one.
    recorded = {"sdg": p.stages["sdg"].as_status()}
    again = plan_stages("demo", 3, spec, h, recorded, Observed(jobs=obs.jobs), False, False, None)
    assert again.stages["sdg"].message == p.stages["sdg"].message
    p = plan_stages("demo", 4, spec, h, {}, obs, False, False, None)
    assert [(a.kind, a.name) for a in p.actions] == [("delete_job", name)]


def test_plan_uses_recorded_success_when_the_job_is_gone_and_rolls_the_server():
    spec = sample_spec()
    h = plan_hashes(spec)
    recorded = {s: {"phase": "Succeeded", "configHash": h[s], "job": f"demo-{s}-{h[s][:8]}",
                    "summary": {"promotion": {"promoted": True}} if s == "eval" else {}}
                for s in ("sdg", "prep", "train", "eval", "export")}
    new_dep = f"demo-deploy-{h['deploy'][:8]}"
    deps = {"demo-deploy-old": DeploymentObs("demo-deploy-old", "x", True),
            new_dep: DeploymentObs(new_dep, h["deploy"], True, 1, 1)}
    p = plan_stages("demo", 3, spec, h, recorded, Observed(deployments=deps), False, False, "http://e")
    kinds = [(a.kind, a.name) for a in p.actions]
    assert ("delete_deployment", "demo-deploy-old") in kinds
    assert ("create_job", f"demo-verify-{h['verify'][:8]}") in kinds
    assert p.endpoint == "http://e"


def test_termination_message_parsing():
    pods = [{"status": {"containerStatuses": [{"name": "stage", "state": {"terminated": {
        "exitCode": 0, "finishedAt": "2025-01-01T00:00:02Z",
        "message": '{"stage":"eval","configHash":"x","durationSeconds":3.5,"summary":{"a":1}}'}}}]}},
            {"status": {"containerStatuses": [{"name": "stage", "state": {"terminated": {
                "exitCode": 1, "finishedAt": "2025-01-01T00:00:01Z", "message": "Traceback ... OOM"}}}]}}]
    assert parse_termination(pods) == {"exitCode": 0, "stage": "eval", "configHash": "x", "durationSeconds": 3.5,
                                       "summary": {"a": 1}}
    assert parse_termination(pods[1:])["message"] == "Traceback ... OOM"
    assert parse_termination([]) is None
