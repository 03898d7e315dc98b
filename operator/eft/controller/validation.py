"""Checks of a resource beyond its schema that matter in the cluster (pure; the Secret/claim lookups are
done by the handlers with the references listed here)."""

from __future__ import annotations

import re
from typing import Any

from eft.api.loader import SpecError, parse_resource
from eft.api.spec import QUANTITY_PATTERN, EmbeddingFinetune, EmbeddingFinetuneSpec
from eft.api.stages import JOB_STAGES
from eft.controller import manifests
from eft.controller.config import OperatorConfig

_HF_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$")
_PACKAGE = re.compile(r"^package:[A-Za-z0-9][A-Za-z0-9._-]*$")


def base_model_problem(name: str) -> str | None:
    """None when `name` is a Hugging Face id, an absolute path in the pod, or `package:<pip package>`."""
    if _PACKAGE.match(name) or (name.startswith("/") and " " not in name) or _HF_ID.match(name):
        return None
    return (f"unknown base model format {name!r}: expected a Hugging Face id (org/name), an absolute path "
            "inside the pod, or package:<pip package>")


def cluster_problems(spec: EmbeddingFinetuneSpec) -> list[tuple[str, str]]:
    problems = []
    msg = base_model_problem(spec.base_model.name)
    if msg:
        problems.append(("spec.baseModel.name", msg))
    src = spec.corpus.source
    if src.path is not None and not src.path.startswith("/"):
        problems.append(("spec.corpus.source.path",
                         f"in the cluster the path must be absolute (a folder inside the pipeline image or an "
                         f"already mounted volume); got {src.path!r}"))
    if src.uri is not None:
        problems.append(("spec.corpus.source.uri",
                         "the operator does not download s3/http corpora yet; put the documents on a PVC "
                         "(corpus.source.pvc) or in a ConfigMap (corpus.source.configMap)"))
    for i, ds in enumerate(spec.evaluation.extra_datasets):
        if not ds.path.startswith("/"):
            problems.append((f"spec.evaluation.extraDatasets[{i}].path",
                             f"in the cluster the path must be absolute; got {ds.path!r}"))
    problems += workspace_problems(spec)
    return problems


def workspace_problems(spec: EmbeddingFinetuneSpec) -> list[tuple[str, str]]:
    """Access modes of the workspace claim the operator creates that cannot hold the pods mounting it at once:
    training on several nodes needs ReadWriteMany; ReadWriteOncePod admits one pod, while the server and its
    verify Job (and a stage re-run while the server serves) mount the workspace together. (A claim named by
    `storage.claimName` is the user's; its modes are not checked.)"""
    if spec.storage.claim_name:
        return []
    modes = set(spec.storage.access_modes)
    problems = []
    if spec.training.nodes > 1 and "ReadWriteMany" not in modes:
        problems.append(("spec.storage.accessModes",
                         f"training.nodes is {spec.training.nodes}: pods on several nodes write the workspace, "
                         f"which needs ReadWriteMany (got {sorted(modes)})"))
    if modes == {"ReadWriteOncePod"} and spec.deploy.enabled:
        problems.append(("spec.storage.accessModes",
                         "ReadWriteOncePod lets one pod mount the workspace, but the server and its verify Job "
                         "mount it at the same time; use ReadWriteOnce or ReadWriteMany"))
    return problems


#: The Kubernetes Quantity grammar (k8s.io/apimachinery/pkg/api/resource), with its optional sign.
QUANTITY = re.compile(r"^(\+|-)?" + QUANTITY_PATTERN[1:])
#: Resource names without a domain, or in Kubernetes' own domain, are native (overcommittable); others are extended.
_NATIVE_DOMAIN = ("kubernetes.io/", "requests.")


def _quantity(text: str):
    """The value of a Kubernetes quantity (a Decimal), or None when `text` is not one."""
    from kubernetes.utils.quantity import parse_quantity

    if not QUANTITY.match(text):
        return None
    try:
        return parse_quantity(text)
    except ValueError:
        return None


def resources_problems(resources: dict[str, dict[str, str]], field: str) -> list[tuple[str, str]]:
    """What the API server would refuse in a container's requests and limits (`field` names where they come
    from): a value that is not a quantity, a request above its limit, an extended resource (`nvidia.com/gpu`)
    requested without an equal limit."""
    requests, limits = resources.get("requests") or {}, resources.get("limits") or {}
    problems, valid = [], {}
    for part, values in (("requests", requests), ("limits", limits)):
        for name, value in values.items():
            quantity = _quantity(str(value))
            if quantity is None:
                problems.append((f"{field}.{part}.{name}", f"{value!r} is not a Kubernetes quantity (e.g. 500m, 2, "
                                                           "16Gi, 1.5G)"))
            else:
                valid[part, name] = quantity
    for name, value in requests.items():
        extended = "/" in name and not name.startswith(_NATIVE_DOMAIN)
        if extended and name not in limits:
            problems.append((f"{field}.limits.{name}", f"{name} is requested ({value}) without a limit: an "
                                                       "extended resource needs a limit equal to its request"))
        elif ("requests", name) in valid and ("limits", name) in valid:
            req, lim = valid["requests", name], valid["limits", name]
            if extended and req != lim:
                problems.append((f"{field}.requests.{name}", f"{name} request {value} must equal its limit "
                                                             f"{limits[name]} (an extended resource)"))
            elif req > lim:
                problems.append((f"{field}.requests.{name}", f"request {value} is above the limit {limits[name]} "
                                                             "(limits come from the resource or from the operator's "
                                                             "defaults in the chart's values; raise both)"))
    return problems


def runtime_problems(spec: EmbeddingFinetuneSpec, config: OperatorConfig) -> list[tuple[str, str]]:
    """`resources_problems` of every stage Job's and the server's container, as the operator builds them
    (its defaults merged under the resource's runtime settings)."""
    problems = []
    for stage in JOB_STAGES:
        problems += resources_problems(manifests.stage_resources(spec, stage, config),
                                       f"spec.runtime.stages.{stage}.resources")
    if spec.deploy.enabled:
        problems += resources_problems(manifests.server_resources(spec, config), "spec.deploy.resources")
    return problems


def validate(body: dict[str, Any]) -> tuple[EmbeddingFinetune | None, list[tuple[str, str]]]:
    """Parse the resource as read from the API server; (resource, []) or (None, [(field, reason)...])."""
    try:
        resource = parse_resource(body, source=f"{(body.get('metadata') or {}).get('name', 'resource')}")
    except SpecError as err:
        return None, err.problems
    problems = cluster_problems(resource.spec)
    return (None, problems) if problems else (resource, [])


def secret_refs(spec: EmbeddingFinetuneSpec) -> list[tuple[str, str, str]]:
    """(field path, Secret name, key) of every Secret the pods will read."""
    out = []
    if spec.sdg.llm_key_ref is not None:
        ref = spec.sdg.llm_key_ref
        out.append(("spec.sdg.apiKeySecretRef", ref.name, ref.key))
    if spec.runtime.hf_token_secret_ref is not None:
        ref = spec.runtime.hf_token_secret_ref
        out.append(("spec.runtime.hfTokenSecretRef", ref.name, ref.key))
    return out


def format_problems(problems: list[tuple[str, str]], limit: int = 5) -> str:
    shown = "; ".join(f"{path}: {msg}" for path, msg in problems[:limit])
    more = len(problems) - limit
    return shown + (f"; and {more} more" if more > 0 else "")
