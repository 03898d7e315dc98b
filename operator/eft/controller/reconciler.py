"""The reconciler: a de-duplicating work queue of resource keys, a few workers, and `reconcile(key)`.

Reconciling one resource: validate the spec, check the referenced Secrets and claim, read the children from
the indices, plan (`eft.controller.plan`), create/delete children, and write `status` only when it changed
(`eft.controller.status`), with an Event per transition. A periodic resync is the safety net. Nothing is
remembered across restarts: children names are deterministic, so a restarted operator re-derives the same plan
and creating an existing child is a no-op (409). One resource is never reconciled twice concurrently.

No Kopf here: `eft.controller.handlers` feeds the queue and the indices from Kopf's watches, and a test can
drive `Reconciler` with a fake API and plain dictionaries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Collection, Mapping, Protocol

from eft.api.spec import API_GROUP, API_VERSION, PLURAL
from eft.clock import now_iso
from eft.controller import kube, manifests, metrics
from eft.controller.config import OperatorConfig
from eft.controller.kube import CONFIGMAPS, DEPLOYMENTS, EVENTS, JOBS, PODS, PVCS, SERVICES, Res
from eft.controller.manifests import LABEL_COMPONENT, LABEL_HASH, LABEL_RESOURCE, Owner
from eft.controller.plan import (
    STAGE_POD_BLOCKED,
    Action,
    ActionKind,
    DeploymentObs,
    JobObs,
    Observed,
    Outcome,
    Plan,
    StageStatus,
    controller_uid,
    parse_termination,
    plan_stages,
    rollout_wait,
    server_pod_problem,
    summaries_needed,
)
from eft.controller.status import compute_status, merge_patch, transition_events
from eft.controller.validation import format_problems, runtime_problems, secret_refs, validate
from eft.hashing import digest, plan_hashes

log = logging.getLogger("eft.controller")

#: What the API server answers for an object it will never accept as built (validation, admission, RBAC).
REFUSED_STATUS = (400, 403, 422)


class ChildRejected(Exception):
    """The API server refused a child object the operator built from the spec (`action`, `error`)."""

    def __init__(self, action: Action, error: kube.ApiError):
        self.action, self.error = action, error
        super().__init__(f"{action.kind.value} {action.name}: {error}")


def _report_refusal(plan: Plan, err: ChildRejected) -> None:
    """Turn a refused child into the resource's status: its stage Pending with the API server's words, the
    resource Failed/Degraded (ChildRejected); retried with back-off, so a fixed quota or policy recovers."""
    what = {"create_job": "Job", "create_deployment": "Deployment", "sync_deployment": "Deployment",
            "ensure_service": "Service", "delete_job": "Job", "delete_deployment": "Deployment"}
    kind = what.get(err.action.kind.value, "object")
    _fail_stage(plan, err.action.stage, "ChildRejected",
                f"the API server refused {kind} {err.action.name} ({err.error.status} {err.error.reason}: "
                f"{err.error.message}); change the spec or the operator's defaults, or the policy or quota that "
                "refused it")


def _fail_stage(plan: Plan, stage: str, reason: str, message: str) -> None:
    """The stage Pending with `reason` and `message` (kept to a status message's 1,024 characters), and the
    resource Failed/Degraded with the same: what keeps the planned stage from starting."""
    message = message[:1024]
    st = plan.stages.get(stage)
    if st is not None:
        plan.stages[stage] = StageStatus(phase="Pending", job=st.job, config_hash=st.config_hash,
                                         attempts=st.attempts, reason=reason, message=message)
    plan.outcome, plan.reason, plan.message = Outcome.FAILED, reason, message


EFTS = Res(API_GROUP, API_VERSION, PLURAL)

#: A resource's (namespace, name).
Key = tuple[str, str]
#: Observed children of each resource: a `kopf.Index[Key, JobObs]` (a mapping of collections), or a dict.
JobsIndex = Mapping[Key, Collection[JobObs]]
DeploymentsIndex = Mapping[Key, Collection[DeploymentObs]]


class ClusterApi(Protocol):
    """The calls the reconciler makes (`eft.controller.kube.KubeApi` implements them)."""

    async def get(self, res: Res, namespace: str, name: str) -> dict[str, Any] | None: ...

    async def list(self, res: Res, namespace: str | None,
                   label_selector: str | None = None) -> list[dict[str, Any]]: ...

    async def create(self, res: Res, namespace: str, body: dict[str, Any]) -> tuple[dict[str, Any] | None, bool]: ...

    async def patch(self, res: Res, namespace: str, name: str, body: dict[str, Any],
                    sub: str | None = None) -> dict[str, Any]: ...

    async def delete(self, res: Res, namespace: str, name: str, propagation: str = "Background") -> bool: ...

    async def close(self) -> None: ...


class Reconciler:
    """A de-duplicating work queue of resource keys, a few workers, and `reconcile(key)`.

    `api` is the cluster client (a `KubeApi`, or any object with its async get/list/create/patch/delete/close);
    it may be set after construction (Kopf's login hands it over). `bodies` holds the latest body of every
    resource, `jobs_index` / `deployments_index` the observed children per resource key; the Kopf handlers
    keep all three current, a test can fill them by hand.
    """

    def __init__(self, config: OperatorConfig, api: ClusterApi | None = None) -> None:
        self.config = config
        self.api: ClusterApi | None = api
        self.bodies: dict[Key, dict[str, Any]] = {}
        self.jobs_index: JobsIndex | None = None
        self.deployments_index: DeploymentsIndex | None = None
        #: (pod, stage, kubelet message) of our pods waiting in CreateContainerConfigError, per resource key.
        self.pods_index: Any = None
        self.queue: asyncio.Queue[Key] | None = None
        self.queued: set[Key] = set()
        self.processing: set[Key] = set()
        self.dirty: set[Key] = set()
        self.tasks: list[asyncio.Task] = []
        #: (plural, namespace, name, owner uid, digest of what was ensured): children known to be ours and current.
        self.ensured: set[tuple[str, str, str, str, str]] = set()
        self.ref_cache: dict[tuple[str, str, str], tuple[float, Any]] = {}
        #: resource key -> (its uid, spec.storage.size, (type, reason) of the last Event `_sync_claim` posted about
        #: its claim for that size, or None).
        self.claim_outcomes: dict[Key, tuple[str, str, tuple[str, str] | None]] = {}
        self.failures: dict[Key, int] = {}

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self.queue = asyncio.Queue()
        self.tasks = [asyncio.create_task(self._worker(i), name=f"eft-worker-{i}") for i in range(self.config.workers)]
        self.tasks.append(asyncio.create_task(self._resync(), name="eft-resync"))

    async def stop(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks = []
        if self.api is not None:
            await self.api.close()

    def resource_changed(self, key: Key, body: dict[str, Any]) -> None:
        """A resource was created, listed or changed: remember its latest body and reconcile it."""
        self.bodies[key] = body
        self.enqueue(key)

    def resource_deleted(self, key: Key) -> None:
        """A resource is gone: forget it (its children go with their owner references)."""
        self.bodies.pop(key, None)
        self.claim_outcomes.pop(key, None)
        metrics.forget(*key)

    def enqueue(self, key: Key) -> None:
        if self.queue is None or key in self.queued:
            return
        self.queued.add(key)
        self.queue.put_nowait(key)
        metrics.QUEUE_DEPTH.set(len(self.queued))

    async def _worker(self, _: int) -> None:
        assert self.queue is not None
        while True:
            key = await self.queue.get()
            self.queued.discard(key)
            metrics.QUEUE_DEPTH.set(len(self.queued))
            if key in self.processing:
                self.dirty.add(key)
                continue
            self.processing.add(key)
            started = time.monotonic()
            try:
                await self.reconcile(key)
                metrics.RECONCILES.labels("ok").inc()
                self.failures.pop(key, None)
            except Exception as err:  # noqa: BLE001 - one resource must never stop the others
                metrics.RECONCILES.labels("error").inc()
                metrics.ERRORS.labels(type(err).__name__).inc()
                n = self.failures[key] = self.failures.get(key, 0) + 1
                delay = min(60.0, 0.5 * 2 ** min(n, 7))
                log.warning("reconcile of %s/%s failed (retry in %.1fs): %s", *key, delay, err)
                asyncio.get_running_loop().call_later(delay, self.enqueue, key)
            finally:
                metrics.RECONCILE_SECONDS.observe(time.monotonic() - started)
                self.processing.discard(key)
                if key in self.dirty:
                    self.dirty.discard(key)
                    self.enqueue(key)

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.config.resync_seconds)
            self.ensured.clear()
            for key in list(self.bodies):
                self.enqueue(key)

    # ------------------------------------------------------------------ reconcile
    def _children(self, index: Mapping[Key, Collection[Any]] | None, key: Key) -> list[Any]:
        if index is None:
            return []
        try:
            return list(index.get(key, []))
        except Exception:  # noqa: BLE001
            return []

    async def reconcile(self, key: Key) -> None:
        body = self.bodies.get(key)
        if body is None or self.api is None:
            return
        ns, name = key
        meta = body.get("metadata") or {}
        generation = int(meta.get("generation") or 1)
        deleting = bool(meta.get("deletionTimestamp"))
        old_status = body.get("status") or {}
        now = now_iso()
        resource, problems = validate(body)
        spec_problem: tuple[str, str] | None = None
        plan: Plan = Plan()
        claim = model_path = None
        refused: ChildRejected | None = None
        if resource is None:
            spec_problem = ("InvalidSpec", format_problems(problems))
        else:
            spec = resource.spec
            spec_problem = (self._runtime_problem(spec) or await self._check_references(ns, spec)
                            or self._pod_config_problem(key, spec))
            if spec_problem is None:
                owner = Owner.from_body(body)
                hashes = plan_hashes(spec, None)
                recorded = old_status.get("stages") or {}
                observed = await self._observe(key, owner, body, spec, hashes, recorded)
                endpoint = manifests.endpoint_url(name, ns, spec)
                plan = plan_stages(name, generation, spec, hashes, recorded, observed, spec.suspend, deleting, endpoint,
                                   retry=owner.retry)
                self._report_image_problem(key, plan)
                if not deleting:
                    try:
                        await self._execute(plan, owner, body, spec, hashes, observed)
                    except ChildRejected as err:
                        refused = err
                        _report_refusal(plan, err)
                    if not observed.foreign:
                        try:
                            await self._sync_claim(owner, body, spec, now)
                        except Exception as err:  # noqa: BLE001 - the claim's size never keeps the status unwritten
                            log.warning("could not bring the workspace claim of %s/%s to spec.storage.size (tried "
                                        "again at the next reconcile): %s", ns, name, err)
                claim, model_path = manifests.workspace_claim(name, spec), manifests.model_dir(spec)
        new_status = compute_status(old_status, plan, generation, spec_problem, now, claim, model_path)
        await self._write_status(key, body, old_status, new_status, now)
        if refused is not None:
            raise refused  # retried with back-off: a quota or an admission policy may change

    async def _write_status(self, key: Key, body: dict[str, Any], old_status: dict[str, Any],
                            new_status: dict[str, Any], now: str) -> None:
        assert self.api is not None
        api, (ns, name) = self.api, key
        patch = merge_patch(old_status, new_status)
        if not patch:
            return
        try:
            updated = await api.patch(EFTS, ns, name, {"status": patch}, sub="status")
        except kube.NotFound:
            return
        if key in self.bodies and isinstance(updated, dict):
            self.bodies[key] = updated
        metrics.record_status(ns, name, old_status, new_status)
        for type_, reason, message in transition_events(old_status, new_status):
            await self._event(body, type_, reason, message, now)

    async def _observe(self, key: Key, owner: Owner, body: dict[str, Any], spec, hashes: dict[str, str],
                       recorded: dict[str, Any]) -> Observed:
        """This incarnation's children (controller owner uid = the resource's uid), the children of an earlier
        resource of the same name that still exist, the termination messages still to copy, and what keeps the
        current server pods from running."""
        ns, name = key
        observed = Observed()
        for kind, index, into in (("Job", self.jobs_index, observed.jobs),
                                  ("Deployment", self.deployments_index, observed.deployments)):
            for child in self._children(index, key):
                if child.owner_uid == owner.uid:
                    into[child.name] = child
                else:
                    observed.foreign.append(f"{kind} {child.name}")
        assert self.api is not None
        cm_name = manifests.spec_configmap(owner, body, spec)["metadata"]["name"]
        foreign = [await self._foreign(SERVICES, "Service", ns, manifests.service_name(name), owner),
                   await self._foreign(CONFIGMAPS, "ConfigMap", ns, cm_name, owner)]
        if not spec.storage.claim_name:
            foreign.append(await self._foreign(PVCS, "PersistentVolumeClaim", ns,
                                               manifests.workspace_claim(name, spec), owner))
        observed.foreign += [f for f in foreign if f]
        if observed.foreign:
            return observed
        for job_name in summaries_needed(observed, recorded):
            term = await self._read_termination(ns, observed.jobs[job_name])
            if term is None:
                observed.pods_gone.add(job_name)
            else:
                observed.summaries[job_name] = term
        for job in observed.jobs.values():
            if (job.not_started and job.spec_hash and job.stage in hashes
                    and job.name == manifests.child_name(name, job.stage, hashes[job.stage])):
                want = self._job_manifest(owner, spec, job.stage, hashes, cm_name)
                if want["metadata"]["annotations"][manifests.ANN_SPEC_HASH] != job.spec_hash:
                    observed.outdated.add(job.name)
        dep = observed.deployments.get(manifests.child_name(name, "deploy", hashes["deploy"]))
        if dep is not None and rollout_wait(dep, spec.deploy.replicas) is not None:
            pods = await self.api.list(PODS, ns, label_selector=f"{LABEL_RESOURCE}={name},{LABEL_COMPONENT}=server")
            current = [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_HASH)
                       == hashes["deploy"][:8]]
            observed.server_problem = server_pod_problem(current)
        return observed

    async def _foreign(self, res: Res, kind: str, ns: str, name: str, owner: Owner) -> str | None:
        """"<kind> <name>" when that object exists with another controller owner (an earlier incarnation)."""
        if any(k[:4] == (res.plural, ns, name, owner.uid) for k in self.ensured):
            return None
        assert self.api is not None
        obj = await self.api.get(res, ns, name)
        return f"{kind} {name}" if obj is not None and controller_uid(obj) != owner.uid else None

    async def _check_references(self, ns: str, spec) -> tuple[str, str] | None:
        """ClaimNotFound for a workspace claim that does not exist (cached briefly).

        Secrets are never read (the operator has no access to them): a missing Secret or key shows up as a stage
        or server pod waiting in `CreateContainerConfigError`, which `_pod_config_problem` reports."""
        if spec.storage.claim_name:
            if await self._cached_get(PVCS, ns, spec.storage.claim_name) is None:
                return "ClaimNotFound", (f"spec.storage.claimName: PersistentVolumeClaim "
                                         f"{spec.storage.claim_name!r} not found in namespace {ns!r}")
        return None

    def _runtime_problem(self, spec) -> tuple[str, str] | None:
        """InvalidSpec for containers the API server would refuse as the operator builds them (its defaults
        under the resource's runtime settings): `eft.controller.validation.runtime_problems`."""
        problems = runtime_problems(spec, self.config)
        return ("InvalidSpec", format_problems(problems)) if problems else None

    def _pod_config_problem(self, key: Key, spec) -> tuple[str, str] | None:
        """SecretNotFound when one of our pods cannot start because a Secret (or key) it names is missing: the
        kubelet's `CreateContainerConfigError` message, e.g. `secret "llm-key" not found`, names it."""
        waiting = sorted(w for w in self._children(self.pods_index, key) if w[2] == "CreateContainerConfigError")
        if not waiting:
            return None
        pod, stage, _, message = waiting[0]
        fields = ", ".join(sorted({f for f, _, _ in secret_refs(spec)})) or "a Secret reference"
        return "SecretNotFound", f"{stage} pod {pod} cannot start: {message} (check {fields})"

    def _report_image_problem(self, key: Key, plan: Plan) -> None:
        """A pod of the running stage whose image cannot be pulled (`STAGE_POD_BLOCKED`) makes the stage and the
        resource Failed with the kubelet's reason, instead of 'running' until the Job's deadline. Planning has
        run as usual, so a corrected image reaches a Job that has not started (JobOutdated)."""
        stage = plan.current_stage
        st = plan.stages.get(stage) if stage else None
        if st is None or st.phase != "Running":
            return
        waiting = sorted(w for w in self._children(self.pods_index, key)
                         if w[1] == stage and w[2] in STAGE_POD_BLOCKED - {"CreateContainerConfigError"})
        if not waiting:
            return
        pod, _, reason, message = waiting[0]
        _fail_stage(plan, stage, reason, f"{stage} pod {pod} cannot start: {reason}: {message} (check "
                                         f"spec.runtime.stages.{stage}.image, spec.runtime.image or the operator's "
                                         "pipeline image, and the registry's credentials)")

    async def _cached_get(self, res: Res, ns: str, name: str) -> dict[str, Any] | None:
        ck = (res.plural, ns, name)
        hit = self.ref_cache.get(ck)
        if hit and time.monotonic() - hit[0] < self.config.ref_cache_seconds:
            return hit[1]
        assert self.api is not None
        obj = await self.api.get(res, ns, name)
        # Keep only what the checks need (never the Secret's values).
        slim = None if obj is None else {"data": {k: "" for k in (obj.get("data") or {})},
                                          "stringData": {k: "" for k in (obj.get("stringData") or {})}}
        self.ref_cache[ck] = (time.monotonic(), slim)
        return slim

    async def _read_termination(self, ns: str, job: JobObs) -> dict[str, Any] | None:
        """The termination message of `job`'s newest finished pod; only pods this Job owns (by uid) count, never
        those of an earlier Job of the same name. None when no such pod is left."""
        assert self.api is not None
        pods = await self.api.list(PODS, ns, label_selector=f"job-name={job.name}")
        mine = [pod for pod in pods if not job.uid or controller_uid(pod) == job.uid]
        return parse_termination(mine)

    async def _ensure(self, res: Res, ns: str, obj: dict[str, Any], owner: Owner,
                      synced: tuple[str, ...] = ()) -> dict[str, Any] | None:
        """Create unless it exists. Returns the live object when one of ours already existed and differs from
        `obj` in the `spec` fields named in `synced` (the caller patches it), else None. An existing object of
        another owner is left alone: `_observe` reports it and the plan waits for it to go."""
        name = obj["metadata"]["name"]
        ck = (res.plural, ns, name, owner.uid, digest({k: obj.get("spec", {}).get(k) for k in synced}))
        if ck in self.ensured:
            return None
        assert self.api is not None
        live = None
        try:
            _, created = await self.api.create(res, ns, obj)
        except kube.ApiError as err:
            # A full quota answers 403 before AlreadyExists: an object that exists is no refusal.
            live = await self.api.get(res, ns, name) if err.status == 403 else None
            if live is None:
                raise
            created = False
        stale = None
        if not created:
            live = live or await self.api.get(res, ns, name)
            if live is None or controller_uid(live) != owner.uid:
                return None  # gone meanwhile, or an earlier incarnation's: the next reconcile sees it
            if not _contains(live.get("spec") or {}, {k: obj["spec"][k] for k in synced}):
                stale = live
        self._remember(ck)
        return stale

    def _remember(self, ck: tuple[str, str, str, str, str]) -> None:
        """`ck` (plural, namespace, name, owner uid, digest) is current: it replaces any entry of the same object."""
        self.ensured = {k for k in self.ensured if k[:4] != ck[:4]} | {ck}

    async def _ensure_service(self, ns: str, svc: dict[str, Any], owner: Owner) -> None:
        """The server Service, its ports and selector kept equal to the spec (e.g. an edited `deploy.port`)."""
        synced = ("ports", "selector")
        if await self._ensure(SERVICES, ns, svc, owner, synced) is not None:
            assert self.api is not None
            await self.api.patch(SERVICES, ns, svc["metadata"]["name"], {"spec": {k: svc["spec"][k] for k in synced}})
            log.info("patched Service %s/%s to the spec", ns, svc["metadata"]["name"])

    async def _sync_claim(self, owner: Owner, body: dict[str, Any], spec, now: str) -> None:
        """An edited `spec.storage.size` reaches the workspace claim the operator created (a claim named in
        `spec.storage.claimName` is the user's and left alone; `manifests.claim_size_change` says what Kubernetes
        allows): a larger size, or a smaller one still above the claim's capacity (retreating from an expansion
        that could not finish), is merge-patched onto the claim (Event `ClaimExpansionRequested`; the claim's
        storage driver does the resizing). One the API server refuses (a StorageClass without
        `allowVolumeExpansion`, a claim not bound yet, a quota) or a size at or below the capacity (Kubernetes
        never shrinks a claim) leaves the claim as it is, with a Warning Event saying why
        (`ClaimExpansionRefused`, `ClaimShrinkUnsupported`), posted once per size and reason while the operator
        runs, not at every retry. Neither stops or re-runs a stage, and what the workspace holds is kept. A claim
        that does not exist yet is created at the spec's size with the next stage Job. Each size is checked
        once, and again at every resync (a class may have been made expandable). API errors other than a
        refusal propagate (the caller logs them; the next reconcile tries again)."""
        pvc = manifests.workspace_pvc(owner, spec)
        if pvc is None:
            return
        ns, name, size = owner.namespace, pvc["metadata"]["name"], spec.storage.size
        ck = (f"{PVCS.plural}/size", ns, name, owner.uid, digest(size))
        if ck in self.ensured:
            return
        assert self.api is not None
        live = await self.api.get(PVCS, ns, name)
        # absent: the next stage Job creates it at this size; another owner's: `_observe` reports it
        mine = live is not None and controller_uid(live) == owner.uid
        change = manifests.claim_size_change(live, size) if mine else None
        outcome: tuple[str, str, str] | None = None
        if change is not None:
            what, requested, capacity = change
            claim, before = f"PersistentVolumeClaim {name}", requested or "no request"
            if what == "shrink":
                limit = f"capacity {capacity}" if capacity else f"request {requested}"
                outcome = ("Warning", "ClaimShrinkUnsupported",
                           f"spec.storage.size {size} is not above {claim}'s {limit}: Kubernetes cannot shrink a "
                           f"claim, so it keeps its request of {requested}")
            else:
                try:
                    await self.api.patch(PVCS, ns, name, manifests.claim_size_patch(size))
                except kube.NotFound:
                    return  # deleted meanwhile: the next stage Job creates it at this size
                except kube.ApiError as err:
                    if err.status not in REFUSED_STATUS:
                        raise
                    outcome = ("Warning", "ClaimExpansionRefused",
                               f"{claim} cannot go from {before} to {size} (spec.storage.size): {err.message}")
                else:
                    log.info("asked %s/%s for %s instead of %s", ns, name, size, before)
                    how = (f"grow from {before} to {size}" if what == "grow" else
                           f"request {size} instead of {before}, above its capacity {capacity} (retreating from "
                           f"an expansion that did not finish)")
                    outcome = ("Normal", "ClaimExpansionRequested",
                               f"asked {claim} to {how} (spec.storage.size); its storage driver resizes the volume")
        key, seen = (ns, owner.name), (owner.uid, size, outcome[:2] if outcome else None)
        if outcome is not None and self.claim_outcomes.get(key) != seen:
            await self._event(body, *outcome, now)
        self.claim_outcomes[key] = seen
        self._remember(ck)

    def _job_manifest(self, owner: Owner, spec, stage: str, hashes: dict[str, str], cm_name: str) -> dict[str, Any]:
        if stage == "verify":
            return manifests.verify_job(owner, spec, hashes, cm_name, self.config)
        return manifests.stage_job(owner, spec, stage, hashes, cm_name, self.config)

    async def _sync_deployment(self, ns: str, desired: dict[str, Any], dep: DeploymentObs | None) -> None:
        """Patch the live server Deployment to `desired` when its spec hash or replicas differ."""
        assert self.api is not None
        want_hash = desired["metadata"]["annotations"][manifests.ANN_SPEC_HASH]
        if dep is not None and dep.spec_hash == want_hash and dep.replicas == desired["spec"]["replicas"]:
            return
        name = desired["metadata"]["name"]
        live = await self.api.get(DEPLOYMENTS, ns, name)
        if live is None:
            return
        await self.api.patch(DEPLOYMENTS, ns, name, manifests.deployment_patch(live, desired))
        log.info("patched Deployment %s/%s to the spec", ns, name)

    async def _execute(self, plan: Plan, owner: Owner, body: dict[str, Any], spec, hashes: dict[str, str],
                       observed: Observed) -> None:
        """Carry out the plan's actions in order. Raises `ChildRejected` when the API server refuses what the
        operator built (the spec, or the operator's defaults, must change); other API errors propagate."""
        for action in plan.actions:
            try:
                await self._act(action, owner, body, spec, hashes, observed)
            except kube.ApiError as err:
                if err.status in REFUSED_STATUS:
                    raise ChildRejected(action, err) from err
                raise

    async def _act(self, action: Action, owner: Owner, body: dict[str, Any], spec, hashes: dict[str, str],
                   observed: Observed) -> None:
        assert self.api is not None
        api, ns, cfg = self.api, owner.namespace, self.config
        if action.kind is ActionKind.CREATE_JOB:
            pvc = manifests.workspace_pvc(owner, spec)
            if pvc is not None:
                await self._ensure(PVCS, ns, pvc, owner)
            cm = manifests.spec_configmap(owner, body, spec)
            await self._ensure(CONFIGMAPS, ns, cm, owner)
            if action.stage == "train":
                svc = manifests.train_headless_service(owner, spec, hashes)
                if svc is not None:
                    await self._ensure(SERVICES, ns, svc, owner)
            job = self._job_manifest(owner, spec, action.stage, hashes, cm["metadata"]["name"])
            _, created = await api.create(JOBS, ns, job)
            if created:
                metrics.JOBS_CREATED.labels(action.stage).inc()
                log.info("created Job %s/%s", ns, action.name)
        elif action.kind is ActionKind.DELETE_JOB:
            await api.delete(JOBS, ns, action.name, propagation=action.propagation)
            log.info("deleted Job %s/%s (to run it again, or superseded by a newer spec)", ns, action.name)
        elif action.kind is ActionKind.ENSURE_SERVICE:
            await self._ensure_service(ns, manifests.server_service(owner, spec), owner)
        elif action.kind is ActionKind.SYNC_DEPLOYMENT:
            await self._sync_deployment(ns, manifests.server_deployment(owner, spec, hashes, cfg),
                                        observed.deployments.get(action.name))
        elif action.kind is ActionKind.CREATE_DEPLOYMENT:
            _, created = await api.create(DEPLOYMENTS, ns, manifests.server_deployment(owner, spec, hashes, cfg))
            if created:
                log.info("created Deployment %s/%s", ns, action.name)
        elif action.kind is ActionKind.DELETE_DEPLOYMENT:
            await api.delete(DEPLOYMENTS, ns, action.name)
            log.info("deleted superseded Deployment %s/%s", ns, action.name)

    async def _event(self, body: dict[str, Any], type_: str, reason: str, message: str, now: str) -> None:
        assert self.api is not None
        ns = (body.get("metadata") or {}).get("namespace") or "default"
        try:
            await self.api.create(EVENTS, ns, manifests.event(body, type_, reason, message, now,
                                                                      self.config.instance))
        except kube.ApiError as err:
            log.debug("could not post Event %s: %s", reason, err)


def _contains(live: Any, want: Any) -> bool:
    """True when `live` carries every value of `want` (dicts by key, lists item by item, same length): fields the
    API server added (defaults) do not count as a difference."""
    if isinstance(want, dict):
        return isinstance(live, dict) and all(_contains(live.get(k), v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(live, list) and len(live) == len(want) and all(map(_contains, live, want))
    return live == want
