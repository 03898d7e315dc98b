"""The planner: from config hashes, observed children and the recorded status, each stage's state and the
next actions (pure, level-triggered); and the termination messages it reads summaries from."""

from __future__ import annotations

import dataclasses

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


def test_a_job_running_for_an_earlier_spec_is_stopped_before_its_stage_starts_again():
    spec = sample_spec()
    old = plan_hashes(spec)
    done = {f"demo-{s}-{old[s][:8]}": _job(f"demo-{s}-{old[s][:8]}", s, old[s], "Succeeded") for s in ("sdg", "prep")}
    running = f"demo-train-{old['train'][:8]}"
    jobs = {**done, running: _job(running, "train", old["train"], "Running")}
    spec.training.epochs += 2  # the spec changes while train runs
    new = plan_hashes(spec)
    assert new["train"] != old["train"] and new["prep"] == old["prep"]
    p = plan_stages("demo", 4, spec, new, {}, Observed(jobs=jobs), False, False, None)
    # the old Job is deleted, in the foreground (it stays until its pods are gone), and no new one starts beside
    # it: they would share train/
    assert [(a.kind, a.name, a.propagation) for a in p.actions] == [("delete_job", running, "Foreground")]
    assert p.stages["train"].reason == "StoppingOutdatedJob" and running in p.stages["train"].message
    assert p.current_stage == "train" and p.reason == "StoppingOutdatedJob"
    # while it is being deleted: nothing more to do, still waiting
    jobs[running] = dataclasses.replace(jobs[running], deleting=True)
    p = plan_stages("demo", 4, spec, new, {}, Observed(jobs=jobs), False, False, None)
    assert not p.actions and p.stages["train"].reason == "StoppingOutdatedJob"
    # once it is gone, the new Job starts
    del jobs[running]
    p = plan_stages("demo", 4, spec, new, {}, Observed(jobs=jobs), False, False, None)
    assert [(a.kind, a.name) for a in p.actions] == [("create_job", f"demo-train-{new['train'][:8]}")]
    # a finished Job of an earlier config is left alone (its output is replaced by the new run's)
    jobs[running] = _job(running, "train", old["train"], "Succeeded")
    p = plan_stages("demo", 4, spec, new, {}, Observed(jobs=jobs), False, False, None)
    assert [(a.kind, a.name) for a in p.actions] == [("create_job", f"demo-train-{new['train'][:8]}")]


def test_a_running_job_of_a_later_stage_is_stopped_when_an_earlier_stage_changes():
    spec = sample_spec()
    old = plan_hashes(spec)
    jobs = {f"demo-{s}-{old[s][:8]}": _job(f"demo-{s}-{old[s][:8]}", s, old[s], "Succeeded") for s in ("sdg", "prep")}
    training = f"demo-train-{old['train'][:8]}"
    jobs[training] = _job(training, "train", old["train"], "Running")
    spec.prep.seed += 1  # prep's config changes: prep runs again, and the running train reads a folder it empties
    new = plan_hashes(spec)
    p = plan_stages("demo", 4, spec, new, {}, Observed(jobs=jobs), False, False, None)
    assert ("delete_job", training) in [(a.kind, a.name) for a in p.actions]
    assert ("create_job", f"demo-prep-{new['prep'][:8]}") in [(a.kind, a.name) for a in p.actions]


def test_plan_uses_recorded_success_when_the_job_is_gone_and_rolls_the_server():
    spec = sample_spec()
    h = plan_hashes(spec)
    recorded = {s: {"phase": "Succeeded", "configHash": h[s], "job": f"demo-{s}-{h[s][:8]}",
                    "summary": {"promotion": {"promoted": True}} if s == "eval" else {}}
                for s in ("sdg", "prep", "train", "eval", "export")}
    new_dep = f"demo-deploy-{h['deploy'][:8]}"
    deps = {"demo-deploy-old": DeploymentObs("demo-deploy-old", "x", True),
            new_dep: DeploymentObs(new_dep, h["deploy"], True, 1, 1, updated_replicas=1, available_replicas=1,
                                   status_replicas=1)}
    p = plan_stages("demo", 3, spec, h, recorded, Observed(deployments=deps), False, False, "http://e")
    kinds = [(a.kind, a.name) for a in p.actions]
    assert ("delete_deployment", "demo-deploy-old") in kinds
    assert ("create_job", f"demo-verify-{h['verify'][:8]}") in kinds
    assert p.endpoint == "http://e"


