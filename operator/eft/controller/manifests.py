"""Pure builders of every object the controller creates (no cluster access; tested with kubernetes-validate).

Names are deterministic (`<resource>-<stage>-<hash8>` for stage children), every child carries an owner
reference to the resource (controller=true) and the `app.kubernetes.io/*` labels.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import yaml

from eft.api.serving import ServingSettings
from eft.api.spec import API_GROUP, API_VERSION, KIND, RESOURCE_NAME_MAX, EmbeddingFinetuneSpec, StageRuntime
from eft.controller.config import OPERATOR_NAME, OperatorConfig
from eft.controller.merge import merge_patch
from eft.hashing import digest

APP_NAME = "embedding-finetune"

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_PART_OF = "app.kubernetes.io/part-of"
LABEL_RESOURCE = f"{API_GROUP}/resource"
LABEL_STAGE = f"{API_GROUP}/stage"
LABEL_HASH = f"{API_GROUP}/config-hash"
ANN_CONFIG_HASH = f"{API_GROUP}/config-hash"
ANN_GENERATION = f"{API_GROUP}/generation"
ANN_SPEC_CONFIGMAP = f"{API_GROUP}/spec-configmap"
#: On the resource: set to a new value to retry a failed stage without a spec change. Copied onto each Job.
ANN_RETRY = f"{API_GROUP}/retry"
#: On the server Deployment: digest of the replicas and pod template the operator wrote (drift means patch); on a
#: stage Job: digest of its whole spec (a Job that has not started and no longer matches is replaced).
ANN_SPEC_HASH = f"{API_GROUP}/spec-hash"

SPEC_MOUNT = "/etc/eft"
SPEC_FILE = "resource.yaml"
WORKSPACE_MOUNT = "/workspace"
CORPUS_MOUNT = "/mnt/corpus"
CONTAINER_NAME = "stage"
SERVER_CONTAINER = "server"
TERMINATION_PATH = "/dev/termination-log"
EXIT_INVALID_INPUT = 2
#: The user the project's images run as (images/*/Dockerfile: `USER 65532:65532`); the workspace claim is made
#: writable for it through fsGroup.
IMAGE_UID = 65532
#: Every stage and server pod meets the "restricted" Pod Security Standard, as the operator's own pod does.
POD_SECURITY_CONTEXT = {"runAsNonRoot": True, "runAsUser": IMAGE_UID, "runAsGroup": IMAGE_UID, "fsGroup": IMAGE_UID,
                        "seccompProfile": {"type": "RuntimeDefault"}}
CONTAINER_SECURITY_CONTEXT = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
TORCH_MASTER_PORT = 29500


def _merge_layer(merged: dict[str, Any], layer: dict[str, Any] | None) -> None:
    """Key by key; `resources` requests/limits and `nodeSelector` merge per entry."""
    for key, value in (layer or {}).items():
        if value is None:
            continue
        if key in ("resources", "nodeSelector") and isinstance(merged.get(key), dict) and isinstance(value, dict):
            if key == "resources":
                merged[key] = {part: {**(merged[key].get(part) or {}), **(value.get(part) or {})}
                               for part in ("requests", "limits")}
            else:
                merged[key] = {**merged[key], **value}
        else:
            merged[key] = value


@dataclass(frozen=True)
class Owner:
    """What children need to know about the resource that owns them."""

    name: str
    namespace: str
    uid: str
    generation: int = 1
    #: The resource's `ANN_RETRY` annotation ("" when unset).
    retry: str = ""

    @classmethod
    def from_body(cls, body: dict[str, Any]) -> "Owner":
        meta = body.get("metadata", {})
        return cls(name=meta["name"], namespace=meta.get("namespace") or "default", uid=meta.get("uid") or "",
                   generation=int(meta.get("generation") or 1),
                   retry=str((meta.get("annotations") or {}).get(ANN_RETRY) or ""))


# ----------------------------------------------------------------------------- names
# The longest child name, a Job `<resource>-verify-<hash8>`, must fit a 63-character label value.
assert RESOURCE_NAME_MAX + len("-verify-") + 8 <= 63


def child_name(resource: str, stage: str, config_hash: str) -> str:
    """`<resource>-<stage>-<hash8>`: deterministic, so a restarted operator finds what it created."""
    return f"{resource}-{stage}-{config_hash[:8]}"


def workspace_claim(resource: str, spec: EmbeddingFinetuneSpec) -> str:
    return spec.storage.claim_name or f"{resource}-workspace"


def service_name(resource: str) -> str:
    return f"{resource}-server"


def endpoint_url(resource: str, namespace: str, spec: EmbeddingFinetuneSpec) -> str:
    return f"http://{service_name(resource)}.{namespace}.svc:{spec.deploy.port}"


# ----------------------------------------------------------------------------- metadata helpers
def labels(owner: Owner, component: str, stage: str | None = None, config_hash: str | None = None) -> dict[str, str]:
    out = {
        LABEL_NAME: APP_NAME,
        LABEL_INSTANCE: owner.name,
        LABEL_COMPONENT: component,
        LABEL_MANAGED_BY: OPERATOR_NAME,
        LABEL_PART_OF: OPERATOR_NAME,
        LABEL_RESOURCE: owner.name,
    }
    if stage:
        out[LABEL_STAGE] = stage
    if config_hash:
        out[LABEL_HASH] = config_hash[:8]
    return out


def owner_reference(owner: Owner) -> dict[str, Any]:
    return {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "name": owner.name, "uid": owner.uid,
            "controller": True, "blockOwnerDeletion": True}


def metadata(owner: Owner, name: str, component: str, stage: str | None = None, config_hash: str | None = None,
             annotations: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "name": name,
        "namespace": owner.namespace,
        "labels": labels(owner, component, stage, config_hash),
        "ownerReferences": [owner_reference(owner)],
    }
    if annotations:
        meta["annotations"] = annotations
    return meta


# ----------------------------------------------------------------------------- spec hand-over
def pod_resource_document(body: dict[str, Any], spec: EmbeddingFinetuneSpec) -> dict[str, Any]:
    """The resource as the pods read it: PVC/ConfigMap corpus sources become the folder they are mounted at."""
    spec_dict = spec.model_dump(mode="json", by_alias=True, exclude_none=True)
    src = spec.corpus.source
    if src.pvc is not None:
        sub = src.pvc.sub_path.strip("/")
        spec_dict["corpus"]["source"] = {"path": f"{CORPUS_MOUNT}/{sub}" if sub else CORPUS_MOUNT}
    elif src.config_map is not None:
        spec_dict["corpus"]["source"] = {"path": CORPUS_MOUNT}
    meta = body.get("metadata", {})
    return {
        "apiVersion": f"{API_GROUP}/{API_VERSION}",
        "kind": KIND,
        "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "generation") if meta.get(k) is not None},
        "spec": spec_dict,
    }


def spec_configmap(owner: Owner, body: dict[str, Any], spec: EmbeddingFinetuneSpec) -> dict[str, Any]:
    """Immutable ConfigMap with the whole resource YAML; its name carries a digest of the content."""
    doc = pod_resource_document(body, spec)
    content_hash = digest(doc["spec"])
    name = f"{owner.name}-spec-{content_hash[:8]}"
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(owner, name, "spec", config_hash=content_hash),
        "immutable": True,
        "data": {SPEC_FILE: yaml.safe_dump(doc, sort_keys=False)},
    }


def workspace_pvc(owner: Owner, spec: EmbeddingFinetuneSpec) -> dict[str, Any] | None:
    """The workspace claim to create, or None when the spec names an existing claim."""
    if spec.storage.claim_name:
        return None
    pvc_spec: dict[str, Any] = {
        "accessModes": list(spec.storage.access_modes),
        "resources": {"requests": {"storage": spec.storage.size}},
    }
    if spec.storage.storage_class_name is not None:  # "" asks for no class, as in Kubernetes
        pvc_spec["storageClassName"] = spec.storage.storage_class_name
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata(owner, workspace_claim(owner.name, spec), "workspace"),
        "spec": pvc_spec,
    }


def claim_size_change(live_pvc: dict[str, Any], size: str) -> tuple[str, str, str] | None:
    """What `spec.storage.size` (a Kubernetes quantity) asks of the live workspace claim the operator created, as
    (action, the claim's request, its capacity), or None when the claim already requests that much (compared by
    value, so 1Gi is 1024Mi). The request is the claim's `spec.resources.requests.storage` and the capacity its
    `status.capacity.storage`, as the API server wrote them ("" where absent, e.g. a claim not bound yet).

    Actions, by Kubernetes' rules for a claim's size: "grow" (more than the request; the API server grows a bound
    claim whose StorageClass has `allowVolumeExpansion`), "lower" (less than the request but more than the
    capacity: how RecoverVolumeExpansionFailure, on by default since Kubernetes 1.32, lets a user retreat from an
    expansion that could not finish; older API servers refuse it), "shrink" (at or below the capacity, or below
    the request of a claim without one: never allowed). Quantities are parsed by the kubernetes client's
    `parse_quantity`; an unreadable request counts as needing the spec's size."""
    from kubernetes.utils.quantity import parse_quantity

    def quantity(obj: Any, *path: str) -> str:
        for key in path:
            obj = obj.get(key) if isinstance(obj, dict) else None
        return str(obj or "")

    requested = quantity(live_pvc, "spec", "resources", "requests", "storage")
    capacity = quantity(live_pvc, "status", "capacity", "storage")
    want = parse_quantity(size)
    try:
        current = parse_quantity(requested)
    except ValueError:
        return "grow", requested, capacity
    if want == current:
        return None
    if want > current:
        return "grow", requested, capacity
    try:
        above_capacity = bool(capacity) and want > parse_quantity(capacity)
    except ValueError:
        above_capacity = False
    return ("lower" if above_capacity else "shrink"), requested, capacity


