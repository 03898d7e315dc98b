"""The resource model: recipe defaults, field-path errors, `eft validate`, loading files, and config hashes."""

from __future__ import annotations

import copy

import pytest
import yaml
from click.testing import CliRunner

from eft.api import SpecError, load_resource, parse_resource
from eft.api.spec import EmbeddingFinetuneSpec
from eft.errors import EXIT_INVALID_INPUT, InvalidInput
from eft.hashing import plan_hashes

MINIMAL = {
    "apiVersion": "finetune.embeddings.io/v1alpha1",
    "kind": "EmbeddingFinetune",
    "metadata": {"name": "demo"},
    "spec": {"corpus": {"source": {"path": "/data/docs"}}},
}


def resource_with(**spec_overrides) -> dict:
    data = copy.deepcopy(MINIMAL)
    for dotted, value in spec_overrides.items():
        node = data["spec"]
        parts = dotted.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return data


def problems_of(data: dict) -> list[tuple[str, str]]:
    with pytest.raises(SpecError) as exc:
        parse_resource(data)
    return exc.value.problems


# ----------------------------------------------------------------------------- defaults
def test_defaults_equal_the_recipe():
    spec = parse_resource(MINIMAL).spec
    t = spec.training
    assert (t.temperature, t.learning_rate, t.warmup_steps, t.epochs) == (0.02, 1e-5, 5, 3)
    assert (t.global_batch_size, t.passages_per_query) == (128, 5)
    p = spec.prep
    assert (p.negatives_mined, p.negatives_used, p.max_negative_score_ratio, p.test_fraction) == (5, 4, 0.95, 0.2)
    s = spec.sdg
    assert s.quality_threshold == 7.0
    assert (s.complexity.min, s.complexity.max) == (2, 5)
    assert (s.hops.min, s.hops.max) == (1, 3)
    assert s.model == "nvidia/nemotron-3-nano-30b-a3b"
    assert spec.evaluation.k_values == [1, 5, 10, 100]
    assert spec.export.onnx.opset == 17
    trt = spec.export.tensorrt
    assert (trt.min_batch, trt.max_batch, trt.min_sequence, trt.max_sequence) == (1, 64, 3, 256)
    assert spec.deploy.verification.tolerance_at1 == 0.03
    assert spec.deploy.verification.tolerance_at_k == 0.01


def test_spec_dict_is_camel_case_with_defaults_filled():
    d = parse_resource(MINIMAL).spec_dict()
    assert d["training"]["globalBatchSize"] == 128
    assert d["prep"]["maxNegativeScoreRatio"] == 0.95
    assert d["corpus"]["source"]["path"] == "/data/docs"
    assert "global_batch_size" not in d["training"]


