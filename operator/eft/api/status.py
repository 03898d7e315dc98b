"""The `status` of an `EmbeddingFinetune` as a typed model: the CRD's status schema is generated from it, the
operator's planner builds `StageStatus` entries directly, and the status writer fills the rest.

`ResourcePhase` and `StagePhase` are the closed sets of phases; `CONDITION_TYPES` the Kubernetes-style
conditions, in the order they are written.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

#: `status.phase`: a summary for printer columns (conditions are the truth).
ResourcePhase = Literal["Pending", "Running", "Succeeded", "Failed", "Suspended"]
#: `status.stages.<name>.phase`.
StagePhase = Literal["Pending", "Running", "Succeeded", "Failed", "Skipped"]
ConditionType = Literal["Ready", "Progressing", "Degraded", "SpecValid"]
ConditionStatus = Literal["True", "False", "Unknown"]

RESOURCE_PHASES: tuple[str, ...] = get_args(ResourcePhase)
CONDITION_TYPES: tuple[str, ...] = get_args(ConditionType)


class _StatusModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    def as_status(self) -> dict[str, Any]:
        """The wire form (camelCase keys, unset fields left out)."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class Condition(_StatusModel):
    type: str = Field(..., description="Ready, Progressing, Degraded or SpecValid.")
    status: ConditionStatus
    reason: str = Field("", description="CamelCase reason, e.g. StageRunning, JobFailed, InvalidSpec.")
    message: str = ""
    last_transition_time: str | None = Field(None, json_schema_extra={"format": "date-time"})
    observed_generation: int | None = None


class StageStatus(_StatusModel):
    phase: StagePhase | None = None
    job: str | None = Field(None, description="The Job (or Deployment) of this stage for the current config.")
    attempts: int | None = None
    start_time: str | None = None
    completion_time: str | None = None
    duration_seconds: float | None = None
    config_hash: str | None = None
    reason: str | None = None
    message: str | None = None
    summary: dict[str, Any] | None = Field(None, description="The stage's termination-message summary (free form).",
                                           json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    generation: int | None = Field(None, description="For a failed stage: the resource generation it failed at "
                                                     "(a later spec change retries it).")
    retry: str | None = Field(None, description="For a failed stage: the finetune.embeddings.io/retry annotation "
                                                "its Job was created with (a new value retries it).")


class MetricsStatus(_StatusModel):
    ndcg10: str | None = Field(None, description="nDCG@10 base → fine-tuned (for `kubectl get`).")
    base: dict[str, float] | None = None
    finetuned: dict[str, float] | None = None
    relative: dict[str, float] | None = None
    promotion: dict[str, Any] | None = Field(None, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True})
    warnings: list[str] | None = Field(None, description="Why the figures may not mean much (e.g. a test split "
                                                         "below promotion.minTestQueries).")


class ModelStatus(_StatusModel):
    claim_name: str | None = Field(None, description="Workspace PVC holding the artifacts.")
    path: str | None = Field(None, description="Folder of the served model inside the workspace.")
    promoted: bool | None = None


class EmbeddingFinetuneStatus(_StatusModel):
    phase: ResourcePhase | None = None
    observed_generation: int | None = None
    current_stage: str | None = None
    stages: dict[str, StageStatus] | None = None
    metrics: MetricsStatus | None = None
    model: ModelStatus | None = None
    endpoint: str | None = Field(None, description="OpenAI-compatible base URL of the served model.")
    conditions: list[Condition] | None = Field(
        None, json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})