def claim_size_patch(size: str) -> dict[str, Any]:
    """The merge patch that asks the workspace claim for `size` (the claim's storage request)."""
    return {"spec": {"resources": {"requests": {"storage": size}}}}


# ----------------------------------------------------------------------------- stage Jobs
def stage_runtime(spec: EmbeddingFinetuneSpec, stage: str, config: OperatorConfig | None = None) -> StageRuntime:
    """Operator defaults (`all`, then the stage), then `runtime.defaults`, then `runtime.stages.<stage>`."""
    merged: dict[str, Any] = {}
    if config is not None:
        _merge_layer(merged, config.stage_defaults.get("all"))
        _merge_layer(merged, config.stage_defaults.get(stage))
    _merge_layer(merged, spec.runtime.defaults.model_dump(by_alias=True, exclude_none=True))
    per_stage = getattr(spec.runtime.stages, stage, None)
    if per_stage is not None:
        _merge_layer(merged, per_stage.model_dump(by_alias=True, exclude_none=True))
    return StageRuntime.model_validate(merged)


def stage_resources(spec: EmbeddingFinetuneSpec, stage: str,
                    config: OperatorConfig | None = None) -> dict[str, dict[str, str]]:
    rt = stage_runtime(spec, stage, config)
    requests = dict(rt.resources.requests) if rt.resources else {}
    limits = dict(rt.resources.limits) if rt.resources else {}
    if stage == "train" and spec.training.gpus > 0:
        # Extended resources: request == limit.
        limits["nvidia.com/gpu"] = str(spec.training.gpus)
        requests["nvidia.com/gpu"] = str(spec.training.gpus)
    out = {}
    if requests:
        out["requests"] = requests
    if limits:
        out["limits"] = limits
    return out


