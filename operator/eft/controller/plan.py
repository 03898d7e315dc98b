"""Stage planning as a pure function (the stage contract, docs/architecture.md): from the spec's config hashes, the children
that exist and what the status recorded, decide each stage's state and the next actions.

Level-triggered: nothing here depends on memory of earlier reconciles beyond what is in the cluster (the
children and the resource's status), so an operator restarted at any point derives the same plan.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from eft.api.spec import EmbeddingFinetuneSpec
from eft.api.stages import downstream_of, stages_through
from eft.api.status import StageStatus
from eft.controller.manifests import (ANN_CONFIG_HASH, ANN_GENERATION, ANN_RETRY, ANN_SPEC_HASH, CONTAINER_NAME,
                                     LABEL_STAGE, child_name)

#: What a Job's conditions say (`observe_job`).
JobState = Literal["Pending", "Running", "Succeeded", "Failed"]


# ----------------------------------------------------------------------------- observations
@dataclass
class JobObs:
    name: str
    stage: str
    config_hash: str
    generation: int
    state: JobState
    reason: str | None = None
    message: str | None = None
    attempts: int = 0
    start_time: str | None = None
    completion_time: str | None = None
    uid: str = ""
    #: The uid in the Job's controller owner reference: the resource incarnation it belongs to.
    owner_uid: str = ""
    #: The value of the resource's retry annotation when the Job was created (`ANN_RETRY`).
    retry: str = ""
    deleting: bool = False
    #: `status.ready` (pods running and ready); None when the Job controller does not report it.
    ready: int | None = None
    #: `ANN_SPEC_HASH`: digest of the Job's spec as the operator created it.
    spec_hash: str = ""

    @property
    def not_started(self) -> bool:
        """Unfinished and none of its pods running (all pending: unschedulable, pulling, waiting for a volume)."""
        return self.state in ("Pending", "Running") and self.ready == 0 and not self.deleting


@dataclass
class DeploymentObs:
    name: str
    config_hash: str
    available: bool
    ready_replicas: int = 0
    replicas: int = 1
    owner_uid: str = ""
    deleting: bool = False
    #: `ANN_SPEC_HASH`: digest of the replicas and pod template the operator last wrote.
    spec_hash: str = ""
    generation: int = 0
    observed_generation: int = 0
    updated_replicas: int = 0
    available_replicas: int = 0
    status_replicas: int = 0
    #: (reason, message) of a Progressing=False or ReplicaFailure=True condition: the Deployment gave up.
    failure: tuple[str, str] | None = None


@dataclass
class Observed:
    jobs: dict[str, JobObs] = field(default_factory=dict)
    deployments: dict[str, DeploymentObs] = field(default_factory=dict)
    #: job name -> parsed termination message ({"summary", "durationSeconds", ...} or {"message": raw text}).
    summaries: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Finished Jobs whose termination message was needed and whose pods are gone.
    pods_gone: set[str] = field(default_factory=set)
    #: Children of an earlier resource with this name (another owner uid), e.g. "Job demo-sdg-1a2b3c4d".
    foreign: list[str] = field(default_factory=list)
    #: (reason, message) of the current server pods that cannot run (crash loop, image, config).
    server_problem: tuple[str, str] | None = None
    #: Current-config Jobs that have not started and whose spec no longer matches what the spec builds now.
    outdated: set[str] = field(default_factory=set)


def _cond(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), None)


def controller_uid(obj: dict[str, Any]) -> str:
    """The uid of the object's controller owner reference ("" when it has none)."""
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return ref.get("uid") or ""
    return ""


