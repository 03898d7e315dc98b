"""The CustomResourceDefinition generated from the resource models: checked-in copies current, structural,
valid for Kubernetes, carrying the models' bounds, defaults and enums."""

from __future__ import annotations

import copy

import kubernetes_validate

from crd_schema import spec_validator
from eft.controller import crd
from eftop_harness import sample_resource

K8S = "1.30"


def test_checked_in_crd_is_what_the_models_generate():
    for path in crd.CRD_PATHS:  # crds/ and the chart's copy
        assert path.read_text(encoding="utf-8") == crd.render_crd(), f"stale CRD {path}: run `eft crd --write`"


def test_crd_command_writes_and_checks_both_copies(tmp_path, monkeypatch):
    from click.testing import CliRunner

    assert CliRunner().invoke(crd.crd_command, ["--check"]).exit_code == 0
    paths = (tmp_path / "crds" / crd.CRD_FILE, tmp_path / "chart" / "crds" / crd.CRD_FILE)
    monkeypatch.setattr(crd, "CRD_PATHS", paths)
    result = CliRunner().invoke(crd.crd_command, ["--check"])
    assert result.exit_code == 1 and str(paths[0]) in result.output and str(paths[1]) in result.output
    assert CliRunner().invoke(crd.crd_command, ["--write"]).exit_code == 0
    assert [p.read_text(encoding="utf-8") for p in paths] == [crd.render_crd()] * 2
    assert CliRunner().invoke(crd.crd_command, ["--check"]).exit_code == 0
    paths[1].write_text("drifted", encoding="utf-8")
    result = CliRunner().invoke(crd.crd_command, ["--check"])
    assert result.exit_code == 1 and str(paths[1]) in result.output and str(paths[0]) not in result.output


def test_crd_is_a_valid_structural_crd():
    doc = crd.build_crd()
    kubernetes_validate.validate(doc, K8S, strict=True)
    version = doc["spec"]["versions"][0]
    assert doc["spec"]["names"]["shortNames"] == ["eft"] and doc["spec"]["group"] == "finetune.embeddings.io"
    assert version["subresources"] == {"status": {}}
    cols = {c["name"]: c for c in version["additionalPrinterColumns"]}
    assert list(cols) == ["Stage", "Phase", "Ready", "nDCG@10", "Endpoint", "Age"]

    def walk(node, path="schema"):
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), f"{path} has no type"
        assert not ({"$ref", "anyOf", "allOf", "oneOf", "title"} & node.keys()), path
        if "properties" in node:
            assert "additionalProperties" not in node, path
        for key, sub in (node.get("properties") or {}).items():
            walk(sub, f"{path}.{key}")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}.*")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")
    walk(version["schema"]["openAPIV3Schema"])


def test_crd_schema_carries_bounds_defaults_and_enums():
    spec = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    training = spec["properties"]["training"]
    assert training["default"] == {}
    assert training["properties"]["epochs"] == {"default": 3, "maximum": 100, "minimum": 1, "type": "integer"}
    assert training["properties"]["learningRate"]["exclusiveMinimum"] is True
    assert spec["properties"]["sdg"]["properties"]["generator"]["enum"] == ["llm", "offline"]
    assert spec["properties"]["corpus"]["properties"]["include"]["default"][0] == "**/*.txt"
    assert spec["required"] == ["corpus"]
    status = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert status["properties"]["stages"]["additionalProperties"]["properties"]["summary"][
        "x-kubernetes-preserve-unknown-fields"] is True
    validator = spec_validator()
    good = sample_resource()["spec"]
    assert not list(validator.iter_errors(good))
    for path, bad in ((("training", "epochs"), 500), (("training", "epochs"), "three"),
                      (("sdg", "generator"), "gpt"), (("training", "learningRate"), 0)):
        doc = copy.deepcopy(good)
        doc.setdefault(path[0], {})[path[1]] = bad
        assert list(validator.iter_errors(doc)), (path, bad)
