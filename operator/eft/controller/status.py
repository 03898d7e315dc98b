"""Pure functions that turn a plan into `status` (phase, conditions per Kubernetes API conventions, stages,
metrics, endpoint), the merge patch that writes it, and the Events that mark each transition.

The status schema itself is `eft.api.status`; how each plan outcome maps to the phase and the conditions is
one table, `OUTCOME_CONDITIONS`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from eft.api.status import CONDITION_TYPES, ConditionStatus, ResourcePhase
from eft.controller.merge import merge_patch  # noqa: F401 - the status writer's patch (re-exported)
from eft.controller.plan import Outcome, Plan


# ----------------------------------------------------------------------------- the outcome table
@dataclass(frozen=True)
class ConditionRule:
    """One condition for one outcome: `reason` is the plan's reason when it gives one, else this fallback
    (always this, when `fixed`); `message` None means the plan's message."""

    status: ConditionStatus
    reason: str
    fixed: bool = False
    message: str | None = None


@dataclass(frozen=True)
class OutcomeRule:
    phase: ResourcePhase
    progressing: ConditionRule
    degraded: ConditionRule
    ready: ConditionRule


_NOT_DEGRADED = ConditionRule("False", "AsExpected", fixed=True, message="no stage has failed")

#: Plan outcome -> `status.phase` and the Progressing/Degraded/Ready conditions (SpecValid is True here; an
#: invalid spec never reaches the planner).
OUTCOME_CONDITIONS: dict[Outcome, OutcomeRule] = {
    Outcome.RUNNING: OutcomeRule("Running", ConditionRule("True", "StageRunning"), _NOT_DEGRADED,
                                 ConditionRule("False", "StageRunning")),
    Outcome.SUSPENDED: OutcomeRule("Suspended", ConditionRule("False", "Suspended", fixed=True), _NOT_DEGRADED,
                                   ConditionRule("False", "Suspended", fixed=True)),
    Outcome.FAILED: OutcomeRule("Failed", ConditionRule("False", "JobFailed"), ConditionRule("True", "JobFailed"),
                                ConditionRule("False", "JobFailed")),
    Outcome.NOT_PROMOTED: OutcomeRule("Succeeded", ConditionRule("False", "EvalBelowThreshold", fixed=True),
                                      _NOT_DEGRADED, ConditionRule("False", "EvalBelowThreshold", fixed=True)),
    Outcome.READY: OutcomeRule("Succeeded", ConditionRule("False", "Completed", fixed=True), _NOT_DEGRADED,
                               ConditionRule("True", "Verified")),
    Outcome.COMPLETE: OutcomeRule("Succeeded", ConditionRule("False", "Completed", fixed=True), _NOT_DEGRADED,
                                  ConditionRule("True", "Completed")),
    Outcome.PENDING: OutcomeRule("Pending", ConditionRule("Unknown", "Pending"), _NOT_DEGRADED,
                                 ConditionRule("False", "Pending")),
}


# ----------------------------------------------------------------------------- conditions
def set_condition(conditions: list[dict[str, Any]], type_: str, status: str, reason: str, message: str,
                  generation: int, now: str) -> list[dict[str, Any]]:
    """Upsert one condition; `lastTransitionTime` moves only when `status` flips."""
    out = [dict(c) for c in conditions if c.get("type") != type_]
    old = next((c for c in conditions if c.get("type") == type_), None)
    ltt = old.get("lastTransitionTime") if old and old.get("status") == status else now
    out.append({"type": type_, "status": status, "reason": reason, "message": message[:1024],
                "lastTransitionTime": ltt or now, "observedGeneration": generation})
    order = {t: i for i, t in enumerate(CONDITION_TYPES)}
    return sorted(out, key=lambda c: order.get(c["type"], 99))


def get_condition(status: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in (status or {}).get("conditions") or [] if c.get("type") == type_), None)


