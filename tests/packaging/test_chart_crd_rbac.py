"""The chart's CRD equals crds/, and its RBAC is exactly the API calls the controller makes."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import yaml

from eftpkg_helm import manifests, render_chart
from eftpkg_rbac_scan import admission_needs, kopf_framework, scan_controller
from eftpkg_support import CHART, ROOT


def _sync_module():
    spec = importlib.util.spec_from_file_location("eft_charts_sync", ROOT / "charts" / "sync.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SYNC = _sync_module()


# ----------------------------------------------------------------------------- CRD
def test_chart_crds_equal_top_level_crds():
    top = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert top, "crds/ is empty: run `eft crd` (the controller's generator)"
    assert chart == top, "charts/embedding-finetune-operator/crds/ differs from crds/: run python charts/sync.py"


def test_chart_crd_describes_the_resource():
    from eft.api import spec

    [path] = (CHART / "crds").glob("*.yaml")
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    [crd] = docs
    assert crd["kind"] == "CustomResourceDefinition"
    assert crd["metadata"]["name"] == f"{spec.PLURAL}.{spec.API_GROUP}"
    assert crd["spec"]["group"] == spec.API_GROUP
    assert crd["spec"]["names"]["kind"] == spec.KIND
    assert spec.SHORT_NAME in crd["spec"]["names"].get("shortNames", [])
    assert crd["spec"]["scope"] == "Namespaced"
    versions = {v["name"]: v for v in crd["spec"]["versions"]}
    assert versions[spec.API_VERSION]["served"] and versions[spec.API_VERSION]["storage"]
    assert "status" in versions[spec.API_VERSION].get("subresources", {})
    assert "{{" not in path.read_text(), "files under a chart's crds/ are not templated by Helm"


def test_sync_check_passes():
    result = subprocess.run([sys.executable, str(ROOT / "charts" / "sync.py"), "--check"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr


# ----------------------------------------------------------------------------- RBAC
def _required():
    return SYNC.required_rules()


def _role_triples(docs, kinds=("ClusterRole", "Role")):
    """(group, resource, verb) of the operator's roles: the user-facing aggregated roles are left out."""
    out: dict[str, set] = {}
    for _, doc in docs:
        if doc["kind"] not in kinds:
            continue
        labels = doc["metadata"].get("labels", {})
        if any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in labels):
            continue
        key = f"{doc['kind']}/{doc['metadata'].get('namespace', '')}/{doc['metadata']['name']}"
        out[key] = SYNC.normalise_rules(doc["rules"])
    return out


