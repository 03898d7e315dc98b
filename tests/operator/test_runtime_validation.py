"""Containers the API server would refuse, found before any Job is made: requests and limits as the operator
builds them (the chart's defaults merged under the resource's runtime settings), and the workspace size."""

from __future__ import annotations

import pytest
import yaml

from eft.api import SpecError, parse_resource
from eft.controller.config import OperatorConfig
from eft.controller.validation import cluster_problems, resources_problems, runtime_problems
from eftop_harness import sample_resource, sample_spec

CHART_VALUES = "charts/embedding-finetune-operator/values.yaml"


def _chart_config(tmp_path, root) -> OperatorConfig:
    """The operator's configuration with the chart's default stage and server settings (its defaults file)."""
    values = yaml.safe_load((root / CHART_VALUES).read_text())
    path = tmp_path / "defaults.yaml"
    path.write_text(yaml.safe_dump({"stages": values["stageDefaults"], "server": values["serverDefaults"]}))
    return OperatorConfig.from_env({"EFT_DEFAULTS_FILE": str(path)})


@pytest.fixture
def chart_config(tmp_path, request):
    return _chart_config(tmp_path, request.config.rootpath)


@pytest.mark.parametrize("resources, field, words", [
    ({"requests": {"cpu": "two"}}, "spec.x.requests.cpu", "'two' is not a Kubernetes quantity"),
    ({"limits": {"memory": "16 Gi"}}, "spec.x.limits.memory", "is not a Kubernetes quantity"),
    ({"limits": {"memory": "1e1.5"}}, "spec.x.limits.memory", "is not a Kubernetes quantity"),  # no fraction in e
    ({"requests": {"memory": "24Gi"}, "limits": {"memory": "16Gi"}}, "spec.x.requests.memory",
     "request 24Gi is above the limit 16Gi"),
    ({"requests": {"cpu": "1500m"}, "limits": {"cpu": "1"}}, "spec.x.requests.cpu", "above the limit 1"),
    ({"requests": {"nvidia.com/gpu": "1"}}, "spec.x.limits.nvidia.com/gpu", "without a limit"),
    ({"requests": {"nvidia.com/gpu": "1"}, "limits": {"nvidia.com/gpu": "2"}}, "spec.x.requests.nvidia.com/gpu",
     "must equal its limit 2"),
])
def test_resources_the_api_server_refuses(resources, field, words):
    problems = resources_problems(resources, "spec.x")
    assert [(f, m) for f, m in problems if f == field and words in m], problems


