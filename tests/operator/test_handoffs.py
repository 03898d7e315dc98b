"""The hand-offs from the controller to the programs it starts: every command line and environment the
operator writes into a child is parsed back through the real `eft` command-line parser (click) and compared
with the spec it came from. A flag or variable one side writes and the other does not read fails here."""

from __future__ import annotations

import os

import click
import pytest
import yaml

from eft.api import parse_resource
from eft.api.serving import SERVE_OPTIONS, ServingSettings
from eft.api.stages import JOB_STAGES, PIPELINE_STAGES
from eft.cli import main
from eft.controller import manifests
from eft.controller.config import OperatorConfig
from eft.controller.manifests import Owner
from eft.hashing import plan_hashes
from eftop_harness import sample_resource

OWNER = Owner(name="demo", namespace="team-a", uid="0b7c4c1e-0000-4000-8000-000000000002", generation=2)


def parse_eft(argv: list[str], env: dict[str, str], monkeypatch) -> tuple[click.Command, dict]:
    """Parse a container command `eft SUB ...` with the `eft` CLI, in exactly the container's environment."""
    assert argv[0] == "eft", argv
    for name in [k for k in os.environ if k.startswith("EFT_")]:
        monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    cmd = main.get_command(click.Context(main), argv[1])
    assert cmd is not None and "not available" not in (cmd.help or ""), f"eft {argv[1]} is unknown"
    return cmd, cmd.make_context(argv[1], list(argv[2:])).params


def _container(obj: dict) -> dict:
    return obj["spec"]["template"]["spec"]["containers"][0]


