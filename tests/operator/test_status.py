"""Status from a plan: conditions per Kubernetes conventions (lastTransitionTime moves only on a flip), the
merge patch that writes only what changed, and the Events of each transition."""

from __future__ import annotations

from eft.controller.plan import Observed, Outcome, Plan, plan_stages
from eft.controller.status import OUTCOME_CONDITIONS, compute_status, merge_patch, set_condition, transition_events
from eft.hashing import plan_hashes
from eftop_harness import sample_spec


def test_conditions_move_last_transition_time_only_on_flips_and_events_follow_transitions():
    c = set_condition([], "Ready", "False", "StageRunning", "m", 1, "T1")
    c = set_condition(c, "Ready", "False", "StageRunning", "m2", 2, "T2")
    assert c[0]["lastTransitionTime"] == "T1" and c[0]["observedGeneration"] == 2
    c = set_condition(c, "Ready", "True", "Verified", "ok", 2, "T3")
    assert c[0]["lastTransitionTime"] == "T3"
    spec = sample_spec()
    h = plan_hashes(spec)
    p = plan_stages("demo", 1, spec, h, {}, Observed(), False, False, None)
    s1 = compute_status({}, p, 1, None, "T1")
    assert s1["phase"] == "Running" and s1["stages"]["sdg"]["phase"] == "Running"
    assert ("Normal", "StageStarted", f"stage sdg started (demo-sdg-{h['sdg'][:8]})") in transition_events({}, s1)
    assert merge_patch(s1, compute_status(s1, p, 1, None, "T9")) is None  # nothing to write
    bad = compute_status(s1, p, 2, ("InvalidSpec", "spec.training.epochs: too big"), "T2")
    assert ("Warning", "InvalidSpec", "spec.training.epochs: too big") in transition_events(s1, bad)
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}) == {"a": {"c": None}}


def test_every_outcome_has_one_row_and_the_rows_agree_with_argo_cd_health():
    assert set(OUTCOME_CONDITIONS) == set(Outcome)
    for outcome in Outcome:
        st = compute_status({}, Plan(outcome=outcome, reason=None, message="m"), 1, None, "T")
        conds = {c["type"]: c for c in st["conditions"]}
        # Degraded only when failed, Ready only when the model is usable: what argocd/health.lua reads.
        assert (conds["Degraded"]["status"] == "True") == (outcome is Outcome.FAILED) == (st["phase"] == "Failed")
        assert (conds["Ready"]["status"] == "True") == (outcome in (Outcome.READY, Outcome.COMPLETE))
        assert conds["SpecValid"]["status"] == "True" and all(c["reason"] for c in conds.values())