# ----------------------------------------------------------------------------- errors with field paths
@pytest.mark.parametrize(
    "overrides, path, words",
    [
        ({"training__temperature": 0}, "spec.training.temperature", "greater than 0"),
        ({"training__epochs": 0}, "spec.training.epochs", "greater than or equal to 1"),
        ({"training__learningRate": 0.5}, "spec.training.learningRate", "less than or equal"),
        ({"prep__testFraction": 0.9}, "spec.prep.testFraction", "less than or equal to 0.5"),
        ({"sdg__qualityThreshold": 11}, "spec.sdg.qualityThreshold", "less than or equal to 10"),
        ({"sdg__hops": {"min": 1, "max": 4}}, "spec.sdg.hops.max", "less than or equal to 3"),
        ({"export__onnx": {"opset": 9}}, "spec.export.onnx.opset", "greater than or equal to 14"),
        ({"training__epochs": "three"}, "spec.training.epochs", "valid integer"),
        ({"training__globalBatchSize": [128]}, "spec.training.globalBatchSize", "valid integer"),
        ({"deploy__enabled": "maybe"}, "spec.deploy.enabled", "valid boolean"),
        ({"training__epoch": 3}, "spec.training.epoch", "unknown field"),
        ({"corpus__chunking": {"maxToken": 64}}, "spec.corpus.chunking.maxToken", "unknown field"),
        ({"prep__negativesUsed": 6}, "spec.prep", "negativesUsed (6) must not exceed negativesMined (5)"),
        ({"sdg__complexity": {"min": 4, "max": 2}}, "spec.sdg.complexity", "must not exceed"),
        # a promotion metric at a k eval does not compute failed only after the whole evaluation had run
        ({"evaluation__kValues": [10], "evaluation__promotion": {"metric": "ndcg@100"}}, "spec.evaluation",
         "promotion.metric ndcg@100 needs k=100 in kValues (got [10])"),
        # a serving backend the export does not write failed only when the server started
        ({"export__onnx": {"enabled": False}, "deploy__backend": "onnx"}, "spec",
         "deploy.backend onnx serves the ONNX export, but export.onnx.enabled is false"),
        ({"export__onnx": {"int8": False}, "deploy__backend": "onnx-int8"}, "spec",
         "export.onnx.int8 is false"),
        ({"export__tensorrt": {"enabled": "false"}, "deploy__backend": "tensorrt"}, "spec",
         "export.tensorrt.enabled is false"),
        ({"export__openvino": {"enabled": "false"}, "deploy__backend": "openvino-int8"}, "spec",
         "export.openvino.enabled is false"),
        ({"export__onnx": {"enabled": False}, "deploy__backend": "openvino"}, "spec",
         "deploy.backend openvino serves the ONNX export, but export.onnx.enabled is false"),
        ({"export__openvino": {"enabled": "yes"}}, "spec.export.openvino.enabled", "'auto', 'true' or 'false'"),
        # the LLM key must not replace a variable the pipeline's pods get from the operator
        ({"sdg__apiKeyEnv": "HF_HOME"}, "spec.sdg", "apiKeyEnv 'HF_HOME' would replace a variable"),
        ({"sdg__apiKeyEnv": "EFT_CONFIG_HASH"}, "spec.sdg", "apiKeyEnv 'EFT_CONFIG_HASH' would replace"),
        ({"sdg__apiKeyEnv": "HF_TOKEN", "runtime__hfTokenSecretRef": {"name": "hf", "key": "token"}}, "spec",
         "sdg.apiKeyEnv HF_TOKEN would replace the Hugging Face token"),
        # object names the API server would refuse (DNS-1123 subdomains) and toleration rules
        ({"storage__claimName": "Bad_Name"}, "spec.storage.claimName", "should match pattern"),
        ({"runtime__serviceAccountName": "UPPER"}, "spec.runtime.serviceAccountName", "should match pattern"),
        ({"runtime__hfTokenSecretRef": {"name": "hf token", "key": "token"}}, "spec.runtime.hfTokenSecretRef.name",
         "should match pattern"),
        ({"runtime__hfTokenSecretRef": {"name": "hf", "key": "a/b"}}, "spec.runtime.hfTokenSecretRef.key",
         "should match pattern"),
        ({"runtime__defaults": {"tolerations": [{"key": "gpu", "operator": "Exists", "value": "x"}]}},
         "spec.runtime.defaults.tolerations[0]", "operator Exists takes no value"),
        ({"runtime__defaults": {"tolerations": [{"operator": "Equal", "value": "x"}]}},
         "spec.runtime.defaults.tolerations[0]", "a toleration without a key must use operator Exists"),
        ({"runtime__defaults": {"tolerations": [{"key": "k", "tolerationSeconds": 30, "effect": "NoSchedule"}]}},
         "spec.runtime.defaults.tolerations[0]", "tolerationSeconds applies to effect NoExecute only"),
    ],
)
def test_bad_values_name_the_camel_case_field(overrides, path, words):
    problems = problems_of(resource_with(**overrides))
    assert any(p == path and words in m for p, m in problems), problems


