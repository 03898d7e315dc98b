"""values.schema.json: the chart's own values and the example files validate; wrong types and values outside
the allowed sets are rejected with a message that names the key and what is allowed.

Helm validates the merged values (defaults + user overrides) against the schema on install, upgrade, template
and lint (JSON Schema draft 7); these tests do the same with the `jsonschema` package."""

from __future__ import annotations

import json

import jsonschema
import pytest
import yaml

from eftpkg_helm import deep_merge
from eftpkg_support import CHART

SCHEMA = json.loads((CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
VALIDATOR = jsonschema.Draft7Validator(SCHEMA)
EXAMPLES = sorted((CHART / "ci").glob("*.yaml"))


def _errors(values):
    return sorted(VALIDATOR.iter_errors(values), key=lambda e: list(e.absolute_path))


def _explain(error) -> str:
    """The message a user sees: the key path, then jsonschema's text (which quotes the bad value)."""
    path = ".".join(str(p) for p in error.absolute_path) or "(top level)"
    return f"{path}: {error.message}"


def test_schema_is_valid_draft7():
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert SCHEMA["$schema"].startswith("http://json-schema.org/draft-07/")


def test_values_yaml_validates():
    assert [_explain(e) for e in _errors(DEFAULTS)] == []


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_values_validate(path):
    override = yaml.safe_load(path.read_text())
    assert isinstance(override, dict) and override
    assert [_explain(e) for e in _errors(deep_merge(DEFAULTS, override))] == []


def test_examples_exist_for_each_mode():
    names = {p.stem for p in EXAMPLES}
    assert {"namespaced-values", "production-values", "gpu-values", "digest-images-values"} <= names


def _objects(schema, path=()):
    """Every object schema (following $ref) with its key path."""
    if "$ref" in schema:
        schema = SCHEMA["definitions"][schema["$ref"].rsplit("/", 1)[1]]
    if schema.get("type") == "object" and "properties" in schema:
        yield path, schema
        for key, sub in schema["properties"].items():
            yield from _objects(sub, path + (key,))


def test_every_object_is_closed_and_every_key_described():
    """additionalProperties: false everywhere, so a typo in a key is an error rather than silently ignored."""
    for path, schema in _objects(SCHEMA):
        assert schema.get("additionalProperties") is False, f"{'.'.join(path) or 'top level'} accepts unknown keys"
    for key, sub in SCHEMA["properties"].items():
        assert "description" in sub or "$ref" in sub, key


def test_every_schema_key_has_a_default_in_values_yaml():
    def walk(schema, values, path):
        if "$ref" in schema:
            return  # shared definitions (resources, stage runtime): optional keys
        for key, sub in schema.get("properties", {}).items():
            if key == "global":
                continue
            assert key in values, f"{'.'.join(path + (key,))} is in the schema but not in values.yaml"
            if sub.get("type") == "object" and "properties" in sub:
                walk(sub, values[key], path + (key,))

    walk(SCHEMA, DEFAULTS, ())


BAD = [
    # (override, key path in the error, words the message must contain)
    ({"rbac": {"scope": "clusterwide"}}, "rbac.scope", ["'clusterwide' is not one of", "'cluster'", "'namespaced'"]),
    ({"rbac": {"scopee": "cluster"}}, "rbac", ["Additional properties are not allowed", "'scopee'"]),
    ({"rbac": {"watchNamespaces": "ml"}}, "rbac.watchNamespaces", ["'ml' is not of type 'array'"]),
    ({"rbac": {"watchNamespaces": ["Team_A"]}}, "rbac.watchNamespaces.0", ["'Team_A' does not match"]),
    ({"rbac": {"watchNamespaces": ["a", "a"]}}, "rbac.watchNamespaces", ["non-unique"]),
    ({"operator": {"replicas": "one"}}, "operator.replicas", ["'one' is not of type 'integer'"]),
    ({"operator": {"replicas": 3}}, "operator.replicas", ["3 is greater than the maximum of 1"]),
    ({"operator": {"debug": "yes"}}, "operator.debug", ["'yes' is not of type 'boolean'"]),
    ({"operator": {"resources": {"limits": {"cpu": "lots"}}}}, "operator.resources.limits.cpu", ["'lots'"]),
    ({"operator": {"tolerations": [{"key": "gpu", "effect": "Sometimes"}]}}, "operator.tolerations.0.effect",
     ["'Sometimes' is not one of"]),
    ({"operator": {"livenessProbe": {"periodSeconds": 0}}}, "operator.livenessProbe.periodSeconds",
     ["0 is less than the minimum of 1"]),
    ({"operator": {"extraEnv": [{"value": "x"}]}}, "operator.extraEnv.0", ["'name' is a required property"]),
    ({"images": {"pullPolicy": "Sometimes"}}, "images.pullPolicy",
     ["'Sometimes' is not one of", "'Always'", "'IfNotPresent'", "'Never'"]),
    ({"images": {"tag": 1.0}}, "images.tag", ["1.0 is not of type 'string'"]),
    ({"images": {"registry": ""}}, "images.registry", ["should be non-empty"]),
    ({"images": {"registry": None}}, "images", ["'registry' is a required property"]),
    ({"images": {"pipeline": {"repository": "Pipeline Image"}}}, "images.pipeline.repository", ["does not match"]),
    ({"images": {"server": {"override": "not an image"}}}, "images.server.override", ["does not match"]),
    ({"images": {"pullSecrets": [{"name": "x"}]}}, "images.pullSecrets.0", ["is not of type 'string'"]),
    ({"metrics": {"service": {"port": 70000}}}, "metrics.service.port", ["70000 is greater than the maximum"]),
    ({"metrics": {"service": {"type": "ExternalName"}}}, "metrics.service.type", ["'ExternalName' is not one of"]),
    ({"metrics": {"serviceMonitor": {"interval": "30"}}}, "metrics.serviceMonitor.interval", ["'30' does not match"]),
    ({"metrics": {"serviceMonitor": {"enabled": "true"}}}, "metrics.serviceMonitor.enabled",
     ["'true' is not of type 'boolean'"]),
    ({"stageDefaults": {"train": {"backoffLimit": 50}}}, "stageDefaults.train.backoffLimit",
     ["50 is greater than the maximum of 20"]),
    ({"stageDefaults": {"train": {"activeDeadlineSeconds": 10}}}, "stageDefaults.train.activeDeadlineSeconds",
     ["10 is less than the minimum of 60"]),
    ({"stageDefaults": {"finetune": {}}}, "stageDefaults", ["Additional properties are not allowed", "'finetune'"]),
    ({"stageDefaults": {"eval": {"gpus": 1}}}, "stageDefaults.eval", ["'gpus' was unexpected"]),
    ({"stageDefaults": {"eval": {"resources": {"limits": {"nvidia.com/gpu": 1}}}}},
     "stageDefaults.eval.resources.limits.nvidia.com/gpu", ["1 is not of type 'string'"]),
    ({"serverDefaults": {"nodeSelector": {"gpu": True}}}, "serverDefaults.nodeSelector.gpu",
     ["True is not of type 'string'"]),
    ({"serviceAccount": {"name": "Operator"}}, "serviceAccount.name", ["'Operator' does not match"]),
    ({"fullnameOverride": "x" * 64}, "fullnameOverride", ["is too long"]),
]


@pytest.mark.parametrize("override, path, words", BAD, ids=[b[1] + ":" + str(i) for i, b in enumerate(BAD)])
def test_bad_overrides_are_rejected_with_a_clear_message(override, path, words):
    errors = _errors(deep_merge(DEFAULTS, override))
    assert errors, f"{override} was accepted"
    messages = [_explain(e) for e in errors]
    hit = [m for m in messages if m.startswith(path + ": ")]
    assert hit, f"no error at {path}: {messages}"
    for word in words:
        assert any(word in m for m in hit), f"{word!r} not in {hit}"


def test_stage_runtime_schema_mirrors_the_resource_model():
    """stageDefaults.<stage> takes exactly the keys of spec.runtime.stages.<stage> (eft.api.spec.StageRuntime),
    and accepts or rejects the same values."""
    from pydantic import ValidationError

    from eft.api.spec import StageRuntime

    props = SCHEMA["definitions"]["stageRuntime"]["properties"]
    aliases = {f.alias or name for name, f in StageRuntime.model_fields.items()}
    assert set(props) == aliases
    stage_schema = jsonschema.Draft7Validator({**SCHEMA, "$ref": "#/definitions/stageRuntime"})
    samples = [
        {}, {"backoffLimit": 0}, {"backoffLimit": 20}, {"backoffLimit": 21}, {"backoffLimit": -1},
        {"activeDeadlineSeconds": 60}, {"activeDeadlineSeconds": 59},
        {"image": "registry/x:1"}, {"resources": {"requests": {"cpu": "1"}, "limits": {"nvidia.com/gpu": "2"}}},
        {"resources": {"requests": {"cpu": 1}}}, {"resources": {"other": {}}},
        {"nodeSelector": {"a": "b"}}, {"nodeSelector": {"a": 1}},
        {"tolerations": [{"key": "k", "operator": "Exists", "effect": "NoSchedule"}]},
        {"tolerations": [{"operator": "Maybe"}]}, {"tolerations": [{"tolerationSeconds": 30}]},
        {"tolerations": [{"operator": "Exists"}]}, {"tolerations": [{"key": "k", "operator": "Exists", "value": "v"}]},
        {"tolerations": [{"operator": "Equal", "value": "v"}]}, {"tolerations": [{"key": "", "value": "v"}]},
        {"tolerations": [{"key": "k", "effect": "NoExecute", "tolerationSeconds": 30}]},
        {"tolerations": [{"key": "k", "effect": "NoSchedule", "tolerationSeconds": 30}]},
        {"unknown": 1},
    ]
    for sample in samples:
        try:
            StageRuntime.model_validate(sample)
            model_ok = True
        except ValidationError:
            model_ok = False
        schema_ok = stage_schema.is_valid(sample)
        assert schema_ok == model_ok, f"{sample}: schema {'accepts' if schema_ok else 'rejects'}, model does not"
