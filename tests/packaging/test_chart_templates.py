"""The chart's templates, rendered by the real `helm template` (tests/packaging/eftpkg_helm.py), parsed, and
checked against the Kubernetes OpenAPI schemas (kubernetes-validate) and the operator's contracts."""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
import yaml

from eftpkg_helm import manifests, render_chart
from eftpkg_support import CHART, IMAGES, pyproject, read_env_file

DEFAULTS = yaml.safe_load((CHART / "values.yaml").read_text())
CI_FILES = sorted((CHART / "ci").glob("*.yaml"))
CASES = {
    "defaults": {},
    **{p.stem: yaml.safe_load(p.read_text()) for p in CI_FILES},
    "namespaced-release-namespace": {"rbac": {"scope": "namespaced"}},
    "servicemonitor-other-namespace": {"metrics": {"serviceMonitor": {"enabled": True, "namespace": "monitoring"}}},
    "debug-extras": {"operator": {"debug": True, "extraArgs": ["--workers=2"],
                                    "extraEnv": [{"name": "FOO", "value": "bar"}], "replicas": 0},
                       "rbac": {"create": False}, "serviceAccount": {"create": False}},
    "release-named-like-chart": {"__release__": "embedding-finetune-operator"},
}
KUBE_VERSIONS = ("1.27.0", "1.37.0")  # Chart.yaml kubeVersion floor, and the newest schema available
CLUSTER_KINDS = {"ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "Namespace"}


def _render(case: str):
    values = dict(CASES[case])
    release = values.pop("__release__", "eft")
    return render_chart(CHART, values, release=release, namespace="eft-system")


def _docs(case: str):
    return manifests(_render(case))


def _one(docs, kind):
    found = [d for _, d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


@pytest.mark.parametrize("case", CASES)
def test_every_template_renders_parses_and_validates(case):
    docs = manifests(_render(case))
    assert docs
    names = set()
    for template, doc in docs:
        assert isinstance(doc, dict), f"{template}: a document is not a mapping"
        assert {"apiVersion", "kind", "metadata"} <= set(doc), f"{template}: {doc}"
        key = (doc["kind"], doc["metadata"].get("namespace"), doc["metadata"]["name"])
        assert key not in names, f"{template}: duplicate object {key}"
        names.add(key)
        if doc["kind"] not in CLUSTER_KINDS:
            assert doc["metadata"].get("namespace"), f"{template}: {doc['kind']} without a namespace"
        else:
            assert "namespace" not in doc["metadata"]
        labels = doc["metadata"].get("labels", {})
        assert labels.get("app.kubernetes.io/managed-by") == "Helm", f"{template}: {doc['kind']} lacks labels"
        if doc["apiVersion"] == "monitoring.coreos.com/v1":
            continue  # not a built-in kind: checked in test_servicemonitor
        for version in KUBE_VERSIONS:
            kubernetes_validate.validate(doc, version, strict=True)


def test_every_values_reference_exists():
    """A typo in `.Values.x.y` renders as nothing in Helm; here every referenced path must exist in values.yaml."""
    for path in sorted((CHART / "templates").iterdir()):
        for ref in re.findall(r"\.Values((?:\.[A-Za-z_][A-Za-z0-9_]*)+)", path.read_text()):
            node = DEFAULTS
            for part in ref.strip(".").split("."):
                assert isinstance(node, dict) and part in node, f"{path.name}: .Values{ref} is not in values.yaml"
                node = node[part]


def test_deployment_security_and_probes():
    dep = _one(_docs("defaults"), "Deployment")
    pod = dep["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    [c] = pod["containers"]
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["privileged"] is False
    assert sc["capabilities"]["drop"] == ["ALL"] and "add" not in sc["capabilities"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    assert c["resources"]["requests"] and c["resources"]["limits"]
    # A read-only root filesystem needs a writable /tmp.
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    assert "/tmp" in mounts
    assert any(v["name"] == mounts["/tmp"] and "emptyDir" in v for v in pod["volumes"])
    assert dep["spec"]["strategy"]["type"] == "Recreate"
    assert dep["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()


def test_operator_uid_matches_the_image():
    dep = _one(_docs("defaults"), "Deployment")
    dockerfile = (IMAGES / "operator" / "Dockerfile").read_text()
    uid = re.findall(r"^USER (\d+)", dockerfile, re.M)[-1]
    assert dep["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid)


def _args(case):
    return _one(_docs(case), "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]


def test_operator_args_follow_the_rbac_scope():
    ports = ["--liveness-port", "8080", "--metrics-port", "9090"]
    assert _args("defaults") == ["operator", *ports, "--all-namespaces"]
    assert _args("namespaced-values") == ["operator", *ports, "--namespace", "ml-team-a", "--namespace", "ml-team-b"]
    assert _args("namespaced-release-namespace") == ["operator", *ports, "--namespace", "eft-system"]
    assert _args("debug-extras") == ["operator", *ports, "--all-namespaces", "--debug", "--workers=2"]


@pytest.mark.parametrize("case", CASES)
def test_args_parse_with_the_operator_command(case):
    """The exact argument list the chart renders is accepted by `eft operator`'s own parser."""
    import click

    from eft.cli import main

    args = _args(case) if any(d["kind"] == "Deployment" for _, d in _docs(case)) else None
    cmd = main.get_command(click.Context(main), args[0])
    assert cmd is not None and not (cmd.help or "").startswith("(not available"), f"`eft {args[0]}` is missing"
    ctx = cmd.make_context(args[0], list(args[1:]))  # raises click.UsageError on an unknown or malformed flag
    params = ctx.params
    assert params["liveness_port"] == 8080 and params["metrics_port"] == 9090
    if (CASES[case].get("rbac") or {}).get("scope") == "namespaced":
        assert params["namespaces"] and not params["all_namespaces"]
    else:
        assert params["all_namespaces"] and not params["namespaces"]


def _env(docs):
    c = _one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c["env"]}


def test_images_agree_with_the_operator_defaults_and_images_env():
    from eft.api import spec

    env = _env(_docs("defaults"))
    assert env["EFT_PIPELINE_IMAGE"] == spec.DEFAULT_PIPELINE_IMAGE
    assert env["EFT_SERVER_IMAGE"] == spec.DEFAULT_SERVER_IMAGE
    images_env = read_env_file(IMAGES / "images.env")
    assert DEFAULTS["images"]["registry"] == images_env["REGISTRY"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == images_env["TAG"] == pyproject()["project"]["version"]
    dep = _one(_docs("defaults"), "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == \
        f"{images_env['REGISTRY']}/operator:{images_env['TAG']}"


def test_one_registry_and_tag_setting_moves_all_images():
    docs = _docs("production-values")
    env = _env(docs)
    prefix = "registry.example.com/mirror/embedding-finetune-operator"
    assert env["EFT_PIPELINE_IMAGE"] == f"{prefix}/pipeline:0.1.0"
    assert env["EFT_SERVER_IMAGE"] == f"{prefix}/server:0.1.0"
    dep = _one(docs, "Deployment")
    assert dep["spec"]["template"]["spec"]["containers"][0]["image"] == f"{prefix}/operator:0.1.0"
    assert dep["spec"]["template"]["spec"]["imagePullSecrets"] == [{"name": "registry-credentials"}]
    digests = _env(_docs("digest-images-values"))
    assert digests["EFT_PIPELINE_IMAGE"].startswith("registry.internal:5000/eft/pipeline@sha256:")


def test_defaults_configmap_reaches_the_operator():
    from eft.api.spec import StageRuntime

    docs = _docs("gpu-values")
    cm = _one(docs, "ConfigMap")
    defaults = yaml.safe_load(cm["data"]["defaults.yaml"])
    assert set(defaults) == {"stages", "server"}
    for stage, runtime in defaults["stages"].items():
        StageRuntime.model_validate(runtime)  # same keys and bounds as spec.runtime.stages.<stage>
    assert defaults["stages"]["eval"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    dep = _one(docs, "Deployment")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    path = _env(docs)["EFT_DEFAULTS_FILE"]
    mount = next(m for m in c["volumeMounts"] if path.startswith(m["mountPath"] + "/"))
    vol = next(v for v in dep["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    assert vol["configMap"]["name"] == cm["metadata"]["name"]
    assert path.rsplit("/", 1)[1] in cm["data"]
    # Changing a default restarts the operator (the pod template's checksum changes).
    base = _one(_docs("defaults"), "Deployment")["spec"]["template"]["metadata"]["annotations"]["checksum/defaults"]
    assert dep["spec"]["template"]["metadata"]["annotations"]["checksum/defaults"] != base


def test_stage_defaults_agree_with_the_controller():
    """values.yaml states the same deadlines and retries the controller uses when the chart gives none."""
    config_mod = pytest.importorskip("eft.controller.config")
    stages = DEFAULTS["stageDefaults"]
    for stage, seconds in config_mod.DEFAULT_DEADLINES.items():
        assert stages[stage]["activeDeadlineSeconds"] == seconds, stage
    assert stages["all"]["backoffLimit"] == config_mod.DEFAULT_BACKOFF_LIMIT


def test_metrics_service_and_servicemonitor():
    docs = _docs("production-values")
    dep = _one(docs, "Deployment")
    svc = next(d for _, d in docs if d["kind"] == "Service" and d["metadata"]["name"].endswith("-metrics"))
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()
    [port] = svc["spec"]["ports"]
    assert port["targetPort"] == "metrics" and port["name"] == "metrics"
    sm = _one(docs, "ServiceMonitor")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"]["matchNames"] == [svc["metadata"]["namespace"]]
    [endpoint] = sm["spec"]["endpoints"]
    assert endpoint == {"port": "metrics", "path": "/metrics", "interval": "15s", "scrapeTimeout": "10s"}
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert not [d for _, d in _docs("defaults") if d["kind"] == "ServiceMonitor"], "ServiceMonitor is opt-in"
    other = _one(_docs("servicemonitor-other-namespace"), "ServiceMonitor")
    assert other["metadata"]["namespace"] == "monitoring"
    assert other["spec"]["namespaceSelector"]["matchNames"] == ["eft-system"]
    off = _docs("digest-images-values")
    assert not [d for _, d in off if d["kind"] in ("Service", "ServiceMonitor")]


def test_server_podmonitor_selects_the_servers_the_operator_deploys():
    from eft.api.spec import EmbeddingFinetuneSpec
    from eft.controller import manifests as m

    spec = EmbeddingFinetuneSpec.model_validate({"corpus": {"source": {"pvc": {"claimName": "docs"}}}})
    owner = m.Owner(name="demo", namespace="ml-team-a", uid="u1")
    dep = m.server_deployment(owner, spec, {"deploy": "0" * 64}, m.OperatorConfig())
    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    port_names = {p["name"] for p in dep["spec"]["template"]["spec"]["containers"][0]["ports"]}
    for case, namespaces in (("production-values", None), ("namespaced-values", ["ml-team-a", "ml-team-b"])):
        pm = _one(_docs(case), "PodMonitor")
        assert pm["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        [endpoint] = pm["spec"]["podMetricsEndpoints"]
        assert endpoint["port"] in port_names and endpoint["path"] == "/metrics"
        if namespaces is None:
            assert pm["spec"]["namespaceSelector"] == {"any": True}
        else:
            assert pm["spec"]["namespaceSelector"] == {"matchNames": namespaces}
    assert not [d for _, d in _docs("defaults") if d["kind"] == "PodMonitor"]


def test_service_account_wiring():
    docs = _docs("defaults")
    sa = _one(docs, "ServiceAccount")
    dep = _one(docs, "Deployment")
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    assert sa["automountServiceAccountToken"] is False  # only the operator pod mounts a token
    assert dep["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    pre = _docs("digest-images-values")
    assert not [d for _, d in pre if d["kind"] == "ServiceAccount"]
    assert _one(pre, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "eft-operator-preprovisioned"
    assert _one(pre, "Deployment")["metadata"]["name"] == "eft-operator"
    assert _one(_docs("release-named-like-chart"), "Deployment")["metadata"]["name"] == "embedding-finetune-operator"


# ----------------------------------------------------------------------------- the renderer itself
def test_operator_applies_the_chart_stage_defaults(tmp_path):
    """End to end: the defaults file the chart mounts changes the Jobs the operator builds."""
    from eft.api.spec import EmbeddingFinetuneSpec
    from eft.controller import manifests as m
    from eft.hashing import plan_hashes

    values = {"stageDefaults": {"train": {"activeDeadlineSeconds": 12345,
                                          "resources": {"requests": {"cpu": "7"}}}},
              "serverDefaults": {"nodeSelector": {"pool": "serving"}}}
    cm = _one(manifests(render_chart(CHART, values)), "ConfigMap")
    path = tmp_path / "defaults.yaml"
    path.write_text(cm["data"]["defaults.yaml"])
    config = m.OperatorConfig.from_env({"EFT_DEFAULTS_FILE": str(path)})
    spec = EmbeddingFinetuneSpec.model_validate({"corpus": {"source": {"pvc": {"claimName": "docs"}}},
                                                 "training": {"gpus": 0}})
    owner = m.Owner(name="demo", namespace="ml", uid="u1")
    job = m.stage_job(owner, spec, "train", plan_hashes(spec), "demo-spec", config)
    assert job["spec"]["activeDeadlineSeconds"] == 12345
    assert job["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "7"
    # Without the file the Job keeps the built-in defaults: the values above came from the chart.
    plain = m.stage_job(owner, spec, "train", plan_hashes(spec), "demo-spec", m.OperatorConfig.from_env({}))
    assert plain["spec"]["activeDeadlineSeconds"] != 12345
    # A resource's spec.runtime sits above the chart's defaults, key by key.
    spec2 = EmbeddingFinetuneSpec.model_validate({
        "corpus": {"source": {"pvc": {"claimName": "docs"}}}, "training": {"gpus": 0},
        "runtime": {"stages": {"train": {"activeDeadlineSeconds": 999}}}})
    job2 = m.stage_job(owner, spec2, "train", plan_hashes(spec2), "demo-spec", config)
    assert job2["spec"]["activeDeadlineSeconds"] == 999
    assert job2["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"] == "7"
    # The server defaults reach the Deployment.
    dep = m.server_deployment(owner, spec, plan_hashes(spec), config)
    assert dep["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "serving"}