def test_a_server_scaled_to_zero_publishes_no_endpoint_and_is_not_verified():
    spec = sample_spec(deploy={"replicas": 0})
    h = plan_hashes(spec)
    recorded = {s: {"phase": "Succeeded", "configHash": h[s], "job": f"demo-{s}-{h[s][:8]}",
                    "summary": {"promotion": {"promoted": True}} if s == "eval" else {}}
                for s in ("sdg", "prep", "train", "eval", "export")}
    dn = f"demo-deploy-{h['deploy'][:8]}"
    scaled = DeploymentObs(dn, h["deploy"], True, 0, 0)  # Available, 0 of 0 replicas: the rollout is complete
    p = plan_stages("demo", 3, spec, h, recorded, Observed(deployments={dn: scaled}), False, False, "http://e")
    assert p.outcome == "Complete" and p.reason == "ScaledToZero" and p.endpoint is None
    assert p.stages["deploy"].reason == "ScaledToZero" and p.stages["verify"].phase == "Skipped"
    assert not [a for a in p.actions if a.kind == "create_job"]  # no verify Job against nothing


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


def test_plan_a_recorded_failure_without_its_job_waits_for_a_spec_change_or_a_new_retry_value():
    spec = sample_spec()
    h = plan_hashes(spec)
    name = f"demo-sdg-{h['sdg'][:8]}"
    rec = {"sdg": {"phase": "Failed", "job": name, "configHash": h["sdg"], "reason": "BackoffLimitExceeded",
                   "message": "stage sdg failed (BackoffLimitExceeded, exit code 1): boom", "generation": 3,
                   "retry": "a"}}
    p = plan_stages("demo", 3, spec, h, rec, Observed(), False, False, None, retry="a")
    assert p.outcome == "Failed" and not p.actions and p.stages["sdg"].message.endswith("boom")
    for generation, retry in ((4, "a"), (3, "b")):
        p = plan_stages("demo", generation, spec, h, rec, Observed(), False, False, None, retry=retry)
        assert [(a.kind, a.name) for a in p.actions] == [("create_job", name)]
    # With the failed Job still there, a new retry value deletes it first.
    obs = Observed(jobs={name: _job(name, "sdg", h["sdg"], "Failed", generation=3, reason="BackoffLimitExceeded")})
    obs.jobs[name].retry = "a"
    p = plan_stages("demo", 3, spec, h, rec, obs, False, False, None, retry="b")
    assert [(a.kind, a.name) for a in p.actions] == [("delete_job", name)] and "retry" in p.stages["sdg"].message


def test_server_pod_problems_and_rollout_rules():
    from eft.controller.plan import rollout_wait, server_pod_problem

    def pod(name, **cs):
        return {"metadata": {"name": name}, "status": {"containerStatuses": [{"name": "server", **cs}]}}

    assert server_pod_problem([pod("a", ready=True, restartCount=9)]) is None  # recovered: ready again
    assert server_pod_problem([pod("a", ready=False, restartCount=1)]) is None
    reason, message = server_pod_problem([pod("a", ready=False, state={"waiting": {
        "reason": "ImagePullBackOff", "message": 'Back-off pulling image "srv:9"'}})])
    assert reason == "ImagePullBackOff" and "srv:9" in message
    reason, message = server_pod_problem([pod("b", ready=False, restartCount=3, lastState={"terminated": {
        "exitCode": 1, "message": "OSError: no model"}})])
    assert reason == "CrashLoopBackOff" and "restarted 3 times" in message and "no model" in message
    done = DeploymentObs("d", "h", True, 2, 2, generation=2, observed_generation=2, updated_replicas=2,
                         available_replicas=2, status_replicas=2)
    assert rollout_wait(done, 2) is None
    assert rollout_wait(done, 3) == "2 replicas requested on the Deployment, 3 in the spec"
    old_pods = DeploymentObs("d", "h", True, 2, 2, generation=2, observed_generation=2, updated_replicas=2,
                             available_replicas=2, status_replicas=3)
    assert rollout_wait(old_pods, 2) == "1 old replicas pending termination"
    assert "not yet seen" in rollout_wait(DeploymentObs("d", "h", True, generation=3, observed_generation=2), 1)


def test_plan_keeps_the_skipped_message_once_the_summary_is_recorded():
    spec = sample_spec()
    h = plan_hashes(spec)
    name = f"demo-sdg-{h['sdg'][:8]}"
    jobs = {name: _job(name, "sdg", h["sdg"], "Succeeded")}
    p = plan_stages("demo", 3, spec, h, {}, Observed(jobs=jobs, summaries={name: {"skipped": True, "summary": {}}}),
                    False, False, None)
    assert p.stages["sdg"].message == "skipped: output already current"
    again = plan_stages("demo", 3, spec, h, {"sdg": p.stages["sdg"].as_status()}, Observed(jobs=jobs), False, False,
                        None)
    assert again.stages["sdg"].message == "skipped: output already current"