# ----------------------------------------------------------------------------- status from the plan
def metrics_from_eval(summary: dict[str, Any] | None) -> dict[str, Any] | None:
    if not summary:
        return None
    base, ft = summary.get("base") or {}, summary.get("finetuned") or {}
    out: dict[str, Any] = {}
    for key in ("base", "finetuned", "relative"):
        vals = summary.get(key)
        if isinstance(vals, dict):
            out[key] = {k: float(v) for k, v in vals.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    if isinstance(summary.get("promotion"), dict):
        out["promotion"] = summary["promotion"]
    if summary.get("warnings"):
        out["warnings"] = [str(w) for w in summary["warnings"]]
    b, f = base.get("ndcg@10"), ft.get("ndcg@10")
    if isinstance(b, (int, float)) and isinstance(f, (int, float)):
        rel = f"{(f - b) / b:+.1%}" if b else "n/a"
        out["ndcg10"] = f"{b:.3f} → {f:.3f} ({rel})"
    return out or None


def compute_status(old: dict[str, Any] | None, plan: Plan, generation: int, spec_problem: tuple[str, str] | None,
                   now: str, claim_name: str | None = None, model_path: str | None = None) -> dict[str, Any]:
    """The whole `status` for this reconcile. `spec_problem` = (reason, message) when the spec is invalid."""
    old = old or {}
    conds = [dict(c) for c in old.get("conditions") or []]
    st: dict[str, Any] = {"observedGeneration": generation}

    def cond(type_: str, status: str, reason: str, message: str) -> None:
        nonlocal conds
        conds = set_condition(conds, type_, status, reason, message, generation, now)

    if spec_problem is not None:
        reason, message = spec_problem
        cond("SpecValid", "False", reason, message)
        cond("Ready", "False", reason, "the spec is invalid: " + message)
        cond("Progressing", "False", reason, "no Jobs are started until the spec is fixed")
        cond("Degraded", "True", reason, message)
        st.update(phase="Failed", currentStage=None)
        # Keep what earlier generations achieved (stages, metrics, endpoint): they are still true.
        for key in ("stages", "metrics", "model", "endpoint"):
            if old.get(key) is not None:
                st[key] = copy.deepcopy(old[key])
        st["conditions"] = conds
        return _prune(st)

    cond("SpecValid", "True", "Valid", "the spec is valid")
    stages = {name: s.as_status() for name, s in plan.stages.items()}
    # Stages of the old status that this plan does not reach keep their last record (e.g. after a failure).
    for name, rec in (old.get("stages") or {}).items():
        stages.setdefault(name, rec)
    st["stages"] = stages
    st["currentStage"] = plan.current_stage
    metrics = metrics_from_eval(plan.eval_summary) or old.get("metrics")
    if metrics:
        st["metrics"] = metrics
    if claim_name:
        st["model"] = {"claimName": claim_name, "path": model_path,
                       "promoted": plan.promoted}
    if plan.endpoint:
        st["endpoint"] = plan.endpoint

    rule = OUTCOME_CONDITIONS[plan.outcome]
    st["phase"] = rule.phase
    for type_, cr in (("Progressing", rule.progressing), ("Degraded", rule.degraded), ("Ready", rule.ready)):
        reason = cr.reason if cr.fixed else (plan.reason or cr.reason)
        cond(type_, cr.status, reason, plan.message if cr.message is None else cr.message)
    st["conditions"] = conds
    return _prune(st)


def _prune(d: Any) -> Any:
    if isinstance(d, dict):
        return {k: _prune(v) for k, v in d.items() if v is not None}
    if isinstance(d, list):
        return [_prune(v) for v in d]
    return d


# ----------------------------------------------------------------------------- writes and events
def transition_events(old: dict[str, Any] | None, new: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(type, reason, message) for every transition between two statuses: stages, conditions, suspend."""
    old = old or {}
    events: list[tuple[str, str, str]] = []
    old_stages = old.get("stages") or {}
    for name, st in (new.get("stages") or {}).items():
        before = old_stages.get(name) or {}
        same_job = before.get("job") == st.get("job")
        if before.get("phase") == st.get("phase") and same_job:
            continue
        phase, job = st.get("phase"), st.get("job")
        if phase == "Running":
            events.append(("Normal", "StageStarted", f"stage {name} started ({job})"))
        elif phase == "Succeeded":
            dur = st.get("durationSeconds")
            events.append(("Normal", "StageSucceeded",
                           f"stage {name} succeeded ({job})" + (f" in {dur:.1f}s" if isinstance(dur, (int, float)) else "")))
        elif phase == "Failed":
            events.append(("Warning", "StageFailed", f"stage {name} failed ({job}): {st.get('message') or ''}".strip()))
        elif phase == "Skipped" and before.get("phase") != "Skipped":
            events.append(("Normal", "StageSkipped", f"stage {name} skipped: {st.get('message') or ''}".strip()))
    for type_ in ("SpecValid", "Degraded", "Ready"):
        a, b = get_condition(old, type_), get_condition(new, type_)
        if b is None or (a and a.get("status") == b.get("status") and a.get("reason") == b.get("reason")):
            continue
        if type_ == "SpecValid" and b["status"] == "False":
            events.append(("Warning", b["reason"], b["message"]))
        elif type_ == "SpecValid" and b["status"] == "True" and a and a.get("status") == "False":
            events.append(("Normal", "SpecValid", "the spec is valid again"))
        elif type_ == "Degraded" and b["status"] == "True" and b["reason"] not in ("InvalidSpec", "SecretNotFound",
                                                                                   "ClaimNotFound"):
            events.append(("Warning", b["reason"], b["message"]))
        elif type_ == "Ready" and b["status"] == "True":
            events.append(("Normal", "Ready", b["message"]))
        elif type_ == "Ready" and b["reason"] == "EvalBelowThreshold":
            events.append(("Normal", "EvalBelowThreshold", b["message"]))
    if new.get("phase") == "Suspended" and old.get("phase") != "Suspended":
        events.append(("Normal", "Suspended", "spec.suspend is true: no new Jobs are started"))
    if old.get("phase") == "Suspended" and new.get("phase") != "Suspended":
        events.append(("Normal", "Resumed", "spec.suspend is false: the chain continues"))
    return events
