"""The CustomResourceDefinition, generated from the pydantic models (`eft crd`).

The spec schema is pydantic's JSON schema of `EmbeddingFinetuneSpec` rewritten into a *structural* OpenAPI v3
schema: `$ref`s inlined, `Optional[X]` as `nullable`, Literals as `enum`, the models' bounds and defaults kept
(nested objects default to `{}` so the API server fills their defaults too). The status schema comes from
`eft.api.status.EmbeddingFinetuneStatus`, with free-form summaries marked
`x-kubernetes-preserve-unknown-fields` so the API server does not prune what the operator writes.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import BaseModel

from eft.api import spec as spec_module
from eft.api.spec import (API_GROUP, API_VERSION, KIND, PLURAL, RESOURCE_NAME_MAX, RESOURCE_NAME_PATTERN, SHORT_NAME,
                          EmbeddingFinetuneSpec)
from eft.api import status as status_module
from eft.api.status import EmbeddingFinetuneStatus

CRD_FILE = f"{API_GROUP}_{PLURAL}.yaml"
REPO_ROOT = Path(__file__).resolve().parents[3]
REPO_CRD_PATH = REPO_ROOT / "crds" / CRD_FILE
#: The Helm chart's copy (Helm installs files under a chart's crds/ untemplated); written and checked together
#: with REPO_CRD_PATH so the two cannot drift.
CHART_CRD_PATH = REPO_ROOT / "charts" / "embedding-finetune-operator" / "crds" / CRD_FILE
CRD_PATHS = (REPO_CRD_PATH, CHART_CRD_PATH)

PRINTER_COLUMNS = [
    {"name": "Stage", "type": "string", "jsonPath": ".status.currentStage"},
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
    {"name": "Ready", "type": "string", "jsonPath": '.status.conditions[?(@.type=="Ready")].status'},
    {"name": "nDCG@10", "type": "string", "jsonPath": ".status.metrics.ndcg10",
     "description": "nDCG@10 of the base → fine-tuned model on the held-out test set"},
    {"name": "Endpoint", "type": "string", "jsonPath": ".status.endpoint", "priority": 1},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]

_DROP = {"title", "discriminator"}


def _model_classes(module) -> dict[str, type[BaseModel]]:
    return {n: c for n, c in vars(module).items() if isinstance(c, type) and issubclass(c, BaseModel)}


def _field_defaults(cls: type[BaseModel] | None) -> dict[str, Any]:
    """camelCase field name -> default for fields with a default_factory (pydantic leaves them out)."""
    out: dict[str, Any] = {}
    if cls is None:
        return out
    for name, f in cls.model_fields.items():
        alias = f.alias or name
        if f.default_factory is not None:
            value = f.default_factory()
            out[alias] = {} if isinstance(value, BaseModel) else value
    return out


def to_structural(node: Any, defs: dict[str, Any], classes: dict[str, type[BaseModel]]) -> Any:
    """Rewrite one pydantic JSON-schema node into structural OpenAPI v3 (recursively)."""
    if not isinstance(node, dict):
        return node
    node = dict(node)
    if "$ref" in node or "anyOf" in node or ("allOf" in node and len(node["allOf"]) == 1):
        siblings = {k: v for k, v in node.items()
                    if k not in _DROP and k not in ("$ref", "anyOf", "allOf") and not (k == "default" and v is None)}
        nullable = False
        if "$ref" in node:
            inner = to_structural(defs[node["$ref"].split("/")[-1]], defs, classes)
        elif "allOf" in node:
            inner = to_structural(node["allOf"][0], defs, classes)
        else:
            options = node["anyOf"]
            non_null = [o for o in options if o.get("type") != "null"]
            nullable = len(non_null) < len(options)
            if len(non_null) == 1:
                inner = to_structural(non_null[0], defs, classes)
            else:  # not expected in our models; keep a permissive but structural schema
                inner = {"x-kubernetes-preserve-unknown-fields": True}
        out = {**inner, **siblings}
        if nullable:
            out["nullable"] = True
        return out
    if "const" in node:
        node["enum"] = [node.pop("const")]
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            cls = classes.get(node.get("title", ""))
            defaults = _field_defaults(cls)
            props = {}
            for pname, pschema in value.items():
                conv = to_structural(pschema, defs, classes)
                if pname in defaults and "default" not in conv:
                    conv["default"] = defaults[pname]
                props[pname] = conv
            out["properties"] = props
        elif key == "additionalProperties":
            if isinstance(value, dict):
                out["additionalProperties"] = to_structural(value, defs, classes)
            elif "properties" not in node and value is not False:
                out["x-kubernetes-preserve-unknown-fields"] = True
            # additionalProperties: false is not allowed next to `properties` (unknown fields are pruned)
        elif key == "items":
            out["items"] = to_structural(value, defs, classes)
        elif key == "exclusiveMinimum":
            out["minimum"], out["exclusiveMinimum"] = value, True
        elif key == "exclusiveMaximum":
            out["maximum"], out["exclusiveMaximum"] = value, True
        elif key == "default":
            if value is not None:
                out["default"] = value
        elif key == "format" and value not in ("date-time", "int32", "int64", "float", "double", "byte"):
            continue
        else:
            out[key] = value
    if "type" not in out and "x-kubernetes-preserve-unknown-fields" not in out:
        if "properties" in out:
            out["type"] = "object"
        elif "enum" in out and all(isinstance(v, str) for v in out["enum"]):
            out["type"] = "string"
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def model_schema(model: type[BaseModel], module) -> dict[str, Any]:
    js = model.model_json_schema(by_alias=True)
    defs = js.pop("$defs", {})
    classes = _model_classes(module)
    return to_structural(js, defs, classes)


def spec_schema() -> dict[str, Any]:
    schema = model_schema(EmbeddingFinetuneSpec, spec_module)
    schema["description"] = "What to fine-tune and how: documents, base model, SDG, training, evaluation, export, serving."
    return schema


def status_schema() -> dict[str, Any]:
    schema = model_schema(EmbeddingFinetuneStatus, status_module)
    schema["description"] = "Written by the operator: phase, conditions, per-stage progress, metrics and endpoint."
    return schema


def build_crd() -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{API_GROUP}",
            "labels": {"app.kubernetes.io/name": "embedding-finetune-operator",
                       "app.kubernetes.io/part-of": "embedding-finetune-operator"},
        },
        "spec": {
            "group": API_GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": [SHORT_NAME],
                "categories": ["all", "ml"],
            },
            "versions": [{
                "name": API_VERSION,
                "served": True,
                "storage": True,
                "subresources": {"status": {}},
                "additionalPrinterColumns": copy.deepcopy(PRINTER_COLUMNS),
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "description": "A domain embedding model to fine-tune, evaluate and serve "
                                   "(generated from eft.api.spec; do not edit).",
                    "required": ["spec"],
                    # Children are named after the resource: refuse names they cannot carry at admission
                    # (the same rule as the model's metadata.name, eft.api.spec.ObjectMeta).
                    "x-kubernetes-validations": [
                        {"rule": f"size(self.metadata.name) <= {RESOURCE_NAME_MAX}",
                         "message": f"metadata.name must be at most {RESOURCE_NAME_MAX} characters: the Jobs are "
                                    "named <name>-<stage>-<hash8>, at most 63 characters",
                         "reason": "FieldValueInvalid"},
                        {"rule": f"self.metadata.name.matches('{RESOURCE_NAME_PATTERN}')",
                         "message": "metadata.name must be a DNS-1035 label (lowercase letters, digits and '-', "
                                    "starting with a letter, no dots): the Service <name>-server must be one",
                         "reason": "FieldValueInvalid"},
                    ],
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": spec_schema(),
                        "status": status_schema(),
                    },
                }},
            }],
        },
    }


HEADER = ("# Generated by `eft crd --write` from the pydantic models in operator/eft/api/spec.py and\n"
          "# operator/eft/controller/status.py. Do not edit: a test fails when this file is stale.\n")


def render_crd() -> str:
    return HEADER + yaml.safe_dump(build_crd(), sort_keys=False, allow_unicode=True, width=120)


@click.command("crd")
@click.option("--write", "write", is_flag=True,
              help=f"Write crds/{CRD_FILE} and the chart's copy (charts/embedding-finetune-operator/crds/) "
                   "instead of printing it.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to this file (only).")
@click.option("--check", is_flag=True, help="Exit 1 when a checked-in CRD (crds/ or the chart's) differs from the models.")
def crd_command(write: bool, output: Path | None, check: bool) -> None:
    """Print (or write) the EmbeddingFinetune CRD generated from the resource models."""
    text = render_crd()
    if check:
        stale = [p for p in CRD_PATHS if not p.exists() or p.read_text(encoding="utf-8") != text]
        for path in stale:
            click.echo(f"{path} is stale: run `eft crd --write`", err=True)
        if stale:
            sys.exit(1)
        for path in CRD_PATHS:
            click.echo(f"{path} is up to date")
        return
    targets = (output,) if output else CRD_PATHS if write else ()
    if not targets:
        click.echo(text, nl=False)
        return
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        click.echo(f"wrote {target}")