def observe_job(raw: dict[str, Any]) -> JobObs:
    """A Job's outcome from its `Complete`/`Failed` conditions (never from pod counters)."""
    meta, status = raw.get("metadata", {}), raw.get("status") or {}
    ann, lab = meta.get("annotations") or {}, meta.get("labels") or {}
    complete, failed = _cond(raw, "Complete"), _cond(raw, "Failed")
    if complete and complete.get("status") == "True":
        state, reason, message = "Succeeded", complete.get("reason"), complete.get("message")
    elif failed and failed.get("status") == "True":
        state, reason, message = "Failed", failed.get("reason") or "JobFailed", failed.get("message")
    else:
        state = "Running" if (status.get("active") or status.get("startTime")) else "Pending"
        reason = message = None
    attempts = int(status.get("failed") or 0) + int(status.get("succeeded") or 0) + int(status.get("active") or 0)
    return JobObs(
        name=meta.get("name", ""), stage=lab.get(LABEL_STAGE, ""), config_hash=ann.get(ANN_CONFIG_HASH, ""),
        generation=int(ann.get(ANN_GENERATION) or 0), state=state, reason=reason, message=message,
        attempts=attempts, start_time=status.get("startTime"), completion_time=status.get("completionTime"),
        uid=meta.get("uid") or "", owner_uid=controller_uid(raw), retry=ann.get(ANN_RETRY, ""),
        deleting=bool(meta.get("deletionTimestamp")),
        ready=int(status["ready"]) if status.get("ready") is not None else (0 if state == "Pending" else None),
        spec_hash=ann.get(ANN_SPEC_HASH, ""),
    )


def observe_deployment(raw: dict[str, Any]) -> DeploymentObs:
    """A Deployment's rollout state (`kubectl rollout status`'s rules) and whether it gave up."""
    meta, status, spec = raw.get("metadata", {}), raw.get("status") or {}, raw.get("spec") or {}
    replicas = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    available_cond = _cond(raw, "Available")
    ready = int(status.get("readyReplicas") or 0)
    available = bool(available_cond and available_cond.get("status") == "True"
                     and int(status.get("availableReplicas") or 0) >= replicas)
    failure = None
    progressing, replica_failure = _cond(raw, "Progressing"), _cond(raw, "ReplicaFailure")
    if progressing and progressing.get("status") == "False":
        failure = (progressing.get("reason") or "ProgressDeadlineExceeded", progressing.get("message") or "")
    elif replica_failure and replica_failure.get("status") == "True":
        failure = (replica_failure.get("reason") or "ReplicaFailure", replica_failure.get("message") or "")
    ann = meta.get("annotations") or {}
    return DeploymentObs(
        name=meta.get("name", ""), config_hash=ann.get(ANN_CONFIG_HASH, ""), available=available,
        ready_replicas=ready, replicas=replicas, owner_uid=controller_uid(raw),
        deleting=bool(meta.get("deletionTimestamp")), spec_hash=ann.get(ANN_SPEC_HASH, ""),
        generation=int(meta.get("generation") or 0), observed_generation=int(status.get("observedGeneration") or 0),
        updated_replicas=int(status.get("updatedReplicas") or 0),
        available_replicas=int(status.get("availableReplicas") or 0),
        status_replicas=int(status.get("replicas") or 0), failure=failure)


#: Container waiting reasons that mean the server cannot start without a change (kubelet's reasons).
FATAL_WAITING = {"CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "InvalidImageName",
                 "CreateContainerConfigError", "CreateContainerError", "RunContainerError"}
#: Restarts after which a container that is not ready counts as crash-looping.
CRASH_RESTARTS = 3


#: Waiting reasons of a stage pod that cannot start until something changes: a missing Secret (or key) or an
#: image that cannot be pulled. A stage Job has no rollout to time out, so without this it shows as running until
#: its deadline (hours). ErrImagePull alone may be a registry's passing rate limit; the kubelet turns a lasting
#: one into ImagePullBackOff.
STAGE_POD_BLOCKED = {"CreateContainerConfigError", "ImagePullBackOff", "InvalidImageName"}


def blocked_pod(name: str, labels: dict[str, str], status: dict[str, Any] | None) -> tuple[str, str, str, str] | None:
    """(pod, stage, waiting reason, the kubelet's message) for one of our pods that cannot start: a stage pod in
    `STAGE_POD_BLOCKED`, a server pod (no stage label) for a missing Secret only (its image problems are the
    rollout's, `server_pod_problem`); None otherwise."""
    stage = labels.get(LABEL_STAGE)
    for cs in (status or {}).get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        if reason == "CreateContainerConfigError" or (stage and reason in STAGE_POD_BLOCKED):
            return name, stage or "server", reason, waiting.get("message") or ""
    return None


