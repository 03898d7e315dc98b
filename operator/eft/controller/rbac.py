"""Every API call the operator process makes (its own client and Kopf's), as RBAC rules.

The packaging helper renders the Helm ClusterRole from `REQUIRED_RULES`. Tests check that it covers every
request the running operator sent to the emulator (Kopf's watches, patches and Events included) and every
`(group, resource, verb)` the controller's client recorded in `eft.controller.kube.CALLS`.
"""

from __future__ import annotations

from eft.api.spec import API_GROUP, PLURAL

REQUIRED_RULES: list[dict[str, list[str]]] = [
    # The resource: Kopf lists/watches it and may patch it (removing a stale finalizer of ours); the controller
    # only merge-patches the status subresource. Nobody GETs it (Kopf's watch keeps the bodies) or PUTs status.
    {"apiGroups": [API_GROUP], "resources": [PLURAL], "verbs": ["list", "watch", "patch"]},
    {"apiGroups": [API_GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["patch"]},
    # Never called: every child's owner reference sets blockOwnerDeletion, and where the API server runs the
    # OwnerReferencesPermissionEnforcement admission plugin (OpenShift, hardened clusters) that needs update on the
    # owner's finalizers subresource, or every child create is refused with a 403.
    {"apiGroups": [API_GROUP], "resources": [f"{PLURAL}/finalizers"], "verbs": ["update"]},
    # Kopf's resource observer discovers resources and follows CRDs appearing. (Its namespace observer lists
    # namespaces only for --namespace/globs, falling back to the given names when forbidden; never with
    # --all-namespaces. The chart passes exact names, so it grants nothing on namespaces.)
    {"apiGroups": ["apiextensions.k8s.io"], "resources": ["customresourcedefinitions"], "verbs": ["list", "watch"]},
    # Events on every transition: the controller's and Kopf's own, both core/v1 (not events.k8s.io).
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # Children: Kopf indexes and watches Jobs and Deployments; the controller creates them and deletes Jobs (to
    # retry after a spec change or the retry annotation, or to re-read a result whose pods are gone) and
    # superseded Deployments. The server Deployment is read and patched when it drifts from the spec.
    {"apiGroups": ["batch"], "resources": ["jobs"], "verbs": ["list", "watch", "create", "delete"]},
    {"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get", "list", "watch", "create", "patch",
                                                                    "delete"]},
    # Created; read to check their controller owner is this resource (not an earlier one of the same name).
    # The server Service is patched when its ports or selector drift from the spec.
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "create"]},
    {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "create", "patch"]},
    # The workspace claim: created for the stages and patched to a larger spec.storage.size, or
    # (spec.storage.claimName) checked to exist.
    {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get", "create", "patch"]},
    # Termination messages of finished stage pods (listed by the job-name label); Kopf watches our labelled pods
    # for `CreateContainerConfigError` (a referenced Secret or key missing).
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    # No Secrets: reading one to check it exists would let the operator read every credential in its scope.
]


def allows(group: str, resource: str, verb: str, rules: list[dict[str, list[str]]] | None = None) -> bool:
    for rule in rules if rules is not None else REQUIRED_RULES:
        if group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]:
            return True
    return False
