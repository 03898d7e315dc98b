"""The Kubernetes controller: CRD generation, manifest builders, stage planning, status, and the Kopf handlers.

Pure modules (no cluster needed): `crd`, `manifests`, `plan`, `status`, `validation`, `rbac`.
I/O modules: `kube` (a small async API client), `handlers` (Kopf), `metrics` (Prometheus), `cli` (`eft operator`).
"""