def server_pod_problem(pods: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) for the first server pod that cannot run: a fatal waiting reason, or a container
    restarted `CRASH_RESTARTS` times and not ready (its last exit code and termination message); None if none."""
    for pod in sorted(pods, key=lambda p: (p.get("metadata") or {}).get("name", "")):
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            last = (cs.get("lastState") or {}).get("terminated") or {}
            restarts = int(cs.get("restartCount") or 0)
            where = f"pod {meta.get('name')}, container {cs.get('name')}"
            detail = ""
            if last:
                detail = f"; last exit code {last.get('exitCode')}"
                text = (last.get("message") or last.get("reason") or "").strip()
                if text:
                    detail += f": {text[-300:]}"
            if waiting.get("reason") in FATAL_WAITING:
                msg = waiting.get("message") or ""
                return waiting["reason"], f"{where}: {waiting['reason']}" + (f": {msg}" if msg else "") + detail
            if restarts >= CRASH_RESTARTS and not cs.get("ready"):
                return "CrashLoopBackOff", f"{where} restarted {restarts} times{detail}"
    return None


def parse_termination(pods: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The stage container's termination message of the newest finished pod: compact JSON, or raw text."""
    best: tuple[str, dict[str, Any]] | None = None
    for pod in pods:
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            if cs.get("name") != CONTAINER_NAME:
                continue
            term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
            if not term:
                continue
            key = term.get("finishedAt") or ""
            if best is None or key >= best[0]:
                best = (key, term)
    if best is None:
        return None
    term = best[1]
    text = (term.get("message") or "").strip()
    out: dict[str, Any] = {"exitCode": term.get("exitCode")}
    try:
        data = json.loads(text) if text else None
    except json.JSONDecodeError:
        data = None
    if isinstance(data, dict):
        out.update(data)
    elif text:
        out["message"] = text[-1024:]
    return out


# ----------------------------------------------------------------------------- the plan
class ActionKind(str, Enum):
    """What the reconciler does to a child object."""

    CREATE_JOB = "create_job"
    DELETE_JOB = "delete_job"
    CREATE_DEPLOYMENT = "create_deployment"
    #: Patch the existing server Deployment to the spec (replicas, image, resources, every pod template field).
    SYNC_DEPLOYMENT = "sync_deployment"
    DELETE_DEPLOYMENT = "delete_deployment"
    ENSURE_SERVICE = "ensure_service"


class Outcome(str, Enum):
    """Where the whole chain stands; `eft.controller.status.OUTCOME_CONDITIONS` maps each to phase and conditions."""

    PENDING = "Pending"  # nothing can start (being deleted, or children of an earlier incarnation still exist)
    RUNNING = "Running"
    SUSPENDED = "Suspended"
    FAILED = "Failed"
    NOT_PROMOTED = "NotPromoted"  # evaluated; the fine-tuned model did not beat the base model
    COMPLETE = "Complete"  # trained, evaluated and exported; deploy disabled
    READY = "Ready"  # serving (and verified when verification is on)


@dataclass(frozen=True)
class Action:
    kind: ActionKind
    stage: str
    name: str
    #: For deletes: "Foreground" keeps the Job (deleting) until its pods are gone, "Background" removes it now.
    propagation: str = "Background"


@dataclass
class Plan:
    stages: dict[str, StageStatus] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)
    current_stage: str | None = None
    outcome: Outcome = Outcome.PENDING
    reason: str | None = None
    message: str = ""
    eval_summary: dict[str, Any] | None = None
    promoted: bool | None = None
    endpoint: str | None = None


FAILURE_REASONS = {"BackoffLimitExceeded", "DeadlineExceeded", "PodFailurePolicy", "MaxFailedIndexesExceeded"}


def result_recorded(rec: dict[str, Any], job_name: str) -> bool:
    """True when the status already holds the result of `job_name`: its success with the summary copied from
    the pod (a `SummaryMissing` record does not count), or its failure with the message."""
    if rec.get("job") != job_name:
        return False
    if rec.get("phase") == "Succeeded":
        return "summary" in rec and rec.get("reason") != "SummaryMissing"
    return rec.get("phase") == "Failed"