@pytest.mark.parametrize("overrides", [
    {"evaluation__kValues": [1, 10], "evaluation__promotion": {"metric": "recall@10"}},
    {"export__onnx": {"enabled": False}, "deploy__backend": "torch"},
    {"export__onnx": {"enabled": False}, "deploy__enabled": False, "deploy__backend": "onnx"},
    {"sdg__apiKeyEnv": "EFT_LLM_API_KEY"}, {"sdg__apiKeyEnv": "NVIDIA_API_KEY"},
    {"sdg__apiKeyEnv": "HF_TOKEN"},  # an endpoint at router.huggingface.co, with no hfTokenSecretRef
    {"storage__claimName": "team-a.workspace-1", "storage__storageClassName": "fast-ssd"},
    {"runtime__defaults": {"tolerations": [{"operator": "Exists"}, {"key": "nvidia.com/gpu", "operator": "Exists",
                                                                     "effect": "NoSchedule"},
                                           {"key": "k", "value": "v", "effect": "NoExecute", "tolerationSeconds": 60}]}},
])
def test_consistent_cross_field_choices_are_accepted(overrides):
    parse_resource(resource_with(**overrides))  # raises SpecError otherwise


def test_out_of_bounds_message_shows_the_value():
    problems = problems_of(resource_with(training__temperature=-1))
    assert problems == [("spec.training.temperature", "Input should be greater than 0 (got -1)")]


def test_corpus_source_none_or_two():
    data = copy.deepcopy(MINIMAL)
    data["spec"]["corpus"]["source"] = {}
    [(path, msg)] = problems_of(data)
    assert path == "spec.corpus.source" and "exactly one of path, pvc, uri, configMap" in msg and "got none" in msg
    data["spec"]["corpus"]["source"] = {"path": "/x", "configMap": {"name": "docs"}}
    [(path, msg)] = problems_of(data)
    assert path == "spec.corpus.source" and "(got path, configMap)" in msg


def test_missing_corpus_and_missing_spec():
    data = copy.deepcopy(MINIMAL)
    del data["spec"]["corpus"]
    assert problems_of(data) == [("spec.corpus", "Field required")]
    assert problems_of({"kind": "EmbeddingFinetune"}) == [("spec", "field required")]


def test_every_problem_is_reported_at_once():
    problems = problems_of(resource_with(training__epochs=0, prep__seed=-1, sdg__bogus=1))
    paths = {p for p, _ in problems}
    assert paths == {"spec.training.epochs", "spec.prep.seed", "spec.sdg.bogus"}


def test_spec_error_is_invalid_input_exit_code_2():
    with pytest.raises(InvalidInput) as exc:
        parse_resource(resource_with(training__epochs=0))
    assert exc.value.exit_code == EXIT_INVALID_INPUT == 2
    assert "spec.training.epochs" in str(exc.value)