def _plain_env(container: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env") or [] if "value" in e}


SERVING_CASES = {
    "defaults": {},
    "tuned": {"deploy": {"backend": "onnx-int8", "port": 9000, "maxBatchSize": 32, "maxWaitMs": 2.5,
                         "maxInputsPerRequest": 100}},
    "pytorch-model": {"deploy": {"backend": "torch"}, "export": {"onnx": {"enabled": False}}},
    "default-input-type": {"deploy": {"defaultInputType": "query"}},
}


@pytest.mark.parametrize("case", SERVING_CASES)
def test_server_deployment_is_what_eft_serve_reads(case, monkeypatch):
    from eft.serve.cli import serve, settings_from_params

    spec = parse_resource(sample_resource("demo", "team-a", **SERVING_CASES[case])).spec
    dep = manifests.server_deployment(OWNER, spec, plan_hashes(spec), OperatorConfig())
    container = _container(dep)
    cmd, params = parse_eft(container["command"], _plain_env(container), monkeypatch)
    assert cmd is serve
    got = settings_from_params(params)
    assert got == ServingSettings.for_resource("demo", spec, manifests.model_dir(spec))
    # Spelled out, so the comparison above cannot be vacuous.
    d = spec.deploy
    assert (got.backend, got.port, got.max_batch_size, got.max_wait_ms, got.max_inputs_per_request,
            got.default_input_type) == (d.backend, d.port, d.max_batch_size, d.max_wait_ms,
                                        d.max_inputs_per_request, d.default_input_type)
    assert ("EFT_DEFAULT_INPUT_TYPE" in _plain_env(container)) == (d.default_input_type is not None)
    assert got.served_model_names == ("demo",)
    assert got.model_dir == manifests.model_dir(spec)
    assert container["ports"][0]["containerPort"] == got.port
    # Every variable the Deployment sets is one `eft serve` reads (or the Hugging Face token).
    read = {o.envvar for o in SERVE_OPTIONS}
    assert {e["name"] for e in container["env"]} - read <= {"HF_TOKEN"}


def test_eft_serve_offers_the_spec_choices_and_bounds():
    """The serve options take their choices and bounds from spec.deploy (not a copy that can drift)."""
    from eft.api.spec import DeploySpec
    from eft.serve.cli import serve

    opts = {p.name: p for p in serve.params}
    assert list(opts["backend"].type.choices) == list(DeploySpec.model_json_schema()["properties"]["backend"]["enum"])
    schema = DeploySpec.model_json_schema()["properties"]
    assert list(opts["default_input_type"].type.choices) == ["query", "passage"]
    for field, key in (("max_inputs_per_request", "maxInputsPerRequest"), ("max_batch_size", "maxBatchSize")):
        assert (opts[field].type.min, opts[field].type.max) == (schema[key]["minimum"], schema[key]["maximum"])
        assert opts[field].default == schema[key]["default"]


@pytest.mark.parametrize("stage", JOB_STAGES)
def test_stage_jobs_are_what_eft_reads(stage, monkeypatch):
    """Each Job's command parses with `eft`; its --spec is the mounted ConfigMap holding this resource's spec
    (the corpus source rewritten to where the Job mounts it); its --workdir is the writable workspace claim."""
    body = sample_resource("demo", "team-a", deploy={"verification": {"toleranceAt1": 0.05, "toleranceAtK": 0.02}})
    body["metadata"]["uid"] = OWNER.uid
    spec = parse_resource(body).spec
    hashes = plan_hashes(spec)
    cm = manifests.spec_configmap(OWNER, body, spec)
    cm_name = cm["metadata"]["name"]
    cfg = OperatorConfig()
    job = (manifests.verify_job(OWNER, spec, hashes, cm_name, cfg) if stage == "verify"
           else manifests.stage_job(OWNER, spec, stage, hashes, cm_name, cfg))
    container = _container(job)
    pod = job["spec"]["template"]["spec"]
    env = _plain_env(container)
    cmd, params = parse_eft(container["command"], env, monkeypatch)

    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}

    def volume_at(path: str) -> tuple[dict, dict]:
        mount = next(m for p, m in mounts.items() if str(path) == p or str(path).startswith(p + "/"))
        return mount, volumes[mount["name"]]

    # --spec: this resource's ConfigMap, mounted; it holds the resource's spec.
    mount, volume = volume_at(params["spec_file"])
    assert volume["configMap"]["name"] == cm_name
    key = str(params["spec_file"])[len(mount["mountPath"]) + 1:]
    pod_resource = parse_resource(yaml.safe_load(cm["data"][key]))
    source_less = {"corpus": {"source"}}
    assert pod_resource.spec.model_dump(exclude=source_less) == spec.model_dump(exclude=source_less)
    assert env["EFT_CONFIG_HASH"] == hashes[stage]
    assert job["metadata"]["name"] == manifests.child_name("demo", stage, hashes[stage])
    if stage in PIPELINE_STAGES:  # the corpus claim (a PVC here) is mounted where the pod's spec says
        mount, volume = volume_at(pod_resource.spec.corpus.source.path)
        assert volume["persistentVolumeClaim"] == {"claimName": "docs", "readOnly": True}
        assert pod_resource.spec.corpus.source.path == mount["mountPath"] + "/" + spec.corpus.source.pvc.sub_path
    # --workdir: the workspace claim, writable (every stage writes DIR/<stage>/).
    mount, volume = volume_at(params["workdir"])
    assert volume["persistentVolumeClaim"]["claimName"] == manifests.workspace_claim("demo", spec)
    assert not mount.get("readOnly")
    if stage in PIPELINE_STAGES:
        assert cmd.name == "stage" and params["name"] == stage and not params["force"]
    else:
        assert cmd.name == "verify"
        assert params["endpoint"] == manifests.endpoint_url("demo", "team-a", spec)
        v = pod_resource.spec.deploy.verification
        assert (v.tolerance_at1, v.tolerance_at_k) == (0.05, 0.02)
    if stage == "sdg":  # the LLM key reaches the variable the stage reads
        secret_env = {e["name"]: e for e in container["env"] if "valueFrom" in e}
        assert pod_resource.spec.sdg.api_key_env in secret_env
