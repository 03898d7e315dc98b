"""Pure parts of the controller: the CRD generated from the models, manifest builders, plan, status."""

from __future__ import annotations

import copy

import jsonschema
import kubernetes_validate
import pytest
import yaml

from eft.api import parse_resource
from eft.controller import crd, manifests
from eft.controller.config import OperatorConfig
from eft.controller.manifests import Owner
from eft.controller.plan import DeploymentObs, JobObs, Observed, parse_termination, plan_stages
from eft.controller.status import compute_status, merge_patch, set_condition, transition_events
from eft.hashing import plan_hashes
from eftop_harness import sample_resource

K8S = "1.30"
OWNER = Owner(name="demo", namespace="team-a", uid="0b7c4c1e-0000-4000-8000-000000000001", generation=3)


def spec_of(**overrides):
    return parse_resource(sample_resource("demo", "team-a", **overrides)).spec


# ----------------------------------------------------------------------------- CRD
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


def _jsonschema(node):
    """OpenAPI `nullable` → JSON Schema, to check the CRD schema with jsonschema."""
    node = dict(node)
    for key in ("properties",):
        if key in node:
            node[key] = {k: _jsonschema(v) for k, v in node[key].items()}
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            node[key] = _jsonschema(node[key])
    if node.pop("nullable", False):
        node = {"anyOf": [node, {"type": "null"}]}
    if node.get("exclusiveMinimum") is True:
        node["exclusiveMinimum"] = node.pop("minimum")
    return {k: v for k, v in node.items() if not k.startswith("x-kubernetes")}


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
    validator = jsonschema.Draft7Validator(_jsonschema(spec))
    good = sample_resource()["spec"]
    assert not list(validator.iter_errors(good))
    for path, bad in ((("training", "epochs"), 500), (("training", "epochs"), "three"),
                      (("sdg", "generator"), "gpt"), (("training", "learningRate"), 0)):
        doc = copy.deepcopy(good)
        doc.setdefault(path[0], {})[path[1]] = bad
        assert list(validator.iter_errors(doc)), (path, bad)


