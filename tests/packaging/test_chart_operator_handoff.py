"""The chart's hand-off to the operator: the operator container's arguments and environment, as the chart
renders them, parsed by the real `eft operator` command (click) into the operator's `OperatorConfig`, and
compared with the chart's values, ports, mounts and defaults file."""

from __future__ import annotations

import click
import pytest
import yaml

from eftpkg_helm import manifests, render_chart
from eftpkg_support import CHART

CASES = {
    "defaults": ({}, None, ()),
    "namespaced": ({"rbac": {"scope": "namespaced", "watchNamespaces": ["ml", "research"]},
                    "images": {"tag": "1.2.3"}}, None, ("ml", "research")),
    "debug-workers": ({"operator": {"debug": True, "extraArgs": ["--workers=3"]},
                       "images": {"pipeline": {"override": "registry.example/pipe@sha256:" + "a" * 64}}}, 3, ()),
}


def _operator_container(docs):
    dep = next(d for _, d in docs if d["kind"] == "Deployment")
    return dep, dep["spec"]["template"]["spec"]["containers"][0]


@pytest.mark.parametrize("case", CASES)
def test_chart_operator_arguments_and_environment_are_what_eft_operator_reads(case, tmp_path):
    config_mod = pytest.importorskip("eft.controller.config")
    from eft.cli import main
    from eft.controller.cli import operator_command, operator_config

    values, workers, namespaces = CASES[case]
    docs = manifests(render_chart(CHART, values, release="eft", namespace="eft-system"))
    dep, container = _operator_container(docs)
    # The operator image's entry point is `eft` (images/operator/Dockerfile); the chart gives the arguments.
    args = [str(a) for a in container["args"]]
    cmd = main.get_command(click.Context(main), args[0])
    assert cmd is operator_command
    params = cmd.make_context(args[0], args[1:]).params

    # The environment as the kubelet gives it: fieldRefs resolved, the defaults file at its mount.
    defaults_cm = next(d for _, d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-defaults"))
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    env: dict[str, str] = {}
    for e in container["env"]:
        if "value" in e:
            env[e["name"]] = str(e["value"])
        else:
            path = e["valueFrom"]["fieldRef"]["fieldPath"]
            env[e["name"]] = {"metadata.namespace": "eft-system", "metadata.name": "eft-operator-0"}[path]
    defaults_path = env["EFT_DEFAULTS_FILE"]
    [(volume_name, mount_path)] = [(n, p) for n, p in mounts.items() if defaults_path.startswith(p + "/")]
    assert volumes[volume_name]["configMap"]["name"] == defaults_cm["metadata"]["name"]
    local = tmp_path / "defaults.yaml"
    local.write_text(defaults_cm["data"][defaults_path[len(mount_path) + 1:]])
    env["EFT_DEFAULTS_FILE"] = str(local)

    config = operator_config(params, env)

    # Every variable the chart sets is a documented operator setting.
    documented = {var for _, var, _, _ in config_mod.OperatorConfig.documentation() if var}
    assert set(env) <= documented, set(env) - documented
    # Images, namespaces, ports and the defaults file arrive as the chart meant them.
    assert config.pipeline_image == env["EFT_PIPELINE_IMAGE"] and config.server_image == env["EFT_SERVER_IMAGE"]
    if case == "debug-workers":
        assert config.pipeline_image == values["images"]["pipeline"]["override"]
        assert config.debug and config.workers == workers
    if case == "namespaced":
        assert config.pipeline_image.endswith(":1.2.3")
    assert config.namespaces == namespaces and config.all_namespaces == (not namespaces)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert (config.liveness_port, config.metrics_port) == (ports["health"], ports["metrics"])
    assert container["livenessProbe"]["httpGet"]["port"] == "health"
    assert config.namespace == "eft-system" and config.instance == "eft-operator-0"
    chart_defaults = yaml.safe_load(defaults_cm["data"][defaults_path[len(mount_path) + 1:]])
    assert dict(config.stage_defaults) == chart_defaults["stages"]