def summaries_needed(observed: Observed, recorded: dict[str, Any]) -> list[str]:
    """Finished Jobs whose termination message is not yet copied onto the status."""
    out = []
    for job in observed.jobs.values():
        if job.state not in ("Succeeded", "Failed") or job.name in observed.summaries:
            continue
        rec = recorded.get(job.stage) or {}
        if rec.get("phase") == job.state and result_recorded(rec, job.name):
            continue
        out.append(job.name)
    return out


def rollout_wait(dep: DeploymentObs, want: int) -> str | None:
    """Why the rollout of `dep` to `want` replicas is not complete (None when it is): the rules of
    `kubectl rollout status` (observed generation, updated, no old replicas left, available)."""
    if dep.observed_generation < dep.generation:
        return "the Deployment controller has not yet seen the latest change"
    if dep.replicas != want:
        return f"{dep.replicas} replicas requested on the Deployment, {want} in the spec"
    if dep.updated_replicas < want:
        return f"{dep.updated_replicas}/{want} replicas updated"
    if dep.status_replicas > dep.updated_replicas:
        return f"{dep.status_replicas - dep.updated_replicas} old replicas pending termination"
    if dep.available_replicas < want or not dep.available:
        return f"{dep.available_replicas}/{want} replicas available"
    return None