# ----------------------------------------------------------------------------- manifests
def test_every_manifest_validates_against_the_kubernetes_schemas():
    spec = spec_of(training={"gpus": 8, "nodes": 2})
    hashes = plan_hashes(spec)
    cfg = OperatorConfig()
    body = sample_resource("demo", "team-a")
    body["metadata"].update(uid=OWNER.uid, generation=3)
    cm = manifests.spec_configmap(OWNER, body, spec)
    objs = [cm, manifests.workspace_pvc(OWNER, spec), manifests.server_service(OWNER, spec),
            manifests.server_deployment(OWNER, spec, hashes, cfg), manifests.verify_job(OWNER, spec, hashes, "cm", cfg),
            manifests.train_headless_service(OWNER, spec, hashes),
            manifests.event(body, "Normal", "StageStarted", "stage sdg started", "2025-01-01T00:00:00Z")]
    objs += [manifests.stage_job(OWNER, spec, s, hashes, cm["metadata"]["name"], cfg)
             for s in ("sdg", "prep", "train", "eval", "export")]
    for obj in objs:
        kubernetes_validate.validate(obj, K8S, strict=True)
        if obj["kind"] != "Event":
            assert obj["metadata"]["ownerReferences"][0]["uid"] == OWNER.uid
            assert obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "embedding-finetune-operator"
        if obj["kind"] in ("Job", "Deployment"):  # stages and the server make no Kubernetes API calls
            assert obj["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    train = objs[-3]
    assert train["metadata"]["name"] == f"demo-train-{hashes['train'][:8]}"
    assert train["spec"]["completionMode"] == "Indexed" and train["spec"]["completions"] == 2
    env = {e["name"]: e for e in train["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["PET_NPROC_PER_NODE"]["value"] == "8" and env["PET_MASTER_PORT"]["value"] == "29500"
    assert env["PET_MASTER_ADDR"]["value"] == f"{train['metadata']['name']}-0.{train['metadata']['name']}"
    assert train["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == "8"


def test_existing_claim_and_configmap_corpus():
    spec = spec_of(storage={"claimName": "shared-ws"}, corpus={"source": {"configMap": {"name": "docs"}}})
    assert manifests.workspace_pvc(OWNER, spec) is None
    job = manifests.stage_job(OWNER, spec, "sdg", plan_hashes(spec), "cm", OperatorConfig())
    vols = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert vols["workspace"]["persistentVolumeClaim"]["claimName"] == "shared-ws"
    assert vols["corpus"]["configMap"]["name"] == "docs"
    doc = yaml.safe_load(manifests.spec_configmap(OWNER, {"metadata": {"name": "demo"}}, spec)["data"]["resource.yaml"])
    assert parse_resource(doc).spec.corpus.source.path == "/mnt/corpus"


def test_runtime_overrides_and_images_from_the_environment():
    cfg = OperatorConfig.from_env({"EFT_PIPELINE_IMAGE": "p:1", "EFT_SERVER_IMAGE": "s:1"})
    spec = spec_of(runtime={"stages": {"eval": {"image": "e:2", "backoffLimit": 0}}})
    h = plan_hashes(spec)
    ev = manifests.stage_job(OWNER, spec, "eval", h, "cm", cfg)
    assert ev["spec"]["template"]["spec"]["containers"][0]["image"] == "e:2" and ev["spec"]["backoffLimit"] == 0
    assert manifests.stage_job(OWNER, spec, "prep", h, "cm", cfg)["spec"]["template"]["spec"]["containers"][0][
        "image"] == "p:1"
    assert manifests.server_deployment(OWNER, spec, h, cfg)["spec"]["template"]["spec"]["containers"][0][
        "image"] == "s:1"


# ----------------------------------------------------------------------------- plan and status
def _job(name, stage, h, state, generation=3, reason=None):
    return JobObs(name=name, stage=stage, config_hash=h, generation=generation, state=state, reason=reason,
                  attempts=1)


def test_plan_walks_the_chain_one_job_at_a_time():
    spec = spec_of()
    h = plan_hashes(spec)
    p = plan_stages("demo", 3, spec, h, {}, Observed(), False, False, "http://e")
    assert [(a.kind, a.stage) for a in p.actions] == [("create_job", "sdg")] and p.outcome == "Running"
    jobs = {f"demo-{s}-{h[s][:8]}": _job(f"demo-{s}-{h[s][:8]}", s, h[s], "Succeeded") for s in ("sdg", "prep")}
    p = plan_stages("demo", 3, spec, h, {}, Observed(jobs=jobs), False, False, "http://e")
    assert [(a.kind, a.stage) for a in p.actions] == [("create_job", "train")]
    assert p.current_stage == "train"
    # Suspended: nothing new is created.
    p = plan_stages("demo", 3, spec, h, {}, Observed(jobs=jobs), True, False, "http://e")
    assert not p.actions and p.outcome == "Suspended"


def test_plan_failed_stage_and_retry_after_a_spec_change():
    spec = spec_of()
    h = plan_hashes(spec)
    name = f"demo-sdg-{h['sdg'][:8]}"
    obs = Observed(jobs={name: _job(name, "sdg", h["sdg"], "Failed", generation=3, reason="BackoffLimitExceeded")},
                   summaries={name: {"exitCode": 1, "message": "boom"}})
    p = plan_stages("demo", 3, spec, h, {}, obs, False, False, None)
    assert p.outcome == "Failed" and p.reason == "BackoffLimitExceeded" and "boom" in p.message
    assert not p.actions
    # Once recorded, a later reconcile (pod message no longer read) keeps the same message, not a nested one.
    recorded = {"sdg": p.stages["sdg"].as_status()}
    again = plan_stages("demo", 3, spec, h, recorded, Observed(jobs=obs.jobs), False, False, None)
    assert again.stages["sdg"].message == p.stages["sdg"].message
    p = plan_stages("demo", 4, spec, h, {}, obs, False, False, None)
    assert [(a.kind, a.name) for a in p.actions] == [("delete_job", name)]


def test_plan_uses_recorded_success_when_the_job_is_gone_and_rolls_the_server():
    spec = spec_of()
    h = plan_hashes(spec)
    recorded = {s: {"phase": "Succeeded", "configHash": h[s], "job": f"demo-{s}-{h[s][:8]}",
                    "summary": {"promotion": {"promoted": True}} if s == "eval" else {}}
                for s in ("sdg", "prep", "train", "eval", "export")}
    new_dep = f"demo-deploy-{h['deploy'][:8]}"
    deps = {"demo-deploy-old": DeploymentObs("demo-deploy-old", "x", True),
            new_dep: DeploymentObs(new_dep, h["deploy"], True, 1, 1)}
    p = plan_stages("demo", 3, spec, h, recorded, Observed(deployments=deps), False, False, "http://e")
    kinds = [(a.kind, a.name) for a in p.actions]
    assert ("delete_deployment", "demo-deploy-old") in kinds
    assert ("create_job", f"demo-verify-{h['verify'][:8]}") in kinds
    assert p.endpoint == "http://e"


def test_termination_message_parsing():
    pods = [{"status": {"containerStatuses": [{"name": "stage", "state": {"terminated": {
        "exitCode": 0, "finishedAt": "2025-01-01T00:00:02Z",
        "message": '{"stage":"eval","configHash":"x","durationSeconds":3.5,"summary":{"a":1}}'}}}]}},
            {"status": {"containerStatuses": [{"name": "stage", "state": {"terminated": {
                "exitCode": 1, "finishedAt": "2025-01-01T00:00:01Z", "message": "Traceback ... OOM"}}}]}}]
    assert parse_termination(pods) == {"exitCode": 0, "stage": "eval", "configHash": "x", "durationSeconds": 3.5,
                                       "summary": {"a": 1}}
    assert parse_termination(pods[1:])["message"] == "Traceback ... OOM"
    assert parse_termination([]) is None


def test_conditions_move_last_transition_time_only_on_flips_and_events_follow_transitions():
    c = set_condition([], "Ready", "False", "StageRunning", "m", 1, "T1")
    c = set_condition(c, "Ready", "False", "StageRunning", "m2", 2, "T2")
    assert c[0]["lastTransitionTime"] == "T1" and c[0]["observedGeneration"] == 2
    c = set_condition(c, "Ready", "True", "Verified", "ok", 2, "T3")
    assert c[0]["lastTransitionTime"] == "T3"
    spec = spec_of()
    h = plan_hashes(spec)
    p = plan_stages("demo", 1, spec, h, {}, Observed(), False, False, None)
    s1 = compute_status({}, p, 1, None, "T1")
    assert s1["phase"] == "Running" and s1["stages"]["sdg"]["phase"] == "Running"
    assert ("Normal", "StageStarted", f"stage sdg started (demo-sdg-{h['sdg'][:8]})") in transition_events({}, s1)
    assert merge_patch(s1, compute_status(s1, p, 1, None, "T9")) is None  # nothing to write
    bad = compute_status(s1, p, 2, ("InvalidSpec", "spec.training.epochs: too big"), "T2")
    assert ("Warning", "InvalidSpec", "spec.training.epochs: too big") in transition_events(s1, bad)
    assert merge_patch({"a": {"b": 1, "c": 2}}, {"a": {"b": 1}}) == {"a": {"c": None}}


def test_example_resource_is_valid_for_the_operator_and_the_crd():
    from eft.controller.validation import validate

    doc = yaml.safe_load((crd.REPO_CRD_PATH.parents[1] / "examples" / "embeddingfinetune.yaml").read_text())
    resource, problems = validate(doc)
    assert resource is not None and not problems
    spec_schema = crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert not list(jsonschema.Draft7Validator(_jsonschema(spec_schema)).iter_errors(doc["spec"]))


def test_operator_defaults_file_sits_below_the_resource_runtime(tmp_path):
    path = tmp_path / "defaults.yaml"
    path.write_text(yaml.safe_dump({
        "stages": {"all": {"backoffLimit": 4, "nodeSelector": {"pool": "batch"}},
                   "train": {"activeDeadlineSeconds": 12345, "resources": {"requests": {"cpu": "7", "memory": "1Gi"}}}},
        "server": {"resources": {"limits": {"memory": "2Gi"}}, "tolerations": [{"key": "x", "operator": "Exists"}]}}))
    cfg = OperatorConfig.from_env({"EFT_DEFAULTS_FILE": str(path)})
    spec = spec_of(runtime={"stages": {"train": {"resources": {"requests": {"memory": "64Gi"}}}}})
    h = plan_hashes(spec)
    job = manifests.stage_job(OWNER, spec, "train", h, "cm", cfg)
    pod = job["spec"]["template"]["spec"]
    assert job["spec"]["activeDeadlineSeconds"] == 12345 and job["spec"]["backoffLimit"] == 4
    assert pod["containers"][0]["resources"]["requests"] == {"cpu": "7", "memory": "64Gi", "nvidia.com/gpu": "1"}
    assert pod["nodeSelector"] == {"pool": "batch"}
    dep = manifests.server_deployment(OWNER, spec, h, cfg)["spec"]["template"]["spec"]
    assert dep["containers"][0]["resources"] == {"limits": {"memory": "2Gi"}}
    assert dep["tolerations"][0]["key"] == "x"
    kubernetes_validate.validate(job, K8S, strict=True)
