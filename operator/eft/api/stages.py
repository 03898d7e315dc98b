"""The one table of stages: their order, their inputs, the spec fields in each one's config hash, what runs
them and how long they may take.

Everything that needs a stage list derives it from `STAGES`: the spec's per-stage runtime settings
(`spec.runtime.stages`), the config hashes (`eft.hashing`), the stage registry behind `eft stage` and the local
runner (`eft.stages`), and the operator's planner and Job builders (`eft.controller`). Adding a stage is one row
here plus its package.

Pure data over the spec model: importing this module loads no stage code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Literal

if TYPE_CHECKING:
    from eft.api.spec import EmbeddingFinetuneSpec

StageName = Literal["sdg", "prep", "train", "eval", "export", "deploy", "verify"]
Workload = Literal["job", "deployment"]

# Fields that do not change what a stage produces (runtime-only: never part of a config hash).
_SDG_EXCLUDE = {"concurrency", "api_key_secret_ref", "api_key_env", "request_timeout_seconds", "max_retries"}
_TRAIN_EXCLUDE = {"gpus", "nodes", "gradient_checkpointing", "save_steps", "mini_batch_size"}
_DEPLOY_EXCLUDE = {"replicas", "resources", "image", "verification", "progress_deadline_seconds"}


def _base_model(spec: EmbeddingFinetuneSpec) -> dict[str, Any]:
    # `inferencePrecision` came later: at its default it is left out, so a resource applied before it existed
    # keeps its hashes after an upgrade and nothing (an LLM generation above all) runs again for it.
    exclude = {"inference_precision"} if spec.base_model.inference_precision == "auto" else set()
    return spec.base_model.model_dump(mode="json", exclude=exclude)


def _sdg_fields(spec: EmbeddingFinetuneSpec) -> dict[str, Any]:
    bm = _base_model(spec)
    return {
        "corpus": spec.corpus.model_dump(mode="json"),
        "sdg": spec.sdg.model_dump(mode="json", exclude=_SDG_EXCLUDE),
        # The tokenizer sets chunk boundaries.
        "tokenizer": {"name": bm["name"], "revision": bm["revision"]},
    }


def _prep_fields(spec: EmbeddingFinetuneSpec) -> dict[str, Any]:
    return {"prep": spec.prep.model_dump(mode="json", exclude={"encode_batch_size"}), "base_model": _base_model(spec)}


def _train_fields(spec: EmbeddingFinetuneSpec) -> dict[str, Any]:
    return {"training": spec.training.model_dump(mode="json", exclude=_TRAIN_EXCLUDE),
            "base_model": _base_model(spec)}


def _eval_fields(spec: EmbeddingFinetuneSpec) -> dict[str, Any]:
    return {"evaluation": spec.evaluation.model_dump(mode="json", exclude={"batch_size"}),
            "base_model": _base_model(spec)}


def _export_fields(spec: EmbeddingFinetuneSpec) -> dict[str, Any]:
    return {"export": spec.export.model_dump(mode="json")}


def _deploy_fields(spec: EmbeddingFinetuneSpec) -> dict[str, Any]:
    return {"deploy": spec.deploy.model_dump(mode="json", exclude=_DEPLOY_EXCLUDE)}


def _verify_fields(spec: EmbeddingFinetuneSpec) -> dict[str, Any]:
    return {"verification": spec.deploy.verification.model_dump(mode="json")}


@dataclass(frozen=True)
class Stage:
    """One row of the stage table.

    `package` names the `eft.<package>.stage:run` function that `eft stage NAME` (a Job, or `eft run`) calls;
    None for the stages that exist only in the cluster (`deploy` is a Deployment, `verify` is `eft verify`).
    `deadline_seconds` is the Job's `activeDeadlineSeconds` when neither the operator's defaults nor the
    resource set one.
    """

    name: StageName
    inputs: tuple[StageName, ...]
    config_fields: Callable[[EmbeddingFinetuneSpec], dict[str, Any]]
    package: str | None
    workload: Workload = "job"
    deadline_seconds: int | None = None

    @property
    def local(self) -> bool:
        """True when `eft stage NAME` / `eft run` can run it on this machine."""
        return self.package is not None


_HOUR = 3600

#: Every stage, in pipeline order.
STAGES: tuple[Stage, ...] = (
    Stage("sdg", (), _sdg_fields, "sdg", deadline_seconds=24 * _HOUR),
    Stage("prep", ("sdg",), _prep_fields, "prep", deadline_seconds=6 * _HOUR),
    Stage("train", ("prep",), _train_fields, "train", deadline_seconds=72 * _HOUR),
    Stage("eval", ("prep", "train"), _eval_fields, "evaluate", deadline_seconds=6 * _HOUR),
    Stage("export", ("prep", "train"), _export_fields, "export", deadline_seconds=6 * _HOUR),
    Stage("deploy", ("export",), _deploy_fields, None, workload="deployment"),
    Stage("verify", ("deploy", "eval"), _verify_fields, None, deadline_seconds=1 * _HOUR),
)

STAGE_BY_NAME: dict[str, Stage] = {s.name: s for s in STAGES}
#: All stage names in order.
STAGE_NAMES: tuple[StageName, ...] = tuple(s.name for s in STAGES)
#: The stages `eft stage` and `eft run` run (sdg, prep, train, eval, export).
PIPELINE_STAGES: tuple[StageName, ...] = tuple(s.name for s in STAGES if s.local)
#: The stages the operator runs as Jobs (each has `spec.runtime.stages.<name>`).
JOB_STAGES: tuple[StageName, ...] = tuple(s.name for s in STAGES if s.workload == "job")


def stage(name: str) -> Stage:
    """The table row of `name`; KeyError for an unknown stage."""
    return STAGE_BY_NAME[name]


def stages_through(name: str) -> tuple[StageName, ...]:
    """The stages up to and including `name`, in pipeline order."""
    return STAGE_NAMES[:STAGE_NAMES.index(name) + 1]  # type: ignore[arg-type]


def downstream_of(name: str) -> tuple[StageName, ...]:
    """The stages after `name` in pipeline order."""
    return STAGE_NAMES[STAGE_NAMES.index(name) + 1:]  # type: ignore[arg-type]