def server_resources(spec: EmbeddingFinetuneSpec, config: OperatorConfig) -> dict[str, dict[str, str]]:
    """The server container's requests and limits: the operator's server defaults, then `deploy.resources`,
    merged per entry."""
    merged: dict[str, Any] = {}
    _merge_layer(merged, {"resources": (config.server_defaults or {}).get("resources")})
    _merge_layer(merged, {"resources": spec.deploy.resources.model_dump()})
    return {k: dict(v) for k, v in (merged.get("resources") or {}).items() if v}


def _secret_env(name: str, ref) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}}}


def _common_env(owner: Owner, spec: EmbeddingFinetuneSpec, stage: str, config_hash: str) -> list[dict[str, Any]]:
    env = [
        {"name": "EFT_STAGE", "value": stage},
        {"name": "EFT_CONFIG_HASH", "value": config_hash},
        {"name": "EFT_RESOURCE", "value": f"{owner.namespace}/{owner.name}"},
        {"name": "EFT_TERMINATION_MESSAGE_PATH", "value": TERMINATION_PATH},
        {"name": "HF_HOME", "value": f"{WORKSPACE_MOUNT}/.cache/huggingface"},
    ]
    if spec.runtime.hf_token_secret_ref is not None:
        env.append(_secret_env("HF_TOKEN", spec.runtime.hf_token_secret_ref))
    return env


