"""The CRD's `spec` schema as a JSON Schema validator (for the CRD and examples tests)."""

from __future__ import annotations

from typing import Any

import jsonschema

from eft.controller import crd


def to_jsonschema(node: dict[str, Any]) -> dict[str, Any]:
    """OpenAPI `nullable` → JSON Schema, to check the CRD schema with jsonschema."""
    node = dict(node)
    for key in ("properties",):
        if key in node:
            node[key] = {k: to_jsonschema(v) for k, v in node[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = to_jsonschema(node[key])
    if node.pop("nullable", False):
        node = {"anyOf": [node, {"type": "null"}]}
    if node.get("exclusiveMinimum") is True:
        node["exclusiveMinimum"] = node.pop("minimum")
    return {k: v for k, v in node.items() if not k.startswith("x-kubernetes")}


def spec_validator() -> jsonschema.Draft7Validator:
    """Validates a resource's `spec` as the API server would against the generated CRD (bounds, enums, types)."""
    spec = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return jsonschema.Draft7Validator(to_jsonschema(spec))