@pytest.mark.parametrize("resources", [
    {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
    {"requests": {"memory": "1G"}, "limits": {"memory": "1Gi"}},  # 1e9 < 2^30
    {"limits": {"nvidia.com/gpu": "1"}},  # the request defaults to the limit
    {"requests": {"nvidia.com/gpu": "2"}, "limits": {"nvidia.com/gpu": "2", "memory": "64Gi"}},
    {"requests": {"hugepages-2Mi": "1Gi", "ephemeral-storage": "10Gi"}, "limits": {"hugepages-2Mi": "1Gi"}},
])
def test_resources_the_api_server_accepts(resources):
    assert resources_problems(resources, "spec.x") == []


def test_the_charts_defaults_are_valid_and_a_request_above_them_is_found(chart_config):
    assert runtime_problems(sample_spec(), chart_config) == []
    spec = sample_spec(runtime={"stages": {"prep": {"resources": {"requests": {"memory": "24Gi"}}}}},
                       deploy={"resources": {"requests": {"memory": "12Gi"}}})
    fields = {f: m for f, m in runtime_problems(spec, chart_config)}
    assert "above the limit" in fields["spec.runtime.stages.prep.resources.requests.memory"]
    assert "above the limit" in fields["spec.deploy.resources.requests.memory"]
    # raising the limit with it is fine
    spec = sample_spec(runtime={"stages": {"prep": {"resources": {"requests": {"memory": "24Gi"},
                                                                  "limits": {"memory": "24Gi"}}}}})
    assert runtime_problems(spec, chart_config) == []


def test_a_gpu_requested_for_a_stage_without_a_limit_is_found(chart_config):
    spec = sample_spec(runtime={"stages": {"eval": {"resources": {"requests": {"nvidia.com/gpu": "1"}}}}})
    [(field, message)] = runtime_problems(spec, chart_config)
    assert field == "spec.runtime.stages.eval.resources.limits.nvidia.com/gpu" and "without a limit" in message


@pytest.mark.parametrize("size, ok", [("50Gi", True), ("500G", True), ("50k", True), ("1Ei", True), ("5e9", True),
                                      ("50K", False), ("50 Gi", False), ("-5Gi", False), ("lots", False),
                                      ("1e1.5", False), ("1e5.", False)])
def test_workspace_size_is_a_kubernetes_quantity(size, ok):
    body = sample_resource(storage={"size": size})
    if ok:
        parse_resource(body)
    else:
        with pytest.raises(SpecError) as err:
            parse_resource(body)
        assert [f for f, _ in err.value.problems] == ["spec.storage.size"]


@pytest.mark.parametrize("overrides, words", [
    ({"training": {"nodes": 2, "gpus": 1}}, "needs ReadWriteMany"),
    ({"storage": {"accessModes": ["ReadWriteOncePod"]}}, "ReadWriteOncePod lets one pod mount the workspace"),
])
def test_workspace_access_modes_that_cannot_hold_the_pods(overrides, words):
    problems = cluster_problems(sample_spec(**overrides))
    assert [m for f, m in problems if f == "spec.storage.accessModes" and words in m], problems


@pytest.mark.parametrize("overrides", [
    {"training": {"nodes": 2, "gpus": 1}, "storage": {"accessModes": ["ReadWriteMany"]}},
    {"storage": {"accessModes": ["ReadWriteOncePod"]}, "deploy": {"enabled": False}},
    {"training": {"nodes": 2, "gpus": 1}, "storage": {"claimName": "shared"}},  # the user's claim, not checked
    {},
])
def test_workspace_access_modes_that_work(overrides):
    assert [f for f, _ in cluster_problems(sample_spec(**overrides)) if f == "spec.storage.accessModes"] == []


def test_every_example_builds_containers_the_api_server_accepts_under_the_charts_defaults(chart_config, request):
    from eft.api import load_resource

    examples = sorted((request.config.rootpath / "examples").glob("*.yaml"))
    assert examples
    for path in examples:
        assert runtime_problems(load_resource(path).spec, chart_config) == [], path.name


@pytest.mark.parametrize("node_selector, field, words", [
    ({"gpu type": "h200"}, "spec.runtime.defaults.nodeSelector.gpu type", "not a valid label key"),
    ({"Example.com/gpu": "h200"}, "spec.runtime.defaults.nodeSelector.Example.com/gpu", "DNS subdomain"),
    ({"x" * 64: "1"}, "spec.runtime.defaults.nodeSelector." + "x" * 64, "1-63 characters"),
    ({"gpu": "H200 SXM"}, "spec.runtime.defaults.nodeSelector.gpu", "not a valid label value"),
    ({"gpu": "a" * 64}, "spec.runtime.defaults.nodeSelector.gpu", "at most 63 characters"),
    # Python's `$` matches before a final newline; the API server's RE2 does not
    ({"gpu\n": "h200"}, "spec.runtime.defaults.nodeSelector.gpu\n", "not a valid label key"),
    ({"example.com\n/gpu": "h200"}, "spec.runtime.defaults.nodeSelector.example.com\n/gpu", "DNS subdomain"),
    ({"a/b/c": "1"}, "spec.runtime.defaults.nodeSelector.a/b/c", "at most one '/'"),
])
def test_node_selectors_the_api_server_refuses_are_found_up_front(node_selector, field, words):
    with pytest.raises(SpecError) as err:
        parse_resource(sample_resource(runtime={"defaults": {"nodeSelector": node_selector}}))
    assert [(f, m) for f, m in err.value.problems if f == field and words in m], err.value.problems


def test_label_shaped_node_selectors_and_tolerations_are_accepted():
    spec = parse_resource(sample_resource(runtime={"stages": {"train": {
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H200", "node.kubernetes.io/instance-type": "p5_48x",
                         "pool": ""},
        "tolerations": [{"operator": "Exists"}, {"key": "", "operator": "Exists"},
                        {"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}]}}})).spec
    assert spec.runtime.stages.train.node_selector["pool"] == ""
    with pytest.raises(SpecError) as err:
        parse_resource(sample_resource(runtime={"stages": {"train": {
            "tolerations": [{"key": "nvidia.com/gpu", "value": "yes please"}]}}}))
    assert [f for f, _ in err.value.problems] == ["spec.runtime.stages.train.tolerations[0].value"]


def test_the_charts_server_node_selector_is_checked_when_the_operator_starts(tmp_path):
    path = tmp_path / "defaults.yaml"
    path.write_text(yaml.safe_dump({"server": {"nodeSelector": {"gpu type": "h200"}}}))
    with pytest.raises(ValueError, match=r"defaults.yaml: server.nodeSelector.gpu type: not a valid label key: "):
        OperatorConfig.from_env({"EFT_DEFAULTS_FILE": str(path)})
    path.write_text(yaml.safe_dump({"stages": {"train": {"nodeSelector": {"pool": "H200 SXM"}}}}))
    with pytest.raises(ValueError, match=r"defaults.yaml: stages.train.nodeSelector.pool: not a valid label value"):
        OperatorConfig.from_env({"EFT_DEFAULTS_FILE": str(path)})
    path.write_text(yaml.safe_dump({"server": {"nodeSelector": {"nvidia.com/gpu.present": "true"}}}))
    assert OperatorConfig.from_env({"EFT_DEFAULTS_FILE": str(path)}).server_defaults["nodeSelector"] == {
        "nvidia.com/gpu.present": "true"}