def _corpus_volume(spec: EmbeddingFinetuneSpec) -> dict[str, Any] | None:
    src = spec.corpus.source
    if src.pvc is not None:
        return {"name": "corpus", "persistentVolumeClaim": {"claimName": src.pvc.claim_name, "readOnly": True}}
    if src.config_map is not None:
        return {"name": "corpus", "configMap": {"name": src.config_map.name}}
    return None


def _tolerations(rt: StageRuntime) -> list[dict[str, Any]]:
    return [t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in (rt.tolerations or [])]


def _job(owner: Owner, spec: EmbeddingFinetuneSpec, stage: str, config_hash: str, image: str,
         command: list[str], env: list[dict[str, Any]], volumes: list[dict[str, Any]],
         mounts: list[dict[str, Any]], config: OperatorConfig, extra_annotations: dict[str, str]) -> dict[str, Any]:
    rt = stage_runtime(spec, stage, config)
    name = child_name(owner.name, stage, config_hash)
    pod_labels = labels(owner, stage, stage, config_hash)
    annotations = {ANN_CONFIG_HASH: config_hash, ANN_GENERATION: str(owner.generation), **extra_annotations}
    if owner.retry:
        annotations[ANN_RETRY] = owner.retry
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": image,
        "imagePullPolicy": spec.runtime.image_pull_policy,
        "command": command,
        "env": env,
        "volumeMounts": mounts,
        "terminationMessagePath": TERMINATION_PATH,
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "securityContext": copy.deepcopy(CONTAINER_SECURITY_CONTEXT),
    }
    resources = stage_resources(spec, stage, config)
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",  # required by podFailurePolicy
        "automountServiceAccountToken": False,  # stages make no Kubernetes API calls
        "securityContext": copy.deepcopy(POD_SECURITY_CONTEXT),
        "containers": [container],
        "volumes": volumes,
    }
    if spec.runtime.service_account_name:
        pod_spec["serviceAccountName"] = spec.runtime.service_account_name
    if rt.node_selector:
        pod_spec["nodeSelector"] = dict(rt.node_selector)
    if rt.tolerations:
        pod_spec["tolerations"] = _tolerations(rt)
    job_spec: dict[str, Any] = {
        "backoffLimit": rt.backoff_limit if rt.backoff_limit is not None else config.default_backoff_limit,
        "activeDeadlineSeconds": rt.active_deadline_seconds or config.deadlines.get(stage, 24 * 3600),
        "ttlSecondsAfterFinished": (rt.ttl_seconds_after_finished if rt.ttl_seconds_after_finished is not None
                                    else config.default_ttl_seconds_after_finished),
        "podFailurePolicy": {
            "rules": [
                # Invalid input (exit code 2): retrying cannot help.
                {"action": "FailJob",
                 "onExitCodes": {"containerName": CONTAINER_NAME, "operator": "In", "values": [EXIT_INVALID_INPUT]}},
                # Preempted or evicted (e.g. a reclaimed GPU node): retry without counting against backoffLimit.
                {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            ]
        },
        "template": {
            "metadata": {"labels": pod_labels, "annotations": {ANN_CONFIG_HASH: config_hash}},
            "spec": pod_spec,
        },
    }
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata(owner, name, stage, stage, config_hash, annotations),
        "spec": job_spec,
    }


