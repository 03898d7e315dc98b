"""The Kubernetes controller: CRD generation, manifest builders, stage planning, status, the reconciler and
the Kopf handlers.

Pure modules (no cluster needed): `crd`, `config`, `manifests`, `plan`, `status`, `validation`, `rbac`.
I/O modules: `kube` (a small async API client), `reconciler` (queue, workers, reconcile; no Kopf),
`handlers` (the Kopf registrations feeding the reconciler), `metrics` (Prometheus), `cli` (`eft operator`).
"""
