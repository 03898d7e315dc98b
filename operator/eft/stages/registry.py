"""Which function runs each stage (imported lazily so `eft validate` stays fast), and the plan of hashes.

The stage list comes from the stage table (`eft.api.stages`): a stage with a `package` runs
`eft.<package>.stage:run`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Callable

from eft.api.spec import EmbeddingFinetune
from eft.api.stages import PIPELINE_STAGES, STAGE_BY_NAME
from eft.errors import InvalidInput
from eft.hashing import plan_hashes
from eft.stages.contract import StageContext, StageFn


def check_stage_name(name: str) -> None:
    """InvalidInput (exit code 2) unless `name` is a stage `eft stage` can run."""
    if name not in PIPELINE_STAGES:
        raise InvalidInput(f"unknown stage '{name}' (expected one of: {', '.join(PIPELINE_STAGES)})")


def _stage_module(name: str):
    check_stage_name(name)
    return importlib.import_module(f"eft.{STAGE_BY_NAME[name].package}.stage")


def stage_function(name: str) -> StageFn:
    """The `run(ctx) -> summary` function of a pipeline stage (its module is imported now)."""
    return _stage_module(name).run


def stage_check(name: str) -> Callable[[StageContext], None] | None:
    """The `check(ctx)` of a pipeline stage's module (its inputs checked before its folder is emptied), if it
    has one."""
    return getattr(_stage_module(name), "check", None)


def compute_hashes(resource: EmbeddingFinetune) -> dict[str, str]:
    """Config hashes of every stage; the sdg hash includes a fingerprint of the corpus files when readable."""
    from eft.corpus.reader import corpus_fingerprint

    return plan_hashes(resource.spec, corpus_fingerprint(resource.spec.corpus))


def workdir_for(resource: EmbeddingFinetune, workdir: str | Path | None) -> Path:
    """`workdir` when given, else `./eft-work/<resource name>`."""
    return Path(workdir) if workdir else Path("eft-work") / resource.metadata.name