def _spec_and_workspace(owner: Owner, spec: EmbeddingFinetuneSpec,
                        configmap_name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Volumes and mounts of the resource YAML (read-only, at SPEC_MOUNT) and the workspace (WORKSPACE_MOUNT)."""
    volumes = [
        {"name": "spec", "configMap": {"name": configmap_name}},
        {"name": "workspace", "persistentVolumeClaim": {"claimName": workspace_claim(owner.name, spec)}},
    ]
    mounts = [
        {"name": "spec", "mountPath": SPEC_MOUNT, "readOnly": True},
        {"name": "workspace", "mountPath": WORKSPACE_MOUNT},
    ]
    return volumes, mounts


def stage_job(owner: Owner, spec: EmbeddingFinetuneSpec, stage: str, hashes: dict[str, str],
              configmap_name: str, config: OperatorConfig) -> dict[str, Any]:
    """The Job of one pipeline stage: `eft stage NAME --spec /etc/eft/resource.yaml --workdir /workspace`."""
    config_hash = hashes[stage]
    rt = stage_runtime(spec, stage, config)
    image = rt.image or spec.runtime.image or config.pipeline_image
    command = ["eft", "stage", stage, "--spec", f"{SPEC_MOUNT}/{SPEC_FILE}", "--workdir", WORKSPACE_MOUNT]
    env = _common_env(owner, spec, stage, config_hash)
    if stage == "sdg" and spec.sdg.llm_key_ref is not None:
        # not for the offline generator: it calls no endpoint, and a missing Secret would only block it
        env.append(_secret_env(spec.sdg.api_key_env, spec.sdg.llm_key_ref))
    volumes, mounts = _spec_and_workspace(owner, spec, configmap_name)
    corpus = _corpus_volume(spec)
    if corpus is not None:
        # Every stage recomputes the config hashes, which fingerprint the corpus: mount it everywhere.
        volumes.append(corpus)
        mounts.append({"name": "corpus", "mountPath": CORPUS_MOUNT, "readOnly": True})
    job = _job(owner, spec, stage, config_hash, image, command, env, volumes, mounts, config,
               {ANN_SPEC_CONFIGMAP: configmap_name})
    if stage == "train":
        _add_torch_distributed(job, spec)
    return _stamp(job)


def _stamp(job: dict[str, Any]) -> dict[str, Any]:
    """Record the digest of the Job's spec (`ANN_SPEC_HASH`) on it."""
    job["metadata"]["annotations"][ANN_SPEC_HASH] = digest(job["spec"])
    return job


def _add_torch_distributed(job: dict[str, Any], spec: EmbeddingFinetuneSpec) -> None:
    """torchrun rendezvous variables (the names Kubeflow's torch runtime uses); multi-node = Indexed Job."""
    nodes, gpus = spec.training.nodes, spec.training.gpus
    name = job["metadata"]["name"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    env = container["env"]
    env += [
        {"name": "PET_NNODES", "value": str(nodes)},
        {"name": "PET_NPROC_PER_NODE", "value": str(max(gpus, 1))},
        {"name": "PET_MASTER_PORT", "value": str(TORCH_MASTER_PORT)},
    ]
    if nodes > 1:
        js = job["spec"]
        js["completionMode"] = "Indexed"
        js["completions"] = nodes
        js["parallelism"] = nodes
        js["template"]["spec"]["subdomain"] = name
        env += [
            {"name": "PET_NODE_RANK", "valueFrom": {"fieldRef": {
                "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']"}}},
            {"name": "PET_MASTER_ADDR", "value": f"{name}-0.{name}"},
        ]
        container["ports"] = [{"name": "torch", "containerPort": TORCH_MASTER_PORT}]
    else:
        env += [{"name": "PET_NODE_RANK", "value": "0"}, {"name": "PET_MASTER_ADDR", "value": "localhost"}]


def train_headless_service(owner: Owner, spec: EmbeddingFinetuneSpec, hashes: dict[str, str]) -> dict[str, Any] | None:
    """Headless Service giving multi-node training pods stable DNS names (`<job>-<index>.<job>`)."""
    if spec.training.nodes <= 1:
        return None
    config_hash = hashes["train"]
    name = child_name(owner.name, "train", config_hash)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, name, "train", "train", config_hash),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {LABEL_RESOURCE: owner.name, LABEL_STAGE: "train", LABEL_HASH: config_hash[:8]},
            "ports": [{"name": "torch", "port": TORCH_MASTER_PORT, "targetPort": TORCH_MASTER_PORT}],
        },
    }