def _bindings(docs):
    return [d for _, d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")]


def _check_bound(docs, roles):
    sa = next(d for _, d in docs if d["kind"] == "Deployment")["spec"]["template"]["spec"]["serviceAccountName"]
    for key in roles:
        kind, ns, name = key.split("/")
        binding = next(b for b in _bindings(docs) if b["roleRef"]["name"] == name and b["roleRef"]["kind"] == kind
                       and b["metadata"].get("namespace", "") == ns)
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": sa, "namespace": "eft-system"}]


def test_cluster_scope_grants_exactly_the_required_rules():
    docs = manifests(render_chart(CHART, {}, namespace="eft-system"))
    roles = _role_triples(docs)
    assert list(roles) == ["ClusterRole//eft-embedding-finetune-operator"]
    assert roles["ClusterRole//eft-embedding-finetune-operator"] == _required()
    _check_bound(docs, roles)


def test_namespaced_scope_grants_the_required_rules_per_namespace():
    values = {"rbac": {"scope": "namespaced", "watchNamespaces": ["team-a", "team-b"]}}
    docs = manifests(render_chart(CHART, values, namespace="eft-system"))
    roles = _role_triples(docs)
    split = SYNC.split_rules(_required())
    for ns in ("team-a", "team-b"):
        assert roles.pop(f"Role/{ns}/eft-embedding-finetune-operator") == split["namespaced"]
    if split["cluster"]:
        assert roles.pop("ClusterRole//eft-embedding-finetune-operator-cluster") == split["cluster"]
    assert roles == {}, f"unexpected roles in namespaced scope: {list(roles)}"
    _check_bound(docs, _role_triples(docs))
    # Nothing namespaced is granted cluster-wide in this scope, and namespaces are not watched.
    for kind_ns_name, triples in _role_triples(docs, kinds=("ClusterRole",)).items():
        assert not triples & split["namespaced"], kind_ns_name
    assert not any(r == "namespaces" for _, r, _ in set().union(*_role_triples(docs).values()))


def test_no_rbac_objects_when_disabled():
    docs = manifests(render_chart(CHART, {"rbac": {"create": False}}))
    assert not [d for _, d in docs if d["kind"] in ("ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding")]


def test_no_wildcards_and_no_escalation_verbs():
    for values in ({}, {"rbac": {"scope": "namespaced"}}):
        for _, doc in manifests(render_chart(CHART, values)):
            for rule in doc.get("rules", []) if doc["kind"] in ("ClusterRole", "Role") else []:
                for key in ("apiGroups", "resources", "verbs"):
                    assert "*" not in rule[key], f"{doc['metadata']['name']}: wildcard in {key}"
                assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"])
                assert "nonResourceURLs" not in rule and "resourceNames" not in rule


def test_user_roles_touch_only_embeddingfinetunes():
    docs = manifests(render_chart(CHART, {}))
    user_roles = [d for _, d in docs if d["kind"] == "ClusterRole"
                  and any(k.startswith("rbac.authorization.k8s.io/aggregate-to-") for k in d["metadata"]["labels"])]
    assert {r["metadata"]["name"].rsplit("-", 1)[1] for r in user_roles} == {"editor", "viewer"}
    for role in user_roles:
        for group, resource, verb in SYNC.normalise_rules(role["rules"]):
            assert group == "finetune.embeddings.io" and resource.startswith("embeddingfinetunes"), role
            if role["metadata"]["name"].endswith("viewer") or resource.endswith("/status"):
                assert verb in ("get", "list", "watch"), (role["metadata"]["name"], resource, verb)
    assert not [d for _, d in manifests(render_chart(CHART, {"rbac": {"aggregateToDefaultRoles": False}}))
                if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith(("-editor", "-viewer"))]


def test_generated_rules_template_is_current():
    assert (CHART / "templates" / "_rbac_rules.tpl").read_text() == SYNC.rules_template(_required())


# ----------------------------------------------------------------------------- the rules versus the code
def test_scanner_sees_the_controllers_calls():
    """Sanity of the static derivation: it must find calls of every kind the controller is known to make."""
    calls = scan_controller().calls
    assert ("batch", "jobs", "create") in calls
    assert ("finetune.embeddings.io", "embeddingfinetunes/status", "patch") in calls
    assert ("finetune.embeddings.io", "embeddingfinetunes", "watch") in calls
    assert ("", "persistentvolumeclaims", "get") in calls  # through a helper taking the resource as a parameter
    assert ("", "pods", "watch") in calls  # Kopf's index of pods waiting for a missing Secret


def test_operator_never_reads_secrets():
    """A missing Secret is found from the pod's CreateContainerConfigError, never by reading Secrets."""
    assert not [t for t in scan_controller().calls if t[1] == "secrets"]
    assert not [t for t in _required() if t[1] == "secrets"]


def test_required_rules_cover_every_call_in_the_code():
    from eft.api.spec import API_GROUP, PLURAL

    calls = {**scan_controller().calls, **admission_needs(API_GROUP, PLURAL)}
    missing = {t: where for t, where in calls.items() if t not in _required()}
    assert not missing, f"API calls in the controller that REQUIRED_RULES (and so the chart) lacks: {missing}"


def test_required_rules_grant_nothing_the_code_does_not_use():
    """Least privilege: every rule is a call in the controller's code, a documented need of Kopf itself, or a
    permission the API server's admission checks on the controller's own requests."""
    from eft.api.spec import API_GROUP, PLURAL

    framework = kopf_framework(API_GROUP, PLURAL)
    used = set(scan_controller().calls) | set(framework) | set(admission_needs(API_GROUP, PLURAL))
    extra = sorted(_required() - used)
    assert not extra, ("REQUIRED_RULES grants (group, resource, verb) that no code path uses; remove them "
                       f"from eft/controller/rbac.py: {extra}")


def test_kopf_framework_needs_match_kopf():
    """The Kopf allowances name resources Kopf really requests (read from Kopf's own selectors)."""
    from kopf._cogs.structs import references

    def name(selector):
        return (selector.group or "", selector.plural or selector.any_name)

    assert name(references.CRDS) == ("apiextensions.k8s.io", "customresourcedefinitions")
    assert name(references.NAMESPACES) == ("", "namespaces")
    assert name(references.EVENTS) == ("", "events")  # core/v1, not events.k8s.io


def test_stage_and_server_pods_need_no_api_access():
    """Stage Jobs and the server only read files and serve HTTP: the chart grants no role to their
    ServiceAccounts, and the operator's rules are only those of its own calls (checked above)."""
    docs = manifests(render_chart(CHART, {}))
    subjects = [s for b in _bindings(docs) for s in b["subjects"]]
    sa = next(d for _, d in docs if d["kind"] == "ServiceAccount")["metadata"]["name"]
    assert {s["name"] for s in subjects} == {sa}
