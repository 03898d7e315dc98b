"""Prometheus metrics of the operator (served on :9090/metrics by `eft operator`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from eft.api.status import RESOURCE_PHASES

RECONCILES = Counter("eft_operator_reconciles_total", "Reconciles of EmbeddingFinetune resources", ["result"])
ERRORS = Counter("eft_operator_errors_total", "Errors while reconciling", ["kind"])
RECONCILE_SECONDS = Histogram("eft_operator_reconcile_duration_seconds", "Time spent in one reconcile",
                              buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
STAGE_OUTCOMES = Counter("eft_operator_stage_outcomes_total", "Finished stages by outcome",
                         ["namespace", "name", "stage", "outcome"])
STAGE_SECONDS = Histogram("eft_operator_stage_duration_seconds", "Duration of finished stages", ["stage", "outcome"],
                          buckets=(10, 30, 60, 300, 600, 1800, 3600, 7200, 21600, 86400))
JOBS_CREATED = Counter("eft_operator_jobs_created_total", "Jobs created", ["stage"])
EVAL_METRIC = Gauge("eft_eval_metric", "Latest evaluation figures per resource",
                    ["namespace", "name", "model", "metric"])
PHASE = Gauge("eft_resource_phase", "1 for the current phase of each resource", ["namespace", "name", "phase"])
QUEUE_DEPTH = Gauge("eft_operator_queue_depth", "Resources waiting to be reconciled")


def record_status(namespace: str, name: str, old: dict, new: dict) -> None:
    """Update gauges/counters from one status transition (stage outcomes are counted once, on transition)."""
    for phase in RESOURCE_PHASES:
        PHASE.labels(namespace, name, phase).set(1 if new.get("phase") == phase else 0)
    old_stages = (old or {}).get("stages") or {}
    for stage, st in (new.get("stages") or {}).items():
        before = old_stages.get(stage) or {}
        if st.get("phase") in ("Succeeded", "Failed") and (before.get("phase") != st.get("phase")
                                                           or before.get("job") != st.get("job")):
            outcome = st["phase"].lower()
            STAGE_OUTCOMES.labels(namespace, name, stage, outcome).inc()
            if isinstance(st.get("durationSeconds"), (int, float)):
                STAGE_SECONDS.labels(stage, outcome).observe(float(st["durationSeconds"]))
    metrics = new.get("metrics") or {}
    for model in ("base", "finetuned"):
        for metric, value in (metrics.get(model) or {}).items():
            EVAL_METRIC.labels(namespace, name, model, metric).set(value)


def forget(namespace: str, name: str) -> None:
    """Drop the per-resource series of a deleted resource."""
    for gauge in (EVAL_METRIC, PHASE, STAGE_OUTCOMES):
        for labels in list(gauge._metrics.keys()):  # noqa: SLF001 - prometheus_client has no public API for this
            if labels[0] == namespace and labels[1] == name:
                gauge.remove(*labels)