def verify_job(owner: Owner, spec: EmbeddingFinetuneSpec, hashes: dict[str, str], configmap_name: str,
               config: OperatorConfig) -> dict[str, Any]:
    """`eft verify` against the live Service: re-runs the BEIR evaluation through the endpoint, with the
    tolerances and config hash of the resource (`--spec`), and writes its report to `/workspace/verify/`."""
    config_hash = hashes["verify"]
    rt = stage_runtime(spec, "verify", config)
    image = rt.image or spec.runtime.image or config.pipeline_image
    command = ["eft", "verify", "--endpoint", endpoint_url(owner.name, owner.namespace, spec),
               "--workdir", WORKSPACE_MOUNT, "--spec", f"{SPEC_MOUNT}/{SPEC_FILE}"]
    volumes, mounts = _spec_and_workspace(owner, spec, configmap_name)
    env = _common_env(owner, spec, "verify", config_hash)
    env = [e for e in env if e["name"] != "HF_HOME"]
    return _stamp(_job(owner, spec, "verify", config_hash, image, command, env, volumes, mounts, config,
                       {ANN_SPEC_CONFIGMAP: configmap_name}))


# ----------------------------------------------------------------------------- serving
def model_dir(spec: EmbeddingFinetuneSpec) -> str:
    return f"{WORKSPACE_MOUNT}/export" if spec.export.onnx.enabled else f"{WORKSPACE_MOUNT}/train/model"


def server_labels(owner: Owner) -> dict[str, str]:
    return {LABEL_RESOURCE: owner.name, LABEL_COMPONENT: "server"}


def server_deployment(owner: Owner, spec: EmbeddingFinetuneSpec, hashes: dict[str, str],
                      config: OperatorConfig) -> dict[str, Any]:
    """`eft serve` behind probes; the workspace is mounted read-only. Named after the deploy config hash.

    The server's command line and environment are `ServingSettings.for_resource` (the hand-off `eft serve`
    parses back); the model is served under the resource's name.
    """
    config_hash = hashes["deploy"]
    name = child_name(owner.name, "deploy", config_hash)
    serving = ServingSettings.for_resource(owner.name, spec, model_dir(spec))
    port = serving.port
    pod_labels = labels(owner, "server", "deploy", config_hash)
    container: dict[str, Any] = {
        "name": SERVER_CONTAINER,
        "image": spec.deploy.image or config.server_image,
        "imagePullPolicy": spec.runtime.image_pull_policy,
        "command": serving.command_line(),
        "env": serving.environment(),
        "ports": [{"name": "http", "containerPort": port}],
        "volumeMounts": [{"name": "workspace", "mountPath": WORKSPACE_MOUNT, "readOnly": True}],
        # Model load can take minutes: the startup probe holds off liveness kills for up to 15 minutes.
        "startupProbe": {"httpGet": {"path": "/v1/health/live", "port": "http"},
                         "periodSeconds": 10, "failureThreshold": 90},
        "livenessProbe": {"httpGet": {"path": "/v1/health/live", "port": "http"},
                          "periodSeconds": 15, "failureThreshold": 4},
        "readinessProbe": {"httpGet": {"path": "/v1/health/ready", "port": "http"},
                           "periodSeconds": 5, "failureThreshold": 3},
        "securityContext": copy.deepcopy(CONTAINER_SECURITY_CONTEXT),
    }
    if spec.runtime.hf_token_secret_ref is not None:
        container["env"].append(_secret_env("HF_TOKEN", spec.runtime.hf_token_secret_ref))
    server: dict[str, Any] = {}
    _merge_layer(server, config.server_defaults)
    _merge_layer(server, {"nodeSelector": spec.runtime.defaults.node_selector,
                          "tolerations": _tolerations(spec.runtime.defaults) or None})
    resources = server_resources(spec, config)
    if resources:
        container["resources"] = resources
    pod_spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # the server makes no Kubernetes API calls
        "securityContext": copy.deepcopy(POD_SECURITY_CONTEXT),
        "containers": [container],
        "volumes": [{"name": "workspace", "persistentVolumeClaim": {
            "claimName": workspace_claim(owner.name, spec), "readOnly": True}}],
    }
    if spec.runtime.service_account_name:
        pod_spec["serviceAccountName"] = spec.runtime.service_account_name
    if server.get("nodeSelector"):
        pod_spec["nodeSelector"] = dict(server["nodeSelector"])
    if server.get("tolerations"):
        pod_spec["tolerations"] = list(server["tolerations"])
    dep_spec: dict[str, Any] = {
        "replicas": spec.deploy.replicas,
        "progressDeadlineSeconds": spec.deploy.progress_deadline_seconds,
        "selector": {"matchLabels": {**server_labels(owner), LABEL_HASH: config_hash[:8]}},
        "template": {"metadata": {"labels": pod_labels, "annotations": {ANN_CONFIG_HASH: config_hash}},
                     "spec": pod_spec},
    }
    # Everything the spec shapes, hashed: a different digest on the live Deployment means it must be patched.
    spec_hash = digest({k: dep_spec[k] for k in ("replicas", "progressDeadlineSeconds", "template")})
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(owner, name, "server", "deploy", config_hash,
                             {ANN_CONFIG_HASH: config_hash, ANN_GENERATION: str(owner.generation),
                              ANN_SPEC_HASH: spec_hash}),
        "spec": dep_spec,
    }