def plan_stages(name: str, generation: int, spec: EmbeddingFinetuneSpec, hashes: dict[str, str],
                recorded: dict[str, Any], observed: Observed, suspended: bool, deleting: bool,
                endpoint: str | None = None, retry: str = "") -> Plan:
    """Decide every stage's state and what to create/delete next. Pure.

    The chain follows the stage table: the Job stages before `eval` one after another, then the promotion
    gate, `export` (when ONNX export is on), the server Deployment (`deploy`) and `verify`. `observed` holds
    only this incarnation's children (their controller owner reference carries the resource's uid); while
    `observed.foreign` names children of an earlier resource of the same name, nothing starts.

    A Job still running for an earlier config (the spec changed while it ran) is deleted, and its stage waits
    until it is gone: a stage's Jobs share its folder, and a new one starts by emptying it.

    A recorded failure stays failed, whether or not its Job still exists, until the spec changes (a newer
    `generation` than the failure's) or `retry` (the resource's `ANN_RETRY` annotation) differs from the value
    the failed Job was created with. A finished Job whose pods vanished before their termination message was read
    is re-run: the stage's skip path re-emits the summary from its `_SUCCESS.json`.
    """
    plan = Plan()
    may_create = not (suspended or deleting)
    # An older server keeps serving while a changed config re-runs the chain: keep publishing its endpoint.
    plan.endpoint = endpoint if any(d.available for d in observed.deployments.values()) else None

    def wait(stage: str | None, outcome: Outcome, reason: str, message: str) -> Plan:
        plan.current_stage = stage
        plan.outcome, plan.reason, plan.message = outcome, reason, message
        return plan

    def skip(stages: tuple[str, ...], reason: str, message: str) -> None:
        for s in stages:
            plan.stages[s] = StageStatus(phase="Skipped", reason=reason, message=message)

    if observed.foreign:
        shown = ", ".join(observed.foreign[:5]) + (f" and {len(observed.foreign) - 5} more"
                                                   if len(observed.foreign) > 5 else "")
        return wait(None, Outcome.PENDING, "WaitingForPreviousChildren",
                    f"waiting for the children of an earlier resource named {name} to be deleted: {shown}")

    def retry_reason(failed_generation: int, failed_retry: str) -> str | None:
        if deleting:
            return None
        if failed_generation < generation:
            return "the spec changed after the failure; retrying"
        if retry and retry != failed_retry:
            return f"the {ANN_RETRY} annotation changed to {retry!r}; retrying"
        return None

    # Jobs still running for an earlier config of their stage: stop them (their stage waits for them below).
    superseded = {j.name: j for j in observed.jobs.values()
                  if j.stage in hashes and j.name != child_name(name, j.stage, hashes[j.stage])
                  and j.state not in ("Succeeded", "Failed")}
    if not deleting:  # a resource being deleted takes its Jobs with it
        # Foreground: the Job stays (deleting) until its pods are gone, and its stage waits for it below, so no
        # new Job empties the folder while an old pod still writes there.
        plan.actions += [Action(ActionKind.DELETE_JOB, j.stage, j.name, "Foreground")
                         for j in superseded.values() if not j.deleting]

    def job_stage(stage: str) -> str:
        """'done', 'wait', 'failed' or 'suspended' for a Job-backed stage; records its StageStatus."""
        h = hashes[stage]
        jn = child_name(name, stage, h)
        job = observed.jobs.get(jn)
        older = sorted(n for n, j in superseded.items() if j.stage == stage)
        if older and not deleting:
            plan.stages[stage] = StageStatus(
                phase="Pending", job=jn, config_hash=h, reason="StoppingOutdatedJob",
                message=f"the spec changed while Job {', '.join(older)} ran; stopping it before Job {jn} starts "
                        f"(they share the {stage} folder)")
            return "wait"
        rec = recorded.get(stage) or {}
        term = observed.summaries.get(jn) or {}
        rec_same = rec.get("job") == jn and rec.get("configHash", h) == h
        if job is not None and job.state == "Succeeded":
            if "summary" in term:
                summary = term.get("summary")
            elif rec_same and rec.get("phase") == "Succeeded" and result_recorded(rec, jn):
                summary = rec.get("summary")
            else:
                summary = None
            if summary is None and jn in observed.pods_gone and not deleting:
                # The pod went (pod GC, a TTL, the operator down) before its message was read: re-run the Job,
                # whose skip path re-emits the summary from <stage>/_SUCCESS.json.
                if not job.deleting:
                    plan.actions.append(Action(ActionKind.DELETE_JOB, stage, jn))
                plan.stages[stage] = StageStatus(
                    phase="Running", job=jn, config_hash=h, attempts=job.attempts, reason="RereadingSummary",
                    message=f"the pods of Job {jn} are gone before its summary was read; re-running it to re-read "
                            f"{stage}/_SUCCESS.json")
                return "wait"
            dur = term.get("durationSeconds", rec.get("durationSeconds") if rec_same else None)
            if term:
                message = "skipped: output already current" if term.get("skipped") else None
            else:  # read earlier: keep what was recorded
                message = rec.get("message") if rec_same and rec.get("phase") == "Succeeded" else None
            plan.stages[stage] = StageStatus(
                phase="Succeeded", job=jn, config_hash=h, attempts=job.attempts, start_time=job.start_time,
                completion_time=job.completion_time, duration_seconds=dur, reason="Completed", message=message,
                summary=summary)
            return "done"
        if job is None and rec.get("phase") == "Succeeded" and rec.get("configHash") == h and result_recorded(rec, jn):
            plan.stages[stage] = StageStatus.model_validate(rec)
            return "done"
        if job is not None and job.state == "Failed":
            why = retry_reason(job.generation, job.retry)
            if why is not None:
                if not job.deleting:
                    plan.actions.append(Action(ActionKind.DELETE_JOB, stage, jn))
                plan.stages[stage] = StageStatus(phase="Pending", job=jn, config_hash=h, attempts=job.attempts,
                                                 reason="Retrying", message=why)
                return "wait"
            if not term and rec_same and rec.get("phase") == "Failed" and rec.get("message"):
                message = rec["message"]  # already read from the pod and recorded
            else:
                exit_code = term.get("exitCode")
                detail = term.get("message") or job.message or "the Job failed"
                message = f"stage {stage} failed ({job.reason}"
                message += f", exit code {exit_code})" if exit_code is not None else ")"
                message += f": {detail}"
            plan.stages[stage] = StageStatus(
                phase="Failed", job=jn, config_hash=h, attempts=job.attempts, start_time=job.start_time,
                completion_time=job.completion_time, reason=job.reason, message=message[:1024],
                summary=term.get("summary"), generation=job.generation, retry=job.retry or None)
            return "failed"
        if job is None and rec_same and rec.get("phase") == "Failed":
            # The failed Job is gone (a TTL, a person, a policy): the recorded failure stands until the spec
            # changes or a retry is asked for; never a fresh Job with a fresh retry budget on its own.
            if retry_reason(int(rec.get("generation") or generation), rec.get("retry") or "") is None:
                plan.stages[stage] = StageStatus.model_validate(rec)
                return "failed"
        if job is not None and jn in observed.outdated and may_create:
            # Not started (e.g. unschedulable) and the runtime settings changed: replace it, or it never would.
            plan.actions.append(Action(ActionKind.DELETE_JOB, stage, jn))
            plan.stages[stage] = StageStatus(phase="Pending", job=jn, config_hash=h, attempts=job.attempts,
                                             reason="JobOutdated",
                                             message=f"Job {jn} had not started and the spec changed how it runs; "
                                                     "replacing it")
            return "wait"
        if job is not None and job.deleting:
            plan.stages[stage] = StageStatus(phase="Pending", job=jn, config_hash=h, attempts=job.attempts,
                                             reason="JobDeleting",
                                             message=f"Job {jn} is being deleted; the stage runs again once it is gone")
            return "wait"
        if job is not None:
            plan.stages[stage] = StageStatus(phase="Running", job=jn, config_hash=h, attempts=job.attempts,
                                             start_time=job.start_time, reason="JobRunning",
                                             message=f"Job {jn} is {job.state.lower()}")
            return "wait"
        if may_create:
            plan.actions.append(Action(ActionKind.CREATE_JOB, stage, jn))
            plan.stages[stage] = StageStatus(phase="Running", job=jn, config_hash=h, attempts=0,
                                             reason="JobCreated", message=f"created Job {jn}")
            return "wait"
        plan.stages[stage] = StageStatus(
            phase="Pending", job=jn, config_hash=h, reason="Suspended" if suspended else "Deleting",
            message="spec.suspend is true" if suspended else "the resource is being deleted")
        return "suspended"

    def run(stage: str) -> Plan | None:
        r = job_stage(stage)
        if r == "done":
            return None
        st = plan.stages[stage]
        if r == "failed":
            reason = "VerificationFailed" if stage == "verify" else (
                st.reason if st.reason in FAILURE_REASONS else "JobFailed")
            return wait(stage, Outcome.FAILED, reason, st.message or f"stage {stage} failed")
        if r == "suspended":
            if deleting:
                return wait(stage, Outcome.PENDING, "Deleting", "the resource is being deleted")
            return wait(stage, Outcome.SUSPENDED, "Suspended", f"spec.suspend is true; stage {stage} is not started")
        if st.reason == "StoppingOutdatedJob":
            return wait(stage, Outcome.RUNNING, st.reason, st.message)
        return wait(stage, Outcome.RUNNING, "StageRunning", f"stage {stage} is running ({st.job})")

    # The stages every resource runs, up to the promotion gate (sdg, prep, train, eval).
    for stage in stages_through("eval"):
        if (p := run(stage)) is not None:
            return p

    ev = plan.stages["eval"].summary
    plan.eval_summary = ev
    promotion = (ev or {}).get("promotion") if isinstance(ev, dict) else None
    promoted = promotion.get("promoted") if isinstance(promotion, dict) else None
    plan.promoted = promoted if isinstance(promoted, bool) else None
    if plan.promoted is None:
        plan.stages["eval"].reason = "SummaryMissing"
        return wait("eval", Outcome.FAILED, "SummaryMissing",
                    "the eval Job succeeded but its termination message holds no promotion decision "
                    f"(delete Job {plan.stages['eval'].job} to re-read eval/_SUCCESS.json)")
    if not plan.promoted:
        why = (promotion or {}).get("reason") or "the fine-tuned model did not beat the base model"
        skip(downstream_of("eval"), "EvalBelowThreshold", why)
        return wait("eval", Outcome.NOT_PROMOTED, "EvalBelowThreshold", f"not promoted: {why}")

    if spec.export.onnx.enabled:
        if (p := run("export")) is not None:
            return p
    else:
        skip(("export",), "Disabled", "spec.export.onnx.enabled is false")

    if not spec.deploy.enabled:
        skip(downstream_of("export"), "Disabled", "spec.deploy.enabled is false")
        return wait(None, Outcome.COMPLETE, "Completed",
                    "the model is trained, evaluated and exported (deploy disabled)")

    # Serving: a Deployment named after the deploy hash behind a stable Service, kept equal to the spec.
    h = hashes["deploy"]
    dn = child_name(name, "deploy", h)
    dep = observed.deployments.get(dn)
    want = spec.deploy.replicas
    if not deleting:
        plan.actions.append(Action(ActionKind.ENSURE_SERVICE, "deploy", dn))
    if dep is None or dep.deleting:
        if dep is None and may_create:
            plan.actions.append(Action(ActionKind.CREATE_DEPLOYMENT, "deploy", dn))
            plan.stages["deploy"] = StageStatus(phase="Running", job=dn, config_hash=h, reason="DeploymentCreated",
                                                message=f"created Deployment {dn}")
        elif dep is not None:
            plan.stages["deploy"] = StageStatus(phase="Pending", job=dn, config_hash=h, reason="DeploymentDeleting",
                                                message=f"Deployment {dn} is being deleted")
        else:
            plan.stages["deploy"] = StageStatus(phase="Pending", job=dn, config_hash=h, reason="Suspended",
                                                message="spec.suspend is true")
            return wait("deploy", Outcome.PENDING if deleting else Outcome.SUSPENDED, "Suspended",
                        "spec.suspend is true; the server is not deployed")
        return wait("deploy", Outcome.RUNNING, "DeploymentProgressing",
                    f"waiting for Deployment {dn} to become available")
    if may_create:
        plan.actions.append(Action(ActionKind.SYNC_DEPLOYMENT, "deploy", dn))
    pending = rollout_wait(dep, want)
    if pending is not None:
        failure = dep.failure or observed.server_problem
        if failure is not None:
            reason, detail = failure
            message = f"Deployment {dn}: {reason}: {detail}".rstrip(": ")
            if dep.failure is not None and observed.server_problem is not None:
                message += f" ({observed.server_problem[1]})"
            plan.stages["deploy"] = StageStatus(phase="Failed", job=dn, config_hash=h, reason=reason,
                                                message=message[:1024])
            return wait("deploy", Outcome.FAILED, reason, message)
        plan.stages["deploy"] = StageStatus(phase="Running", job=dn, config_hash=h, reason="DeploymentProgressing",
                                            message=pending)
        return wait("deploy", Outcome.RUNNING, "DeploymentProgressing",
                    f"waiting for Deployment {dn} to become available: {pending}")
    for other in observed.deployments.values():
        if other.name != dn and not deleting:
            plan.actions.append(Action(ActionKind.DELETE_DEPLOYMENT, "deploy", other.name))
    if want == 0:  # scaled to zero on purpose: nothing serves, so no endpoint and nothing to verify
        plan.stages["deploy"] = StageStatus(phase="Succeeded", job=dn, config_hash=h, reason="ScaledToZero",
                                            message=f"Deployment {dn} has 0 replicas (spec.deploy.replicas is 0)")
        plan.endpoint = None
        skip(("verify",), "ScaledToZero", "spec.deploy.replicas is 0: nothing serves to verify")
        return wait(None, Outcome.COMPLETE, "ScaledToZero",
                    "the model is trained, evaluated and exported; spec.deploy.replicas is 0, so nothing serves it")
    plan.stages["deploy"] = StageStatus(phase="Succeeded", job=dn, config_hash=h, reason="DeploymentAvailable",
                                        message=f"{dep.available_replicas}/{want} replicas available")
    plan.endpoint = endpoint

    if spec.deploy.verification.enabled:
        if (p := run("verify")) is not None:
            return p
        return wait(None, Outcome.READY, "Verified", f"serving at {endpoint}; live evaluation verified")
    skip(("verify",), "Disabled", "verification disabled")
    return wait(None, Outcome.READY, "Deployed", f"serving at {endpoint}")
