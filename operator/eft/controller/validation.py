"""Checks of a resource beyond its schema that matter in the cluster (pure; the Secret/claim lookups are
done by the handlers with the references listed here)."""

from __future__ import annotations

import re
from typing import Any

from eft.api.loader import SpecError, parse_resource
from eft.api.spec import EmbeddingFinetune, EmbeddingFinetuneSpec

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
    if spec.sdg.api_key_secret_ref is not None and spec.sdg.generator == "llm":
        ref = spec.sdg.api_key_secret_ref
        out.append(("spec.sdg.apiKeySecretRef", ref.name, ref.key))
    if spec.runtime.hf_token_secret_ref is not None:
        ref = spec.runtime.hf_token_secret_ref
        out.append(("spec.runtime.hfTokenSecretRef", ref.name, ref.key))
    return out


def format_problems(problems: list[tuple[str, str]], limit: int = 5) -> str:
    shown = "; ".join(f"{path}: {msg}" for path, msg in problems[:limit])
    more = len(problems) - limit
    return shown + (f"; and {more} more" if more > 0 else "")