#: The fields of the server Deployment the operator keeps equal to the spec (`deployment_patch`).
DEPLOYMENT_SYNCED = ("replicas", "progressDeadlineSeconds", "template")


def deployment_patch(live: dict[str, Any], desired: dict[str, Any]) -> dict[str, Any]:
    """The JSON merge patch (RFC 7386) that gives `live` `desired`'s replicas, progress deadline, pod template
    and spec-hash annotation. Fields the API server defaulted in the live template and the spec does not set are
    sent as null and defaulted again, so the template ends equal to a fresh create of `desired` (no rollout
    when only the replicas differ)."""
    live_spec = live.get("spec") or {}
    patch: dict[str, Any] = {"metadata": {"annotations": {
        k: desired["metadata"]["annotations"][k] for k in (ANN_SPEC_HASH, ANN_GENERATION)}}}
    spec_patch = merge_patch({k: live_spec.get(k) for k in DEPLOYMENT_SYNCED},
                             {k: desired["spec"][k] for k in DEPLOYMENT_SYNCED})
    if spec_patch:
        patch["spec"] = spec_patch
    return patch


def server_service(owner: Owner, spec: EmbeddingFinetuneSpec) -> dict[str, Any]:
    """A stable Service in front of whichever server Deployment of this resource is current."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(owner, service_name(owner.name), "server"),
        "spec": {
            "selector": server_labels(owner),
            "ports": [{"name": "http", "port": spec.deploy.port, "targetPort": "http", "protocol": "TCP"}],
        },
    }


# ----------------------------------------------------------------------------- events
def event(owner_body: dict[str, Any], type_: str, reason: str, message: str, now: str,
          instance: str = OPERATOR_NAME, component: str = OPERATOR_NAME) -> dict[str, Any]:
    """A core/v1 Event about the resource (Kubernetes-style: reason CamelCase, message one sentence)."""
    meta = owner_body.get("metadata", {})
    name = meta.get("name", "unknown")
    suffix = digest([name, reason, message, now])[:10]
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{suffix}", "namespace": meta.get("namespace") or "default"},
        "involvedObject": {"apiVersion": f"{API_GROUP}/{API_VERSION}", "kind": KIND, "name": name,
                           "namespace": meta.get("namespace") or "default", "uid": meta.get("uid", ""),
                           **({"resourceVersion": meta["resourceVersion"]} if meta.get("resourceVersion") else {})},
        "reason": reason,
        "message": message[:1024],
        "type": type_,
        "source": {"component": component},
        "reportingComponent": f"{API_GROUP}/{OPERATOR_NAME}",
        "reportingInstance": instance[:128],
        "firstTimestamp": now,
        "lastTimestamp": now,
        "count": 1,
    }