# ----------------------------------------------------------------------------- eft validate
def _write(tmp_path, data, name="spec.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data), encoding="utf-8")
    return p


def test_cli_validate_ok_and_invalid(tmp_path):
    from eft.cli import main

    runner = CliRunner()
    good = _write(tmp_path, MINIMAL, "good.yaml")
    res = runner.invoke(main, ["validate", str(good)])
    assert res.exit_code == 0, res.output
    assert "valid EmbeddingFinetune 'demo'" in res.output

    bad = _write(tmp_path, resource_with(training__temperature=2.0, prep__negativesUsed=9), "bad.yaml")
    res = runner.invoke(main, ["validate", str(bad)])
    assert res.exit_code == 2
    text = res.output + (res.stderr if res.stderr_bytes is not None else "")
    assert "spec.training.temperature" in text
    assert "less than or equal to 1" in text
    assert "negativesUsed (9) must not exceed negativesMined (5)" in text
    assert "2 problems" in text

    res = runner.invoke(main, ["validate", str(tmp_path / "nope.yaml")])
    assert res.exit_code == 2
    assert "not found" in res.output


# ----------------------------------------------------------------------------- load_resource
def test_a_utf16_spec_file_loads_and_a_folder_is_named(tmp_path):
    text = yaml.safe_dump({**MINIMAL, "metadata": {"name": "cafe"}}, allow_unicode=True)
    (tmp_path / "ps.yaml").write_bytes(text.encode("utf-16"))  # what PowerShell's `>` writes
    assert load_resource(tmp_path / "ps.yaml").metadata.name == "cafe"
    with pytest.raises(InvalidInput, match="is a folder; give the resource's YAML file"):
        load_resource(tmp_path)


def test_relative_corpus_path_resolves_against_the_file(tmp_path):
    folder = tmp_path / "project" / "specs"
    folder.mkdir(parents=True)
    data = copy.deepcopy(MINIMAL)
    data["spec"]["corpus"]["source"]["path"] = "../docs"
    p = _write(folder, data)
    res = load_resource(p)
    assert res.spec.corpus.source.path == str((tmp_path / "project" / "docs").resolve())
    # Absolute paths are kept as they are.
    p2 = _write(folder, MINIMAL, "abs.yaml")
    assert load_resource(p2).spec.corpus.source.path == "/data/docs"


def test_load_resource_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(InvalidInput, match="not found"):
        load_resource(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("spec: [unclosed\n  corpus: {", encoding="utf-8")
    with pytest.raises(InvalidInput, match="not valid YAML"):
        load_resource(bad)
    empty = tmp_path / "empty.yaml"
    empty.write_text("", encoding="utf-8")
    with pytest.raises(InvalidInput, match="exactly one EmbeddingFinetune"):
        load_resource(empty)


def test_load_resource_reports_field_paths(tmp_path):
    p = _write(tmp_path, resource_with(training__warmupSteps=-3))
    with pytest.raises(SpecError) as exc:
        load_resource(p)
    assert exc.value.problems[0][0] == "spec.training.warmupSteps"
    assert str(p) in str(exc.value)


# ----------------------------------------------------------------------------- config hashes
def _spec(**overrides) -> EmbeddingFinetuneSpec:
    return parse_resource(resource_with(**overrides)).spec


STAGES = ("sdg", "prep", "train", "eval", "export")


def _changed(a: dict, b: dict) -> set[str]:
    return {s for s in STAGES if a[s] != b[s]}


def test_hashes_are_stable():
    assert plan_hashes(_spec(), "fp") == plan_hashes(_spec(), "fp")


def test_training_change_reruns_train_eval_export_only():
    base = plan_hashes(_spec(), "fp")
    assert _changed(base, plan_hashes(_spec(training__epochs=1), "fp")) == {"train", "eval", "export"}
    assert _changed(base, plan_hashes(_spec(training__learningRate=2e-5), "fp")) == {"train", "eval", "export"}


def test_runtime_only_fields_change_nothing():
    base = plan_hashes(_spec(), "fp")
    for overrides in ({"sdg__concurrency": 64}, {"training__gpus": 8}, {"training__saveSteps": 7},
                      {"prep__encodeBatchSize": 512}, {"evaluation__batchSize": 8}):
        assert _changed(base, plan_hashes(_spec(**overrides), "fp")) == set(), overrides


def test_prep_seed_reruns_prep_and_downstream_not_sdg():
    base = plan_hashes(_spec(), "fp")
    assert _changed(base, plan_hashes(_spec(prep__seed=7), "fp")) == {"prep", "train", "eval", "export"}


def test_corpus_fingerprint_and_sdg_fields_rerun_everything():
    base = plan_hashes(_spec(), "fp")
    assert _changed(base, plan_hashes(_spec(), "other")) == set(STAGES)
    assert _changed(base, plan_hashes(_spec(sdg__qualityThreshold=8.0), "fp")) == set(STAGES)


def test_evaluation_change_reruns_eval_only():
    base = plan_hashes(_spec(), "fp")
    assert _changed(base, plan_hashes(_spec(evaluation__kValues=[1, 10]), "fp")) == {"eval"}
