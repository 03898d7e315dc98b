"""Every API call the operator process makes (its own client and Kopf's), as RBAC rules.

The packaging helper renders the Helm ClusterRole from `REQUIRED_RULES`. Tests check that it covers every
request the running operator sent to the emulator (Kopf's watches, patches and Events included) and every
`(group, resource, verb)` the controller's client recorded in `eft.controller.kube.CALLS`.
"""

from __future__ import annotations

from eft.api.spec import API_GROUP, PLURAL

REQUIRED_RULES: list[dict[str, list[str]]] = [
    # The resource: Kopf lists/watches it (and may patch annotations/finalizers); the controller writes status.
    {"apiGroups": [API_GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [API_GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get", "patch", "update"]},
    # Kopf discovers resources and follows CRDs and namespaces appearing.
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    # Events on every transition (the controller's and Kopf's own).
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create"]},
    # Children.
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "create", "delete"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create", "delete"]},
    {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "create"]},
    # Termination messages of finished stage pods.
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
    # Checking that the referenced Secrets (LLM API key, HF token) exist; never their content beyond the key.
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
]


def allows(group: str, resource: str, verb: str, rules: list[dict[str, list[str]]] | None = None) -> bool:
    for rule in rules if rules is not None else REQUIRED_RULES:
        if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
            return True
    return False
