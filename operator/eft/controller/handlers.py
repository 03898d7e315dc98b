"""The Kopf glue: registrations that feed `eft.controller.reconciler.Reconciler`, and nothing else.

Kopf watches the resources and the labelled children (Jobs, Deployments) and keeps the children in two typed
indices; every event only *enqueues* the owning resource, and the reconciler's workers do the rest. The
reconciler is built by `eft operator` from the `OperatorConfig` and handed over in Kopf's `memo`
(`memo.reconciler`), so this module holds no state of its own.

No Kopf daemons, timers or deletion handlers are used, so Kopf puts no finalizer on the resource: children
go away through their owner references.
"""

from __future__ import annotations

import logging
from typing import Any

import kopf

from eft.api.spec import API_GROUP, API_VERSION, PLURAL
from eft.controller.config import OPERATOR_NAME
from eft.controller.kube import KubeApi
from eft.controller.manifests import LABEL_MANAGED_BY, LABEL_RESOURCE, LABEL_STAGE
from eft.controller.plan import DeploymentObs, JobObs, blocked_pod, observe_deployment, observe_job
from eft.controller.reconciler import Key, Reconciler

MANAGED = {LABEL_MANAGED_BY: OPERATOR_NAME}

#: The Kopf indices of the children, by owning resource key.
JobsIndex = kopf.Index[Key, JobObs]
DeploymentsIndex = kopf.Index[Key, DeploymentObs]


def _reconciler(memo: Any) -> Reconciler:
    return memo.reconciler


@kopf.on.startup()
async def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    reconciler = _reconciler(memo)
    settings.persistence.finalizer = f"{API_GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=API_GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=API_GROUP, key="last-handled-configuration")
    settings.posting.level = logging.WARNING  # our own Events mark transitions; Kopf posts only its problems
    settings.posting.reporting_component = f"{API_GROUP}/{OPERATOR_NAME}"
    # An integer: kube-apiserver refuses `timeoutSeconds=300.0` on watches (400, strconv.ParseInt).
    settings.watching.server_timeout = int(reconciler.config.watch_timeout_seconds)
    settings.watching.client_timeout = settings.watching.server_timeout + 30
    settings.networking.request_timeout = 60
    settings.execution.max_workers = 4
    reconciler.start()


@kopf.on.login()
def login(memo: kopf.Memo, **kwargs: Any) -> Any:
    """Kopf's own service-account/kubeconfig login (no `kubernetes` import needed); the client library as fallback."""
    info = kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
    if info is None:
        info = kopf.login_via_client(**kwargs)
    if info is not None:
        reconciler = _reconciler(memo)
        if reconciler.api is None:
            reconciler.api = KubeApi.from_connection_info(info, relogin=lambda: login(memo=memo, **kwargs))
        elif isinstance(reconciler.api, KubeApi):  # a re-login (expired token): keep the session, new credentials
            reconciler.api.headers = info.as_http_headers()
    return info


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    await _reconciler(memo).stop()


@kopf.on.probe(id="reconciler")
def reconciler_probe(memo: kopf.Memo, **_: Any) -> dict[str, int]:
    reconciler = _reconciler(memo)
    return {"resources": len(reconciler.bodies), "queued": len(reconciler.queued),
            "workers": sum(1 for t in reconciler.tasks if not t.done())}


@kopf.index("batch", "v1", "jobs", labels=MANAGED)
def eft_jobs(namespace: str, labels: dict[str, str], body: kopf.Body, **_: Any) -> dict[Key, JobObs]:
    owner = labels.get(LABEL_RESOURCE)
    return {(namespace, owner): observe_job(body)} if owner else {}


@kopf.index("apps", "v1", "deployments", labels=MANAGED)
def eft_deployments(namespace: str, labels: dict[str, str], body: kopf.Body, **_: Any) -> dict[Key, DeploymentObs]:
    owner = labels.get(LABEL_RESOURCE)
    return {(namespace, owner): observe_deployment(body)} if owner else {}


@kopf.index("", "v1", "pods", labels=MANAGED)
def eft_waiting_pods(namespace: str, name: str, labels: dict[str, str], status: dict[str, Any],
                     **_: Any) -> dict[Key, tuple[str, str, str, str]]:
    """Our pods that cannot start (`blocked_pod`): a missing Secret or key, or a stage image that cannot be
    pulled. The operator never reads Secrets; this is how it learns that a referenced one is missing."""
    owner = labels.get(LABEL_RESOURCE)
    blocked = blocked_pod(name, labels, status) if owner else None
    return {(namespace, owner): blocked} if blocked else {}


@kopf.on.event("", "v1", "pods", labels=MANAGED)
def pod_event(namespace: str, labels: dict[str, str], memo: kopf.Memo, **_: Any) -> None:
    if labels.get(LABEL_RESOURCE):
        _reconciler(memo).enqueue((namespace, labels[LABEL_RESOURCE]))


@kopf.on.event(API_GROUP, API_VERSION, PLURAL)
def resource_event(event: dict[str, Any], namespace: str, name: str, eft_jobs: JobsIndex,
                   eft_deployments: DeploymentsIndex, eft_waiting_pods: Any, memo: kopf.Memo, **_: Any) -> None:
    """Create, resume (the initial listing) and every change: remember the latest body and enqueue it."""
    reconciler = _reconciler(memo)
    reconciler.jobs_index, reconciler.deployments_index = eft_jobs, eft_deployments
    reconciler.pods_index = eft_waiting_pods
    if event.get("type") == "DELETED":
        reconciler.resource_deleted((namespace, name))
    else:
        reconciler.resource_changed((namespace, name), event["object"])


@kopf.on.event("batch", "v1", "jobs", labels=MANAGED)
def job_event(namespace: str, labels: dict[str, str], memo: kopf.Memo, **_: Any) -> None:
    if labels.get(LABEL_RESOURCE):
        _reconciler(memo).enqueue((namespace, labels[LABEL_RESOURCE]))


@kopf.on.event("apps", "v1", "deployments", labels=MANAGED)
def deployment_event(namespace: str, labels: dict[str, str], memo: kopf.Memo, **_: Any) -> None:
    if labels.get(LABEL_RESOURCE):
        _reconciler(memo).enqueue((namespace, labels[LABEL_RESOURCE]))
